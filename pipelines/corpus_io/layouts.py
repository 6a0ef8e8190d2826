"""Where a web corpus keeps a document's text, url, id and timestamp: named layouts and dotted
paths into nested records. Pure functions; the readers apply them to each record.

A field path is dotted: `warc_headers.warc-target-uri` is record["warc_headers"]["warc-target-uri"].
A key holding a dot is written with a backslash (`a\\.b`). The named layouts follow each
dataset's published card or loader:

| layout   | text      | url                          | id                          | timestamp              | card |
|----------|-----------|------------------------------|-----------------------------|------------------------|------|
| mc4      | text      | url                          | -                           | timestamp              | huggingface.co/datasets/allenai/c4 |
| fineweb  | text      | url                          | id                          | date                   | huggingface.co/datasets/HuggingFaceFW/fineweb-2 (features text, id, dump, url, date, file_path, language, language_score, language_script, minhash_cluster_size, top_langs) |
| oscar    | content   | warc_headers.warc-target-uri | warc_headers.warc-record-id | warc_headers.warc-date | huggingface.co/datasets/oscar-corpus/OSCAR-2301 (JSON lines: content, warc_headers, metadata) |
| culturax | text      | url                          | -                           | timestamp              | huggingface.co/datasets/uonlp/CulturaX (text, timestamp, url, source) |
| hplt     | text      | url                          | id                          | -                      | huggingface.co/datasets/HPLT/hplt_monolingual_v1_2 (id, document_lang, scores, langs, text, url, collection) |
| hplt2    | text      | u                            | id                          | ts                     | hplt-project.org/datasets/v2.0 (cleaned JSON lines: f, o, s, rs, u, c, ts, collection, lang, prob, text, seg_langs, robotstxt, id, filter, pii, doc_scores) |

Every other top-level field of a record is carried through to the outputs unchanged ("extras",
in input order). In parquet outputs a parquet input's extras keep the input file's types; a
JSON-lines input's extras become the typed columns its named layout declares (the dataset's
published schema, pipelines.corpus_io.layout_schemas), and whatever no layout declares goes into
one JSON-object column `extras`, so that every shard has the same schema. A top-level field a layout reads becomes the output column of that name, so
it is not repeated; nested fields stay inside their struct (nothing is cut out of a record).
An extra whose name is one of the output's own columns (`perplexity`, `n_tokens`, `id`, ...)
is carried as `source_<name>`.

The keep decision's document key (see sampling.document_key) is the url, else the text, as
always; `key` names another field (e.g. the id), used when present and non-empty.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from pipelines.corpus_io import layout_schemas

# Output columns of the scored/sampled data; an input field of the same name is renamed.
OUTPUT_COLUMNS = ("text", "url", "timestamp", "id", "perplexity", "n_tokens", "split", "document_key",
                  "extras")
# JSON-lines inputs have no schema: their extras travel in the parquet outputs as one column of
# JSON objects (every shard then has the same schema, whatever its records hold); the json.gz
# outputs carry the fields themselves. Parquet inputs keep each extra as its own typed column.
EXTRAS_COLUMN = "extras"
JSON_OBJECT = {b"ppsample": b"json-object"}
RENAMED_PREFIX = "source_"
MISSING = object()


def split_path(path: str) -> tuple[str, ...]:
    """`a.b\\.c` -> ("a", "b.c"). Empty parts are an error."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a field path must be a non-empty string, got {path!r}")
    parts, current, escaped = [], [], False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise ValueError(f"field path {path!r} ends with a lone backslash")
    parts.append("".join(current))
    if any(not part for part in parts):
        raise ValueError(f"field path {path!r} has an empty part")
    return tuple(parts)


def get_path(record: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in nested dicts, or MISSING when a step is absent or not a dict."""
    value = record
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


@dataclass(frozen=True)
class Layout:
    """Dotted paths of a corpus's fields (None: the corpus has no such field)."""

    name: str
    text: str
    url: str | None = None
    id: str | None = None
    timestamp: str | None = None
    key: str | None = None  # document key of the keep decision; None: url, else text
    # (top-level field, type) of the extras the dataset publishes (layout_schemas.DECLARED):
    # typed parquet columns for JSON-lines input
    declared: tuple = ()

    def __post_init__(self) -> None:
        for field in ("text", "url", "id", "timestamp", "key"):
            value = getattr(self, field)
            if value is not None:
                split_path(value)  # raises on a bad path

    def paths(self) -> dict[str, tuple[str, ...]]:
        return {f: split_path(getattr(self, f)) for f in ("text", "url", "id", "timestamp", "key")
                if getattr(self, f) is not None}

    def consumed_top_level(self) -> set[str]:
        """Top-level fields that become output columns (not carried as extras)."""
        return {p[0] for f, p in self.paths().items() if len(p) == 1 and f != "key"}

    def to_dict(self) -> dict:
        return {"name": self.name, "text": self.text, "url": self.url, "id": self.id,
                "timestamp": self.timestamp, "key": self.key}

    def is_mc4(self) -> bool:
        return (self.text, self.url, self.id, self.timestamp, self.key) == ("text", "url", None, "timestamp", None)


_DECLARED = layout_schemas.DECLARED
LAYOUTS = {
    "mc4": Layout("mc4", text="text", url="url", timestamp="timestamp"),
    "fineweb": Layout("fineweb", text="text", url="url", id="id", timestamp="date",
                      declared=_DECLARED["fineweb"]),
    "oscar": Layout("oscar", text="content", url="warc_headers.warc-target-uri",
                    id="warc_headers.warc-record-id", timestamp="warc_headers.warc-date",
                    declared=_DECLARED["oscar"]),
    "culturax": Layout("culturax", text="text", url="url", timestamp="timestamp",
                       declared=_DECLARED["culturax"]),
    "hplt": Layout("hplt", text="text", url="url", id="id", declared=_DECLARED["hplt"]),
    "hplt2": Layout("hplt2", text="text", url="u", id="id", timestamp="ts",
                    declared=_DECLARED["hplt2"]),
}
DEFAULT_LAYOUT = "mc4"
_UNSET = object()


def resolve_layout(name: str | None = None, *, text_field=None, url_field=_UNSET, id_field=_UNSET,
                   timestamp_field=_UNSET, key_field=None) -> Layout:
    """A named layout (default mc4) with any field overridden; an empty string for url, id or
    timestamp means the corpus has none."""
    name = DEFAULT_LAYOUT if name is None else name
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    changes: dict[str, Any] = {}
    if text_field is not None:
        changes["text"] = text_field
    for field, value in (("url", url_field), ("id", id_field), ("timestamp", timestamp_field)):
        if value is not _UNSET:
            changes[field] = value or None
    if key_field is not None:
        changes["key"] = key_field or None
    if changes:
        custom = name if all(getattr(layout, f) == v for f, v in changes.items()) else f"{name}+custom"
        layout = replace(layout, name=custom, **changes)
    return layout


def output_name(field: str) -> str:
    """The output column an extra input field is carried as."""
    return RENAMED_PREFIX + field if field in OUTPUT_COLUMNS else field


@dataclass(frozen=True)
class Extracted:
    text: Any
    url: Any
    id: Any
    timestamp: Any
    key: str | None  # None: use document_key(url, text)
    extras: dict


def extract(record: dict, layout: Layout) -> Extracted:
    """A record's fields under `layout`; MISSING stands for an absent text (the caller's dead
    letter), None for an absent url / id / timestamp. Values are not type-checked here."""
    paths = layout.paths()
    values = {f: get_path(record, p) for f, p in paths.items()}
    consumed = layout.consumed_top_level()
    extras = {output_name(k): v for k, v in record.items() if k not in consumed}
    key = values.get("key", MISSING)
    return Extracted(
        text=values["text"],
        url=_or_none(values.get("url", MISSING)),
        id=_or_none(values.get("id", MISSING)),
        timestamp=_or_none(values.get("timestamp", MISSING)),
        key=key_string(key),
        extras=extras,
    )


def key_string(value: Any) -> str | None:
    """A document key from any JSON value: strings as they are, numbers and structures as
    canonical JSON; None for a missing, null or blank value (the default key applies)."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bytes):
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _or_none(value: Any) -> Any:
    return None if value is MISSING else value


def extras_arrow_fields(schema, layout: Layout) -> list:
    """The pyarrow fields of a parquet input's extras (renamed as carried), in schema order, so
    a parquet output keeps their types exactly."""
    consumed = layout.consumed_top_level()
    return [schema.field(name).with_name(output_name(name)) for name in schema.names if name not in consumed]


def scored_schema(layout: Layout, own_schema, input_schema=None):
    """The scored parquet's schema for a non-mC4 layout: our columns, then `id` and `document_key` when
    the layout has them, then the extras: the parquet input's own fields (`input_schema`), or
    one JSON-object column for JSON-lines input (None)."""
    import pyarrow as pa

    fields = list(own_schema)
    if layout.id is not None:
        fields.append(pa.field("id", pa.string()))
    if layout.key is not None:
        fields.append(pa.field("document_key", pa.string()))
    if input_schema is None:
        fields += [pa.field(name, layout_schemas.arrow_type(spec))
                   for name, spec in declared_extras(layout)]
        fields.append(pa.field(EXTRAS_COLUMN, pa.string(), metadata=JSON_OBJECT))
    else:
        fields += extras_arrow_fields(input_schema, layout)
    return pa.schema(fields)


def declared_extras(layout: Layout) -> list[tuple[str, Any]]:
    """(output column, type) of the layout's declared extras that no layout field consumes."""
    consumed = layout.consumed_top_level()
    return [(output_name(name), spec) for name, spec in layout.declared if name not in consumed]


def split_extras(extras: dict, layout: Layout) -> tuple[dict, dict, str | None]:
    """A JSON record's extras -> (declared ones, checked against their types; the others;
    why a declared one does not fit its type, or None)."""
    typed, rest = {}, dict(extras)
    for name, spec in declared_extras(layout):
        value = rest.pop(name, None)
        problem = layout_schemas.problem(value, spec, name)
        if problem:
            return {}, extras, problem
        typed[name] = value
    return typed, rest, None


def flatten_extras(doc: dict, schema) -> dict:
    """A read document's extras as the scored schema's columns (in place): the declared extras
    of a JSON-lines record as their columns, the rest as one JSON object (null: nothing else)."""
    extras = doc.pop("extras", None) or {}
    if is_json_extras(schema):
        doc.update(doc.pop("typed_extras", None) or {})
        doc[EXTRAS_COLUMN] = json.dumps(extras, ensure_ascii=False, default=str) if extras else None
    else:
        doc.update(extras)
    return doc


def is_json_extras(schema) -> bool:
    return EXTRAS_COLUMN in schema.names and schema.field(EXTRAS_COLUMN).metadata == JSON_OBJECT


def carried_columns(schema) -> list[str]:
    """The columns of a scored parquet that are carried to the sampled outputs beyond mC4's."""
    own = {"text", "url", "timestamp", "perplexity", "n_tokens", "split", "document_key"}
    return [name for name in schema.names if name not in own]


def sampled_schema(scored, own_types: dict, own_columns: tuple[str, ...]):
    """The sampled parquet's schema: our own columns with our types (a pre-scored file may hold
    `text` as binary, `n_tokens` as int32: the documents are checked and converted), then the
    carried columns with the scored file's own fields (types and metadata)."""
    import pyarrow as pa

    return pa.schema([pa.field(c, own_types[c]) for c in own_columns]
                     + [scored.field(c) for c in carried_columns(scored)])


def json_record(text, timestamp, url, carried: dict, json_extras: bool) -> dict:
    """A sampled document as a json.gz record: mC4's three fields, then the id and the extras
    with their values (a JSON-object extras column is opened up again)."""
    record = {"text": text, "timestamp": timestamp, "url": url}
    for name, value in carried.items():
        if name == EXTRAS_COLUMN and json_extras:
            record.update(json.loads(value) if value else {})
        else:
            record[name] = value
    return record
