"""`ppsample sample`: scored parquet -> mC4-es-sampled shards (json.gz + parquet) and stats.json.

Reads any parquet with text, url, timestamp, perplexity columns (n_tokens and split when
present; otherwise the split comes from the file name). Boundaries come from the merged
histogram of the input unless --boundaries is given.
"""
from __future__ import annotations

import apache_beam as beam

from pipelines import options as opts
from pipelines.report.command import add_no_report_argument
from pipelines.corpus import driver
from pipelines.corpus.data_path import (JobMeta, add_sampling, check_shards,
                                           scored_model_description)


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser, help_text="scored parquet: a `ppsample score` output "
                                               "directory or glob(s) (local, gs://, hf://)")
    opts.add_sampling_arguments(parser)
    opts.add_output_arguments(parser)
    opts.add_overwrite_argument(parser)
    parser.add_argument("--no-figures", action="store_true", help="do not draw the PNG figures")
    add_no_report_argument(parser)


def build(pipeline, files, args, request, command: str, write_documents: bool = True,
          stage: str = "sample") -> None:
    batch_size = getattr(args, "batch_size", 256)  # the scorer's flag; sample has no scorer
    report = not getattr(args, "no_report", False)
    summaries = check_shards(pipeline, files, args.output, args.max_doc_bytes, batch_size, report)
    model = pipeline | "Model" >> beam.Create([scored_model_description(files)])
    meta = JobMeta(command=command, out_dir=args.output, stage=stage,
                   prefix=getattr(args, "prefix", "mc4-es"), write_documents=write_documents,
                   max_doc_bytes=args.max_doc_bytes, batch_size=batch_size, report=report)
    add_sampling(summaries, model, request, meta)


def run_stage(stage: str, args, beam_argv, write_documents: bool) -> int:
    request = opts.sampling_request(args)
    files = driver.scored_input_files(args.input, stage)
    options = opts.build_pipeline_options(beam_argv, inputs=files, output=args.output)
    command = opts.command_line(stage, args, beam_argv)
    with driver.staged_output(args, stage, options, command) as staging:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, files, driver.staged_args(args, staging), request, command, write_documents,
              stage)
        stats = driver.run_staged(pipeline, options, staging, figures=not args.no_figures,
                                   inputs=files)
    if stats is None:
        return 0  # a remote job that was only submitted
    driver.print_summary(stats, args.output)
    return 0


def main(args, beam_argv) -> int:
    return run_stage("sample", args, beam_argv, write_documents=True)
