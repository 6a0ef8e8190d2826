"""`ppsample run`: score -> stats -> sample in one Beam pipeline.

Two phases per input shard, no document shuffled (pipelines.corpus.data_path): each shard
is scored into OUT/scored/{shard}.parquet, the boundaries come from the merged histograms (a
side input), and each scored shard is read back into its own sampled shards. With no arguments it runs offline on the bundled Spanish
sample with the bundled model and writes ppsample-output/.
"""
from __future__ import annotations

import os
import sys

import apache_beam as beam
from apache_beam.utils import shared

from pipelines.corpus import driver
from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import writers
from pipelines import options as opts
from pipelines.corpus.input_shards import SCORED_DIR
from pipelines.corpus.data_path import ScoreTotals, add_sampling, score_shards, write_score_stats
from pipelines.corpus.model_handle import DescribeModel
from pipelines.corpus.stage_config import StageConfig

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "bundled")
BUNDLED_INPUT = os.path.join(BUNDLED_DIR, "c4-es*.json.gz")
DEFAULT_OUTPUT = "ppsample-output"


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser, required=False,
                             help_text="mC4 shards (glob, comma-separated; local, gs://, hf://); "
                                       "default: the bundled Spanish sample (with --language: "
                                       "mC4's files of that language on the Hub)")
    opts.add_layout_arguments(parser)
    opts.add_language_argument(parser)
    opts.add_model_arguments(parser)
    opts.add_sampling_arguments(parser)
    opts.add_result_arguments(parser, default=DEFAULT_OUTPUT)
    parser.add_argument("--finetune", metavar="CONFIG", default=None,
                        help="after sampling, prepare and finetune GPT-J with this config")
    parser.add_argument("--finetune-workdir", default=None,
                        help="finetune work directory (default OUTPUT/finetune)")
    # The hand-off is a demonstration of the whole mission on one machine: a short run by
    # default (tiny's full schedule is ~75 min on CPU); pass the config's total_steps for all.
    parser.add_argument("--finetune-steps", type=int, default=50,
                        help="train until this global step (default 50)")


def build(pipeline: beam.Pipeline, files: list[str], cfg: StageConfig) -> None:
    """Phase 1 writes OUT/scored/ (a complete `score` output, kept so that re-sampling never
    re-scores); phase 2 reads those shards back and writes the sampled shards into OUT."""
    scored_dir = writers.join(cfg.out_dir, SCORED_DIR)
    handle = shared.Shared()  # one model per worker process, for scoring and describing
    summaries = score_shards(pipeline, files, cfg, handle, scored_dir)
    model = pipeline | "ModelOnce" >> beam.Create([None]) | "Describe" >> beam.ParDo(
        DescribeModel(cfg.model, cfg.preset, handle))
    totals = summaries | "ScoreTotals" >> beam.CombineGlobally(ScoreTotals())
    scored_stats = write_score_stats(totals, model, scored_dir, cfg.command)
    add_sampling(summaries, model, cfg, score_totals=totals, rejected_prefix=SCORED_DIR + "/",
                 wait_for=scored_stats)


def main(args, beam_argv, argv=None) -> int:
    if args.finetune:  # before minutes of sampling, not after
        opts.require_extras(f"ppsample run --finetune {args.finetune}", ("finetune",))
    cfg = StageConfig.from_args("run", args, beam_argv, argv)
    driver.check_model(cfg.model, cfg.preset, remote=driver.remote_runner(cfg.beam_argv))
    default_input = opts.mc4_inputs(cfg.language) if cfg.language else BUNDLED_INPUT
    files = mc4_io.expand_inputs(cfg.input or default_input)
    stats = driver.run_stage(cfg, files, build, model=cfg.model)
    if stats is None:
        return 0  # a Dataflow job that was only submitted
    driver.print_summary(stats, cfg.output)
    if cfg.finetune:
        from pipelines.finetune.stage import run_after_sample

        workdir = cfg.finetune_workdir or writers.join(cfg.output, "finetune")
        summary = run_after_sample(cfg.output, cfg.finetune, workdir, steps=cfg.finetune_steps)
        print(finetune_done_line(summary, workdir), file=sys.stderr)
    return 0


def finetune_done_line(summary: dict, workdir: str) -> str:
    """One short line from the trainer's summary (the whole of it is WORKDIR/metrics.jsonl)."""
    done = "finetune stopped" if summary.get("stopped_by_signal") else "finetune done"
    parts = [f"step {summary['step']:,} of {summary['target_step']:,}"]
    if "loss" in (summary.get("last") or {}):
        parts.append(f"loss {summary['last']['loss']:.4g}")
    if summary.get("last_eval"):
        parts.append(f"val_loss {summary['last_eval']['val_loss']:.4g}")
    where = f"model in {summary['export']}" if summary.get("export") else f"checkpoints in {workdir}"
    return f"ppsample: {done}: {', '.join(parts)}; {where}"
