"""The published schemas of the named layouts' extra fields, for JSON-lines input.

JSON lines carry no schema, and a job of 2,048 shards read by hundreds of workers must write the
same parquet schema for every shard, whatever records a shard happens to hold: no type is
inferred from data. So each named layout declares the types of the fields its dataset
publishes, and those become typed parquet columns (structs and lists included); a field no
layout declares (or every field, with a custom layout: `--text-field` ... on mC4's) is kept,
with its value, in the one JSON-object column `extras`. A record whose declared field does not
fit its type (a string where the card says a list, a struct with a key the card does not list)
is a dead letter `wrong_type_extra` naming the field path, never a crash and never a silent cut.
A declared field that a record lacks, or holds null, is null. Parquet input keeps its own
file's types (the file declares them); these schemas are not applied to it.

Sources (checked against each dataset's card or loader):
- OSCAR 23.01: the layout in the OSCAR documentation (oscar-project/documentation,
  docs/versions/oscar-2301.md): content, warc_headers (all strings, `content-length` too),
  metadata {identification {label, prob}, harmful_pp, tlsh, quality_warnings [str],
  categories [str], sentence_identifications [{label, prob} | null]}; quality_warnings and
  categories may be null. Probabilities are JSON doubles, kept as float64 (a float32 column, as
  some Hub copies use, would change the values).
- HPLT v1.2 (huggingface.co/datasets/HPLT/hplt_monolingual_v1_2; mozilla/translations' HPLT
  importer): id (int), document_lang, scores [float], langs [str], text, url, collection.
- HPLT v2 cleaned (hplt-project.org/datasets/v2.0; mozilla/translations' v2 importer: lang
  [str], doc_scores [float], seg_langs [str]): f (source WARC path), o (offset), s (size), rs,
  u (url), c (content type), ts (timestamp), collection, lang [str], prob [float], text,
  seg_langs [str], robotstxt, id (a hash string), filter, pii, doc_scores [float]. `pii` is
  not declared: its element type is not documented, so it stays in `extras`.
- FineWeb-2 (huggingface.co/datasets/HuggingFaceFW/fineweb-2 features), CulturaX
  (huggingface.co/datasets/uonlp/CulturaX): as their parquet files, for JSON-lines copies.

A type is written as: "string" | "int64" | "float64" | "bool" | ("list", TYPE) |
("struct", ((name, TYPE), ...)).
"""
from __future__ import annotations

from typing import Any

_S, _I, _F = "string", "int64", "float64"
_LABEL_PROB = ("struct", (("label", _S), ("prob", _F)))

DECLARED: dict[str, tuple] = {
    "oscar": (
        ("warc_headers", ("struct", tuple((name, _S) for name in (
            "warc-identified-content-language", "warc-target-uri", "warc-record-id", "warc-type",
            "content-length", "warc-refers-to", "warc-block-digest", "warc-date",
            "content-type")))),
        ("metadata", ("struct", (
            ("identification", _LABEL_PROB), ("harmful_pp", _F), ("tlsh", _S),
            ("quality_warnings", ("list", _S)), ("categories", ("list", _S)),
            ("sentence_identifications", ("list", _LABEL_PROB))))),
    ),
    "hplt": (
        ("id", _I), ("document_lang", _S), ("scores", ("list", _F)), ("langs", ("list", _S)),
        ("collection", _S),
    ),
    "hplt2": (
        ("f", _S), ("o", _I), ("s", _I), ("rs", _I), ("c", _S), ("collection", _S),
        ("lang", ("list", _S)), ("prob", ("list", _F)), ("seg_langs", ("list", _S)),
        ("robotstxt", _S), ("filter", _S), ("doc_scores", ("list", _F)),
    ),
    "fineweb": (
        ("dump", _S), ("file_path", _S), ("language", _S), ("language_score", _F),
        ("language_script", _S), ("minhash_cluster_size", _I), ("top_langs", _S),
    ),
    "culturax": (("source", _S),),
}


def arrow_type(spec):
    import pyarrow as pa

    if spec == _S:
        return pa.string()
    if spec == _I:
        return pa.int64()
    if spec == _F:
        return pa.float64()
    if spec == "bool":
        return pa.bool_()
    kind, inner = spec
    if kind == "list":
        return pa.list_(arrow_type(inner))
    return pa.struct([pa.field(name, arrow_type(child)) for name, child in inner])


def problem(value: Any, spec, path: str) -> str | None:
    """Why `value` (parsed JSON) does not fit `spec`, or None. null fits everything; an int fits
    float64 (JSON has one number type); bool is not a number."""
    if value is None:
        return None
    if spec == _S:
        ok = isinstance(value, str)
    elif spec == _I:
        ok = isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63
    elif spec == _F:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif spec == "bool":
        ok = isinstance(value, bool)
    elif spec[0] == "list":
        if not isinstance(value, list):
            return f"`{path}` is {_kind(value)}, its schema says a list"
        for i, item in enumerate(value):
            found = problem(item, spec[1], f"{path}[{i}]")
            if found:
                return found
        return None
    else:
        if not isinstance(value, dict):
            return f"`{path}` is {_kind(value)}, its schema says an object"
        names = {name for name, _ in spec[1]}
        unknown = [k for k in value if k not in names]
        if unknown:
            return f"`{path}` has the field {unknown[0]!r}, which its schema does not declare"
        for name, child in spec[1]:
            found = problem(value.get(name), child, f"{path}.{name}")
            if found:
                return found
        return None
    return None if ok else f"`{path}` is {_kind(value)}, its schema says {spec}"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)
