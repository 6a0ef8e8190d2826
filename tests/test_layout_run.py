"""`ppsample run` on other corpora's layouts, end to end: a FineWeb-2 parquet and an OSCAR 23.01
JSON-lines fixture (tests/data/layouts), their ids and extra fields intact in both output
formats, the record without text a counted dead letter, and the keep decisions a function of
the document key the layout names."""
import glob
import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from sampling import Boundaries, SamplingParams, document_key, document_uniforms, keep_mask

FIXTURES = Path(__file__).resolve().parent / "data" / "layouts"


def _run(out, *argv):
    assert cli.main(["run", "--output", str(out), "--no-figures", "-q", *argv]) == 0
    return json.loads((out / "stats.json").read_text())


def _sampled(out):
    records = [json.loads(line) for f in sorted(glob.glob(str(out / "*.json.gz")))
               for line in gzip.open(f, "rt", encoding="utf-8")]
    table = pq.read_table(sorted(glob.glob(str(out / "parquet" / "*" / "*.parquet"))))
    return records, table


def _check_decisions(out, stats, key_of):
    """Kept = U(seed, key) < p(PP) for every scored document, with the layout's key."""
    scored = pq.read_table(glob.glob(str(out / "scored" / "*.parquet"))).to_pylist()
    b = stats["boundaries"]
    params = SamplingParams(stats["method"], **stats["parameters"])
    keys = [key_of(row) for row in scored]
    kept = keep_mask(np.array([r["perplexity"] for r in scored]), document_uniforms(stats["seed"], keys),
                     Boundaries(b["q1"], b["q2"], b["q3"]), params)
    return {row["id"] for row, k in zip(scored, kept) if k}


def test_fineweb2_parquet_end_to_end(tmp_path):
    source = pq.read_table(FIXTURES / "fineweb2.parquet")
    by_id = {row["id"]: row for row in source.to_pylist()}
    out = tmp_path / "fw"
    stats = _run(out, "--input", str(FIXTURES / "fineweb2.parquet"), "--layout", "fineweb")
    assert (stats["total"]["read"], stats["total"]["rejected"]) == (25, 1)
    letter = json.loads((out / "scored" / "rejected" / "fineweb2.jsonl").read_text())
    assert letter["reason"] == "missing_text" and letter["detail"] == "no `text` field"
    records, table = _sampled(out)
    assert 0 < len(records) == table.num_rows == stats["total"]["kept"] < 24
    # parquet: every FineWeb-2 column with its own type (date is carried as the timestamp)
    extras = [n for n in source.schema.names if n not in ("text", "url", "date", "id")]
    assert table.schema.names == ["text", "url", "timestamp", "perplexity", "n_tokens", "id", *extras]
    for name in extras:
        assert table.schema.field(name).type == source.schema.field(name).type, name
    for row in table.to_pylist():
        original = by_id[row["id"]]
        assert row["text"] == original["text"] and row["timestamp"] == original["date"]
        assert {k: row[k] for k in extras} == {k: original[k] for k in extras}
    # json.gz: the same fields with their values (floats and ints as numbers)
    for record in records:
        original = by_id[record["id"]]
        assert list(record) == ["text", "timestamp", "url", "id", *extras]
        assert {k: record[k] for k in extras} == {k: original[k] for k in extras}
    # the keep decisions: url key (the default), as for mC4
    assert {r["id"] for r in records} == _check_decisions(out, stats, lambda r: document_key(r["url"], r["text"]))


@pytest.mark.parametrize("key_field", [None, "warc_headers.warc-record-id"])
def test_oscar_jsonl_end_to_end(tmp_path, key_field):
    with gzip.open(FIXTURES / "oscar.jsonl.gz", "rt", encoding="utf-8") as f:
        source = [json.loads(line) for line in f]
    by_id = {r["warc_headers"]["warc-record-id"]: r for r in source}
    out = tmp_path / "oscar"
    argv = ["--input", str(FIXTURES / "oscar.jsonl.gz"), "--layout", "oscar"]
    stats = _run(out, *argv, *(["--key-field", key_field] if key_field else []))
    assert (stats["total"]["read"], stats["total"]["rejected"]) == (25, 1)
    letter = json.loads((out / "scored" / "rejected" / "oscar.jsonl").read_text())
    assert (letter["reason"], letter["detail"], letter["line"]) == ("missing_text", "no `content` field", 25)
    records, table = _sampled(out)
    assert 0 < len(records) == table.num_rows
    for record in records:
        original = by_id[record["id"]]
        assert record["text"] == original["content"]
        assert record["url"] == original["warc_headers"]["warc-target-uri"]
        assert record["warc_headers"] == original["warc_headers"] and record["metadata"] == original["metadata"]
    # parquet: the fields OSCAR 23.01 publishes are typed columns (structs, lists), the same for
    # every shard; nothing undeclared in these records, so the JSON `extras` column is null
    assert table.schema.names[-4:] == ["id", "warc_headers", "metadata", "extras"]
    metadata = table.schema.field("metadata").type
    assert metadata.field("sentence_identifications").type == \
        pa.list_(pa.struct([("label", pa.string()), ("prob", pa.float64())]))
    assert metadata.field("quality_warnings").type == pa.list_(pa.string())
    for row in table.to_pylist():
        original = by_id[row["id"]]
        assert (row["warc_headers"], row["metadata"]) == (original["warc_headers"], original["metadata"])
        assert row["extras"] is None
    key_of = (lambda r: r["id"]) if key_field else (lambda r: document_key(r["url"], r["text"]))
    assert {r["id"] for r in records} == _check_decisions(out, stats, key_of)


def test_bad_layout_flags_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="^ppsample: error: .*empty part"):
        cli.main(["run", "--output", str(tmp_path / "x"), "--input", str(FIXTURES / "oscar.jsonl.gz"),
                  "--text-field", "content..x"])
    assert not (tmp_path / "x").exists()


def test_score_then_sample_keeps_what_run_keeps(tmp_path):
    """The --key-field key is stored with the scored documents, so `sample` decides as `run`."""
    argv = ["--input", str(FIXTURES / "oscar.jsonl.gz"), "--layout", "oscar",
            "--key-field", "warc_headers.warc-record-id"]
    _run(tmp_path / "run", *argv)
    assert cli.main(["score", *argv, "--output", str(tmp_path / "scored"), "-q"]) == 0
    assert cli.main(["sample", "--input", str(tmp_path / "scored"), "--output", str(tmp_path / "sampled"),
                     "--no-figures", "-q"]) == 0
    texts = lambda out: sorted(r["text"] for r in _sampled(out)[0])
    assert texts(tmp_path / "sampled") == texts(tmp_path / "run")
    # and not what the url key would keep (the fault the stored key guards against)
    _run(tmp_path / "by-url", *argv[:4])
    assert texts(tmp_path / "by-url") != texts(tmp_path / "run")


def _fixture_records(name):
    if name.endswith(".parquet"):
        return pq.read_table(FIXTURES / name).to_pylist()
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name,layout,id_of,text_of", [
    ("fineweb2.parquet", "fineweb", lambda r: r["id"], lambda r: r["text"]),
    ("oscar.jsonl.gz", "oscar", lambda r: r["warc_headers"]["warc-record-id"], lambda r: r["content"]),
])
def test_score_then_sample_carries_ids_and_extras_as_run_does(tmp_path, name, layout, id_of, text_of):
    """`sample` on a scored parquet of another layout writes the ids and every extra field, with
    its type (parquet) and value (json.gz), as `run` does: the same rows, schema and records,
    and each of them the input fixture's own values."""
    argv = ["--input", str(FIXTURES / name), "--layout", layout]
    _run(tmp_path / "run", *argv)
    assert cli.main(["score", *argv, "--output", str(tmp_path / "scored"), "-q"]) == 0
    assert cli.main(["sample", "--input", str(tmp_path / "scored"), "--output", str(tmp_path / "sampled"),
                     "--no-figures", "-q"]) == 0
    run_records, run_table = _sampled(tmp_path / "run")
    records, table = _sampled(tmp_path / "sampled")
    assert records and records == run_records
    assert table.schema == run_table.schema and table.to_pylist() == run_table.to_pylist()
    assert "id" in table.schema.names
    source = {id_of(r): r for r in _fixture_records(name) if r.get("content", r.get("text"))}
    consumed = {"fineweb": {"text", "url", "date", "id"}, "oscar": {"content"}}[layout]
    for record in records:
        original = source[record["id"]]
        assert record["text"] == text_of(original)
        # every field of the input that is not one of our columns is in the record, unchanged
        assert {k: v for k, v in record.items() if k not in ("text", "timestamp", "url", "id")} == \
            {k: v for k, v in original.items() if k not in consumed}


def test_sample_of_a_users_scored_parquet_carries_its_other_columns(tmp_path):
    """A user's parquet with a perplexity column: its other columns (an int id, a `source` named
    like a document's own key, a struct) reach both outputs with their types and values; a row
    with a bad perplexity stays a dead letter."""
    import pyarrow as pa

    texts = [f"documento número {i} " * (i + 1) for i in range(40)]
    schema = pa.schema([("text", pa.string()), ("url", pa.string()), ("timestamp", pa.string()),
                        ("perplexity", pa.float64()), ("doc_id", pa.int64()), ("source", pa.string()),
                        ("meta", pa.struct([("lang", pa.string()), ("score", pa.float32())]))])
    rows = [{"text": t, "url": f"https://e.es/{i}", "timestamp": None, "perplexity": 100.0 + 37 * i,
             "doc_id": 10_000 + i, "source": f"crawl-{i % 3}", "meta": {"lang": "es", "score": 0.5}}
            for i, t in enumerate(texts)]
    rows[5]["perplexity"] = -1.0  # the dead letter
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "in" / "part.parquet")
    out = tmp_path / "out"
    assert cli.main(["sample", "--input", str(tmp_path / "in"), "--output", str(out),
                     "--no-figures", "-q"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"]["rejected"] == 1
    records, table = _sampled(out)
    assert 0 < len(records) == table.num_rows
    assert table.schema.names[-3:] == ["doc_id", "source", "meta"]
    for name in ("doc_id", "source", "meta"):
        assert table.schema.field(name).type == schema.field(name).type
    by_id = {r["doc_id"]: r for r in rows}
    assert 10_005 not in {r["doc_id"] for r in records}
    for record, row in zip(records, table.to_pylist()):
        original = by_id[record["doc_id"]]
        assert record["text"] == row["text"] == original["text"]
        assert record["source"] == row["source"] == original["source"]
        assert row["meta"] == original["meta"] and record["meta"] == original["meta"]


def _write_jsonl_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def test_oscar_json_lines_off_their_published_schema(tmp_path):
    """Records whose declared fields hold other types are counted dead letters naming the field
    (a string for a list, a struct key the card does not list); a field no schema declares goes
    into the JSON `extras` column; every shard gets the same parquet schema."""
    with gzip.open(FIXTURES / "oscar.jsonl.gz", "rt", encoding="utf-8") as f:
        source = [json.loads(line) for line in f][:-1]
    a, b = json.loads(json.dumps(source[:12])), json.loads(json.dumps(source[12:]))
    a[0]["metadata"]["categories"] = "blog"  # the card: a list of strings
    a[1]["warc_headers"]["x-new-header"] = "1"  # not in the card's warc_headers
    a[2]["metadata"]["identification"]["prob"] = "high"
    for record in b:
        record["crawl"] = {"snapshot": "CC-MAIN-2022-49"}  # undeclared: kept as JSON
    (tmp_path / "in").mkdir()
    _write_jsonl_gz(tmp_path / "in" / "a.jsonl.gz", a)
    _write_jsonl_gz(tmp_path / "in" / "b.jsonl.gz", b)
    out = tmp_path / "out"
    stats = _run(out, "--input", str(tmp_path / "in"), "--layout", "oscar", "--factor", "1000")
    assert (stats["total"]["read"], stats["total"]["rejected"]) == (24, 3)
    letters = [json.loads(line) for line in (out / "scored" / "rejected" / "a.jsonl").read_text().splitlines()]
    assert [(x["reason"], x["line"]) for x in letters] == [("wrong_type_extra", 1), ("wrong_type_extra", 2),
                                                          ("wrong_type_extra", 3)]
    assert "`metadata.categories` is a string" in letters[0]["detail"]
    assert "'x-new-header'" in letters[1]["detail"]
    assert "`metadata.identification.prob` is a string" in letters[2]["detail"]
    schemas = [pq.read_schema(p) for p in sorted(glob.glob(str(out / "scored" / "*.parquet")))]
    assert len(schemas) == 2 and schemas[0] == schemas[1]
    records, table = _sampled(out)
    by_id = {r["warc_headers"]["warc-record-id"]: r for r in b}
    extras = {row["id"]: row["extras"] for row in table.to_pylist()}
    kept_b = [r for r in records if r["id"] in by_id]
    assert kept_b
    for record in kept_b:
        assert record["crawl"] == {"snapshot": "CC-MAIN-2022-49"}
        assert json.loads(extras[record["id"]]) == {"crawl": {"snapshot": "CC-MAIN-2022-49"}}


def test_hplt2_jsonl_end_to_end(tmp_path):
    """HPLT v2 cleaned JSON lines with `--layout hplt2`: url from `u`, timestamp from `ts`, the
    id; the fields HPLT v2 publishes are typed parquet columns, `pii` (its element type is not
    documented) stays in the JSON `extras` column; json.gz records hold every field's value."""
    with gzip.open(FIXTURES / "hplt2.jsonl.gz", "rt", encoding="utf-8") as f:
        source = [json.loads(line) for line in f]
    by_id = {r["id"]: r for r in source}
    out = tmp_path / "hplt2"
    stats = _run(out, "--input", str(FIXTURES / "hplt2.jsonl.gz"), "--layout", "hplt2")
    assert (stats["total"]["read"], stats["total"]["rejected"]) == (25, 1)
    letter = json.loads((out / "scored" / "rejected" / "hplt2.jsonl").read_text())
    assert (letter["reason"], letter["detail"]) == ("missing_text", "no `text` field")
    records, table = _sampled(out)
    assert 0 < len(records) == table.num_rows
    typed = ["f", "o", "s", "rs", "c", "collection", "lang", "prob", "seg_langs", "robotstxt",
             "filter", "doc_scores"]
    assert table.schema.names == ["text", "url", "timestamp", "perplexity", "n_tokens", "id", *typed, "extras"]
    assert table.schema.field("o").type == pa.int64()
    assert table.schema.field("doc_scores").type == pa.list_(pa.float64())
    for row in table.to_pylist():
        original = by_id[row["id"]]
        assert (row["text"], row["url"], row["timestamp"]) == (original["text"], original["u"], original["ts"])
        assert {k: row[k] for k in typed} == {k: original[k] for k in typed}
        assert json.loads(row["extras"]) == {"pii": original["pii"]}
    for record in records:
        original = by_id[record["id"]]
        assert {k: v for k, v in record.items() if k not in ("text", "timestamp", "url", "id")} == \
            {k: v for k, v in original.items() if k not in ("text", "u", "ts", "id")}
    assert {r["id"] for r in records} == _check_decisions(out, stats, lambda r: document_key(r["url"], r["text"]))
