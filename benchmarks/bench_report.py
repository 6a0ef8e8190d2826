"""What collecting report.json costs (issue 19): `ppsample sample` (or `run`) with the report
against the same command with --no-report, in the same run, interleaved (A B A B ...) so that
the machine's load drifts over both alike. Figures are ratios report / no-report of

- peak RSS (ru_maxrss of the process running the stage; target <= 1.05),
- throughput in documents per wall second and per CPU second (target >= 0.97),

each the median over --repeats pairs of the ratio within a pair (the two runs of a pair are
back to back, so they share the machine's load: on a shared machine the load moves CPU
seconds by 30 % between pairs), printed with the load average before and after.

`sample` is the harder case: it does not score, so the collection's per-document work is a
larger share of the stage than in `run`, where KenLM dominates. The corpus: documents of
../shared/data/es/web.jsonl.gz repeated (each copy with its own url, its lines rotated) into
scored parquet shards of --docs-per-shard documents, with perplexities drawn from a log-normal
by a hash of the url (the collection's cost does not depend on where they come from); for
`--stage run`, the same documents as mC4 json.gz shards, scored by the bundled model.

    python benchmarks/bench_report.py --docs 400000              # the issue's size
    python benchmarks/bench_report.py --docs 20000 --repeats 1   # development
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs one ppsample command in this process and prints its peak RSS and CPU seconds.
CHILD = """
import json, resource, sys, time
from pipelines.cli import main
start = time.perf_counter()
rc = main(sys.argv[1:])
wall = time.perf_counter() - start
self, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": wall, "max_rss_kb": max(self.ru_maxrss, children.ru_maxrss),
                  "cpu_s": self.ru_utime + self.ru_stime + children.ru_utime + children.ru_stime}))
"""


def make_corpus(source: Path, folder: Path, n_docs: int, docs_per_shard: int, stage: str) -> dict:
    import hashlib

    import numpy as np

    with gzip.open(source, "rt", encoding="utf-8") as f:
        base = [json.loads(line) for line in f]
    n_shards = max(1, -(-n_docs // docs_per_shard))
    folder.mkdir(parents=True, exist_ok=True)
    rows = [[] for _ in range(n_shards)]
    for i in range(n_docs):
        copy, d = divmod(i, len(base))
        doc = base[d]
        lines = doc["text"].split("\n")
        r = copy % len(lines)
        url = f"{doc['url'] or 'https://nourl.es/' + str(d)}#copy={copy}"
        rows[i % n_shards].append({"text": "\n".join(lines[r:] + lines[:r]), "url": url,
                                   "timestamp": doc["timestamp"]})
    files = []
    for k, shard in enumerate(rows):
        name = f"c4-es.tfrecord-{k:05d}-of-{n_shards:05d}"
        if stage == "run":
            path = folder / f"{name}.json.gz"
            with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
                for doc in shard:
                    out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            u = np.array([int.from_bytes(hashlib.blake2b(d["url"].encode(), digest_size=8)
                                         .digest(), "little") for d in shard], dtype=np.float64)
            z = np.sqrt(-2 * np.log((u % 2**26 + 1) / (2**26 + 1))) * \
                np.cos(2 * np.pi * (u // 2**26 % 2**26) / 2**26)
            table = {key: [d[key] for d in shard] for key in ("text", "url", "timestamp")}
            table["perplexity"] = np.exp(6.0 + 0.6 * z).tolist()
            table["n_tokens"] = [len(t) // 5 + 1 for t in table["text"]]
            path = folder / f"{name}.parquet"
            pq.write_table(pa.table(table), path)
        files.append(str(path))
    return {"dir": str(folder), "docs": n_docs, "shards": n_shards,
            "input_bytes": sum(os.path.getsize(p) for p in files)}


def run_once(stage: str, corpus: dict, out: Path, report: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    inputs = corpus["dir"] + ("/*.json.gz" if stage == "run" else "/*.parquet")
    argv = [stage, "--input", inputs, "--output", str(out), "-q", "--no-figures"]
    if not report:
        argv.append("--no-report")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["report_json"] = (out / "report.json").exists()
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=400_000)
    parser.add_argument("--docs-per-shard", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (median taken)")
    parser.add_argument("--stage", choices=("sample", "run"), default="sample")
    parser.add_argument("--source", default=str(REPO.parent / "shared/data/es/web.jsonl.gz"))
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_report_"))
    try:
        t0 = time.perf_counter()
        corpus = make_corpus(Path(args.source), work / "corpus", args.docs, args.docs_per_shard,
                             args.stage)
        print(f"corpus: {corpus['docs']:,} docs in {corpus['shards']} shards, "
              f"{corpus['input_bytes'] / 1e6:.1f} MB ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        load_before = os.getloadavg()
        runs = {True: [], False: []}
        for i in range(args.repeats):
            for report in ((False, True) if i % 2 == 0 else (True, False)):
                r = run_once(args.stage, corpus, work / "out", report)
                assert r["report_json"] == report
                runs[report].append(r)
                print(f"  {'report   ' if report else 'no-report'} wall {r['wall_s']:.1f} s, "
                      f"cpu {r['cpu_s']:.1f} s, peak RSS {r['max_rss_kb'] / 1024:.0f} MiB",
                      flush=True)
        load_after = os.getloadavg()

        def med(report: bool, key: str) -> float:
            return statistics.median(r[key] for r in runs[report])

        def pair_ratio(key: str, report_over_plain: bool) -> float:
            ratios = [(r[key] / p[key]) if report_over_plain else (p[key] / r[key])
                      for r, p in zip(runs[True], runs[False])]
            return statistics.median(ratios)

        rss = pair_ratio("max_rss_kb", True)
        wall = pair_ratio("wall_s", False)
        cpu = pair_ratio("cpu_s", False)
        print(json.dumps({
            "stage": args.stage, "docs": args.docs, "shards": corpus["shards"],
            "repeats": args.repeats,
            "peak_rss_ratio": round(rss, 4), "throughput_ratio_wall": round(wall, 4),
            "throughput_ratio_cpu": round(cpu, 4),
            "docs_per_s_report": round(args.docs / med(True, "wall_s"), 1),
            "docs_per_s_no_report": round(args.docs / med(False, "wall_s"), 1),
            "targets": {"peak_rss_ratio": "<= 1.05", "throughput_ratio": ">= 0.97"},
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after]}, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
