"""Live progress on local runs: documents scored per second and documents kept so far.

Each worker process keeps its own running totals and prints one line to stderr at most every
`INTERVAL_S` seconds. It is switched on by the driver through the PPSAMPLE_PROGRESS environment
variable (inherited by the multi_processing workers) and stays off on remote runners, where
the Beam metrics counters (`ppsample/scored`, `ppsample/kept`, ...) carry the same figures.
"""
from __future__ import annotations

import os
import sys
import threading
import time

ENV = "PPSAMPLE_PROGRESS"
DRIVER_PID_ENV = "PPSAMPLE_PROGRESS_DRIVER_PID"
INTERVAL_S = 2.0

_lock = threading.Lock()
_state = {"start": None, "last": 0.0, "scored": 0, "kept": 0, "decided": 0}


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def enable(on: bool = True) -> None:
    if on:
        os.environ[ENV] = "1"
        os.environ[DRIVER_PID_ENV] = str(os.getpid())
    else:
        os.environ.pop(ENV, None)


def reset() -> None:
    with _lock:
        _state.update(start=None, last=0.0, scored=0, kept=0, decided=0)


def add(scored: int = 0, kept: int = 0, decided: int = 0) -> None:
    if not enabled():
        return
    now = time.monotonic()
    with _lock:
        if _state["start"] is None:
            _state["start"] = _state["last"] = now
        _state["scored"] += scored
        _state["kept"] += kept
        _state["decided"] += decided
        if now - _state["last"] < INTERVAL_S:
            return
        _state["last"] = now
        line = format_line(_state["scored"], _state["decided"], _state["kept"],
                           now - _state["start"])
    prefix = "" if _is_main_process() else f"[worker {os.getpid()}] "
    print(f"ppsample: {prefix}{line}", file=sys.stderr, flush=True)


def format_line(scored: int, decided: int, kept: int, elapsed_s: float) -> str:
    rate = scored / elapsed_s if elapsed_s > 0 else 0.0
    text = f"{scored:,} docs scored ({rate:,.0f} docs/s)"
    if decided:
        text += f", {kept:,} of {decided:,} kept so far"
    return text


def _is_main_process() -> bool:
    return os.environ.get(DRIVER_PID_ENV) == str(os.getpid())
