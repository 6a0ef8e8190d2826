"""`ppsample finetune` on CPU: exact resume, metrics, export/init round trip, errors before training.

Data: the real output of `ppsample run` on the bundled sample, packed by prepare-finetune into
windows of 33 ids for a very small GPT-J config (the same code path as `tiny`/`gptj-6b-v3-8`,
sized so a step takes a fraction of a second on a shared CPU).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

MICRO = {
    "model": {"vocab_size": 50400, "n_ctx": 64, "d_model": 32, "n_layer": 1, "n_head": 2, "rotary_dim": 8,
              "d_ff": 64},
    "seq_len": 32, "global_batch": 4, "microbatches": 2, "lr_peak": 3e-3, "lr_end": 3e-4, "warmup_steps": 2,
    "total_steps": 20, "compute_dtype": "float32", "grad_accum_dtype": "float32", "mesh": {"fsdp": -1},
    "eval_every": 5, "eval_batches": 2, "checkpoint_every": 5, "keep_checkpoints": 2, "log_every": 1,
}


def write_config(path: Path, **changes) -> str:
    path.write_text(json.dumps({**MICRO, **changes}))
    return str(path)


@pytest.fixture(scope="session")
def sampled_run(tmp_path_factory) -> Path:
    """`ppsample run` on the bundled sample (real sampled output: parquet + json.gz + stats)."""
    from pipelines.cli import main
    out = tmp_path_factory.mktemp("ppsample-run") / "out"
    assert main(["run", "--output", str(out), "--no-figures"]) == 0
    return out


@pytest.fixture(scope="session")
def micro_tokens(tmp_path_factory, sampled_run) -> Path:
    from pipelines.finetune.prepare import prepare
    out = tmp_path_factory.mktemp("tokens33")
    manifest = prepare(str(sampled_run), str(out), window=33)
    assert manifest["splits"]["train"]["windows"] > 100 and manifest["splits"]["validation"]["windows"] > 8
    return out


def read_metrics(workdir: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in rows if "loss" in r}
    evals = {r["step"]: r for r in rows if "val_loss" in r}
    assert len(train) == len([r for r in rows if "loss" in r]), "a step was logged twice"
    return train, evals


def run_cli(*argv: str) -> int:
    from cli_exit import exit_status
    return exit_status(["finetune", *argv])


@pytest.fixture(scope="module")
def straight_20(tmp_path_factory, micro_tokens) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    config = write_config(tmp / "micro.json")
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp / "w"),
                   "--steps", "20") == 0
    return tmp / "w"


def test_metrics_rows_and_checkpoints(straight_20):
    train, evals = read_metrics(straight_20)
    assert sorted(train) == list(range(1, 21))
    for row in train.values():
        assert set(row) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s"}
        assert np.isfinite(row["loss"]) and row["tokens_per_s"] > 0 and row["grad_norm"] > 0
    assert train[1]["lr"] == 0.0 and train[3]["lr"] == pytest.approx(3e-3)  # warmup from the config
    assert sorted(evals) == [5, 10, 15, 20]
    for row in evals.values():
        assert row["val_ppl"] == pytest.approx(np.exp(row["val_loss"]))
        assert row["val_tokens"] == 2 * 4 * 32  # eval_batches x global_batch x seq_len
    assert evals[20]["val_loss"] < evals[5]["val_loss"]
    assert train[20]["loss"] < train[1]["loss"] - 0.2
    # orbax keeps the last keep_checkpoints=2 steps
    assert sorted(int(p.name) for p in (straight_20 / "checkpoints").iterdir() if p.name.isdigit()) == [15, 20]
    hf_config = json.loads((straight_20 / "hf" / "config.json").read_text())
    assert hf_config["model_type"] == "gptj" and hf_config["n_embd"] == 32


def test_exported_model_loads_in_transformers_with_the_same_validation_loss(straight_20, micro_tokens):
    """WORKDIR/hf is a usable Hugging Face GPT-J + GPT-2 tokenizer: on the validation windows the
    trainer evaluated, transformers computes the val_loss the trainer logged."""
    import torch
    from transformers import AutoTokenizer, GPTJForCausalLM
    from pipelines.finetune.token_shards import open_split

    tokenizer = AutoTokenizer.from_pretrained(straight_20 / "hf")
    assert tokenizer.encode("Hello world") == [15496, 995] and tokenizer.eos_token_id == 50256
    model = GPTJForCausalLM.from_pretrained(straight_20 / "hf").eval()
    windows = torch.tensor(open_split(str(micro_tokens), "validation").take(range(8)), dtype=torch.long)
    with torch.no_grad():
        logits = model(windows[:, :-1]).logits.double()
    hf_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    _, evals = read_metrics(straight_20)
    assert float(hf_loss) == pytest.approx(evals[20]["val_loss"], rel=1e-4)


def test_steps_10_then_20_equals_20_straight(tmp_path, micro_tokens, straight_20):
    config = write_config(tmp_path / "micro.json")
    common = ["--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w")]
    assert run_cli(*common, "--steps", "10") == 0
    first, _ = read_metrics(tmp_path / "w")
    assert sorted(first) == list(range(1, 11))
    assert run_cli(*common, "--steps", "20") == 0
    resumed, resumed_evals = read_metrics(tmp_path / "w")
    straight, straight_evals = read_metrics(straight_20)
    assert sorted(resumed) == list(range(1, 21))
    for step in range(1, 21):
        for key in ("loss", "grad_norm", "lr"):
            assert resumed[step][key] == straight[step][key], (step, key)
    assert resumed_evals[20]["val_loss"] == straight_evals[20]["val_loss"]
    assert (tmp_path / "w" / "hf" / "model.safetensors").read_bytes() == \
        (straight_20 / "hf" / "model.safetensors").read_bytes()


def test_init_from_exported_hf_round_trips(tmp_path, micro_tokens, straight_20):
    """--init loads a Hugging Face GPT-J (here our own export): 0 steps re-exports identical weights,
    and training from it starts at the trained loss, not at the from-scratch one."""
    config = write_config(tmp_path / "micro.json")
    hf = str(straight_20 / "hf")
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w0"),
                   "--steps", "0", "--init", hf) == 0
    assert (tmp_path / "w0" / "hf" / "model.safetensors").read_bytes() == \
        (straight_20 / "hf" / "model.safetensors").read_bytes()
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w1"),
                   "--steps", "1", "--init", hf, "--no-export") == 0
    from_init, _ = read_metrics(tmp_path / "w1")
    straight, _ = read_metrics(straight_20)
    assert from_init[1]["loss"] < straight[1]["loss"] - 0.2
    assert not (tmp_path / "w1" / "hf").exists()


def _restore_raw(checkpoint: Path):
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(checkpoint / "default")   # {"params", "opt_state", "step"}
    return tree["params"], tree["opt_state"], tree["step"]


def test_init_state_continues_another_runs_params_and_adam_moments(tmp_path, micro_tokens, straight_20):
    import jax
    config = write_config(tmp_path / "micro.json")
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w0"),
                   "--steps", "0", "--init-state", str(straight_20), "--no-export") == 0
    got = _restore_raw(tmp_path / "w0" / "checkpoints" / "0")
    source = _restore_raw(straight_20 / "checkpoints" / "20")
    assert int(np.asarray(got[2])) == 0 and int(np.asarray(source[2])) == 20
    moments = jax.tree.leaves(source[1])
    assert any(float(np.abs(np.asarray(m)).max()) > 0 for m in moments)          # real Adam moments
    for a, b in zip(jax.tree.leaves(got[:2]), jax.tree.leaves(source[:2])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # two steps (step 0 has lr 0 in warmup) from the same weights: the same first loss, but other
    # weights than with fresh Adam moments (--init)
    for name, flag, value in (("state", "--init-state", str(straight_20)), ("hf", "--init", str(straight_20 / "hf"))):
        assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / name),
                       "--steps", "2", flag, value) == 0
    assert read_metrics(tmp_path / "state")[0][1]["loss"] == pytest.approx(read_metrics(tmp_path / "hf")[0][1]["loss"],
                                                                         rel=1e-6)
    assert (tmp_path / "state" / "hf" / "model.safetensors").read_bytes() != \
        (tmp_path / "hf" / "hf" / "model.safetensors").read_bytes()


def test_init_with_mismatched_model_is_an_error(tmp_path, micro_tokens, straight_20, capsys):
    config = write_config(tmp_path / "other.json", model={**MICRO["model"], "d_ff": 128})
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w"),
                   "--steps", "1", "--init", str(straight_20 / "hf")) == 2
    assert "is a GPT-J of" in capsys.readouterr().err


def test_resuming_with_a_changed_config_is_an_error(tmp_path, micro_tokens, straight_20, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(straight_20, workdir)
    config = write_config(tmp_path / "micro.json", lr_peak=1e-2)
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(workdir),
                   "--steps", "25") == 2
    assert "different training config (changed: lr_peak)" in capsys.readouterr().err


def test_resuming_on_other_data_is_an_error(tmp_path, micro_tokens, straight_20, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(straight_20, workdir)
    (workdir / "train_data.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}))
    config = write_config(tmp_path / "micro.json")
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(workdir),
                   "--steps", "25") == 2
    assert "trained on other data (fingerprint 0123456789abcdef" in capsys.readouterr().err


def _damage_shard(tokens: Path) -> None:
    shard = sorted((tokens / "train").glob("*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))


def _edit_manifest(tokens: Path) -> None:
    manifest = json.loads((tokens / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["windows"] += 1
    manifest["splits"]["train"]["windows"] += 1
    manifest["splits"]["train"]["tokens"] += 33
    manifest["splits"]["train"]["document_tokens"] += 33
    (tokens / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage,message", [
    (lambda t: sorted((t / "train").glob("*.bin"))[-1].unlink(), "is missing"),
    (_damage_shard, "is corrupt: sha256 differs"),
    (_edit_manifest, "manifest expects"),
])
def test_bad_tokens_dir_fails_before_training(tmp_path, micro_tokens, capsys, damage, message):
    tokens = tmp_path / "tokens"
    shutil.copytree(micro_tokens, tokens)
    damage(tokens)
    config = write_config(tmp_path / "micro.json")
    assert run_cli("--config", config, "--data", str(tokens), "--workdir", str(tmp_path / "w"), "--steps", "5") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing started


def test_window_length_must_match_the_config(tmp_path, micro_tokens, capsys):
    config = write_config(tmp_path / "micro.json", seq_len=16)
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w")) == 2
    assert "rerun prepare-finetune with --window 17" in capsys.readouterr().err


def test_mesh_not_matching_devices_fails_before_training(tmp_path, micro_tokens, capsys):
    import jax
    n = len(jax.devices())
    config = write_config(tmp_path / "micro.json", mesh={"fsdp": n + 1, "tensor": 1})
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(tmp_path / "w")) == 2
    assert f"needs {n + 1} devices but {n} are available" in capsys.readouterr().err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, micro_tokens,
                                                                                      capsys):
    # lr 1e30 without warmup: step 1 is finite (initial params), its update blows the params up to
    # ~1e30, so step 2's forward overflows to inf/NaN
    config = write_config(tmp_path / "micro.json", lr_peak=1e30, lr_end=1e30, warmup_steps=0, checkpoint_every=1)
    workdir = tmp_path / "w"
    assert run_cli("--config", config, "--data", str(micro_tokens), "--workdir", str(workdir),
                   "--steps", "10") == 2
    err = capsys.readouterr().err
    assert "step 2: loss nan" in err and "is not finite" in err and "last good checkpoint: step 1" in err
    assert _checkpoints(workdir) == [1]             # the NaN step was never saved
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and rows[-1]["non_finite"] is True
    assert not (workdir / "hf").exists()


def test_token_ids_outside_the_model_vocabulary_are_refused_before_their_step(tmp_path, micro_tokens, capsys):
    """A manifest that agrees with its bytes but claims a smaller vocabulary than the ids it holds."""
    tokens = tmp_path / "tokens"
    shutil.copytree(micro_tokens, tokens)
    manifest = json.loads((tokens / "manifest.json").read_text())
    manifest.update(vocab_size=1000, eos_id=999)
    (tokens / "manifest.json").write_text(json.dumps(manifest))
    config = write_config(tmp_path / "micro.json", model={**MICRO["model"], "vocab_size": 1000})
    argv = ["--config", config, "--data", str(tokens), "--workdir", str(tmp_path / "w"), "--steps", "5"]
    assert run_cli(*argv) == 2                      # full verification reads the ids
    assert "outside the manifest's vocab_size 1000" in capsys.readouterr().err
    assert run_cli(*argv, "--verify", "size") == 2  # no data read up front: the batch check refuses it
    assert "the batch of step 1 holds token id" in capsys.readouterr().err
    assert not (tmp_path / "w" / "metrics.jsonl").exists() or "loss" not in (tmp_path / "w" / "metrics.jsonl").read_text()
    assert _checkpoints(tmp_path / "w") == []


def test_full_verification_runs_once_per_dataset_then_sizes_only(tmp_path, micro_tokens, monkeypatch):
    from pipelines.finetune import stage
    tokens = tmp_path / "tokens"
    shutil.copytree(micro_tokens, tokens)
    config = write_config(tmp_path / "micro.json")
    modes = []
    real_open = stage.ts.open_split
    monkeypatch.setattr(stage.ts, "open_split", lambda d, split, verify: modes.append(verify) or real_open(d, split, verify))
    workdir = tmp_path / "w"
    assert run_cli("--config", config, "--data", str(tokens), "--workdir", str(workdir), "--steps", "2",
                   "--no-export") == 0
    assert json.loads((workdir / "data_verified.json").read_text())["verified"] == "full"
    _damage_shard(tokens)                               # sizes unchanged: a restart does not re-read it
    assert run_cli("--config", config, "--data", str(tokens), "--workdir", str(workdir), "--steps", "3",
                   "--no-export") == 0
    assert modes == ["full", "full", "size", "size"]  # train + validation, first run then the restart
    assert run_cli("--config", config, "--data", str(tokens), "--workdir", str(tmp_path / "w2"), "--steps", "1",
                   "--no-export") == 2                 # a new workdir verifies in full


# --- exact resume across real process deaths ----------------------------------------------
# Exact resume across real process deaths: `ppsample finetune` in subprocesses, killed with
# SIGTERM (TPU preemption: saves and exits 0) and with SIGKILL (after a checkpoint landed), then
# resumed to step 20, must give the losses of the uninterrupted 20-step run at every step and the
# same final params.


def _start(config: str, tokens: Path, workdir: Path, steps: int, cache: Path) -> subprocess.Popen:
    # a persistent compilation cache spares the resumed processes a recompile (same executable)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "finetune", "--config", config, "--data", str(tokens),
         "--workdir", str(workdir), "--steps", str(steps)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_logged_step(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def _checkpoints(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"finetune ended (rc {proc.returncode}) before the kill point:\n"
                                 f"{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the kill point")
        time.sleep(0.02)


def test_sigterm_and_sigkill_then_resume_match_a_straight_run(tmp_path, micro_tokens, straight_20):
    # checkpoint every 2 steps so a SIGKILL lands between checkpoints with steps still to go
    config = write_config(tmp_path / "micro.json", checkpoint_every=2)
    workdir = tmp_path / "w"

    # 1. SIGTERM once training is under way: the run saves its current step and exits cleanly
    proc = _start(config, micro_tokens, workdir, 20, tmp_path / "jax-cache")
    _wait_for(proc, lambda: _last_logged_step(workdir) >= 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped by signal 15" in out
    stopped_at = _last_logged_step(workdir)
    assert 3 <= stopped_at < 20 and _checkpoints(workdir)[-1] == stopped_at

    # 2. resume, then SIGKILL after a later checkpoint has landed (no chance to save or clean up)
    proc = _start(config, micro_tokens, workdir, 20, tmp_path / "jax-cache")
    _wait_for(proc, lambda: any(step > stopped_at for step in _checkpoints(workdir)))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert f"resumed from {workdir / 'checkpoints' / str(stopped_at)}" in out
    killed_at = _last_logged_step(workdir)
    assert killed_at < 20, "the run finished before it could be killed"

    # 3. resume to the end
    proc = _start(config, micro_tokens, workdir, 20, tmp_path / "jax-cache")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    restored = int(out.split("(step ")[1].split(")")[0])
    assert stopped_at < restored <= killed_at

    resumed, resumed_evals = read_metrics(workdir)  # also asserts no step appears twice
    straight, straight_evals = read_metrics(straight_20)
    assert sorted(resumed) == list(range(1, 21))
    assert [resumed[s]["loss"] for s in range(1, 21)] == [straight[s]["loss"] for s in range(1, 21)]
    assert [resumed[s]["grad_norm"] for s in range(1, 21)] == [straight[s]["grad_norm"] for s in range(1, 21)]
    assert resumed_evals[20]["val_loss"] == straight_evals[20]["val_loss"]
    assert (workdir / "hf" / "model.safetensors").read_bytes() == \
        (straight_20 / "hf" / "model.safetensors").read_bytes()


SHARDED_RUN = """
import sys
import jax
from lm_models.gptj.train_step import load_config
from lm_models.gptj.train_loop import train
from pipelines.finetune.stage import open_training_data
config, tokens, out = sys.argv[1:4]
cfg = load_config(config)
assert len(jax.devices()) == 8, jax.devices()
train_split, val_split = open_training_data(tokens, cfg)
train(cfg, train_split, val_split, out + "/resumed", steps=6, export=False)
train(cfg, train_split, val_split, out + "/resumed", steps=10)
train(cfg, train_split, val_split, out + "/straight", steps=10)
"""


@pytest.mark.slow
def test_sharded_state_on_8_devices_resumes_exactly(tmp_path, micro_tokens, straight_20):
    """fsdp=2 x tensor=4 over 8 (simulated) devices: sharded checkpoints restore into the same
    layout, 6 + resume to 10 equals 10 straight, and the losses match the 1-device run."""
    (tmp_path / "run.py").write_text(SHARDED_RUN)
    config = write_config(tmp_path / "sharded.json", mesh={"fsdp": 2, "tensor": 4})
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), config, str(micro_tokens), str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mesh {'data': 1, 'fsdp': 2, 'tensor': 4}" in result.stdout
    resumed, _ = read_metrics(tmp_path / "resumed")
    straight, straight_evals = read_metrics(tmp_path / "straight")
    one_device, one_device_evals = read_metrics(straight_20)
    assert [resumed[s]["loss"] for s in range(1, 11)] == [straight[s]["loss"] for s in range(1, 11)]
    assert (tmp_path / "resumed" / "hf" / "model.safetensors").read_bytes() == \
        (tmp_path / "straight" / "hf" / "model.safetensors").read_bytes()
    for step in range(1, 11):  # other reduction order across devices: equal up to rounding
        assert straight[step]["loss"] == pytest.approx(one_device[step]["loss"], rel=1e-5)
    assert straight_evals[10]["val_loss"] == pytest.approx(one_device_evals[10]["val_loss"], rel=1e-5)
