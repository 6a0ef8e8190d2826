"""Deterministic output files: the same documents give the same bytes on any runner.

Each output shard is written from one input shard, in that shard's order (never in arrival
order across workers); gzip headers carry no name and mtime 0; parquet row groups break at
row / byte counts of the rows alone. Shards are streamed and made visible atomically.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import posixpath
import uuid
from typing import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lm_models.paths import join  # noqa: F401 - writers.join, used across pipelines


PARQUET_COLUMNS = ("text", "url", "timestamp", "perplexity", "n_tokens")


def json_shard_name(prefix: str, split: str, method: str, index: int, num_shards: int) -> str:
    """BERTIN's layout, 1-based: mc4-es-train-gaussian-shard-0001-of-0004.json.gz, without
    BERTIN's size tag (its `-50M-`): a shard is named before anyone knows how many documents
    the sample keeps, so no count in the name could be true."""
    return f"{prefix}-{split}-{method}-shard-{index + 1:04d}-of-{num_shards:04d}.json.gz"


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
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def _scalar(value) -> bool:
    return not isinstance(value, (dict, list, tuple))


def compact_json(obj, indent: int = 2, _level: int = 0) -> str:
    """JSON indented like `json.dumps(indent=2)`, except that an array of numbers or strings
    (a 1,000-bin histogram) and an object of plain values inside an array (one band) take one
    line each: stats.json reads from the top, in ~180 lines instead of ~8,300. Same values,
    valid JSON (json.loads gives what json.dumps was given)."""
    def flat(value) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: "
                 f"{compact_json(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(_scalar(v) for v in obj):
            return flat(list(obj))
        items = [inner + (flat(v) if isinstance(v, dict) and all(_scalar(x) for x in v.values())
                          else compact_json(v, indent, _level + 1)) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return flat(obj)


def write_json(path: str, obj) -> None:
    write_bytes(path, (compact_json(obj) + "\n").encode("utf-8"))


def read_json(path: str):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))


# --- streaming writers ---------------------------------------------------------------------
# A shard is written as it is produced (no whole shard in memory) to a temporary name, and made
# visible by one atomic step at close: os.replace locally; on gs:// and other object stores the
# object only appears when its upload completes, so it is written under its final name. A
# Dataflow bundle that is retried rewrites the same bytes under the same name.

# Row groups flush at whichever comes first; both are functions of the rows alone, so the
# parquet bytes do not depend on how Beam bundled anything.
ROW_GROUP_ROWS = 8192
ROW_GROUP_TEXT_BYTES = 64 * 1024 * 1024

# gzip level of the sampled json.gz shards: level 1 compresses mC4 text ~5x faster than level 6
# (measured 42 vs 8.7 MB/s here) for files ~18% larger (0.40 vs 0.34 of the text); at level 6
# compressing the kept documents alone cost a third of the scoring time of the bundled model.
JSON_GZ_LEVEL = 1

PARQUET_TYPES = None  # filled lazily (pyarrow is imported only by writers that need it)


def _parquet_types():
    global PARQUET_TYPES
    if PARQUET_TYPES is None:
        import pyarrow as pa

        PARQUET_TYPES = {"text": pa.string(), "url": pa.string(), "timestamp": pa.string(),
                         "perplexity": pa.float64(), "n_tokens": pa.int64(), "split": pa.string()}
    return PARQUET_TYPES


class AtomicFile:
    """A binary file that becomes visible under `path` only when closed without error."""

    def __init__(self, path: str):
        self.path = path
        self._local = "://" not in path
        if self._local:
            _mkdirs_local(path)
            directory, name = os.path.split(path)
            # unique per attempt: two attempts of one bundle never write into each other's file
            self._tmp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
            self._out = open(self._tmp, "wb")
        else:
            self._tmp = None
            self._out = _create(path)

    @property
    def stream(self):
        """The underlying open binary stream (for writers that want a real file object)."""
        return self._out

    def write(self, data: bytes) -> int:
        return self._out.write(data)

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()
        if self._local:
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._out.close()
        finally:
            if self._local and os.path.exists(self._tmp):
                os.remove(self._tmp)


class _BackgroundWriter:
    """Runs a stream's compress-and-write calls in one thread, in the order given, while the
    caller goes on (scoring, reading, encoding the next rows): zlib and Arrow's parquet writer
    release the GIL, so on a machine with a free core this overlaps them with the Python work.
    At most one call waits in the queue (memory: about two row groups), the bytes are those of
    the same calls made in line, and an error in the thread is raised in the caller at its
    next submit() or at finish()."""

    _STOP = object()

    def __init__(self, name: str):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"ppsample-writer:{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is None:  # after a failure, the remaining calls are dropped
                fn, args = item
                try:
                    fn(*args)
                except BaseException as err:  # noqa: BLE001 - handed to the caller
                    self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn, *args) -> None:
        self._raise()
        self._queue.put((fn, args))

    def stop(self) -> None:
        """No more calls: the thread ends after the submitted ones (finish() waits for it)."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(self._STOP)

    def finish(self) -> None:
        """Waits for every submitted call; raises the first error."""
        if self._thread.is_alive():
            self.stop()
            self._thread.join()
        self._raise()

    def cancel(self) -> None:
        try:
            self.finish()
        except BaseException:  # noqa: BLE001 - aborting anyway
            pass


class _Streaming:
    def __enter__(self):
        return self

    def close(self) -> None:
        self.close_in_background()
        self.wait_closed()

    def wait_closed(self) -> None:
        """Waits for close_in_background (its writer thread) to end; raises its error."""
        self._background.finish()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self._abort_quietly()  # a failed close leaves no temporary file behind
                raise
        else:
            self._abort_quietly()
        return False

    def _abort_quietly(self) -> None:
        try:
            self.abort()
        except Exception:  # noqa: BLE001 - the error being raised is the one that matters
            pass


class PendingCloses:
    """Streams closing in their writer threads while the caller goes on to its next shard:
    phase 2's main thread would otherwise wait at each shard's end for gzip to finish its
    last rows. At most `limit` close at once (memory: two row groups each); wait_all()
    (a DoFn's finish_bundle, before Beam commits the bundle's outputs) waits for every one and
    raises the first error, leaving no temporary file of a stream that failed."""

    def __init__(self, limit: int = 4):
        self.limit = limit
        self._streams: list = []

    def add(self, stream: _Streaming) -> None:
        stream.close_in_background()
        self._streams.append(stream)
        while len(self._streams) > self.limit:
            self._wait(self._streams.pop(0))

    def wait_all(self) -> None:
        streams, self._streams = self._streams, []
        error = None
        for stream in streams:
            try:
                self._wait(stream)
            except BaseException as err:  # noqa: BLE001 - the first is raised after all waited
                error = error or err
        if error is not None:
            raise error

    @staticmethod
    def _wait(stream: _Streaming) -> None:
        try:
            stream.wait_closed()
        except BaseException:
            stream._abort_quietly()
            raise


class ClosesAtBundleEnd:
    """A DoFn mixin: `self._closing`, the bundle's PendingCloses, which finish_bundle waits for
    before Beam commits the bundle's results (a failed close fails the bundle, retried whole)."""

    def start_bundle(self):
        self._closing = PendingCloses()

    def finish_bundle(self):
        self._closing.wait_all()


@functools.lru_cache(maxsize=None)
def _json_string_encoder():
    """A str/None -> JSON bytes encoder equal to `json.dumps(value, ensure_ascii=False)`:
    orjson's when installed (~6x faster on mC4 text; it escapes exactly the characters Python's
    json does, checked over every code point by tests/test_fast_writers.py), else Python's."""
    try:
        import orjson

        return orjson.dumps
    except ImportError:  # orjson is optional: same bytes, slower
        return python_json_string


_PYTHON_JSON = json.JSONEncoder(ensure_ascii=False)


def python_json_string(value) -> bytes:
    """The fallback of the fast string encoder: Python's json, UTF-8."""
    return _PYTHON_JSON.encode(value).encode("utf-8")


def mc4_json_lines(texts: list, timestamps: list, urls: list) -> bytes:
    """mC4 records as JSON lines, byte for byte what `json.dumps({"text", "timestamp", "url"},
    ensure_ascii=False) + "\\n"` gives, built per field with a fast string encoder."""
    dumps = _json_string_encoder()
    return b"".join([b'{"text": ' + dumps(text) + b', "timestamp": ' + dumps(timestamp)
                     + b', "url": ' + dumps(url) + b'}\n'
                     for text, timestamp, url in zip(texts, timestamps, urls)])


class JsonGzStream(_Streaming):
    """mC4 records written as they come (gzip with mtime 0 and no name)."""

    def __init__(self, path: str):
        self.path = path
        self._file = AtomicFile(path)
        self._gz = gzip.GzipFile(fileobj=self._file, mode="wb", mtime=0, filename="",
                                 compresslevel=JSON_GZ_LEVEL)
        self._background = _BackgroundWriter(path)
        self.count = 0

    def write(self, docs: Iterable[dict]) -> None:
        docs = list(docs)
        self.write_columns([d["text"] for d in docs], [d.get("timestamp") for d in docs],
                           [d.get("url") for d in docs])

    def write_columns(self, texts: list, timestamps: list, urls: list) -> None:
        """The same records given as three equal-length lists (no dict per document)."""
        if texts:
            lines = mc4_json_lines(texts, timestamps, urls)
            self._background.submit(self._gz.write, lines)
            # the records actually written, one per line (JSON escapes newlines in strings):
            # phase 2 checks them against the documents it kept
            self.count += lines.count(b"\n")

    def write_records(self, records: list[dict]) -> None:
        """Whole records (another corpus's layout: text, timestamp, url, id and the extras)."""
        if records:
            self._background.submit(self._gz.write, json_records(records))
            self.count += len(records)

    def close_in_background(self) -> None:
        self._background.submit(self._commit)
        self._background.stop()

    def _commit(self) -> None:  # in the writer thread, after the last write
        self._gz.close()
        self._file.close()

    def abort(self) -> None:
        self._background.cancel()
        self._file.abort()


def json_records(records: list[dict]) -> bytes:
    """Records of any layout as JSON lines (keys in the order given), values as json writes them;
    values JSON has no type for (dates, bytes from parquet) as their text."""
    return b"".join((json.dumps(r, ensure_ascii=False, default=str) + "\n").encode("utf-8")
                    for r in records)


class JsonlStream(_Streaming):
    """Dead letters (or any JSON records), one per line, sorted keys. The file is created at
    the first record: a shard with no dead letter writes no empty file (`count` says 0)."""

    def __init__(self, path: str):
        self.path = path
        self._file: AtomicFile | None = None
        self.count = 0

    def write(self, record: dict) -> None:
        if self._file is None:
            self._file = AtomicFile(self.path)
        self._file.write((json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
                         .encode("utf-8"))
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()


class ParquetStream(_Streaming):
    """Rows buffered up to one row group, then written: memory is one row group, whatever the
    shard size. Rows come as dicts (`write`) or as Arrow tables (`write_table`, column-wise:
    no Python object per value); either way a row group closes after the same row, so the
    bytes are the same."""

    def __init__(self, path: str, columns: tuple[str, ...] = PARQUET_COLUMNS,
                 row_group_rows: int = ROW_GROUP_ROWS,
                 row_group_text_bytes: int = ROW_GROUP_TEXT_BYTES, schema=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = _parquet_types()
        self.path = path
        if schema is None:  # our own columns; `schema` (a pyarrow.Schema) for carried extras
            schema = pa.schema([(c, types[c]) for c in columns])
        self.columns = tuple(schema.names)
        self.schema = schema
        self._file = AtomicFile(path)
        self._writer = pq.ParquetWriter(self._file.stream, self.schema, compression="zstd")
        self._pending: list = []  # Arrow tables of the row group being filled
        self._n_rows = 0
        self._text_bytes = 0  # text length in code points (len(str)), as the row rule counts
        self._limits = (row_group_rows, row_group_text_bytes)
        self._background = _BackgroundWriter(path)
        self.count = 0

    @property
    def pending_rows(self) -> int:
        """Rows buffered for the row group being filled (< row_group_rows at all times)."""
        return self._n_rows

    def write(self, docs: Iterable[dict]) -> None:
        import pyarrow as pa

        docs = list(docs)
        if docs:
            self.write_table(pa.table({c: pa.array([d.get(c) for d in docs],
                                                   type=self.schema.field(c).type)
                                       for c in self.columns}, schema=self.schema))

    def write_table(self, table) -> None:
        """Appends an Arrow table holding (at least) this stream's columns, in order. A row
        group closes at the first row where the rows reach row_group_rows or the texts'
        lengths (code points) reach row_group_text_bytes, as if rows came one at a time."""
        import numpy as np
        import pyarrow.compute as pc

        table = table.select(list(self.columns)).cast(self.schema)
        lengths = pc.utf8_length(table.column("text")).fill_null(0).to_numpy().astype(np.int64)
        start, n = 0, table.num_rows
        max_rows, max_bytes = self._limits
        while start < n:
            text = self._text_bytes + np.cumsum(lengths[start:])
            rows = self._n_rows + np.arange(1, n - start + 1)
            full = np.flatnonzero((rows >= max_rows) | (text >= max_bytes))
            stop = n if len(full) == 0 else start + int(full[0]) + 1
            self._pending.append(table.slice(start, stop - start))
            self._n_rows += stop - start
            self._text_bytes += int(lengths[start:stop].sum())
            start = stop
            if len(full):
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._n_rows:
            return
        # one contiguous chunk per column, as a table built from Python lists is
        table = pa.concat_tables(self._pending).combine_chunks()
        self._background.submit(self._writer.write_table, table)
        self.count += table.num_rows  # the rows actually handed to the parquet writer
        self._pending, self._n_rows, self._text_bytes = [], 0, 0

    def close_in_background(self) -> None:
        self._flush()
        self._background.submit(self._commit)
        self._background.stop()

    def _commit(self) -> None:  # in the writer thread, after the last row group
        self._writer.close()
        self._file.close()

    def abort(self) -> None:
        self._background.cancel()
        try:
            self._writer.close()
        finally:
            self._file.abort()
