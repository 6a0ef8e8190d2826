"""`ppsample stats`: boundaries, histograms and per-band keep rates of scored parquet.

Writes OUT/stats.json (the same schema as `sample`, marked "dry_run": kept counts are what
`sample` would keep with the same arguments) and the two figures; no documents are written.
"""
from __future__ import annotations

from pipelines import options as opts
from pipelines.corpus.commands.sample import run_stage
from pipelines.corpus.stage_config import StageConfig


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser, help_text="scored parquet: a `ppsample score` output "
                                               "directory or glob(s) (local, gs://, hf://)")
    opts.add_language_argument(parser)
    opts.add_sampling_arguments(parser)
    opts.add_result_arguments(parser, sampled=False)


def main(args, beam_argv, argv=None) -> int:
    return run_stage(StageConfig.from_args("stats", args, beam_argv, argv))
