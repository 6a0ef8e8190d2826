"""The column-wise fast paths write exactly the bytes of the row-by-row ones (issue 9: speed
must not change a single output byte).

- mc4_json_lines (orjson per field) against json.dumps of the record dict, every code point;
- ParquetStream.write_table (Arrow tables, any chunking) against write (dicts one list at a
  time), with row groups closing on the row limit and on the text limit;
- SampleShard's column-wise read of a scored shard phase 1 wrote (scored_file set) against
  its row-by-row read of the same file as pre-scored input, two splits in one file, several
  row groups: same sampled files, same statistics.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from pipelines.corpus.input_shards import plan_input_shards  # noqa: E402
from pipelines.corpus.plan import SamplingRequest, resolve_plan  # noqa: E402
from pipelines.corpus.phase2 import SampleShard  # noqa: E402
from pipelines.corpus.phase1 import SCORED_COLUMNS, ShardSummary  # noqa: E402
from pipelines.corpus_io import writers  # noqa: E402
from sampling import LogHistogram  # noqa: E402


def _reference_line(text, timestamp, url) -> bytes:
    return (json.dumps({"text": text, "timestamp": timestamp, "url": url}, ensure_ascii=False)
            + "\n").encode("utf-8")


def test_json_lines_equal_json_dumps_for_every_code_point(monkeypatch):
    code_points = [cp for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    texts = ["".join(map(chr, code_points[i:i + 4096])) + '"\\\n\t'
             for i in range(0, len(code_points), 4096)]
    timestamps = [None if i % 3 == 0 else f"2020-01-{i % 28 + 1:02d}T00:00:00Z"
                  for i in range(len(texts))]
    urls = [None if i % 2 else f"https://e.es/{i}?q=\u00e1\"" for i in range(len(texts))]
    expected = b"".join(_reference_line(*row) for row in zip(texts, timestamps, urls))
    assert writers.mc4_json_lines(texts, timestamps, urls) == expected
    # the same without orjson (a worker where it is not installed)
    writers._json_string_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    try:
        assert writers._json_string_encoder() is writers.python_json_string
        assert writers.mc4_json_lines(texts, timestamps, urls) == expected
    finally:
        writers._json_string_encoder.cache_clear()


def _docs(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        text = "ñandú " * int(rng.integers(1, 40)) + f"{i}\n\u00e9"
        docs.append({"text": text, "url": None if i % 5 == 0 else f"https://e.es/{i}",
                     "timestamp": None if i % 7 == 0 else "2020-05-01T00:00:00Z",
                     "perplexity": float(rng.uniform(10, 5000)),
                     "n_tokens": int(rng.integers(1, 500)),
                     "split": "validation" if i % 4 == 0 else "train"})
    return docs


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference_parquet(path: Path, docs: list[dict], columns, max_rows: int, max_text: int):
    """The rule as first written, independent of ParquetStream: rows one at a time, a row
    group written from Python lists when it reaches max_rows rows or max_text code points."""
    import pyarrow.parquet as pq

    types = writers._parquet_types()
    schema = pa.schema([(c, types[c]) for c in columns])
    with pq.ParquetWriter(str(path), schema, compression="zstd") as out:
        rows, text = [], 0
        for doc in docs:
            rows.append(doc)
            text += len(doc["text"])
            if len(rows) >= max_rows or text >= max_text:
                out.write_table(pa.table({c: pa.array([d[c] for d in rows], type=types[c])
                                          for c in columns}, schema=schema))
                rows, text = [], 0
        if rows:
            out.write_table(pa.table({c: pa.array([d[c] for d in rows], type=types[c])
                                      for c in columns}, schema=schema))


@pytest.mark.parametrize("limits", [(7, 10 ** 9), (10 ** 6, 900), (11, 700)])
def test_parquet_write_table_equals_row_writes(tmp_path, limits):
    import pyarrow.parquet as pq

    docs = _docs(100)
    reference = tmp_path / "reference.parquet"
    _reference_parquet(reference, docs, SCORED_COLUMNS, *limits)
    rows_path, table_path = tmp_path / "rows.parquet", tmp_path / "table.parquet"
    with writers.ParquetStream(str(rows_path), SCORED_COLUMNS, *limits) as out:
        for i in range(0, len(docs), 13):
            out.write(docs[i:i + 13])
    types = writers._parquet_types()
    table = pa.table({c: pa.array([d[c] for d in docs], type=types[c]) for c in SCORED_COLUMNS})
    with writers.ParquetStream(str(table_path), SCORED_COLUMNS, *limits) as out:
        for start, size in [(0, 1), (1, 30), (31, 0), (31, 52), (83, 17)]:
            out.write_table(table.slice(start, size))
    assert _sha(rows_path) == _sha(reference)
    assert _sha(table_path) == _sha(reference)
    groups = pq.ParquetFile(table_path).metadata.num_row_groups
    assert groups > 1  # the limits did cut row groups
    assert pq.read_table(table_path).to_pylist() == [{c: d[c] for c in SCORED_COLUMNS}
                                                     for d in docs]


def test_json_gz_write_columns_equals_write(tmp_path):
    docs = _docs(50)
    with writers.JsonGzStream(str(tmp_path / "a.json.gz")) as out:
        out.write(docs)
    with writers.JsonGzStream(str(tmp_path / "b.json.gz")) as out:
        out.write_columns([d["text"] for d in docs], [d["timestamp"] for d in docs],
                          [d["url"] for d in docs])
    assert _sha(tmp_path / "a.json.gz") == _sha(tmp_path / "b.json.gz")
    with gzip.open(tmp_path / "a.json.gz", "rb") as f:
        assert f.read() == b"".join(_reference_line(d["text"], d["timestamp"], d["url"])
                                    for d in docs)


def test_sampling_a_scored_shard_column_wise_equals_row_by_row(tmp_path, monkeypatch):
    docs = _docs(300, seed=1)
    scored = tmp_path / "in" / "c4-es.tfrecord-00000-of-00001.parquet"
    # several row groups, the two splits mixed in each
    with writers.ParquetStream(str(scored), SCORED_COLUMNS, row_group_rows=64) as out:
        out.write(docs)
    shard = plan_input_shards([str(scored)])[0]
    histograms = {}
    for d in docs:
        histograms.setdefault(d["split"], LogHistogram()).add([d["perplexity"]],
                                                              tokens=np.array([d["n_tokens"]]))
    plan = resolve_plan(None, histograms, SamplingRequest(method="gaussian", seed=5))

    def sample(out_dir: Path, scored_file):
        summary = ShardSummary(shard, str(scored), scored_file, shard.rejected_name)
        dofn = SampleShard(str(out_dir), "mc4-es", "gaussian", True, 1 << 22, batch_size=32)
        dofn.start_bundle()
        [result] = list(dofn.process(summary, plan))
        dofn.finish_bundle()
        files = {p.relative_to(out_dir).as_posix(): _sha(p)
                 for p in sorted(out_dir.rglob("*")) if p.is_file()}
        return result, files

    columns, column_files = sample(tmp_path / "columns", shard.scored_name)
    rows, row_files = sample(tmp_path / "rows", None)
    assert column_files == row_files
    assert len(column_files) == 4  # json.gz + parquet for each split
    assert columns.files == rows.files
    assert set(columns.splits) == {"train", "validation"}
    for split in columns.splits:
        a, b = columns.splits[split], rows.splits[split]
        assert (a.scored, a.kept, a.tokens_kept, a.band_kept, a.band_probability) == \
               (b.scored, b.kept, b.tokens_kept, b.band_kept, b.band_probability)
        assert 0 < a.kept < a.scored


def test_a_failed_background_write_is_raised_and_leaves_no_file(tmp_path):
    """Row groups are compressed and written in the stream's thread: its error reaches the
    caller (at the next write or at close), and the shard never becomes visible."""
    path = tmp_path / "s.parquet"
    docs = _docs(40)
    with pytest.raises(OSError, match="disk full"):
        with writers.ParquetStream(str(path), SCORED_COLUMNS, row_group_rows=10) as out:
            def failing(table):
                raise OSError("disk full")

            out._writer.write_table = failing
            for i in range(0, 40, 5):
                out.write(docs[i:i + 5])
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="no space"):
        with writers.JsonGzStream(str(tmp_path / "a.json.gz")) as out:
            def failing_gz(data):
                raise OSError("no space")

            out._gz.write = failing_gz
            out.write(docs)
    assert list(tmp_path.iterdir()) == []


def _gated(monkeypatch, gate, failing: str | None = None):
    """JsonGzStream's commit (run in its writer thread) waits for `gate`; with `failing`, the
    commit of that file fails instead."""
    commit = writers.JsonGzStream._commit

    def gated_commit(self):
        assert gate.wait(10)
        if failing and self.path.endswith(failing):
            raise OSError("disk full")
        commit(self)

    monkeypatch.setattr(writers.JsonGzStream, "_commit", gated_commit)


def test_pending_closes_finish_in_the_background_and_wait_all_completes_them(tmp_path,
                                                                             monkeypatch):
    """add() returns while the stream's last bytes are still being written (the caller goes on);
    wait_all() returns only once every file is complete, with the bytes close() gives."""
    import threading

    docs = _docs(30)
    with writers.JsonGzStream(str(tmp_path / "ref.json.gz")) as ref:
        ref.write(docs)
    gate = threading.Event()
    _gated(monkeypatch, gate)
    closing = writers.PendingCloses(limit=4)
    for name in ("a", "b"):
        stream = writers.JsonGzStream(str(tmp_path / f"{name}.json.gz"))
        stream.write(docs)
        closing.add(stream)  # returns: the commit is waiting for the gate
    assert not (tmp_path / "a.json.gz").exists() and not (tmp_path / "b.json.gz").exists()
    gate.set()
    closing.wait_all()
    ref_bytes = (tmp_path / "ref.json.gz").read_bytes()
    assert (tmp_path / "a.json.gz").read_bytes() == ref_bytes == (tmp_path / "b.json.gz").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json.gz", "b.json.gz", "ref.json.gz"]


def test_pending_closes_are_bounded_and_a_failed_one_is_raised_without_a_file(tmp_path,
                                                                              monkeypatch):
    import threading

    gate = threading.Event()
    gate.set()
    _gated(monkeypatch, gate, failing="b.json.gz")
    closing = writers.PendingCloses(limit=1)

    def stream(name):
        out = writers.JsonGzStream(str(tmp_path / f"{name}.json.gz"))
        out.write(_docs(5))
        return out

    a = stream("a")
    closing.add(a)
    closing.add(stream("b"))  # over the limit: waits for a
    assert (tmp_path / "a.json.gz").exists() and not a._background._thread.is_alive()
    with pytest.raises(OSError, match="disk full"):
        closing.add(stream("c"))  # waits for b, whose commit fails
    closing.wait_all()  # c completes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json.gz", "c.json.gz"]


def test_sampled_shards_are_complete_when_the_bundle_finishes(tmp_path, monkeypatch):
    """SampleShard hands its streams to PendingCloses: process() yields before a shard's json.gz
    is complete, and finish_bundle (before Beam commits the bundle) completes it."""
    import threading

    scored = tmp_path / "c4-es.tfrecord-00000-of-00001.parquet"
    docs = _docs(60)
    with writers.ParquetStream(str(scored), SCORED_COLUMNS, row_group_rows=64) as out:
        out.write(docs)
    shard = plan_input_shards([str(scored)])[0]
    histograms = {}
    for d in docs:
        histograms.setdefault(d["split"], LogHistogram()).add([d["perplexity"]])
    plan = resolve_plan(None, histograms, SamplingRequest(method="gaussian", seed=5))
    gate = threading.Event()
    _gated(monkeypatch, gate)
    out_dir = tmp_path / "out"
    dofn = SampleShard(str(out_dir), "mc4-es", "gaussian", True, 1 << 22, batch_size=32)
    dofn.start_bundle()
    [result] = list(dofn.process(ShardSummary(shard, str(scored), shard.scored_name,
                                              shard.rejected_name), plan))
    names = [f["json_gz"] for f in result.files.values()]
    assert names and not any((out_dir / n).exists() for n in names)
    gate.set()
    dofn.finish_bundle()
    assert all((out_dir / n).exists() for n in names)
    assert not [p for p in out_dir.rglob(".*")]  # no temporary left behind
