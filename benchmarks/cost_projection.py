"""The cost of scoring and sampling all of mC4-es on Dataflow, from a measured scoring rate.

    python benchmarks/cost_projection.py --rate 4.95 --efficiency 0.78
    # r: MB/s per core of the scorer (benchmarks/bench_big_model.py prints it and calls this)
    # e: `ppsample run` / bare loop in CPU seconds (benchmarks/bench_pipeline.py --parts whole)

The README and docs/dataflow.md quote this script's output; every constant is here, named:

    vCPU-hours = T / (r x e) / 3600                  (`ppsample run`: score + sample, one job)
    cost       = vCPU-hours x (P_vcpu + (M/V) x P_mem + (D/V) x P_disk)

`ppsample score` then a separate `ppsample sample` over the scored parquet adds T / s / 3600.
r is taken per CPU second, not per wall second: a Dataflow SDK process has its vCPU to itself,
while the 2-core machine the figures are measured on is shared (its wall rates are 2-4x lower
under load). One caveat the other way: a Dataflow vCPU is one hyperthread of a core; if both
hyperthreads of a core score, each gets less than the whole core a figure measured here had.
"""
from __future__ import annotations

import argparse
import json

# T: mC4-es text bytes = documents x the mean text size of ../shared/data/es/web.jsonl.gz
# (1,374 mC4-es documents, 2,610 UTF-8 bytes each on average).
DOCUMENTS = 416e6
MEAN_TEXT_BYTES = 2610
# e: `ppsample run` / bare loop in CPU seconds with the 3.28 GB benchmark model (bench_pipeline.py
# --parts whole --whole-scale 1 --model DIR, 2026-12-03: 0.79 and 0.78; see docs/dataflow.md).
PIPELINE_EFFICIENCY = 0.78
# s: a separate `ppsample sample` on scored parquet, MB/s per vCPU (docs/pipelines.md benchmark).
SAMPLE_MB_S = 6.5
# Machine: n2-highmem-4 (a ~5 GB model mapped once + 4 SDK processes of ~1.5 GB each).
MACHINE = "n2-highmem-4"
VCPUS, MEMORY_GB, DISK_GB = 4, 32, 60
# Dataflow batch list prices, us-central1 (europe-west4 is ~10 % higher): per vCPU-hour, per
# GB-hour of memory, per GB-hour of standard persistent disk.
P_VCPU, P_MEM, P_DISK = 0.056, 0.003557, 0.000054
MAX_WORKERS = 64


def project(rate_mb_s: float, efficiency: float = PIPELINE_EFFICIENCY) -> dict:
    text = DOCUMENTS * MEAN_TEXT_BYTES
    score_h = text / (rate_mb_s * 1e6 * efficiency) / 3600
    sample_h = text / (SAMPLE_MB_S * 1e6) / 3600
    vm_hour = VCPUS * P_VCPU + MEMORY_GB * P_MEM + DISK_GB * P_DISK
    per_vcpu_hour = vm_hour / VCPUS
    return {"text_tb": text / 1e12, "rate_mb_s_per_vcpu": rate_mb_s, "efficiency": efficiency,
            "machine": MACHINE, "usd_per_vm_hour": vm_hour, "usd_per_vcpu_hour": per_vcpu_hour,
            "run_vcpu_hours": score_h, "run_usd": score_h * per_vcpu_hour,
            "wall_hours_at_max_workers": score_h / (MAX_WORKERS * VCPUS),
            "separate_sample_pass_vcpu_hours": sample_h,
            "separate_sample_pass_usd": sample_h * per_vcpu_hour}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, required=True, help="r: scoring MB/s per vCPU")
    p.add_argument("--efficiency", type=float, default=PIPELINE_EFFICIENCY)
    args = p.parse_args(argv)
    print(json.dumps(project(args.rate, args.efficiency), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
