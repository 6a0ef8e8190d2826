"""Dead letters: records that cannot be scored, each with its file, line and reason.

They are written to `OUT/rejected/rejected-NNNNN-of-NNNNN.jsonl`, sorted by (source, line), and counted
per reason in Beam metrics (`ppsample/rejected_<reason>`), so a bad shard never stops a job and
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

REASONS = (MALFORMED_JSON, INVALID_UTF8, MISSING_TEXT, NON_STRING_TEXT, TOO_LARGE,
           TRUNCATED_GZIP, CORRUPT_GZIP, WRONG_TYPE_URL, WRONG_TYPE_TIMESTAMP, BAD_PERPLEXITY)

# A dead letter keeps the raw record so it can be inspected, but not a whole 100 MB one.
MAX_RECORD_CHARS = 10_000


def _jsonable(value: Any) -> Any:
    """Round-trips through JSON so parquet values (bytes, datetimes) become plain JSON."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=repr))


def _shorten(record: Any) -> Any:
    if isinstance(record, str) and len(record) > MAX_RECORD_CHARS:
        return record[:MAX_RECORD_CHARS]
    if isinstance(record, dict) and isinstance(record.get("text"), str) \
            and len(record["text"]) > MAX_RECORD_CHARS:
        return {**record, "text": record["text"][:MAX_RECORD_CHARS], "text_truncated": True}
    return record


def make(source: str, line: int, reason: str, detail: str = "", record: Any = None,
         split: str | None = None) -> dict:
    """One dead letter; `line` is 1-based (JSON lines: non-blank line; parquet: row); `split`
    is the split the record was counted in when read (its file name's, or its split column)."""
    if reason not in REASONS:
        raise ValueError(f"unknown dead-letter reason {reason!r}")
    letter = {"source": source, "line": int(line), "reason": reason, "detail": detail,
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


def sort_key(letter: dict) -> tuple:
    return (letter["source"], letter["line"], letter["reason"])


def to_line(letter: dict) -> str:
    return json.dumps(letter, ensure_ascii=False, sort_keys=True) + "\n"
