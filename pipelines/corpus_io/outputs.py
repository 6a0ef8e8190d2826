"""Beam transforms that write the final files (sampled shards, scored parquet, dead letters,
stats.json) deterministically; the byte-level formats live in pipelines.corpus_io.writers."""
from __future__ import annotations

import apache_beam as beam

from pipelines.corpus_io import dead_letters
from pipelines.corpus_io import writers
from sampling import document_key

_EMPTY = None  # marker value: makes an empty shard still exist (its "of NNNN" is promised)


def _with_all_shards(pcoll_docs, shard_counts, label: str):
    """(shard key, doc) pairs plus one marker per expected shard, grouped by shard."""
    markers = (shard_counts
               | f"{label}Markers" >> beam.FlatMap(
                   lambda kv: [((kv[0], i), _EMPTY) for i in range(kv[1])]))
    return ((pcoll_docs, markers)
            | f"{label}Flatten" >> beam.Flatten()
            | f"{label}Group" >> beam.GroupByKey())


class WriteSampledShards(beam.PTransform):
    """((split, shard), kept document) pairs -> BERTIN json.gz shards and Hub parquet shards per
    split; the shard counts come from the sampling plan (a one-element PCollection).

    Output: (split, {"json_gz": [...], "parquet": [...]}) file lists relative to out_dir."""

    def __init__(self, out_dir: str, prefix: str, method: str):
        super().__init__()
        self.out_dir, self.prefix, self.method = out_dir, prefix, method

    def expand(self, keyed_and_plan):
        keyed, plan = keyed_and_plan
        shard_counts = plan | "ShardCounts" >> beam.FlatMap(lambda p: sorted(p.shard_counts.items()))
        written = (_with_all_shards(keyed, shard_counts, "Sampled")
                   | "WriteShard" >> beam.ParDo(_WriteSampledShard(self.out_dir, self.prefix, self.method),
                                                counts=beam.pvalue.AsDict(shard_counts)))
        return (written
                | "FilesBySplit" >> beam.GroupByKey()
                | "ListFiles" >> beam.MapTuple(lambda split, files: (split, {
                    "json_gz": sorted(f[0] for f in files), "parquet": sorted(f[1] for f in files)})))


class _WriteSampledShard(beam.DoFn):
    def __init__(self, out_dir: str, prefix: str, method: str):
        self.out_dir, self.prefix, self.method = out_dir, prefix, method

    def process(self, element, counts):
        (split, index), docs = element
        n = counts[split]
        docs = sorted((d for d in docs if d is not _EMPTY), key=writers.doc_sort_key)
        json_name = writers.json_shard_name(self.prefix, split, self.method, index, n)
        parquet_name = writers.parquet_shard_name(split, index, n)
        writers.write_bytes(writers.join(self.out_dir, json_name), writers.json_gz_bytes(docs))
        writers.write_bytes(writers.join(self.out_dir, parquet_name), writers.parquet_bytes(docs))
        yield split, (json_name, parquet_name)


class WriteScoredParquet(beam.PTransform):
    """Scored documents -> OUT/part-NNNNN-of-NNNNN.parquet (all splits; a `split` column keeps
    them apart). Output: the sorted list of file names (one element)."""

    COLUMNS = writers.PARQUET_COLUMNS + ("split",)

    def __init__(self, out_dir: str, docs_per_shard: int):
        super().__init__()
        self.out_dir, self.docs_per_shard = out_dir, docs_per_shard

    def expand(self, scored):
        per_page = self.docs_per_shard
        shard_counts = (scored
                        | "Count" >> beam.combiners.Count.Globally()
                        | "NumShards" >> beam.Map(lambda n: ("all", writers.num_shards_for(n, per_page))))
        keyed = scored | "AssignShard" >> beam.Map(_assign_scored_shard,
                                                   counts=beam.pvalue.AsDict(shard_counts))
        return (_with_all_shards(keyed, shard_counts, "Scored")
                | "WriteShard" >> beam.ParDo(_WriteScoredShard(self.out_dir),
                                             counts=beam.pvalue.AsDict(shard_counts))
                | "AllFiles" >> beam.combiners.ToList()
                | "Sort" >> beam.Map(sorted))


class _WriteScoredShard(beam.DoFn):
    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element, counts):
        (_, index), docs = element
        docs = sorted((d for d in docs if d is not _EMPTY), key=writers.doc_sort_key)
        name = writers.parquet_shard_name(None, index, counts["all"])
        writers.write_bytes(writers.join(self.out_dir, name),
                            writers.parquet_bytes(docs, WriteScoredParquet.COLUMNS))
        yield name


def _assign_scored_shard(doc: dict, counts: dict):
    doc = {**doc, "key": document_key(doc.get("url"), doc["text"])}
    return ("all", writers.shard_of(doc["key"], counts["all"])), doc


class WriteRejected(beam.PTransform):
    """Dead letters -> OUT/rejected/rejected-00000-of-00001.jsonl sorted by (source, line);
    the file exists (empty) when nothing was rejected. Output: its relative path."""

    NAME = "rejected/rejected-00000-of-00001.jsonl"

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir

    def expand(self, letters):
        marker = letters.pipeline | "RejectedMarker" >> beam.Create([("rejected", _EMPTY)])
        keyed = letters | "KeyRejected" >> beam.Map(lambda letter: ("rejected", letter))
        return ((keyed, marker)
                | "FlattenRejected" >> beam.Flatten()
                | "GroupRejected" >> beam.GroupByKey()
                | "WriteRejected" >> beam.Map(_write_rejected, self.out_dir))


def _write_rejected(element, out_dir: str) -> str:
    _key, letters = element
    letters = sorted((x for x in letters if x is not _EMPTY), key=dead_letters.sort_key)
    writers.write_bytes(writers.join(out_dir, WriteRejected.NAME), writers.jsonl_bytes(letters))
    return WriteRejected.NAME


def count_per_split(letters_or_docs, label: str, split_of):
    """(split, n) for every split that has at least one element."""
    return (letters_or_docs
            | f"{label}Split" >> beam.Map(lambda x: (split_of(x), 1))
            | f"{label}Sum" >> beam.CombinePerKey(sum))
