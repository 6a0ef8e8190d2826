"""Reading mC4-layout documents: gzipped or plain JSON lines, and parquet, from any glob.

Each file is read whole by one worker (gzip is not splittable), line by line as bytes, so that
a bad line costs one dead letter and not the file: invalid UTF-8, malformed JSON, a missing or
non-string `text`, a wrong-typed `url`/`timestamp`, a document over the size limit, and a gzip
stream that ends early (the records before the cut are kept, the cut is one rejection).
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.corpus_io import dead_letters
from pipelines.corpus_io import layouts
from pipelines.errors import InputNotFoundError
from pipelines.splits import INPUT_SPLITS as SPLITS, TRAIN, VALIDATION

try:
    from orjson import JSONDecodeError as _OrjsonError, loads as _orjson_loads
except ImportError:  # orjson is optional: every line takes the json path
    _orjson_loads = None

# mC4's own file names (c4-es.tfrecord-00000-of-01024.json.gz, c4-es-validation.tfrecord-...)
# carry their split: the folder they sit in never changes it.
_MC4_NAME = re.compile(r"^c4-[\w-]+\.tfrecord-\d+-of-\d+", re.IGNORECASE)
# Output stems join folders to a file's stem with this, when a folder names the split or
# same-named files in different folders need telling apart (input_shards.plan_input_shards).
STEM_JOIN = "__"

# Documents larger than this are dead-lettered: a single multi-hundred-MB "document" is almost
# always a broken crawl record, and it would pin a worker's memory while being scored.
DEFAULT_MAX_DOC_BYTES = 4 * 1024 * 1024

PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = (".parquet", ".json.gz", ".jsonl.gz", ".jsonl")


def folder_split(path: str) -> str | None:
    """The split a file's folder names (FineWeb-2's `train/000_00000.parquet`,
    `test/000_00000.parquet`; also `validation/`), or None. mC4-named files keep their name's."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    parent = path.rstrip("/").rsplit("/", 1)[0].rsplit("/", 1)[-1].lower() if "/" in path else ""
    if parent in SPLITS and not _MC4_NAME.match(name):
        return parent
    return None


def split_of(path: str) -> str:
    """The split folder kept in an output stem (`OUT/scored/test__000_00000.parquet`, see
    STEM_JOIN) names the split; else a split folder (`train/`, `test/`, `validation/`) does;
    else a name with `validation` in it (mC4: `c4-es-validation.tfrecord-...`) is validation
    and anything else is train."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    parts = name.split(STEM_JOIN)
    if len(parts) > 1 and parts[-2] in SPLITS:
        return parts[-2]
    split = folder_split(path)
    if split is not None:
        return split
    return VALIDATION if "validation" in name else TRAIN


def is_parquet(path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIXES)


def _beam_knows(path: str) -> bool:
    try:
        FileSystems.get_filesystem(path)
        return True
    except ValueError:
        return False


def expand_inputs(patterns: str | list[str]) -> list[str]:
    """Expands comma-separated globs (local, gs://, or any fsspec URL such as hf://) into a
    sorted, de-duplicated file list, so the pipeline graph never depends on listing order."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files: set[str] = set()
    for pattern in patterns:
        pattern = pattern.strip()
        if _beam_knows(pattern):
            if os.path.isdir(pattern) or (pattern.endswith("/") and "://" in pattern):
                # A directory means the data files in it (a `score` output also holds
                # stats.json and rejected/, which are not input).
                globs = [pattern.rstrip("/") + "/*" + suffix for suffix in DATA_SUFFIXES]
            else:
                globs = [pattern]
            matched = [m.path for r in FileSystems.match(globs) for m in r.metadata_list]
            if not matched and not any(c in pattern for c in "*?["):
                # gs://bucket/folder without a trailing slash: a folder, if it holds data files
                globs = [pattern.rstrip("/") + "/*" + suffix for suffix in DATA_SUFFIXES]
                matched = [m.path for r in FileSystems.match(globs) for m in r.metadata_list]
            matched = [p for p in matched if not os.path.isdir(p)]
            # Beam's match lists files only; a local folder named like a data file (x.json.gz/)
            # is listed too, so that reading it gives a counted not_a_file letter instead of a
            # silent skip. (Object stores have no folders.)
            matched += _folders_named_like_data(globs)
        else:
            import fsspec  # only for schemes Beam has no filesystem for (hf://, http://, ...)

            fs, _token, paths = fsspec.get_fs_token_paths(pattern)
            matched = [fs.unstrip_protocol(p) for p in paths]
        matched = [p for p in matched if not _is_hidden(p)]
        if not matched:
            raise InputNotFoundError(f"input pattern matched no files: {pattern!r}")
        files.update(matched)
    return sorted(files)


def _folders_named_like_data(globs: list[str]) -> list[str]:
    import glob

    return [os.path.abspath(p) for g in globs if "://" not in g
            for p in glob.glob(g) if os.path.isdir(p) and p.lower().endswith(DATA_SUFFIXES)]


def _is_hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith((".", "_"))


def open_binary(path: str):
    """A raw (not decompressed) binary stream for any path Beam or fsspec can read."""
    if _beam_knows(path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    import fsspec

    return fsspec.open(path, "rb").open()


def _unencodable(value: str) -> bool:
    """True for a str holding lone surrogates (a JSON "\\ud800" escape): not valid Unicode,
    and Beam's coder cannot encode it."""
    try:
        value.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def validate_document(obj: Any, max_doc_bytes: int) -> tuple[str | None, str]:
    """Returns (reason, detail) for a record that cannot be scored, or (None, "")."""
    if not isinstance(obj, dict):
        return dead_letters.MALFORMED_JSON, f"expected a JSON object, got {type(obj).__name__}"
    if "text" not in obj or obj["text"] is None:
        return dead_letters.MISSING_TEXT, "no `text` field"
    text = obj["text"]
    if not isinstance(text, str):
        return dead_letters.NON_STRING_TEXT, f"`text` is {type(text).__name__}"
    for field in ("url", "timestamp"):
        value = obj.get(field)
        if value is not None and not isinstance(value, str):
            reason = dead_letters.WRONG_TYPE_URL if field == "url" else dead_letters.WRONG_TYPE_TIMESTAMP
            return reason, f"`{field}` is {type(value).__name__}"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_doc_bytes:
        return dead_letters.TOO_LARGE, f"text is {size} bytes, limit {max_doc_bytes}"
    for field in ("text", "url", "timestamp"):  # lone surrogates from "\ud800"-style escapes
        value = obj.get(field)
        if value is not None and _unencodable(value):
            return dead_letters.INVALID_UTF8, f"`{field}` holds unpaired surrogates"
    return None, ""


def _document(obj: dict, split: str, source: str, line: int) -> dict:
    doc = {"text": obj["text"], "url": obj.get("url"), "timestamp": obj.get("timestamp"),
           "split": split, "source": source, "line": line}
    for field in LAYOUT_FIELDS:  # only in records read with a non-mC4 layout
        if field in obj:
            doc[field] = obj[field]
    return doc


# What apply_layout adds to the mC4 fields: the id, the key of the keep decision, the extras
# (JSON lines of a named layout: its declared extras apart, checked against their types).
LAYOUT_FIELDS = ("id", "document_key", "extras", "typed_extras")


def custom_layout(layout: "layouts.Layout | None") -> "layouts.Layout | None":
    """None for mC4's layout: its records are read exactly as they always were."""
    return None if layout is None or layout.is_mc4() else layout


def apply_layout(obj: Any, layout: "layouts.Layout", declared: bool = False
                 ) -> tuple[dict | None, str | None, str]:
    """(record in mC4's shape + id/key/extras, None, "") for a record of another corpus's
    layout, or (None, reason, detail) when its text is missing or (`declared`: JSON lines) a
    declared extra does not fit its published type (the other checks follow in
    validate_document)."""
    if not isinstance(obj, dict):
        return None, dead_letters.MALFORMED_JSON, f"expected a JSON object, got {type(obj).__name__}"
    got = layouts.extract(obj, layout)
    if got.text is layouts.MISSING or got.text is None:
        return None, dead_letters.MISSING_TEXT, f"no `{layout.text}` field"
    record = {"text": got.text, "url": got.url, "timestamp": got.timestamp, "extras": got.extras}
    if declared and layout.declared:
        typed, rest, problem = layouts.split_extras(got.extras, layout)
        if problem:
            return None, dead_letters.WRONG_TYPE_EXTRA, problem
        record["typed_extras"], record["extras"] = typed, rest
    if layout.id is not None:
        record["id"] = layouts.key_string(got.id) if got.id is not None else None
    if layout.key is not None:
        record["document_key"] = got.key
    return record, None, ""


@dataclass
class FileCount:
    """How many records one file held, counted by the reader itself (before any filtering),
    so `read = scored + rejected` is checked rather than assumed."""
    source: str
    split: str
    read: int


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# Compressed files are read this many decompressed bytes at a time; a line is assembled from
# chunks, so no line is ever read whole past its limit.
READ_CHUNK_BYTES = 1 << 20
# How much of a file is looked at to tell gzip from plain JSON lines.
SNIFF_BYTES = 64 * 1024
# A JSON line may spell its text with escapes: "\u0001" is 6 bytes for 1 byte of text, so a line
# of up to 6 x max_doc_bytes (+ room for url, timestamp and other fields) can still hold a
# document the size check accepts. Longer lines are skipped to their newline unread.
JSON_ESCAPE_RATIO = 6
LINE_SLACK_BYTES = 64 * 1024


def max_line_bytes(max_doc_bytes: int) -> int:
    return JSON_ESCAPE_RATIO * max_doc_bytes + LINE_SLACK_BYTES


class _Rewound(io.RawIOBase):
    """A stream whose first bytes were already read to sniff its format: gives them back first."""

    def __init__(self, head: bytes, raw):
        self._head = memoryview(head)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if len(self._head):
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _read_head(raw, size: int) -> bytes:
    """Up to `size` bytes (a stream may return short reads before its end)."""
    parts, have = [], 0
    while have < size:
        data = raw.read(size - have)
        if not data:
            break
        parts.append(data)
        have += len(data)
    return b"".join(parts)


def _looks_like_json_lines(head: bytes) -> bool:
    """A plain-text file mis-named .gz: its first record starts with `{` (after a BOM and
    blank space), and its first bytes hold no NUL (binary data rarely lacks one)."""
    return b"\x00" not in head and head.removeprefix(UTF8_BOM).lstrip().startswith(b"{")


class _StreamFault(Exception):
    """The byte stream of a file broke off: (reason, detail) becomes one dead letter."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _Line(NamedTuple):
    number: int  # physical line number, 1-based, blank lines included
    data: bytes | None  # None: longer than the limit, skipped unread
    size: int  # bytes in the line (without its line break), also when skipped


_LINE_BREAK = re.compile(rb"\r\n?")


def _physical_lines(read, limit: int) -> Iterator[_Line]:
    """Splits a byte stream (`read()` -> next chunk, b"" at the end) into lines ended by
    "\n", "\r\n" or a lone "\r" (old Mac files), holding at most `limit` bytes of any line.

    A failure of `read` (a truncated or corrupt gzip stream) is raised as a _StreamFault after
    every complete line before it was yielded."""
    pending: list[bytes] = []  # pieces of the current line (dropped once it is over the limit)
    size = 0
    number = 0
    skip_lf = False  # the previous chunk ended with "\r": a "\n" starting this one ends nothing
    while True:
        try:
            chunk = read()
        except EOFError as err:  # gzip stream cut short: keep what came before
            raise _StreamFault(dead_letters.TRUNCATED_GZIP, str(err)) from err
        except (gzip.BadGzipFile, zlib.error) as err:  # bad header or CRC: stop this file
            raise _StreamFault(dead_letters.CORRUPT_GZIP, str(err)) from err
        if not chunk:
            break
        if skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        skip_lf = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = _LINE_BREAK.sub(b"\n", chunk)
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:  # each of these ends a line
            number += 1
            total = size + len(piece)
            if total > limit:
                yield _Line(number, None, total)
            else:
                yield _Line(number, b"".join(pending) + piece if pending else piece, total)
            pending, size = [], 0
        tail = pieces[-1]
        size += len(tail)
        if size <= limit:
            pending.append(tail)
        else:
            pending = []
    if size:  # a last line without a line break
        number += 1
        yield _Line(number, b"".join(pending) if size <= limit else None, size)


def _open_json_lines(path: str, raw) -> tuple[Any, str | None, str]:
    """(chunk reader, fault reason or None, detail). Files are sniffed, not trusted by name:
    gzip magic means gzip whatever the suffix; a `.gz` file that is not gzip is read as plain
    text when it looks like JSON lines (else it is one corrupt_gzip letter); a zero-byte `.gz`
    is one empty_file letter (a zero-byte .jsonl is a valid file with no records)."""
    head = _read_head(raw, SNIFF_BYTES)
    named_gzip = path.lower().endswith(".gz")
    if not head:
        if named_gzip:
            return None, dead_letters.EMPTY_FILE, "zero-byte file; a gzip file has a header"
        return (lambda: b""), None, ""
    stream = _Rewound(head, raw)
    if head.startswith(GZIP_MAGIC):
        gz = gzip.GzipFile(fileobj=stream, mode="rb")
        # read1: one decompression step per call, so a stream that breaks off loses no line
        # decompressed before the break
        return (lambda: gz.read1(READ_CHUNK_BYTES)), None, ""
    if named_gzip and not _looks_like_json_lines(head):
        return None, dead_letters.CORRUPT_GZIP, (
            f"not a gzip file (starts with {head[:8]!r}) and not JSON lines")
    return (lambda: stream.read(READ_CHUNK_BYTES)), None, ""


class _Counted:
    """A raw stream that tells `on_bytes(n)` how many bytes each read returned."""

    def __init__(self, raw, on_bytes):
        self._raw, self._on_bytes = raw, on_bytes

    def read(self, *args):
        data = self._raw.read(*args)
        self._on_bytes(len(data))
        return data

    def close(self):
        self._raw.close()


def iter_json_lines(path: str, max_doc_bytes: int, on_bytes=None, layout=None
                    ) -> Iterator[tuple[str, Any]]:
    """Yields ("doc", document) / ("rejected", dead letter) / ("count", FileCount).

    A document's and a dead letter's `line` is the physical line number (blank lines count,
    so `sed -n Np` finds it); `read` counts records (non-blank lines), plus one for a file
    fault (a cut or corrupt gzip stream, a zero-byte .gz, a directory), which is one letter.
    `on_bytes(n)`, when given, hears of the file's (compressed) bytes as they are read.
    `layout` (pipelines.corpus_io.layouts): where the fields are, for corpora other than mC4."""
    layout = custom_layout(layout)
    split = split_of(path)
    records = 0
    line_no = 0
    try:
        raw = open_binary(path)
    except IsADirectoryError as err:
        yield "rejected", dead_letters.make(path, 1, dead_letters.NOT_A_FILE, str(err), split=split)
        yield "count", FileCount(path, split, 1)
        return
    if on_bytes is not None:
        raw = _Counted(raw, on_bytes)
    try:
        read, reason, detail = _open_json_lines(path, raw)
        if reason:
            records += 1
            yield "rejected", dead_letters.make(path, 1, reason, detail, split=split)
            read = None
        limit = max_line_bytes(max_doc_bytes)
        try:
            for line in (_physical_lines(read, limit) if read else ()):
                line_no = line.number
                data = line.data
                if data is not None:
                    if line_no == 1:
                        data = data.removeprefix(UTF8_BOM)
                    if not data.strip():
                        continue  # blank lines are not records
                records += 1
                kind, item = _check_line(path, line_no, data, line.size, limit, max_doc_bytes,
                                         split, layout)
                yield kind, (_document(item, split, path, line_no) if kind == "doc" else item)
        except _StreamFault as fault:
            records += 1
            yield "rejected", dead_letters.make(path, line_no + 1, fault.reason, fault.detail,
                                                split=split)
    finally:
        raw.close()
    yield "count", FileCount(path, split, records)


_MC4_KEYS = frozenset(("text", "url", "timestamp"))


def _plain_mc4_record(data: bytes, max_doc_bytes: int) -> dict | None:
    """The common mC4 line, parsed by orjson (~2x json's speed, UTF-8 checked as it parses), or
    None: then the line takes the json path, which gives every other line exactly the record
    or dead letter it always did. Only records whose keys are among text/url/timestamp, all
    strings, take this path: there orjson's result is json's (orjson refuses lone surrogates,
    NaN and invalid UTF-8 and would read a 20-digit integer as a float or nest deeper than
    json's recursion limit, but such values are not strings). The text's UTF-8 size is at
    most the line's, so only a line over the limit needs it measured."""
    try:
        obj = _orjson_loads(data)
    except _OrjsonError:
        return None
    if obj.__class__ is not dict or not obj.keys() <= _MC4_KEYS:
        return None
    text, url, timestamp = obj.get("text"), obj.get("url"), obj.get("timestamp")
    if text.__class__ is not str or (url is not None and url.__class__ is not str) \
            or (timestamp is not None and timestamp.__class__ is not str):
        return None
    if len(data) > max_doc_bytes and len(text.encode("utf-8")) > max_doc_bytes:
        return None
    return obj


def _check_line(path: str, line_no: int, data: bytes | None, size: int, limit: int,
                max_doc_bytes: int, split: str, layout=None) -> tuple[str, dict]:
    """("doc", the parsed JSON object) for a good line, else ("rejected", its dead letter)."""
    if data is None:
        return "rejected", dead_letters.make(
            path, line_no, dead_letters.TOO_LARGE,
            f"line is {size} bytes, over the {limit}-byte line limit for "
            f"--max-doc-bytes {max_doc_bytes}; skipped unread", split=split)
    if layout is None and _orjson_loads is not None:
        obj = _plain_mc4_record(data, max_doc_bytes)
        if obj is not None:
            return "doc", obj
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return "rejected", dead_letters.make(
            path, line_no, dead_letters.INVALID_UTF8, str(err),
            data.decode("utf-8", "backslashreplace"), split=split)
    try:
        obj = json.loads(decoded)
    except ValueError as err:
        return "rejected", dead_letters.make(
            path, line_no, dead_letters.MALFORMED_JSON, str(err), decoded, split=split)
    except RecursionError:  # "[[[[..." a thousand deep: json recurses once per level
        return "rejected", dead_letters.make(
            path, line_no, dead_letters.MALFORMED_JSON, "JSON nested too deeply to parse",
            decoded, split=split)
    if layout is not None:
        record, reason, detail = apply_layout(obj, layout, declared=True)
        if reason:
            return "rejected", dead_letters.make(path, line_no, reason, detail, obj, split=split)
        reason, detail = validate_document(record, max_doc_bytes)
        if reason:
            return "rejected", dead_letters.make(path, line_no, reason, detail, obj, split=split)
        return "doc", record
    reason, detail = validate_document(obj, max_doc_bytes)
    if reason:
        return "rejected", dead_letters.make(path, line_no, reason, detail, obj, split=split)
    return "doc", obj


def iter_parquet_rows(path: str, max_doc_bytes: int, extra_columns: tuple[str, ...] = (),
                      layout=None, carried: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Parquet rows go through the same checks as JSON records (binary `text` must be UTF-8).

    `carried`: columns of a pre-scored file passed through to the sampled outputs (ids and
    extras, layouts.carried_columns), as one dict `doc["carried"]` in the file's column order,
    so that a column named like a document's own keys (CulturaX's `source`) changes none of them.

    A file that is not readable parquet (zero bytes, a directory, a corrupt or truncated file)
    is one dead letter at the row where reading broke off; the rows before it are kept.
    With a non-mC4 `layout`, every column is read (the extras are carried through)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = custom_layout(layout)
    file_split = split_of(path)
    row_no = 0
    read_per_split: dict[str, int] = {}  # a `split` column can put rows of one file in both

    def fault(reason: str, detail: str):
        read_per_split[file_split] = read_per_split.get(file_split, 0) + 1
        return "rejected", dead_letters.make(path, row_no + 1, reason, detail, split=file_split)

    try:
        raw = _WatchedStream(open_binary(path))
    except IsADirectoryError as err:
        raw = None
        yield fault(dead_letters.NOT_A_FILE, str(err))
    if raw is not None:
        with raw:
            try:
                parquet = pq.ParquetFile(raw)
                names = set(parquet.schema_arrow.names)
                wanted = [c for c in ("text", "url", "timestamp", "split", *extra_columns, *carried)
                          if c in names] if layout is None else parquet.schema_arrow.names
                # One row group at a time: a batch spanning row groups would lose the good
                # rows before a damaged group along with it.
                batches = (batch for group in range(parquet.num_row_groups)
                           for batch in parquet.iter_batches(batch_size=2048, columns=wanted,
                                                             row_groups=[group]))
                for batch in batches:
                    for row in batch.to_pylist():
                        row_no += 1
                        split = row.get("split") if layout is None and row.get("split") in SPLITS \
                            else file_split
                        read_per_split[split] = read_per_split.get(split, 0) + 1
                        yield from _check_row(path, row_no, row, split, max_doc_bytes,
                                              extra_columns, layout, carried)
            except (pa.ArrowException, ValueError, OSError) as err:
                # pyarrow says "broken file" with ArrowInvalid (bad magic, footer) or a plain
                # OSError (undecodable thrift, a page cut short). An error of the byte stream
                # itself (a remote read failing) is not the file's fault: it is raised, so
                # that Beam retries the bundle.
                if raw.failed is not None:
                    raise
                reason = dead_letters.EMPTY_FILE if row_no == 0 and _is_empty(path) \
                    else dead_letters.CORRUPT_PARQUET
                yield fault(reason, f"{type(err).__name__}: {err}")
    if not read_per_split:
        read_per_split[file_split] = 0
    for split in sorted(read_per_split):
        yield "count", FileCount(path, split, read_per_split[split])


class _WatchedStream:
    """A file object that remembers whether reading it failed, to tell a broken parquet file
    (pyarrow fails on good bytes) from a broken read (the stream fails)."""

    def __init__(self, raw):
        self._raw = raw
        self.failed: BaseException | None = None

    def _watch(self, method, *args):
        try:
            return method(*args)
        except Exception as err:
            self.failed = err
            raise

    def read(self, *args):
        return self._watch(self._raw.read, *args)

    def readinto(self, *args):
        return self._watch(self._raw.readinto, *args)

    def seek(self, *args):
        return self._watch(self._raw.seek, *args)

    def tell(self):
        return self._watch(self._raw.tell)

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()


def _is_empty(path: str) -> bool:
    try:
        with open_binary(path) as raw:
            return not raw.read(1)
    except OSError:
        return False


def _check_row(path: str, row_no: int, row: dict, split: str, max_doc_bytes: int,
               extra_columns: tuple[str, ...], layout=None, carried: tuple[str, ...] = ()
               ) -> Iterator[tuple[str, Any]]:
    if layout is not None:
        original = row
        row, reason, detail = apply_layout(row, layout)
        if reason:
            yield "rejected", dead_letters.make(path, row_no, reason, detail, original,
                                                split=split)
            return
    text = row.get("text")
    if isinstance(text, bytes):
        try:
            row["text"] = text.decode("utf-8")
        except UnicodeDecodeError as err:
            yield "rejected", dead_letters.make(
                path, row_no, dead_letters.INVALID_UTF8, str(err),
                {**row, "text": text.decode("utf-8", "backslashreplace")}, split=split)
            return
    reason, detail = validate_document(row, max_doc_bytes)
    if reason:
        yield "rejected", dead_letters.make(path, row_no, reason, detail, row, split=split)
        return
    doc = _document(row, split, path, row_no)
    for column in extra_columns:
        doc[column] = row.get(column)
    if carried:
        doc["carried"] = {column: row.get(column) for column in carried}
    yield "doc", doc

