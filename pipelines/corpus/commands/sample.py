"""`ppsample sample`: scored parquet -> mC4-es-sampled shards (json.gz + parquet) and stats.json.

Reads any parquet with text, url, timestamp, perplexity columns (n_tokens and split when
present; otherwise the split comes from the file name). Boundaries come from the merged
histogram of the input unless --boundaries is given.
"""
from __future__ import annotations

import apache_beam as beam

from pipelines import options as opts
from pipelines.corpus import driver
from pipelines.corpus.data_path import add_sampling, check_shards, scored_model_description
from pipelines.corpus.stage_config import StageConfig


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser, help_text="scored parquet: a `ppsample score` output "
                                               "directory or glob(s) (local, gs://, hf://)")
    opts.add_language_argument(parser)
    opts.add_sampling_arguments(parser)
    opts.add_result_arguments(parser)


def build(pipeline, files: list[str], cfg: StageConfig) -> None:
    summaries = check_shards(pipeline, files, cfg)
    model = pipeline | "Model" >> beam.Create([scored_model_description(files)])
    add_sampling(summaries, model, cfg)


def run_stage(cfg: StageConfig) -> int:
    """`sample` and `stats` (cfg.write_documents False): the same graph."""
    files = driver.scored_input_files(cfg.input, cfg.stage)
    stats = driver.run_stage(cfg, files, build)
    if stats is None:
        return 0  # a remote job that was only submitted
    driver.print_summary(stats, cfg.output)
    return 0


def main(args, beam_argv, argv=None) -> int:
    return run_stage(StageConfig.from_args("sample", args, beam_argv, argv))
