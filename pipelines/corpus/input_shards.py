"""Input shards and the names of everything written for them.

The data path works per input shard: shard k is read, scored and written as one scored parquet
named after it, then read again and written as its own sampled shard(s) and dead letters. All
names are functions of the sorted input list alone, so a retried bundle rewrites the same file
and the output layout does not depend on the runner or the worker count.

Sampled shards are numbered per split, in BERTIN's layout, by the input shard's position among
the input files of the same split (the split of a file comes from its name, as mC4 names them,
or from a split folder, as FineWeb-2's `train/` and `test/`; mc4_io.split_of):
mC4-es's `c4-es.tfrecord-00041-of-02048.json.gz` becomes
`mc4-es-train-gaussian-shard-0042-of-2048.json.gz`. A parquet input with a `split` column
can hold rows of the other split; those go to a shard of that split carrying the file's own
split as a suffix (`...-shard-0003-of-0010-train.json.gz`), so names never collide.
"""
from __future__ import annotations

import os
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


def _folders(path: str) -> list[str]:
    """The folder names above a file, innermost last (`gs://b/x/train/f` -> [..., "x", "train"])."""
    return [part for part in path.split("://", 1)[-1].split("/")[:-1] if part]


def output_stems(files: list[str]) -> dict[str, str]:
    """Input file -> the stem its scored shard and dead letters are named by.

    The file's stem, unchanged for mC4 names; a file in a split folder keeps that folder
    (`test/000_00000.parquet` -> `test__000_00000`, so its scored shard still names its split);
    same-named files in different folders take as many of their folders as tell them apart
    (`a/x.json.gz`, `b/x.json.gz` -> `a__x`, `b__x`). A function of the input list alone."""
    join = mc4_io.STEM_JOIN
    stems = {}
    for path in files:
        split = mc4_io.folder_split(path)
        stems[path] = f"{split}{join}{stem_of(path)}" if split else stem_of(path)
    by_stem: dict[str, list[str]] = {}
    for path, stem in stems.items():
        by_stem.setdefault(stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) < 2:
            continue
        depth = max(len(_folders(p)) for p in paths)
        for levels in range(1, depth + 1):
            named = {p: join.join([*_folders(p)[-levels:], stem_of(p)]) for p in paths}
            if len(set(named.values())) == len(paths):
                stems.update(named)
                break
    return stems


def plan_input_shards(files: list[str]) -> list[InputShard]:
    """The input files (sorted, as expand_inputs lists them) as shards. Two inputs whose output
    names still collide (`a/x__y.json` and `a/x/y.json`) are a clear error, before any work."""
    files = sorted(files)
    stems = output_stems(files)
    by_stem: dict[str, str] = {}
    for path in files:
        if stems[path] in by_stem:
            raise ValueError(f"two input files would write the same output shard {stems[path]!r}: "
                             f"{by_stem[stems[path]]} and {path}; rename one or give one folder")
        by_stem[stems[path]] = path
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(mc4_io.split_of(path), []).append(path)
    shards = []
    for index, path in enumerate(files):
        split = mc4_io.split_of(path)
        group = groups[split]
        shards.append(InputShard(path=path, stem=stems[path], split=split, index=index,
                                 count=len(files), group_index=group.index(path),
                                 group_size=len(group)))
    return shards


def balanced_for_workers(shards: list[InputShard], workers: int) -> list[InputShard]:
    """The shards in the order that gives each of a local run's `workers` worker processes about
    the same bytes to read. FnApiRunner splits a stage's input statically, element i to worker
    i % workers (its _GroupingBuffer.partition, in the order the elements were created), and
    each worker reads its shards one after the other: in sorted order, files of alternating
    sizes gave one worker all the large ones (6 % more bytes, ~2 s of one idle core at the
    phase barrier on 100k documents). Counts per worker stay as round-robin makes them; each
    round of `workers` shards, largest first, goes to the least-loaded workers (imbalance at
    most one shard's size). Only the order changes: every output name is a function of the
    sorted input list. Sizes are those of local files; with any other path, the sorted order."""
    if workers < 2 or len(shards) <= 1 or any("://" in s.path for s in shards):
        return list(shards)
    try:
        sizes = {s.path: os.path.getsize(s.path) for s in shards}
    except OSError:  # a file that cannot be listed: its reader makes it a dead letter
        return list(shards)
    largest_first = sorted(shards, key=lambda s: (-sizes[s.path], s.index))
    load = [0] * workers
    rounds = []  # per round of `workers` shards: [(worker, shard)]
    for start in range(0, len(largest_first), workers):
        lightest = sorted(range(workers), key=lambda w: (load[w], w))
        chosen = list(zip(lightest, largest_first[start:start + workers]))
        for worker, shard in chosen:
            load[worker] += sizes[shard.path]
        rounds.append(chosen)
    # A last, partial round reaches positions (residues) 0..r-1 only: its workers take them.
    last = [worker for worker, _ in rounds[-1]]
    residue = {w: r for r, w in enumerate(last + [w for w in range(workers) if w not in last])}
    order = []
    for chosen in rounds:
        order += [shard for _, shard in sorted(chosen, key=lambda ws: residue[ws[0]])]
    return order
