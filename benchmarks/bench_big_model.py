"""Scoring speed of a multi-GB KenLM probing model against the bundled one, the memory of two
processes sharing its mapping, and the cost projection that follows (issue 20).

    python benchmarks/make_big_model.py            # once: ~/.cache/ppsample/bench-model (~3 GB)
    python benchmarks/bench_big_model.py [--big DIR] [--rounds 5] [--json out.json]

Throughput: PerplexityModel.perplexities (normalise + SentencePiece + KenLM, ccnet preset) over
the shared web sample (../shared/data/es/web.jsonl.gz), one pinned core, SentencePiece with one
thread. Each round scores the documents once with each model, alternating which goes first;
MB/s per core = UTF-8 text MB / CPU seconds of the scoring (time.process_time, so other load
on the machine slows the wall clock but not this figure much; cache and memory-bandwidth
contention from other processes still does). Also per model: KenLM alone on the same joined
pieces (both models share one SentencePiece model, so the pieces are the same), which is
where the two differ. The first pass over the big model is timed on its own ("cold"): it pages
the mapping in from disk if it is not in the page cache.

Memory: two processes load the big model and score all the documents; /proc/PID/smaps shows
the model file's mapping in each (Rss, Pss, Shared_Clean) and psutil the whole process.

Cost: benchmarks/cost_projection.py with the big model's best MB/s per core as r.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_perplexity import DEFAULT_DOCS, read_docs, shared_memory  # noqa: E402
from cost_projection import project  # noqa: E402
from lm_models.perplexity import PerplexityModel  # noqa: E402

DEFAULT_BIG = Path.home() / ".cache" / "ppsample" / "bench-model"


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def throughput(models: dict[str, PerplexityModel], docs: list[str], rounds: int) -> dict:
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    first = next(iter(models.values()))
    normalized = [first._normalize(d) for d in docs]
    joined = [b" ".join(p) for p in first._sp.encode(normalized, out_type=bytes, num_threads=1)]
    runs: dict[str, dict[str, list[float]]] = {}
    for name, model in models.items():
        def kenlm_only(lm=model._lm):
            for line in joined:
                lm.score(line)
        tasks = {name: lambda m=model: m.perplexities(docs), name + "_kenlm": kenlm_only}
        for key in tasks:
            runs[key] = {"wall": [], "cpu": []}
        models[name] = tasks
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for key, fn in models[name].items():
                wall, cpu = _timed(fn)
                runs[key]["wall"].append(wall)
                runs[key]["cpu"].append(cpu)
    rows = {}
    for key, t in runs.items():
        cpu = sorted(t["cpu"])
        rows[key] = {"mb_per_cpu_s_best": mb / cpu[0], "mb_per_cpu_s_median": mb / cpu[len(cpu) // 2],
                     "mb_per_wall_s_best": mb / min(t["wall"]), "cpu_s": t["cpu"],
                     "wall_s": t["wall"]}
    return {"docs": len(docs), "mb": mb, "rounds": rounds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=Path, default=DEFAULT_BIG, help="model dir (make_big_model.py)")
    parser.add_argument("--bundled", default="es-reference")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--efficiency", type=float, default=None,
                        help="run / bare loop for the cost (default cost_projection's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.big / "model.json").is_file():
        print(f"no model at {args.big}: run python benchmarks/make_big_model.py first",
              file=sys.stderr)
        return 2

    result: dict = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count()}
    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})
    docs = read_docs(args.docs, None)
    bundled = PerplexityModel.load(args.bundled)
    big = PerplexityModel.load(str(args.big))
    size = big.files.lm_path.stat().st_size
    result["models"] = {"bundled": {"path": str(bundled.files.lm_path),
                                    "mb": bundled.files.lm_path.stat().st_size / 1e6},
                        "big": {"path": str(big.files.lm_path), "mb": size / 1e6}}
    wall, cpu_s = _timed(lambda: big.perplexities(docs))
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    result["big_cold_pass"] = {"wall_s": wall, "cpu_s": cpu_s, "mb_per_wall_s": mb / wall}
    bundled.perplexities(docs[:50])
    t = result["throughput"] = throughput({"bundled": bundled, "big": big}, docs, args.rounds)
    rows = t["rows"]
    ratio = rows["big"]["mb_per_cpu_s_best"] / rows["bundled"]["mb_per_cpu_s_best"]
    per_round = sorted(b / g for b, g in zip(rows["bundled"]["cpu_s"], rows["big"]["cpu_s"]))
    t["big_vs_bundled_best"] = ratio
    t["big_vs_bundled_round_median"] = per_round[len(per_round) // 2]
    print(f"{t['docs']} documents, {t['mb']:.2f} MB of text, {args.rounds} rounds, one core; "
          f"big model {size / 1e9:.2f} GB probing, bundled {result['models']['bundled']['mb']:.1f} MB")
    print(f"  cold first pass over the big model: {result['big_cold_pass']['mb_per_wall_s']:.2f} MB/s wall")
    for key, row in rows.items():
        print(f"  {key:15s} {row['mb_per_cpu_s_best']:6.2f} MB/s per core best, "
              f"{row['mb_per_cpu_s_median']:6.2f} median, {row['mb_per_wall_s_best']:6.2f} wall best")
    print(f"  big / bundled = {ratio:.2f} best-of, {t['big_vs_bundled_round_median']:.2f} "
          "median of per-round ratios")
    if not args.skip_memory:
        result["memory"] = mem = shared_memory(str(args.big), docs)
        print(f"two processes, model file {mem['model_file_mb']:.0f} MB memory-mapped:")
        for p in mem["processes"]:
            m = p["model_mapping_kb"]
            print(f"  pid {p['pid']}: model mapping Rss {m.get('Rss', 0) / 1e3:.0f} MB, "
                  f"Pss {m.get('Pss', 0) / 1e3:.0f} MB, Shared_Clean "
                  f"{m.get('Shared_Clean', 0) / 1e3:.0f} MB, Private "
                  f"{(m.get('Private_Clean', 0) + m.get('Private_Dirty', 0)) / 1e3:.0f} MB; "
                  f"process RSS {p['process_rss_mb']:.0f} MB, USS {p['process_uss_mb']:.0f} MB")
    e = {} if args.efficiency is None else {"efficiency": args.efficiency}
    result["cost_big"] = cost = project(rows["big"]["mb_per_cpu_s_best"], **e)
    result["cost_bundled"] = cost_b = project(rows["bundled"]["mb_per_cpu_s_best"], **e)
    print(f"cost of `ppsample run` on all of mC4-es ({cost['text_tb']:.2f} TB, {cost['machine']}, "
          f"${cost['usd_per_vcpu_hour']:.4f} per vCPU-hour, run / bare {cost['efficiency']}):")
    for name, c in (("big", cost), ("bundled", cost_b)):
        print(f"  {name:8s} r = {c['rate_mb_s_per_vcpu']:.2f} MB/s per core: "
              f"{c['run_vcpu_hours']:.0f} vCPU-hours, ${c['run_usd']:.1f}, "
              f"{c['wall_hours_at_max_workers']:.2f} h at 64 workers")
    print(f"  (score, then a separate sample pass: + {cost['separate_sample_pass_vcpu_hours']:.0f} "
          f"vCPU-hours, ${cost['separate_sample_pass_usd']:.1f})")
    result["load_avg_end"] = os.getloadavg()
    print(f"load average at start {result['load_avg_start'][0]:.2f}, "
          f"at end {result['load_avg_end'][0]:.2f} ({result['cpus']} CPUs)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
