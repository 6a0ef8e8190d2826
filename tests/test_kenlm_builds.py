"""KenLM without a compiler: which build pyproject picks where, that exactly one is installed, that
the Dataflow image compiles nothing, and (slow) that the kenlm 0.3.0 sdist and the prebuilt
ufal-kenlm wheel score the shared documents identically."""
from __future__ import annotations

import gzip
import importlib.metadata
import json
import re
import shutil
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "lm_models" / "bundled" / "es-reference"
KENLM_DISTS = ("ufal-kenlm", "kenlm")

# (sys_platform, platform_machine, python_version) -> the KenLM distribution pyproject must pick.
PLATFORMS = {
    ("linux", "x86_64", "3.11"): "ufal-kenlm",     # users, CI, the Dataflow image, TPU VMs
    ("linux", "x86_64", "3.14"): "ufal-kenlm",
    ("darwin", "arm64", "3.12"): "ufal-kenlm",
    ("win32", "AMD64", "3.13"): "ufal-kenlm",
    ("linux", "aarch64", "3.11"): "kenlm",         # no ufal-kenlm wheel: the sdist, compiled
    ("darwin", "x86_64", "3.11"): "kenlm",
    ("linux", "x86_64", "3.15"): "kenlm",          # newer than ufal-kenlm's wheels
}


def _kenlm_requirements() -> list[Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [r for r in map(Requirement, deps) if r.name in KENLM_DISTS]


@pytest.mark.parametrize("platform,expected", PLATFORMS.items())
def test_exactly_one_kenlm_build_is_selected_per_platform(platform, expected):
    sys_platform, machine, python = platform
    env = {"sys_platform": sys_platform, "platform_machine": machine,
           "python_version": python, "python_full_version": python + ".0"}
    chosen = [r.name for r in _kenlm_requirements() if r.marker is None or r.marker.evaluate(env)]
    assert chosen == [expected]


def test_the_installed_kenlm_is_one_build_and_the_one_pyproject_picks_here():
    installed = []
    for name in KENLM_DISTS:
        try:
            installed.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            pass
    assert len(installed) == 1, f"both builds ship the module `kenlm`: {installed}"
    here = [r for r in _kenlm_requirements() if r.marker is None or r.marker.evaluate()]
    assert [installed[0][0]] == [r.name for r in here]
    assert installed[0][1] in here[0].specifier


def test_dataflow_image_has_no_compile_stage():
    text = (REPO / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert sum(line.startswith("FROM ") for line in instructions) == 1  # one stage
    body = "\n".join(instructions)
    for tool in ("g++", "gcc", "cmake", "make ", "build-essential", "libboost", "--no-binary"):
        assert tool not in body, tool
    # The dependencies come from pyproject (so its markers choose ufal-kenlm on the image's
    # linux x86_64), and a compiled dependency with no wheel fails the build, not compiles.
    assert "pyproject.toml" in body and re.search(r"--only-binary[^\n]*kenlm", body)
    from pipelines import dataflow

    assert dataflow.dockerfile_python() == dataflow.DEFAULT_WORKER_PYTHON


# ---------------------------------------------------------------------------- parity (slow)


def _tokenised_lines(shared_data: Path, n_docs: int) -> list[str]:
    """The exact strings our scorer hands KenLM (ccnet normalisation + SentencePiece pieces)."""
    from lm_models.perplexity import PerplexityModel

    model = PerplexityModel.load("es-reference")
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for _, line in zip(range(n_docs), f)]
    lines = []
    for doc in docs:
        for line in doc.split("\n"):
            normalised = model._normalize(line)
            lines.append(" ".join(model._sp.encode(normalised, out_type=str)))
    return lines


_SCORE = r"""
import json, sys, kenlm
model = kenlm.Model(sys.argv[1])
lines = json.load(open(sys.argv[2]))
json.dump([model.score(line) for line in lines], sys.stdout)
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kenlm_sdist_and_ufal_kenlm_wheel_score_identically(shared_data, tmp_path):
    """300 shared web documents, every line: kenlm 0.3.0 (compiled here from its sdist, in a
    venv of its own) and the installed build give the same Model.score, bit for bit."""
    if not (shutil.which("g++") or shutil.which("c++")) or not shutil.which("cmake"):
        pytest.skip("no C++ compiler / cmake here: the kenlm 0.3.0 sdist cannot be built")
    lines = _tokenised_lines(shared_data, 300)
    (tmp_path / "lines.json").write_text(json.dumps(lines))
    import kenlm

    installed = kenlm.Model(str(BUNDLED / "es.arpa.bin"))
    ours = [installed.score(line) for line in lines]

    sdist = tmp_path / "sdist-venv"
    venv.EnvBuilder(with_pip=True).create(sdist)
    py = str(sdist / "bin" / "python")
    done = subprocess.run([py, "-m", "pip", "install", "--no-binary", "kenlm", "kenlm==0.3.0"],
                          capture_output=True, text=True, timeout=1500)
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        pytest.skip("the kenlm 0.3.0 sdist is not reachable from here (no package index)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ufal" not in subprocess.run([py, "-m", "pip", "list"], capture_output=True,
                                        text=True).stdout.lower()
    scored = subprocess.run([py, "-c", _SCORE, str(BUNDLED / "es.arpa.bin"),
                             str(tmp_path / "lines.json")], capture_output=True, text=True,
                            check=True, timeout=600)
    theirs = json.loads(scored.stdout)
    assert len(lines) > 1000
    assert theirs == ours
