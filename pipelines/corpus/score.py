"""`ppsample score`: mC4 shards -> parquet shards with perplexity and n_tokens per document.

Writes OUT/part-NNNNN-of-NNNNN.parquet (columns text, url, timestamp, perplexity, n_tokens,
split), dead letters in OUT/rejected/, and OUT/stats.json with per-split counts and the model
description (read back by `sample` and `stats`).
"""
from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.utils import shared

from pipelines.corpus import driver
from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import outputs
from pipelines.corpus_io import writers
from pipelines import options as opts
from pipelines.corpus.sampling_job import STATS_JSON, project_version, split_of_letter
from pipelines.corpus.scoring import DescribeModel, ScoreDocuments


def add_arguments(parser) -> None:
    opts.add_input_arguments(parser)
    opts.add_model_arguments(parser)
    opts.add_output_arguments(parser, sampled=False)
    opts.add_overwrite_argument(parser)


def score_stats(_, read_counts: dict, scored_counts: dict, token_counts: dict, rejected_counts: dict,
                files: list, model: dict, command: str) -> dict:
    splits = sorted(set(read_counts) | set(scored_counts) | set(rejected_counts))
    per_split = {s: {"read": read_counts.get(s, 0), "rejected": rejected_counts.get(s, 0),
                     "scored": scored_counts.get(s, 0), "tokens_scored": token_counts.get(s, 0)}
                 for s in splits}
    total = {k: sum(v[k] for v in per_split.values())
             for k in ("read", "rejected", "scored", "tokens_scored")}
    for name, counts in [*per_split.items(), ("total", total)]:
        if counts["read"] != counts["scored"] + counts["rejected"]:
            raise RuntimeError(f"{name}: read != scored + rejected: documents were lost")
    return {"version": project_version(), "command": command, "stage": "score", "model": model,
            "preset": model.get("preset"), "splits": per_split, "total": total,
            "files": {"parquet": files, "rejected": outputs.WriteRejected.NAME}}


def build(pipeline, files: list[str], args, command: str) -> None:
    read = pipeline | "Read" >> mc4_io.ReadDocuments(files, args.max_doc_bytes,
                                                     batch_size=args.batch_size)
    handle = shared.Shared()  # one model per worker process, for scoring and describing
    scored = read["batches"] | "Score" >> ScoreDocuments(args.model, args.preset, handle)
    rejected = (read["rejected"], scored.rejected) | "AllRejected" >> beam.Flatten()
    model = pipeline | "ModelOnce" >> beam.Create([None]) | "Describe" >> beam.ParDo(
        DescribeModel(args.model, args.preset, handle))
    docs = scored.scored | "Unbatch" >> beam.FlatMap(lambda batch: batch)
    parquet_files = docs | "WriteParquet" >> outputs.WriteScoredParquet(
        args.output, args.docs_per_shard)
    rejected_file = rejected | "WriteRejected" >> outputs.WriteRejected(args.output)
    by_split = docs | "BySplit" >> beam.Map(lambda d: (d["split"], d["n_tokens"]))
    stats = (pipeline
             | "StatsTrigger" >> beam.Create([None])
             | "Stats" >> beam.Map(
                 score_stats,
                 read_counts=beam.pvalue.AsDict(read["counts"] | "ReadSum" >> beam.CombinePerKey(sum)),
                 scored_counts=beam.pvalue.AsDict(by_split | "ScoredCount" >> beam.combiners.Count.PerKey()),
                 token_counts=beam.pvalue.AsDict(by_split | "TokenSum" >> beam.CombinePerKey(sum)),
                 rejected_counts=beam.pvalue.AsDict(
                     outputs.count_per_split(rejected, "Rejected", split_of_letter)),
                 files=beam.pvalue.AsSingleton(parquet_files),
                 model=beam.pvalue.AsSingleton(model), command=command))
    _ = stats | "WriteStats" >> beam.Map(
        lambda s, _done: writers.write_json(writers.join(args.output, STATS_JSON), s),
        _done=beam.pvalue.AsList(rejected_file))


def main(args, beam_argv) -> int:
    driver.check_model(args.model, args.preset)
    files = mc4_io.expand_inputs(args.input)
    options = opts.build_pipeline_options(beam_argv, inputs=files, output=args.output, model=args.model)
    command = opts.command_line("score", args, beam_argv)
    with driver.staged_output(args, "score", options, command) as staging:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, files, driver.staged_args(args, staging), command)
        stats = driver.run_staged(pipeline, options, staging, figures=False)
    if stats is not None:
        total = stats["total"]
        print(f"ppsample: {total['read']:,} read, {total['rejected']:,} rejected, "
              f"{total['scored']:,} scored -> {args.output}", file=sys.stderr)
    return 0
