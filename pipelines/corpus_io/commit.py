"""Output commits: a stage's output becomes visible only once it is complete, and a failed,
interrupted or killed run leaves the previous output exactly as it was.

Layout of an output directory OUT (local path or object-store URL such as gs://):

    OUT/_ppsample_commit.json            the commit marker, written LAST: stage, command and every
                                         committed file with its size; readers trust it alone
    OUT/...                              the committed files (whatever the stage wrote)
    OUT/.ppsample-staging/<id>/          where a running stage writes (the pipeline's `--output`)
    OUT/.ppsample-staging/<id>/_ppsample_owner.json   who writes there (host, pid, remote?)
    OUT/.ppsample-staging/<id>/_ppsample_plan.json    written when its commit starts

Object stores have no rename (gs:// "rename" is copy + delete, file by file), so a commit never
depends on one: it (1) records the plan (old and new file lists) in the staging folder, (2)
removes the marker and stats.json, (3) copies every staged file into place (a local rename
when the filesystem has one), stats.json last, (4) removes the old output's files that the new
one does not have (only files the old marker lists: never a file ppsample did not write), (5)
writes the marker, (6) deletes the staging folder. Every step is idempotent, so a commit cut
short (a killed process, a retried Dataflow step) is finished by the next commit attempt or by
the next stage that writes into OUT ("roll forward": the staged output was complete).

Until the marker is written, OUT's previous output is untouched (steps 1-3 happen only once the
new output is complete in staging; during steps 2-5, which take seconds, readers see no marker
and refuse the directory rather than read a mix).

Errors for the user are `pipelines.errors.OutputError` (the CLI prints its message as one
`ppsample: error: ...` line).
"""
from __future__ import annotations

import datetime
import json
import os
import posixpath
import socket
import sys
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.corpus_io.writers import join, read_json as _read_json
from pipelines.errors import OutputError

MARKER = "_ppsample_commit.json"
STAGING_DIR = ".ppsample-staging"
OWNER = "_ppsample_owner.json"
PLAN = "_ppsample_plan.json"
STATS_JSON = "stats.json"
MARKER_FORMAT = "ppsample-commit/1"
# Files of ours inside a staging folder that are bookkeeping, not output.
_RESERVED = (OWNER, PLAN)


# ---------------------------------------------------------------------------------------------
# Filesystem helpers (Beam FileSystems: local, gs://, any registered scheme; never rename on
# object stores)

def is_local(path: str) -> bool:
    return "://" not in str(path)


def _strip(path: str) -> str:
    return path.rstrip("/") if not is_local(path) else os.path.normpath(path)


def list_tree(root: str, limit: int | None = None) -> dict[str, int]:
    """{relative path (posix): size} of every file under root, recursively ({} if none); at
    most `limit` files (object stores list page by page)."""
    root = _strip(root)
    if is_local(root) and not os.path.isdir(root):
        return {}
    try:
        results = FileSystems.match([join(root, "**")], limits=[limit] if limit else None)
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError when nothing matches on some stores
        return {}
    prefix = root + ("/" if not is_local(root) else os.sep)
    files = {}
    for result in results:
        for meta in result.metadata_list:
            if not meta.path.startswith(prefix):
                continue
            rel = meta.path[len(prefix):]
            if is_local(root):
                if os.path.isdir(meta.path):
                    continue
                rel = rel.replace(os.sep, "/")
            if rel and not rel.endswith("/"):
                files[rel] = meta.size_in_bytes
    return files


def _top_level(root: str, limit: int | None = None) -> list[str]:
    """Names directly in root (folders end with '/'), without walking a tree that may be huge
    (`--output ~` must not list a home directory)."""
    root = _strip(root)
    if is_local(root):
        if not os.path.isdir(root):
            return []
        return sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(root))
    names = set()
    for rel in list_tree(root, limit=limit):
        head, sep, _ = rel.partition("/")
        names.add(head + sep)
    return sorted(names)


def _write_json(path: str, obj) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    if is_local(path):
        # write then rename: the marker appears whole or not at all
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    # object stores: an object becomes visible only when its upload completes
    with FileSystems.create(path, mime_type="application/json",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def _exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    except Exception:  # noqa: BLE001
        return False


def _delete(paths: list[str]) -> None:
    paths = [p for p in paths if _exists(p)]
    if paths:
        FileSystems.delete(paths)


def _delete_tree(root: str) -> None:
    root = _strip(root)
    if is_local(root):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        return
    files = [join(root, rel) for rel in list_tree(root)]
    if files:
        FileSystems.delete(files)


def _read_json_or_none(path: str):
    try:
        return _read_json(path) if _exists(path) else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# What is this directory?

@dataclass
class DirState:
    path: str
    marker: dict | None = None           # the commit marker, when there is one
    files: dict = field(default_factory=dict)   # rel -> size (see inspect)
    staging: list = field(default_factory=list)  # staging folder ids

    @property
    def stage(self) -> str | None:
        return (self.marker or {}).get("stage")

    @property
    def empty(self) -> bool:
        return not self.files

    def legacy_stats(self) -> dict | None:
        """stats.json of an output written before commit markers existed (stats.json was
        already written last then), when there is no marker."""
        if self.marker is not None or STATS_JSON not in self.files:
            return None
        stats = _read_json_or_none(join(self.path, STATS_JSON))
        if isinstance(stats, dict) and str(stats.get("command", "")).startswith("ppsample "):
            return stats
        return None


def inspect(path: str) -> DirState:
    """What OUT holds. With a marker, `.files` is every file outside staging (to check the
    marker against); without one, only the names directly in OUT."""
    path = _strip(path)
    state = DirState(path)
    state.staging = sorted(name.rstrip("/") for name in _top_level(join(path, STAGING_DIR))
                           if name.endswith("/") or not is_local(path))
    if _exists(join(path, MARKER)):
        marker = _read_json_or_none(join(path, MARKER))
        if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
            raise OutputError(f"{path}: {MARKER} is damaged; delete it and rerun the stage "
                              "that wrote this directory")
        state.marker = marker
        state.files = {rel: size for rel, size in list_tree(path).items()
                       if not rel.startswith(STAGING_DIR + "/")}
    else:
        state.files = {name: -1 for name in _top_level(path, limit=1000)
                       if name != STAGING_DIR + "/"}
    return state


def stage_of_stats(stats: dict) -> str | None:
    stage = stats.get("stage")
    if stage:
        return "stats" if stats.get("dry_run") else stage
    parts = str(stats.get("command", "")).split()
    return parts[1] if len(parts) > 1 else None


# ---------------------------------------------------------------------------------------------
# Writers: begin a staged output, commit it

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_path(out: str, staging_id: str) -> str:
    return join(_strip(out), STAGING_DIR, staging_id)


class JobStatus(NamedTuple):
    """What a runner says of a recorded remote job (`job_status(job)`, passed in by the caller:
    this module does not know the runners)."""
    state: str | None  # the runner's name for it; None when it could not be asked
    ended: bool  # it writes nothing more
    succeeded: bool  # it finished its work (its staged output is complete if stats.json is)


def _writer_gone(owner: dict | None, staging: str, job_status=None) -> tuple[bool, str]:
    """(whether the writer of a staging folder is certainly gone, what to say of it). Gone: a
    local run on this host whose process no longer exists (or that died before recording
    itself), or a remote job that `job_status` says has ended. A remote job that cannot be
    asked about (no job id recorded, no job_status, API unreachable) may still be writing."""
    if owner is None:
        return True, "left by a run that was killed"
    if not owner.get("remote"):
        if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
            return True, "left by a run that was killed"
        return False, f"process {owner.get('pid')} on {owner.get('host')} may still be writing there"
    job = owner.get("job")
    if not isinstance(job, dict) or job.get("runner") != "dataflow":
        return False, ("a remote job may still be writing there (no job id recorded); delete it "
                       "once that job has ended")
    status = job_status(job) if job_status is not None else JobStatus(None, False, False)
    who = f"Dataflow job {job.get('job_id')}"
    if status.succeeded and _exists(join(staging, STATS_JSON)):
        # a finished job whose commit step did not run: its output is complete, never delete it
        return False, (f"the complete output of {who} (done), not committed: commit it with "
                       f"`python -m pipelines.corpus_io.commit {staging}`")
    if status.ended:
        return True, f"left by {who}, which has ended ({status.state})"
    return False, (f"{who} ({status.state or 'state unknown: the Dataflow API did not answer'}) "
                   "may still be writing there; the next run into this output removes it once "
                   "the job has ended")


def recover(out: str, log=None, job_status=None) -> list[str]:
    """Deals with what earlier runs left in OUT/.ppsample-staging: finishes commits that were cut
    short (the staged output was complete), deletes folders of local runs that died, and leaves
    (and names) folders that may still belong to a running remote job (`job_status(job) ->
    JobStatus` asks its runner; without it, a remote job is assumed to run). Returns notes."""
    out = _strip(out)
    notes = []
    for staging_id in inspect(out).staging:
        staging = _staging_path(out, staging_id)
        if _exists(join(staging, PLAN)):
            commit(staging, out, log=log)
            notes.append(f"finished the interrupted commit of {staging}")
            continue
        gone, why = _writer_gone(_read_json_or_none(join(staging, OWNER)), staging, job_status)
        if gone:
            _delete_tree(staging)
            notes.append(f"removed {staging}, {why}")
        else:
            notes.append(f"ignoring {staging}: {why}")
    _remove_empty_staging_root(out)
    for note in notes:
        _say(log, f"ppsample: {note}")
    return notes


def _remove_empty_staging_root(out: str) -> None:
    root = join(out, STAGING_DIR)
    if is_local(out) and os.path.isdir(root):
        try:
            os.rmdir(root)
        except OSError:
            pass  # not empty: another run's staging


def _say(log, line: str) -> None:
    print(line, file=log or sys.stderr)


@dataclass
class Staging:
    """A staged output: the pipeline writes into `.path`; `.commit()` publishes it."""
    out: str
    stage: str
    path: str
    id: str
    command: str = ""
    replacing: str | None = None  # one line about what the commit replaces (--overwrite)
    log: object = None
    job: dict | None = None  # the remote job writing here, once submitted (record_job)

    def commit(self) -> dict:
        marker = commit(self.path, self.out, stage=self.stage, command=self.command,
                        staging_id=self.id, log=self.log)
        if self.replacing:
            _say(self.log, f"ppsample: {self.replacing}")
        return marker

    def record_job(self, job: dict) -> None:
        """Adds the submitted remote job to the owner record: a later run into OUT can then ask
        whether the job still runs, and remove this folder once it has ended."""
        self.job = job
        owner = _read_json_or_none(join(self.path, OWNER)) or {}
        _write_json(join(self.path, OWNER), {**owner, "job": job})

    def abort(self) -> None:
        """Forget this staged output (a failed or interrupted run): OUT is untouched. Once its
        commit has started (the plan is written) the staged output is complete and OUT may be
        half replaced: then it is kept, and the next commit attempt or run into OUT finishes it."""
        if _exists(join(self.path, PLAN)):
            _say(self.log, f"ppsample: the commit into {self.out} was interrupted; the next "
                           f"ppsample run into it finishes it (or `python -m "
                           f"pipelines.corpus_io.commit {self.path}`)")
            return
        _delete_tree(self.path)
        _remove_empty_staging_root(self.out)


def describe_files(files) -> str:
    files = sorted(files)
    shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    return f"{len(files)} file{'s' if len(files) != 1 else ''}: {shown}"


def begin(out: str, stage: str, *, overwrite: bool = False, remote: bool = False,
          command: str = "", log=None, job_status=None) -> Staging:
    """Checks that `stage` may write into OUT, deals with leftovers of earlier runs, and creates
    the staging folder. Refuses (OutputError) a non-empty OUT that ppsample did not write, or
    that holds another stage's output, unless `overwrite`."""
    out = _strip(out)
    if is_local(out) and os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"--output {out} is a file, not a directory")
    recover(out, log=log, job_status=job_status)
    state = inspect(out)
    replacing = None
    if state.marker is not None:
        if state.stage != stage:
            what = f"{out} holds a `ppsample {state.stage}` output ({len(state.marker['files'])} files)"
            if not overwrite:
                raise OutputError(f"{what}; `ppsample {stage}` would replace it: pass --overwrite, "
                                  "or choose another --output")
            replacing = (f"--overwrite: replaced the `{state.stage}` output in {out} "
                         f"({len(state.marker['files'])} files)")
    elif not state.empty:
        legacy = state.legacy_stats()
        what = (f"{out} holds an output of an older ppsample (`{stage_of_stats(legacy)}`, no "
                f"{MARKER})" if legacy else f"{out} is not empty and was not written by ppsample")
        if not overwrite:
            raise OutputError(f"{what} ({describe_files(state.files)}): pass --overwrite to write "
                              "beside those files (they are kept), or choose another --output")
        replacing = (f"--overwrite: wrote into {out} beside {len(state.files)} entries ppsample did "
                     "not commit (kept unless a new file has the same name; readers use only the "
                     f"files listed in {MARKER})")
    staging_id = (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                  + "-" + uuid.uuid4().hex[:8])
    path = _staging_path(out, staging_id)
    # The owner record first: a staging folder without one is treated as abandoned.
    _write_json(join(path, OWNER), {"stage": stage, "host": socket.gethostname(), "pid": os.getpid(),
                                    "remote": bool(remote), "command": command,
                                    "started": staging_id.split("-")[0]})
    return Staging(out=out, stage=stage, path=path, id=staging_id, command=command,
                   replacing=replacing, log=log)


def _staged_files(staging: str) -> dict[str, int]:
    return {rel: size for rel, size in list_tree(staging).items() if rel not in _RESERVED}


def _place(source: str, dest: str) -> None:
    if is_local(source) and is_local(dest):
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        os.replace(source, dest)  # same filesystem (OUT's child): atomic per file
    else:
        FileSystems.copy([source], [dest])  # object stores: server-side copy, overwrites


def _place_all(sources: list[str], dests: list[str]) -> None:
    if not sources:
        return
    if is_local(sources[0]):
        for source, dest in zip(sources, dests):
            _place(source, dest)
    else:
        FileSystems.copy(sources, dests)  # gs://: batched rewrite requests


def commit(staging: str, out: str, *, stage: str | None = None, command: str = "",
           staging_id: str | None = None, log=None) -> dict:
    """Publishes the complete output in `staging` as OUT's output (idempotent; see the module
    note for the steps). Returns the marker written."""
    staging, out = _strip(staging), _strip(out)
    staging_id = staging_id or staging.replace("\\", "/").rsplit("/", 1)[-1]
    marker_path = join(out, MARKER)
    current = _read_json_or_none(marker_path)
    plan_path = join(staging, PLAN)
    plan = _read_json_or_none(plan_path)
    if plan is None:
        new = _staged_files(staging)
        if not new and not _exists(join(staging, OWNER)):
            # The staging folder is gone: its commit finished (this is a retry), or it never was.
            if isinstance(current, dict):
                return current
            raise OutputError(f"{staging} does not exist: nothing to commit")
        if STATS_JSON not in new:
            raise OutputError(f"{staging} holds no {STATS_JSON}: the stage did not finish; "
                              "nothing was committed")
        owner = _read_json_or_none(join(staging, OWNER)) or {}
        old = (current or {}).get("files", {}) if isinstance(current, dict) else {}
        plan = {"id": staging_id, "stage": stage or owner.get("stage"),
                "command": command or owner.get("command", ""), "new": new, "old": old}
        _write_json(plan_path, plan)
    new, old = plan["new"], plan["old"]
    # 2. From here until the marker is written, readers must refuse OUT.
    _delete([marker_path, join(out, STATS_JSON)])
    # 3. Every staged file into place, stats.json last (tools that only look for stats.json).
    # One listing of each side, then one batched copy: object stores batch copies and deletes,
    # and 2,048 shards must not cost 2,048 round trips each.
    staged, placed = list_tree(staging), list_tree(out)
    lost = sorted(rel for rel in new if rel not in staged and rel not in placed)
    if lost:
        raise OutputError(f"{staging}: {describe_files(lost)} vanished before the commit; rerun "
                          "the stage")
    for batch in ([rel for rel in sorted(new) if rel != STATS_JSON and rel in staged],
                  [STATS_JSON] if STATS_JSON in staged else []):
        _place_all([join(staging, *rel.split("/")) for rel in batch],
                   [join(out, *rel.split("/")) for rel in batch])
    # 4. Files of the old output that the new one does not have (ours: listed by the old marker).
    gone = sorted(rel for rel in set(old) - set(new) if rel != MARKER and rel in placed)
    if gone:
        FileSystems.delete([join(out, *rel.split("/")) for rel in gone])
    if is_local(out):
        _remove_empty_dirs(out, {posixpath.dirname(rel) for rel in old})
    # 5. The marker, last.
    # Deterministic: the same command on the same inputs commits the same marker, byte for byte.
    marker = {"format": MARKER_FORMAT, "stage": plan["stage"], "command": plan["command"],
              "files": dict(sorted(new.items()))}
    _write_json(marker_path, marker)
    # 6. Clean up; the plan goes last, so a clean-up cut short is redone by the next attempt.
    leftovers = [join(staging, *rel.split("/")) for rel in list_tree(staging) if rel != PLAN]
    if leftovers:
        FileSystems.delete(leftovers)
    _delete([plan_path])
    _delete_tree(staging)
    _remove_empty_staging_root(out)
    return marker


def _remove_empty_dirs(out: str, rel_dirs: set[str]) -> None:
    for rel in sorted(rel_dirs, key=lambda r: -r.count("/")):
        while rel:
            try:
                os.rmdir(os.path.join(out, *rel.split("/")))
            except OSError:
                break
            rel = posixpath.dirname(rel)


# ---------------------------------------------------------------------------------------------
# Readers: is this a complete output of the stage I need?

def check_complete(path: str, *, want: tuple[str, ...], reader: str, fix: str) -> DirState:
    """Refuses (OutputError) a directory that is not a complete, committed ppsample output of one
    of the stages in `want`. Returns its state (`.marker`; or `.legacy_stats()` for an output
    written before markers, which is accepted when its stats.json names one of `want`).

    `reader` names the command reading (for the message), `fix` says what to run to make the right
    input (e.g. "run `ppsample sample --input SCORED --output DIR` first")."""
    path = _strip(path)
    pre = f"{reader}: " if reader else ""
    if is_local(path) and not os.path.isdir(path):
        raise OutputError(f"{pre}{path} is not a directory; {fix}")
    state = inspect(path)
    if state.marker is not None:
        listed = state.marker.get("files", {})
        missing = sorted(rel for rel in listed if rel not in state.files)
        changed = sorted(rel for rel, size in listed.items()
                         if rel in state.files and state.files[rel] != size)
        if missing or changed:
            bad = missing or changed
            raise OutputError(
                f"{pre}{path} is incomplete: {describe_files(bad)} "
                f"{'listed in ' + MARKER + ' missing' if missing else 'changed since the commit'}; "
                + (f"rerun `{state.marker['command']}`" if state.marker.get("command") else fix))
        if state.stage not in want:
            raise OutputError(f"{pre}{path} is a `ppsample {state.stage}` output, not "
                              f"{' or '.join('`' + w + '`' for w in want)}; {fix}")
        return state
    if state.staging:
        owner = _read_json_or_none(join(path, STAGING_DIR, state.staging[-1], OWNER)) or {}
        raise OutputError(f"{pre}{path} is incomplete: a ppsample run into it never finished "
                          f"(leftover {STAGING_DIR}/, no {MARKER}); "
                          + (f"rerun `{owner['command']}`" if owner.get("command") else fix))
    legacy = state.legacy_stats()
    if legacy is not None:
        stage = stage_of_stats(legacy)
        if stage not in want:
            raise OutputError(f"{pre}{path} is a `ppsample {stage}` output, not "
                              f"{' or '.join('`' + w + '`' for w in want)}; {fix}")
        return state
    if state.empty:
        raise OutputError(f"{pre}{path} is empty; {fix}")
    raise OutputError(f"{pre}{path} is not a complete ppsample output (no {MARKER}, no "
                      f"{STATS_JSON} written by ppsample); {fix}")


def out_of_staging(staging: str) -> str:
    """OUT for OUT/.ppsample-staging/<id>."""
    staging = _strip(staging)
    parent = posixpath.dirname(staging) if not is_local(staging) else os.path.dirname(staging)
    if parent.replace("\\", "/").rsplit("/", 1)[-1] != STAGING_DIR:
        raise OutputError(f"{staging} is not a staging folder (OUT/{STAGING_DIR}/<id>)")
    return posixpath.dirname(parent) if not is_local(parent) else os.path.dirname(parent)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.corpus_io.commit OUT/.ppsample-staging/<id>`: commit the output of a
    remote job whose launcher did not wait for it (the job's stats.json must exist)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.corpus_io.commit",
                                     description=main.__doc__)
    parser.add_argument("staging", help="the staging folder the job wrote into")
    args = parser.parse_args(argv)
    out = out_of_staging(args.staging)
    marker = commit(args.staging, out)
    print(f"ppsample: committed the `{marker['stage']}` output in {out} "
          f"({len(marker['files'])} files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
