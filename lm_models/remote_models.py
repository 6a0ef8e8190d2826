"""A model at a URL or a registry name: which files to fetch (from the source and its
model.json), fetching them into the cache (`resolve_remote`), and describing them without
downloading the KenLM binary (`describe_remote`)."""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from lm_models import language_registry
from lm_models.errors import ModelSourceError
from lm_models.model_cache import Expected
from lm_models.model_fetchers import Fetcher, FsspecFetcher, HttpFetcher, hub_fetcher
from lm_models.model_layout import (DEFAULT_LANGUAGE, LM_SUFFIXES, MODEL_JSON, SP_SUFFIX,
                                    ModelFiles, check_file_name, files_from_model_json,
                                    read_model_json, split_lm_file)
from lm_models.url_redaction import redact_url, scrub


@dataclass
class _RemotePlan:
    """Which files of a remote model to fetch: read from the source and its model.json only."""

    fetcher: Fetcher
    model_json: dict[str, Any] | None
    lm_candidates: list[str]
    sp_name: str


def _split_source(source: str) -> tuple[str, str, str]:
    """(directory URL, file name or "", query) of a remote source. http(s) URLs are parsed, so a
    query string (`?X-Amz-Signature=...`, `?token=...`) is neither part of the file name nor of
    the directory; the name is the path's last part, percent-decoded."""
    if source.startswith(("http://", "https://")):
        try:
            parts = urllib.parse.urlsplit(source)
        except ValueError as exc:
            raise ModelSourceError(f"model source {redact_url(source)!r}: not a valid URL "
                                   f"({scrub(str(exc), source)})") from None
        base_path, _, last = parts.path.rstrip("/").rpartition("/")
        name = urllib.parse.unquote(last)
        if split_lm_file(name) is None:
            base_path, name = parts.path.rstrip("/"), ""
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
        return base, name, parts.query
    base, _, last = source.rstrip("/").rpartition("/")
    if split_lm_file(last) is None:
        return source.rstrip("/"), "", ""
    return base, last, ""


def _registry_plan(model) -> _RemotePlan:
    """A `FAMILY:LANG` registry model: its URL, and its published hash as model.json's."""
    base, _, query = _split_source(model.lm_url)
    url = model.lm_url
    fetcher = HttpFetcher(url, base, query) if url.startswith(("http://", "https://")) \
        else FsspecFetcher(url, base)
    return _RemotePlan(fetcher, model.model_json(), [model.lm_name], model.sp_name)


def _remote_plan(source: str) -> _RemotePlan:
    registered = language_registry.parse_name(source)
    if registered is not None:
        return _registry_plan(registered)
    base, named_file, query = _split_source(source)
    named = split_lm_file(named_file) if named_file else None
    if named:  # a name from the URL is joined to the cache directory too: checked the same way
        check_file_name(named_file, source, "the URL")
    if source.startswith("hf://"):
        fetcher: Fetcher = hub_fetcher(base if named else source)
    elif source.startswith(("http://", "https://")):
        fetcher = HttpFetcher(source, base, query)
    else:
        fetcher = FsspecFetcher(source, base)

    model_json, wanted, lang, sp_name = None, [], DEFAULT_LANGUAGE, None
    if named:
        wanted, lang = [named_file], named[0]
    else:
        json_path = fetcher.fetch(MODEL_JSON)
        if json_path is not None:
            with fetcher.scrubbed():
                model_json = read_model_json(json_path, fetcher.shown)
            lm_name, sp_name = files_from_model_json(model_json)
            # Checked before any request for them: model.json comes from the server.
            for name in (lm_name, sp_name):
                if name is not None:
                    check_file_name(name, source, f"its {MODEL_JSON}")
            if lm_name:
                wanted, lang = [lm_name], (split_lm_file(lm_name) or (lm_name, ""))[0]
        if not wanted:
            wanted = [lang + suffix for suffix in LM_SUFFIXES]
    return _RemotePlan(fetcher, model_json, wanted, sp_name or lang + SP_SUFFIX)


def _no_model(source: str, plan: _RemotePlan) -> ModelSourceError:
    return plan.fetcher.error(
        f"model source {redact_url(source)!r}: no KenLM model found (looked for "
        f"{', '.join(plan.fetcher.display_url(w) for w in plan.lm_candidates)})")


def resolve_remote(source: str) -> ModelFiles:
    plan = _remote_plan(source)
    fetcher, model_json = plan.fetcher, plan.model_json
    lm_path = None
    for name in plan.lm_candidates:
        lm_path = fetcher.fetch(name, Expected.from_model_json(model_json, name))
        if lm_path is not None:
            break
    if lm_path is None:
        raise _no_model(source, plan)
    sp_path = fetcher.fetch(plan.sp_name, Expected.from_model_json(model_json, plan.sp_name))
    urls = {lm_path.name: fetcher.display_url(lm_path.name)}
    if sp_path is not None:
        urls[plan.sp_name] = fetcher.display_url(plan.sp_name)
    return ModelFiles(source=source, directory=lm_path.parent, lm_path=lm_path, sp_path=sp_path,
                      model_json=model_json, urls=urls)


def describe_remote(source: str) -> dict[str, Any]:
    """What a remote model is, without downloading its KenLM binary (which can be several GB):
    its model.json (small, fetched into the cache) and the sizes of its files (HEAD for http(s),
    `info` for fsspec URLs, file metadata for hf://). For the launcher's early checks.

    Returns {"source", "model_json", "preset" (from model.json, or None), "files": {name: {"url",
    "size"}}}, with the SentencePiece model's entry only when it exists; "source" and the URLs
    are redacted (`redact_url`). Raises ModelSourceError when the source is unreachable or holds
    no KenLM model, or when a size differs from the one model.json records.
    """
    plan = _remote_plan(source)
    files: dict[str, dict[str, Any]] = {}
    for name in plan.lm_candidates:
        size = plan.fetcher.size(name)
        if size is not None:
            files[name] = {"url": plan.fetcher.display_url(name), "size": size}
            break
    if not files:
        raise _no_model(source, plan)
    sp_size = plan.fetcher.size(plan.sp_name)
    if sp_size is not None:
        files[plan.sp_name] = {"url": plan.fetcher.display_url(plan.sp_name), "size": sp_size}
    for name, info in files.items():
        expected = Expected.from_model_json(plan.model_json, name).size
        if expected is not None and info["size"] and info["size"] != expected:
            raise ModelSourceError(f"model source {redact_url(source)!r}: {info['url']} has "
                                   f"{info['size']:,} bytes but its model.json records "
                                   f"{expected:,}")
    preset = (plan.model_json or {}).get("preset")
    return {"source": redact_url(source), "model_json": plan.model_json,
            "preset": preset if isinstance(preset, str) else None, "files": files}
