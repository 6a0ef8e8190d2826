"""gs:// (and gcs://) for fsspec, answered from memory: GCS stubbed at the fsspec boundary,
where gcsfs would be. Shared by the model-source tests and the Dataflow job probe."""
from __future__ import annotations

import fsspec
from fsspec.implementations.memory import MemoryFileSystem


class _FakeGCSFS(MemoryFileSystem):
    protocol = ("gs", "gcs")

    @classmethod
    def _strip_protocol(cls, path):
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return super()._strip_protocol(path)

    def info(self, path, **kwargs):
        self.info_calls.append(path)
        return super().info(path, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            self.on_open(path)
        return super()._open(path, mode, **kwargs)


def install(on_open=None) -> type:
    """Registers an empty in-memory bucket store for gs:// and gcs://; returns its filesystem
    class, whose `.opened` (paths opened for reading, unless `on_open(path)` is given) and
    `.info_calls` record what was asked."""

    class FakeGCSFS(_FakeGCSFS):
        store: dict = {}
        pseudo_dirs = [""]
        opened: list = []
        info_calls: list = []

    FakeGCSFS.on_open = staticmethod(on_open or FakeGCSFS.opened.append)
    for protocol in FakeGCSFS.protocol:
        fsspec.register_implementation(protocol, FakeGCSFS, clobber=True)
    return FakeGCSFS


def uninstall() -> None:
    """gcsfs back in its place."""
    import gcsfs

    for protocol in _FakeGCSFS.protocol:
        fsspec.register_implementation(protocol, gcsfs.GCSFileSystem, clobber=True)
