"""Where a perplexity model's files come from: a bundled name, a local directory, or a URL.

A model is a directory with a KenLM model (`es.arpa.bin`, or ARPA `es.arpa`), a SentencePiece
model (`es.sp.model`) and, when we trained it, `model.json`. That is cc_net's and edugp/kenlm's
layout, so their published models load as they are:

- bundled name        `es-reference`                       -> lm_models/bundled/es-reference/
- local directory     `/models/wiki-es`                    (or a path to its `es.arpa.bin` file)
- fsspec URL          `gs://b/models/es`, `s3://...`, `https://.../cc_net/lm/es.arpa.bin`
- Hugging Face        `hf://edugp/kenlm/wikipedia`         (or `.../wikipedia/es.arpa.bin`,
                       `hf://owner/repo@revision/subdir`)
- registry name       `ccnet:fr`, `edugp:fr`                (lm_models.language_registry: the published
                       URL, preset and sha256 of a language's model)

A directory holding several languages (cc_net's `lm/`, edugp's `wikipedia/`) is read as Spanish
(`es.*`) unless the source names the `.arpa.bin` / `.arpa` file of another language.
Remote files are downloaded once per machine into the verified, locked cache (model_cache);
`describe_remote` reads model.json and the file sizes only, for the launcher's early checks.
A remote server is not trusted with paths (model_layout.check_file_name, model_cache's
inside_cache), and a URL's query string is shown nowhere (url_redaction.redact_url).

This module is the entry: `resolve` and the names other code imports. The parts live in
    url_redaction   redact_url / scrub: what messages show of a URL
    model_layout    a model directory's files, model.json, ModelFiles, check_file_name
    local_models    bundled names and local directories
    model_cache     the locked, verified download cache (locked_fetch, cache_hit)
    model_fetchers  fsspec, http(s) and hf:// fetchers of one remote directory
    remote_models   URLs and registry names: resolve_remote, describe_remote
"""
from __future__ import annotations

import os
from pathlib import Path

from lm_models import language_registry
from lm_models.errors import ModelSourceError
from lm_models.local_models import BUNDLED_DIR, bundled_names, resolve_local
from lm_models.model_cache import Expected, cache_hit, cache_root, locked_fetch, recorded_sha256
from lm_models.model_layout import (KENLM_BINARY_MAGIC, MODEL_JSON, SP_SUFFIX, ModelFiles,
                                    check_file_name, check_lm_file)
from lm_models.remote_models import describe_remote, resolve_remote
from lm_models.url_redaction import redact_url

# The public API (docs/INTERFACES.md), each name defined in the module that holds its part.
__all__ = ["KENLM_BINARY_MAGIC", "MODEL_JSON", "SP_SUFFIX", "Expected", "ModelFiles",
           "ModelSourceError", "bundled_names", "cache_hit", "cache_root", "check_file_name",
           "check_lm_file", "describe_remote", "is_registry_name", "is_url", "locked_fetch",
           "recorded_sha256", "redact_url", "resolve"]


def is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_registry_name(source: str) -> bool:
    """`ccnet:fr`, `edugp:fr`: a published model of lm_models.language_registry."""
    return language_registry.parse_name(source) is not None


def resolve(source: str | os.PathLike) -> ModelFiles:
    """Local files of the model named by `source` (see the module docstring for the forms)."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"model source must be a str or path, got {type(source).__name__}")
    text = os.fspath(source)
    if not text:
        raise ModelSourceError("model source is empty; give a bundled name "
                               f"({', '.join(bundled_names()) or 'none'}), a directory or a URL")
    if text.startswith("file://"):
        text = text[len("file://"):]
    if is_url(text) or is_registry_name(text):
        return resolve_remote(text)
    if text in bundled_names() and not Path(text).exists():
        return resolve_local(text, BUNDLED_DIR / text)
    return resolve_local(os.path.abspath(text), Path(text).resolve())
