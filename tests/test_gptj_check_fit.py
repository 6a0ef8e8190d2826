"""`ppsample finetune check-fit`: TPU topology names, the ahead-of-time compile and its verdict.

The compile needs libtpu (jax[tpu]). It runs in whichever interpreter has it: this one, the one
in $PPSAMPLE_TPU_PYTHON, or the project's .venv-tpu (see docs/gptj.md); otherwise it is skipped.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from lm_models.gptj.check_fit import cli, topology_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, expected", [
    ("v3-8", "v3:2x2"), ("v3-32", "v3:4x4"), ("v2-8", "v2:2x2"), ("v3-16", "v3:2x4"),
    ("v4-8", "v4:2x2x1"), ("v4-16", "v4:2x2x2"), ("v4-32", "v4:2x2x4"), ("v4-64", "v4:2x4x4"),
    ("v4-128", "v4:4x4x4"), ("v5e-8", "v5e:2x4"), ("v5litepod-16", "v5e:4x4"), ("v6e-4", "v6e:2x2"),
    ("v3:2x2", "v3:2x2"),
])
def test_topology_names(name, expected):
    assert topology_name(name) == expected


@pytest.mark.parametrize("bad", ["v3", "tpu-8", "v3-12", "v9-8"])
def test_bad_topology_names_are_rejected(bad):
    with pytest.raises(ValueError, match="topology|power-of-two"):
        topology_name(bad)


def tpu_python() -> str | None:
    if importlib.util.find_spec("libtpu") is not None:
        return sys.executable
    for candidate in (os.environ.get("PPSAMPLE_TPU_PYTHON"), os.path.join(ROOT, ".venv-tpu", "bin", "python")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


needs_libtpu = pytest.mark.skipif(
    tpu_python() is None,
    reason="check-fit needs libtpu: pip install 'jax[tpu]==0.10.2' here, or create .venv-tpu, "
           "or point PPSAMPLE_TPU_PYTHON at an interpreter that has it")


def run_check_fit(*args, timeout=900):
    result = subprocess.run([tpu_python(), "-m", "lm_models.gptj.check_fit", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result.returncode, report, result.stderr


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed here")
def test_missing_libtpu_is_a_clear_error(capsys):
    assert cli(["--config", "tiny"]) == 2
    assert "jax[tpu]" in capsys.readouterr().err


@needs_libtpu
def test_tiny_config_over_a_small_limit_does_not_fit():
    rc, report, stderr = run_check_fit("--config", "tiny", "--topology", "v3-8", "--mesh", "fsdp=2,tensor=4",
                                       "--limit-gib", "0.01")
    assert report is not None, stderr[-3000:]
    assert rc == 1 and report["fits"] is False
    assert report["device_kind"] == "TPU v3" and report["devices"] == 8
    assert report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 4}
    per_core = report["per_core"]
    assert per_core["peak_bytes"] > report["limit_bytes"] == int(0.01 * 1024**3)
    assert per_core["argument_bytes"] > 0 and per_core["temp_bytes"] > 0


@needs_libtpu
def test_bad_arguments_exit_2():
    rc, _, stderr = run_check_fit("--config", "tiny", "--topology", "v3-8", "--mesh", "fsdp=3")
    assert rc == 2 and "needs 3 devices" in stderr


@pytest.mark.slow
@needs_libtpu
def test_gptj_6b_fits_a_v3_8_with_16_microbatches_of_one_window_per_core():
    # Host RAM stays ~1.5 GB: shapes only, nothing is allocated. Compiling takes a few minutes.
    rc, report, stderr = run_check_fit("--config", "gptj-6b-v3-8", "--topology", "v3-8", "--microbatches", "16",
                                       timeout=1800)
    assert report is not None, stderr[-3000:]
    print(json.dumps(report, indent=2))
    assert rc == 0 and report["fits"] is True
    assert report["n_params"] == 6_050_882_784
    assert (report["seq_len"], report["microbatches"], report["windows_per_core_per_microbatch"]) == (2048, 16, 1)
    assert report["limit_gib"] == pytest.approx(15.48)
    assert report["per_core_gib"]["peak_gib"] <= 14.0
