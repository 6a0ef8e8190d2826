"""The per-shard data path (issue 9): streaming atomic writers, idempotent shard DoFns, a job
graph with no shuffle of documents, the conservation check between the two phases, and dead
letters counted in the split their row was read in."""
import gzip
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.utils import shared

from pipelines import cli
from pipelines.corpus import data_path
from pipelines.corpus.input_shards import plan_input_shards
from pipelines.corpus.plan import SamplingRequest, resolve_plan
from pipelines.corpus.stage_config import StageConfig
from pipelines.errors import OutputError
from pipelines.corpus.phase2 import SampleShard
from pipelines.corpus.phase1 import ScoreShard, SplitCounts
from pipelines.corpus_io import writers
from sampling import LogHistogram


def _docs(n, start=0):
    return [{"text": f"el documento número {i} habla de la ciudad y del río", "url": f"https://e.es/{i}",
             "timestamp": None, "perplexity": 100.0 + i, "n_tokens": 10 + i % 7}
            for i in range(start, start + n)]


# --- writers ---------------------------------------------------------------------------------

def test_parquet_stream_writes_row_groups_as_it_goes(tmp_path):
    path = tmp_path / "s.parquet"
    with writers.ParquetStream(str(path), row_group_rows=100) as out:
        for k in range(5):
            out.write(_docs(70, 70 * k))
            # at most one row group is ever held in memory
            assert out.pending_rows < 100
        assert not path.exists()  # not visible before it is complete
    meta = pq.read_metadata(path)
    assert meta.num_rows == 350 and meta.num_row_groups == 4
    assert pq.read_table(path).column("url").to_pylist() == [d["url"] for d in _docs(350)]


def test_an_aborted_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json.gz"
    with writers.JsonGzStream(str(path)) as out:
        out.write(_docs(3))
    before = path.read_bytes()
    with pytest.raises(KeyError):
        with writers.JsonGzStream(str(path)) as out:
            out.write(_docs(5, 100))
            raise KeyError("worker died")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json.gz"]
    assert before[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert [list(json.loads(line)) for line in f] == [["text", "timestamp", "url"]] * 3


def test_shard_bytes_do_not_depend_on_how_the_rows_were_batched(tmp_path):
    """--batch-size (or a runner's bundling) changes the write() calls, never the bytes."""
    docs = _docs(1000)
    for stream, name in ((writers.JsonGzStream, "x.json.gz"), (writers.ParquetStream, "x.parquet")):
        outputs = []
        for chunk in (7, 256, 1000):
            path = tmp_path / f"{chunk}-{name}"
            with stream(str(path)) as out:
                for i in range(0, len(docs), chunk):
                    out.write(docs[i:i + chunk])
            outputs.append(path.read_bytes())
        assert outputs[0] == outputs[1] == outputs[2], name


# --- names -----------------------------------------------------------------------------------

def test_shard_names_follow_the_input_shards():
    files = [f"/in/c4-es.tfrecord-{k:05d}-of-00003.json.gz" for k in range(3)] + \
        ["/in/c4-es-validation.tfrecord-00000-of-00001.json.gz"]
    shards = {s.stem: s for s in plan_input_shards(list(reversed(files)))}
    train2 = shards["c4-es.tfrecord-00002-of-00003"]
    assert train2.scored_name == "c4-es.tfrecord-00002-of-00003.parquet"
    assert train2.rejected_name == "rejected/c4-es.tfrecord-00002-of-00003.jsonl"
    assert train2.json_gz_name("mc4-es", "train", "gaussian") == \
        "mc4-es-train-gaussian-shard-0003-of-0003.json.gz"
    assert train2.parquet_name("train") == "parquet/train/part-00002-of-00003.parquet"
    validation = shards["c4-es-validation.tfrecord-00000-of-00001"]
    assert validation.json_gz_name("mc4-es", "validation", "random") == \
        "mc4-es-validation-random-shard-0001-of-0001.json.gz"
    # rows of the other split (a parquet `split` column) never collide with that split's shards
    assert train2.json_gz_name("mc4-es", "validation", "gaussian") == \
        "mc4-es-validation-gaussian-shard-0003-of-0003-train.json.gz"
    # mC4 names are their own stems, also inside a split-named folder
    assert {s.stem for s in plan_input_shards([f"/d/train/{n.rsplit('/', 1)[1]}" for n in files])} == \
        {n.rsplit("/", 1)[1].removesuffix(".json.gz") for n in files}


def test_same_named_files_in_different_folders_get_distinct_names():
    shards = plan_input_shards(["/a/x.json.gz", "/b/x.json.gz", "/b/y.json.gz"])
    assert [(s.stem, s.scored_name, s.rejected_name) for s in shards] == [
        ("a__x", "a__x.parquet", "rejected/a__x.jsonl"),
        ("b__x", "b__x.parquet", "rejected/b__x.jsonl"),
        ("y", "y.parquet", "rejected/y.jsonl")]
    # only as many folders as tell them apart
    deep = plan_input_shards(["/d/1/train/x.parquet", "/d/2/train/x.parquet", "/d/2/test/x.parquet"])
    assert [s.stem for s in deep] == ["1__train__x", "test__x", "2__train__x"]
    assert [s.split for s in deep] == ["train", "test", "train"]
    with pytest.raises(ValueError, match="same output shard 'x'"):  # same folder, same stem
        plan_input_shards(["/a/x.json.gz", "/a/x.jsonl"])


def test_split_folders_are_the_split_and_stay_in_the_output_names():
    """FineWeb-2's layout: train/000_00000.parquet and test/000_00000.parquet."""
    files = ["/fw/spa_Latn/test/000_00000.parquet", "/fw/spa_Latn/train/000_00000.parquet",
             "/fw/spa_Latn/train/000_00001.parquet"]
    shards = {s.path: s for s in plan_input_shards(files)}
    test, train0, train1 = (shards[f] for f in files)
    assert (test.split, test.stem, test.group_index, test.group_size) == ("test", "test__000_00000", 0, 1)
    assert (train1.split, train1.stem, train1.group_index, train1.group_size) == \
        ("train", "train__000_00001", 1, 2)
    assert test.json_gz_name("mc4-es", "test", "random") != train0.json_gz_name("mc4-es", "train", "random")
    # the scored shard, read back by `sample`, still names its split
    assert [s.split for s in plan_input_shards([f"/out/scored/{s.scored_name}" for s in shards.values()])] \
        == ["test", "train", "train"]


# --- idempotent shard DoFns ------------------------------------------------------------------

def _write_input(path, docs):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d["text"], "timestamp": None, "url": d["url"]}) + "\n")
        f.write("not json\n")


def _gated_parquet_commit(monkeypatch, gate, failing: bool = False):
    """ParquetStream's commit (its writer thread's last step) waits for `gate`, or fails."""
    import threading

    commit = writers.ParquetStream._commit
    waited = threading.Event()

    def gated(self):
        waited.set()
        assert gate.wait(10)
        if failing:
            raise OSError("disk full")
        commit(self)

    monkeypatch.setattr(writers.ParquetStream, "_commit", gated)
    return waited


def _forty_doc_shard(tmp_path):
    """A 40-document input shard, its output folder and a ScoreShard set up for it."""
    src = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    _write_input(src, _docs(40))
    (shard,) = plan_input_shards([str(src)])
    out = tmp_path / "out"
    score = ScoreShard("es-reference", None, shared.Shared(), str(out), 1 << 20, 16)
    score.setup()
    return shard, out, score


@pytest.mark.parametrize("failing", [False, True])
def test_scored_parquet_is_complete_when_the_bundle_finishes(tmp_path, monkeypatch, failing):
    """ScoreShard yields a shard's summary while its scored parquet is still being closed (the
    next shard is scored meanwhile); finish_bundle, before Beam commits the bundle, waits for
    it, and a failed close fails the bundle with no file and no temporary left."""
    import threading

    shard, out, score = _forty_doc_shard(tmp_path)
    gate = threading.Event()
    waited = _gated_parquet_commit(monkeypatch, gate, failing)
    score.start_bundle()
    (summary,) = list(score.process(shard))
    assert summary.splits["train"].scored == 40
    assert waited.wait(10) and not (out / shard.scored_name).exists()  # still closing
    gate.set()
    if failing:
        with pytest.raises(OSError, match="disk full"):
            score.finish_bundle()
        assert not (out / shard.scored_name).exists()
    else:
        score.finish_bundle()
        table = pq.read_table(out / shard.scored_name)
        assert table.num_rows == 40 and table.column("url").to_pylist()[0] == "https://e.es/0"
    assert not [p for p in out.rglob(".*")]  # no temporary left behind


def test_a_shard_that_fails_while_scoring_leaves_no_scored_file(tmp_path, monkeypatch):
    shard, out, score = _forty_doc_shard(tmp_path)
    real_score = score._score
    calls = []

    def failing_second_batch(batch, *rest):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        real_score(batch, *rest)

    monkeypatch.setattr(score, "_score", failing_second_batch)
    score.start_bundle()
    with pytest.raises(RuntimeError, match="worker lost"):
        list(score.process(shard))
    score.finish_bundle()  # nothing pending: the failed shard's stream was aborted
    assert not (out / shard.scored_name).exists()
    assert not [p for p in out.rglob(".*")]


def test_a_retried_shard_rewrites_identical_bytes(tmp_path, shared_data):
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(300)]
    src = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    _write_input(src, docs)
    (shard,) = plan_input_shards([str(src)])
    out = tmp_path / "out"
    score = ScoreShard("es-reference", None, shared.Shared(), str(out), 1 << 20, 64)
    score.setup()
    score.start_bundle()
    (first,) = list(score.process(shard))
    score.finish_bundle()
    scored_bytes = (out / shard.scored_name).read_bytes()
    score.start_bundle()
    (again,) = list(score.process(shard))  # Dataflow retrying the bundle
    score.finish_bundle()
    assert (out / shard.scored_name).read_bytes() == scored_bytes
    assert first.splits["train"].read == 301 and first.splits["train"].rejected == 1
    assert first.splits["train"].scored == 300 == again.splits["train"].scored
    plan = resolve_plan(None, {"train": first.splits["train"].histogram}, SamplingRequest())
    sample = SampleShard(str(out), "mc4-es", "gaussian", True, 1 << 20, 64)
    sample.start_bundle()
    (result,) = list(sample.process(first, plan))
    sample.finish_bundle()
    name = result.files["train"]["json_gz"]
    written = (out / name).read_bytes()
    sample.start_bundle()
    (result2,) = list(sample.process(again, plan))
    sample.finish_bundle()
    assert (out / name).read_bytes() == written
    assert result2.splits["train"].kept == result.splits["train"].kept > 0
    assert not [p for p in out.rglob(".*")]  # no temporary left behind


def test_a_shard_moves_the_progress_line_while_it_is_read(tmp_path, shared_data, monkeypatch):
    """The input bytes of a shard reach the progress line as they are read (every
    REPORT_BYTES), not only once the shard is done, and add up to the file's size."""
    from pipelines.corpus import phase1

    src = tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz"
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        _write_input(src, [json.loads(line) for line in f][:600])
    (shard,) = plan_input_shards([str(src)])
    events = []
    monkeypatch.setattr(phase1, "report_input_bytes", lambda n: events.append(("bytes", n)))
    monkeypatch.setattr(phase1.InputProgress, "REPORT_BYTES", 64 * 1024)
    score = ScoreShard("es-reference", None, shared.Shared(), str(tmp_path / "out"), 1 << 20, 64)
    score.setup()
    real_score = score._score
    monkeypatch.setattr(score, "_score", lambda batch, *a: (events.append(("batch", len(batch))),
                                                            real_score(batch, *a)))
    score.start_bundle()
    (summary,) = list(score.process(shard))
    score.finish_bundle()
    assert summary.splits["train"].scored == 600
    sizes = [n for kind, n in events if kind == "bytes"]
    assert sum(sizes) == src.stat().st_size > 4 * 64 * 1024
    assert len(sizes) >= 4
    # reports come between batches, not all after the last one
    assert [kind for kind, _ in events].index("bytes") < len(events) - 2
    assert events[-1][0] == "bytes"


# --- the job graph ---------------------------------------------------------------------------

class _GroupingVisitor(beam.pipeline.PipelineVisitor):
    def __init__(self):
        self.labels = []

    def enter_composite_transform(self, node):
        self.visit_transform(node)

    def visit_transform(self, node):
        if isinstance(node.transform, (beam.GroupByKey, beam.Reshuffle)):
            self.labels.append(node.full_label)


def _grouping_labels(stage, tmp_path):
    from pipelines.corpus.commands import run, sample, score

    files = [str(tmp_path / "c4-es.tfrecord-00000-of-00001.json.gz")]
    out = str(tmp_path / "o")
    cfg = StageConfig(stage=stage, command=f"ppsample {stage}", output=out, out_dir=out,
                      model="es-reference", batch_size=64,
                      request=None if stage == "score" else SamplingRequest())
    p = beam.Pipeline()
    {"run": run, "score": score, "sample": sample}[stage].build(p, files, cfg)
    visitor = _GroupingVisitor()
    p.visit(visitor)
    return visitor.labels


@pytest.mark.parametrize("stage", ["run", "score", "sample"])
def test_no_document_passes_through_a_shuffle(stage, tmp_path):
    """Every GroupByKey / Reshuffle is either the one that spreads input file names or one
    inside a combiner (histograms, counts, file lists)."""
    allowed = ("SpreadShards", "ScoreTotals/", "SampleTotals/")
    labels = _grouping_labels(stage, tmp_path)
    assert any("SpreadShards" in label for label in labels)
    assert [label for label in labels if not any(a in label for a in allowed)] == []


# --- conservation and split accounting -------------------------------------------------------

def test_phases_must_agree_on_what_was_scored():
    totals = {"splits": {"train": SplitCounts(read=3, scored=3, tokens_scored=30)},
              "parquet": [], "rejected": []}
    from pipelines.corpus.plan import SplitAccumulator

    acc = SplitAccumulator().add(np.array([1.5, 2.0]), np.array([10, 10]), np.array([True, False]),
                                 np.array([0, 1]), np.array([0.5, 0.5]))
    with pytest.raises(OutputError, match="3 documents .* were scored but 2"):
        data_path.check_phases_agree(totals, {"splits": {"train": acc}, "files": {}})


def _scored_parquet(path, n=40, split_column=None, bad=()):
    rows = _docs(n)
    table = {"text": [r["text"] for r in rows], "url": [r["url"] for r in rows],
             "timestamp": [None] * n, "perplexity": [r["perplexity"] for r in rows],
             "n_tokens": [r["n_tokens"] for r in rows]}
    for i, (column, value) in bad:
        table[column][i] = value
    if split_column is not None:
        table["split"] = split_column
    pq.write_table(pa.table(table), path)


def test_a_lost_row_between_the_phases_fails_before_stats(tmp_path, monkeypatch, capsys):
    """Fault injected into phase 2 (one row of each shard skipped): the job fails with the
    conservation error and writes no stats.json."""
    _scored_parquet(tmp_path / "c4-es.tfrecord-00000-of-00001.parquet")
    original = SampleShard._decide

    def drop_first(self, batch, *args):
        return original(self, batch[1:], *args)

    monkeypatch.setattr(SampleShard, "_decide", drop_first)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="lost or duplicated between scoring and sampling"):
        cli.main(["sample", "--input", str(tmp_path / "*.parquet"), "--output", str(out),
                  "--no-figures"])
    assert not (out / "stats.json").exists()


def test_a_rejected_row_counts_in_its_split_column(tmp_path):
    """A parquet named as train whose `split` column puts rows in validation: the rejected
    validation rows are counted (and their sample written) under validation."""
    split = ["train"] * 30 + ["validation"] * 10
    bad = [(35, ("perplexity", None)), (36, ("text", None)), (3, ("perplexity", -1.0))]
    _scored_parquet(tmp_path / "c4-es.tfrecord-00000-of-00001.parquet", split_column=split,
                    bad=[(i, cv) for i, cv in bad])
    out = tmp_path / "out"
    assert cli.main(["sample", "--input", str(tmp_path / "*.parquet"), "--output", str(out),
                     "--no-figures"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert {s: (v["read"], v["rejected"], v["scored"]) for s, v in stats["splits"].items()} == \
        {"train": (30, 1, 29), "validation": (10, 2, 8)}
    letters = [json.loads(x) for x in
               (out / "rejected" / "c4-es.tfrecord-00000-of-00001.jsonl").read_text().splitlines()]
    assert sorted((x["line"], x["split"]) for x in letters) == \
        [(4, "train"), (36, "validation"), (37, "validation")]
    assert stats["splits"]["validation"]["files"]["json_gz"] == \
        ["mc4-es-validation-gaussian-shard-0001-of-0001-train.json.gz"]


def test_bertin_boundaries_on_another_scale_fail_unless_forced():
    histogram = LogHistogram().add(np.linspace(100, 1000, 50))  # far below BERTIN's Q1 (5e5)
    with pytest.raises(ValueError, match="100.0% of the 50 scored documents in band <=Q1"):
        resolve_plan(None, {"train": histogram}, SamplingRequest(boundaries="bertin"))
    plan = resolve_plan(None, {"train": histogram},
                        SamplingRequest(boundaries="bertin", force_boundaries=True))
    assert plan.boundaries_source == "bertin"
    # histogram boundaries never consult it
    assert resolve_plan(None, {"train": histogram}, SamplingRequest()).boundaries_source == "histogram"


# --- score and sample are run's halves -------------------------------------------------------

def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".png"
            and p.name not in ("stats.json", "_ppsample_commit.json", "report.html")}  # all record the command


def test_score_then_sample_writes_what_run_writes(tmp_path):
    from pipelines.corpus.commands.run import BUNDLED_INPUT

    ran, scored, sampled = tmp_path / "run", tmp_path / "scored", tmp_path / "sampled"
    assert cli.main(["run", "--output", str(ran), "--no-figures"]) == 0
    assert cli.main(["score", "--input", BUNDLED_INPUT, "--output", str(scored)]) == 0
    assert cli.main(["sample", "--input", str(scored), "--output", str(sampled),
                     "--no-figures"]) == 0
    run_files = _tree(ran)
    # run's scored/ is a score output, byte for byte
    assert {k[len("scored/"):]: v for k, v in run_files.items() if k.startswith("scored/")} == \
        _tree(scored)
    sampled_files = _tree(sampled)
    run_sampled = {k: v for k, v in run_files.items() if not k.startswith("scored/")}
    assert sorted(run_sampled) == sorted(k for k in sampled_files if not k.startswith("rejected/"))
    assert all(sampled_files[k] == v for k, v in run_sampled.items())
    assert sorted(k for k in run_sampled if k.endswith(".json.gz")) == [
        "mc4-es-train-gaussian-shard-0001-of-0002.json.gz",
        "mc4-es-train-gaussian-shard-0002-of-0002.json.gz",
        "mc4-es-validation-gaussian-shard-0001-of-0001.json.gz"]
    a, b = (json.loads((d / "stats.json").read_text()) for d in (ran, sampled))
    assert (a["stage"], b["stage"]) == ("run", "sample")
    assert a["total"] == b["total"] and a["boundaries"] == b["boundaries"]
    assert a["splits"]["train"]["files"] == b["splits"]["train"]["files"]
    assert json.loads((scored / "stats.json").read_text())["stage"] == "score"
