"""The sha256 record that spares a run re-reading a local multi-GB model (lm_models.file_hash)."""
import hashlib
import os

from lm_models.file_hash import remembered_sha256


def _counting(calls):
    def hash_file(path):
        calls.append(path)
        return hashlib.sha256(open(path, "rb").read()).hexdigest()
    return hash_file


def test_a_file_is_hashed_once_then_rehashed_when_it_changes(tmp_path):
    model, records, calls = tmp_path / "es.arpa.bin", tmp_path / "records", []
    model.write_bytes(b"first")
    first = remembered_sha256(model, records, _counting(calls))
    assert first == hashlib.sha256(b"first").hexdigest()
    assert remembered_sha256(model, records, _counting(calls)) == first and len(calls) == 1
    model.write_bytes(b"other")  # same size, new content and mtime
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    assert remembered_sha256(model, records, _counting(calls)) == hashlib.sha256(b"other").hexdigest()
    assert len(calls) == 2


def test_a_record_of_another_file_or_garbage_is_not_trusted(tmp_path):
    records, calls = tmp_path / "records", []
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"aaaa")
    b.write_bytes(b"bbbb")
    remembered_sha256(a, records, _counting(calls))
    assert remembered_sha256(b, records, _counting(calls)) == hashlib.sha256(b"bbbb").hexdigest()
    for record in records.iterdir():
        record.write_text("{not json")
    assert remembered_sha256(a, records, _counting(calls)) == hashlib.sha256(b"aaaa").hexdigest()
    assert len(calls) == 3


def test_an_unwritable_record_folder_only_costs_the_hash(tmp_path):
    model, calls = tmp_path / "m.bin", []
    model.write_bytes(b"x")
    blocker = tmp_path / "records"
    blocker.write_text("a file where the folder would be")
    for _ in range(2):
        assert remembered_sha256(model, blocker, _counting(calls)) == hashlib.sha256(b"x").hexdigest()
    assert len(calls) == 2
