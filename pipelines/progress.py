"""Live progress on local runs: input done/total with percentage, rate and ETA; documents
scored, and kept so far.

The counting code calls `add(scored=n)`, `add(kept=k, decided=d)` and `add(input_bytes=b)`
(compressed input bytes consumed) wherever it runs. Only the driver prints:

- the driver calls `start(total_bytes)` before the pipeline runs (the inputs' sizes, e.g. from
  `total_input_bytes(paths)`) and `stop()` after it; `start` makes a fresh counter directory
  and names it in the PPSAMPLE_PROGRESS_DIR environment variable, which Beam's
  multi_processing workers inherit;
- a process other than the driver keeps its running totals in memory and rewrites them, on
  every `add`, to one small file per process in that directory (atomically, so a reader never
  sees half a file; per batch of documents, so the cost is nothing next to scoring them);
  the in-process FnApiRunner's worker threads count in the driver's memory directly;
- a driver thread sums its own totals and every worker's file each INTERVAL_S and prints one
  line: rewritten in place on a terminal, a new line otherwise, but only when the counts moved
  (a log would otherwise repeat the same line, e.g. while Beam's multi_processing workers shut
  down, and the final line would repeat the last one). `stop()` prints the final line
  from the final totals, so "kept so far" there is the run's kept count (no final line when
  stop() runs while an exception propagates: the error is the last word).

The words follow the stage (`set_stage`): `run` and `score` score documents; `sample` and
`stats` read scored ones (and `stats` keeps nothing: "would be kept").

Remote runners never call `start`: there the Beam metrics counters (`ppsample/scored`, ...)
carry the same figures. `set_quiet(True)` (`-q`) turns it all off. `enable(on)` / `reset()` are
the older entry points (start without a total / stop, and zero the counters).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time

ENV = "PPSAMPLE_PROGRESS_DIR"
DRIVER_PID_ENV = "PPSAMPLE_PROGRESS_DRIVER_PID"
INTERVAL_S = 2.0
FIELDS = ("scored", "kept", "decided", "input_bytes")

_lock = threading.Lock()
_counts = dict.fromkeys(FIELDS, 0)
_session: dict = {"quiet": False, "muted": False, "thread": None, "stop": None, "start": None, "total": None,
                  "dir": None, "stream": None, "stage": None, "printed": None}
# stage -> (what happens to each document, what the kept count is)
STAGE_WORDS = {"sample": ("read", "kept so far"), "stats": ("read", "would be kept")}
DEFAULT_WORDS = ("scored", "kept so far")


def set_stage(stage: str | None) -> None:
    """The stage whose documents are counted (the words of the line); None: the default."""
    _session["stage"] = stage


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def set_quiet(quiet: bool) -> None:
    """`-q`: no progress at all (start() does nothing)."""
    _session["quiet"] = bool(quiet)


def mute() -> None:
    """No more lines in this session (the driver was interrupted and is stopping)."""
    _session["muted"] = True


def set_total(total_bytes: int | None) -> None:
    """The inputs' total size in bytes, for done/total, percentage and ETA."""
    _session["total"] = int(total_bytes) if total_bytes else None


def total_input_bytes(paths) -> int | None:
    """Sum of the sizes of `paths` (local or fsspec URLs); None when a size is unknown."""
    total = 0
    try:
        for path in paths:
            if "://" in str(path):
                import fsspec

                fs, inner = fsspec.core.url_to_fs(str(path))
                total += int(fs.size(inner))
            else:
                total += os.path.getsize(path)
    except (OSError, ValueError, TypeError, ImportError):
        return None
    return total


def reset() -> None:
    with _lock:
        _counts.update(dict.fromkeys(FIELDS, 0))
        _session["start"] = time.monotonic()
    directory = _session["dir"]
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            _remove(os.path.join(directory, name))


def start(total_bytes: int | None = None, stream=None) -> None:
    """Driver: start counting (and printing) for one local pipeline run."""
    stop(final=False)
    if total_bytes is not None:
        set_total(total_bytes)
    if _session["quiet"]:
        return
    directory = tempfile.mkdtemp(prefix="ppsample-progress-")
    os.environ[ENV] = directory
    os.environ[DRIVER_PID_ENV] = str(os.getpid())
    _session.update(dir=directory, stream=stream, stop=threading.Event(), muted=False, printed=None)
    reset()
    thread = threading.Thread(target=_poll, args=(_session["stop"],), name="ppsample-progress",
                              daemon=True)
    _session["thread"] = thread
    thread.start()


def stop(final: bool = True) -> None:
    """Driver: stop the printing thread, print the final line, remove the counter files."""
    thread, event = _session["thread"], _session["stop"]
    if event is not None:
        event.set()
    if thread is not None:
        thread.join(timeout=5)
    had_session = _session["dir"] is not None
    # Called from a `finally:` while an error propagates: the error is the last word, not a
    # progress line (cli prints it as one line).
    failing = sys.exc_info()[0] is not None
    if final and had_session and not failing:
        _emit(snapshot(), final=True)
    if _session["dir"]:
        shutil.rmtree(_session["dir"], ignore_errors=True)
    os.environ.pop(ENV, None)
    os.environ.pop(DRIVER_PID_ENV, None)
    _session.update(thread=None, stop=None, dir=None, total=None if had_session else _session["total"])


def enable(on: bool = True) -> None:
    """Older entry point: start (with the total given to set_total, if any) or stop."""
    if on:
        start(_session["total"])
    else:
        stop()


def add(scored: int = 0, kept: int = 0, decided: int = 0, input_bytes: int = 0) -> None:
    directory = os.environ.get(ENV)
    if not directory:
        return
    with _lock:
        _counts["scored"] += scored
        _counts["kept"] += kept
        _counts["decided"] += decided
        _counts["input_bytes"] += input_bytes
        if _is_driver():
            return
        data = json.dumps(_counts)
    # A worker process: its totals go to its own file, replaced atomically, for the driver.
    path = os.path.join(directory, f"{os.getpid()}.json")
    tmp = f"{path}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # the driver finished and removed the directory: nothing left to report
        _remove(tmp)


def snapshot() -> dict:
    """The driver's totals plus every worker process's latest file."""
    with _lock:
        totals = dict(_counts)
    directory = _session["dir"] or os.environ.get(ENV)
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(directory, name)) as f:
                    counts = json.load(f)
            except (OSError, ValueError):
                continue
            for key in FIELDS:
                totals[key] += int(counts.get(key, 0))
    return totals


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_progress(counts: dict, total_bytes: int | None, elapsed_s: float,
                    words: tuple[str, str] | None = None) -> str:
    """One progress line: input done/total (percentage, rate, ETA) when the total is known,
    then documents scored (rate) and kept so far."""
    parts = []
    done = counts.get("input_bytes", 0)
    if total_bytes and done:
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        share = min(done / total_bytes, 1.0)
        text = f"{_size(done)} of {_size(total_bytes)} ({share:.0%}) at {_size(rate)}/s"
        if rate > 0:
            text += f", ETA {format_duration(max(total_bytes - done, 0) / rate)}"
        parts.append(text)
    parts.append(format_line(counts.get("scored", 0), counts.get("decided", 0),
                             counts.get("kept", 0), elapsed_s, words))
    return "; ".join(parts)


def format_line(scored: int, decided: int, kept: int, elapsed_s: float,
                words: tuple[str, str] | None = None) -> str:
    done, kept_words = words or STAGE_WORDS.get(_session["stage"], DEFAULT_WORDS)
    rate = scored / elapsed_s if elapsed_s > 0 else 0.0
    text = f"{scored:,} docs {done} ({rate:,.0f} docs/s)"
    if decided:
        text += f", {kept:,} of {decided:,} {kept_words}"
    return text


def _elapsed() -> float:
    return time.monotonic() - (_session["start"] or time.monotonic())


def _poll(stop_event: threading.Event) -> None:
    while not stop_event.wait(INTERVAL_S):
        _emit(snapshot(), final=False)


def _emit(totals: dict, final: bool) -> None:
    if _session["muted"] or not any(totals.values()):
        return
    stream = _session["stream"] or sys.stderr
    tty = getattr(stream, "isatty", lambda: False)()
    if not tty and totals == _session["printed"]:
        return  # a log gets a new line only when the counts moved
    _session["printed"] = totals
    _print(format_progress(totals, _session["total"], _elapsed()), final, stream, tty)


def _print(line: str, final: bool, stream, tty: bool) -> None:
    if tty:
        # One live line, rewritten in place; the final one ends it.
        stream.write(f"\rppsample: {line}\033[K" + ("\n" if final else ""))
    else:
        stream.write(f"ppsample: {line}\n")
    stream.flush()


def _is_driver() -> bool:
    return os.environ.get(DRIVER_PID_ENV) == str(os.getpid())


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
