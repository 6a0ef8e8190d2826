"""The CLI contract of DESIGN.md: every stage answers `--help`, unknown commands are usage errors."""
import subprocess
import sys

import pytest

from pipelines.cli import COMMANDS, main

DESIGN_COMMANDS = ["run", "score", "stats", "sample", "report", "publish", "train-lm", "prepare-finetune", "finetune"]


def test_cli_offers_exactly_the_design_commands():
    assert list(COMMANDS) == DESIGN_COMMANDS


@pytest.mark.parametrize("command", DESIGN_COMMANDS)
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"ppsample {command}" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["scroe"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'scroe'" in capsys.readouterr().err


def test_console_script_reports_the_installed_version():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    from importlib.metadata import version
    assert out.strip() == f"ppsample {version('perplexity-sampling')}"


# --- strict arguments -------------------------------------------------------------------------

from pipelines import options as opts
from pipelines.errors import UsageError  # noqa: E402
from pipelines.cli import BEAM_STAGES, parse_stage_args, root_message, stage_argv  # noqa: E402


def _usage_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ppsample: error: "), err
    return err[0]


def test_a_typo_is_an_error_with_a_suggestion_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = _usage_error(["run", "--ouput", "typo_out"], capsys)
    assert "unrecognised arguments: --ouput" in line and "did you mean --output?" in line
    assert list(tmp_path.iterdir()) == []  # neither typo_out nor the default ppsample-output


def test_a_misspelt_beam_flag_is_an_error_with_the_beam_spelling(capsys):
    line = _usage_error(["run", "--direct_num_worker", "2"], capsys)
    assert "did you mean --direct_num_workers?" in line


@pytest.mark.parametrize("argv,message", [
    (["run", "--config", "x.yaml"], "unrecognised arguments: --config"),
    (["run", "stray"], "unexpected argument 'stray'"),
    (["run", "--direct_num_workers", "two"], "invalid int value: 'two'"),
    (["run", "--out", "x"], "unrecognised arguments: --out"),  # no prefix matching of own flags
    (["score", "--output", "x"], "--input"),  # a missing required flag: one line too
    (["publish", "--input", "x", "--repo-id", "a/b", "--runner", "DataflowRunner"],
     "publish runs no Beam pipeline"),
    (["train-lm", "--corpus", "c", "--output", "o", "--direct_num_workers", "2"],
     "train-lm runs no Beam pipeline"),
])
def test_unknown_arguments_are_one_line_usage_errors(argv, message, capsys):
    assert message in _usage_error(argv, capsys)


@pytest.mark.parametrize("flag", ["--target_docs", "--target_docs=5", "--no_figures", "--max_doc_bytes=1000"])
def test_underscore_spellings_of_own_flags_are_refused(flag, capsys):
    message = _usage_error(["run", flag, "--direct_num_workers", "2"], capsys)
    assert "did you mean --" + flag[2:].partition("=")[0].replace("_", "-") + "?" in message


def test_target_docs_with_underscore_exits_nonzero_and_writes_nothing(tmp_path, monkeypatch):
    from pipelines import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--target_docs", "5", "--output", "out"]) != 0
    assert list(tmp_path.iterdir()) == []


def test_beam_spelling_wins_where_beam_declares_it():
    """`--dry_run` is Beam's own option (Dataflow dry runs): never taken for a ppsample flag."""
    assert opts.refuse_underscore_spellings(["--dry_run", "True"], ["--dry-run"], ["--dry_run"]) == \
        ["--dry_run", "True"]
    with pytest.raises(UsageError, match="did you mean --dry-run"):
        opts.refuse_underscore_spellings(["--dry_run"], ["--dry-run"])


def test_only_flags_beam_declares_pass_through():
    _, beam_argv = parse_stage_args("score", [
        "--input", "x", "--output", "y", "--runner=DataflowRunner", "--project", "p",
        "--experiments=upload_graph", "--experiments", "use_runner_v2",
        "--direct_running_mode", "multi_processing", "--sdk_container_image", "img"])
    assert beam_argv[0] == "--runner=DataflowRunner" and beam_argv[-1] == "img"
    # what PipelineOptions then sees is exactly what was typed
    from apache_beam.options.pipeline_options import PipelineOptions
    everything = PipelineOptions(beam_argv).get_all_options()
    assert everything["project"] == "p"
    assert everything["experiments"] == ["upload_graph", "use_runner_v2"]


def test_prepare_finetune_takes_beam_flags():
    _, beam_argv = parse_stage_args("prepare-finetune", ["--input", "a", "--output", "b",
                                                         "--direct_num_workers", "2"])
    assert beam_argv == ["--direct_num_workers", "2"]


# --- help -------------------------------------------------------------------------------------

def _help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [c for c in DESIGN_COMMANDS if c != "finetune"])
def test_help_ends_saying_where_other_flags_go(command, capsys):
    last = " ".join(_help(command, capsys).strip().split("\n\n")[-1].split())
    if command in BEAM_STAGES:
        assert last.startswith("Any other --flag must be a Beam PipelineOptions flag")
    else:
        assert last == "This stage runs no Beam pipeline: flags other than these are errors."


@pytest.mark.parametrize("command", ["run", "sample", "stats"])
def test_method_and_seed_show_help_and_defaults(command, capsys):
    text = " ".join(_help(command, capsys).split())
    assert "--method {gaussian,stepwise,random} keep probability" in text
    assert "(default gaussian)" in text
    assert "--seed SEED the keep decision" in text and "(default 0)" in text
    assert "--force-boundaries" in text


@pytest.mark.parametrize("stage", ["run", "score", "stats", "sample"])
def test_no_stage_offers_docs_per_shard_which_would_do_nothing(stage, capsys):
    """Output shards follow the input shards: a --docs-per-shard flag would be ignored."""
    assert "--docs-per-shard" not in _help(stage, capsys)
    assert "unrecognised arguments: --docs-per-shard" in _usage_error(
        [stage, "--input", "x", "--output", "y", "--docs-per-shard", "5"], capsys)


def test_command_line_records_what_applied_without_local_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "data" / "c4-es*.json.gz")
    argv = ["--input", inside, "--output", f"{tmp_path}/out", "--finetune-steps", "50",
            "--finetune-workdir=/somewhere/ft", "--debug", "-q", "--seed", "3"]
    args, beam_argv = parse_stage_args("run", argv)
    line = opts.command_line("run", args, beam_argv, stage_argv("run", argv))
    assert line == "ppsample run --input 'data/c4-es*.json.gz' --output out --seed 3"
    argv = ["--finetune", "tiny", "--finetune-steps", "5"]
    args, beam_argv = parse_stage_args("run", argv)
    assert opts.command_line("run", args, beam_argv, stage_argv("run", argv)) == \
        "ppsample run --finetune tiny --finetune-steps 5"


def test_command_line_redacts_a_presigned_model_url():
    argv = ["--model", "https://user:pw@host.example/es?X-Amz-Signature=SECRET", "--seed", "1"]
    args, beam_argv = parse_stage_args("run", argv)
    line = opts.command_line("run", args, beam_argv, argv)
    assert "SECRET" not in line and "pw" not in line and "host.example/es" in line


def test_command_line_from_a_namespace_skips_what_did_not_apply(tmp_path, monkeypatch):
    import argparse
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(input=str(tmp_path / "in.json.gz"), output="gs://b/out",
                              finetune=None, finetune_steps=50, seed=0, no_figures=False)
    assert opts.command_line("run", args, ["--runner", "DataflowRunner"]) == (
        "ppsample run --input in.json.gz --output gs://b/out --seed 0 --runner DataflowRunner")


# --- one-line errors --------------------------------------------------------------------------

BEAM_FORWARDED = """Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in apache_beam.runners.common.DoFnRunner.process
  File "/x/sampling/target_size.py", line 59, in solve_factor
    raise ValueError(
ValueError: target of 100000 docs is unreachable with the gaussian method

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/x/apache_beam/runners/worker/sdk_worker.py", line 310, in _execute
    response = task()
RuntimeError: ValueError: target of 100000 docs is unreachable [while running 'ResolvePlan']
"""


def test_root_message_of_a_worker_traceback_forwarded_as_text():
    assert root_message(RuntimeError(BEAM_FORWARDED)) == (
        "target of 100000 docs is unreachable with the gaussian method")


def test_root_message_walks_the_cause_chain_and_drops_beam_step_names():
    try:
        try:
            raise KeyError("split 'x'")
        except KeyError as inner:
            raise ValueError("wrapped [while running 'Decide']") from inner
    except ValueError as outer:
        assert root_message(outer) == "\"split 'x'\""
    try:
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            raise RuntimeError("boom [while running 'Score/Score']")
    except RuntimeError as outer:
        assert root_message(outer) == "ZeroDivisionError: division by zero"


def test_root_message_stops_at_raise_from_none():
    """Beam's data plane re-raises a worker's error with `from None` inside `except
    queue.Empty:`: the user gets that error's message, never `Empty`."""
    import queue

    try:
        try:
            raise queue.Empty
        except queue.Empty:
            raise ValueError("model es.arpa.bin: not a KenLM file [while running 'Score']") from None
    except ValueError as outer:
        assert root_message(outer) == "model es.arpa.bin: not a KenLM file"


def test_root_message_skips_inner_exceptions_without_a_message():
    import queue

    try:
        try:
            raise queue.Empty
        except queue.Empty as empty:
            raise RuntimeError("Channel closed prematurely.") from empty
    except RuntimeError as outer:
        assert root_message(outer) == "RuntimeError: Channel closed prematurely."


# --- ppsample's own errors (pipelines/errors.py) ----------------------------------------------

def test_a_ppsample_error_raised_in_a_worker_arrives_as_its_own_message_and_status(capsys):
    """Forwarded by Beam as traceback text (multi-process / remote runners), or wrapped in
    Beam's own exception (in-process): either way the message alone, and the class's exit."""
    import pickle

    from pipelines import cli
    from pipelines.errors import OutputError, UsageError

    forwarded = BEAM_FORWARDED.replace(
        "ValueError: target of 100000 docs is unreachable with the gaussian method",
        "pipelines.errors.OutputError: train: 3 rows written but 4 kept [while running 'X']")
    own = cli._forwarded(RuntimeError(forwarded))
    assert type(own) is OutputError and own.message == "train: 3 rows written but 4 kept"
    try:
        try:
            raise UsageError("bad flag")
        except UsageError as inner:
            raise RuntimeError("wrapped [while running 'S']") from inner
    except RuntimeError as outer:
        wrapped = outer
    with pytest.raises(SystemExit) as exit_info:
        cli._guarded(lambda: (_ for _ in ()).throw(wrapped), debug=False)
    assert exit_info.value.code == 2 and "ppsample: error: bad flag" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^ppsample: error: lost$"):
        cli._guarded(lambda: (_ for _ in ()).throw(RuntimeError(forwarded.replace(
            "train: 3 rows written but 4 kept", "lost"))), debug=False)
    copy = pickle.loads(pickle.dumps(OutputError("x")))  # how Beam moves it between processes
    assert type(copy) is OutputError and copy.message == "x"
