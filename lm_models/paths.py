"""Paths that are local files or URLs (gs://, hf://, any fsspec / Beam scheme) alike."""
from __future__ import annotations

import os
import posixpath


def join(base: str, *parts: str) -> str:
    """Join path parts: URLs with '/' (and no doubled slash after a trailing one), local
    paths with os.path.join."""
    if "://" in base:
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)
