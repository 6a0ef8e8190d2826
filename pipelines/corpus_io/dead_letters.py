"""Dead letters: records that cannot be scored, each with its file, line and reason.

They are written beside the shard they come from, one file per input shard
(`SCORED/rejected/STEM.jsonl`, `OUT/rejected/STEM.jsonl`), in the order the records were read, and
counted per reason in Beam metrics (`ppsample/rejected_<reason>`), so a bad shard never stops a job and
never disappears silently.
"""
from __future__ import annotations

import json
from typing import Any

from apache_beam.metrics import Metrics

MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
MISSING_TEXT = "missing_text"
NON_STRING_TEXT = "non_string_text"
TOO_LARGE = "document_too_large"
TRUNCATED_GZIP = "truncated_gzip"
CORRUPT_GZIP = "corrupt_gzip"
WRONG_TYPE_URL = "wrong_type_url"
WRONG_TYPE_TIMESTAMP = "wrong_type_timestamp"
BAD_PERPLEXITY = "bad_perplexity"  # pre-scored parquet whose perplexity is missing / not > 0
EMPTY_FILE = "empty_file"  # a zero-byte .gz or parquet file (those formats have a header)
NOT_A_FILE = "not_a_file"  # an input path that is a directory
CORRUPT_PARQUET = "corrupt_parquet"  # not readable as parquet, or cut short
# ccnet presets: text that cc_net's normalisation turns into nothing gets no perplexity there
EMPTY_AFTER_NORMALIZATION = "empty_after_normalization"
# JSON lines of a named layout: a field its published schema declares holds another type
# (pipelines.corpus_io.layout_schemas)
WRONG_TYPE_EXTRA = "wrong_type_extra"

REASONS = (MALFORMED_JSON, INVALID_UTF8, MISSING_TEXT, NON_STRING_TEXT, TOO_LARGE,
           TRUNCATED_GZIP, CORRUPT_GZIP, WRONG_TYPE_URL, WRONG_TYPE_TIMESTAMP, BAD_PERPLEXITY,
           EMPTY_FILE, NOT_A_FILE, CORRUPT_PARQUET, EMPTY_AFTER_NORMALIZATION, WRONG_TYPE_EXTRA)

# A dead letter keeps the raw record so it can be inspected, but not a whole 100 MB one.
MAX_RECORD_CHARS = 10_000


# Deeper parts of a kept record are replaced by a marker: json.dumps and Beam's coder recurse
# once per level, and a record is kept to be read, not to reproduce a 900-deep list.
MAX_RECORD_DEPTH = 32
TOO_DEEP = "<nested too deeply>"


def _encodable(text: str) -> str:
    """Lone surrogates (JSON "\\ud800" escapes) become the text `\\ud800`: Beam's coder and
    the UTF-8 dead-letter file cannot hold them as they are."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _plain(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _encodable(value)
    if depth >= MAX_RECORD_DEPTH and isinstance(value, (dict, list, tuple)):
        return TOO_DEEP
    if isinstance(value, dict):
        return {_encodable(str(k)): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """Round-trips through JSON so parquet values (bytes, datetimes) become plain JSON; strings
    become encodable and nesting is bounded first."""
    return json.loads(json.dumps(_plain(value), ensure_ascii=False, default=repr))


def _shorten(record: Any) -> Any:
    if isinstance(record, str) and len(record) > MAX_RECORD_CHARS:
        return record[:MAX_RECORD_CHARS]
    if isinstance(record, dict) and isinstance(record.get("text"), str) \
            and len(record["text"]) > MAX_RECORD_CHARS:
        return {**record, "text": record["text"][:MAX_RECORD_CHARS], "text_truncated": True}
    return record


def make(source: str, line: int, reason: str, detail: str = "", record: Any = None,
         split: str | None = None) -> dict:
    """One dead letter; `line` is 1-based (JSON lines: the physical line, blank lines counted,
    as `sed -n Np` numbers them; parquet: row); `split` is the split the record was counted in
    when read (its file name's, or its split column)."""
    if reason not in REASONS:
        raise ValueError(f"unknown dead-letter reason {reason!r}")
    letter = {"source": _encodable(source), "line": int(line), "reason": reason,
              "detail": _encodable(detail),
              "record": _jsonable(_shorten(record))}
    if split is not None:
        letter["split"] = split
    return letter


_counters: dict[str, Any] = {}


def count(letter: dict) -> None:
    reason = letter["reason"]
    if reason not in _counters:
        _counters[reason] = Metrics.counter("ppsample", f"rejected_{reason}")
    _counters[reason].inc()
    if "rejected" not in _counters:
        _counters["rejected"] = Metrics.counter("ppsample", "rejected")
    _counters["rejected"].inc()
