"""Hostile inputs to the mC4 readers: no record or file can stop a job or vanish uncounted.

Each class becomes a counted dead letter with a reason and the physical line number (or its
valid records are read), `read = docs + letters`, and every letter survives Beam's coder."""
import gzip
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.coders.coders import FastPrimitivesCoder

from pipelines.corpus_io import dead_letters
from pipelines.corpus_io import mc4_io


def _collect(records):
    docs, letters, counts = [], [], []
    for kind, item in records:
        {"doc": docs, "rejected": letters, "count": counts}[kind].append(item)
    return docs, letters, counts


def _line(sep=b"\n", **fields):
    return json.dumps(fields, ensure_ascii=False).encode() + sep


def _read(path, max_doc_bytes=1000):
    docs, letters, counts = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes))
    assert sum(c.read for c in counts) == len(docs) + len(letters)  # nothing lost uncounted
    coder = FastPrimitivesCoder()  # what Beam encodes dead letters with between stages
    for letter in letters:
        assert coder.decode(coder.encode(letter)) == letter
    return docs, letters, counts


def test_utf8_bom_on_the_first_line_is_not_a_malformed_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _line(text="uno") + _line(text="dos"))
    docs, letters, _ = _read(path)
    assert [(d["line"], d["text"]) for d in docs] == [(1, "uno"), (2, "dos")] and not letters


@pytest.mark.parametrize("sep", [b"\r", b"\r\n"])
def test_cr_only_and_crlf_files_score_every_record(tmp_path, sep):
    path = tmp_path / "mac.json.gz"
    path.write_bytes(gzip.compress(b"".join(_line(sep, text=f"doc {i}") for i in range(20))
                                   + b'{"text": 5}' + sep))
    docs, letters, counts = _read(path)
    assert [d["text"] for d in docs] == [f"doc {i}" for i in range(20)]
    assert [d["line"] for d in docs] == list(range(1, 21))
    assert [(x["line"], x["reason"]) for x in letters] == [(21, dead_letters.NON_STRING_TEXT)]
    assert counts[0].read == 21


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_line_splitting_does_not_depend_on_chunk_boundaries(tmp_path, monkeypatch, chunk):
    """CRLF split across two reads must stay one line break; blank lines keep their numbers."""
    payload = (_line(b"\r\n", text="a") + b"\r\n" + _line(b"\r", text="b") + b"\r"
               + _line(b"\n", text="c") + _line(b"", text="d"))  # last line has no line break
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(payload)
    monkeypatch.setattr(mc4_io, "READ_CHUNK_BYTES", chunk)
    docs, letters, _ = _read(path)
    # "a"\r\n, blank\r\n, "b"\r, blank\r, "c"\n, "d"
    assert [(d["line"], d["text"]) for d in docs] == [(1, "a"), (3, "b"), (5, "c"), (6, "d")]
    assert not letters


def test_blank_lines_count_in_the_line_number_of_a_letter(tmp_path):
    path = tmp_path / "blanks.jsonl"
    path.write_bytes(b"\n\n" + _line(text="ok") + b"   \n" + b"{broken\n")
    docs, letters, counts = _read(path)
    assert [d["line"] for d in docs] == [3]
    assert [(x["line"], x["reason"]) for x in letters] == [(5, dead_letters.MALFORMED_JSON)]
    # `sed -n 5p` finds the record the letter names
    assert path.read_bytes().split(b"\n")[4].decode() == letters[0]["record"]
    assert counts[0].read == 2  # blank lines are not records


def test_plain_text_named_json_gz_is_read_as_json_lines(tmp_path):
    path = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    path.write_bytes(_line(text="uno") + b"not json\n" + _line(text="tres"))
    docs, letters, counts = _read(path)
    assert [(d["line"], d["text"]) for d in docs] == [(1, "uno"), (3, "tres")]
    assert [(x["line"], x["reason"]) for x in letters] == [(2, dead_letters.MALFORMED_JSON)]
    assert counts[0].read == 3


def test_binary_garbage_named_json_gz_is_one_corrupt_gzip_letter(tmp_path):
    path = tmp_path / "garbage.json.gz"
    path.write_bytes(bytes(range(256)) * 40)
    docs, letters, counts = _read(path)
    assert not docs and [(x["line"], x["reason"]) for x in letters] == [(1, dead_letters.CORRUPT_GZIP)]
    assert "not a gzip file" in letters[0]["detail"] and counts[0].read == 1


def test_gzip_content_is_recognised_whatever_the_suffix(tmp_path):
    path = tmp_path / "really-gzip.jsonl"
    path.write_bytes(gzip.compress(_line(text="comprimido")))
    docs, letters, _ = _read(path)
    assert [d["text"] for d in docs] == ["comprimido"] and not letters


def test_zero_byte_gz_is_an_empty_file_letter_and_zero_byte_jsonl_has_no_records(tmp_path):
    gz = tmp_path / "c4-es-validation.tfrecord-00000-of-00001.json.gz"
    gz.write_bytes(b"")
    docs, letters, counts = _read(gz)
    assert [(x["line"], x["reason"], x["split"]) for x in letters] == [
        (1, dead_letters.EMPTY_FILE, "validation")]
    assert (counts[0].split, counts[0].read) == ("validation", 1)
    plain = tmp_path / "empty.jsonl"
    plain.write_bytes(b"")
    assert _read(plain)[1:] == ([], [mc4_io.FileCount(str(plain), "train", 0)])


def test_directory_named_json_gz_is_listed_and_is_a_not_a_file_letter(tmp_path):
    (tmp_path / "c4-es.tfrecord-00000-of-00002.json.gz").write_bytes(gzip.compress(_line(text="a")))
    (tmp_path / "c4-es.tfrecord-00001-of-00002.json.gz").mkdir()
    (tmp_path / "rejected").mkdir()  # a folder without a data suffix is not input
    files = mc4_io.expand_inputs(str(tmp_path / "*"))
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "c4-es.tfrecord-00000-of-00002.json.gz", "c4-es.tfrecord-00001-of-00002.json.gz"]
    assert mc4_io.expand_inputs(str(tmp_path)) == files
    docs, letters, counts = _read(files[1])
    assert not docs and [x["reason"] for x in letters] == [dead_letters.NOT_A_FILE]
    assert counts[0].read == 1


def test_json_nested_too_deep_is_a_malformed_json_letter(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"[" * 5000 + b"]" * 5000 + b"\n" + _line(text="despues"))
    docs, letters, _ = _read(path, max_doc_bytes=10**6)
    assert [d["text"] for d in docs] == ["despues"]
    assert [(x["line"], x["reason"]) for x in letters] == [(1, dead_letters.MALFORMED_JSON)]
    assert "nested too deeply" in letters[0]["detail"]


def test_a_deep_record_kept_in_a_letter_is_bounded(tmp_path):
    # parses (under Python's recursion limit) but the url is a list: the letter keeps the record
    deep = b'{"text": "t", "url": ' + b"[" * 500 + b"]" * 500 + b"}\n"
    path = tmp_path / "deep-url.jsonl"
    path.write_bytes(deep)
    _, letters, _ = _read(path, max_doc_bytes=10**6)
    assert [x["reason"] for x in letters] == [dead_letters.WRONG_TYPE_URL]
    depth, value = 0, letters[0]["record"]["url"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert value == dead_letters.TOO_DEEP and depth < 40


@pytest.mark.parametrize("field", ["text", "url", "timestamp"])
def test_lone_surrogates_in_any_field_are_invalid_utf8_letters(tmp_path, field):
    record = {"text": "hola", "url": "https://a.es/", "timestamp": "2020-01-01"}
    raw = json.dumps(record).replace('"hola"' if field == "text" else f'"{record[field]}"',
                                     f'"bad \\ud800 {field}"')
    path = tmp_path / "surrogates.jsonl"
    path.write_bytes(raw.encode() + b"\n" + _line(text="bien"))
    docs, letters, _ = _read(path)  # _read also encodes each letter with Beam's coder
    assert [d["text"] for d in docs] == ["bien"]
    assert [(x["line"], x["reason"]) for x in letters] == [(1, dead_letters.INVALID_UTF8)]
    assert f"`{field}`" in letters[0]["detail"]
    assert letters[0]["record"][field] == f"bad \\ud800 {field}"  # the escape, as text


def test_surrogate_inside_a_kept_record_of_another_letter_is_encodable(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": 7, "note": "\\udfff", "\\ud800": 1}\n')
    _, letters, _ = _read(path)
    assert letters[0]["reason"] == dead_letters.NON_STRING_TEXT
    assert letters[0]["record"] == {"text": 7, "note": "\\udfff", "\\ud800": 1}


def test_a_huge_line_is_skipped_without_being_read_whole(tmp_path):
    big = 24 * 1024 * 1024
    path = tmp_path / "huge.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_line(text="antes"))
        f.write(b'{"text": "' + b"a" * big + b'"}\n')
        f.write(_line(text="despues"))
    tracemalloc.start()
    try:
        docs, letters, counts = _collect(mc4_io.iter_json_lines(str(path), max_doc_bytes=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(d["line"], d["text"]) for d in docs] == [(1, "antes"), (3, "despues")]
    assert [(x["line"], x["reason"], x["record"]) for x in letters] == [
        (2, dead_letters.TOO_LARGE, None)]
    assert f"line is {big + 12} bytes" in letters[0]["detail"]
    assert counts[0].read == 3
    assert peak < big / 4  # chunks and at most the line limit, never the 24 MB line


def test_a_document_near_the_limit_spelled_with_escapes_is_not_cut_by_the_line_limit(tmp_path):
    text = "\x01" * 1000  # 1,000 bytes of text, 6,000 bytes of JSON escapes
    path = tmp_path / "escaped.jsonl"
    path.write_bytes(json.dumps({"text": text}).encode() + b"\n")
    docs, letters, _ = _read(path, max_doc_bytes=1000)
    assert [d["text"] for d in docs] == [text] and not letters


def _parquet_bytes(n=50):
    import io

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(n)]}), sink, row_group_size=10)
    return sink.getvalue()


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[: len(data) // 2], dead_letters.CORRUPT_PARQUET),   # cut short
    (lambda data: b"not parquet at all" * 10, dead_letters.CORRUPT_PARQUET),
    (lambda data: data[:-4] + b"XXXX", dead_letters.CORRUPT_PARQUET),       # bad end magic
    (lambda data: b"", dead_letters.EMPTY_FILE),
])
def test_broken_parquet_is_one_letter_not_a_crash(tmp_path, damage, reason):
    path = tmp_path / "c4-es-validation-part-00000-of-00001.parquet"
    path.write_bytes(damage(_parquet_bytes()))
    docs, letters, counts = _collect(mc4_io.iter_parquet_rows(str(path), max_doc_bytes=100))
    assert not docs
    assert [(x["line"], x["reason"], x["split"]) for x in letters] == [(1, reason, "validation")]
    assert [(c.split, c.read) for c in counts] == [("validation", 1)]


def test_parquet_directory_is_a_not_a_file_letter(tmp_path):
    path = tmp_path / "part-00000-of-00001.parquet"
    path.mkdir()
    docs, letters, counts = _collect(mc4_io.iter_parquet_rows(str(path), max_doc_bytes=100))
    assert not docs and [x["reason"] for x in letters] == [dead_letters.NOT_A_FILE]
    assert counts[0].read == 1


def test_corruption_inside_a_parquet_keeps_the_rows_before_it(tmp_path):
    data = bytearray(_parquet_bytes())
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    # damage the third row group's first column chunk: rows 1-20 read, then the file breaks
    chunk = meta.row_group(2).column(0)
    start = chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path = tmp_path / "part.parquet"
    path.write_bytes(bytes(data))
    docs, letters, counts = _collect(mc4_io.iter_parquet_rows(str(path), max_doc_bytes=100))
    assert [d["text"] for d in docs] == [f"doc {i}" for i in range(20)]
    assert [(x["line"], x["reason"]) for x in letters] == [(21, dead_letters.CORRUPT_PARQUET)]
    assert counts[0].read == 21


def test_a_failing_parquet_read_is_raised_for_beam_to_retry(tmp_path, monkeypatch):
    """A broken file is a letter; a broken read (the stream raising) is not the file's fault."""
    import io

    path = tmp_path / "part.parquet"
    path.write_bytes(_parquet_bytes())

    class FlakyStream(io.BytesIO):
        def read(self, *args):
            raise ConnectionResetError("remote read failed")

    monkeypatch.setattr(mc4_io, "open_binary", lambda p: FlakyStream(path.read_bytes()))
    with pytest.raises(ConnectionResetError):
        _collect(mc4_io.iter_parquet_rows(str(path), max_doc_bytes=100))
