"""libtpu's start-up complaints when no TPU is attached, removed from check-fit's stderr.

check-fit compiles for a TPU topology on a machine without one, so libtpu's initialisation
always logs, from C++ straight to file descriptor 2, that it found no TPU metadata:

    Failed to find host bounds for accelerator type: WARNING: could not determine TPU ...
    WARNING: Logging before InitGoogle() is written to STDERR
    E0000 00:00:... common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected worker hostname
        'WARNING: could not determine TPU worker hostnames ...' ...
    === Source Location Trace: ===
    learning/45eac/tfrc/runtime/libtpu_init_utils.cc:327

Expected and harmless here, but it reads as an error. Output written to fd 2 by C++ can only
be filtered outside the process: check-fit runs its compile in a child and passes the child's
stderr through `filter_lines`; every other line (a real error) is kept.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

_NOISE = re.compile(
    r"^(?:E0000 .*INVALID_ARGUMENT: .*could not determine TPU"
    r"|WARNING: Logging before InitGoogle\(\) is written to STDERR"
    r"|Failed to find host bounds for accelerator type: .*could not determine TPU)")
_TRACE_HEADER = "=== Source Location Trace: ==="
_TRACE_LINE = re.compile(r"^\S+\.(?:cc|h|cpp):\d+$")


def filter_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines of `lines` that are not libtpu's no-TPU-attached noise (with its trace)."""
    in_noise_trace = False
    after_noise = False
    for line in lines:
        text = line.rstrip()
        if _NOISE.match(text):
            after_noise, in_noise_trace = True, False
            continue
        if text == _TRACE_HEADER and after_noise:
            in_noise_trace = True
            continue
        if in_noise_trace and _TRACE_LINE.match(text):
            continue
        after_noise = in_noise_trace = False
        yield line
