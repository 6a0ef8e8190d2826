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


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser)
    opts.add_model_arguments(parser)
    opts.add_output_arguments(parser, sampled=False)
    opts.add_overwrite_argument(parser)


def build(pipeline, files: list[str], args, command: str) -> None:
    handle = shared.Shared()  # one model per worker process, for scoring and describing
    summaries = score_shards(pipeline, files, args.model, args.preset, handle, args.output,
                             args.max_doc_bytes, args.batch_size,
                             report=False)  # no sampling, no report: `run`/`sample`/`stats` have one
    model = pipeline | "ModelOnce" >> beam.Create([None]) | "Describe" >> beam.ParDo(
        DescribeModel(args.model, args.preset, handle))
    totals = summaries | "ScoreTotals" >> beam.CombineGlobally(ScoreTotals())
    write_score_stats(totals, model, args.output, command)


def main(args, beam_argv) -> int:
    driver.check_model(args.model, args.preset)
    files = mc4_io.expand_inputs(args.input)
    options = opts.build_pipeline_options(beam_argv, inputs=files, output=args.output, model=args.model)
    command = opts.command_line("score", args, beam_argv)
    with driver.staged_output(args, "score", options, command) as staging:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, files, driver.staged_args(args, staging), command)
        stats = driver.run_staged(pipeline, options, staging, figures=False, inputs=files)
    if stats is not None:
        total = stats["total"]
        print(f"ppsample: {total['read']:,} read, {total['rejected']:,} rejected, "
              f"{total['scored']:,} scored -> {args.output}", file=sys.stderr)
    return 0
