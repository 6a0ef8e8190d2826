"""Hostile records and files through `ppsample score` and `ppsample run`: the job exits 0,
every bad record or file is one dead letter with its reason and physical line, the valid
records of BOM / CR-only / mis-named files are all scored, and read = scored + rejected."""
import gzip
import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli

MAX_DOC_BYTES = 5000


def _line(obj, sep=b"\n") -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + sep


@pytest.fixture(scope="module")
def hostile(shared_data, tmp_path_factory):
    """(folder, expected letters {(file, line): reason}, expected {split: (scored, rejected)})."""
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    good = iter([{k: d[k] for k in ("text", "url", "timestamp")} for d in docs
                 if d["url"] and len(d["text"].encode()) < MAX_DOC_BYTES][:80])
    folder = tmp_path_factory.mktemp("hostile")
    expected, scored = {}, Counter()

    # 0: a BOM, CR-only line endings, 20 valid documents (used to be one malformed_json)
    name = "c4-es.tfrecord-00000-of-00005.json.gz"
    (folder / name).write_bytes(gzip.compress(
        b"\xef\xbb\xbf" + b"".join(_line(next(good), b"\r") for _ in range(20)), mtime=0))
    scored["train"] += 20

    # 1: plain text named .json.gz, with blank lines (they count in line numbers)
    name = "c4-es.tfrecord-00001-of-00005.json.gz"
    lines = [_line(next(good)), b"\n", _line(next(good)), b"{no\n", _line(next(good))]
    (folder / name).write_bytes(b"".join(lines))
    expected[(name, 4)] = "malformed_json"
    scored["train"] += 3

    # 2: zero bytes; 3: a directory
    (folder / "c4-es.tfrecord-00002-of-00005.json.gz").write_bytes(b"")
    expected[("c4-es.tfrecord-00002-of-00005.json.gz", 1)] = "empty_file"
    (folder / "c4-es.tfrecord-00003-of-00005.json.gz").mkdir()
    expected[("c4-es.tfrecord-00003-of-00005.json.gz", 1)] = "not_a_file"

    # 4: records that used to kill the job, between good ones
    name = "c4-es.tfrecord-00004-of-00005.json.gz"
    bad = [
        ("malformed_json", b"[" * 3000 + b"]" * 3000 + b"\n"),
        ("invalid_utf8", b'{"text": "hola", "url": "https://x.es/\\ud800"}\n'),
        ("invalid_utf8", b'{"text": "hola", "timestamp": "2020\\udc00"}\n'),
        ("non_string_text", b'{"text": 3, "url": "\\ud83d"}\n'),  # surrogate in the kept record
        ("document_too_large", b'{"text": "' + b"palabra " * 40_000 + b'"}\n'),  # over the line limit
    ]
    lines = []
    for reason, raw in bad:
        lines += [_line(next(good)), b"\n", raw]
        expected[(name, len(lines))] = reason
    lines.append(_line(next(good)))
    (folder / name).write_bytes(gzip.compress(b"".join(lines), mtime=0))
    scored["train"] += len(bad) + 1

    # validation: a parquet file cut in half
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["uno", "dos"], "url": ["a", "b"]}), sink)
    name = "c4-es-validation.tfrecord-00000-of-00001.parquet"
    (folder / name).write_bytes(sink.getvalue()[: len(sink.getvalue()) // 2])
    expected[(name, 1)] = "corrupt_parquet"

    rejected = Counter()
    for (file, _), _reason in expected.items():
        rejected["validation" if "validation" in file else "train"] += 1
    splits = {s: (scored[s], rejected[s]) for s in ("train", "validation")}
    return folder, expected, splits


def _letters(out):
    """Every dead letter of a score or run output (one file per input shard)."""
    files = sorted(out.glob("rejected/*.jsonl")) + sorted(out.glob("scored/rejected/*.jsonl"))
    return [json.loads(x) for f in files for x in f.read_text("utf-8").splitlines()]


def _check(out, expected, splits):
    letters = _letters(out)
    got = {(x["source"].rsplit("/", 1)[1], x["line"]): x["reason"] for x in letters}
    assert got == expected and len(letters) == len(expected)
    stats = json.loads((out / "stats.json").read_text())
    for split, (scored, rejected) in splits.items():
        counts = stats["splits"][split]
        assert (counts["scored"], counts["rejected"]) == (scored, rejected), split
        assert counts["read"] == scored + rejected
    return letters, stats


def test_score_survives_every_hostile_record_and_counts_it(hostile, tmp_path):
    folder, expected, splits = hostile
    out = tmp_path / "scored"
    assert cli.main(["score", "--input", str(folder), "--output", str(out),
                     "--max-doc-bytes", str(MAX_DOC_BYTES)]) == 0
    letters, _ = _check(out, expected, splits)
    rows = sum(pq.read_metadata(p).num_rows for p in out.glob("*.parquet"))
    assert rows == sum(s for s, _ in splits.values())
    surrogate = next(x for x in letters if x["reason"] == "non_string_text")
    assert surrogate["record"] == {"text": 3, "url": "\\ud83d"}


def test_run_survives_every_hostile_record_and_counts_it(hostile, tmp_path):
    folder, expected, splits = hostile
    out = tmp_path / "run"
    assert cli.main(["run", "--input", str(folder), "--output", str(out), "--no-figures",
                     "--max-doc-bytes", str(MAX_DOC_BYTES)]) == 0
    _, stats = _check(out, expected, splits)
    assert stats["total"]["scored"] == stats["total"]["kept"] + stats["total"]["dropped"]


@pytest.fixture(scope="module")
def empty_after_normalization(tmp_path_factory):
    folder = tmp_path_factory.mktemp("empty-norm")
    lines = [_line({"text": "El gobierno aprobó ayer la nueva ley.", "url": "https://x.es/1"}),
             _line({"text": "", "url": "https://x.es/2"}),
             _line({"text": "  \n\t\u3000", "url": "https://x.es/3"}),
             _line({"text": "\u0001\u0002", "url": "https://x.es/4"}),
             _line({"text": "Hoy llueve en Madrid.", "url": "https://x.es/5"})]
    (folder / "c4-es.tfrecord-00000-of-00001.json.gz").write_bytes(
        gzip.compress(b"".join(lines), mtime=0))
    return folder


def _score(folder, out, *extra):
    assert cli.main(["score", "--input", str(folder), "--output", str(out), *extra]) == 0
    stats = json.loads((out / "stats.json").read_text())
    total = stats["total"]
    assert total["read"] == total["scored"] + total["rejected"] == 5
    return stats, _letters(out)


def test_ccnet_dead_letters_text_that_normalises_to_nothing(empty_after_normalization, tmp_path):
    stats, letters = _score(empty_after_normalization, tmp_path / "ccnet")
    assert stats["preset"] == "ccnet"
    assert (stats["total"]["scored"], stats["total"]["rejected"]) == (2, 3)
    assert [x["line"] for x in letters] == [2, 3, 4]
    assert all(x["record"]["url"].startswith("https://x.es/") for x in letters)


def test_ccnet_dead_letter_reason_is_empty_after_normalization(empty_after_normalization,
                                                               tmp_path):
    _, letters = _score(empty_after_normalization, tmp_path / "ccnet")
    assert [x["reason"] for x in letters] == ["empty_after_normalization"] * 3


def test_edugp_scores_text_that_normalises_to_nothing(empty_after_normalization, tmp_path):
    stats, letters = _score(empty_after_normalization, tmp_path / "edugp", "--preset", "edugp")
    assert (stats["total"]["scored"], stats["total"]["rejected"]) == (5, 0) and not letters
    rows = [row for path in sorted((tmp_path / "edugp").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()]
    empty_pp = {row["perplexity"] for row in rows
                if not row["text"].strip("\x01\x02 \n\t\u3000")}
    assert len(empty_pp) == 1  # one value: the empty line's, 10 ** -log10 P(</s> | <s>)
    assert {row["n_tokens"] for row in rows if row["perplexity"] in empty_pp} == {1}
