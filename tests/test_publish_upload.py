"""The upload path of `ppsample publish`, with the Hub replaced at the HfApi boundary.

Only the three HfApi methods the uploader calls (create_repo, list_repo_tree, create_commit) are
replaced, by an in-memory repo that answers like the Hub: listing entries are real RepoFile
objects (LFS sha256 for binary files, git blob ids for small text files), and commits receive
the real CommitOperationAdd / CommitOperationDelete objects built by the code under test.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.hf_api import RepoFile

from cli_exit import exit_status as ppsample
from test_publish_sampled_dir import make_sampled_dir, read_web_docs

SECRET = "hf_TESTsecretTOKEN0123456789abcdefXYZ"
LFS_SUFFIXES = (".parquet", ".png", ".gz")


class FakeHub:
    """One dataset repo held in memory; records every call the uploader makes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
        self.calls: list[tuple[str, dict]] = []
        self.commits: list[dict] = []
        self.fail_on_commit: int | None = None
        self.failure = ConnectionError("connection reset by peer")
        self.commit_attempts = 0

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(HfApi, "create_repo", lambda api, *a, **k: self.create_repo(*a, **k))
        monkeypatch.setattr(HfApi, "list_repo_tree", lambda api, *a, **k: self.list_repo_tree(*a, **k))
        monkeypatch.setattr(HfApi, "create_commit", lambda api, *a, **k: self.create_commit(*a, **k))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def list_repo_tree(self, repo_id, path_in_repo=None, **kwargs):
        self.calls.append(("list_repo_tree", {"repo_id": repo_id, **kwargs}))
        for path, data in sorted(self.files.items()):
            entry = {"path": path, "size": len(data),
                     "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(),
                                "pointerSize": 132}
                entry["oid"] = hashlib.sha1(path.encode()).hexdigest()  # the pointer's blob
            yield RepoFile(**entry)

    def create_commit(self, repo_id, operations, **kwargs):
        operations = list(operations)
        self.calls.append(("create_commit", {"repo_id": repo_id, "operations": operations, **kwargs}))
        self.commit_attempts += 1
        if self.fail_on_commit == self.commit_attempts:
            raise self.failure
        added, deleted = [], []
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                self.files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
                added.append(op.path_in_repo)
            elif isinstance(op, CommitOperationDelete):
                del self.files[op.path_in_repo]
                deleted.append(op.path_in_repo)
            else:
                raise AssertionError(f"unexpected operation {op!r}")
        self.commits.append({"added": added, "deleted": deleted,
                             "message": kwargs["commit_message"], "repo_type": kwargs.get("repo_type")})


@pytest.fixture(scope="module")
def sampled(shared_data, tmp_path_factory) -> dict[str, Path]:
    docs = read_web_docs(shared_data, 200)
    root = tmp_path_factory.mktemp("sampled")
    make_sampled_dir(root / "gaussian", docs, "gaussian", seed=2)
    make_sampled_dir(root / "stepwise", docs, "stepwise", seed=2, parameters={"factor": 300.0})
    return {"gaussian": root / "gaussian", "stepwise": root / "stepwise"}


@pytest.fixture
def hub(monkeypatch, tmp_path) -> FakeHub:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login from the machine
    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake = FakeHub()
    fake.install(monkeypatch)
    return fake


def _publish(sampled, staging, *extra) -> int:
    return ppsample(["publish", "--input", str(sampled["gaussian"]), "--input", str(sampled["stepwise"]),
                     "--repo-id", "someone/mc4-es-sampled", "--staging-dir", str(staging), *extra])


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


def test_upload_creates_the_repo_and_commits_exactly_the_local_dir_folder(tmp_path, sampled, hub):
    assert _publish(sampled, tmp_path / "stage", "--private", "--files-per-commit", "4") == 0
    assert hub.calls[0] == ("create_repo", {"repo_id": "someone/mc4-es-sampled", "repo_type": "dataset",
                                            "private": True, "exist_ok": True})
    assert hub.calls[1] == ("list_repo_tree", {"repo_id": "someone/mc4-es-sampled",
                                               "repo_type": "dataset", "recursive": True})
    # What the Hub now holds is byte for byte what --local-dir writes.
    assert _publish(sampled, tmp_path / "unused", "--private", "--local-dir", str(tmp_path / "local")) == 0
    expected = _folder_files(tmp_path / "local")
    assert {p: d for p, d in hub.files.items() if p != ".gitattributes"} == expected
    data = sorted(p for p in expected if p != "README.md")
    assert [c["added"] for c in hub.commits] == [data[i:i + 4] for i in range(0, len(data), 4)] + [["README.md"]]
    assert all(c["repo_type"] == "dataset" and not c["deleted"] for c in hub.commits)
    assert hub.commits[-1]["message"].startswith("Update dataset card")
    # The local bookkeeping records every uploaded file's real hash.
    ledger = json.loads((tmp_path / "stage" / ".cache" / "ppsample" / "upload.json").read_text())
    assert {p: e["sha256"] for p, e in ledger.items()} == {
        p: hashlib.sha256(d).hexdigest() for p, d in expected.items()}


def test_interrupted_upload_resumes_without_resending_finished_files(tmp_path, sampled, hub, capsys):
    hub.fail_on_commit = 2
    assert _publish(sampled, tmp_path / "stage", "--files-per-commit", "3") == 1
    err = capsys.readouterr().err
    assert "upload to someone/mc4-es-sampled stopped: ConnectionError" in err
    assert "again to resume" in err
    first_done = hub.commits[0]["added"]
    assert len(hub.commits) == 1 and len(first_done) == 3
    failed_batch = [op.path_in_repo for op in hub.calls[-1][1]["operations"]]

    hub.fail_on_commit = None
    hub.calls.clear()
    assert _publish(sampled, tmp_path / "stage", "--files-per-commit", "3") == 0
    resent = [p for c in hub.commits[1:] for p in c["added"]]
    assert not set(resent) & set(first_done)  # finished files are not sent again
    assert set(failed_batch) <= set(resent)  # the commit that failed is redone
    everything = set(_folder_files(tmp_path / "stage"))
    assert set(resent) | set(first_done) == everything and len(resent) == len(set(resent))
    assert "3 already on the Hub" in capsys.readouterr().out

    # A third run finds nothing to do and commits nothing.
    commits_before = len(hub.commits)
    assert _publish(sampled, tmp_path / "stage") == 0
    assert len(hub.commits) == commits_before
    assert "already up to date" in capsys.readouterr().out


def test_changed_files_are_resent_and_stale_ones_removed(tmp_path, sampled, hub):
    assert _publish(sampled, tmp_path / "stage", "--include-json-shards") == 0
    json_files = sorted(p for p in hub.files if "/json/" in p)
    assert json_files
    hub.commits.clear()
    # Without the json shards: they are stale now, and the card changes (no json section).
    assert _publish(sampled, tmp_path / "stage") == 0
    assert [c["added"] for c in hub.commits] == [["README.md"]]
    assert hub.commits[0]["deleted"] == json_files
    assert not any("/json/" in p for p in hub.files)
    assert ".gitattributes" in hub.files  # files outside the published folders are left alone


def test_token_appears_in_no_output_log_or_file(tmp_path, sampled, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    hub_logger = logging.getLogger("huggingface_hub")
    previous = hub_logger.propagate
    hub_logger.propagate = True
    try:
        hub.fail_on_commit = 1
        hub.failure = RuntimeError(f"401 Unauthorized for header 'Authorization: Bearer {SECRET}'")
        assert _publish(sampled, tmp_path / "stage") == 1
        hub.fail_on_commit = None
        assert _publish(sampled, tmp_path / "stage") == 0
    finally:
        hub_logger.propagate = previous
    captured = capsys.readouterr()
    assert "<redacted>" in captured.err  # the Hub's error text was shown, without the token
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for name, kwargs in hub.calls:  # left to huggingface_hub, never passed around by us
        assert "token" not in kwargs and SECRET not in repr(kwargs)


def test_no_token_is_a_clear_error_before_any_work(tmp_path, sampled, hub, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    assert _publish(sampled, tmp_path / "stage") == 1
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in capsys.readouterr().err
    assert hub.calls == []
    assert not (tmp_path / "stage").exists()
