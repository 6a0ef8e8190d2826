"""Batches of packed windows for GPT-J training, as a pure function of the step.

The loader keeps no iterator state: the rows of step `s` are positions
`s * global_batch ... (s + 1) * global_batch - 1` of an endless stream that visits every window
once per epoch in a seeded permutation (`epoch_permutation(seed, epoch, n)`). Resuming at step
`s` therefore needs only `s`, and every host computes the same global batch and reads just its
own contiguous slice of rows (`process_index` of `process_count`); the trainer hands that slice
to `jax.make_array_from_process_local_data`. The hosts' slices are disjoint and together make the
global batch, so the step's mean loss is the same whichever devices each slice lands on.

A window source is anything with `len(source)` and `source.take(indices) -> int32 [k, window]`
(pipelines.finetune.token_shards.TokenSplit; a numpy wrapper in tests). lm_models never imports pipelines.
"""
from __future__ import annotations

import queue
import threading
from functools import lru_cache
from typing import Iterator, Protocol

import numpy as np


class WindowSource(Protocol):
    def __len__(self) -> int: ...

    def take(self, indices) -> np.ndarray: ...


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the `n` windows (seeded, platform independent)."""
    return np.random.Generator(np.random.PCG64([int(seed), int(epoch)])).permutation(n)


class TrainBatches:
    """`batch(step)` -> this host's int32 [global_batch / process_count, window] rows of step."""

    def __init__(self, source: WindowSource, global_batch: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if len(source) == 0:
            raise ValueError("the training split has no windows")
        if global_batch <= 0 or global_batch % process_count:
            raise ValueError(f"global_batch {global_batch} must be a positive multiple of the "
                             f"number of hosts {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.source = source
        self.global_batch = global_batch
        self.seed = seed
        self.local_batch = global_batch // process_count
        self.process_index = process_index
        self.process_count = process_count

    @property
    def windows(self) -> int:
        return len(self.source)

    def epoch(self, step: int) -> float:
        return step * self.global_batch / self.windows

    def indices(self, step: int) -> np.ndarray:
        """Window indices of this host's rows at `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        first = step * self.global_batch + self.process_index * self.local_batch
        positions = np.arange(first, first + self.local_batch, dtype=np.int64)
        epochs, offsets = np.divmod(positions, self.windows)
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):  # a batch may straddle two epochs
            mask = epochs == epoch
            out[mask] = epoch_permutation(self.seed, int(epoch), self.windows)[offsets[mask]]
        return out

    def batch(self, step: int) -> np.ndarray:
        return self.source.take(self.indices(step))

    def iterate(self, start_step: int, stop_step: int, prefetch: int = 2) -> Iterator[tuple[int, np.ndarray]]:
        """(step, batch) for start_step <= step < stop_step, read `prefetch` steps ahead on a
        background thread (safe: a batch depends on its step only)."""
        if prefetch <= 0:
            for step in range(start_step, stop_step):
                yield step, self.batch(step)
            return
        ready: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def produce():
            for step in range(start_step, stop_step):
                if stop.is_set():
                    return
                try:
                    item = (step, self.batch(step), None)
                except BaseException as e:  # hand read errors to the consumer
                    item = (step, None, e)
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if item[2] is not None:
                    return

        thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
        thread.start()
        try:
            for _ in range(start_step, stop_step):
                step, batch, error = ready.get()
                if error is not None:
                    raise error
                yield step, batch
        finally:
            stop.set()
            thread.join(timeout=5)


def eval_batches(source: WindowSource, global_batch: int, process_index: int = 0,
                 process_count: int = 1, max_batches: int | None = None) -> Iterator[np.ndarray]:
    """This host's rows of the validation batches, windows in stored order.

    Uses every full global batch (the last partial one is left out so each window counts once);
    a split smaller than one batch is repeated to fill it, so small validation sets still work.
    """
    n = len(source)
    if n == 0:
        return
    local = global_batch // process_count
    full = n // global_batch
    batches = full if full else 1
    if max_batches is not None:
        batches = min(batches, max_batches)
    for b in range(batches):
        first = b * global_batch + process_index * local
        yield source.take(np.arange(first, first + local, dtype=np.int64) % n)
