"""Deterministic output files: the same documents give the same bytes on any runner.

Documents are assigned to shards by a hash of their key (never by arrival order), each shard
is sorted by (key, text, url, timestamp) before writing, gzip headers carry no name and
mtime 0, and the shard count is a function of the document count alone.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import posixpath
from typing import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# BERTIN's sampled mC4-es shards held ~50k documents each; a shard of that size is a few
# hundred MB of text at most, which one worker sorts in memory comfortably.
DEFAULT_DOCS_PER_SHARD = 50_000

PARQUET_COLUMNS = ("text", "url", "timestamp", "perplexity", "n_tokens")


def join(base: str, *parts: str) -> str:
    """Path join that keeps URLs (gs://...) intact."""
    if "://" in base:
        return posixpath.join(base, *parts)
    import os

    return os.path.join(base, *parts)


def shard_of(key: str, num_shards: int) -> int:
    """0-based shard of a document key: a stable hash, independent of seed and runner."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def num_shards_for(count: int, docs_per_shard: int = DEFAULT_DOCS_PER_SHARD) -> int:
    if docs_per_shard <= 0:
        raise ValueError(f"docs per shard must be > 0, got {docs_per_shard}")
    return max(1, math.ceil(count / docs_per_shard))


def doc_sort_key(doc: dict) -> tuple:
    return (doc["key"], doc["text"], doc.get("url") or "", doc.get("timestamp") or "")


def json_shard_name(prefix: str, split: str, method: str, index: int, num_shards: int) -> str:
    """BERTIN's layout, 1-based: mc4-es-train-50M-gaussian-shard-0001-of-0004.json.gz."""
    return f"{prefix}-{split}-50M-{method}-shard-{index + 1:04d}-of-{num_shards:04d}.json.gz"


def parquet_shard_name(split: str | None, index: int, num_shards: int) -> str:
    """Hugging Face's layout, 0-based: parquet/train/part-00000-of-00004.parquet."""
    name = f"part-{index:05d}-of-{num_shards:05d}.parquet"
    return posixpath.join("parquet", split, name) if split else name


def _create(path: str):
    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED)


def write_bytes(path: str, data: bytes) -> None:
    FileSystems.mkdirs(posixpath.dirname(path)) if "://" in path else _mkdirs_local(path)
    with _create(path) as out:
        out.write(data)


def _mkdirs_local(path: str) -> None:
    import os

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def json_gz_bytes(docs: Iterable[dict]) -> bytes:
    """mC4 records (text, timestamp, url), one per line, gzip with a fixed header."""
    payload = "".join(
        json.dumps({"text": d["text"], "timestamp": d.get("timestamp"), "url": d.get("url")},
                   ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    buffer = io.BytesIO()
    # One write: zlib per call is costly for thousands of small records.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
        gz.write(payload)
    return buffer.getvalue()


def parquet_bytes(docs: list[dict], columns: tuple[str, ...] = PARQUET_COLUMNS) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"text": pa.string(), "url": pa.string(), "timestamp": pa.string(),
             "perplexity": pa.float64(), "n_tokens": pa.int64(), "split": pa.string()}
    schema = pa.schema([(c, types[c]) for c in columns])
    table = pa.table({c: pa.array([d.get(c) for d in docs], type=types[c]) for c in columns},
                     schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                   for r in records).encode("utf-8")


def write_json(path: str, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
                .encode("utf-8"))


def read_json(path: str):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))


def clear_outputs(out_dir: str, patterns: Iterable[str]) -> int:
    """Deletes files a previous run left under `out_dir` that match our output names, so a
    re-run with fewer shards never leaves stale shards beside the new ones."""
    stale = []
    for pattern in patterns:
        for result in FileSystems.match([join(out_dir, pattern)]):
            stale.extend(m.path for m in result.metadata_list)
    if stale:
        FileSystems.delete(sorted(set(stale)))
    return len(stale)
