"""Where a perplexity model's files come from: a bundled name, a local directory, or a URL.

A model is a directory with a KenLM model (`es.arpa.bin`, or ARPA `es.arpa`), a SentencePiece
model (`es.sp.model`) and, when we trained it, `model.json`. That is cc_net's and edugp/kenlm's
layout, so their published models load as they are:

- bundled name        `es-reference`                       -> lm_models/bundled/es-reference/
- local directory     `/models/wiki-es`                    (or a path to its `es.arpa.bin` file)
- fsspec URL          `gs://b/models/es`, `s3://...`, `https://.../cc_net/lm/es.arpa.bin`
- Hugging Face        `hf://edugp/kenlm/wikipedia`         (or `.../wikipedia/es.arpa.bin`,
                       `hf://owner/repo@revision/subdir`)

A directory holding several languages (cc_net's `lm/`, edugp's `wikipedia/`) is read as Spanish
(`es.*`) unless the source names the `.arpa.bin` / `.arpa` file of another language.
Remote files are downloaded once per machine into the cache (`$PPSAMPLE_CACHE`, default
`~/.cache/ppsample/models`); each download goes to a temporary file that is renamed into place
only when complete, so an interrupted download is never mistaken for a model.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_LANGUAGE = "es"
LM_SUFFIXES = (".arpa.bin", ".arpa")  # preference order in a directory
SP_SUFFIX = ".sp.model"
MODEL_JSON = "model.json"


class ModelSourceError(OSError):
    """A model source could not be resolved or fetched; the message names the source."""


@dataclass
class ModelFiles:
    """Local paths of one model's files (downloaded into the cache when the source is remote)."""

    source: str
    directory: Path
    lm_path: Path
    sp_path: Path | None
    model_json: dict[str, Any] | None = None
    urls: dict[str, str] = field(default_factory=dict)  # file name -> where it came from


def bundled_names() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / MODEL_JSON).is_file())


def cache_root() -> Path:
    return Path(os.environ.get("PPSAMPLE_CACHE", Path.home() / ".cache" / "ppsample" / "models"))


def is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _split_lm_file(name: str) -> tuple[str, str] | None:
    """`es.arpa.bin` -> ("es", ".arpa.bin"); None when `name` is not a KenLM file name."""
    for suffix in LM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def _read_model_json(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model source {source!r}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelSourceError(f"model source {source!r}: {path} is not a JSON object")
    return data


def _files_from_model_json(model_json: dict[str, Any]) -> tuple[str | None, str | None]:
    files = model_json.get("files") or {}
    lm = files.get("lm") if isinstance(files, dict) else None
    sp = files.get("sp") if isinstance(files, dict) else None
    return (lm if isinstance(lm, str) else None), (sp if isinstance(sp, str) else None)


def resolve_local(source: str, path: Path) -> ModelFiles:
    """Files of a model in a local directory (or named by the path of its KenLM file)."""
    if path.is_file():
        split = _split_lm_file(path.name)
        if split is None:
            raise ModelSourceError(
                f"model source {source!r}: {path} is neither a model directory nor a KenLM "
                f"file ({' / '.join('*' + s for s in LM_SUFFIXES)})")
        directory, wanted = path.parent, [path.name]
        lang = split[0]
    elif path.is_dir():
        directory, wanted, lang = path, [], DEFAULT_LANGUAGE
    else:
        raise ModelSourceError(f"model source {source!r}: no such directory or file {path} "
                               f"(bundled models: {', '.join(bundled_names()) or 'none'})")
    model_json, sp_name = None, None
    if (directory / MODEL_JSON).is_file():
        model_json = _read_model_json(directory / MODEL_JSON, source)
        lm_name, json_sp_name = _files_from_model_json(model_json)
        if not wanted:  # a source naming its KenLM file picks that file over model.json's
            if lm_name:
                wanted = [lm_name]
                lang = (_split_lm_file(lm_name) or (lm_name, ""))[0]
            sp_name = json_sp_name
    if not wanted:
        wanted = [lang + suffix for suffix in LM_SUFFIXES]
        if not any((directory / w).is_file() for w in wanted):
            # A directory with exactly one KenLM model of another language is unambiguous.
            found = sorted(p.name for p in directory.iterdir() if _split_lm_file(p.name))
            if len(found) == 1:
                wanted = found
                lang = _split_lm_file(found[0])[0]
    lm_path = next((directory / w for w in wanted if (directory / w).is_file()), None)
    if lm_path is None:
        raise ModelSourceError(f"model source {source!r}: no KenLM model in {directory} "
                               f"(looked for {', '.join(wanted)})")
    sp_path = directory / (sp_name or lang + SP_SUFFIX)
    return ModelFiles(source=source, directory=directory, lm_path=lm_path,
                      sp_path=sp_path if sp_path.is_file() else None, model_json=model_json)


# ---------------------------------------------------------------------------- remote sources


def _cache_dir_for(key: str) -> Path:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return cache_root() / digest


def _atomic_fetch(open_remote, url: str, dest: Path, source: str) -> Path:
    """Copy `open_remote()` to `dest` through a temporary file renamed into place when complete."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open_remote() as remote:
            shutil.copyfileobj(remote, out, length=8 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)  # atomic: other processes see no file or the whole file
    except FileNotFoundError:
        _unlink(tmp)
        raise
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, Exception):
            raise ModelSourceError(f"model source {source!r}: cannot download {url}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        raise
    return dest


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Fetcher:
    """Fetch named files of one remote directory into its cache directory."""

    def __init__(self, source: str, base: str):
        self.source, self.base = source, base.rstrip("/")
        self.cache = _cache_dir_for(self.base)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def fetch(self, name: str) -> Path | None:
        """Local path of `name`, or None when the remote directory has no such file."""
        raise NotImplementedError


class _FsspecFetcher(_Fetcher):
    def __init__(self, source: str, base: str):
        super().__init__(source, base)
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.base)
        except (ImportError, ValueError) as exc:
            raise ModelSourceError(f"model source {source!r}: unsupported URL ({exc}); "
                                   "gs:// needs gcsfs, s3:// needs s3fs") from exc

    def fetch(self, name: str) -> Path | None:
        dest = self.cache / name
        if dest.is_file():
            return dest
        remote = f"{self.root}/{name}"
        try:
            return _atomic_fetch(lambda: self.fs.open(remote, "rb"), self.url(name), dest,
                                 self.source)
        except FileNotFoundError:
            return None


class _HttpFetcher(_Fetcher):
    """http(s) with the standard library: fsspec's HTTP needs aiohttp, too heavy for two files."""

    timeout_s = 60

    def fetch(self, name: str) -> Path | None:
        import urllib.error
        import urllib.request

        dest = self.cache / name
        if dest.is_file():
            return dest
        url = self.url(name)

        def open_remote():
            try:
                response = urllib.request.urlopen(url, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                if exc.code in (403, 404, 410):  # cloud buckets answer 403 for missing keys
                    raise FileNotFoundError(url) from exc
                raise
            return _LengthChecked(response, url)

        try:
            return _atomic_fetch(open_remote, url, dest, self.source)
        except FileNotFoundError:
            return None


class _LengthChecked:
    """A response that raises when the connection ends before Content-Length bytes arrived."""

    def __init__(self, response, url: str):
        self.response, self.url, self.received = response, url, 0
        length = response.headers.get("Content-Length")
        self.expected = int(length) if length and length.isdigit() else None

    def read(self, size: int = -1) -> bytes:
        data = self.response.read(size)
        self.received += len(data)
        if not data and self.expected is not None and self.received < self.expected:
            raise OSError(f"connection closed after {self.received:,} of {self.expected:,} bytes")
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.response.close()


class _HubFetcher(_Fetcher):
    """hf://owner/repo[@revision]/subdir: files through huggingface_hub (its own atomic cache)."""

    def __init__(self, source: str, repo_id: str, revision: str | None, subdir: str):
        super().__init__(source, f"hf://{repo_id}/{subdir}".rstrip("/"))
        self.repo_id, self.revision, self.subdir = repo_id, revision, subdir.strip("/")

    def fetch(self, name: str) -> Path | None:
        from huggingface_hub import hf_hub_download

        filename = f"{self.subdir}/{name}" if self.subdir else name
        try:
            return Path(hf_hub_download(self.repo_id, filename, revision=self.revision))
        except Exception as exc:  # huggingface_hub's errors vary by version; sort them by name
            kind = type(exc).__name__
            if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                return None
            hint = " (offline? set HF_HUB_OFFLINE=1 only when the files are cached)" \
                if kind in ("LocalEntryNotFoundError", "ConnectError", "ConnectionError") else ""
            raise ModelSourceError(f"model source {self.source!r}: cannot download {filename} "
                                   f"from Hugging Face repo {self.repo_id}: {kind}: {exc}{hint}"
                                   ) from exc


def _hub_fetcher(source: str) -> _HubFetcher:
    rest = source[len("hf://"):].strip("/")
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ModelSourceError(f"model source {source!r}: expected hf://owner/repo/subdir")
    repo, _, revision = parts[1].partition("@")
    return _HubFetcher(source, f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:]))


def resolve_remote(source: str) -> ModelFiles:
    base, _, last = source.rstrip("/").rpartition("/")
    named = _split_lm_file(last)
    if named is None:
        base, last = source.rstrip("/"), ""
    if source.startswith("hf://"):
        fetcher: _Fetcher = _hub_fetcher(base if named else source)
    elif source.startswith(("http://", "https://")):
        fetcher = _HttpFetcher(source, base)
    else:
        fetcher = _FsspecFetcher(source, base)

    model_json, wanted, lang, sp_name = None, [], DEFAULT_LANGUAGE, None
    if named:
        wanted, lang = [last], named[0]
    else:
        json_path = fetcher.fetch(MODEL_JSON)
        if json_path is not None:
            model_json = _read_model_json(json_path, source)
            lm_name, sp_name = _files_from_model_json(model_json)
            if lm_name:
                wanted, lang = [lm_name], (_split_lm_file(lm_name) or (lm_name, ""))[0]
        if not wanted:
            wanted = [lang + suffix for suffix in LM_SUFFIXES]
    lm_path = None
    for name in wanted:
        lm_path = fetcher.fetch(name)
        if lm_path is not None:
            break
    if lm_path is None:
        raise ModelSourceError(f"model source {source!r}: no KenLM model found "
                               f"(looked for {', '.join(fetcher.url(w) for w in wanted)})")
    sp_name = sp_name or lang + SP_SUFFIX
    sp_path = fetcher.fetch(sp_name)
    urls = {lm_path.name: fetcher.url(lm_path.name)}
    if sp_path is not None:
        urls[sp_name] = fetcher.url(sp_name)
    return ModelFiles(source=source, directory=lm_path.parent, lm_path=lm_path, sp_path=sp_path,
                      model_json=model_json, urls=urls)


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
    if is_url(text):
        return resolve_remote(text)
    if text in bundled_names() and not Path(text).exists():
        return resolve_local(text, BUNDLED_DIR / text)
    return resolve_local(os.path.abspath(text), Path(text).resolve())
