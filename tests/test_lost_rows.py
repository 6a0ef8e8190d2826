"""Documents lost on the way through the data path fail the job before stats.json: the fault
each conservation check guards against, injected where it would happen.

  a reader that drops a document it counted      -> read != scored + rejected
  a scorer that drops a document                 -> read != scored + rejected
  phase 2 deciding fewer rows than phase 1 scored -> tests/test_data_path.py
  the sampled json.gz / parquet writer losing a row -> kept != rows written
"""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.corpus import phase1
from pipelines.corpus_io import writers


def _docs(n):
    return [{"text": f"el documento número {i} habla de la ciudad y del río", "url": f"https://e.es/{i}",
             "timestamp": None, "perplexity": 100.0 + i, "n_tokens": 10 + i % 7} for i in range(n)]


def _scored_input(tmp_path):
    rows = _docs(40)
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}),
                   tmp_path / "c4-es.tfrecord-00000-of-00001.parquet")
    return str(tmp_path / "*.parquet")


def _mc4_input(tmp_path):
    path = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    lines = [json.dumps({"text": d["text"], "url": d["url"], "timestamp": "2020"}) for d in _docs(30)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    return str(path)


def _fails_before_stats(argv, out, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(argv + ["--output", str(out)])
    assert not list(out.rglob("stats.json")), "stats.json was written"
    assert not (out / "_ppsample_commit.json").exists(), "the output was committed"


def test_a_json_gz_row_lost_by_the_writer_fails_the_job(tmp_path, monkeypatch):
    real = writers.mc4_json_lines
    monkeypatch.setattr(writers, "mc4_json_lines",
                        lambda texts, timestamps, urls: real(texts[1:], timestamps[1:], urls[1:]))
    _fails_before_stats(["sample", "--input", _scored_input(tmp_path), "--no-figures"],
                        tmp_path / "out", r"train: \d+ documents kept but \d+ rows written to "
                                          r"its json\.gz shards")


def test_a_parquet_row_lost_by_the_writer_fails_the_job(tmp_path, monkeypatch):
    real = writers.ParquetStream.write_table
    monkeypatch.setattr(writers.ParquetStream, "write_table",
                        lambda self, table: real(self, table.slice(1)))
    _fails_before_stats(["sample", "--input", _scored_input(tmp_path), "--no-figures"],
                        tmp_path / "out", r"train: \d+ documents kept but \d+ rows written to "
                                          r"its parquet shards")


def test_a_document_the_reader_counted_but_lost_fails_the_job(tmp_path, monkeypatch):
    real = phase1.iter_records

    def lose_the_third(*args, **kwargs):
        docs = 0
        for kind, item in real(*args, **kwargs):
            if kind == "doc":
                docs += 1
                if docs == 3:
                    continue
            yield kind, item

    monkeypatch.setattr(phase1, "iter_records", lose_the_third)
    _fails_before_stats(["run", "--input", _mc4_input(tmp_path), "--no-figures"],
                        tmp_path / "out", r"read 30 != scored 29 \+ rejected 0: documents were lost")


def test_a_document_the_scorer_lost_fails_the_job(tmp_path, monkeypatch):
    real = phase1.ScoreShard._score
    monkeypatch.setattr(phase1.ScoreShard, "_score",
                        lambda self, batch, *rest: real(self, batch[1:], *rest))
    _fails_before_stats(["score", "--input", _mc4_input(tmp_path)], tmp_path / "scored",
                        r"read 30 != scored 29 \+ rejected 0: documents were lost")
