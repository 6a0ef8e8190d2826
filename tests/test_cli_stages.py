"""The stages one by one: `ppsample run` with no arguments (bundled sample, bundled model),
score -> sample giving the same bytes as run, stats as a dry run, sample on hand-made parquet
(bad perplexities, user boundaries) and argument errors (progress: tests/test_progress.py)."""
import gzip
import json
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from sampling import Boundaries, SamplingParams, document_key, document_uniforms, keep_probability


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`ppsample run` with no arguments, from a fresh working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        assert cli.main(["run"]) == 0
    return cwd / "ppsample-output"


@pytest.fixture(scope="module")
def scored_dir(tmp_path_factory):
    from pipelines.corpus.commands.run import BUNDLED_INPUT

    out = tmp_path_factory.mktemp("scored")
    assert cli.main(["score", "--input", BUNDLED_INPUT, "--output", str(out)]) == 0
    return out


def test_default_run_uses_the_bundled_sample_and_model(default_run):
    stats = json.loads((default_run / "stats.json").read_text())
    assert stats["model"]["source"] == "es-reference"
    assert stats["total"]["read"] == 458  # pipelines/bundled/SOURCES.md
    assert set(stats["splits"]) == {"train", "validation"}
    assert stats["splits"]["validation"]["read"] == 45
    # one sampled shard per input shard, numbered from the input shard's index in its split
    for name in ["mc4-es-train-gaussian-shard-0001-of-0002.json.gz",
                 "mc4-es-train-gaussian-shard-0002-of-0002.json.gz",
                 "mc4-es-validation-gaussian-shard-0001-of-0001.json.gz",
                 "parquet/train/part-00000-of-00002.parquet",
                 "scored/c4-es.tfrecord-00000-of-00002.parquet",
                 "perplexity_histogram.png", "input_vs_sampled.png"]:
        assert (default_run / name).is_file(), name
    # nothing was rejected: no empty dead-letter files, none listed
    assert stats["total"]["rejected"] == 0 and stats["rejected_files"] == []
    assert not (default_run / "scored" / "rejected").exists() and not (default_run / "rejected").exists()
    with gzip.open(default_run / "mc4-es-train-gaussian-shard-0001-of-0002.json.gz", "rb") as f:
        first = json.loads(f.readline())
    assert list(first) == ["text", "timestamp", "url"]  # BERTIN / mC4 field order
    raw = (default_run / "mc4-es-train-gaussian-shard-0001-of-0002.json.gz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0: same bytes on every run
    for key in ["version", "command", "method", "parameters", "seed", "preset", "boundaries",
                "histogram", "expected_kept"]:
        assert key in stats
    bands = stats["total"]["bands"]
    assert [b["band"] for b in bands] == ["<=Q1", "(Q1,Q2]", "(Q2,Q3)", ">=Q3"]
    assert sum(b["scored"] for b in bands) == stats["total"]["scored"]
    assert sum(b["kept"] for b in bands) == stats["total"]["kept"]
    assert len(stats["total"]["histogram"]) == len(stats["histogram"]["edges"]) - 1
    assert sum(stats["total"]["histogram"]) == stats["total"]["scored"]


def test_score_writes_the_contract_columns(scored_dir):
    shards = sorted(scored_dir.glob("*.parquet"))
    assert [p.name for p in shards] == ["c4-es-validation.tfrecord-00000-of-00001.parquet",
                                        "c4-es.tfrecord-00000-of-00002.parquet",
                                        "c4-es.tfrecord-00001-of-00002.parquet"]  # named after the inputs
    table = pa.concat_tables(pq.read_table(p) for p in shards)
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["text"] == "string" and schema["url"] == "string"
    assert schema["timestamp"] == "string"
    assert schema["perplexity"] == "double" and schema["n_tokens"] == "int64"
    assert table.num_rows == 458
    rows = table.to_pylist()
    assert all(r["perplexity"] > 1 and r["n_tokens"] > 1 for r in rows)
    assert sum(r["split"] == "validation" for r in rows) == 45
    stats = json.loads((scored_dir / "stats.json").read_text())
    assert stats["total"] == {"read": 458, "rejected": 0, "scored": 458,
                              "tokens_scored": sum(r["n_tokens"] for r in rows)}
    assert not (scored_dir / "rejected").exists()  # no dead letter: no (empty) files
    assert stats["files"]["rejected"] == []


def test_score_then_sample_equals_run(scored_dir, default_run, tmp_path):
    out = tmp_path / "sampled"
    assert cli.main(["sample", "--input", str(scored_dir), "--output", str(out), "--no-figures"]) == 0
    for path in default_run.rglob("*"):
        if path.is_file() and path.suffix in (".gz", ".parquet") and "scored" not in path.parts:
            assert (out / path.relative_to(default_run)).read_bytes() == path.read_bytes(), path.name
    sampled = json.loads((out / "stats.json").read_text())
    ran = json.loads((default_run / "stats.json").read_text())
    assert sampled["boundaries"] == ran["boundaries"]
    assert sampled["model"]["files"] == ran["model"]["files"]  # recorded by score in its stats.json
    assert sampled["total"] == ran["total"]


def test_stats_is_a_dry_run_of_sample(scored_dir, default_run, tmp_path):
    out = tmp_path / "stats"
    assert cli.main(["stats", "--input", str(scored_dir), "--output", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    ran = json.loads((default_run / "stats.json").read_text())
    assert stats["dry_run"] is True
    assert stats["boundaries"] == ran["boundaries"]
    assert stats["total"]["kept"] == ran["total"]["kept"]
    assert not list(out.glob("*.json.gz")) and not (out / "parquet").exists()
    assert (out / "perplexity_histogram.png").is_file()


def test_sample_on_foreign_parquet_with_bad_perplexities_and_user_boundaries(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    pp = np.exp(rng.normal(3.0, 0.5, n))
    rows = {"text": [f"documento {i}" for i in range(n)],
            "url": [f"https://ejemplo.es/{i}" if i % 5 else None for i in range(n)],
            "timestamp": [None] * n,
            "perplexity": pp.tolist()}
    bad = {10: float("nan"), 20: 0.0, 30: -5.0, 40: float("inf"), 50: None}
    for i, value in bad.items():
        rows["perplexity"][i] = value
    pq.write_table(pa.table(rows), tmp_path / "scored-validation.parquet")
    out = tmp_path / "out"
    assert cli.main(["sample", "--input", str(tmp_path / "*.parquet"), "--output", str(out),
                     "--method", "stepwise", "--boundaries", "15,20,25", "--factor", "5",
                     "--seed", "3", "--no-figures"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["boundaries"]["source"] == "user"
    assert (stats["boundaries"]["q1"], stats["boundaries"]["q2"], stats["boundaries"]["q3"]) == (15, 20, 25)
    assert list(stats["splits"]) == ["validation"]  # from the file name: no split column
    v = stats["splits"]["validation"]
    assert (v["read"], v["rejected"], v["scored"]) == (n, len(bad), n - len(bad))
    letters = [json.loads(x) for x in (out / "rejected" / "scored-validation.jsonl").read_text().splitlines()]
    assert [(x["line"], x["reason"]) for x in letters] == [(i + 1, "bad_perplexity") for i in sorted(bad)]
    # the kept set is exactly the stepwise formula with the user's boundaries
    good = [i for i in range(n) if i not in bad]
    keys = [document_key(rows["url"][i], rows["text"][i]) for i in good]
    p = keep_probability(pp[good], Boundaries(15, 20, 25), SamplingParams("stepwise", 5.0))
    want = {k for k, keep in zip(keys, document_uniforms(3, keys) < p) if keep}
    kept = pq.read_table(out / "parquet" / "validation").to_pylist()
    assert {document_key(r["url"], r["text"]) for r in kept} == want
    assert all(r["n_tokens"] is None for r in kept)  # not in the input: stays null


@pytest.mark.parametrize("argv,message", [
    (["--factor", "0.5", "--target-docs", "10"], "not both"),
    (["--boundaries", "3,2,1"], "strictly increasing"),
    (["--method", "random", "--factor", "2"], "factor must be in (0, 1]"),
    (["--method", "stepwise", "--width", "2"], "width only applies"),
    (["--force-boundaries"], "--force-boundaries only applies to --boundaries bertin"),
])
def test_bad_sampling_arguments_fail_before_running(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--output", str(tmp_path / "o"), *argv])
    assert message in str(err.value)
    assert not (tmp_path / "o").exists()


def test_unknown_method_is_a_one_line_usage_error(capsys):
    assert cli.main(["sample", "--input", "x", "--output", "y", "--method", "median"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ppsample: error: argument --method: invalid choice: 'median'")


@pytest.mark.slow
def test_run_hands_the_sample_to_finetune(tmp_path, capfd):
    """`ppsample run --finetune tiny` prepares tokens from the sampled output and trains."""
    out, workdir = tmp_path / "out", tmp_path / "ft"
    assert cli.main(["run", "--output", str(out), "--no-figures", "--finetune", "tiny",
                     "--finetune-workdir", str(workdir), "--finetune-steps", "2"]) == 0
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if "loss" in m]
    assert [m["step"] for m in train] == [1, 2]
    assert all(math.isfinite(m["loss"]) for m in train)
    # the tokens came from this run's sampled documents (both splits)
    assert (workdir / "tokens").is_dir()
    (done,) = [line for line in capfd.readouterr().err.splitlines() if "finetune done" in line]
    assert re.fullmatch(r"ppsample: finetune done: step 2 of 2, loss [\d.]+(, val_loss [\d.]+)?; "
                        r"model in \S+", done), done


def test_unknown_model_fails_before_the_pipeline(tmp_path):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--model", "no-such-model", "--output", str(tmp_path / "o")])
    assert "no-such-model" in str(err.value) and "es-reference" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_prepare_finetune_takes_the_window_from_the_finetune_config(default_run, tmp_path):
    """`prepare-finetune --config tiny` packs the windows `finetune --config tiny` trains on."""
    from lm_models.gptj.train_step import load_config
    from pipelines.finetune import token_shards as ts

    out = tmp_path / "tokens"
    assert cli.main(["prepare-finetune", "--input", str(default_run), "--output", str(out),
                     "--config", "tiny"]) == 0
    manifest = ts.read_manifest(str(out))
    assert manifest["window"] == load_config("tiny").seq_len + 1 == 129
    assert len(ts.open_split(str(out), "train")[0]) == 129
    with pytest.raises(SystemExit, match="does not match --config tiny"):
        cli.main(["prepare-finetune", "--input", str(default_run), "--output", str(tmp_path / "t2"),
                  "--config", "tiny", "--window", "2049"])
    assert not (tmp_path / "t2").exists()


def test_summary_warnings_from_a_real_stats_json(scored_dir, default_run, tmp_path):
    """What the driver's summary prints comes from stats.json fields alone."""
    from sampling.guidance import summary_warnings

    assert summary_warnings(json.loads((default_run / "stats.json").read_text())) == []
    out = tmp_path / "stats"
    assert cli.main(["stats", "--input", str(scored_dir), "--output", str(out), "--method", "stepwise",
                     "--factor", "1e9", "--no-figures"]) == 0
    (line,) = summary_warnings(json.loads((out / "stats.json").read_text()))
    assert "keeps every document: the sampling does nothing" in line


def test_stepwise_without_a_factor_or_target_is_refused_before_running(tmp_path):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--method", "stepwise", "--output", str(tmp_path / "o")])
    assert "--method stepwise needs --target-docs N" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_force_boundaries_reaches_the_sampling_request():
    from pipelines.cli import parse_stage_args
    from pipelines.corpus.stage_config import StageConfig

    args, beam_argv = parse_stage_args("run", ["--boundaries", "bertin", "--force-boundaries"])
    request = StageConfig.from_args("run", args, beam_argv).request
    assert request.boundaries == "bertin"
    assert request.force_boundaries is True
    args, beam_argv = parse_stage_args("run", ["--boundaries", "bertin"])
    assert StageConfig.from_args("run", args, beam_argv).request.force_boundaries is False


def test_summary_prints_the_parameters_as_words_not_a_dict(scored_dir, tmp_path, capsys):
    out = tmp_path / "stepwise"
    assert cli.main(["stats", "--input", str(scored_dir), "--output", str(out), "--method", "stepwise",
                     "--target-docs", "200", "--no-figures", "-q"]) == 0
    err = capsys.readouterr().err
    factor = json.loads((out / "stats.json").read_text())["parameters"]["factor"]
    assert f"; stepwise factor={factor:.6g}\n" in err and "{" not in err, err
    from pipelines.corpus.driver import format_parameters
    assert format_parameters({"factor": 0.78, "width": 4.5}) == "factor=0.78 width=4.5"


def test_finetune_done_is_one_short_line():
    from pipelines.corpus.commands.run import finetune_done_line

    summary = {"start_step": 0, "step": 50, "target_step": 50, "checkpoint_step": 50,
               "stopped_by_signal": None, "last": {"loss": 6.51234, "lr": 1e-4, "grad_norm": 2.0},
               "last_eval": {"step": 50, "val_loss": 6.7, "val_ppl": 812.4, "val_tokens": 4096},
               "workdir": "o/finetune", "metrics": "o/finetune/metrics.jsonl",
               "export": "o/finetune/hf", "tokens_dir": "o/finetune/tokens",
               "tokens": {"train": {"documents": 300, "windows": 90, "tokens": 92160}}}
    assert finetune_done_line(summary, "o/finetune") == \
        "ppsample: finetune done: step 50 of 50, loss 6.512, val_loss 6.7; model in o/finetune/hf"
    stopped = {**summary, "stopped_by_signal": 15, "step": 20, "last_eval": None, "export": None}
    assert finetune_done_line(stopped, "o/finetune") == \
        "ppsample: finetune stopped: step 20 of 50, loss 6.512; checkpoints in o/finetune"


@pytest.mark.parametrize("stage, words", [("stats", "458 docs read"), ("sample", "458 docs read")])
def test_sample_and_stats_progress_say_read_not_scored(stage, words, scored_dir, tmp_path, capsys):
    assert cli.main([stage, "--input", str(scored_dir), "--output", str(tmp_path / stage),
                     "--no-figures"]) == 0
    line = [l for l in capsys.readouterr().err.splitlines() if "docs/s" in l][-1]  # the final one
    assert words in line and "scored" not in line, line
    assert line.endswith("333 of 458 would be kept" if stage == "stats" else "333 of 458 kept so far"), line


def test_stats_json_starts_with_the_totals_is_compact_and_has_no_local_path(default_run):
    from pathlib import Path

    text = (default_run / "stats.json").read_text()
    stats = json.loads(text)
    assert list(stats)[:3] == ["total", "expected_kept", "stage"]
    assert text.splitlines()[1:4] == ['  "total": {', '    "read": 458,', '    "rejected": 0,']
    # one line per histogram array: ~180 lines, not ~8,000
    assert len(text.splitlines()) < 400
    assert any(line.startswith('    "histogram": [0, ') for line in text.splitlines())
    # the bundled model's place on this machine is not recorded (nor the checkout's, nor $HOME)
    repo = str(Path(__file__).resolve().parents[1])
    assert repo not in text and str(Path.home()) not in text and str(default_run.parent) not in text
    assert "directory" not in stats["model"]
    scored = (default_run / "scored" / "stats.json").read_text()
    assert list(json.loads(scored))[0] == "total" and repo not in scored


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, "x"], "b": {"c": [], "d": {}, "e": [{"f": 1}, {"g": [1, 2]}]}, "h": "é"},
    [[1, 2], [3]], [], {}, 1.5, "s",
])
def test_compact_json_is_json(value):
    from pipelines.corpus_io.writers import compact_json

    assert json.loads(compact_json(value)) == value
    assert '[1, 2.5, null, "x"]' in compact_json({"a": [1, 2.5, None, "x"]})
