"""Model sources: bundled name, local paths, fsspec URLs, http(s) (a local server on 127.0.0.1),
cc_net's URL layout, hf:// (huggingface_hub mocked at hf_hub_download), cache, errors."""
from __future__ import annotations

import http.server
import shutil
import socket
import threading
from pathlib import Path

import fsspec
import pytest

from lm_models import model_sources
from lm_models.model_sources import ModelSourceError
from lm_models.perplexity import PerplexityModel

BUNDLED = Path(__file__).resolve().parents[1] / "lm_models" / "bundled" / "es-reference"
TEXT = "La biblioteca abre todos los días a las nueve."


@pytest.fixture(scope="module")
def expected() -> float:
    return PerplexityModel.load("es-reference").perplexity(TEXT)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PPSAMPLE_CACHE", str(root))
    return root


class _Server:
    """http.server over a directory, counting requests; `truncate` cuts responses short."""

    def __init__(self, root: Path):
        self.root, self.requests, self.truncate = root, [], set()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if name in server.truncate:
                    data = (root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 3])  # then the connection drops
                    self.close_connection = True
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    shutil.copytree(BUNDLED, root / "models" / "es-reference")
    lm = root / "dl" / "cc_net" / "lm"  # cc_net's published layout: many languages, no model.json
    lm.mkdir(parents=True)
    for name in ["es.arpa.bin", "es.sp.model"]:
        shutil.copy(BUNDLED / name, lm / name)
    (lm / "fr.arpa.bin").write_bytes(b"not a model")
    srv = _Server(root)
    yield srv
    srv.close()


def test_bundled_name_and_local_forms(expected):
    assert "es-reference" in model_sources.bundled_names()
    for source in ["es-reference", str(BUNDLED), str(BUNDLED / "es.arpa.bin"),
                   f"file://{BUNDLED}"]:
        m = PerplexityModel.load(source)
        assert m.perplexity(TEXT) == expected, source


def test_http_directory_with_model_json_is_cached(server, cache, expected):
    url = f"{server.url}/models/es-reference"
    m = PerplexityModel.load(url)
    assert m.preset == "ccnet" and m.source == url
    assert m.perplexity(TEXT) == expected
    assert sorted(r.rsplit("/", 1)[-1] for r in server.requests) == \
        ["es.arpa.bin", "es.sp.model", "model.json"]
    assert m.describe()["files"]["es.arpa.bin"]["url"] == f"{url}/es.arpa.bin"
    assert str(m.files.lm_path).startswith(str(cache))
    server.close()  # offline now: the cached copy is enough
    again = PerplexityModel.load(url)
    assert again.perplexity(TEXT) == expected


def test_cc_net_url_layout(server, expected):
    file_url = f"{server.url}/dl/cc_net/lm/es.arpa.bin"
    with pytest.raises(ValueError, match="preset"):
        PerplexityModel.load(file_url)
    m = PerplexityModel.load(file_url, preset="ccnet")
    assert m.perplexity(TEXT) == expected
    # The directory itself reads as Spanish (es.*) and never touches fr.arpa.bin.
    d = PerplexityModel.load(f"{server.url}/dl/cc_net/lm", preset="ccnet")
    assert d.perplexity(TEXT) == expected
    assert not any("fr." in r for r in server.requests)


def test_interrupted_download_leaves_no_file_that_is_trusted(server, cache, expected):
    url = f"{server.url}/models/es-reference"
    server.truncate.add("es.arpa.bin")
    with pytest.raises(ModelSourceError, match=rf"{url}.*closed after"):
        PerplexityModel.load(url)
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.name != "model.json"]
    assert leftovers == []
    server.truncate.clear()
    assert PerplexityModel.load(url).perplexity(TEXT) == expected


def test_offline_and_missing_errors_name_the_source(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/models/es"
    with pytest.raises(ModelSourceError, match=rf"model source '{dead}'.*cannot download"):
        PerplexityModel.load(dead)
    missing = f"{server.url}/models/nothing-here"
    with pytest.raises(ModelSourceError, match=rf"model source '{missing}'.*no KenLM model"):
        PerplexityModel.load(missing, preset="ccnet")


def test_fsspec_url(expected):
    fs = fsspec.filesystem("memory")
    for name in ["es.arpa.bin", "es.sp.model", "model.json"]:
        fs.pipe(f"/bucket/es-model/{name}", (BUNDLED / name).read_bytes())
    m = PerplexityModel.load("memory://bucket/es-model")
    assert m.preset == "ccnet" and m.perplexity(TEXT) == expected
    with pytest.raises(ModelSourceError, match="memory://bucket/none"):
        PerplexityModel.load("memory://bucket/none", preset="ccnet")


class _EntryNotFoundError(Exception):
    pass


_EntryNotFoundError.__name__ = "EntryNotFoundError"


def test_hf_edugp_layout_through_hf_hub_download(monkeypatch, expected):
    calls = []

    def fake_hf_hub_download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        subdir, name = filename.rsplit("/", 1)
        if subdir != "wikipedia" or not (BUNDLED / name).exists() or name == "model.json":
            raise _EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(BUNDLED / name)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    m = PerplexityModel.load("hf://edugp/kenlm/wikipedia", preset="edugp")
    assert m.preset == "edugp" and m.source == "hf://edugp/kenlm/wikipedia"
    assert ("edugp/kenlm", "wikipedia/es.arpa.bin", None) in calls
    assert ("edugp/kenlm", "wikipedia/es.sp.model", None) in calls
    ccnet = PerplexityModel.load("hf://edugp/kenlm@abc123/wikipedia/es.arpa.bin", "ccnet")
    assert ccnet.perplexity(TEXT) == expected
    assert calls[-1] == ("edugp/kenlm", "wikipedia/es.sp.model", "abc123")


def test_hf_offline_error_names_the_source(monkeypatch):
    class LocalEntryNotFoundError(Exception):
        pass

    def offline(repo_id, filename, revision=None, **kwargs):
        raise LocalEntryNotFoundError("cannot reach huggingface.co")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ModelSourceError, match=r"model source 'hf://edugp/kenlm/wikipedia'.*"
                                               r"LocalEntryNotFoundError.*offline"):
        PerplexityModel.load("hf://edugp/kenlm/wikipedia", preset="edugp")
    with pytest.raises(ModelSourceError, match="expected hf://owner/repo/subdir"):
        PerplexityModel.load("hf://edugp", preset="edugp")


def test_source_must_be_a_string():
    with pytest.raises(TypeError, match="model source must be a str"):
        PerplexityModel.load(42)
