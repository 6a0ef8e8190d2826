"""Throughput of the local Beam pipeline, as ratios against baselines measured in the same run.

1. `ppsample run` (FnApiRunner, one process: reading, scoring, histogram, sampling, writing)
   against the bare scorer (`PerplexityModel.score` over the same texts in one call), both on
   the same documents: the ratio is how much of the scorer's speed the pipeline keeps.
2. `ppsample sample` alone on the pre-scored parquet of the same documents, in MB/s of text.

The documents are ../shared/data/es/web.jsonl.gz repeated --copies times (each copy with its
own url, so every copy is its own document for sampling), split into 8 mC4-named train shards
and 1 validation shard.

    python benchmarks/bench_pipeline.py --copies 10
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_shards(source: Path, folder: Path, copies: int) -> tuple[list[str], int, int]:
    with gzip.open(source, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"c4-es.tfrecord-{k:05d}-of-00008.json.gz" for k in range(8)]
    names.append("c4-es-validation.tfrecord-00000-of-00001.json.gz")
    handles = [gzip.open(folder / n, "wt", encoding="utf-8", compresslevel=1) for n in names]
    count = text_bytes = 0
    for copy in range(copies):
        for i, d in enumerate(docs):
            url = f"{d['url'] or 'nourl:' + str(i)}#copy={copy}"
            shard = 8 if (i + copy) % 10 == 9 else (i + copy) % 8
            handles[shard].write(json.dumps({"text": d["text"], "timestamp": d["timestamp"],
                                             "url": url}, ensure_ascii=False) + "\n")
            count += 1
            text_bytes += len(d["text"].encode("utf-8"))
    for h in handles:
        h.close()
    return [str(folder / n) for n in names], count, text_bytes


def texts_of(files: list[str]) -> list[str]:
    texts = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f)
    return texts


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "es" / "web.jsonl.gz"))
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--repeats", type=int, default=2,
                        help="time each side this many times, interleaved, and keep the fastest "
                             "(a shared machine's load comes and goes)")
    parser.add_argument("--multi-processing", type=int, default=0, metavar="N",
                        help="also time run with --direct_running_mode multi_processing and N workers")
    args = parser.parse_args(argv)

    from lm_models.perplexity import PerplexityModel
    from pipelines import cli

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ppsample-bench-"))
    files, n_docs, text_bytes = make_shards(Path(args.data), work / "input", args.copies)
    texts = texts_of(files)
    model = PerplexityModel.load("es-reference")
    model.score(texts[:50])  # warm the page cache of the memory-mapped model

    quiet = ["--no-figures"]
    bare_times, run_times = [], []
    for _ in range(args.repeats):
        bare_times.append(timed(lambda: model.score(texts)))
        run_times.append(timed(lambda: cli.main(["run", "--input", ",".join(files), "--output",
                                                 str(work / "run"), *quiet])))
    bare_s, run_s = min(bare_times), min(run_times)
    stats = json.loads((work / "run" / "stats.json").read_text())
    assert stats["total"]["scored"] == n_docs, stats["total"]
    result = {"docs": n_docs, "text_mb": text_bytes / 1e6,
              "bare_score_s": bare_s, "bare_docs_per_s": n_docs / bare_s,
              "run_s": run_s, "run_docs_per_s": n_docs / run_s,
              "run_vs_bare": bare_s / run_s, "bare_times": bare_times, "run_times": run_times}
    if args.multi_processing:
        mp_s = timed(lambda: cli.main(["run", "--input", ",".join(files), "--output",
                                       str(work / "run_mp"), *quiet, "--direct_running_mode",
                                       "multi_processing", "--direct_num_workers",
                                       str(args.multi_processing)]))
        result.update({f"run_mp{args.multi_processing}_s": mp_s,
                       f"run_mp{args.multi_processing}_vs_bare": bare_s / mp_s})

    assert cli.main(["score", "--input", ",".join(files), "--output", str(work / "scored")]) == 0
    parquet_bytes = sum(p.stat().st_size for p in (work / "scored").glob("*.parquet"))
    sample_s = min(timed(lambda: cli.main(["sample", "--input", str(work / "scored"), "--output",
                                           str(work / "sampled"), *quiet]))
                   for _ in range(args.repeats))
    # MB/s of document text (the parquet itself compresses the repeated copies very well)
    result.update({"sample_s": sample_s, "sample_text_mb_per_s": text_bytes / 1e6 / sample_s,
                   "scored_parquet_mb": parquet_bytes / 1e6,
                   "sample_docs_per_s": n_docs / sample_s, "cpus": os.cpu_count()})
    print(json.dumps(result, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
