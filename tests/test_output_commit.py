"""Output commits (issue 10): a finished output survives, byte for byte, a rerun that fails on a
bad model, one that fails inside the pipeline and one SIGKILLed midway - on a local folder and on
a fake object store without rename (tests/fake_object_store.py, behind Beam's FileSystems: the
layer the writers and the commit use). Leftover staging is cleaned by the next run and never
read; foreign and other-stage outputs are refused unless --overwrite."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_object_store
from cli_exit import exit_status
from pipelines import cli
from pipelines.corpus import driver
from pipelines.corpus_io import commit
from pipelines.corpus_io import writers

REPO = Path(__file__).resolve().parents[1]
BUNDLED = str(REPO / "pipelines" / "bundled" / "c4-es*.json.gz")
STORES = ["local", "fakeobj"]


# ---------------------------------------------------------------------------------------------
# helpers

@pytest.fixture
def store(request, tmp_path, monkeypatch):
    """A place for outputs: a local folder, or the fake object store (fakeobj://bucket/...)."""
    if request.param == "local":
        return lambda name: str(tmp_path / name)
    monkeypatch.setenv(fake_object_store.ENV, str(tmp_path / "objects"))
    return lambda name: f"fakeobj://bucket/{name}"


def snapshot(out: str, with_staging: bool = False) -> dict[str, bytes]:
    """Every file of an output (rel path -> bytes), staging folders aside unless asked."""
    if out.startswith("fakeobj://"):
        files = fake_object_store.snapshot(out)
    else:
        root = Path(out)
        files = {str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes()
                 for p in sorted(root.rglob("*")) if p.is_file()}
    return {k: v for k, v in files.items()
            if with_staging or not k.startswith(commit.STAGING_DIR + "/")}


def staged_ids(out: str) -> list[str]:
    return commit.inspect(out).staging


def score(out: str, *extra: str, input_glob: str = BUNDLED) -> int:
    return cli.main(["score", "--input", input_glob, "--output", out, *extra])


@pytest.fixture(scope="module")
def bad_model_dir(tmp_path_factory) -> str:
    """A model folder in the cc_net layout whose files are not a model: it passes the launcher's
    existence check and fails when a worker loads it, inside the pipeline."""
    folder = tmp_path_factory.mktemp("bad-model")
    (folder / "es.arpa.bin").write_bytes(b"not a kenlm model")
    (folder / "es.sp.model").write_bytes(b"not a sentencepiece model")
    return str(folder)


def fake_output(out: str, stage: str, files: dict[str, bytes], command: str = "") -> dict:
    """Commits `files` as a `stage` output through the real staging + commit path."""
    staging = commit.begin(out, stage, overwrite=True, command=command or f"ppsample {stage}")
    for rel, data in files.items():
        writers.write_bytes(commit.join(staging.path, *rel.split("/")), data)
    return staging.commit()


# ---------------------------------------------------------------------------------------------
# A finished output survives failed reruns, byte for byte

@pytest.mark.parametrize("store", STORES, indirect=True)
def test_finished_output_survives_failing_reruns(store, bad_model_dir):
    out = store("scored")
    assert score(out) == 0
    before = snapshot(out)
    assert commit.MARKER in before and "stats.json" in before
    assert any(k.endswith(".parquet") for k in before)

    # (a) a bad model: refused on the launcher, before anything is written
    with pytest.raises(SystemExit) as err:
        score(out, "--model", str(Path(bad_model_dir) / "missing"))
    assert "missing" in str(err.value)
    assert snapshot(out, with_staging=True) == before

    # (b) a model that fails when the workers load it: inside the pipeline, after the staging
    # folder exists
    with pytest.raises(BaseException) as err:
        score(out, "--model", bad_model_dir)
    assert not isinstance(err.value, KeyboardInterrupt)
    assert snapshot(out, with_staging=True) == before  # staging removed, output untouched
    state = commit.check_complete(out, want=("score",), reader="sample", fix="")
    assert state.marker["files"] == {k: len(v) for k, v in before.items() if k != commit.MARKER}


def _kill_midway(argv: list[str], out: str, expected_files: int, env: dict,
                 sig: int = signal.SIGKILL) -> dict:
    """Runs the CLI in a subprocess and sends it `sig` once at least half of the files the
    finished output has are in its staging folder (stats.json not yet there). Returns what
    staging held then."""
    code = ("import sys, fake_object_store; from pipelines.cli import main; "
            f"sys.exit(main({argv!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            staged = {k: v for k, v in commit.list_tree(out).items()  # names only: cheap to poll
                      if k.startswith(commit.STAGING_DIR + "/")
                      and not k.rsplit("/", 1)[-1].startswith("_ppsample_")}
            if len(staged) * 2 >= expected_files:
                proc.send_signal(sig)
                proc.wait(timeout=120)
                return staged
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before it was half written: "
                            + proc.stderr.read().decode()[-2000:])
            time.sleep(0.01)
        pytest.fail("the run never got half way")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def many_docs_corpus(tmp_path_factory, shared_data) -> str:
    """300 real documents in 30 mC4 shards: the output's files are written one after another
    over a second or more, so a kill lands midway."""
    folder = tmp_path_factory.mktemp("corpus")
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rb") as f:
        lines = f.read().splitlines(keepends=True)[:300]
    for i in range(30):
        (folder / f"c4-es.tfrecord-{i:05d}-of-00030.json.gz").write_bytes(
            gzip.compress(b"".join(lines[i::30]), mtime=0))
    return str(folder)


def many_files_argv(corpus: str, out: str) -> list[str]:
    """`score` writing many files: one per input shard (and its dead letters), and, where the
    scored output is sharded by document count, one per document."""
    import argparse

    from pipelines.corpus.commands import score as score_stage

    parser = argparse.ArgumentParser()
    score_stage.add_arguments(parser)
    per_doc = ["--docs-per-shard", "1"] if "--docs-per-shard" in parser._option_string_actions else []
    return ["score", "--input", corpus, "--output", out, *per_doc]


# 20-40 s each (a baseline run, then a subprocess killed midway): slow. The fast suite covers
# what a kill leaves behind with test_staging_left_by_a_dead_process_is_removed_by_the_next_run.
@pytest.mark.slow
@pytest.mark.parametrize("store", STORES, indirect=True)
def test_finished_output_survives_sigkill_midway_and_staging_is_cleaned(store, many_docs_corpus):
    out = store("scored")
    argv = many_files_argv(many_docs_corpus, out)
    assert cli.main(argv) == 0
    before = snapshot(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    staged = _kill_midway(argv, out, expected_files=len(before), env=env)
    assert staged and not any(k.endswith("/stats.json") for k in staged)  # killed midway
    assert snapshot(out) == before  # the committed output, byte for byte
    assert staged_ids(out)  # the killed run's staging is still there ...
    # ... and readers never read it: they take the marker's files only
    files = driver.scored_input_files(out, "sample")
    assert files and all(commit.STAGING_DIR not in f for f in files)
    assert len(files) == sum(1 for k in before if k.endswith(".parquet"))
    # the next run into the same output removes the killed run's leftovers
    staging = commit.begin(out, "score", command="ppsample score")
    assert staged_ids(out) == [staging.id]
    staging.abort()
    assert snapshot(out, with_staging=True) == before


@pytest.mark.slow
def test_ctrl_c_midway_removes_its_staging_and_keeps_the_output(tmp_path, many_docs_corpus):
    out = str(tmp_path / "scored")
    argv = many_files_argv(many_docs_corpus, out)
    assert cli.main(argv) == 0
    before = snapshot(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    staged = _kill_midway(argv, out, expected_files=len(before), env=env, sig=signal.SIGINT)
    assert staged and not any(k.endswith("/stats.json") for k in staged)
    assert snapshot(out, with_staging=True) == before  # its own staging folder is gone too


def test_in_pipeline_commit_step_used_on_remote_runners(tmp_path):
    """The Dataflow path: the commit is the pipeline's last step (after WriteStats), so a job
    commits its output even when the launcher does not wait; exercised here on FnApiRunner."""
    import argparse

    import apache_beam as beam

    from pipelines import options as opts
    from pipelines.corpus.commands import score as score_stage
    from pipelines.corpus.stage_config import StageConfig
    from pipelines.corpus_io import mc4_io

    out = str(tmp_path / "scored")
    parser = argparse.ArgumentParser()
    score_stage.add_arguments(parser)
    args = parser.parse_args(["--input", BUNDLED, "--output", out])
    options = opts.build_pipeline_options([])
    staging = commit.begin(out, "score", remote=True, command="ppsample score")
    pipeline = beam.Pipeline(options=options)
    cfg = StageConfig.from_args("score", args, []).with_out_dir(staging.path)
    score_stage.build(pipeline, mc4_io.expand_inputs(BUNDLED), cfg)
    assert driver.attach_commit(pipeline, staging, figures=False)
    driver.run_pipeline(pipeline, options)  # no commit by the driver: the job did it
    assert driver.is_committed_by(out, staging) and not staged_ids(out)
    state = commit.check_complete(out, want=("score",), reader="sample", fix="")
    assert "stats.json" in state.marker["files"]
    assert json.loads(Path(out, "stats.json").read_text())["total"]["scored"] == 458


# ---------------------------------------------------------------------------------------------
# The commit itself (no pipeline): what it replaces, what it keeps, interrupted commits

@pytest.mark.parametrize("store", STORES, indirect=True)
def test_commit_replaces_only_ppsample_files(store, capsys):
    out = store("o")
    first = fake_output(out, "score", {"a.parquet": b"1", "sub/b.parquet": b"2", "stats.json": b"{}"})
    assert set(first["files"]) == {"a.parquet", "sub/b.parquet", "stats.json"}
    # a file ppsample did not write, beside the output
    writers.write_bytes(commit.join(out, "notes.txt"), b"mine")
    second = fake_output(out, "score", {"a.parquet": b"11", "stats.json": b"{ }"})
    assert snapshot(out, with_staging=True) == {
        "a.parquet": b"11", "stats.json": b"{ }", "notes.txt": b"mine",
        commit.MARKER: snapshot(out)[commit.MARKER]}
    assert second["files"] == {"a.parquet": 2, "stats.json": 3}


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_commit_cut_short_is_refused_by_readers_and_finished_by_the_next_run(store, monkeypatch):
    out = store("o")
    fake_output(out, "score", {"old.parquet": b"old", "stats.json": b"{}"})
    staging = commit.begin(out, "score", command="ppsample score")
    for rel in ("x.parquet", "y.parquet", "stats.json"):
        writers.write_bytes(commit.join(staging.path, rel), rel.encode())
    real_place_all = commit._place_all

    def dying_place_all(sources, dests):  # the process dies after placing one file
        real_place_all(sources[:1], dests[:1])
        raise KeyboardInterrupt

    monkeypatch.setattr(commit, "_place_all", dying_place_all)
    with pytest.raises(KeyboardInterrupt):
        staging.commit()
    staging.abort()  # what the driver does on the way out: the started commit is kept
    assert staged_ids(out) == [staging.id]
    monkeypatch.setattr(commit, "_place_all", real_place_all)
    with pytest.raises(commit.OutputError, match="incomplete"):
        commit.check_complete(out, want=("score",), reader="sample", fix="run it")
    # the next stage writing here finishes the commit first (the staged output was complete)
    nxt = commit.begin(out, "score", command="ppsample score")
    nxt.abort()
    files = snapshot(out, with_staging=True)
    assert {k: v for k, v in files.items() if k != commit.MARKER} == {
        "x.parquet": b"x.parquet", "y.parquet": b"y.parquet", "stats.json": b"stats.json"}
    marker = commit.check_complete(out, want=("score",), reader="sample", fix="").marker
    assert marker["command"] == "ppsample score" and set(marker["files"]) == set(files) - {commit.MARKER}


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_staging_left_by_a_dead_process_is_removed_by_the_next_run(store):
    """What a SIGKILL leaves: a half-written staging folder whose owner process is gone."""
    out = store("o")
    fake_output(out, "score", {"a.parquet": b"1", "stats.json": b"{}"})
    before = snapshot(out)
    killed = commit.begin(out, "score", command="ppsample score")
    writers.write_bytes(commit.join(killed.path, "b.parquet"), b"half")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    owner_path = commit.join(killed.path, commit.OWNER)
    owner = commit._read_json_or_none(owner_path)
    commit._write_json(owner_path, {**owner, "pid": int(dead.stdout)})  # its process is gone
    # readers take the committed output and never the staged file
    state = commit.check_complete(out, want=("score",), reader="sample", fix="")
    assert set(state.marker["files"]) == {"a.parquet", "stats.json"}
    assert driver.scored_input_files(out, "sample") == [commit.join(out, "a.parquet")]
    nxt = commit.begin(out, "score", command="ppsample score")
    assert staged_ids(out) == [nxt.id]  # the dead run's folder is gone
    nxt.abort()
    assert snapshot(out, with_staging=True) == before


def test_staging_of_a_live_or_remote_run_is_kept_and_ignored(tmp_path):
    out = str(tmp_path / "o")
    fake_output(out, "score", {"a.parquet": b"1", "stats.json": b"{}"})
    remote = commit.begin(out, "score", remote=True, command="ppsample score --runner DataflowRunner")
    live = commit.begin(out, "score", command="ppsample score")  # this process: alive
    assert sorted(staged_ids(out)) == sorted([remote.id, live.id])
    commit.recover(out)
    assert sorted(staged_ids(out)) == sorted([remote.id, live.id])
    state = commit.check_complete(out, want=("score",), reader="sample", fix="")
    assert set(state.marker["files"]) == {"a.parquet", "stats.json"}


class _SubmittedJob:
    """What DataflowRunner.run returns, as far as ppsample reads it."""

    def __init__(self, job_id: str):
        self._id = job_id

    def job_id(self) -> str:
        return self._id


@pytest.fixture
def dataflow_api(monkeypatch):
    """The Dataflow API at its client (google.cloud.dataflow's JobsV1Beta3Client): `.states`
    maps job ids to the state it reports (a missing id raises, as without credentials);
    `.requests` records (project, region, job id, timeout)."""
    from types import SimpleNamespace

    from google.cloud import dataflow

    class FakeJobsClient:
        states: dict = {}
        requests: list = []

        def get_job(self, request, timeout=None):
            FakeJobsClient.requests.append((request.project_id, request.location,
                                            request.job_id, timeout))
            if request.job_id not in FakeJobsClient.states:
                raise RuntimeError("Could not automatically determine credentials")
            return SimpleNamespace(current_state=SimpleNamespace(
                name=FakeJobsClient.states[request.job_id]))

    FakeJobsClient.states, FakeJobsClient.requests = {}, []
    monkeypatch.setattr(dataflow, "JobsV1Beta3Client", FakeJobsClient)
    return FakeJobsClient


def _dataflow_options():
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner", "DataflowRunner", "--project", "proj",
                            "--region", "europe-west4"])


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_staging_of_an_ended_dataflow_job_is_removed_by_the_next_run(store, dataflow_api, capsys):
    """A Dataflow job whose launcher was killed goes on writing into its staging folder; once
    the Dataflow API says the job has ended (failed, cancelled), the next run into the output
    removes that folder. While it runs, or when the API cannot be asked, the folder is kept; so
    is the complete (stats.json) output of a job that finished without committing."""
    out = store("o")
    fake_output(out, "score", {"a.parquet": b"1", "stats.json": b"{}"})
    before = snapshot(out)
    jobs = {}
    for job_id in ("job-done", "job-running", "job-cancelled", "job-failed", "job-unknown"):
        staging = commit.begin(out, "score", remote=True, command="ppsample score")
        writers.write_bytes(commit.join(staging.path, "part.parquet"), b"half")
        if job_id == "job-done":  # finished, but its commit step never ran: a complete output
            writers.write_bytes(commit.join(staging.path, "stats.json"), b"{}")
            done_path = staging.path
        driver.record_submitted(staging, _SubmittedJob(job_id), _dataflow_options())
        jobs[job_id] = staging.id
    assert f"Dataflow job job-unknown submitted; it writes into {staging.path}" in \
        capsys.readouterr().err
    dataflow_api.requests.clear()  # (each begin() above asked about the jobs before it)
    dataflow_api.states.update({"job-done": "JOB_STATE_DONE", "job-running": "JOB_STATE_RUNNING",
                                "job-cancelled": "JOB_STATE_CANCELLED",
                                "job-failed": "JOB_STATE_FAILED"})
    from pipelines import dataflow

    notes = commit.recover(out, job_status=dataflow.job_status)
    assert sorted(staged_ids(out)) == sorted([jobs["job-done"], jobs["job-running"],
                                              jobs["job-unknown"]])
    assert sorted(dataflow_api.requests) == sorted(
        ("proj", "europe-west4", job_id, 20) for job_id in jobs)
    text = "\n".join(notes)
    assert "left by Dataflow job job-cancelled, which has ended (JOB_STATE_CANCELLED)" in text
    assert "left by Dataflow job job-failed, which has ended (JOB_STATE_FAILED)" in text
    assert "Dataflow job job-running (JOB_STATE_RUNNING) may still be writing" in text
    assert "Dataflow job job-unknown (state unknown: the Dataflow API did not answer)" in text
    assert f"commit it with `python -m pipelines.corpus_io.commit {done_path}`" in text
    assert snapshot(out) == before  # the committed output is untouched


def test_ctrl_c_of_a_dataflow_launcher_keeps_the_staging_and_says_how_to_cancel(tmp_path,
                                                                                  capsys):
    from pipelines.corpus.stage_config import StageConfig

    out = str(tmp_path / "o")
    cfg = StageConfig(stage="score", command="ppsample score", output=out, out_dir=out)
    options = _dataflow_options()
    with pytest.raises(KeyboardInterrupt):
        with driver.staged_output(cfg, options) as staging:
            driver.record_submitted(staging, _SubmittedJob("2026-11-30_05_00_00-42"), options)
            raise KeyboardInterrupt
    assert staged_ids(out) == [staging.id]  # the job still writes there
    owner = commit._read_json_or_none(commit.join(staging.path, commit.OWNER))
    assert owner["job"] == {"runner": "dataflow", "job_id": "2026-11-30_05_00_00-42",
                            "project": "proj", "region": "europe-west4"}
    assert ("to stop it: gcloud dataflow jobs cancel 2026-11-30_05_00_00-42 --region "
            "europe-west4 --project proj") in capsys.readouterr().err


def test_detached_remote_job_is_committed_by_the_resume_command(tmp_path, capsys):
    out = str(tmp_path / "o")
    staging = commit.begin(out, "score", remote=True, command="ppsample score")
    (Path(staging.path) / "part-0.parquet").write_bytes(b"p")
    with pytest.raises(commit.OutputError, match="no stats.json"):
        commit.main([staging.path])  # the job has not finished
    (Path(staging.path) / "stats.json").write_bytes(b"{}")
    assert commit.main([staging.path]) == 0
    assert commit.check_complete(out, want=("score",), reader="sample", fix="").marker["stage"] == "score"
    assert not staged_ids(out)


# ---------------------------------------------------------------------------------------------
# Writers refuse foreign and other-stage outputs unless --overwrite

def test_foreign_and_other_stage_outputs_are_refused_before_anything_runs(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.parquet").write_bytes(b"mine")
    with pytest.raises(SystemExit) as err:
        score(str(foreign))
    assert str(err.value).startswith("ppsample: error: ") and "--overwrite" in str(err.value)
    assert "not written by ppsample" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.parquet"]

    run_out = str(tmp_path / "run-out")
    fake_output(run_out, "run", {"mc4-es-train-gaussian-shard-0001-of-0001.json.gz": b"x",
                                 "stats.json": b"{}"})
    before = snapshot(run_out, with_staging=True)
    with pytest.raises(SystemExit) as err:
        score(run_out)
    assert "holds a `ppsample run` output" in str(err.value) and "--overwrite" in str(err.value)
    assert snapshot(run_out, with_staging=True) == before

    score_out = str(tmp_path / "score-out")
    fake_output(score_out, "score", {"part-00000-of-00001.parquet": b"x", "stats.json": b"{}"})
    before = snapshot(score_out, with_staging=True)
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--output", score_out])
    assert "holds a `ppsample score` output" in str(err.value) and "--overwrite" in str(err.value)
    assert snapshot(score_out, with_staging=True) == before


def test_overwrite_replaces_the_other_stage_output_and_says_so(tmp_path, capsys):
    out = tmp_path / "run-out"
    fake_output(str(out), "run", {"mc4-es-train-gaussian-shard-0001-of-0001.json.gz": b"x",
                                  "parquet/train/part-00000-of-00001.parquet": b"y",
                                  "stats.json": b"{}"})
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert score(str(out), "--overwrite") == 0
    err = capsys.readouterr().err
    assert "--overwrite: replaced the `run` output" in err and "(3 files)" in err
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert "notes.txt" in names  # not ours: kept
    assert not any("shard-0001" in n or n.startswith("parquet") for n in names)  # the old run's
    assert json.loads((out / "stats.json").read_text())["total"]["scored"] > 0
    assert json.loads((out / commit.MARKER).read_text())["stage"] == "score"


# ---------------------------------------------------------------------------------------------
# Readers refuse unscored, incomplete and foreign inputs

def test_sample_on_unscored_input_exits_non_zero_with_the_score_hint(tmp_path):
    for unscored in (BUNDLED, str(REPO / "pipelines" / "bundled")):
        with pytest.raises(SystemExit) as err:
            cli.main(["sample", "--input", unscored, "--output", str(tmp_path / "s")])
        assert err.value.code != 0
        assert "ppsample score" in str(err.value) and "not scored" in str(err.value)
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["hola"], "url": [None], "timestamp": [None]}),
                   tmp_path / "plain.parquet")
    for stage in ("sample", "stats"):
        with pytest.raises(SystemExit) as err:
            cli.main([stage, "--input", str(tmp_path / "plain.parquet"), "--output", str(tmp_path / "s")])
        assert "no `perplexity` column" in str(err.value) and "ppsample score" in str(err.value)
    assert not (tmp_path / "s").exists()


def test_sample_refuses_a_sampled_output_and_an_interrupted_one(tmp_path):
    sampled = str(tmp_path / "sampled")
    fake_output(sampled, "sample", {"parquet/train/part-00000-of-00001.parquet": b"x",
                                    "stats.json": b"{}"})
    with pytest.raises(SystemExit) as err:
        cli.main(["stats", "--input", sampled, "--output", str(tmp_path / "st")])
    assert "is a `ppsample sample` output" in str(err.value) and "ppsample score" in str(err.value)

    interrupted = tmp_path / "interrupted"
    staging = commit.begin(str(interrupted), "score", command="ppsample score --output interrupted")
    (Path(staging.path) / "part-00000-of-00002.parquet").write_bytes(b"half")
    os.remove(Path(staging.path) / commit.OWNER)  # as if killed: no live owner
    with pytest.raises(SystemExit) as err:
        cli.main(["sample", "--input", str(interrupted), "--output", str(tmp_path / "s")])
    assert "incomplete" in str(err.value) and "never finished" in str(err.value)


def test_zero_documents_scored_is_an_error_and_keeps_the_previous_output(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "c4-es.tfrecord-00000-of-00001.json.gz").write_bytes(
        gzip.compress(b'{"text": 5}\nnot json\n', mtime=0))
    out = str(tmp_path / "out")
    fake_output(out, "run", {"stats.json": b"{}"})
    before = snapshot(out, with_staging=True)
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--input", str(folder), "--output", out, "--no-figures"])
    message = str(err.value)
    assert "no document was scored" in message and "malformed_json" in message
    assert "--input" in message and "\n" not in message
    assert snapshot(out, with_staging=True) == before


@pytest.fixture
def committed_sampled_dir(tmp_path, shared_data) -> Path:
    """A sampled output (2 train shards) committed through the real staging + commit path."""
    from test_publish_sampled_dir import make_sampled_dir, read_web_docs

    out = tmp_path / "sampled"
    staging = commit.begin(str(out), "sample", command="ppsample sample --output sampled")
    make_sampled_dir(Path(staging.path), read_web_docs(shared_data, 60), "gaussian")
    staging.commit()
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "parquet/train/part-00001-of-00002.parquet").unlink(), "missing"),
    (lambda out: (out / "stats.json").unlink(), "missing"),
    (lambda out: (out / commit.MARKER).unlink(), "no stats.json"),  # + stats.json removed below
])
def test_publish_and_prepare_finetune_refuse_an_incomplete_sampled_dir(
        committed_sampled_dir, damage, message, tmp_path, capsys):
    out = committed_sampled_dir
    # complete: both readers accept it
    from pipelines.finetune.prepare import check_sampled_input
    from pipelines.publish.stage import load_sampled_output
    check_sampled_input(str(out))
    assert load_sampled_output(out).stats["method"] == "gaussian"

    damage(out)
    if message == "no stats.json":  # an old-style dir: 1 of 2 train shards, no stats.json
        (out / "stats.json").unlink()
        (out / "parquet/train/part-00001-of-00002.parquet").unlink()
    rc = exit_status(["publish", "--input", str(out), "--repo-id", "a/b", "--dry-run"])
    assert rc == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        cli.main(["prepare-finetune", "--input", str(out), "--output", str(tmp_path / "tok")])
    assert str(err.value).startswith("ppsample: error: prepare-finetune:")
    assert not (tmp_path / "tok").exists()


def test_prepare_finetune_refuses_shards_the_output_does_not_list(committed_sampled_dir, tmp_path):
    out = committed_sampled_dir
    stray = out / "parquet" / "train" / "part-00005-of-00009.parquet"
    stray.write_bytes((out / "parquet/train/part-00000-of-00002.parquet").read_bytes())
    with pytest.raises(SystemExit) as err:
        cli.main(["prepare-finetune", "--input", str(out), "--output", str(tmp_path / "tok")])
    assert "part-00005-of-00009.parquet" in str(err.value) and "does not list" in str(err.value)


def test_readers_refuse_a_dir_left_by_a_killed_first_run(tmp_path, capsys):
    out = tmp_path / "never-finished"
    staging = commit.begin(str(out), "run", command="ppsample run --output never-finished")
    (Path(staging.path) / "parquet" / "train").mkdir(parents=True)
    (Path(staging.path) / "parquet/train/part-00000-of-00002.parquet").write_bytes(b"half")
    rc = exit_status(["publish", "--input", str(out), "--repo-id", "a/b", "--dry-run"])
    assert rc == 2 and "never finished" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        cli.main(["prepare-finetune", "--input", str(out), "--output", str(tmp_path / "tok")])
    assert "rerun `ppsample run --output never-finished`" in str(err.value)
