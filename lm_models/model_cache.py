"""The machine's download cache of remote model files (`$PPSAMPLE_CACHE`, default
`~/.cache/ppsample/models`), shared by every process and every run on the machine.

One process downloads a file under a file lock while the others wait, into a temporary file that
is checked (bytes received; size and sha256 against model.json's `file_sizes` / `file_sha256`
when present) and renamed into place only then, so all processes memory-map the same file (one
copy of a multi-GB model in the page cache) and an interrupted download is never mistaken for a
model. A sidecar `.NAME.verified` records the size, mtime and sha256 of each checked file: a
cache hit costs a stat, and a cached file truncated since is downloaded again. Every cache path
must resolve inside the cache (`inside_cache`): a hostile model.json cannot write outside it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_models.errors import ModelSourceError
from lm_models.file_hash import sha256_file
from lm_models.url_redaction import redact_url


def cache_root() -> Path:
    return Path(os.environ.get("PPSAMPLE_CACHE", Path.home() / ".cache" / "ppsample" / "models"))


def cache_dir_for(key: str) -> Path:
    """The cache directory of one remote directory. `key` is its URL with any query string
    (a different query may name different files), hashed: no secret in a directory name."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return cache_root() / digest


def inside_cache(dest: Path, source: str) -> Path:
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
    inside_cache(dest, source)
    if cache_hit(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    inside_cache(dest, source)  # again: the directory exists now, a link there is seen
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
