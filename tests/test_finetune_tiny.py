"""The whole mission on one machine: `ppsample run --finetune tiny --finetune-steps 50` samples the
bundled Spanish documents, packs them for the `tiny` GPT-J config and trains it on the CPU.
(Several minutes on a shared 2-core machine: 50 steps of 16 x 128 tokens in bf16.)"""
from __future__ import annotations

import json
import math

import pytest


@pytest.mark.slow
def test_run_finetune_tiny_50_steps_on_the_bundled_sample(tmp_path):
    from pipelines.cli import main
    out = tmp_path / "out"
    assert main(["run", "--output", str(out), "--no-figures", "--finetune", "tiny", "--finetune-steps", "50"]) == 0

    manifest = json.loads((out / "finetune" / "tokens" / "manifest.json").read_text())
    assert manifest["window"] == 129 and manifest["validation_source"] == "input"
    assert manifest["splits"]["train"]["windows"] > 1000 and manifest["splits"]["validation"]["windows"] >= 32

    rows = [json.loads(line) for line in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    evals = {r["step"]: r for r in rows if "val_loss" in r}
    assert sorted(losses) == list(range(1, 51))
    first = sum(losses[s] for s in range(1, 6)) / 5
    last = sum(losses[s] for s in range(46, 51)) / 5
    print(f"train loss: first 5 steps {first:.3f}, last 5 steps {last:.3f}; eval {evals}")
    assert last < first - 1.5  # clearly falls (from ~ln(50400) = 10.8)
    assert sorted(evals) == [50]  # tiny evaluates every 50 steps and at the end
    assert evals[50]["val_ppl"] == pytest.approx(math.exp(evals[50]["val_loss"]))
    assert evals[50]["val_loss"] < first - 1.5
    assert (out / "finetune" / "hf" / "model.safetensors").exists()
    assert (out / "finetune" / "hf" / "tokenizer.json").exists()
