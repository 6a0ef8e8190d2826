"""Phase 2 of the data path, one shard per call: the shard's scored parquet read again ->
keep decisions with the plan (a side input) -> its own sampled shard(s), streamed, in input
order. What leaves the DoFn is a ShardSample (file names and per-split statistics).

A scored shard that phase 1 wrote itself (`run`) is read column-wise, one row group at a time:
every row in it passed phase 1's checks, so only the columns the decisions and the outputs
need become Python objects, and the kept rows are written with Arrow's take(). Pre-scored
input (`sample`, `stats`) goes row by row through the same checks as phase 1.

Rows that phase 1 rejected (CheckShard on pre-scored input) are skipped here with the same
checks; they are already counted and written as dead letters. The statistics assembly then
checks that phase 2 decided exactly the documents phase 1 scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines import progress
from pipelines import worker_watchdog
from pipelines.corpus.plan import SamplingPlan, SplitAccumulator, decide_with_uniforms
from pipelines.corpus.phase1 import (SCORE_COLUMNS, ShardSummary, iter_records,
                                            scored_row_problem)
from pipelines.corpus_io import layouts
from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import writers
from pipelines.report.collect import ShardReport

SCORED_FILE_COLUMNS = ("text", "url", "timestamp", "perplexity", "n_tokens", "split")


@dataclass
class ShardSample:
    index: int  # the input shard's
    splits: dict = field(default_factory=dict)  # split -> SplitAccumulator
    files: dict = field(default_factory=dict)  # split -> {"json_gz": name, "parquet": name}
    # split -> {"json_gz": rows, "parquet": rows}: what the writers wrote (checked against kept)
    rows: dict = field(default_factory=dict)
    report: ShardReport | None = None  # what report.html shows (pipelines.report.collect)


class SampleShard(writers.ClosesAtBundleEnd, beam.DoFn):
    """ShardSummary + plan -> the shard's json.gz (BERTIN) and parquet (Hub) sampled shards
    per split, and one ShardSample. With emit_documents=False (`ppsample stats`) it only
    decides and counts."""

    def __init__(self, out_dir: str, prefix: str, method: str, emit_documents: bool,
                 max_doc_bytes: int, batch_size: int):
        self.out_dir, self.prefix, self.method = out_dir, prefix, method
        self.emit_documents = emit_documents
        self.max_doc_bytes = max_doc_bytes
        self.batch_size = batch_size
        self.kept_counter = Metrics.counter("ppsample", "kept")
        self.dropped_counter = Metrics.counter("ppsample", "dropped")

    def process(self, summary: ShardSummary, plan: SamplingPlan, report_plan=None):
        shard = summary.shard
        result = ShardSample(shard.index)
        self._carried = self._carried_columns(summary)
        if report_plan is not None:
            result.report = ShardReport(report_plan, plan.boundaries)
        streams: dict[str, tuple] = {}
        # nothing scored anywhere: no boundaries, nothing to sample, no (empty) shards written
        emit = self.emit_documents and plan.histogram.total > 0
        try:
            if emit:
                # the shard of the file's own split exists even when nothing is kept in it
                self._streams(streams, result, shard, shard.split, self._carried[2])
            if summary.scored_file is not None:
                self._decide_scored_file(summary.scored_path, plan, result, streams, shard, emit)
            else:
                self._decide_rows(summary, plan, result, streams, shard, emit)
            for split in sorted(streams):
                json_gz, parquet = streams[split]
                self._closing.add(json_gz)  # finish while the next shard is decided
                self._closing.add(parquet)
                result.rows[split] = {"json_gz": json_gz.count, "parquet": parquet.count}
        except BaseException:
            for json_gz, parquet in streams.values():
                json_gz.abort()  # (a stream already closed stays as it is)
                parquet.abort()
            raise
        yield result

    @staticmethod
    def _carried_columns(summary: ShardSummary) -> tuple:
        """(carried columns, extras as one JSON column?, sampled parquet schema) of a scored
        shard read with another corpus's layout, or of a pre-scored parquet (`sample`) with
        columns beyond mC4's (ids, extras); ((), False, None) for mC4's."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = summary.scored_path
        if summary.scored_file is None and not mc4_io.is_parquet(path):
            return (), False, None
        try:
            with mc4_io.open_binary(path) as raw:
                schema = pq.ParquetFile(raw).schema_arrow
        except (pa.ArrowException, OSError, ValueError):
            if summary.scored_file is not None:
                raise  # our own phase-1 file: an error, not a dead letter (see below)
            return (), False, None  # pre-scored and unreadable: phase 1 dead-lettered it
        carried = layouts.carried_columns(schema)
        if not carried:
            return (), False, None
        return tuple(carried), layouts.is_json_extras(schema), \
            layouts.sampled_schema(schema, writers._parquet_types(), writers.PARQUET_COLUMNS)

    def _decide_rows(self, summary: ShardSummary, plan, result, streams, shard, emit) -> None:
        batch = []
        for kind, doc in iter_records(summary.scored_path, self.max_doc_bytes, SCORE_COLUMNS,
                                      carried=self._carried[0]):
            if kind != "doc" or scored_row_problem(doc) is not None:
                continue  # counted and dead-lettered in phase 1
            doc["perplexity"] = float(doc["perplexity"])
            batch.append(doc)
            if len(batch) >= self.batch_size:
                self._decide(batch, plan, result, streams, shard, emit)
                batch = []
        if batch:
            self._decide(batch, plan, result, streams, shard, emit)

    def _decide_scored_file(self, path: str, plan, result, streams, shard, emit) -> None:
        """Our own phase-1 parquet, one row group (<= ROW_GROUP_ROWS rows) at a time. A file
        that cannot be read is an error (Beam retries the bundle), not a dead letter: phase 1
        wrote it moments ago, and the statistics would not add up without it."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        with mc4_io.open_binary(path) as raw:
            scored = pq.ParquetFile(raw)
            names = scored.schema_arrow.names
            columns = list(SCORED_FILE_COLUMNS) + (["document_key"] if "document_key" in names else []) \
                + list(self._carried[0])
            for group in range(scored.num_row_groups):
                table = scored.read_row_group(group, columns=columns)
                splits = table.column("split").unique().to_pylist()
                for split in sorted(splits):
                    part = table if len(splits) == 1 else \
                        table.filter(pc.equal(table.column("split"), split))
                    self._decide_table(part, split, plan, result, streams, shard, emit)

    def _decide_table(self, table, split: str, plan, result, streams, shard, emit) -> None:
        texts = table.column("text").to_pylist()
        urls = table.column("url").to_pylist()
        perplexity = table.column("perplexity").to_pylist()
        n_tokens = table.column("n_tokens").to_pylist()
        docs = [{"text": t, "url": u, "perplexity": p, "n_tokens": n}
                for t, u, p, n in zip(texts, urls, perplexity, n_tokens)]
        if "document_key" in table.column_names:
            for doc, key in zip(docs, table.column("document_key").to_pylist()):
                doc["document_key"] = key
        kept, partial, uniforms = decide_with_uniforms(docs, plan)
        result.splits.setdefault(split, SplitAccumulator()).merge(partial)
        if result.report is not None:
            result.report.add(docs, kept, split, uniforms)
        chosen = np.flatnonzero(kept)
        if emit and len(chosen):
            carried, json_extras, schema = self._carried
            json_gz, parquet = self._streams(streams, result, shard, split, schema)
            timestamps = table.column("timestamp").to_pylist()
            if carried:
                kept_rows = table.take(chosen)
                values = {c: kept_rows.column(c).to_pylist() for c in carried}
                json_gz.write_records([
                    layouts.json_record(texts[i], timestamps[i], urls[i],
                                        {c: values[c][n] for c in carried}, json_extras)
                    for n, i in enumerate(chosen.tolist())])
                parquet.write_table(kept_rows)
            else:
                json_gz.write_columns([texts[i] for i in chosen.tolist()],
                                      [timestamps[i] for i in chosen.tolist()],
                                      [urls[i] for i in chosen.tolist()])
                parquet.write_table(table.take(chosen))
        self._count(len(docs), len(chosen))

    def _streams(self, streams: dict, result: ShardSample, shard, split: str, schema=None):
        if split not in streams:
            json_name = shard.json_gz_name(self.prefix, split, self.method)
            parquet_name = shard.parquet_name(split)
            streams[split] = (writers.JsonGzStream(writers.join(self.out_dir, json_name)),
                              writers.ParquetStream(writers.join(self.out_dir, parquet_name),
                                                    schema=schema))
            result.files[split] = {"json_gz": json_name, "parquet": parquet_name}
        return streams[split]

    def _decide(self, batch, plan, result: ShardSample, streams, shard, emit: bool) -> None:
        groups: dict[str, list[dict]] = {}
        for doc in batch:
            groups.setdefault(doc["split"], []).append(doc)
        n_kept = 0
        for split, docs in sorted(groups.items()):
            kept, partial, uniforms = decide_with_uniforms(docs, plan)
            result.splits.setdefault(split, SplitAccumulator()).merge(partial)
            if result.report is not None:
                result.report.add(docs, kept, split, uniforms)
            n_kept += int(kept.sum())
            if emit and kept.any():
                carried, json_extras, schema = self._carried
                json_gz, parquet = self._streams(streams, result, shard, split, schema)
                chosen = [docs[i] for i in np.flatnonzero(kept).tolist()]
                if carried:  # ids and extras of a pre-scored parquet, as `run` writes them
                    json_gz.write_records([layouts.json_record(
                        d["text"], d.get("timestamp"), d.get("url"), d["carried"], json_extras)
                        for d in chosen])
                    parquet.write([{**d, **d["carried"]} for d in chosen])
                else:
                    json_gz.write(chosen)
                    parquet.write(chosen)
        self._count(len(batch), n_kept)

    def _count(self, decided: int, kept: int) -> None:
        self.kept_counter.inc(kept)
        self.dropped_counter.inc(decided - kept)
        progress.add(kept=kept, decided=decided)
        worker_watchdog.hold_for_test("decided")
