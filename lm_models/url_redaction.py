"""What messages show of a model source's URL: a URL's query string (a presigned URL's
signature, `?token=...`), fragment and user:password@ are secrets, replaced by <redacted> in
every message, log line and description (`redact_url`), and scrubbed from any text that may
quote them (`scrub`)."""
from __future__ import annotations

import urllib.parse

REDACTED = "<redacted>"


def redact_url(text: str) -> str:
    """`text` with a URL's query, fragment and user:password@ replaced by <redacted>: what every
    message, log line and description shows of a source (a presigned URL's query is a secret)."""
    if "://" not in text:
        return text
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:  # e.g. an invalid IPv6 host: show the scheme only
        return text.split("://", 1)[0] + "://" + REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path,
                                    REDACTED if parts.query else "",
                                    REDACTED if parts.fragment else ""))


def secrets_of(source: str) -> list[str]:
    """The parts of a URL that `redact_url` hides, in every spelling a message might carry."""
    if "://" not in source:
        return []
    try:
        parts = urllib.parse.urlsplit(source)
    except ValueError:
        return [source]
    found = [parts.query, parts.fragment]
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    found += [userinfo, userinfo.partition(":")[2]]
    spelled = set()
    for item in filter(None, found):
        spelled |= {item, urllib.parse.unquote(item), urllib.parse.unquote_plus(item)}
        # each value of a query on its own too (urllib may quote the pairs differently)
        for _, value in urllib.parse.parse_qsl(item, keep_blank_values=False):
            if len(value) >= 4:
                spelled |= {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    return sorted(spelled, key=len, reverse=True)  # longest first: no half-replaced secret


def scrub(text: str, source: str) -> str:
    """`text` with every secret part of `source` (see `redact_url`) replaced by <redacted>."""
    for secret in secrets_of(source):
        text = text.replace(secret, REDACTED)
    return text
