"""The test suite carries its own data (tests/data) and passes from a fresh clone with nothing
beside it: the README's second command, as a new user runs it."""
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_test_data", REPO / "scripts" / "make_test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_files_match_their_manifest_and_stay_small():
    manifest = json.loads((DATA / "manifest.json").read_text())
    shipped = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file()}
    # layouts/ holds the corpus-layout fixtures, made and checked by scripts/make_layout_fixtures.py
    fixtures = {name for name in shipped if name.startswith("layouts/")}
    assert shipped - fixtures == {*manifest["files"], "manifest.json", "SOURCES.md"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == sha, name
    assert sum((DATA / name).stat().st_size for name in shipped) < 3 * 1024 * 1024
    sources = (DATA / "SOURCES.md").read_text()
    for attribution in ("FakeNewsCorpusSpanish", "CC BY 4.0", "UD_Spanish-GSD", "conha19", "fortunes-es"):
        assert attribution in sources


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_every_test_data_file_is_committed():
    """A clone gets only what git tracks: a file left untracked here would pass here and be a
    missing-data error in every clone."""
    tracked = subprocess.run(["git", "ls-files", "tests/data"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("tests/data not committed yet in this working tree")
    assert sorted(tracked) == sorted(p.relative_to(REPO).as_posix() for p in DATA.rglob("*") if p.is_file())


def test_the_script_is_deterministic_and_takes_what_its_rules_say(tmp_path):
    """Regenerate from a tiny fake shared folder twice: identical bytes, the rules applied."""
    import gzip

    shared = tmp_path / "shared"
    (shared / "es").mkdir(parents=True)
    lines = [f"línea {i}\u2028sigue\n" for i in range(4100)]  # U+2028 must not split a line
    (shared / "es" / "reference.txt.gz").write_bytes(gzip.compress("".join(lines).encode(), mtime=0))
    (shared / "es" / "web.jsonl.gz").write_bytes(gzip.compress(b'{"text": "hola"}\n', mtime=0))
    script = _load_script()
    first, second = script.build(shared), script.build(shared)
    assert first == second
    assert gzip.decompress(first["es/reference.txt.gz"]).decode() == "".join(lines[:4000])
    assert gzip.decompress(first["es/reference-held-out.txt.gz"]).decode() == "".join(lines[0::20])
    assert first["es/web.jsonl.gz"] == (shared / "es" / "web.jsonl.gz").read_bytes()


@pytest.mark.slow
def test_shipped_test_data_is_what_the_script_makes(full_shared_data):
    built = _load_script().build(full_shared_data)
    for name, data in built.items():
        assert (DATA / name).read_bytes() == data, f"tests/data/{name}: rerun scripts/make_test_data.py"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_readme_test_command_passes_in_a_fresh_clone_with_nothing_beside_it(tmp_path):
    """git clone of the committed HEAD into an empty folder (no shared/ beside it), then the
    README's second command, `python -m pytest -m "not slow"`, there. The venv is this one (no
    pip install: no network), with PYTHONPATH=clone so the clone's code and tests are the ones
    run. The whole fast suite, not a subset."""
    readme = (REPO / "README.md").read_text()
    assert 'python -m pytest -m "not slow"' in readme.split("```")[1]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (tmp_path / "shared").exists() and not (clone / ".." / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k != "PPSAMPLE_SHARED_DATA"}
    env["PYTHONPATH"] = str(clone)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-rs",
                           "-p", "no:cacheprovider"],
                          cwd=clone, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    tail = out[-6000:]
    assert "shared data not found" not in out and "test data missing" not in out, tail
    assert not re.search(r"\d+ error", out.splitlines()[-1] if out.strip() else ""), tail
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert not [line for line in skipped if "data" in line.lower()], skipped
    assert proc.returncode == 0, tail
    assert re.search(r"\d+ passed", out), tail
    print("fresh clone:", out.strip().splitlines()[-1])  # shown with -s / -rP
