"""What a model directory holds and how its file names are read: a KenLM model (`es.arpa.bin`,
or ARPA `es.arpa`), a SentencePiece model (`es.sp.model`) and, when we trained it, `model.json`
(cc_net's and edugp/kenlm's layout). File names that come from a remote server are checked to be
plain names (`check_file_name`) before anything is joined to a cache path."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_models.errors import ModelSourceError
from lm_models.url_redaction import redact_url, scrub

DEFAULT_LANGUAGE = "es"
LM_SUFFIXES = (".arpa.bin", ".arpa")  # preference order in a directory
SP_SUFFIX = ".sp.model"
MODEL_JSON = "model.json"


def check_file_name(name: str, source: str, where: str) -> str:
    """`name` when it is a plain file name; ModelSourceError otherwise. File names come from a
    remote model.json or URL and are joined to the cache directory: `../x`, `/abs`, `a/b`, `a\\b`
    or NUL would write wherever the server likes (a `.pth` in site-packages runs at the next
    Python start); hidden names would collide with the cache's own `.NAME.lock` / `.verified`."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "is empty or not a string"
    elif any(c in name for c in "/\\\0") or any(ord(c) < 32 for c in name):
        problem = "holds a path separator or a control character"
    elif name.startswith(".") or name in (".", ".."):
        problem = "is hidden or a relative path"
    elif os.path.isabs(name) or os.path.splitdrive(name)[0] or ":" in name:
        problem = "is absolute or names a drive"
    elif len(name.encode("utf-8", "surrogatepass")) > 255:
        problem = "is longer than 255 bytes"
    if problem:
        raise ModelSourceError(f"model source {redact_url(source)!r}: {where} names the file "
                               f"{scrub(repr(name), source)}, which {problem}; a model's files "
                               "must be plain file names in its directory")
    return name


@dataclass
class ModelFiles:
    """Local paths of one model's files (downloaded into the cache when the source is remote)."""

    source: str
    directory: Path
    lm_path: Path
    sp_path: Path | None
    model_json: dict[str, Any] | None = None
    urls: dict[str, str] = field(default_factory=dict)  # file name -> where it came from (redacted)

    @property
    def display_source(self) -> str:
        """`source` as messages and descriptions show it: a URL's query and user:password@
        redacted. `source` itself keeps them: workers reload the model from it."""
        return redact_url(self.source)


def split_lm_file(name: str) -> tuple[str, str] | None:
    """`es.arpa.bin` -> ("es", ".arpa.bin"); None when `name` is not a KenLM file name."""
    for suffix in LM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def read_model_json(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model source {source!r}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelSourceError(f"model source {source!r}: {path} is not a JSON object")
    return data


def files_from_model_json(model_json: dict[str, Any]) -> tuple[str | None, str | None]:
    files = model_json.get("files") or {}
    lm = files.get("lm") if isinstance(files, dict) else None
    sp = files.get("sp") if isinstance(files, dict) else None
    return (lm if isinstance(lm, str) else None), (sp if isinstance(sp, str) else None)


KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz: KenLM reads them as ARPA


def check_lm_file(path: Path) -> None:
    """Raises ModelSourceError unless `path` starts like a KenLM binary or an ARPA file (plain or
    compressed). KenLM's C++ loader would otherwise fail inside every worker, after printing its
    progress bar to stderr."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(KENLM_BINARY_MAGIC) or head.startswith(_COMPRESSED_MAGIC):
        return
    if head.lstrip().startswith(b"\\data\\"):
        return
    raise ModelSourceError(f"{path} is neither a KenLM binary (it starts with "
                           f"{KENLM_BINARY_MAGIC.decode()!r}) nor an ARPA file (it starts with "
                           "\\data\\): a damaged or wrong file")
