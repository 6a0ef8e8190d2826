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
`~/.cache/ppsample/models`), shared by every process and every run on the machine: one process
downloads under a file lock while the others wait, into a temporary file that is checked (bytes
received; size and sha256 against model.json's `file_sizes` / `file_sha256` when present) and
renamed into place only then, so all processes memory-map the same file (one copy of a multi-GB
model in the page cache) and an interrupted download is never mistaken for a model. A sidecar
`.NAME.verified` records the size, mtime and sha256 of each checked file: a cache hit costs a
stat, and a cached file truncated since is downloaded again instead of handed to KenLM.
`describe_remote` reads model.json and the file sizes only, for the launcher's early checks.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_models.file_hash import sha256_file

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


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must be: from model.json's file_sizes / file_sha256, when present."""

    size: int | None = None
    sha256: str | None = None

    @classmethod
    def from_model_json(cls, model_json: dict[str, Any] | None, name: str) -> "Expected":
        sizes = (model_json or {}).get("file_sizes") or {}
        hashes = (model_json or {}).get("file_sha256") or {}
        size = sizes.get(name) if isinstance(sizes, dict) else None
        sha = hashes.get(name) if isinstance(hashes, dict) else None
        return cls(size if isinstance(size, int) else None, sha if isinstance(sha, str) else None)


NOTHING_EXPECTED = Expected()


def _sidecar(dest: Path) -> Path:
    """`.NAME.verified`: size, mtime and sha256 of a cached file, written once it was checked."""
    return dest.with_name(f".{dest.name}.verified")


def _lock_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


def _read_sidecar(dest: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_sidecar(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_sidecar(dest: Path, sha256: str) -> None:
    stat = dest.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    tmp = _sidecar(dest).with_suffix(f".{os.getpid()}.part")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, _sidecar(dest))


def cache_hit(dest: Path, expected: Expected = NOTHING_EXPECTED) -> bool:
    """True when `dest` is a complete, verified copy: a stat and a small JSON read, no hashing.
    The sidecar was written after the file's sha256 was checked, and records its size and mtime,
    so a file truncated or rewritten since (or a download that never finished) is not a hit."""
    try:
        stat = dest.stat()
    except OSError:
        return False
    if expected.size is not None and stat.st_size != expected.size:
        return False
    record = _read_sidecar(dest)
    if record is None or record.get("size") != stat.st_size \
            or record.get("mtime_ns") != stat.st_mtime_ns:
        return False
    return expected.sha256 is None or record.get("sha256") == expected.sha256


def _verify_unrecorded(dest: Path, expected: Expected) -> bool:
    """A cached file without a (matching) sidecar, e.g. from an older ppsample: hash it once when
    model.json says what it must be, and record it; without a known sha256 it is not trusted."""
    if expected.sha256 is None or not dest.is_file():
        return False
    if expected.size is not None and dest.stat().st_size != expected.size:
        return False
    if sha256_file(dest) != expected.sha256:
        return False
    _write_sidecar(dest, expected.sha256)
    return True


def locked_fetch(open_remote, url: str, dest: Path, source: str,
                 expected: Expected = NOTHING_EXPECTED) -> Path:
    """`dest`, downloaded at most once per machine however many processes ask at the same time.

    The first process takes a file lock beside `dest` and downloads into a temporary file that is
    checked (bytes received, model.json's size and sha256) and renamed into place only then; the
    others wait on the lock and find a verified file. Every process thus opens the same inode, so
    KenLM's memory map of a multi-GB model is one set of pages per machine, not one per process.
    """
    if cache_hit(dest, expected):
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(_lock_path(dest))):
        if cache_hit(dest, expected) or _verify_unrecorded(dest, expected):
            return dest
        return _download(open_remote, url, dest, source, expected)


def _download(open_remote, url: str, dest: Path, source: str, expected: Expected) -> Path:
    """Copy `open_remote()` to `dest` through a temporary file renamed into place when verified."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, open_remote() as remote:
            for block in iter(lambda: remote.read(8 << 20), b""):
                digest.update(block)
                size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if expected.size is not None and size != expected.size:
            raise OSError(f"got {size:,} bytes, model.json says {expected.size:,}")
        if expected.sha256 is not None and digest.hexdigest() != expected.sha256:
            raise OSError(f"sha256 {digest.hexdigest()} differs from model.json's {expected.sha256}")
        os.replace(tmp, dest)  # atomic: other processes see no file or the whole file
        _write_sidecar(dest, digest.hexdigest())
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

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        """Local path of `name`, or None when the remote directory has no such file."""
        raise NotImplementedError

    def size(self, name: str) -> int | None:
        """Size in bytes of `name` without downloading it; None when there is no such file."""
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

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        remote = f"{self.root}/{name}"
        try:
            return locked_fetch(lambda: self.fs.open(remote, "rb"), self.url(name),
                                self.cache / name, self.source, expected)
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        try:
            info = self.fs.info(f"{self.root}/{name}")
        except FileNotFoundError:
            return None
        except Exception as exc:  # credentials, network: the message says which
            raise ModelSourceError(f"model source {self.source!r}: cannot reach {self.url(name)}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        if info.get("type") == "directory":
            return None
        return int(info.get("size") or 0)


class _HttpFetcher(_Fetcher):
    """http(s) with the standard library: fsspec's HTTP needs aiohttp, too heavy for two files."""

    timeout_s = 60

    def size(self, name: str) -> int | None:
        import urllib.error
        import urllib.request

        url = self.url(name)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=self.timeout_s) as response:
                length = response.headers.get("Content-Length")
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                return None
            raise ModelSourceError(f"model source {self.source!r}: cannot reach {url}: "
                                   f"HTTP {exc.code}") from exc
        except OSError as exc:
            raise ModelSourceError(f"model source {self.source!r}: cannot reach {url}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return int(length) if length and length.isdigit() else 0

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        import urllib.error
        import urllib.request

        dest = self.cache / name
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
            return locked_fetch(open_remote, url, dest, self.source, expected)
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

    def _filename(self, name: str) -> str:
        return f"{self.subdir}/{name}" if self.subdir else name

    def size(self, name: str) -> int | None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        filename = self._filename(name)
        try:
            meta = get_hf_file_metadata(hf_hub_url(self.repo_id, filename, revision=self.revision))
        except Exception as exc:
            self._raise(exc, filename)
            return None
        return int(meta.size or 0)

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        # huggingface_hub has its own locked, atomic cache (shared by the processes of a machine)
        # and checks LFS files against their sha256.
        from huggingface_hub import hf_hub_download

        filename = self._filename(name)
        try:
            return Path(hf_hub_download(self.repo_id, filename, revision=self.revision))
        except Exception as exc:
            self._raise(exc, filename)
            return None

    def _raise(self, exc: Exception, filename: str) -> None:
        """Return when the file is missing; otherwise raise a ModelSourceError naming the source.
        huggingface_hub's errors vary by version, so they are sorted by name."""
        kind = type(exc).__name__
        if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
            return
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


@dataclass
class _RemotePlan:
    """Which files of a remote model to fetch: read from the source and its model.json only."""

    fetcher: _Fetcher
    model_json: dict[str, Any] | None
    lm_candidates: list[str]
    sp_name: str


def _remote_plan(source: str) -> _RemotePlan:
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
    return _RemotePlan(fetcher, model_json, wanted, sp_name or lang + SP_SUFFIX)


def _no_model(source: str, plan: _RemotePlan) -> ModelSourceError:
    return ModelSourceError(f"model source {source!r}: no KenLM model found (looked for "
                            f"{', '.join(plan.fetcher.url(w) for w in plan.lm_candidates)})")


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
    urls = {lm_path.name: fetcher.url(lm_path.name)}
    if sp_path is not None:
        urls[plan.sp_name] = fetcher.url(plan.sp_name)
    return ModelFiles(source=source, directory=lm_path.parent, lm_path=lm_path, sp_path=sp_path,
                      model_json=model_json, urls=urls)


def describe_remote(source: str) -> dict[str, Any]:
    """What a remote model is, without downloading its KenLM binary (which can be several GB):
    its model.json (small, fetched into the cache) and the sizes of its files (HEAD for http(s),
    `info` for fsspec URLs, file metadata for hf://). For the launcher's early checks.

    Returns {"source", "model_json", "preset" (from model.json, or None), "files": {name: {"url",
    "size"}}}, with the SentencePiece model's entry only when it exists. Raises ModelSourceError
    when the source is unreachable or holds no KenLM model, or when a size differs from the one
    model.json records.
    """
    plan = _remote_plan(source)
    files: dict[str, dict[str, Any]] = {}
    for name in plan.lm_candidates:
        size = plan.fetcher.size(name)
        if size is not None:
            files[name] = {"url": plan.fetcher.url(name), "size": size}
            break
    if not files:
        raise _no_model(source, plan)
    sp_size = plan.fetcher.size(plan.sp_name)
    if sp_size is not None:
        files[plan.sp_name] = {"url": plan.fetcher.url(plan.sp_name), "size": sp_size}
    for name, info in files.items():
        expected = Expected.from_model_json(plan.model_json, name).size
        if expected is not None and info["size"] and info["size"] != expected:
            raise ModelSourceError(f"model source {source!r}: {info['url']} has {info['size']:,} "
                                   f"bytes but its model.json records {expected:,}")
    preset = (plan.model_json or {}).get("preset")
    return {"source": source, "model_json": plan.model_json,
            "preset": preset if isinstance(preset, str) else None, "files": files}


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
