"""The full-scale data path (issue 9) measured on one machine, every figure a ratio against a
baseline measured in the same run:

1. shuffle: bytes entering every GroupByKey / Reshuffle that is not inside a combiner, per
   transform, divided by the input text bytes, for `ppsample run` and `ppsample score`
   (target <= 0.02). How: after the stage has built its pipeline (driver.run_pipeline is
   wrapped), a visitor finds each such transform and hangs a branch on its input PCollection
   that sums the size of every element as its coder encodes it (a Beam counter per
   transform); combiner-internal groupings (CombinePerKey/Globally, which pre-combine before
   the shuffle) are not counted.
2. memory: peak RSS of `ppsample run` (a subprocess, getrusage of the children) on --docs (1x)
   and 4x --docs documents, same shard size (target: 4x <= 1.3 x 1x).
3. whole: `ppsample run` at one worker against the bare loop as issue 20 defines it: for each
   input file, gzip + json.loads of each line, then PerplexityModel.perplexities(texts), one
   process (reading included, nothing written), timed before and after the run (target >=
   0.95 at 400k documents), in wall time and in CPU seconds (the CPU ratio is the one that
   holds on a loaded machine; the wall ratio on an idle one includes the run's writer threads).
   Beside it the bound, timed in the same run: output_floor, the bare loop plus the least
   writing that run's outputs need (scored parquet, read back, sampled json.gz + parquet);
   floor / bare bounds run / bare, and run / floor is what is left to gain.
   throughput: `ppsample run` on --docs documents against the bare scorer loop
   (PerplexityModel.score in batches of 256 over the same texts, one process, timed before and
   after the run and averaged; target >= 0.90), in wall time and in CPU seconds;
   `--direct_running_mode multi_processing --direct_num_workers 2` against the default one
   process on 2x --docs documents (target >= 1.7x).
4. datatrove: the same job as a datatrove pipeline (JsonlReader -> datatrove's KenlmModel
   loaded with the same bundled model files -> the same gaussian keep with the same
   boundaries and per-document uniforms, from sampling/ -> JsonlWriter; LocalPipelineExecutor
   with tasks = workers), ours / datatrove at 1 and 2 workers on --docs documents
   (target >= 2.5x at both). Beside it the ceiling: the floor (SentencePiece + KenLM alone on
   texts normalised beforehand, one process, see floor_scorer) / datatrove, the most that any
   pipeline making the same library calls could reach.
5. startup: the fixed cost of every command, `ppsample run` on the bundled sample (458 docs)
   as the console script starts and ends it (pipelines.cli.entry: Beam imported without the
   packages no stage uses, the garbage collector frozen at exit) against the same main() with
   Beam's usual import and exit, alternating rounds, medians.

The corpus: tests/data/es/web.jsonl.gz (the shared web.jsonl.gz, byte for byte) documents
repeated, each copy with its own url and its lines rotated (so copies are distinct documents), dealt round-robin into mC4-named json.gz
shards of --docs-per-shard documents (the last shard of each set is a validation shard).

    python benchmarks/bench_pipeline.py --docs 100000          # the issue's sizes (long)
    python benchmarks/bench_pipeline.py --docs 4000 --parts shuffle,memory   # development
    python benchmarks/bench_pipeline.py --docs 100000 --parts whole   # issue 20: run / bare loop, 400k
    python benchmarks/bench_pipeline.py --docs 100000 --parts whole --whole-rounds 2   # median of 2
    python benchmarks/bench_pipeline.py --parts startup              # a command's fixed cost
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
PARTS = ("shuffle", "memory", "throughput", "whole", "workers", "datatrove", "startup")


# --- corpus ----------------------------------------------------------------------------------

def make_corpus(source: Path, folder: Path, n_docs: int, docs_per_shard: int) -> dict:
    with gzip.open(source, "rt", encoding="utf-8") as f:
        base = [json.loads(line) for line in f]
    n_shards = max(2, -(-n_docs // docs_per_shard))
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"c4-es.tfrecord-{k:05d}-of-{n_shards - 1:05d}.json.gz" for k in range(n_shards - 1)]
    names.append("c4-es-validation.tfrecord-00000-of-00001.json.gz")
    handles = [gzip.open(folder / n, "wt", encoding="utf-8", compresslevel=1) for n in names]
    text_bytes = 0
    for i in range(n_docs):
        copy, d = divmod(i, len(base))
        doc = base[d]
        lines = doc["text"].split("\n")
        r = copy % len(lines)
        text = "\n".join(lines[r:] + lines[:r])
        url = f"{doc['url'] or 'nourl:' + str(d)}#copy={copy}"
        handles[i % n_shards].write(json.dumps({"text": text, "timestamp": doc["timestamp"],
                                                "url": url}, ensure_ascii=False) + "\n")
        text_bytes += len(text.encode("utf-8"))
    for h in handles:
        h.close()
    files = [str(folder / n) for n in names]
    return {"dir": str(folder), "files": files, "docs": n_docs, "text_bytes": text_bytes,
            "input_bytes": sum(os.path.getsize(p) for p in files), "shards": n_shards}


def texts_of(files: list[str]) -> list[str]:
    texts = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f)
    return texts


# --- 1. shuffle bytes ------------------------------------------------------------------------

def _groupings(pipeline):
    """(label, input PCollection) of every GroupByKey / Reshuffle outside a combiner (the
    outermost one: a Reshuffle's own GroupByKey is not counted twice)."""
    import apache_beam as beam

    combiners = (beam.CombinePerKey, beam.CombineGlobally)
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            if not isinstance(node.transform, (beam.GroupByKey, beam.Reshuffle)):
                return
            parent = node.parent
            while parent is not None:
                if isinstance(parent.transform, combiners + (beam.Reshuffle,)):
                    return
                parent = parent.parent
            found.append((node.full_label, node.inputs[0]))

    pipeline.visit(Visitor())
    return found


class _MeasureBytes:
    """A DoFn factory kept picklable: counts encoded bytes of each element."""

    @staticmethod
    def dofn(label: str, coder):
        import apache_beam as beam
        from apache_beam.metrics import Metrics

        class Measure(beam.DoFn):
            def __init__(self):
                self.bytes = Metrics.counter("shuffle_bytes", label)
                self.elements = Metrics.counter("shuffle_elements", label)

            def process(self, element):
                self.bytes.inc(len(coder.encode(element)))
                self.elements.inc()

        return Measure()


def shuffle_bytes(stage: str, corpus: dict, work: Path) -> dict:
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from pipelines import cli
    from pipelines.corpus import driver

    measured = {}
    original = driver.run_pipeline

    def instrumented(pipeline, options):
        for i, (label, pcoll) in enumerate(_groupings(pipeline)):
            coder = beam.coders.registry.get_coder(pcoll.element_type)
            _ = pcoll | f"MeasureShuffle{i}" >> beam.ParDo(_MeasureBytes.dofn(label, coder))
            measured[label] = 0
        result = pipeline.run()
        result.wait_until_finish()
        for counter in result.metrics().query(MetricsFilter().with_namespace("shuffle_bytes"))["counters"]:
            measured[counter.key.metric.name] = counter.committed

    driver.run_pipeline = instrumented
    try:
        argv = [stage, "--input", corpus["dir"], "--output", str(work / f"shuffle-{stage}")]
        if stage == "run":
            argv.append("--no-figures")
        assert cli.main(argv) == 0
    finally:
        driver.run_pipeline = original
    total = sum(measured.values())
    return {"bytes_per_transform": measured, "total_bytes": total,
            "ratio_to_input_text": total / corpus["text_bytes"]}


# --- 2./3. subprocess runs -------------------------------------------------------------------

_RUSAGE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "rc = subprocess.run(sys.argv[1:]).returncode; t = time.perf_counter() - t; "
           "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print(rc, t, u.ru_maxrss, u.ru_utime + u.ru_stime)")


# `ppsample` as the console script runs it (pipelines.cli.entry), and the same main() with
# Beam's usual import and interpreter exit: part startup's baseline.
CONSOLE_SCRIPT = ("-m", "pipelines.cli")
PLAIN_MAIN = ("-c", "import sys; from pipelines.cli import main; sys.exit(main())")


def run_cli(argv: list[str], how: tuple[str, ...] = CONSOLE_SCRIPT, cwd: Path = REPO) -> dict:
    """`ppsample ARGV` in a fresh process: wall time and peak RSS (MB) of it and its children."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _RUSAGE, sys.executable, *how, *argv],
                          capture_output=True, text=True, env=env, cwd=str(cwd))
    rc, wall, rss_kb, cpu = proc.stdout.strip().splitlines()[-1].split()
    if int(rc) != 0:
        raise RuntimeError(f"ppsample {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": float(wall), "peak_rss_mb": int(rss_kb) / 1024, "cpu_s": float(cpu)}


def ppsample_run(corpus: dict, out: Path, *beam_flags: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    result = run_cli(["run", "--input", corpus["dir"], "--output", str(out), "--no-figures",
                      *beam_flags])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"]["read"] == corpus["docs"], stats["total"]
    result["docs_per_s"] = corpus["docs"] / result["wall_s"]
    result["kept"] = stats["total"]["kept"]
    return result


def startup(work: Path, rounds: int) -> dict:
    """Part startup: the fixed cost of a command, `ppsample run` on the bundled sample (458
    documents, offline), as the console script runs it against PLAIN_MAIN, alternating."""
    times = {"console_script": [], "plain_main": []}
    for _ in range(rounds):
        for name, how in (("plain_main", PLAIN_MAIN), ("console_script", CONSOLE_SCRIPT)):
            shutil.rmtree(work / name, ignore_errors=True)
            times[name].append(run_cli(["run", "--output", name, "--no-figures", "-q"], how,
                                       cwd=work))
    median = {name: {key: statistics.median(t[key] for t in runs) for key in ("wall_s", "cpu_s")}
              for name, runs in times.items()}
    return {"rounds": rounds, **{f"{name}_{key}": value for name, m in median.items()
                                 for key, value in m.items()},
            "console_vs_plain_wall": median["console_script"]["wall_s"]
            / median["plain_main"]["wall_s"],
            "saved_wall_s": median["plain_main"]["wall_s"] - median["console_script"]["wall_s"]}


def bare_scorer(corpus: dict, batch_size: int = 256) -> dict:
    from lm_models.perplexity import PerplexityModel

    texts = texts_of(corpus["files"])
    model = PerplexityModel.load("es-reference")
    model.score(texts[:50])  # page the memory-mapped model in
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch_size):
        model.score(texts[i:i + batch_size])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"wall_s": wall, "docs_per_s": len(texts) / wall, "cpu_s": cpu}


def bare_loop(corpus: dict, model_source: str = "es-reference") -> dict:
    """Issue 20's baseline: per file, read (gzip + json.loads) then score its texts; one
    process, nothing written."""
    from lm_models.perplexity import PerplexityModel

    model = PerplexityModel.load(model_source)
    model.perplexities(texts_of(corpus["files"][:1])[:50])  # page the mapped model in
    start, cpu = time.perf_counter(), time.process_time()
    for path in corpus["files"]:
        model.perplexities(texts_of([path]))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"wall_s": wall, "docs_per_s": corpus["docs"] / wall, "cpu_s": cpu}


def whole_round(before: dict, run: dict, floor: dict, after: dict) -> dict:
    """One round of part whole: the run and the output floor against the bare loop timed
    before and after them (averaged: on a shared machine the speed drifts between the two)."""
    bare_rate = 2 / (1 / before["docs_per_s"] + 1 / after["docs_per_s"])
    bare_cpu = (before["cpu_s"] + after["cpu_s"]) / 2
    return {"bare_docs_per_s_each": [before["docs_per_s"], after["docs_per_s"]],
            "run_docs_per_s": run["docs_per_s"],
            "run_vs_bare": run["docs_per_s"] / bare_rate,
            "bare_cpu_s": bare_cpu, "run_cpu_s": run["cpu_s"],
            "run_vs_bare_cpu": bare_cpu / run["cpu_s"],
            # the bound: what the outputs cost at the least (output_floor)
            "floor_docs_per_s": floor["docs_per_s"], "floor_cpu_s": floor["cpu_s"],
            "floor_vs_bare": floor["docs_per_s"] / bare_rate,
            "floor_vs_bare_cpu": bare_cpu / floor["cpu_s"],
            "run_vs_floor": run["docs_per_s"] / floor["docs_per_s"],
            "run_vs_floor_cpu": floor["cpu_s"] / run["cpu_s"],
            "run_peak_rss_mb": run["peak_rss_mb"]}


def output_floor(corpus: dict, kept_fraction: float, out: Path,
                 model_source: str = "es-reference") -> dict:
    """The bare loop plus the writing that `run`'s outputs need at the least, one process:
    per file, read (gzip + json.loads) and score, write the scored parquet of every row, read
    its text back and write the kept rows (the same fraction as the run kept, spread evenly)
    as sampled json.gz and parquet, with the run's own writers (their background threads
    included). No validation, deciding, report, Beam or statistics. run / floor is how close
    `run` is to what its outputs cost; floor / bare is the bound on run / bare."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lm_models.perplexity import PerplexityModel
    from pipelines.corpus_io import writers

    model = PerplexityModel.load(model_source)
    model.perplexities(texts_of(corpus["files"][:1])[:50])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start, cpu = time.perf_counter(), time.process_time_ns()  # every thread's CPU
    for k, path in enumerate(corpus["files"]):
        with gzip.open(path, "rb") as f:
            docs = [json.loads(line) for line in f]
        texts = [d["text"] for d in docs]
        result = model.score(texts)
        table = pa.table({"text": texts, "url": [d["url"] for d in docs],
                          "timestamp": [d["timestamp"] for d in docs],
                          "perplexity": result.perplexity, "n_tokens": result.n_tokens,
                          "split": ["train"] * len(docs)})
        with writers.ParquetStream(str(out / f"scored-{k}.parquet"),
                                   writers.PARQUET_COLUMNS + ("split",)) as scored:
            scored.write_table(table)
        back = pq.read_table(out / f"scored-{k}.parquet")
        n = back.num_rows
        chosen = np.flatnonzero(np.diff(np.floor(np.arange(n + 1) * kept_fraction)) > 0)
        kept = back.take(chosen)
        with writers.JsonGzStream(str(out / f"sampled-{k}.json.gz")) as json_gz, \
                writers.ParquetStream(str(out / f"sampled-{k}.parquet")) as parquet:
            json_gz.write_columns(kept.column("text").to_pylist(),
                                  kept.column("timestamp").to_pylist(),
                                  kept.column("url").to_pylist())
            parquet.write_table(kept)
    wall = time.perf_counter() - start
    cpu_s = (time.process_time_ns() - cpu) / 1e9
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall, "docs_per_s": corpus["docs"] / wall, "cpu_s": cpu_s}


def floor_scorer(corpus: dict, batch_size: int = 256) -> dict:
    """SentencePiece + KenLM alone on texts normalised beforehand (untimed), one process: the
    C++ work that every pipeline scoring with these libraries does for each document, and
    nothing else (no reading, normalising, deciding or writing). No such pipeline can be
    faster, so floor / datatrove is the ceiling of ours / datatrove."""
    from lm_models.perplexity import PerplexityModel

    model = PerplexityModel.load("es-reference")
    normalized = [model._normalize(t) for t in texts_of(corpus["files"])]
    sp, lm = model._sp, model._lm
    start = time.perf_counter()
    for i in range(0, len(normalized), batch_size):
        for pieces in sp.encode(normalized[i:i + batch_size], out_type=bytes, num_threads=1):
            lm.score(b" ".join(pieces))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "docs_per_s": len(normalized) / wall}


# --- 4. datatrove ----------------------------------------------------------------------------

def datatrove_run(corpus: dict, out: Path, workers: int, boundaries: dict, params: dict,
                  seed: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = [sys.executable, str(Path(__file__).resolve()), "--datatrove-job",
              json.dumps({"input": corpus["dir"], "output": str(out), "workers": workers,
                          "boundaries": boundaries, "params": params, "seed": seed})]
    start = time.perf_counter()
    proc = subprocess.run(script, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"datatrove job failed:\n{proc.stderr[-3000:]}")
    kept = 0
    for path in out.joinpath("data").rglob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            kept += sum(1 for _ in f)
    return {"wall_s": wall, "docs_per_s": corpus["docs"] / wall, "kept": kept}


def datatrove_job(spec: dict) -> None:
    """Runs in its own process: the datatrove pipeline."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    bundled = REPO / "lm_models" / "bundled" / "es-reference"

    class GaussianKeep(PipelineStep):
        """datatrove's KenlmModel on our bundled model, then our keep rule (batched uniforms,
        as our pipeline does them)."""
        name = "perplexity keep"

        def __init__(self, boundaries, params, seed):
            super().__init__()
            self.boundaries, self.params, self.seed = boundaries, params, seed

        def _model(self):
            import kenlm
            import sentencepiece
            from datatrove.utils.perplexity import KenlmModel, SentencePiece

            model = KenlmModel("bundled", "es")
            model._model = kenlm.Model(str(bundled / "es.arpa.bin"))
            tokenizer = SentencePiece("bundled", "es")
            tokenizer._model = sentencepiece.SentencePieceProcessor()
            tokenizer._model.load(str(bundled / "es.sp.model"))
            model._tokenizer = tokenizer
            return model

        def run(self, data, rank: int = 0, world_size: int = 1):
            import numpy as np

            from sampling import (Boundaries, SamplingParams, document_key, document_uniforms,
                                  keep_mask)

            model = self._model()
            boundaries = Boundaries(self.boundaries["q1"], self.boundaries["q2"],
                                    self.boundaries["q3"])
            params = SamplingParams("gaussian", **self.params)
            batch = []

            def decide(docs):
                pp = np.array([model.get_perplexity(d.text) for d in docs])
                keys = [document_key(d.metadata.get("url"), d.text) for d in docs]
                keep = keep_mask(pp, document_uniforms(self.seed, keys), boundaries, params)
                for d, k, p in zip(docs, keep, pp):
                    if k:
                        d.metadata["perplexity"] = float(p)
                        yield d

            for doc in data:
                batch.append(doc)
                if len(batch) >= 256:
                    yield from decide(batch)
                    batch = []
            if batch:
                yield from decide(batch)

    out = Path(spec["output"])
    executor = LocalPipelineExecutor(
        pipeline=[JsonlReader(spec["input"], glob_pattern="*.json.gz", compression="gzip",
                              id_key="url"),
                  GaussianKeep(spec["boundaries"], spec["params"], spec["seed"]),
                  JsonlWriter(str(out / "data"))],
        tasks=spec["workers"], workers=spec["workers"], logging_dir=str(out / "logs"))
    executor.run()


# --- main ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="1x size (default 100000)")
    parser.add_argument("--docs-per-shard", type=int, default=12_500)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated of {PARTS}")
    parser.add_argument("--data", default=str(REPO / "tests" / "data" / "es" / "web.jsonl.gz"))
    parser.add_argument("--whole-scale", type=int, default=4,
                        help="part whole runs on this many x --docs (default 4: 400k)")
    parser.add_argument("--whole-rounds", type=int, default=1,
                        help="part whole: rounds of (bare, run, floor, bare); >1 reports the "
                        "median of each ratio and every round (for a machine whose speed drifts)")
    parser.add_argument("--startup-rounds", type=int, default=5,
                        help="part startup: alternating runs of each way to start (default 5)")
    parser.add_argument("--model", default="es-reference",
                        help="part whole: the model (e.g. ~/.cache/ppsample/bench-model)")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--datatrove-job", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.datatrove_job:
        datatrove_job(json.loads(args.datatrove_job))
        return 0
    parts = set(args.parts.split(","))
    sys.path.insert(0, str(REPO))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ppsample-bench-"))
    corpora = {}

    def corpus(scale: int) -> dict:
        if scale not in corpora:
            corpora[scale] = make_corpus(Path(args.data), work / f"input-{scale}x",
                                         args.docs * scale, args.docs_per_shard)
        return corpora[scale]

    result = {"docs_1x": args.docs, "docs_per_shard": args.docs_per_shard, "cpus": os.cpu_count(),
              "load_avg_start": os.getloadavg()[0]}

    def report(key: str, value) -> None:
        """Each part as soon as it is measured (a long run that is cut short keeps them)."""
        result[key] = value
        print(json.dumps({key: value, "load_avg": os.getloadavg()[0]}), file=sys.stderr,
              flush=True)

    if "startup" in parts:
        report("startup", startup(work, args.startup_rounds))
    if "shuffle" in parts:
        for stage in ("run", "score"):
            report(f"shuffle_{stage}", shuffle_bytes(stage, corpus(1), work))
    run_1x = None
    if parts & {"memory", "throughput", "datatrove"}:
        bare = bare_scorer(corpus(1)) if "throughput" in parts else None
        run_1x = ppsample_run(corpus(1), work / "run-1x")
        if bare:
            # The bare loop is timed again after the run and the two are averaged: on a shared
            # machine the load changes between the two measurements. CPU seconds (per document,
            # bare / run) are the load-independent view; the run's include its fixed costs
            # and its writer threads, which can use a second core that the bare loop leaves idle.
            again = bare_scorer(corpus(1))
            bare_rate = 2 / (1 / bare["docs_per_s"] + 1 / again["docs_per_s"])
            report("throughput", {"bare_docs_per_s": bare_rate,
                                  "bare_docs_per_s_each": [bare["docs_per_s"], again["docs_per_s"]],
                                  "run_docs_per_s": run_1x["docs_per_s"],
                                  "run_vs_bare": run_1x["docs_per_s"] / bare_rate,
                                  "bare_cpu_s": (bare["cpu_s"] + again["cpu_s"]) / 2,
                                  "run_cpu_s": run_1x["cpu_s"],
                                  "run_vs_bare_cpu": (bare["cpu_s"] + again["cpu_s"]) / 2
                                  / run_1x["cpu_s"],
                                  "run_peak_rss_mb": run_1x["peak_rss_mb"]})
    if "whole" in parts:
        big = corpus(args.whole_scale)
        model_flags = ["--model", args.model] if args.model != "es-reference" else []
        rounds = []
        for _ in range(args.whole_rounds):
            before = bare_loop(big, args.model)
            run = ppsample_run(big, work / "run-whole", *model_flags)
            floor = output_floor(big, run["kept"] / big["docs"], work / "floor-whole", args.model)
            after = bare_loop(big, args.model)
            rounds.append(whole_round(before, run, floor, after))
        summary = {"docs": big["docs"], "files": big["shards"], "model": args.model}
        if len(rounds) == 1:
            summary.update(rounds[0])
        else:  # the median of each ratio over the rounds, and every round
            summary.update({key: statistics.median(r[key] for r in rounds)
                            for key in rounds[0] if key.startswith(("run_vs", "floor_vs"))})
            summary["rounds"] = rounds
        report("whole", summary)
    if "memory" in parts:
        run_4x = ppsample_run(corpus(4), work / "run-4x")
        report("memory", {"peak_rss_mb_1x": run_1x["peak_rss_mb"],
                          "peak_rss_mb_4x": run_4x["peak_rss_mb"],
                          "ratio_4x_vs_1x": run_4x["peak_rss_mb"] / run_1x["peak_rss_mb"],
                          "docs_per_s_4x": run_4x["docs_per_s"]})
    if "datatrove" in parts:
        stats = json.loads((work / "run-1x" / "stats.json").read_text())
        b = {k: stats["boundaries"][k] for k in ("q1", "q2", "q3")}
        dt = {1: datatrove_run(corpus(1), work / "datatrove-1", 1, b, stats["parameters"],
                               stats["seed"])}
        floor = floor_scorer(corpus(1))
        report("datatrove_1", {"ours_docs_per_s": run_1x["docs_per_s"],
                               "datatrove_docs_per_s": dt[1]["docs_per_s"],
                               "ours_vs_datatrove": run_1x["docs_per_s"] / dt[1]["docs_per_s"],
                               "floor_docs_per_s": floor["docs_per_s"],
                               "ceiling_vs_datatrove": floor["docs_per_s"] / dt[1]["docs_per_s"],
                               "kept": {"ours": run_1x["kept"], "datatrove": dt[1]["kept"]}})
        ours_2 = ppsample_run(corpus(1), work / "run-1x-w2", "--direct_running_mode",
                              "multi_processing", "--direct_num_workers", "2")
        dt[2] = datatrove_run(corpus(1), work / "datatrove-2", 2, b, stats["parameters"],
                              stats["seed"])
        report("datatrove_2", {"ours_docs_per_s": ours_2["docs_per_s"],
                               "datatrove_docs_per_s": dt[2]["docs_per_s"],
                               "ours_vs_datatrove": ours_2["docs_per_s"] / dt[2]["docs_per_s"],
                               # two floor processes would at best be twice as fast as one
                               "ceiling_vs_datatrove": 2 * floor["docs_per_s"]
                               / dt[2]["docs_per_s"],
                               "ours_2_vs_1": ours_2["docs_per_s"] / run_1x["docs_per_s"],
                               "datatrove_2_vs_1": dt[2]["docs_per_s"] / dt[1]["docs_per_s"]})
    if "workers" in parts:
        one = ppsample_run(corpus(2), work / "run-2x-w1")
        two = ppsample_run(corpus(2), work / "run-2x-w2", "--direct_running_mode",
                           "multi_processing", "--direct_num_workers", "2")
        report("workers", {"docs": corpus(2)["docs"], "one_docs_per_s": one["docs_per_s"],
                           "two_docs_per_s": two["docs_per_s"],
                           "two_vs_one": two["docs_per_s"] / one["docs_per_s"]})
    result["corpora"] = {f"{k}x": {kk: v[kk] for kk in ("docs", "shards", "text_bytes", "input_bytes")}
                         for k, v in corpora.items()}
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
