"""A corrupted input set with every bad-input class runs to completion; every bad record is
one dead letter with its file, line and reason, and the counts are exact and conserve."""
import gzip
import json
import zlib
from collections import Counter

import pytest

from pipelines import cli

MAX_DOC_BYTES = 5000


def _line(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


@pytest.fixture(scope="module")
def good_docs(shared_data):
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    small = [d for d in docs if len(d["text"].encode()) < MAX_DOC_BYTES and d["url"]]
    return [{"text": d["text"], "timestamp": d["timestamp"], "url": d["url"]} for d in small[:200]]


@pytest.fixture(scope="module")
def corrupted(good_docs, tmp_path_factory):
    """Returns (input folder, expected dead letters {(file, line): reason}, expected per split)."""
    folder = tmp_path_factory.mktemp("corrupted")
    expected = {}
    good = iter(good_docs)

    # train shard 0: good records interleaved with one of each bad-record class
    bad = [
        ("malformed_json", b'{"text": "sin cerrar", "url": "https://x.es/1"\n'),
        ("invalid_utf8", b'{"text": "ni\xf1o", "url": "https://x.es/2"}\n'),
        ("missing_text", _line({"url": "https://x.es/3", "timestamp": None})),
        ("missing_text", _line({"text": None, "url": "https://x.es/3b"})),
        ("non_string_text", _line({"text": {"p": "hola"}, "url": "https://x.es/4"})),
        ("document_too_large", _line({"text": "palabra " * 1000, "url": "https://x.es/5"})),
        ("wrong_type_url", _line({"text": "hola", "url": ["https://x.es/6"]})),
        ("wrong_type_timestamp", _line({"text": "hola", "url": "https://x.es/7", "timestamp": 1589000000})),
        ("malformed_json", b'"just a string"\n'),
    ]
    lines, line_no = [], 0
    name0 = "c4-es.tfrecord-00000-of-00002.json.gz"
    for reason, raw in bad:
        for _ in range(3):
            lines.append(_line(next(good)))
            line_no += 1
        lines.append(raw)
        line_no += 1
        expected[(name0, line_no)] = reason
    good0 = 3 * len(bad) + 5
    for _ in range(5):
        lines.append(_line(next(good)))
    (folder / name0).write_bytes(gzip.compress(b"".join(lines), mtime=0))

    # train shard 1: a gzip stream cut in the middle
    name1 = "c4-es.tfrecord-00001-of-00002.json.gz"
    payload = b"".join(_line(next(good)) for _ in range(60))
    whole = gzip.compress(payload, mtime=0)
    cut = whole[: len(whole) // 2]
    (folder / name1).write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    good1 = readable.count(b"\n")  # complete lines before the cut
    assert 0 < good1 < 60
    expected[(name1, good1 + 1)] = "truncated_gzip"

    # validation shard: two bad records among good ones
    name2 = "c4-es-validation.tfrecord-00000-of-00001.json.gz"
    lines = [_line(next(good)) for _ in range(10)]
    lines.insert(4, b'{"text": "\xc3\x28", "url": null}\n')
    expected[(name2, 5)] = "invalid_utf8"
    lines.append(_line({"text": "hola", "timestamp": {"seconds": 1}}))
    expected[(name2, 12)] = "wrong_type_timestamp"
    (folder / name2).write_bytes(gzip.compress(b"".join(lines), mtime=0))

    per_split = {
        "train": {"scored": good0 + good1, "rejected": len(bad) + 1},
        "validation": {"scored": 10, "rejected": 2},
    }
    return folder, expected, per_split


@pytest.fixture(scope="module")
def fault_run(corrupted, tmp_path_factory):
    folder, _, _ = corrupted
    out = tmp_path_factory.mktemp("fault-out")
    rc = cli.main(["run", "--input", str(folder / "*.json.gz"), "--output", str(out),
                   "--max-doc-bytes", str(MAX_DOC_BYTES), "--no-figures"])
    assert rc == 0
    return out


def test_every_bad_record_is_one_dead_letter_with_line_and_reason(corrupted, fault_run):
    _, expected, _ = corrupted
    rejected_files = sorted((fault_run / "scored" / "rejected").glob("*.jsonl"))
    assert len(rejected_files) == 3  # one per input shard
    letters = [json.loads(line) for f in rejected_files for line in f.read_text().splitlines()]
    got = {(letter["source"].rsplit("/", 1)[1], letter["line"]): letter["reason"] for letter in letters}
    assert got == expected
    assert len(letters) == len(expected)
    # sorted by (source, line), and the raw record kept where it was readable
    assert letters == sorted(letters, key=lambda x: (x["source"], x["line"]))
    by_reason = {x["reason"]: x for x in letters}
    assert by_reason["wrong_type_url"]["record"] == {"text": "hola", "url": ["https://x.es/6"]}
    assert "ni\\xf1o" in next(x for x in letters if x["reason"] == "invalid_utf8"
                               and x["split"] == "train")["record"]
    assert by_reason["truncated_gzip"]["record"] is None
    assert Counter(x["reason"] for x in letters) == Counter(expected.values())


def test_counts_are_exact_and_conserve(corrupted, fault_run):
    _, _, per_split = corrupted
    stats = json.loads((fault_run / "stats.json").read_text())
    for split, want in per_split.items():
        got = stats["splits"][split]
        assert got["scored"] == want["scored"]
        assert got["rejected"] == want["rejected"]
        assert got["read"] == want["scored"] + want["rejected"]
        assert got["scored"] == got["kept"] + got["dropped"]
    total = stats["total"]
    assert total["read"] == sum(w["scored"] + w["rejected"] for w in per_split.values())
    assert total["rejected"] == sum(w["rejected"] for w in per_split.values())
    kept_rows = 0
    for path in fault_run.glob("*.json.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            kept_rows += sum(1 for _ in f)
    assert kept_rows == total["kept"] > 0


def test_input_with_nothing_scorable_is_an_error_that_names_the_reasons(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "c4-es.tfrecord-00000-of-00002.json.gz").write_bytes(
        gzip.compress(b'{"text": 5}\nnot json\n', mtime=0))
    (folder / "c4-es.tfrecord-00001-of-00002.json.gz").write_bytes(gzip.compress(b"", mtime=0))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--input", str(folder), "--output", str(out)])
    message = str(err.value.code)
    assert "no document was scored" in message and "malformed_json" in message
    # nothing was committed: no output files, no leftover staging
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
