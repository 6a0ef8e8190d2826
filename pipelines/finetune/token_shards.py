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
or an inconsistent manifest is a clear `RefusedInputError`, not a crash mid-run.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Iterable

import fsspec
import numpy as np

from lm_models.paths import join  # noqa: F401 - ts.join
# A tokens directory that cannot be trained on (missing/corrupt shard, bad manifest): exit 2.
from pipelines.errors import RefusedInputError

FORMAT = "ppsample-gpt-tokens/1"
MANIFEST = "manifest.json"
DEFAULT_WINDOW = 2049


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


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
        raise RefusedInputError(f"{url} not found: is {tokens_dir} the output of `ppsample prepare-finetune`?")
    try:
        with fs.open(path, "r") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RefusedInputError(f"{url} is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise RefusedInputError(f"{url}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def _require_int(url: str, where: str, value, minimum: int = 0) -> int:
    # bool is an int subclass, and "2198" must not pass as 2198 (it would compare unequal later
    # with a baffling message): only real JSON integers are accepted
    if isinstance(value, bool) or not isinstance(value, int):
        raise RefusedInputError(f"{url}: {where} must be an integer, got {value!r}")
    if value < minimum:
        raise RefusedInputError(f"{url}: {where} must be >= {minimum}, got {value}")
    return value


def _require(url: str, mapping: dict, key: str, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise RefusedInputError(f"{url}: missing field {key!r} ({where})")
    return mapping[key]


def check_shard_path(url: str, path) -> str:
    """A shard path must stay inside the tokens directory: relative, no '..', no scheme."""
    if not isinstance(path, str) or not path:
        raise RefusedInputError(f"{url}: shard path must be a non-empty string, got {path!r}")
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "\\", "~")) or "://" in path or ":" in parts[0] or ".." in parts:
        raise RefusedInputError(f"{url}: shard path {path!r} is not a relative path inside the tokens "
                                f"directory (absolute paths, '..' and URLs are refused)")
    return path


def validate_manifest(url: str, manifest: dict) -> None:
    """Top-level fields every reader relies on, with clear errors instead of KeyError/TypeError."""
    window = _require_int(url, "window", _require(url, manifest, "window", "top level"), 2)
    dtype = _require(url, manifest, "dtype", "top level")
    if dtype not in ("<u2", "<u4"):
        raise RefusedInputError(f"{url}: dtype {dtype!r}, expected '<u2' or '<u4'")
    vocab = _require_int(url, "vocab_size", _require(url, manifest, "vocab_size", "top level"), 1)
    if vocab > np.iinfo(np.dtype(dtype)).max + 1:
        raise RefusedInputError(f"{url}: vocab_size {vocab} does not fit dtype {dtype}")
    eos = _require_int(url, "eos_id", _require(url, manifest, "eos_id", "top level"))
    if eos >= vocab:
        raise RefusedInputError(f"{url}: eos_id {eos} is outside the vocabulary of {vocab} ids")
    splits = _require(url, manifest, "splits", "top level")
    if not isinstance(splits, dict):
        raise RefusedInputError(f"{url}: splits must be an object, got {splits!r}")
    del window


def _check_split_accounting(url: str, split: str, info: dict, window: int) -> None:
    where = f"split {split!r}"
    shards = _require(url, info, "shards", where)
    if not isinstance(shards, list):
        raise RefusedInputError(f"{url}: split {split!r} has no shard list")
    for i, shard in enumerate(shards):
        shard_where = f"{where}, shard {i}"
        check_shard_path(url, _require(url, shard, "path", shard_where))
        _require_int(url, f"{shard_where} windows", _require(url, shard, "windows", shard_where))
        sha = _require(url, shard, "sha256", shard_where)
        if not isinstance(sha, str) or len(sha) != 64:
            raise RefusedInputError(f"{url}: {shard_where} sha256 must be 64 hex digits, got {sha!r}")
        if "bytes" in shard:
            _require_int(url, f"{shard_where} bytes", shard["bytes"])
    counts = {name: _require_int(url, f"{where} {name}", _require(url, info, name, where))
              for name in ("windows", "tokens", "document_tokens", "dropped_tail_tokens")}
    total = sum(int(s["windows"]) for s in shards)
    if total != counts["windows"]:
        raise RefusedInputError(f"{url}: split {split!r} lists {counts['windows']} windows but its shards "
                                f"hold {total}")
    if counts["tokens"] != counts["windows"] * window:
        raise RefusedInputError(f"{url}: split {split!r}: tokens {counts['tokens']} != windows "
                                f"{counts['windows']} x window {window}")
    if counts["document_tokens"] != counts["tokens"] + counts["dropped_tail_tokens"]:
        raise RefusedInputError(f"{url}: split {split!r}: document_tokens {counts['document_tokens']} != "
                                f"tokens {counts['tokens']} + dropped_tail_tokens {counts['dropped_tail_tokens']}")


def _sha256_and_max(fs, path: str, dtype: np.dtype, chunk: int = 1 << 24) -> tuple[str, int]:
    """One pass over a shard: its sha256 and its largest token id (-1 when empty)."""
    sha = hashlib.sha256()
    largest = -1
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):  # chunk is a multiple of the itemsize, as is every shard
            sha.update(block)
            if len(block) >= dtype.itemsize:
                largest = max(largest, int(np.frombuffer(block[: len(block) // dtype.itemsize * dtype.itemsize],
                                                         dtype=dtype).max()))
    return sha.hexdigest(), largest


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
                raise RefusedInputError(f"short read of window {indices[row]} from {paths[row]}: {block!r:.200}")
            out[row] = np.frombuffer(block, dtype=self.dtype)
        return out


def open_split(tokens_dir: str, split: str, verify: str = "full") -> TokenSplit:
    """Open one split after checking the manifest and every shard.

    verify: "full" checks existence, size and sha256 of every shard and that every token id is
    below the manifest's vocab_size; "size" skips reading the data (for a restart on a dataset
    already verified once: the finetune stage records that in its workdir).
    """
    if verify not in ("full", "size"):
        raise ValueError(f"verify must be 'full' or 'size', got {verify!r}")
    manifest = read_manifest(tokens_dir)
    url = join(tokens_dir, MANIFEST)
    validate_manifest(url, manifest)
    window = manifest["window"]
    dtype = np.dtype(manifest["dtype"])
    info = _require(url, manifest["splits"], split, "splits")
    _check_split_accounting(url, split, info, window)
    if info["windows"] == 0:
        raise RefusedInputError(f"{url}: split {split!r} has no complete window of {window} tokens "
                                f"({info['document_tokens']} tokens from {info.get('documents', '?')} documents)")
    fs, _ = fsspec.core.url_to_fs(url)
    for shard in info["shards"]:
        shard_url = join(tokens_dir, shard["path"])
        path = fsspec.core.url_to_fs(shard_url)[1]
        if not fs.exists(path):
            raise RefusedInputError(f"shard {shard_url} listed in {url} is missing")
        expected = int(shard["windows"]) * window * dtype.itemsize
        size = fs.size(path)
        if size != expected or int(shard.get("bytes", expected)) != expected:
            raise RefusedInputError(f"shard {shard_url} has {size} bytes, manifest expects {expected} "
                                    f"({shard['windows']} windows of {window} x {dtype.itemsize} bytes)")
        if verify == "full":
            digest, largest = _sha256_and_max(fs, path, dtype)
            if digest != shard["sha256"]:
                raise RefusedInputError(f"shard {shard_url} is corrupt: sha256 differs from {url}")
            if largest >= manifest["vocab_size"]:
                raise RefusedInputError(f"shard {shard_url} holds token id {largest}, outside the "
                                        f"manifest's vocab_size {manifest['vocab_size']}")
    return TokenSplit(tokens_dir, split, manifest)
