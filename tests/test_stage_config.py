"""The one frozen config of a corpus stage, built once from the parsed flags."""
import dataclasses

import pytest

from pipelines.cli import parse_stage_args, stage_argv
from pipelines.corpus.stage_config import StageConfig


@pytest.mark.parametrize("stage", ["run", "score", "stats", "sample"])
def test_every_flag_of_a_corpus_stage_lands_in_its_config(stage):
    argv = ["--input", "in/*.parquet", "--output", "out", "--max-doc-bytes", "77", "--debug"]
    if stage in ("run", "score"):
        argv += ["--model", "es-reference", "--batch-size", "9"]
    if stage != "score":
        argv += ["--seed", "5", "--method", "random", "--factor", "0.25"]
    if stage in ("run", "sample", "stats"):
        argv += ["--no-figures"]
    args, beam_argv = parse_stage_args(stage, argv + ["--runner", "FnApiRunner"])
    cfg = StageConfig.from_args(stage, args, beam_argv, stage_argv(stage, argv))
    assert (cfg.stage, cfg.input, cfg.output, cfg.out_dir) == (stage, "in/*.parquet", "out", "out")
    assert cfg.max_doc_bytes == 77 and cfg.beam_argv == ("--runner", "FnApiRunner")
    assert "--debug" not in cfg.command and cfg.command.startswith(f"ppsample {stage} --input")
    assert cfg.figures is False
    if stage in ("run", "score"):
        assert (cfg.model, cfg.batch_size) == ("es-reference", 9)
    if stage == "score":
        assert cfg.request is None
    else:
        assert (cfg.request.seed, cfg.request.method, cfg.request.factor) == (5, "random", 0.25)
    assert cfg.write_documents is (stage != "stats")


def test_the_config_is_frozen_and_staging_changes_only_where_it_writes():
    args, beam_argv = parse_stage_args("sample", ["--input", "s", "--output", "o"])
    cfg = StageConfig.from_args("sample", args, beam_argv)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.out_dir = "elsewhere"
    staged = cfg.with_out_dir("o/.ppsample-staging/x")
    assert staged.out_dir == "o/.ppsample-staging/x" and staged.output == "o"
    assert dataclasses.replace(staged, out_dir=cfg.out_dir) == cfg


def test_a_parsed_flag_the_config_does_not_hold_is_an_error_not_ignored():
    args, beam_argv = parse_stage_args("score", ["--input", "s", "--output", "o"])
    args.docs_per_shard = 10
    with pytest.raises(TypeError, match="--docs-per-shard"):
        StageConfig.from_args("score", args, beam_argv)
