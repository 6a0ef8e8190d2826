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


def test_missing_libtpu_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "libtpu", None)  # as if jax[tpu] were not installed
    assert cli(["--config", "tiny"]) == 2
    assert "pip install -e '.[finetune,tpu]'" in capsys.readouterr().err


# What libtpu 0.10.2 prints on a machine with no TPU (captured from check-fit's stderr here).
LIBTPU_NO_TPU_STDERR = """\
Failed to find host bounds for accelerator type: WARNING: could not determine TPU accelerator type, please set env var `TPU_ACCELERATOR_TYPE` manually, otherwise libtpu.so may not properly initialize.
WARNING: Logging before InitGoogle() is written to STDERR
E0000 00:00:1796219499.924334    8232 common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected worker hostname 'WARNING: could not determine TPU worker hostnames or IP addresses' from env var TPU_WORKER_HOSTNAMES. Expecting a valid hostname or IP address without port number, or hostname:port:address triple. (Full TPU workers' addr string: WARNING: could not determine TPU worker hostnames or IP addresses, please set env var `TPU_WORKER_HOSTNAMES` manually, otherwise libtpu.so may not properly initialize.)
=== Source Location Trace: === 
learning/45eac/tfrc/runtime/libtpu_init_utils.cc:327
"""


def test_libtpu_no_tpu_noise_is_filtered_and_real_errors_are_kept():
    from lm_models.gptj.libtpu_noise import filter_lines

    real = ["E0000 00:00:17.1 1 tpu_compiler.cc:9] RESOURCE_EXHAUSTED: out of memory\n",
            "=== Source Location Trace: ===\n", "xla/service/hlo.cc:12\n", "check-fit: bad mesh\n"]
    lines = LIBTPU_NO_TPU_STDERR.splitlines(keepends=True)
    assert list(filter_lines(lines)) == []
    assert list(filter_lines(lines + real)) == real
    assert list(filter_lines(real[:1] + lines + real[3:])) == real[:1] + real[3:]


@needs_libtpu
def test_tiny_config_over_a_small_limit_does_not_fit():
    rc, report, stderr = run_check_fit("--config", "tiny", "--topology", "v3-8", "--mesh", "fsdp=2,tensor=4",
                                       "--limit-gib", "0.01")
    assert report is not None, stderr[-3000:]
    assert rc == 1 and report["fits"] is False
    assert "INVALID_ARGUMENT" not in stderr and "InitGoogle" not in stderr, stderr[-3000:]
    assert report["device_kind"] == "TPU v3" and report["devices"] == 8
    assert report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 4}
    per_core = report["per_core"]
    assert per_core["peak_bytes"] > report["limit_bytes"] == int(0.01 * 1024**3)
    assert per_core["argument_bytes"] > 0 and per_core["temp_bytes"] > 0


INDEPENDENT_COMPILE = """
import json, jax, jax.numpy as jnp
from jax.experimental import topologies
from lm_models.gptj import sharding
from lm_models.gptj.check_fit import check_fit
from lm_models.gptj.train_step import load_config, make_mesh, make_train_step, state_shapes, state_shardings
cfg = load_config("tiny").replace(mesh={"fsdp": 2, "tensor": 4})
mesh = make_mesh(cfg, topologies.get_topology_desc("v3:2x2", "tpu").devices)
state = state_shardings(cfg, mesh)
batch = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, cfg.global_batch))
step = jax.jit(make_train_step(cfg, mesh, jit=False), in_shardings=(state, batch),
               out_shardings=(state, sharding.replicated(mesh)), donate_argnums=(0,))
analysis = step.lower(state_shapes(cfg), jax.ShapeDtypeStruct((cfg.global_batch, cfg.seq_len + 1),
                                                               jnp.int32)).compile().memory_analysis()
fields = {name: int(getattr(analysis, name)) for name in dir(analysis) if name.endswith("_in_bytes")}
print(json.dumps({"fields": fields, "report": check_fit(cfg, "v3-8", limit_bytes=1 << 40)}))
"""


@needs_libtpu
def test_peak_is_what_the_runtime_reserves_from_an_independent_compile():
    """The reported peak = arguments + outputs not aliased to donated arguments + temp + program,
    computed here from XLA's memory_analysis of a compile the test does itself. The state is
    donated, so alias > 0 and a wrong sign on it (or a dropped term) changes the answer."""
    result = subprocess.run([tpu_python(), "-c", INDEPENDENT_COMPILE], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    f, report = out["fields"], out["report"]
    assert f["alias_size_in_bytes"] > 0 and f["temp_size_in_bytes"] > 0
    expected = (f["argument_size_in_bytes"] + f["output_size_in_bytes"] - f["alias_size_in_bytes"]
                + f["temp_size_in_bytes"] + f["generated_code_size_in_bytes"])
    assert report["per_core"]["peak_bytes"] == expected
    # the donated state is both an argument and an output: counted once
    assert report["per_core"]["peak_bytes"] < (f["argument_size_in_bytes"] + f["output_size_in_bytes"]
                                               + f["temp_size_in_bytes"] + f["generated_code_size_in_bytes"])
    assert report["per_core"]["peak_bytes"] >= f["argument_size_in_bytes"] + f["temp_size_in_bytes"]


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
