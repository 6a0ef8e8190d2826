"""The numbers a run writes do not depend on the CPU's SIMD features (sampling/libm.py).

numpy's exp / log / power loops differ in the last bits between an AVX-512 machine and one
without it; the golden digests of tests/test_golden_outputs.py once changed for that reason
alone when the suite moved to a machine without AVX-512. Here numpy's functions are replaced
by ones that round differently (as another CPU's would), and perplexities, histogram edges,
quantiles and keep probabilities must not move; and no module whose values reach the outputs
calls those numpy functions at all.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from lm_models.perplexity import PerplexityModel
from sampling import libm
from sampling.boundaries import Boundaries
from sampling.histogram import LogHistogram
from sampling.keep_probability import unit_keep_probability

REPO = Path(__file__).resolve().parents[1]
TRANSCENDENTAL = ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "power",
                  "float_power")
# what reaches stats.json, report.json/html, the parquet and the keep decisions
OUTPUT_CODE = ["sampling", "lm_models/perplexity.py", "lm_models/normalization.py",
               "pipelines/corpus", "pipelines/report", "pipelines/corpus_io"]
# the PNG figures: their bytes are not compared anywhere (they depend on matplotlib)
FIGURES_ONLY = {"pipelines/corpus/plots.py"}


def _other_cpu(ufunc):
    """numpy's function with every finite result moved one ulp up: another CPU's rounding."""
    def perturbed(*args, **kwargs):
        result = ufunc(*args, **kwargs)
        return np.where(np.isfinite(result), np.nextafter(result, np.inf), result)
    return perturbed


def _simulate_another_cpu(monkeypatch):
    for name in TRANSCENDENTAL:
        monkeypatch.setattr(np, name, _other_cpu(getattr(np, name)))


@pytest.fixture
def another_cpu(monkeypatch):
    _simulate_another_cpu(monkeypatch)


TEXTS = ["El perro come pan en la casa.", "La economía de España creció un 2 % en 2019.\nOtra línea.",
         "qwzx vbnm ñññ", ""]


def _values():
    model = PerplexityModel.load("es-reference")
    perplexity = model.score(TEXTS).perplexity
    histogram = LogHistogram()
    histogram.add(np.array([37.0, 120.5, 333.3, 420.0, 581.0, 1999.0, 25_000.0]))
    boundaries = Boundaries(333.0, 425.0, 580.0)
    keep = unit_keep_probability(np.array([100.0, 425.0, 900.0]), boundaries, "gaussian", 4.5)
    return perplexity, histogram.edges.copy(), histogram.quantiles([0.1, 0.5, 0.9]), keep


def test_the_values_written_are_the_same_on_a_cpu_that_rounds_differently(monkeypatch):
    here = _values()
    _simulate_another_cpu(monkeypatch)
    elsewhere = _values()
    for a, b in zip(here, elsewhere):
        np.testing.assert_array_equal(a, b)  # bit for bit, NaN where NaN


def test_perplexity_is_pythons_float_power_of_the_kenlm_scores():
    """cc_net and BERTIN compute 10 ** (-log_score / length) with Python floats: the same
    values, bit for bit, come out of score()."""
    import kenlm
    import sentencepiece

    model = PerplexityModel.load("es-reference")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model.files.sp_path))
    lm = kenlm.Model(str(model.files.lm_path))
    text = model._normalize(TEXTS[0]) if model._normalize else TEXTS[0]
    pieces = sp.encode(text, out_type=str)
    expected = 10.0 ** (-lm.score(" ".join(pieces)) / (len(pieces) + 1))
    assert model.score([TEXTS[0]]).perplexity[0] == expected


def test_the_injected_rounding_does_move_numpys_own_results(another_cpu):
    """The check above can fail: with the fault injected, numpy's functions differ."""
    assert np.exp(1.0) != math.exp(1.0)
    assert np.power(10.0, 2.5) != 10.0 ** 2.5
    assert libm.exp([1.0])[0] == math.exp(1.0)


def _numpy_transcendental_calls(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in TRANSCENDENTAL
                and isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")):
            found.append(f"{path.relative_to(root)}:{node.lineno}: np.{node.attr}")
    return found


def _output_modules() -> list[Path]:
    files = []
    for entry in OUTPUT_CODE:
        path = REPO / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in files if str(f.relative_to(REPO)) not in FIGURES_ONLY
            and f.name != "libm.py"]


def test_no_output_code_calls_numpys_cpu_dependent_functions():
    calls = [c for f in _output_modules() for c in _numpy_transcendental_calls(f)]
    assert not calls, "use sampling.libm instead:\n" + "\n".join(calls)


def test_the_scan_finds_an_injected_call(tmp_path):
    injected = tmp_path / "injected.py"
    injected.write_text("import numpy as np\nx = np.exp(1.0)\ny = np.sqrt(2.0)\n")
    assert [c.split(": ")[1] for c in _numpy_transcendental_calls(injected, tmp_path)] == ["np.exp"]
    scanned = {str(f.relative_to(REPO)) for f in _output_modules()}
    assert {"sampling/histogram.py", "lm_models/perplexity.py",
            "pipelines/report/collect.py"} <= scanned
