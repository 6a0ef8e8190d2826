"""Resumable upload of a built publish folder to a Hugging Face dataset repo.

The Hub's own listing is the record of what is finished: a file whose content the repo already
holds (same LFS sha256, or same git blob id for small files) is never sent again. Files go up
in several commits of bounded size, the data first and README.md last (so the card never
advertises configs whose files are missing); an interrupted upload loses at most the commit in
flight, and running the same command again sends only what is not on the Hub yet.

Whether a file is sent is decided by content only: its sha256 (or git blob id) against the
Hub's. Local hashes are kept in `.cache/ppsample/upload.json` inside the folder so a resume does
not re-read unchanged files (publish rebuilds the folder without touching files whose bytes are
already right); a cached hash is reused only while the file's size, mtime, ctime and inode are
all unchanged. ctime cannot be set back by a program (os.utime moves it forward), so a rewrite
of the same size, even one that restores the old mtime, is hashed again.

The token comes from huggingface_hub itself (HF_TOKEN, or the login saved by `hf auth login`):
this module only checks that there is one, never passes it around, and redacts it from any
message it prints.

Only three HfApi methods are used: create_repo, list_repo_tree, create_commit (all present in
huggingface_hub >= 0.30). Newer huggingface_hub versions removed `upload_large_folder`; these
three give the same resumability on every version.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from pipelines.errors import RemoteError  # the upload cannot start or did not finish; never the token

LEDGER = Path(".cache") / "ppsample" / "upload.json"
DEFAULT_FILES_PER_COMMIT = 100
DEFAULT_BYTES_PER_COMMIT = 2 * 1024**3
CARD = "README.md"


@dataclass(frozen=True)
class LocalFile:
    path: str
    size: int
    sha256: str
    git_blob_id: str


@dataclass
class UploadReport:
    repo_id: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: int = 0

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo_id}"

    def summary(self) -> str:
        if not self.uploaded and not self.deleted:
            return f"{self.url}: already up to date ({len(self.skipped)} files on the Hub)"
        return (f"{self.url}: uploaded {len(self.uploaded)} files in {self.commits} commit(s), "
                f"{len(self.skipped)} already there, {len(self.deleted)} stale removed")


def upload_folder(folder: str | os.PathLike, repo_id: str, private: bool = False,
                  stale_prefixes: Iterable[str] = (), api=None,
                  files_per_commit: int = DEFAULT_FILES_PER_COMMIT,
                  bytes_per_commit: int = DEFAULT_BYTES_PER_COMMIT,
                  log: Callable[[str], None] = print) -> UploadReport:
    """Create the dataset repo if needed and make it hold `folder`'s files.

    Remote files under `stale_prefixes` that the folder lacks (an earlier publish's shards)
    are deleted in the last commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if files_per_commit < 1 or bytes_per_commit < 1:
        raise ValueError("files_per_commit and bytes_per_commit must be >= 1")
    token = require_token()
    say = _redacting(log, token)
    folder = Path(folder)
    api = api or HfApi()
    try:
        api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        local = local_files(folder)
        remote = remote_files(api, repo_id)
        report = UploadReport(repo_id)
        todo = []
        for path, info in local.items():
            if _same(info, remote.get(path)):
                report.skipped.append(path)
            else:
                todo.append(path)
        stale = sorted(p for p in remote if p not in local
                       and any(p.startswith(prefix) for prefix in stale_prefixes))
        data = [p for p in todo if p != CARD]
        batches = _batches(data, local, files_per_commit, bytes_per_commit)
        final = ([CARD] if CARD in todo else [])
        total = len(batches) + (1 if final or stale else 0)
        say(f"{repo_id}: {len(todo)} file(s) to upload, {len(report.skipped)} already on the Hub, "
            f"{len(stale)} stale to remove, in {total} commit(s)")
        for i, batch in enumerate(batches, start=1):
            operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
                          for p in batch]
            api.create_commit(repo_id=repo_id, repo_type="dataset", operations=operations,
                              commit_message=f"Upload sampled data (part {i}/{total})")
            report.uploaded += batch
            report.commits += 1
            say(f"  commit {i}/{total}: {len(batch)} file(s), "
                f"{sum(local[p].size for p in batch):,} bytes")
        if final or stale:
            operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
                          for p in final]
            operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
            api.create_commit(repo_id=repo_id, repo_type="dataset", operations=operations,
                              commit_message=f"Update dataset card (part {total}/{total})")
            report.uploaded += final
            report.deleted += stale
            report.commits += 1
            say(f"  commit {total}/{total}: dataset card, {len(stale)} stale file(s) removed")
        return report
    except RemoteError:
        raise
    except Exception as err:  # network and Hub errors: say what failed, never the token
        raise RemoteError(_redact(f"upload to {repo_id} stopped: {type(err).__name__}: {err}. "
                                  "Run the same command again to resume.", token)) from None


def require_token() -> str:
    """The token huggingface_hub will use (HF_TOKEN or the saved login); only for redaction."""
    from huggingface_hub import get_token

    token = get_token()
    if token is None:
        raise RemoteError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                          "(or use --local-dir / --dry-run, which need none)")
    return token


def local_files(folder: Path) -> dict[str, LocalFile]:
    """Every file of the folder but `.cache/`, with hashes (cached while size, mtime, ctime and
    inode are unchanged)."""
    ledger_path = folder / LEDGER
    try:
        ledger = json.loads(ledger_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        ledger = {}
    files: dict[str, LocalFile] = {}
    fresh: dict[str, dict] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".cache"]
        dirnames.sort()
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name)).replace(os.sep, "/")
            stat = (folder / rel).stat()
            cached = ledger.get(rel)
            key = _stat_key(stat)
            if cached and all(cached.get(k) == v for k, v in key.items()):
                entry = cached
            else:
                sha256, blob_id = _hashes(folder / rel, stat.st_size)
                entry = {**key, "sha256": sha256, "git_blob_id": blob_id}
            fresh[rel] = entry
            files[rel] = LocalFile(rel, entry["size"], entry["sha256"], entry["git_blob_id"])
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ledger_path.with_name(ledger_path.name + ".partial")
    tmp.write_text(json.dumps(fresh, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, ledger_path)
    return files


def _stat_key(stat: os.stat_result) -> dict[str, int]:
    """What must be unchanged for a cached hash to be reused (an old ledger entry without
    ctime or inode never matches, so it is hashed again)."""
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino}


def remote_files(api, repo_id: str) -> dict[str, object]:
    """path -> RepoFile for every file on the repo's main branch."""
    return {entry.path: entry
            for entry in api.list_repo_tree(repo_id=repo_id, repo_type="dataset", recursive=True)
            if getattr(entry, "blob_id", None) is not None}


def _same(local: LocalFile, remote) -> bool:
    if remote is None or remote.size != local.size:
        return False
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return _lfs_sha256(lfs) == local.sha256
    return remote.blob_id == local.git_blob_id


def _lfs_sha256(lfs) -> str | None:
    return getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)


def _hashes(path: Path, size: int) -> tuple[str, str]:
    """sha256 (what LFS records) and the git blob id (what the Hub reports for small files)."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
            blob.update(block)
    return sha256.hexdigest(), blob.hexdigest()


def _batches(paths: list[str], local: dict[str, LocalFile], max_files: int,
             max_bytes: int) -> list[list[str]]:
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path in sorted(paths):
        if current and (len(current) >= max_files or size + local[path].size > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(path)
        size += local[path].size
    if current:
        batches.append(current)
    return batches


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "<redacted>") if token else text


def _redacting(log: Callable[[str], None], token: str) -> Callable[[str], None]:
    return lambda message: log(_redact(message, token))
