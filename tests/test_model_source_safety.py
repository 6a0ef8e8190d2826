"""Model sources against hostile servers and secret-bearing URLs (issue 11).

A remote model.json (or URL) names the files that are written into the cache: a hostile server
must not be able to write anywhere else. A presigned URL's query string is a secret: it must reach
the server for every file of the model, and appear in no message, description or cache name.
Servers are http.server on 127.0.0.1 in a thread of the test, with short timeouts."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import threading
import traceback
import urllib.parse
from pathlib import Path

import pytest

from lm_models import model_fetchers, model_sources
from lm_models.model_sources import ModelSourceError
from lm_models.perplexity import PerplexityModel
# fixtures expected (TEXT's perplexity under the bundled model) and cache (autouse)
from model_source_fixtures import BUNDLED, TEXT, cache, expected  # noqa: F401

SECRET = "s3cr3t-Signature-VALUE"


@pytest.fixture(autouse=True)
def bounded_timeout(monkeypatch) -> None:
    monkeypatch.setattr(model_fetchers.HttpFetcher, "timeout_s", 10)  # bounded test


class _Server:
    """Serves `routes(path, query) -> (status, bytes)` on 127.0.0.1; records (method, path, query)."""

    def __init__(self, routes):
        self.requests: list[tuple[str, str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: bool):
                parts = urllib.parse.urlsplit(self.path)
                server.requests.append((self.command, urllib.parse.unquote(parts.path),
                                        parts.query))
                status, data = routes(urllib.parse.unquote(parts.path), parts.query)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 10
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def gets(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for method, path, _ in self.requests if method == "GET"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve():
    servers = []

    def start(routes) -> _Server:
        servers.append(_Server(routes))
        return servers[-1]

    yield start
    for srv in servers:
        srv.close()


def _files_under(root: Path, skip: Path | None = None) -> set[str]:
    return {str(p) for p in root.rglob("*")
            if skip is None or not (p == skip or skip in p.parents)}


# ------------------------------------------------------------------------ hostile model.json

def _hostile_names(outside: Path) -> list[str]:
    return ["../x.arpa.bin", "../../x.arpa.bin", "../../../escaped.arpa.bin",
            str(outside / "abs.arpa.bin"),  # absolute
            "..\\x.arpa.bin", "sub/es.arpa.bin", "sub\\es.arpa.bin", "..", ".",
            ".hidden.arpa.bin", ".es.arpa.bin.lock", "", "a\x00b.arpa.bin", "c:evil.arpa.bin",
            "x" * 300 + ".arpa.bin"]


@pytest.mark.parametrize("field", ["lm", "sp"])
def test_hostile_model_json_cannot_write_outside_the_cache(serve, tmp_path, tmp_path_factory,
                                                           cache, field):
    """Every hostile name is refused after model.json and before any other request; no file
    appears under tmp_path outside the cache, nor in a directory outside tmp_path. The server
    answers every other path with bytes, so a name that got through would be written."""
    outside = tmp_path_factory.mktemp("outside")
    (tmp_path / "bystander.txt").write_text("unchanged")
    for i, name in enumerate(_hostile_names(outside)):
        files = {"lm": "es.arpa.bin", "sp": "es.sp.model", field: name}
        model_json = json.dumps({"preset": "ccnet", "files": files}).encode()
        srv = serve(lambda path, query: (200, model_json) if path.endswith("/model.json")
                    else (200, b"written by a hostile server\n"))
        before = _files_under(tmp_path, skip=cache)
        url = f"{srv.url}/models/m{i}"
        for load in (model_sources.resolve, model_sources.describe_remote):
            with pytest.raises(ModelSourceError, match="plain file names") as err:
                load(url)
            assert "model.json names the file" in str(err.value), name
        assert srv.gets() == ["model.json", "model.json"] or srv.gets() == ["model.json"], \
            (name, srv.requests)
        assert [m for m, _, _ in srv.requests if m == "HEAD"] == [], (name, srv.requests)
        assert _files_under(tmp_path, skip=cache) == before, name
        assert list(outside.iterdir()) == [], name
        cached = {p.name for p in cache.rglob("*") if p.is_file()}
        assert cached <= {"model.json", ".model.json.verified", ".model.json.lock"}, (name, cached)
    assert (tmp_path / "bystander.txt").read_text() == "unchanged"


def test_file_name_from_the_url_is_checked_too(serve, tmp_path, cache):
    srv = serve(lambda path, query: (200, b"written by a hostile server\n"))
    before = _files_under(tmp_path, skip=cache)
    for tail in ["..%2F..%2F..%2Fescaped.arpa.bin", "..%5Cescaped.arpa.bin",
                 "%2Etmp.arpa.bin"]:
        with pytest.raises(ModelSourceError, match="the URL names the file"):
            model_sources.resolve(f"{srv.url}/models/{tail}")
    assert srv.requests == []
    assert _files_under(tmp_path, skip=cache) == before


def test_local_model_json_naming_a_path_is_refused(tmp_path):
    local = tmp_path / "model"
    shutil.copytree(BUNDLED, local)
    meta = json.loads((local / "model.json").read_text())
    meta["files"]["lm"] = "../es.arpa.bin"
    (local / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelSourceError, match=r"model.json names the file '\.\./es\.arpa\.bin'"):
        model_sources.resolve(str(local))


@pytest.mark.parametrize("name", ["es.arpa.bin", "es.sp.model", "wiki-es_v2.arpa.bin",
                                  "año.arpa", "es..arpa.bin"])
def test_plain_file_names_are_accepted(name):
    assert model_sources.check_file_name(name, "http://h/m", "its model.json") == name


def _bundled_routes(prefix: str = "/models/es-reference/", needs: str | None = None):
    """The bundled model under `prefix`; every request without `needs` in its query gets 403."""
    def routes(path, query):
        if needs is not None and needs not in urllib.parse.parse_qs(query).get(
                "X-Amz-Signature", []):
            return 403, b"SignatureDoesNotMatch"
        name = path[len(prefix):] if path.startswith(prefix) else ""
        if name and "/" not in name and (BUNDLED / name).is_file():
            return 200, (BUNDLED / name).read_bytes()
        return 404, b"no such key"
    return routes


def test_cache_directory_linked_out_of_the_cache_is_refused(serve, tmp_path, cache, expected):
    """Defence in depth: even a plain name is refused when its cache path resolves outside the
    cache (a symlink planted in a shared cache). A cache root that is itself a link is fine."""
    srv = serve(_bundled_routes())
    url = f"{srv.url}/models/es-reference"
    model_dir = model_sources.resolve(url).lm_path.parent  # fills the cache once
    shutil.rmtree(model_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ModelSourceError, match="outside the cache"):
        model_sources.resolve(url)
    assert list(elsewhere.iterdir()) == []
    # The cache root behind a symlink (e.g. on a bigger disk) is a normal setup.
    real_root = tmp_path / "big-disk"
    real_root.mkdir()
    model_dir.unlink()
    shutil.rmtree(cache)
    cache.symlink_to(real_root, target_is_directory=True)
    assert PerplexityModel.load(url).perplexity(TEXT) == expected
    assert any(p.name == "es.arpa.bin" for p in real_root.rglob("*"))


def test_planted_symlinks_at_lock_and_temporary_names_are_not_followed(serve, tmp_path, cache,
                                                                       expected):
    """A shared cache's predictable names: the lock file is opened without following links and
    is never truncated; the sidecar's temporary file has an unpredictable name."""
    srv = serve(_bundled_routes())
    url = f"{srv.url}/models/es-reference"
    model_sources.describe_remote(url)  # creates the model's cache directory (model.json only)
    [model_dir] = [p for p in cache.iterdir() if p.is_dir()]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # The name the sidecar's temporary file used to have (`.NAME.<pid>.part`).
    (model_dir / f".es.arpa.bin.{os.getpid()}.part").symlink_to(victim)
    (model_dir / ".es.arpa.bin.lock").symlink_to(victim)
    with pytest.raises(ModelSourceError, match=r"lock file .*\.es\.arpa\.bin\.lock.*symlink"):
        model_sources.resolve(url)
    assert victim.read_text() == "precious"
    (model_dir / ".es.arpa.bin.lock").unlink()
    assert PerplexityModel.load(url).perplexity(TEXT) == expected
    assert victim.read_text() == "precious"
    assert (model_dir / ".es.arpa.bin.lock").is_file()
    assert not (model_dir / ".es.arpa.bin.lock").is_symlink()


# ------------------------------------------------------------------------ presigned URLs

def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and urllib.parse.quote(SECRET) not in text, text


def _error_text(exc: BaseException) -> str:
    """The message and everything a traceback would print of it, causes included."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_presigned_directory_url_loads_and_its_secret_shows_nowhere(serve, cache, expected):
    srv = serve(_bundled_routes(needs=SECRET))
    query = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={SECRET}"
    url = f"{srv.url}/models/es-reference?{query}"
    m = PerplexityModel.load(url)
    assert m.preset == "ccnet" and m.perplexity(TEXT) == expected
    # Every file was asked for with the query (the server answers 403 without it).
    assert sorted(srv.gets()) == ["es.arpa.bin", "es.sp.model", "model.json"]
    assert {q for _, _, q in srv.requests} == {query}
    assert m.files.display_source == f"{srv.url}/models/es-reference?<redacted>"
    _assert_no_secret(json.dumps(m.files.urls), *[str(p) for p in cache.rglob("*")])
    assert m.files.urls["es.arpa.bin"] == f"{srv.url}/models/es-reference/es.arpa.bin?<redacted>"
    info = model_sources.describe_remote(url)
    _assert_no_secret(json.dumps(info))
    assert info["source"] == m.files.display_source and info["preset"] == "ccnet"
    assert info["files"]["es.arpa.bin"]["size"] == (BUNDLED / "es.arpa.bin").stat().st_size
    # A second load is a cache hit; another signature is another cache directory.
    srv.requests.clear()
    assert PerplexityModel.load(url).perplexity(TEXT) == expected
    assert srv.requests == []
    dirs = {p.name for p in cache.iterdir()}
    assert all(len(d) == 24 and all(c in "0123456789abcdef" for c in d) for d in dirs)


def test_presigned_file_url_sends_the_query_to_its_sibling(serve, expected):
    """`.../es.arpa.bin?token=...`: the name comes from the path, the SentencePiece model beside
    it is asked for with the same query (a token shared by the files of the model)."""
    srv = serve(_bundled_routes(needs=SECRET))
    url = f"{srv.url}/models/es-reference/es.arpa.bin?X-Amz-Signature={SECRET}"
    m = PerplexityModel.load(url, preset="ccnet")
    assert m.perplexity(TEXT) == expected
    assert sorted(srv.gets()) == ["es.arpa.bin", "es.sp.model"]
    assert m.files.lm_path.name == "es.arpa.bin"
    info = model_sources.describe_remote(url)
    assert sorted(info["files"]) == ["es.arpa.bin", "es.sp.model"]
    _assert_no_secret(json.dumps(info), json.dumps(m.files.urls), str(m.files.directory))


def test_errors_of_a_presigned_url_never_show_the_secret(serve, tmp_path):
    good = _bundled_routes()
    srv = serve(good)
    q = f"X-Amz-Signature={SECRET}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    # A model.json that records another size and sha256 than the file served.
    served = tmp_path / "served"
    shutil.copytree(BUNDLED, served)
    meta = json.loads((served / "model.json").read_text())
    meta["file_sha256"]["es.arpa.bin"] = "0" * 64
    meta["file_sizes"]["es.arpa.bin"] += 1
    bad_json = json.dumps(meta).encode()
    srv_bad = serve(lambda path, query: (200, bad_json) if path.endswith("model.json")
                    else good(path.replace("/bad/", "/models/es-reference/"), query))
    cases = [
        (f"{dead}/models/es?{q}", model_sources.resolve, "cannot download"),
        (f"{dead}/models/es?{q}", model_sources.describe_remote, "cannot download"),
        (f"{dead}/models/es/es.arpa.bin?{q}", model_sources.describe_remote, "cannot reach"),
        (f"{srv.url}/models/nothing-here?{q}", model_sources.resolve, "no KenLM model"),
        (f"{srv.url}/models/nothing-here?{q}", model_sources.describe_remote, "no KenLM model"),
        (f"http://user:{SECRET}@127.0.0.1:{dead.rsplit(':', 1)[1]}/m", model_sources.resolve,
         "cannot download"),
        (f"{srv_bad.url}/bad?{q}", model_sources.resolve, "model.json says"),
        (f"{srv_bad.url}/bad?{q}", model_sources.describe_remote, "records"),
        # http.client's InvalidURL quotes the whole request target, query included.
        (f"{srv.url}/models/es-reference?{q}&bad=a b", model_sources.resolve, "InvalidURL"),
    ]
    for url, call, message in cases:
        with pytest.raises(ModelSourceError, match=message) as err:
            call(url)
        text = _error_text(err.value)
        _assert_no_secret(text)
        assert "<redacted>" in str(err.value), str(err.value)


@pytest.mark.parametrize("url, shown", [
    ("https://h/m?X-Amz-Signature=abc&x=1", "https://h/m?<redacted>"),
    ("https://user:pw@h:8/m/es.arpa.bin?t=1#frag", "https://<redacted>@h:8/m/es.arpa.bin?<redacted>#<redacted>"),
    ("gs://bucket/models/es", "gs://bucket/models/es"),
    ("https://h/m", "https://h/m"),
    ("/local/dir?x", "/local/dir?x"),
])
def test_redact_url(url, shown):
    assert model_sources.redact_url(url) == shown


def test_model_describe_and_repr_redact_the_source(serve):
    srv = serve(_bundled_routes(needs=SECRET))
    m = PerplexityModel.load(f"{srv.url}/models/es-reference?X-Amz-Signature={SECRET}")
    _assert_no_secret(json.dumps(m.describe()), repr(m))
