"""A local multi-process run gives each worker about the same bytes to read
(input_shards.balanced_for_workers): FnApiRunner splits a stage's input statically, element i
to worker i % N, so the order of the shards decides each worker's load; the sorted order of a
corpus whose files alternate in size gave one worker every large file."""
from __future__ import annotations

import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import options as opts
from pipelines.corpus import data_path
from pipelines.corpus.input_shards import balanced_for_workers, plan_input_shards


def _files(tmp_path, sizes):
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"c4-es.tfrecord-{i:05d}-of-{len(sizes):05d}.json.gz"
        path.write_bytes(b"x" * size)
        paths.append(str(path))
    return paths


def _loads(order, workers):
    load = [0] * workers
    for i, shard in enumerate(order):
        load[i % workers] += os.path.getsize(shard.path)
    return load


def test_alternating_sizes_are_spread_evenly(tmp_path):
    sizes = [1460, 1370] * 4  # the benchmark corpus: every other file 6 % larger
    shards = plan_input_shards(_files(tmp_path, sizes))
    assert max(_loads(shards, 2)) - min(_loads(shards, 2)) == 4 * 90  # sorted: one gets all large
    order = balanced_for_workers(shards, 2)
    assert sorted(s.index for s in order) == list(range(8))
    assert _loads(order, 2) == [2830 * 2, 2830 * 2]


@pytest.mark.parametrize("workers,sizes", [(3, [900, 100, 800, 200, 700, 300, 50]),
                                           (4, [5, 1000, 7, 999, 3, 998, 2, 997, 1, 996, 4]),
                                           (2, [10, 1000, 20])])
def test_each_worker_keeps_its_round_robin_count_and_at_most_one_shard_more(tmp_path, workers,
                                                                             sizes):
    shards = plan_input_shards(_files(tmp_path, sizes))
    order = balanced_for_workers(shards, workers)
    assert sorted(s.index for s in order) == list(range(len(sizes)))
    load = _loads(order, workers)
    assert max(load) - min(load) <= max(sizes)
    assert max(load) <= max(_loads(shards, workers))
    # the lightest worker gets no fewer shards than round-robin gives the last one
    counts = [len(order[w::workers]) for w in range(workers)]
    assert counts == [len(shards[w::workers]) for w in range(workers)]


def test_remote_paths_and_one_worker_keep_the_sorted_order(tmp_path):
    local = plan_input_shards(_files(tmp_path, [10, 1000, 20, 30]))
    assert balanced_for_workers(local, 1) == local
    remote = plan_input_shards([f"gs://b/c4-es.tfrecord-{i:05d}-of-00004.json.gz" for i in range(4)])
    assert balanced_for_workers(remote, 2) == remote


def test_the_worker_count_is_the_local_runners():
    assert opts.local_workers(PipelineOptions([])) == 1
    assert opts.local_workers(PipelineOptions(["--direct_num_workers", "3"])) == 3
    assert opts.local_workers(PipelineOptions(["--direct_num_workers", "0"])) == os.cpu_count()
    assert opts.local_workers(PipelineOptions(["--runner", "DataflowRunner",
                                               "--direct_num_workers", "3"])) == 1


def test_the_runner_gives_each_worker_process_the_planned_shards(tmp_path):
    """The real FnApiRunner with 2 worker processes: the shards each process read are those
    the order planned for one worker (positions i % 2), so their bytes are balanced."""
    sizes = [1460, 1370] * 4
    files = _files(tmp_path, sizes)
    marks = tmp_path / "marks"
    marks.mkdir()
    options = PipelineOptions(["--runner", "FnApiRunner", "--direct_running_mode",
                               "multi_processing", "--direct_num_workers", "2"])
    folder = str(marks)
    # a lambda: pickled by value, so the worker processes need not import this test module
    record_pid = (lambda shard: __import__("pathlib").Path(folder, __import__("os").path.basename(
        shard.path) + ".pid").write_text(str(__import__("os").getpid())))
    with beam.Pipeline(options=options) as p:
        _ = data_path.input_shards(p, files) | beam.Map(record_pid)
    by_pid = {}
    for path in files:
        pid = (marks / (os.path.basename(path) + ".pid")).read_text()
        by_pid.setdefault(pid, []).append(os.path.getsize(path))
    assert sorted(len(v) for v in by_pid.values()) == [4, 4], by_pid
    assert [sum(v) for v in by_pid.values()] == [2830 * 2, 2830 * 2], by_pid
