"""Fetchers of one remote model directory's files into the cache: fsspec URLs (gs://, s3://,
...), http(s) with the standard library, and hf:// through huggingface_hub. Each knows its
source's secrets (`url_redaction`) and keeps them out of every message."""
from __future__ import annotations

import contextlib
import urllib.parse
from pathlib import Path

from lm_models.errors import ModelSourceError
from lm_models.model_cache import NOTHING_EXPECTED, Expected, cache_dir_for, inside_cache, locked_fetch
from lm_models.model_layout import check_file_name
from lm_models.url_redaction import redact_url, scrub, secrets_of


class Fetcher:
    """Fetch named files of one remote directory into its cache directory.

    `base` is the directory's URL without a query; `query` (a presigned URL's signature, a
    token) is sent with every file and never shown: `display_url` and every message redact it."""

    def __init__(self, source: str, base: str, query: str = ""):
        self.source, self.base, self.query = source, base.rstrip("/"), query
        self.shown = redact_url(source)  # what messages say the source is
        self.cache = cache_dir_for(self.base + (f"?{query}" if query else ""))

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def display_url(self, name: str) -> str:
        return redact_url(self.url(name))

    def dest(self, name: str) -> Path:
        check_file_name(name, self.source, "the model")
        return inside_cache(self.cache / name, self.source)

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
            if not secrets_of(self.source):
                raise
            raise ModelSourceError(scrub(str(exc), self.source)) from None


class FsspecFetcher(Fetcher):
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


class HttpFetcher(Fetcher):
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


class HubFetcher(Fetcher):
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


def hub_fetcher(source: str) -> HubFetcher:
    rest = source[len("hf://"):].strip("/")
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ModelSourceError(f"model source {source!r}: expected hf://owner/repo/subdir")
    repo, _, revision = parts[1].partition("@")
    return HubFetcher(source, f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:]))
