"""The upload decision is made on content (sha256 / git blob id), never on size: a same-size
rewrite of stats.json or README.md is sent again, even when its mtime was put back.
Only HfApi's three calls are replaced (test_publish_upload.FakeHub)."""
from __future__ import annotations

import json
import os

import pytest

from pipelines.publish import hub_upload
from test_publish_upload import SECRET, FakeHub, _publish, sampled  # noqa: F401 (fixture)


@pytest.fixture
def hub(monkeypatch, tmp_path) -> FakeHub:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake = FakeHub()
    fake.install(monkeypatch)
    return fake


def _same_size_variant(data: bytes) -> bytes:
    """Different bytes, same length: swap two different characters of the content."""
    text = bytearray(data)
    i = next(i for i in range(len(text) - 1) if text[i] != text[i + 1] and chr(text[i]).isdigit()
             and chr(text[i + 1]).isdigit())
    text[i], text[i + 1] = text[i + 1], text[i]
    assert bytes(text) != data and len(text) == len(data)
    return bytes(text)


def test_a_same_size_rewrite_of_stats_json_in_the_sampled_dir_is_uploaded_again(
        tmp_path, sampled, hub):
    import shutil

    copy = {m: tmp_path / m for m in sampled}
    for m, src in sampled.items():
        shutil.copytree(src, copy[m])
    assert _publish(copy, tmp_path / "stage") == 0
    stats_path = copy["gaussian"] / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["command"] = stats["command"].replace("ppsample", "ppsamplf")  # same size
    new = json.dumps(stats).encode()
    if len(new) != stats_path.stat().st_size:  # keep the test honest about "same size"
        new = _same_size_variant(stats_path.read_bytes())
    assert len(new) == stats_path.stat().st_size
    stats_path.write_bytes(new)
    hub.commits.clear()
    assert _publish(copy, tmp_path / "stage") == 0
    added = [p for c in hub.commits for p in c["added"]]
    assert "gaussian/stats.json" in added
    assert hub.files["gaussian/stats.json"] == new


@pytest.mark.parametrize("name", ["gaussian/stats.json", "README.md"])
def test_a_same_size_same_mtime_rewrite_in_the_staging_folder_is_uploaded_again(
        tmp_path, sampled, hub, name):
    stage = tmp_path / "stage"
    assert _publish(sampled, stage) == 0
    # what is on the Hub now, and a same-size edit of it whose mtime is put back
    target = stage / name
    before = target.stat()
    new = _same_size_variant(target.read_bytes())
    target.write_bytes(new)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    hub.commits.clear()
    report = hub_upload.upload_folder(stage, "someone/mc4-es-sampled", log=lambda m: None)
    assert report.uploaded == [name]
    assert hub.files[name] == new


def test_a_hub_file_of_the_same_size_but_other_content_is_replaced(tmp_path, sampled, hub):
    stage = tmp_path / "stage"
    assert _publish(sampled, stage) == 0
    for name in ("README.md", "gaussian/stats.json", "figures/input_vs_sampled.png"):
        hub.files[name] = _same_size_variant(hub.files[name]) if name.endswith((".md", ".json")) \
            else hub.files[name][:-1] + bytes([hub.files[name][-1] ^ 1])
    hub.commits.clear()
    report = hub_upload.upload_folder(stage, "someone/mc4-es-sampled", log=lambda m: None)
    assert sorted(report.uploaded) == ["README.md", "figures/input_vs_sampled.png",
                                       "gaussian/stats.json"]
    for name in report.uploaded:
        assert hub.files[name] == (stage / name).read_bytes()
