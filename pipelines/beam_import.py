"""`import apache_beam` for the console script, without the optional packages no ppsample stage
uses.

Beam's package import pulls in every IO module and every optional integration it finds
installed; two of them are a quarter of its ~2 s import here and are never used by ppsample:
pandas (Beam's pandas type hints) and pymongo (MongoDB IO). Both imports are guarded in Beam
(`try: import pandas ... except ImportError`), so with `sys.modules[name] = None` for the length
of Beam's import they are skipped, and once Beam is imported the names are released again: a
later `import pandas` (the Hub publisher's datasets, a user's code) imports it as usual. On a
2-core machine that start runs on one core before any worker can start, so it is time of
every `ppsample` Beam stage.

If a Beam version imports one of them unguarded, the lean import fails and Beam is imported
again as usual (nothing is skipped then).
"""
from __future__ import annotations

import importlib
import logging
import sys

# Beam imports these if installed; no ppsample stage uses them (bson: pymongo's, imported first).
UNUSED_BY_PPSAMPLE = ("pandas", "pymongo", "bson")
# Beam's module that warns when it finds no pymongo: here that is what we asked for.
_WARNS_OF_SKIP = "apache_beam.io.mongodbio"


def import_beam(skip: tuple[str, ...] = UNUSED_BY_PPSAMPLE) -> bool:
    """Imports apache_beam; returns whether it could skip `skip`. A no-op (False) when Beam is
    already imported or a skipped package already is."""
    if "apache_beam" in sys.modules or any(name in sys.modules for name in skip):
        return False
    for name in skip:
        sys.modules[name] = None  # `import name` raises ImportError while this is there
    warner = logging.getLogger(_WARNS_OF_SKIP)
    level = warner.level
    warner.setLevel(logging.ERROR)
    try:
        importlib.import_module("apache_beam")
        return True
    except ImportError:
        _forget("apache_beam")  # half-imported: imported again below, with nothing skipped
    finally:
        warner.setLevel(level)
        for name in skip:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    importlib.import_module("apache_beam")
    return False


def _forget(package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
