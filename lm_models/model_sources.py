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
Remote files are downloaded once per machine into the cache (`$PPSAMPLE_CACHE`, default
`~/.cache/ppsample/models`), shared by every process and every run on the machine: one process
downloads under a file lock while the others wait, into a temporary file that is checked (bytes
received; size and sha256 against model.json's `file_sizes` / `file_sha256` when present) and
renamed into place only then, so all processes memory-map the same file (one copy of a multi-GB
model in the page cache) and an interrupted download is never mistaken for a model. A sidecar
`.NAME.verified` records the size, mtime and sha256 of each checked file: a cache hit costs a
stat, and a cached file truncated since is downloaded again instead of handed to KenLM.
`describe_remote` reads model.json and the file sizes only, for the launcher's early checks.

A remote server is not trusted with paths: the file names it gives (in model.json, or the last
part of the URL) must be plain names (`check_file_name`), and every cache path must resolve inside
the cache, so a hostile model.json cannot write outside it. A URL's query string (a presigned
URL's signature, `?token=...`) is sent with every file of the model, is hashed into the cache
directory's name, and is shown nowhere: messages and `describe_remote` print `redact_url(url)`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_models import language_registry
from lm_models.file_hash import sha256_file

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_LANGUAGE = "es"
LM_SUFFIXES = (".arpa.bin", ".arpa")  # preference order in a directory
SP_SUFFIX = ".sp.model"
MODEL_JSON = "model.json"


class ModelSourceError(OSError):
    """A model source could not be resolved or fetched; the message names the source."""


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


def _secrets_of(source: str) -> list[str]:
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
    for secret in _secrets_of(source):
        text = text.replace(secret, REDACTED)
    return text


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


def bundled_names() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / MODEL_JSON).is_file())


def cache_root() -> Path:
    return Path(os.environ.get("PPSAMPLE_CACHE", Path.home() / ".cache" / "ppsample" / "models"))


def is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_registry_name(source: str) -> bool:
    """`ccnet:fr`, `edugp:fr`: a published model of lm_models.language_registry."""
    return language_registry.parse_name(source) is not None


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
        for name in (lm_name, json_sp_name):  # a model.json names files in its own directory
            if name is not None:
                check_file_name(name, source, f"its {MODEL_JSON}")
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
    """The cache directory of one remote directory. `key` is its URL with any query string
    (a different query may name different files), hashed: no secret in a directory name."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return cache_root() / digest


def _inside_cache(dest: Path, source: str) -> Path:
    """`dest` when its real path lies in the real cache root (which may itself be a symlink, e.g.
    to a bigger disk); a symlink planted inside the cache that leads out of it is refused."""
    root = os.path.realpath(cache_root())
    real = os.path.realpath(dest)
    try:
        inside = os.path.commonpath([root, real]) == root and real != root
    except ValueError:  # Windows: another drive
        inside = False
    if not inside:
        raise ModelSourceError(f"model source {redact_url(source)!r}: cache path {dest} resolves "
                               f"to {real}, outside the cache {root}; refusing to write there")
    return dest


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
    # An unpredictable, exclusively created temporary name: a symlink planted in a shared cache
    # under a guessable name would otherwise be followed and its target overwritten.
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.verified.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(record))
        os.replace(tmp, _sidecar(dest))  # replaces a link at the sidecar's name, never its target
    except BaseException:
        _unlink(tmp)
        raise


@contextlib.contextmanager
def _file_lock(path: Path, source: str):
    """An exclusive lock on `path`, held until the block ends. The lock file is opened with
    O_NOFOLLOW and never truncated: a symlink planted at its name is refused, not followed
    (filelock opens with O_TRUNC and follows links, so a link to ~/.bashrc would empty it)."""
    try:
        import fcntl
    except ImportError:  # Windows: filelock's msvcrt lock
        from filelock import FileLock

        with FileLock(str(path)):
            yield
        return
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise ModelSourceError(f"model source {redact_url(source)!r}: cannot open the lock file "
                               f"{path} ({exc.strerror}; a symlink there is refused)") from None
    try:
        import stat as stat_module

        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise ModelSourceError(f"model source {redact_url(source)!r}: the lock file {path} "
                                   "is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def recorded_sha256(path: Path) -> str | None:
    """The sha256 that the cache's sidecar records for `path` when the sidecar still matches
    the file's size and mtime (a downloaded model was hashed while it was written), else None."""
    record = _read_sidecar(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    if record is None or record.get("size") != stat.st_size \
            or record.get("mtime_ns") != stat.st_mtime_ns:
        return None
    sha256 = record.get("sha256")
    return sha256 if isinstance(sha256, str) else None


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
    recorded = recorded_sha256(dest)
    return recorded is not None and expected.sha256 in (None, recorded)


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
    _inside_cache(dest, source)
    if cache_hit(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _inside_cache(dest, source)  # again: the directory exists now, a link there is seen
    with _file_lock(_lock_path(dest), source):
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
    """Fetch named files of one remote directory into its cache directory.

    `base` is the directory's URL without a query; `query` (a presigned URL's signature, a
    token) is sent with every file and never shown: `display_url` and every message redact it."""

    def __init__(self, source: str, base: str, query: str = ""):
        self.source, self.base, self.query = source, base.rstrip("/"), query
        self.shown = redact_url(source)  # what messages say the source is
        self.cache = _cache_dir_for(self.base + (f"?{query}" if query else ""))

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def display_url(self, name: str) -> str:
        return redact_url(self.url(name))

    def dest(self, name: str) -> Path:
        check_file_name(name, self.source, "the model")
        return _inside_cache(self.cache / name, self.source)

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        """Local path of `name`, or None when the remote directory has no such file."""
        raise NotImplementedError

    def size(self, name: str) -> int | None:
        """Size in bytes of `name` without downloading it; None when there is no such file."""
        raise NotImplementedError

    def error(self, message: str) -> ModelSourceError:
        return ModelSourceError(scrub(message, self.source))

    @contextlib.contextmanager
    def scrubbed(self):
        """Re-raises a ModelSourceError with the source's secrets scrubbed from its message, and
        without its cause (whose text, printed in a traceback, may hold the full URL)."""
        try:
            yield
        except ModelSourceError as exc:
            if not _secrets_of(self.source):
                raise
            raise ModelSourceError(scrub(str(exc), self.source)) from None


class _FsspecFetcher(_Fetcher):
    def __init__(self, source: str, base: str):
        super().__init__(source, base)
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.base)
        except (ImportError, ValueError) as exc:
            raise self.error(f"model source {self.shown!r}: unsupported URL ({exc}); "
                             "gs:// needs gcsfs, s3:// needs s3fs") from None

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        dest = self.dest(name)
        remote = f"{self.root}/{name}"
        try:
            with self.scrubbed():
                return locked_fetch(lambda: self.fs.open(remote, "rb"), self.display_url(name),
                                    dest, self.shown, expected)
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        check_file_name(name, self.source, "the model")
        try:
            info = self.fs.info(f"{self.root}/{name}")
        except FileNotFoundError:
            return None
        except Exception as exc:  # credentials, network: the message says which
            raise self.error(f"model source {self.shown!r}: cannot reach "
                             f"{self.display_url(name)}: {type(exc).__name__}: {exc}") from None
        if info.get("type") == "directory":
            return None
        return int(info.get("size") or 0)


class _HttpFetcher(_Fetcher):
    """http(s) with the standard library: fsspec's HTTP needs aiohttp, too heavy for two files.
    Sibling files are requested with the source's query string: a token shared by all files
    works; a signature of one file's path (S3 presigned) signs that file only."""

    timeout_s = 60

    def url(self, name: str) -> str:
        quoted = urllib.parse.quote(name, safe="")
        return f"{self.base}/{quoted}" + (f"?{self.query}" if self.query else "")

    def size(self, name: str) -> int | None:
        import urllib.error
        import urllib.request

        check_file_name(name, self.source, "the model")
        url = self.url(name)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=self.timeout_s) as response:
                length = response.headers.get("Content-Length")
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                return None
            raise self.error(f"model source {self.shown!r}: cannot reach "
                             f"{self.display_url(name)}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:  # ValueError: http.client.InvalidURL
            raise self.error(f"model source {self.shown!r}: cannot reach "
                             f"{self.display_url(name)}: {type(exc).__name__}: {exc}") from None
        return int(length) if length and length.isdigit() else 0

    def fetch(self, name: str, expected: Expected = NOTHING_EXPECTED) -> Path | None:
        import urllib.error
        import urllib.request

        dest = self.dest(name)
        url = self.url(name)

        def open_remote():
            try:
                response = urllib.request.urlopen(url, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                if exc.code in (403, 404, 410):  # cloud buckets answer 403 for missing keys
                    raise FileNotFoundError(self.display_url(name)) from None
                raise
            return _LengthChecked(response, self.display_url(name))

        try:
            with self.scrubbed():
                return locked_fetch(open_remote, self.display_url(name), dest, self.shown,
                                    expected)
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
        check_file_name(name, self.source, "the model")  # hf's own cache is safe; same rule
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
        raise self.error(f"model source {self.shown!r}: cannot download {filename} "
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
        if _split_lm_file(name) is None:
            base_path, name = parts.path.rstrip("/"), ""
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
        return base, name, parts.query
    base, _, last = source.rstrip("/").rpartition("/")
    if _split_lm_file(last) is None:
        return source.rstrip("/"), "", ""
    return base, last, ""


def _registry_plan(model) -> _RemotePlan:
    """A `FAMILY:LANG` registry model: its URL, and its published hash as model.json's."""
    base, _, query = _split_source(model.lm_url)
    url = model.lm_url
    fetcher = _HttpFetcher(url, base, query) if url.startswith(("http://", "https://")) \
        else _FsspecFetcher(url, base)
    return _RemotePlan(fetcher, model.model_json(), [model.lm_name], model.sp_name)


def _remote_plan(source: str) -> _RemotePlan:
    registered = language_registry.parse_name(source)
    if registered is not None:
        return _registry_plan(registered)
    base, named_file, query = _split_source(source)
    named = _split_lm_file(named_file) if named_file else None
    if named:  # a name from the URL is joined to the cache directory too: checked the same way
        check_file_name(named_file, source, "the URL")
    if source.startswith("hf://"):
        fetcher: _Fetcher = _hub_fetcher(base if named else source)
    elif source.startswith(("http://", "https://")):
        fetcher = _HttpFetcher(source, base, query)
    else:
        fetcher = _FsspecFetcher(source, base)

    model_json, wanted, lang, sp_name = None, [], DEFAULT_LANGUAGE, None
    if named:
        wanted, lang = [named_file], named[0]
    else:
        json_path = fetcher.fetch(MODEL_JSON)
        if json_path is not None:
            with fetcher.scrubbed():
                model_json = _read_model_json(json_path, fetcher.shown)
            lm_name, sp_name = _files_from_model_json(model_json)
            # Checked before any request for them: model.json comes from the server.
            for name in (lm_name, sp_name):
                if name is not None:
                    check_file_name(name, source, f"its {MODEL_JSON}")
            if lm_name:
                wanted, lang = [lm_name], (_split_lm_file(lm_name) or (lm_name, ""))[0]
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
    if is_url(text) or is_registry_name(text):
        return resolve_remote(text)
    if text in bundled_names() and not Path(text).exists():
        return resolve_local(text, BUNDLED_DIR / text)
    return resolve_local(os.path.abspath(text), Path(text).resolve())
