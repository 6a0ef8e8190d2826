"""Corpus layouts: dotted paths, the named layouts against fixture files in each corpus's
published layout (tests/data/layouts, made by scripts/make_layout_fixtures.py), extras."""
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.corpus_io import layouts
from pipelines.corpus_io.layouts import MISSING, extract, get_path, resolve_layout, split_path

FIXTURES = Path(__file__).resolve().parent / "data" / "layouts"


def _jsonl(name):
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_dotted_paths():
    assert split_path("warc_headers.warc-target-uri") == ("warc_headers", "warc-target-uri")
    assert split_path(r"a\.b.c") == ("a.b", "c")
    for bad in ("", "a..b", ".a", "a.", "a\\"):
        with pytest.raises(ValueError):
            split_path(bad)
    record = {"a": {"b": {"c": 3}, "n": None}, "x": [1]}
    assert get_path(record, ("a", "b", "c")) == 3
    assert get_path(record, ("a", "n")) is None  # present but null: not MISSING
    assert get_path(record, ("a", "z")) is MISSING and get_path(record, ("x", "0")) is MISSING


def test_fineweb2_parquet_fixture():
    table = pq.read_table(FIXTURES / "fineweb2.parquet")
    # The columns FineWeb-2's card lists, with its types.
    assert table.schema.names == ["text", "id", "dump", "url", "date", "file_path", "language",
                                  "language_score", "language_script", "minhash_cluster_size", "top_langs"]
    layout = resolve_layout("fineweb")
    rows = table.to_pylist()
    for row in rows[:-1]:
        got = extract(row, layout)
        assert isinstance(got.text, str) and got.text and got.id == row["id"] and got.url == row["url"]
        assert got.timestamp == row["date"] and got.key is None
        assert list(got.extras) == ["dump", "file_path", "language", "language_score",
                                    "language_script", "minhash_cluster_size", "top_langs"]
        assert got.extras["language_score"] == row["language_score"]
    assert extract(rows[-1], layout).text is None  # the fixture's dead letter
    fields = layouts.extras_arrow_fields(table.schema, layout)
    assert [(f.name, f.type) for f in fields][:4] == [("dump", pa.string()), ("file_path", pa.string()),
                                                      ("language", pa.string()), ("language_score", pa.float64())]
    assert fields[5].type == pa.int64()


def test_oscar_jsonl_fixture():
    records = _jsonl("oscar.jsonl.gz")
    layout = resolve_layout("oscar")
    for record in records[:-1]:
        got = extract(record, layout)
        assert got.text == record["content"]
        assert got.url == record["warc_headers"]["warc-target-uri"] and "://" in got.url
        assert got.id == record["warc_headers"]["warc-record-id"]
        assert got.timestamp == record["warc_headers"]["warc-date"]
        # Nested fields stay in their struct: nothing is cut out of a record.
        assert got.extras == {"warc_headers": record["warc_headers"], "metadata": record["metadata"]}
    assert extract(records[-1], layout).text is MISSING


def test_hplt_and_culturax_fixtures():
    for record in _jsonl("hplt.jsonl.gz")[:-1]:
        got = extract(record, resolve_layout("hplt"))
        assert isinstance(got.id, int) and set(got.extras) == {"document_lang", "scores", "langs", "collection"}
    for row in pq.read_table(FIXTURES / "culturax.parquet").to_pylist()[:-1]:
        got = extract(row, resolve_layout("culturax"))
        assert got.timestamp == row["timestamp"] and got.extras == {"source": row["source"]}


def test_overrides_keys_and_collisions():
    assert resolve_layout().is_mc4() and resolve_layout("mc4", text_field="text").name == "mc4"
    custom = resolve_layout("oscar", id_field="", key_field="warc_headers.warc-record-id")
    assert custom.name == "oscar+custom" and custom.id is None and not custom.is_mc4()
    record = {"content": "hola", "warc_headers": {"warc-record-id": "<urn:1>", "warc-target-uri": "https://a"},
              "perplexity": 12.5, "id": 7}
    got = extract(record, custom)
    assert got.key == "<urn:1>" and got.id is None
    # Fields named like our own output columns are kept under another name, not overwritten.
    assert got.extras["source_perplexity"] == 12.5 and got.extras["source_id"] == 7
    assert layouts.key_string(1000) == "1000" and layouts.key_string({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'
    assert layouts.key_string("  ") is None and layouts.key_string(None) is None
    with pytest.raises(ValueError, match="unknown layout"):
        resolve_layout("c4")
    with pytest.raises(ValueError, match="empty part"):
        resolve_layout("mc4", text_field="body..text")


def test_fixture_script_is_deterministic(tmp_path, shared_data):
    import subprocess
    import sys
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_layout_fixtures.py"
    subprocess.run([sys.executable, str(script), "--shared", str(shared_data), "--out", str(tmp_path)], check=True)
    for name in ("oscar.jsonl.gz", "hplt.jsonl.gz"):
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name
    for name in ("fineweb2.parquet", "culturax.parquet"):
        assert pq.read_table(tmp_path / name).equals(pq.read_table(FIXTURES / name)), name


@pytest.mark.parametrize("name,layout", [("oscar.jsonl.gz", "oscar"), ("hplt.jsonl.gz", "hplt"),
                                         ("hplt2.jsonl.gz", "hplt2")])
def test_json_fixtures_fit_their_layouts_declared_schema(name, layout):
    """Each JSON-lines fixture's fields fit the types its layout declares (layout_schemas); an
    undeclared field is left to the JSON `extras`; a wrong type is named, never coerced."""
    layout = resolve_layout(layout)
    declared = {n for n, _ in layouts.declared_extras(layout)}
    for record in _jsonl(name)[:-1]:
        typed, rest, problem = layouts.split_extras(extract(record, layout).extras, layout)
        assert problem is None and set(typed) == declared
        assert set(rest) == ({"pii"} if layout.name == "hplt2" else set())
    schema = layouts.scored_schema(layout, pa.schema([]), None)
    assert schema.names[-1] == "extras" and set(schema.names[:-1]) - {"id"} == declared
    assert layouts.split_extras({n: object() for n in declared}, layout)[2] is not None
    assert layouts.layout_schemas.problem(True, "float64", "x") and layouts.layout_schemas.problem(1.5, "int64", "x")
    assert layouts.layout_schemas.problem(3, "float64", "x") is None  # JSON has one number type
