"""A fake object store for tests: Beam FileSystem `fakeobj://bucket/key`, the layer our writers,
readers and the output commit use (apache_beam FileSystems), with object-store semantics:

- no directories: a "folder" is only a key prefix; mkdirs does nothing;
- an object becomes visible only when its upload (the writer's close) completes;
- no rename: like Beam's GCS filesystem, rename is a copy then a delete, object by object, so
  nothing can rely on it being atomic.

Objects persist in a local folder named by $PPSAMPLE_FAKE_STORE (one flat file per object, its
key %-quoted), so a subprocess that is SIGKILLed leaves exactly what a killed job leaves on GCS.
Importing this module registers the scheme (Beam finds FileSystem subclasses once imported).
"""
from __future__ import annotations

import io
import os
import shutil
import urllib.parse
import uuid

from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes, FileMetadata,
                                       FileSystem)

SCHEME = "fakeobj"
ENV = "PPSAMPLE_FAKE_STORE"


def _root() -> str:
    root = os.environ.get(ENV)
    if not root:
        raise RuntimeError(f"set {ENV} to the folder that backs {SCHEME}://")
    os.makedirs(os.path.join(root, ".uploads"), exist_ok=True)
    return root


def _key(path: str) -> str:
    if not path.startswith(f"{SCHEME}://"):
        raise ValueError(f"not a {SCHEME}:// path: {path}")
    return path[len(SCHEME) + 3:]


def _blob(path: str) -> str:
    return os.path.join(_root(), urllib.parse.quote(_key(path), safe=""))


class _Upload(io.RawIOBase):
    """Bytes go to a hidden temp file; the object appears (atomically) on close."""

    def __init__(self, target: str):
        self._target = target
        self._tmp = os.path.join(_root(), ".uploads", uuid.uuid4().hex)
        self._file = open(self._tmp, "wb")

    def writable(self):
        return True

    def write(self, data):
        return self._file.write(data)

    def close(self):
        if not self.closed:
            self._file.close()
            os.replace(self._tmp, self._target)
        super().close()


class FakeObjectStore(FileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        path = basepath.rstrip("/")
        for part in paths:
            path += "/" + part.strip("/")
        return path

    def split(self, path):
        path = path.rstrip("/")
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # no directories on an object store

    def has_dirs(self):
        return False

    def _objects(self):
        for name in os.listdir(_root()):
            if not name.startswith("."):
                yield f"{SCHEME}://" + urllib.parse.unquote(name), os.path.join(_root(), name)

    def _list(self, dir_or_prefix):
        for path, blob in sorted(self._objects()):
            if path.startswith(dir_or_prefix):
                st = os.stat(blob)
                yield FileMetadata(path, st.st_size, st.st_mtime)

    def _wrap(self, raw, path, compression_type):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        return self._wrap(io.BufferedWriter(_Upload(_blob(path))), path, compression_type)

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        try:
            raw = open(_blob(path), "rb")
        except FileNotFoundError as err:
            raise BeamIOError("Open failed", {path: err}) from err
        return self._wrap(raw, path, compression_type)

    def copy(self, source_file_names, destination_file_names):
        errors = {}
        for source, dest in zip(source_file_names, destination_file_names):
            try:
                tmp = os.path.join(_root(), ".uploads", uuid.uuid4().hex)
                shutil.copyfile(_blob(source), tmp)
                os.replace(tmp, _blob(dest))
            except OSError as err:
                errors[(source, dest)] = err
        if errors:
            raise BeamIOError("Copy operation failed", errors)

    def rename(self, source_file_names, destination_file_names):
        # GCS has no rename: Beam emulates it with copy + delete, one object at a time.
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path):
        return os.path.exists(_blob(path))

    def size(self, path):
        return os.path.getsize(_blob(path))

    def last_updated(self, path):
        return os.path.getmtime(_blob(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        st = os.stat(_blob(path))
        return FileMetadata(path, st.st_size, st.st_mtime)

    def delete(self, paths):
        errors = {}
        for path in paths:
            if os.path.exists(_blob(path)):
                os.remove(_blob(path))
                continue
            prefix = path.rstrip("/") + "/"  # a "folder": every object under the prefix
            matched = [blob for p, blob in self._objects() if p.startswith(prefix)]
            if not matched:
                errors[path] = FileNotFoundError(path)
            for blob in matched:
                os.remove(blob)
        if errors:
            raise BeamIOError("Delete operation failed", errors)


def snapshot(prefix: str) -> dict[str, bytes]:
    """{key relative to prefix: bytes} of every object under prefix (byte-for-byte checks)."""
    prefix = prefix.rstrip("/") + "/"
    out = {}
    for path, blob in FakeObjectStore(None)._objects():
        if path.startswith(prefix):
            with open(blob, "rb") as f:
                out[path[len(prefix):]] = f.read()
    return out
