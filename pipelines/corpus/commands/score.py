"""`ppsample score`: mC4 shards -> parquet shards with perplexity and n_tokens per document.

One scored shard per input shard, named after it, streamed as it is scored (no shuffle):
OUT/{input stem}.parquet (columns text, url, timestamp, perplexity, n_tokens, split; input
order), its dead letters in OUT/rejected/{input stem}.jsonl, and OUT/stats.json (last) with
per-split counts and the model description (read back by `sample` and `stats`).
"""
from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.utils import shared

from pipelines import options as opts
from pipelines.corpus import driver
from pipelines.corpus_io import mc4_io
from pipelines.corpus.data_path import ScoreTotals, score_shards, write_score_stats
from pipelines.corpus.model_handle import DescribeModel
from pipelines.corpus.stage_config import StageConfig


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser)
    opts.add_layout_arguments(parser)
    opts.add_language_argument(parser)
    opts.add_model_arguments(parser)
    opts.add_output_arguments(parser, sampled=False)
    opts.add_overwrite_argument(parser)


def build(pipeline, files: list[str], cfg: StageConfig) -> None:
    handle = shared.Shared()  # one model per worker process, for scoring and describing
    summaries = score_shards(pipeline, files, cfg, handle, cfg.out_dir)
    model = pipeline | "ModelOnce" >> beam.Create([None]) | "Describe" >> beam.ParDo(
        DescribeModel(cfg.model, cfg.preset, handle))
    totals = summaries | "ScoreTotals" >> beam.CombineGlobally(ScoreTotals())
    write_score_stats(totals, model, cfg.out_dir, cfg.command)


def main(args, beam_argv, argv=None) -> int:
    cfg = StageConfig.from_args("score", args, beam_argv, argv)
    driver.check_model(cfg.model, cfg.preset, remote=driver.remote_runner(cfg.beam_argv))
    files = mc4_io.expand_inputs(cfg.input)
    stats = driver.run_stage(cfg, files, build, model=cfg.model)
    if stats is not None:
        total = stats["total"]
        print(f"ppsample: {total['read']:,} read, {total['rejected']:,} rejected, "
              f"{total['scored']:,} scored -> {cfg.output}", file=sys.stderr)
    return 0
