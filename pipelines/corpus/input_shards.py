"""Input shards and the names of everything written for them.

The data path works per input shard: shard k is read, scored and written as one scored parquet
named after it, then read again and written as its own sampled shard(s) and dead letters. All
names are functions of the sorted input list alone, so a retried bundle rewrites the same file
and the output layout does not depend on the runner or the worker count.

Sampled shards are numbered per split, in BERTIN's layout, by the input shard's position among
the input files of the same split (the split of a file comes from its name, as mC4 names them):
mC4-es's `c4-es.tfrecord-00041-of-02048.json.gz` becomes
`mc4-es-train-50M-gaussian-shard-0042-of-2048.json.gz`. A parquet input with a `split` column
can hold rows of the other split; those go to a shard of that split carrying the file's own
split as a suffix (`...-shard-0003-of-0010-train.json.gz`), so names never collide.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import writers

_SUFFIXES = (".json.gz", ".jsonl.gz", ".jsonl", ".json", ".parquet", ".pq", ".gz")
REJECTED_DIR = "rejected"
SCORED_DIR = "scored"  # where `run` keeps its scored shards (a complete `score` output)


def stem_of(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class InputShard:
    path: str
    stem: str
    split: str  # from the file name
    index: int  # position in the sorted input list
    count: int  # number of input files
    group_index: int  # position among the input files of the same split
    group_size: int

    @property
    def scored_name(self) -> str:
        return f"{self.stem}.parquet"

    @property
    def rejected_name(self) -> str:
        return posixpath.join(REJECTED_DIR, f"{self.stem}.jsonl")

    def json_gz_name(self, prefix: str, split: str, method: str) -> str:
        name = writers.json_shard_name(prefix, split, method, self.group_index, self.group_size)
        return name if split == self.split else name.replace(".json.gz", f"-{self.split}.json.gz")

    def parquet_name(self, split: str) -> str:
        name = writers.parquet_shard_name(split, self.group_index, self.group_size)
        return name if split == self.split else name.replace(".parquet", f"-{self.split}.parquet")


def plan_input_shards(files: list[str]) -> list[InputShard]:
    """The input files (sorted, as expand_inputs lists them) as shards. Two inputs with the same
    name in different folders would write the same output: a clear error, before any work."""
    files = sorted(files)
    by_stem: dict[str, str] = {}
    for path in files:
        stem = stem_of(path)
        if stem in by_stem:
            raise ValueError(f"two input files would write the same output shard {stem!r}: "
                             f"{by_stem[stem]} and {path}; rename one or give one folder")
        by_stem[stem] = path
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(mc4_io.split_of(path), []).append(path)
    shards = []
    for index, path in enumerate(files):
        split = mc4_io.split_of(path)
        group = groups[split]
        shards.append(InputShard(path=path, stem=stem_of(path), split=split, index=index,
                                 count=len(files), group_index=group.index(path),
                                 group_size=len(group)))
    return shards
