"""Model sources: bundled name, local paths, fsspec URLs, http(s) (a local server on 127.0.0.1),
cc_net's URL layout, hf:// (huggingface_hub mocked at hf_hub_download), the per-machine cache
(one locked, verified download shared by concurrent processes), describe_remote, errors."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest

from lm_models import model_sources
from lm_models.model_sources import ModelSourceError
from lm_models.perplexity import PerplexityModel
# fixtures expected (TEXT's perplexity under the bundled model) and cache (autouse)
from model_source_fixtures import BUNDLED, TEXT, cache, expected  # noqa: F401


class _Server:
    """http.server over a directory, counting requests; `truncate` cuts responses short."""

    def __init__(self, root: Path):
        self.root, self.requests, self.truncate = root, [], set()
        self.heads, self.slow = [], set()  # HEAD requests; files sent slowly (widen races)
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                server.heads.append(self.path)
                super().do_HEAD()

            def do_GET(self):
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if name in server.slow:
                    data = (root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    step = len(data) // 8 + 1
                    for start in range(0, len(data), step):
                        self.wfile.write(data[start:start + step])
                        time.sleep(0.1)
                    return
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


def test_describe_takes_a_downloaded_files_hash_from_its_download(server, monkeypatch):
    """describe() records each file's sha256; for a downloaded file it is the one computed
    while downloading (a worker does not read a multi-GB model again), and a file changed
    since is hashed anew."""
    from lm_models import perplexity

    url = f"{server.url}/models/es-reference"
    m = PerplexityModel.load(url)
    true = {name: perplexity.sha256_file(BUNDLED / name) for name in ("es.arpa.bin", "es.sp.model")}
    hashed = []
    monkeypatch.setattr(perplexity, "sha256_file", lambda p: hashed.append(p) or "rehashed")
    perplexity._sha256_cached.cache_clear()
    assert {k: v["sha256"] for k, v in m.describe()["files"].items()} == true
    assert hashed == []
    lm = m.files.lm_path
    os.utime(lm, ns=(lm.stat().st_atime_ns, lm.stat().st_mtime_ns + 1))  # no longer as recorded
    assert perplexity._sha256(lm) == "rehashed" and hashed == [str(lm)]


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
    leftovers = [p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    # Only model.json (complete, verified) is cached: no model file, no partial download.
    assert sorted(leftovers) == [".model.json.verified", "model.json"]
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


# ---------------------------------------------------------------- one verified copy per machine

_LOADER = r"""
import json, os, sys, time
from pathlib import Path
from lm_models.perplexity import PerplexityModel
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.01)
m = PerplexityModel.load(url)
lm = os.path.realpath(m.files.lm_path)
mapped = {int(line.split()[4]) for line in open("/proc/self/maps") if line.rstrip().endswith(lm)}
print(json.dumps({"lm": lm, "inode": os.stat(lm).st_ino, "mapped": sorted(mapped),
                  "perplexity": m.perplexity(%r)}))
""" % TEXT


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_concurrent_processes_on_a_cold_cache_download_once_and_map_one_file(
        server, cache, tmp_path, expected):
    """4 processes load the same remote model at the same moment: the server sees one GET of
    es.arpa.bin, and every process memory-maps the same inode (one copy in the page cache)."""
    url = f"{server.url}/models/es-reference"
    server.slow.add("es.arpa.bin")  # the download lasts ~0.8 s: the others arrive during it
    n = 4
    go = tmp_path / "go"
    env = {**os.environ, "PPSAMPLE_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(BUNDLED.parents[2])] + sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _LOADER, url, str(tmp_path / f"ready{i}"),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(n)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.02)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r.rsplit("/", 1)[-1] for r in server.requests].count("es.arpa.bin") == 1
    inodes = {r["inode"] for r in results}
    assert len(inodes) == 1, results
    assert all(r["mapped"] == sorted(inodes) for r in results), results
    assert {r["lm"] for r in results} == {os.path.realpath(r["lm"]) for r in results}
    assert str(cache) in results[0]["lm"]
    assert all(r["perplexity"] == expected for r in results)


def _cached(cache: Path, name: str) -> Path:
    [path] = [p for p in cache.rglob(name) if p.is_file()]
    return path


def test_truncated_cached_file_is_downloaded_again_not_handed_to_kenlm(server, cache, expected):
    url = f"{server.url}/models/es-reference"
    PerplexityModel.load(url)
    lm = _cached(cache, "es.arpa.bin")
    data = lm.read_bytes()
    # A shorter copy in the cache (e.g. written by a tool that ran out of disk). Written beside
    # and renamed: truncating the file in place would SIGBUS this process, which maps it.
    short = lm.with_name("short")
    short.write_bytes(data[: len(data) // 2])
    os.replace(short, lm)
    again = PerplexityModel.load(url)
    assert again.perplexity(TEXT) == expected
    assert [r.rsplit("/", 1)[-1] for r in server.requests].count("es.arpa.bin") == 2
    assert lm.read_bytes() == data


def test_cache_hit_needs_no_request_and_an_old_cache_is_hashed_once(server, cache, expected):
    url = f"{server.url}/models/es-reference"
    PerplexityModel.load(url)
    lm = _cached(cache, "es.arpa.bin")
    sidecar = lm.with_name(".es.arpa.bin.verified")
    assert json.loads(sidecar.read_text())["sha256"] == json.loads(
        (BUNDLED / "model.json").read_text())["file_sha256"]["es.arpa.bin"]
    sidecar.unlink()  # a cache written before sidecars existed: model.json's sha256 decides
    server.requests.clear()
    assert PerplexityModel.load(url).perplexity(TEXT) == expected
    assert server.requests == []
    assert sidecar.is_file()


def test_download_that_differs_from_model_json_sha256_is_refused(server, cache):
    served = server.root / "models" / "es-reference"
    meta = json.loads((served / "model.json").read_text())
    meta["file_sha256"]["es.arpa.bin"] = "0" * 64
    (served / "model.json").write_text(json.dumps(meta))
    url = f"{server.url}/models/es-reference"
    with pytest.raises(ModelSourceError, match=rf"{url}/es.arpa.bin.*sha256"):
        PerplexityModel.load(url)
    assert not [p for p in cache.rglob("es.arpa.bin*") if p.is_file()]


# ---------------------------------------------------------------- describe_remote (no download)


def test_describe_remote_http_reads_model_json_and_sizes_only(server, cache):
    url = f"{server.url}/models/es-reference"
    info = model_sources.describe_remote(url)
    assert info["preset"] == "ccnet"
    sizes = {name: f["size"] for name, f in info["files"].items()}
    assert sizes == {n: (BUNDLED / n).stat().st_size for n in ["es.arpa.bin", "es.sp.model"]}
    assert [r.rsplit("/", 1)[-1] for r in server.requests] == ["model.json"]  # no binary GET
    assert sorted(h.rsplit("/", 1)[-1] for h in server.heads) == ["es.arpa.bin", "es.sp.model"]
    assert not list(cache.rglob("es.arpa.bin"))
    cc_net = model_sources.describe_remote(f"{server.url}/dl/cc_net/lm/es.arpa.bin")
    assert cc_net["preset"] is None and cc_net["model_json"] is None
    with pytest.raises(ModelSourceError, match="no KenLM model"):
        model_sources.describe_remote(f"{server.url}/models/nothing-here")


def test_describe_remote_size_mismatch_with_model_json(server):
    (server.root / "models" / "es-reference" / "es.arpa.bin").write_bytes(b"truncated upload")
    with pytest.raises(ModelSourceError, match="records"):
        model_sources.describe_remote(f"{server.url}/models/es-reference")


@pytest.fixture
def fake_gcs():
    """gs:// answered by an in-memory fsspec filesystem: GCS stubbed at the fsspec boundary."""
    import fake_gcs

    yield fake_gcs.install()
    fake_gcs.uninstall()


def test_describe_remote_gs_uses_fsspec_info_not_a_download(fake_gcs):
    fs = fake_gcs()
    for name in ["es.arpa.bin", "es.sp.model", "model.json"]:
        fs.pipe(f"gs://bucket/models/es/{name}", (BUNDLED / name).read_bytes())
    info = model_sources.describe_remote("gs://bucket/models/es")
    assert info["preset"] == "ccnet"
    assert info["files"]["es.arpa.bin"] == {"url": "gs://bucket/models/es/es.arpa.bin",
                                           "size": (BUNDLED / "es.arpa.bin").stat().st_size}
    assert [p.rsplit("/", 1)[-1] for p in fake_gcs.opened] == ["model.json"]
    with pytest.raises(ModelSourceError, match="gs://bucket/models/none"):
        model_sources.describe_remote("gs://bucket/models/none")


def test_describe_remote_hf_uses_file_metadata_not_a_download(monkeypatch):
    """hf:// at huggingface_hub's boundary: sizes from get_hf_file_metadata, downloads none."""
    import huggingface_hub

    downloads, metadata = [], []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        downloads.append(filename)
        raise _EntryNotFoundError(filename)  # edugp's layout: no model.json

    class Meta:
        def __init__(self, size):
            self.size = size

    def fake_metadata(url, **kwargs):
        metadata.append(url)
        name = url.rsplit("/", 1)[-1]
        if not (BUNDLED / name).exists():
            raise _EntryNotFoundError(url)
        return Meta((BUNDLED / name).stat().st_size)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake_metadata)
    info = model_sources.describe_remote("hf://edugp/kenlm/wikipedia")
    assert downloads == ["wikipedia/model.json"]
    assert info["preset"] is None
    assert info["files"]["es.arpa.bin"]["size"] == (BUNDLED / "es.arpa.bin").stat().st_size
    assert all("edugp/kenlm" in u and "/wikipedia/" in u for u in metadata)
