"""Reading mC4-layout documents: gzipped or plain JSON lines, and parquet, from any glob.

Each file is read whole by one worker (gzip is not splittable), line by line as bytes, so that
a bad line costs one dead letter and not the file: invalid UTF-8, malformed JSON, a missing or
non-string `text`, a wrong-typed `url`/`timestamp`, a document over the size limit, and a gzip
stream that ends early (the records before the cut are kept, the cut is one rejection).
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.corpus_io import dead_letters

TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)

# Documents larger than this are dead-lettered: a single multi-hundred-MB "document" is almost
# always a broken crawl record, and it would pin a worker's memory while being scored.
DEFAULT_MAX_DOC_BYTES = 4 * 1024 * 1024

PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = (".parquet", ".json.gz", ".jsonl.gz", ".jsonl")


def split_of(path: str) -> str:
    """mC4 names validation shards `c4-es-validation.tfrecord-...`; anything else is train."""
    return VALIDATION if "validation" in os.path.basename(path).lower() else TRAIN


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
        else:
            import fsspec  # only for schemes Beam has no filesystem for (hf://, http://, ...)

            fs, _token, paths = fsspec.get_fs_token_paths(pattern)
            matched = [fs.unstrip_protocol(p) for p in paths]
        matched = [p for p in matched if not _is_hidden(p)]
        if not matched:
            raise FileNotFoundError(f"input pattern matched no files: {pattern!r}")
        files.update(matched)
    return sorted(files)


def _is_hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith((".", "_"))


def open_binary(path: str):
    """A raw (not decompressed) binary stream for any path Beam or fsspec can read."""
    if _beam_knows(path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    import fsspec

    return fsspec.open(path, "rb").open()


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
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\ud800"-style escapes
        return dead_letters.INVALID_UTF8, "text holds unpaired surrogates"
    return None, ""


def _document(obj: dict, split: str, source: str, line: int) -> dict:
    return {"text": obj["text"], "url": obj.get("url"), "timestamp": obj.get("timestamp"),
            "split": split, "source": source, "line": line}


@dataclass
class FileCount:
    """How many records one file held, counted by the reader itself (before any filtering),
    so `read = scored + rejected` is checked rather than assumed."""
    source: str
    split: str
    read: int


def iter_json_lines(path: str, max_doc_bytes: int) -> Iterator[tuple[str, Any]]:
    """Yields ("doc", document) / ("rejected", dead letter) / ("count", FileCount)."""
    split = split_of(path)
    line_no = 0
    raw = open_binary(path)
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.lower().endswith(".gz") else raw
    try:
        lines = iter(stream)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except EOFError as err:  # gzip stream cut short: keep what came before
                line_no += 1
                yield "rejected", dead_letters.make(path, line_no, dead_letters.TRUNCATED_GZIP, str(err), split=split)
                break
            except (gzip.BadGzipFile, zlib.error) as err:  # bad header or CRC: stop this file
                line_no += 1
                yield "rejected", dead_letters.make(path, line_no, dead_letters.CORRUPT_GZIP, str(err), split=split)
                break
            if not line.strip():
                continue  # blank lines are not records
            line_no += 1
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield "rejected", dead_letters.make(
                    path, line_no, dead_letters.INVALID_UTF8, str(err),
                    line.decode("utf-8", "backslashreplace").rstrip("\n"), split=split)
                continue
            try:
                obj = json.loads(decoded)
            except ValueError as err:
                yield "rejected", dead_letters.make(
                    path, line_no, dead_letters.MALFORMED_JSON, str(err), decoded.rstrip("\n"),
                    split=split)
                continue
            reason, detail = validate_document(obj, max_doc_bytes)
            if reason:
                yield "rejected", dead_letters.make(path, line_no, reason, detail, obj, split=split)
                continue
            yield "doc", _document(obj, split, path, line_no)
    finally:
        stream.close()
        raw.close()
    yield "count", FileCount(path, split, line_no)


def iter_parquet_rows(path: str, max_doc_bytes: int, extra_columns: tuple[str, ...] = ()
                      ) -> Iterator[tuple[str, Any]]:
    """Parquet rows go through the same checks as JSON records (binary `text` must be UTF-8)."""
    import pyarrow.parquet as pq

    file_split = split_of(path)
    row_no = 0
    read_per_split: dict[str, int] = {}  # a `split` column can put rows of one file in both
    with open_binary(path) as raw:
        parquet = pq.ParquetFile(raw)
        names = set(parquet.schema_arrow.names)
        wanted = [c for c in ("text", "url", "timestamp", "split", *extra_columns) if c in names]
        for batch in parquet.iter_batches(batch_size=2048, columns=wanted):
            for row in batch.to_pylist():
                row_no += 1
                split = row.get("split") if row.get("split") in SPLITS else file_split
                read_per_split[split] = read_per_split.get(split, 0) + 1
                text = row.get("text")
                if isinstance(text, bytes):
                    try:
                        row["text"] = text.decode("utf-8")
                    except UnicodeDecodeError as err:
                        yield "rejected", dead_letters.make(
                            path, row_no, dead_letters.INVALID_UTF8, str(err),
                            {**row, "text": text.decode("utf-8", "backslashreplace")}, split=split)
                        continue
                reason, detail = validate_document(row, max_doc_bytes)
                if reason:
                    yield "rejected", dead_letters.make(path, row_no, reason, detail, row, split=split)
                    continue
                doc = _document(row, split, path, row_no)
                for column in extra_columns:
                    doc[column] = row.get(column)
                yield "doc", doc
    if not read_per_split:
        read_per_split[file_split] = 0
    for split in sorted(read_per_split):
        yield "count", FileCount(path, split, read_per_split[split])


# Documents travel in lists of this many from the reader on: Beam's cost per element
# (reshuffle keys, windowing, coder calls) is then paid per batch, and the scorer gets batches.
DEFAULT_BATCH_SIZE = 256


class ReadFileDocuments(beam.DoFn):
    """path -> lists of documents (main output), dead letters ("rejected"), per-file counts
    ("counts")."""

    def __init__(self, max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
                 extra_columns: tuple[str, ...] = (), batch_size: int = DEFAULT_BATCH_SIZE):
        self.max_doc_bytes = max_doc_bytes
        self.extra_columns = tuple(extra_columns)
        self.batch_size = batch_size
        self.read_counter = Metrics.counter("ppsample", "read")
        self.files_counter = Metrics.counter("ppsample", "files")

    def process(self, path: str):
        records = (iter_parquet_rows(path, self.max_doc_bytes, self.extra_columns)
                   if is_parquet(path) else iter_json_lines(path, self.max_doc_bytes))
        batch = []
        for kind, item in records:
            if kind == "doc":
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
            elif kind == "rejected":
                dead_letters.count(item)
                yield beam.pvalue.TaggedOutput("rejected", item)
            else:
                self.read_counter.inc(item.read)
                self.files_counter.inc()
                yield beam.pvalue.TaggedOutput("counts", (item.split, item.read))
        if batch:
            yield batch


class ReadDocuments(beam.PTransform):
    """Files -> batches of documents, fanned out with a Reshuffle: each gzip shard is read by
    one worker, and without the reshuffle every later stage would inherit that
    one-file-per-worker split.

    Returns a dict: `batches` (lists of documents), `rejected` (dead letters) and `counts`
    ((split, records read) per file)."""

    def __init__(self, files: list[str], max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
                 extra_columns: tuple[str, ...] = (), batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self.files = list(files)
        self.max_doc_bytes = max_doc_bytes
        self.extra_columns = tuple(extra_columns)
        self.batch_size = batch_size

    def expand(self, pbegin):
        outputs = (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadFileDocuments(self.max_doc_bytes, self.extra_columns,
                                                          self.batch_size))
            .with_outputs("rejected", "counts", main="batches"))
        batches = outputs.batches | "SpreadBatches" >> beam.Reshuffle()
        return {"batches": batches, "rejected": outputs.rejected, "counts": outputs.counts}
