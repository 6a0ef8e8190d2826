"""Token shards reader checks and the step-indexed data loader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lm_models.gptj.data_loader import TrainBatches, epoch_permutation, eval_batches
from pipelines.errors import RefusedInputError
from pipelines.finetune import token_shards as ts

WINDOW = 17


def _write_tokens_dir(root: Path, rng: np.random.Generator, shard_windows=(5, 7, 3), val_windows=(4,)) -> dict:
    """A tokens directory written with the real ShardWriter/manifest code: random ids."""
    splits = {}
    for split, counts in (("train", shard_windows), ("validation", val_windows)):
        shards = []
        for i, n in enumerate(counts):
            rel = f"{split}/tokens-{i:05d}.bin"
            writer = ts.ShardWriter(str(root / rel), rel, WINDOW, np.dtype("<u2"))
            writer.write(rng.integers(0, 50257, size=(n, WINDOW)))
            shards.append(writer.close())
        total = sum(counts)
        splits[split] = {"documents": total, "document_tokens": total * WINDOW + 3, "windows": total,
                         "tokens": total * WINDOW, "dropped_tail_tokens": 3, "rejected_documents": {},
                         "shards": shards}
    manifest = {"format": ts.FORMAT, "window": WINDOW, "dtype": "<u2", "eos_id": 50256, "vocab_size": 50257,
                "splits": splits}
    ts.write_manifest(str(root), manifest)
    return manifest


@pytest.fixture
def tokens_dir(tmp_path) -> Path:
    _write_tokens_dir(tmp_path / "tok", np.random.default_rng(0))
    return tmp_path / "tok"


def test_random_access_matches_the_bytes_written(tokens_dir):
    data = ts.open_split(str(tokens_dir), "train")
    raw = np.concatenate([np.fromfile(tokens_dir / f"train/tokens-{i:05d}.bin", "<u2").reshape(-1, WINDOW)
                          for i in range(3)])
    assert len(data) == 15 == len(raw)
    for i in (0, 4, 5, 11, 12, 14):  # first/last window of each shard
        assert np.array_equal(data[i], raw[i])
    assert data.take([14, 0, 7]).dtype == np.int32
    assert np.array_equal(data.take([14, 0, 7]), raw[[14, 0, 7]])
    with pytest.raises(IndexError):
        data[15]


def test_fsspec_remote_path_reads_the_same_windows(tokens_dir):
    """The non-memmap (ranged read) path used for gs://, exercised with fsspec's memory filesystem."""
    import fsspec
    fs = fsspec.filesystem("memory")
    for path in tokens_dir.rglob("*"):
        if path.is_file():
            fs.pipe(f"/tok/{path.relative_to(tokens_dir)}", path.read_bytes())
    remote = ts.open_split("memory://tok", "train")
    local = ts.open_split(str(tokens_dir), "train")
    assert not remote._local
    assert np.array_equal(remote.take(range(15)), local.take(range(15)))


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "train/tokens-00001.bin").unlink(), "tokens-00001.bin .* is missing"),
    (lambda d: (d / "train/tokens-00002.bin").write_bytes((d / "train/tokens-00002.bin").read_bytes()[:-2]),
     "has 100 bytes, manifest expects 102"),
    (lambda d: _flip_one_byte(d / "train/tokens-00000.bin"), "tokens-00000.bin is corrupt: sha256"),
    (lambda d: _edit_manifest(d, lambda m: m["splits"]["train"].update(windows=16)),
     "lists 16 windows but its shards hold 15"),
    (lambda d: _edit_manifest(d, lambda m: m["splits"]["train"].update(dropped_tail_tokens=0)),
     "document_tokens .* != tokens"),
    (lambda d: _edit_manifest(d, lambda m: m.update(format="other/1")), "format 'other/1'"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "manifest.json").unlink(), "manifest.json not found"),
])
def test_damaged_tokens_dir_is_a_clear_error(tokens_dir, damage, message):
    damage(tokens_dir)
    with pytest.raises(RefusedInputError, match=message):
        ts.open_split(str(tokens_dir), "train")


def _drop(mapping: dict, key: str) -> None:
    del mapping[key]


@pytest.mark.parametrize("edit,message", [
    (lambda m: _drop(m, "vocab_size"), "missing field 'vocab_size'"),
    (lambda m: _drop(m["splits"]["train"]["shards"][1], "sha256"), "missing field 'sha256' .*shard 1"),
    (lambda m: _drop(m["splits"]["train"], "windows"), "missing field 'windows'"),
    (lambda m: m["splits"]["train"].update(windows="15"), "windows must be an integer, got '15'"),
    (lambda m: m["splits"]["train"]["shards"][0].update(windows=5.0), "windows must be an integer"),
    (lambda m: m.update(window="17"), "window must be an integer"),
    (lambda m: m.update(eos_id=50257), "eos_id 50257 is outside the vocabulary of 50257"),
    (lambda m: m.update(vocab_size=70000), "does not fit dtype <u2"),
    (lambda m: m["splits"]["train"]["shards"][0].update(path="../outside.bin"), "not a relative path inside"),
    (lambda m: m["splits"]["train"]["shards"][0].update(path="train/../../outside.bin"), "not a relative path"),
    (lambda m: m["splits"]["train"]["shards"][0].update(path="/etc/passwd"), "not a relative path"),
    (lambda m: m["splits"]["train"]["shards"][0].update(path="gs://other/x.bin"), "not a relative path"),
    (lambda m: m["splits"]["train"]["shards"][0].update(path="~/x.bin"), "not a relative path"),
])
def test_inconsistent_manifest_is_a_clear_error_not_a_traceback(tokens_dir, edit, message):
    _edit_manifest(tokens_dir, edit)
    for verify in ("full", "size"):
        with pytest.raises(RefusedInputError, match=message):
            ts.open_split(str(tokens_dir), "train", verify=verify)


def test_escaping_shard_path_is_refused_even_when_the_file_matches(tokens_dir):
    """A manifest pointing outside the tokens folder at a file with the right size and hash."""
    outside = tokens_dir.parent / "secret.bin"
    outside.write_bytes((tokens_dir / "train/tokens-00000.bin").read_bytes())
    _edit_manifest(tokens_dir, lambda m: m["splits"]["train"]["shards"][0].update(path="../secret.bin"))
    with pytest.raises(RefusedInputError, match="'../secret.bin' is not a relative path"):
        ts.open_split(str(tokens_dir), "train")


def test_token_ids_outside_the_vocabulary_fail_full_verification(tmp_path):
    """Consistent manifest (hashes match the bytes) but ids >= vocab_size: refused before training."""
    root = tmp_path / "tok"
    _write_tokens_dir(root, np.random.default_rng(0))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.update(vocab_size=1000, eos_id=999)       # the data holds ids up to ~50256
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RefusedInputError, match=r"tokens-00000.bin holds token id \d+, outside the manifest's vocab_size 1000"):
        ts.open_split(str(root), "train")
    assert len(ts.open_split(str(root), "train", verify="size")) == 15  # size-only does not read ids


def test_size_only_verification_skips_hashes_but_not_sizes(tokens_dir):
    _flip_one_byte(tokens_dir / "train/tokens-00000.bin")
    assert len(ts.open_split(str(tokens_dir), "train", verify="size")) == 15
    (tokens_dir / "train/tokens-00001.bin").unlink()
    with pytest.raises(RefusedInputError, match="missing"):
        ts.open_split(str(tokens_dir), "train", verify="size")


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[7] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


class ArraySource:
    def __init__(self, n: int):
        self.rows = np.arange(n, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32)

    def __len__(self):
        return len(self.rows)

    def take(self, indices):
        return self.rows[np.asarray(indices, dtype=np.int64)]


def test_each_epoch_visits_every_window_once_in_a_seeded_order():
    loader = TrainBatches(ArraySource(10), global_batch=4, seed=3)
    seen = np.concatenate([loader.batch(step)[:, 0] for step in range(10)])  # 40 rows = 4 epochs
    for epoch in range(4):
        assert sorted(seen[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:20])  # reshuffled each epoch
    assert not np.array_equal(seen[:10], np.arange(10))
    other_seed = np.concatenate([TrainBatches(ArraySource(10), 4, seed=4).batch(s)[:, 0] for s in range(3)])
    assert not np.array_equal(seen[:12], other_seed)


def test_batch_depends_only_on_step():
    a = TrainBatches(ArraySource(23), global_batch=6, seed=0)
    b = TrainBatches(ArraySource(23), global_batch=6, seed=0)
    for _ in range(5):
        a.batch(0)  # touching other steps changes nothing
    assert np.array_equal(a.batch(17), b.batch(17))
    assert [s for s, _ in a.iterate(3, 9)] == list(range(3, 9))
    for step, batch in a.iterate(5, 12, prefetch=3):
        assert np.array_equal(batch, b.batch(step))


def test_hosts_read_disjoint_slices_of_the_same_global_batch():
    full = TrainBatches(ArraySource(50), global_batch=8, seed=1)
    hosts = [TrainBatches(ArraySource(50), global_batch=8, seed=1, process_index=i, process_count=4)
             for i in range(4)]
    for step in (0, 6, 13):
        assert np.array_equal(np.concatenate([h.batch(step) for h in hosts]), full.batch(step))
    with pytest.raises(ValueError, match="multiple of the number of hosts"):
        TrainBatches(ArraySource(50), global_batch=6, seed=1, process_index=0, process_count=4)


def test_epoch_permutation_is_a_permutation():
    perm = epoch_permutation(0, 5, 1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, epoch_permutation(0, 6, 1000))


def test_eval_batches_cover_the_split_in_order():
    batches = list(eval_batches(ArraySource(10), global_batch=4))
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    small = list(eval_batches(ArraySource(3), global_batch=4))
    assert [b[:, 0].tolist() for b in small] == [[0, 1, 2, 0]]
    host1 = list(eval_batches(ArraySource(10), global_batch=4, process_index=1, process_count=2))
    assert [b[:, 0].tolist() for b in host1] == [[2, 3], [6, 7]]


def test_metrics_log_drops_rows_past_the_resumed_step_locally_and_remotely(tmp_path):
    from lm_models.gptj.train_loop import MetricsLog
    import fsspec
    for workdir in (str(tmp_path), "memory://metrics-run"):
        log = MetricsLog(workdir, keep_through_step=0)
        for step in range(1, 8):
            log.write({"step": step, "loss": float(step)})
        log.write({"step": 5, "val_loss": 1.0})
        log.close()  # as if killed after step 7 with the last checkpoint at step 5
        resumed = MetricsLog(workdir, keep_through_step=5)
        resumed.write({"step": 6, "loss": 60.0})
        resumed.close()
        with fsspec.open(f"{workdir}/metrics.jsonl", "r") as f:
            rows = [json.loads(line) for line in f]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 5, 6]
        assert rows[-1]["loss"] == 60.0


def test_checkpoint_clock_saves_on_step_cadence_or_after_the_time_budget(monkeypatch):
    """gptj-6b-v3-8 checkpoints every 30 minutes of training, so a preemption loses at most that."""
    from lm_models.gptj import train_loop
    now = [1000.0]
    monkeypatch.setattr(train_loop.time, "monotonic", lambda: now[0])
    clock = train_loop.CheckpointClock(every=500, minutes=30)
    assert not clock.due(1)
    now[0] += 29 * 60
    assert not clock.due(2)
    now[0] += 60
    assert clock.due(3)                     # 30 minutes since the start, far from step 500
    clock.saved()
    now[0] += 60
    assert not clock.due(4) and clock.due(500)
    untimed = train_loop.CheckpointClock(every=5, minutes=0)
    now[0] += 10**6
    assert not untimed.due(4) and untimed.due(10)
