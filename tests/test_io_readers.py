"""mC4 readers: every bad-input class becomes one counted dead letter with its line and reason;
good records around it are kept; splits come from file names; globs expand deterministically."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.corpus_io import dead_letters
from pipelines.corpus_io import mc4_io


def _gz(path, payload: bytes):
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(payload)


def _collect(records):
    docs, letters, counts = [], [], []
    for kind, item in records:
        {"doc": docs, "rejected": letters, "count": counts}[kind].append(item)
    return docs, letters, counts


def _line(**fields):
    return (json.dumps(fields, ensure_ascii=False) + "\n").encode()


def test_split_of_follows_mc4_names():
    assert mc4_io.split_of("gs://b/c4-es-validation.tfrecord-00003-of-00016.json.gz") == "validation"
    assert mc4_io.split_of("/x/c4-es.tfrecord-00001-of-02048.json.gz") == "train"
    assert mc4_io.split_of("/validation-dir/other.jsonl") == "train"  # a split folder is named exactly
    assert mc4_io.split_of("gs://b/test/c4-es.tfrecord-00001-of-02048.json.gz") == "train"  # mC4 names win


def test_split_folders_name_the_split():
    assert mc4_io.split_of("/fw/spa_Latn/test/000_00000.parquet") == "test"
    assert mc4_io.split_of("hf://datasets/x/data/spa_Latn/train/000_00000.parquet") == "train"
    assert mc4_io.split_of("/d/Validation/part-1.jsonl.gz") == "validation"
    assert mc4_io.split_of("/out/scored/test__000_00000.parquet") == "test"  # a scored stem keeps it
    assert mc4_io.split_of("/contest/latest.jsonl") == "train"


def test_every_bad_line_class_is_rejected_with_its_line(tmp_path):
    good = _line(text="hola mundo", url="https://a.es/1", timestamp="2020-01-01T00:00:00Z")
    lines = [
        good,                                                     # 1 ok
        b'{"text": "sin cerrar"\n',                               # 2 malformed json
        b'{"text": "caf\xe9", "url": null}\n',                    # 3 invalid utf-8
        _line(url="https://a.es/4"),                              # 4 missing text
        _line(text=["no", "string"]),                             # 5 non-string text
        _line(text="x" * 101, url="https://a.es/6"),              # 6 too large (limit 100)
        _line(text="ok", url=17),                                 # 7 url is int
        _line(text="ok", timestamp=20200101),                     # 8 timestamp is int
        b"\n",                                                    # 9 blank: not a record
        b"[1, 2]\n",                                              # 10 not an object
        _line(text="adios", url=None, timestamp=None),            # 11 ok
    ]
    path = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    _gz(path, b"".join(lines))
    docs, letters, counts = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes=100))
    # `line` is the physical line (the blank line 9 counts), so `sed -n 11p` finds "adios"
    assert [(d["line"], d["text"]) for d in docs] == [(1, "hola mundo"), (11, "adios")]
    assert {d["split"] for d in docs} == {"train"}
    assert [(x["line"], x["reason"]) for x in letters] == [
        (2, dead_letters.MALFORMED_JSON), (3, dead_letters.INVALID_UTF8),
        (4, dead_letters.MISSING_TEXT), (5, dead_letters.NON_STRING_TEXT),
        (6, dead_letters.TOO_LARGE), (7, dead_letters.WRONG_TYPE_URL),
        (8, dead_letters.WRONG_TYPE_TIMESTAMP), (10, dead_letters.MALFORMED_JSON)]
    assert all(x["source"] == str(path) for x in letters)
    # the raw record travels with the dead letter when readable
    assert letters[0]["record"] == '{"text": "sin cerrar"'
    assert letters[1]["record"] == '{"text": "caf\\xe9", "url": null}'
    assert letters[5]["record"] == {"text": "ok", "url": 17}
    assert counts[0].read == 10 == len(docs) + len(letters)


def test_truncated_gzip_keeps_records_before_the_cut(tmp_path):
    payload = b"".join(_line(text=f"documento {i} " * 50, url=f"https://a.es/{i}") for i in range(200))
    full = tmp_path / "full.json.gz"
    _gz(full, payload)
    data = full.read_bytes()
    cut = tmp_path / "c4-es-validation.tfrecord-00000-of-00001.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    docs, letters, counts = _collect(mc4_io.iter_json_lines(str(cut), max_doc_bytes=10**6))
    assert 0 < len(docs) < 200
    assert [d["line"] for d in docs] == list(range(1, len(docs) + 1))
    assert [(x["reason"], x["line"]) for x in letters] == [(dead_letters.TRUNCATED_GZIP, len(docs) + 1)]
    assert counts[0].read == len(docs) + 1
    assert {d["split"] for d in docs} == {"validation"}


def test_corrupt_gzip_body_is_one_rejection(tmp_path):
    path = tmp_path / "bad.json.gz"
    _gz(path, _line(text="uno") * 1000)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # CRC mismatch at the end of the member
    path.write_bytes(bytes(data))
    docs, letters, _ = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes=100))
    assert [x["reason"] for x in letters] == [dead_letters.CORRUPT_GZIP]


def test_plain_jsonl_is_read_too(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(_line(text="a") + _line(text="b", url="u"))
    docs, letters, counts = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes=100))
    assert [d["text"] for d in docs] == ["a", "b"] and not letters and counts[0].read == 2


def test_parquet_rows_get_the_same_checks(tmp_path):
    path = tmp_path / "scored.parquet"
    table = pa.table({"text": pa.array([b"bien", b"\xff\xfe", None, b"x" * 50], type=pa.binary()),
                      "url": ["u1", "u2", "u3", "u4"],
                      "timestamp": [None, None, None, None],
                      "perplexity": [10.0, 20.0, 30.0, 40.0]})
    pq.write_table(table, path)
    docs, letters, counts = _collect(
        mc4_io.iter_parquet_rows(str(path), max_doc_bytes=10, extra_columns=("perplexity",)))
    assert [(d["text"], d["perplexity"], d["line"]) for d in docs] == [("bien", 10.0, 1)]
    assert [(x["line"], x["reason"]) for x in letters] == [
        (2, dead_letters.INVALID_UTF8), (3, dead_letters.MISSING_TEXT), (4, dead_letters.TOO_LARGE)]
    assert counts[0].read == 4


def test_parquet_split_column_wins_over_file_name(tmp_path):
    path = tmp_path / "part-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "split": ["validation", "train"]}), path)
    docs, _, _ = _collect(mc4_io.iter_parquet_rows(str(path), max_doc_bytes=100))
    assert [d["split"] for d in docs] == ["validation", "train"]


def test_expand_inputs_sorted_unique_and_directory(tmp_path):
    for name in ["c4-es.tfrecord-00001-of-00002.json.gz", "c4-es.tfrecord-00000-of-00002.json.gz",
                 "stats.json", ".hidden.json.gz"]:
        (tmp_path / name).write_bytes(b"")
    pattern = str(tmp_path / "c4-es*.json.gz")
    got = mc4_io.expand_inputs(f"{pattern},{tmp_path}/c4-es.tfrecord-00000-of-00002.json.gz")
    assert [p.rsplit("/", 1)[1] for p in got] == ["c4-es.tfrecord-00000-of-00002.json.gz",
                                                  "c4-es.tfrecord-00001-of-00002.json.gz"]
    # a directory means its data files (not stats.json, not hidden files)
    assert mc4_io.expand_inputs(str(tmp_path)) == got
    with pytest.raises(FileNotFoundError, match="matched no files"):
        mc4_io.expand_inputs(str(tmp_path / "nothing-*.json.gz"))


def test_fsspec_urls_are_read(tmp_path):
    import fsspec

    with fsspec.open("memory://mc4/c4-es.tfrecord-00000-of-00001.json.gz", "wb") as f:
        f.write(gzip.compress(_line(text="en memoria", url="m")))
    files = mc4_io.expand_inputs("memory://mc4/*.json.gz")
    assert len(files) == 1 and files[0].startswith("memory://")
    assert files[0].endswith("/mc4/c4-es.tfrecord-00000-of-00001.json.gz")
    docs, letters, _ = _collect(mc4_io.iter_json_lines(files[0], max_doc_bytes=100))
    assert [d["text"] for d in docs] == ["en memoria"] and not letters


def test_dead_letter_keeps_big_records_short():
    letter = dead_letters.make("f", 3, dead_letters.TOO_LARGE, "big",
                               {"text": "y" * (dead_letters.MAX_RECORD_CHARS + 5), "url": "u"})
    assert len(letter["record"]["text"]) == dead_letters.MAX_RECORD_CHARS
    assert letter["record"]["text_truncated"] is True
    with pytest.raises(ValueError, match="unknown dead-letter reason"):
        dead_letters.make("f", 1, "because")


def test_orjson_path_gives_what_the_json_path_gives(tmp_path, monkeypatch):
    """Plain mC4 lines are parsed by orjson; every line must give the same document or dead
    letter as json alone does. The lines are those where the two parsers differ (a lone
    surrogate, NaN, a 30-digit integer, nesting past json's recursion limit, extra keys) or
    where the fast path skips a check (the size limit, with and without escapes)."""
    deep = "[" * 1010 + "]" * 1010
    lines = [
        _line(text="hola mundo", url="https://a.es/1", timestamp="2020-01-01T00:00:00Z"),
        b'{"text": "a\\ud800b", "url": "https://a.es/2"}\n',       # lone surrogate
        b'{"text": "ok", "url": "https://a.es/3", "score": NaN}\n',
        b'{"text": "ok", "id": 123456789012345678901234567890}\n',  # json: int, orjson: float
        b'{"text": "ok", "extras": ' + deep.encode() + b'}\n',      # deeper than json's limit
        _line(text="ok", id="doc-5", extras={"lang": "es"}),        # layout fields
        _line(text="x" * 101),                                      # over the limit of 100
        _line(text="\u00e9" * 60),                                  # 120 bytes of UTF-8
        ('{"text": "' + "\\u00e9" * 40 + '"}\n').encode(),          # 80 bytes, a longer line
        _line(text="ok", url=["a"]),
        b'{"text": "caf\xe9"}\n',
        _line(text=None, url="https://a.es/12"),
        _line(text="adios", timestamp=None),
    ]
    path = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    _gz(path, b"".join(lines))

    parsed = []
    real = mc4_io._orjson_loads

    def counting(data):
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(mc4_io, "_orjson_loads", counting)
    fast = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes=100))
    monkeypatch.setattr(mc4_io, "_orjson_loads", None)
    plain = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes=100))
    assert len(parsed) == len(lines)  # the fast path was tried on every line
    assert fast == plain
    # what the json path gives them, as a check on the corpus itself
    assert [d["line"] for d in plain[0]] == [1, 3, 4, 6, 9, 13]
    assert plain[0][2]["id"] == 123456789012345678901234567890  # an int, as json reads it
    assert plain[0][3]["id"] == "doc-5" and plain[0][3]["extras"] == {"lang": "es"}
    assert plain[0][4]["text"] == "\u00e9" * 40
    assert [x["line"] for x in plain[1]] == [2, 5, 7, 8, 10, 11, 12]
