"""The console script's lean start and exit (pipelines.beam_import, pipelines.cli.entry), each in
a fresh interpreter: what Beam imports only to offer is skipped and stays importable afterwards,
a Beam that needs a skipped package still imports, and the exit freezes the garbage collector."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python(code: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_beam_imports_without_the_packages_ppsample_never_uses():
    result = python(
        "import sys\n"
        "from pipelines import beam_import\n"
        "print(beam_import.import_beam())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in beam_import.UNUSED_BY_PPSAMPLE))\n"
        "print(sorted(n for n, m in sys.modules.items() if m is None and '.' not in n))\n"
        "import apache_beam as beam\n"
        "with beam.Pipeline(runner='FnApiRunner') as p:\n"
        "    _ = p | beam.Create([3, 4]) | beam.Map(lambda x: print('ran', x * x))\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["True", "[]", "[]"], result.stdout  # skipped, and no block left behind
    assert sorted(lines[3:]) == ["ran 16", "ran 9"]
    assert "bson" not in result.stderr  # Beam's "no compatible bson" warning is about our skip


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas not installed")
def test_a_skipped_package_imports_as_usual_afterwards():
    result = python("from pipelines import beam_import\n"
                    "assert beam_import.import_beam()\n"
                    "import pandas, pyarrow\n"
                    "print(pandas.DataFrame({'a': [1, 2]}).a.sum())\n"
                    # pyarrow caches whether pandas is there on first use: not during the skip
                    "print(pyarrow.table({'b': [4, 5]}).to_pandas().b.sum())\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "9"]


def test_a_beam_that_needs_a_skipped_package_is_imported_as_usual():
    # grpc is imported by Beam unconditionally: skipping it must not break the import
    result = python("import sys\n"
                    "from pipelines import beam_import\n"
                    "print(beam_import.import_beam(skip=('grpc', 'pandas')))\n"
                    "import apache_beam, grpc\n"
                    "print(sys.modules['grpc'] is not None, 'pandas' in sys.modules)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]


def test_the_console_script_exits_with_a_frozen_collector_and_a_lean_beam():
    probe = ("import atexit, gc, sys\n"
             # as on an install without the gcp extra: Beam's import logs a BigQuery notice
             "sys.modules['apitools'] = None\n"
             # registered first, so it runs last: after entry() has returned
             "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0,"
             " 'pandas', 'pandas' in sys.modules, 'beam', 'apache_beam' in sys.modules))\n"
             "sys.argv = ['ppsample', *sys.argv[1:]]\n"
             "from pipelines import cli\n"
             "cli.entry()\n")
    beam_stage = python(probe, "run", "--help")
    assert beam_stage.returncode == 0, beam_stage.stderr
    assert "apitools" not in beam_stage.stderr  # the notice is filtered before Beam's import
    assert beam_stage.stdout.splitlines()[-1] == "frozen True pandas False beam True"
    usage_error = python(probe, "run", "--no-such-flag")
    assert usage_error.returncode == 2
    assert usage_error.stdout.splitlines()[-1] == "frozen True pandas False beam True"
    version = python(probe, "--version")
    assert version.returncode == 0
    assert version.stdout.splitlines()[-1] == "frozen True pandas False beam True"
