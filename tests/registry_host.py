"""A local stand-in for the registry's hosts (dl.fbaipublicfiles.com, huggingface.co), laid out
like them, serving the bundled model's files under a language's names; for
PPSAMPLE_MODEL_REGISTRY_URL. http.server on 127.0.0.1 in a thread of the test."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from lm_models import language_registry

BUNDLED = Path(__file__).resolve().parents[1] / "lm_models" / "bundled" / "es-reference"


class RegistryHost:
    def __init__(self, root: Path, languages=("fr",)):
        self.root, self.requests, self.heads = root, [], []  # paths of GET / HEAD requests
        ccnet = root / "cc_net" / "lm"
        edugp = root / "edugp" / "kenlm" / "resolve" / language_registry.EDUGP_REVISION / "wikipedia"
        for folder in (ccnet, edugp):
            folder.mkdir(parents=True, exist_ok=True)
            for lang in languages:
                shutil.copy(BUNDLED / "es.arpa.bin", folder / f"{lang}.arpa.bin")
                shutil.copy(BUNDLED / "es.sp.model", folder / f"{lang}.sp.model")
        self.lm_sha256 = hashlib.sha256((BUNDLED / "es.arpa.bin").read_bytes()).hexdigest()
        host = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                host.requests.append(self.path)
                super().do_GET()

            def do_HEAD(self):
                host.heads.append(self.path)
                super().do_HEAD()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A stand-in host serving French models; the registry points at it."""
    srv = RegistryHost(tmp_path / "www", languages=("fr",))
    monkeypatch.setenv(language_registry.REGISTRY_URL_ENV, srv.url)
    yield srv
    srv.close()
