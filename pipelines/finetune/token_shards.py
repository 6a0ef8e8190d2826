"""Packed token shards: the format `prepare-finetune` writes and the GPT-J trainer reads.

A tokens directory (local path or any fsspec URL such as gs://bucket/tokens) holds

    manifest.json
    train/tokens-00000.bin ... train/tokens-tail.bin
    validation/tokens-00000.bin ...

Each `.bin` is a headerless array of fixed-size windows of token ids (`window` ids each,
default 2049 = seq_len 2048 + 1 for the shifted target), little-endian `uint16` (`uint32` when
the vocabulary does not fit 16 bits), row-major. Window `i` of a shard starts at byte
`i * window * itemsize`, so any window is one seek + one read, from local disk (memory-mapped)
or from gs:// (ranged read), with no index to load.

manifest.json records, per split, the shard list (relative path, windows, bytes, sha256) and the
token accounting: `document_tokens` (sum over documents of their tokens + 1 EOS) equals
`tokens` (windows * window) plus `dropped_tail_tokens` (the last partial window, < window).
`open_split` checks it all before training starts, so a missing, truncated or corrupt shard
or an inconsistent manifest is a clear `TokenShardError`, not a crash mid-run.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Iterable

import fsspec
import numpy as np

FORMAT = "ppsample-gpt-tokens/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
DEFAULT_WINDOW = 2049


class TokenShardError(ValueError):
    """The tokens directory cannot be trained on (missing/corrupt shard, bad manifest)."""


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def join(base: str, *parts: str) -> str:
    """Join path parts for local paths and URLs alike (fsspec URLs use '/')."""
    if "://" in base:
        return posixpath.join(base.rstrip("/"), *parts)
    return str(posixpath.join(base, *parts))


def pack_windows(tokens: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a flat token stream into full windows; returns (windows [n, window], remainder)."""
    n = len(tokens) // window
    return tokens[: n * window].reshape(n, window), tokens[n * window:]


@dataclass
class ShardWriter:
    """Streams windows into one shard file, hashing as it goes (one pass, bounded memory)."""

    url: str
    relative_path: str
    window: int
    dtype: np.dtype
    windows: int = 0
    _sha: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    _file: object = None

    def __post_init__(self):
        fs, path = fsspec.core.url_to_fs(self.url)
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        self._file = fs.open(path, "wb")

    def write(self, windows: np.ndarray) -> None:
        if windows.size == 0:
            return
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(f"expected windows of {self.window} ids, got shape {windows.shape}")
        data = np.ascontiguousarray(windows, dtype=self.dtype).tobytes()
        self._sha.update(data)
        self._file.write(data)
        self.windows += windows.shape[0]

    def close(self) -> dict:
        self._file.close()
        return {"path": self.relative_path, "windows": self.windows,
                "bytes": self.windows * self.window * self.dtype.itemsize,
                "sha256": self._sha.hexdigest()}


def write_manifest(tokens_dir: str, manifest: dict) -> None:
    fs, path = fsspec.core.url_to_fs(join(tokens_dir, MANIFEST))
    fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    with fs.open(path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


def read_manifest(tokens_dir: str) -> dict:
    url = join(tokens_dir, MANIFEST)
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise TokenShardError(f"{url} not found: is {tokens_dir} the output of `ppsample prepare-finetune`?")
    try:
        with fs.open(path, "r") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenShardError(f"{url} is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise TokenShardError(f"{url}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def _check_split_accounting(url: str, split: str, info: dict, window: int) -> None:
    shards = info.get("shards")
    if not isinstance(shards, list):
        raise TokenShardError(f"{url}: split {split!r} has no shard list")
    total = sum(int(s["windows"]) for s in shards)
    if total != info["windows"]:
        raise TokenShardError(f"{url}: split {split!r} lists {info['windows']} windows but its shards "
                              f"hold {total}")
    if info["tokens"] != info["windows"] * window:
        raise TokenShardError(f"{url}: split {split!r}: tokens {info['tokens']} != windows "
                              f"{info['windows']} x window {window}")
    if info["document_tokens"] != info["tokens"] + info["dropped_tail_tokens"]:
        raise TokenShardError(f"{url}: split {split!r}: document_tokens {info['document_tokens']} != "
                              f"tokens {info['tokens']} + dropped_tail_tokens {info['dropped_tail_tokens']}")


def _sha256_of(fs, path: str, chunk: int = 1 << 24) -> str:
    sha = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
    return sha.hexdigest()


class TokenSplit:
    """Random access to the windows of one split: `split[i]`, `split.take(indices)`."""

    def __init__(self, tokens_dir: str, split: str, manifest: dict):
        self.tokens_dir = tokens_dir
        self.split = split
        self.manifest = manifest
        self.window = int(manifest["window"])
        self.dtype = np.dtype(manifest["dtype"])
        info = manifest["splits"][split]
        self.shards = [s for s in info["shards"] if int(s["windows"]) > 0]
        counts = np.array([int(s["windows"]) for s in self.shards], dtype=np.int64)
        # starts[k] = global index of shard k's first window; searchsorted maps index -> shard
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._maps: dict[int, np.ndarray] = {}
        self._fs, _ = fsspec.core.url_to_fs(join(tokens_dir, MANIFEST))
        self._local = "://" not in tokens_dir or tokens_dir.startswith("file://")

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def tokens(self) -> int:
        return len(self) * self.window

    def _shard_path(self, k: int) -> str:
        return fsspec.core.url_to_fs(join(self.tokens_dir, self.shards[k]["path"]))[1]

    def _read(self, k: int, row: int) -> np.ndarray:
        if self._local:
            if k not in self._maps:  # memory-map lazily: the OS page cache does the rest
                self._maps[k] = np.memmap(self._shard_path(k), dtype=self.dtype, mode="r").reshape(
                    -1, self.window)
            return self._maps[k][row]
        nbytes = self.window * self.dtype.itemsize
        with self._fs.open(self._shard_path(k), "rb") as f:
            f.seek(row * nbytes)
            return np.frombuffer(f.read(nbytes), dtype=self.dtype)

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return np.asarray(self._read(k, index - int(self._starts[k])))

    def take(self, indices: Iterable[int]) -> np.ndarray:
        """Windows at `indices` as int32 [len(indices), window] (the trainer's batch dtype)."""
        indices = [int(i) for i in indices]
        out = np.empty((len(indices), self.window), dtype=np.int32)
        if self._local or not indices:
            for row, index in enumerate(indices):
                out[row] = self[index]
            return out
        # remote: one concurrent batch of ranged reads (gcsfs runs cat_ranges in parallel)
        nbytes = self.window * self.dtype.itemsize
        paths, starts = [], []
        for index in indices:
            if not 0 <= index < len(self):
                raise IndexError(f"window {index} out of range [0, {len(self)})")
            k = int(np.searchsorted(self._starts, index, side="right")) - 1
            paths.append(self._shard_path(k))
            starts.append((index - int(self._starts[k])) * nbytes)
        blocks = self._fs.cat_ranges(paths, starts, [start + nbytes for start in starts])
        for row, block in enumerate(blocks):
            if isinstance(block, Exception) or len(block) != nbytes:
                raise TokenShardError(f"short read of window {indices[row]} from {paths[row]}: {block!r:.200}")
            out[row] = np.frombuffer(block, dtype=self.dtype)
        return out


def open_split(tokens_dir: str, split: str, verify: str = "full") -> TokenSplit:
    """Open one split after checking the manifest and every shard.

    verify: "full" checks existence, size and sha256 of every shard; "size" skips the hashes
    (for very large remote datasets whose shards were already verified once).
    """
    if verify not in ("full", "size"):
        raise ValueError(f"verify must be 'full' or 'size', got {verify!r}")
    manifest = read_manifest(tokens_dir)
    url = join(tokens_dir, MANIFEST)
    try:
        window = int(manifest["window"])
        dtype = np.dtype(manifest["dtype"])
        info = manifest["splits"][split]
        _check_split_accounting(url, split, info, window)
    except KeyError as e:
        raise TokenShardError(f"{url}: missing field {e} (split {split!r})") from e
    if info["windows"] == 0:
        raise TokenShardError(f"{url}: split {split!r} has no complete window of {window} tokens "
                              f"({info['document_tokens']} tokens from {info.get('documents', '?')} documents)")
    fs, _ = fsspec.core.url_to_fs(url)
    for shard in info["shards"]:
        shard_url = join(tokens_dir, shard["path"])
        path = fsspec.core.url_to_fs(shard_url)[1]
        if not fs.exists(path):
            raise TokenShardError(f"shard {shard_url} listed in {url} is missing")
        expected = int(shard["windows"]) * window * dtype.itemsize
        size = fs.size(path)
        if size != expected or int(shard.get("bytes", expected)) != expected:
            raise TokenShardError(f"shard {shard_url} has {size} bytes, manifest expects {expected} "
                                  f"({shard['windows']} windows of {window} x {dtype.itemsize} bytes)")
        if verify == "full" and _sha256_of(fs, path) != shard["sha256"]:
            raise TokenShardError(f"shard {shard_url} is corrupt: sha256 differs from {url}")
    return TokenSplit(tokens_dir, split, manifest)
