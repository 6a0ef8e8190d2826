"""The composite pipeline shared by `run`, `sample` and `stats`: from scored documents to
boundaries (merged histogram, side input), keep decisions, per-split statistics, output shards,
dead letters and stats.json.

stats.json is written last: it lists the shard files, so it waits for them, and a reader that
sees stats.json knows the output is complete.
"""
from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass

import apache_beam as beam

from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import outputs
from pipelines.corpus_io import writers
from pipelines.corpus.selection import (DecideBatch, HistogramCombineFn, MergeSplitStats, SamplingPlan,
                                 SamplingRequest, SplitAccumulator, bands_summary, by_split,
                                 merge_split_accumulators, resolve_plan)
from sampling import LogHistogram

STATS_JSON = "stats.json"
# stats.json carries histograms on 100 bins per decade (1,001 edges over [1, 1e10)): fine enough
# for figures and rates; the full-resolution total histogram is kept under histogram.fine.
STATS_BINS_PER_DECADE = 100


def project_version() -> str:
    try:
        return importlib.metadata.version("perplexity-sampling")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


@dataclass(frozen=True)
class JobMeta:
    command: str
    out_dir: str
    prefix: str = "mc4-es"
    docs_per_shard: int = writers.DEFAULT_DOCS_PER_SHARD
    write_documents: bool = True  # False for `ppsample stats`: statistics only


def _counts(read: int, rejected: int, acc: SplitAccumulator) -> dict:
    return {"read": read, "rejected": rejected, "scored": acc.scored, "kept": acc.kept,
            "dropped": acc.scored - acc.kept, "tokens_scored": acc.tokens_scored,
            "tokens_kept": acc.tokens_kept}


def _coarse(histogram: LogHistogram) -> LogHistogram:
    return histogram.coarsen(STATS_BINS_PER_DECADE)


def _histogram_fields(acc: SplitAccumulator) -> dict:
    coarse, coarse_kept = _coarse(acc.histogram), _coarse(acc.kept_histogram)
    return {"histogram": coarse.counts.tolist(), "kept_histogram": coarse_kept.counts.tolist(),
            # perplexities outside [1, 1e10): not in the bins above
            "histogram_outside": [coarse.underflow, coarse.overflow],
            "kept_histogram_outside": [coarse_kept.underflow, coarse_kept.overflow]}


def assemble_stats(_, split_stats: dict, read_counts: dict, rejected_counts: dict,
                   plan: SamplingPlan, files: dict, model: dict | None,
                   request: SamplingRequest, meta: JobMeta) -> dict:
    histogram = plan.histogram
    splits = sorted(set(read_counts) | set(split_stats) | set(rejected_counts),
                    key=lambda s: (s not in mc4_io.SPLITS, s))
    per_split = {}
    for split in splits:
        acc = split_stats.get(split, SplitAccumulator())
        entry = _counts(read_counts.get(split, 0), rejected_counts.get(split, 0), acc)
        entry.update(_histogram_fields(acc))
        entry["bands"] = bands_summary(acc)
        entry["expected_kept"] = sum(b["expected_kept"] for b in entry["bands"])
        if meta.write_documents:
            entry["files"] = files.get(split, {"json_gz": [], "parquet": []})
        per_split[split] = entry
    total_acc = merge_split_accumulators([split_stats[s] for s in sorted(split_stats)])
    total = _counts(sum(read_counts.values()), sum(rejected_counts.values()), total_acc)
    total.update(_histogram_fields(total_acc))
    total["bands"] = bands_summary(total_acc)
    expected_kept = sum(b["expected_kept"] for b in total["bands"])
    boundaries = None
    if plan.boundaries is not None:
        boundaries = {**plan.boundaries.to_dict(), "source": plan.boundaries_source,
                      "resolution": plan.resolution}
    stats = {
        "version": project_version(),
        "command": meta.command,
        "method": plan.params.method,
        "parameters": plan.params.to_dict(),
        "seed": plan.seed,
        "target_docs": plan.target_docs,
        "target_expected_docs": plan.target_expected_docs,
        "model": model,
        "preset": (model or {}).get("preset"),
        "boundaries": boundaries,
        "histogram": {"edges": _coarse(histogram).edges.tolist(),
                      "bins_per_decade": STATS_BINS_PER_DECADE,
                      "fine": histogram.to_dict()},
        "splits": per_split,
        "total": total,
        "expected_kept": expected_kept,
    }
    if not meta.write_documents:
        stats["dry_run"] = True  # `ppsample stats`: kept counts are what `sample` would keep
    else:
        stats["prefix"] = meta.prefix
        stats["rejected_file"] = outputs.WriteRejected.NAME
    check_invariants(stats)
    return stats


def check_invariants(stats: dict) -> None:
    """read = scored + rejected and scored = kept + dropped, per split and in total."""
    for name, counts in [*stats["splits"].items(), ("total", stats["total"])]:
        if counts["read"] != counts["scored"] + counts["rejected"]:
            raise RuntimeError(f"{name}: read {counts['read']} != scored {counts['scored']} + "
                               f"rejected {counts['rejected']}: documents were lost")
        if counts["scored"] != counts["kept"] + counts["dropped"]:
            raise RuntimeError(f"{name}: scored != kept + dropped")


def _write_stats(stats: dict, out_dir: str) -> str:
    path = writers.join(out_dir, STATS_JSON)
    writers.write_json(path, _finite(stats))
    return path


def _finite(value):
    """JSON has no NaN/inf: write them as null rather than emitting invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def split_of_letter(letter: dict) -> str:
    return letter.get("split") or mc4_io.split_of(letter["source"])


def add_sampling(scored, rejected, read_counts, model_description, request: SamplingRequest,
                 meta: JobMeta):
    """Wires the stages after scoring. `scored`: batches (lists) of scored documents;
    `rejected`: dead letters; `read_counts`: (split, n) per input file; `model_description`: a
    one-element PCollection (describe() dict or None). Returns the PCollection holding the
    stats dict."""
    p = scored.pipeline
    split_batches = scored | "BySplit" >> beam.FlatMap(by_split)
    histograms = split_batches | "Histograms" >> beam.CombinePerKey(HistogramCombineFn())
    plan = (p
            | "PlanTrigger" >> beam.Create([None])
            | "ResolvePlan" >> beam.Map(resolve_plan, histograms=beam.pvalue.AsDict(histograms),
                                        request=request, docs_per_shard=meta.docs_per_shard))
    decided = split_batches | "Decide" >> beam.ParDo(
        DecideBatch(emit_documents=meta.write_documents),
        plan=beam.pvalue.AsSingleton(plan)).with_outputs("stats", main="kept")
    split_stats = decided.stats | "SplitStats" >> beam.CombinePerKey(MergeSplitStats())
    if meta.write_documents:
        files = (decided.kept, plan) | "WriteSampled" >> outputs.WriteSampledShards(
            meta.out_dir, meta.prefix, request.method)
        rejected_written = rejected | "WriteRejected" >> outputs.WriteRejected(meta.out_dir)
    else:
        files = p | "NoFiles" >> beam.Create([])
        rejected_written = p | "NoRejectedFile" >> beam.Create([])
    rejected_counts = outputs.count_per_split(rejected, "Rejected", split_of_letter)
    read_per_split = read_counts | "ReadPerSplit" >> beam.CombinePerKey(sum)
    stats = (p
             | "StatsTrigger" >> beam.Create([None])
             | "AssembleStats" >> beam.Map(
                 assemble_stats,
                 split_stats=beam.pvalue.AsDict(split_stats),
                 read_counts=beam.pvalue.AsDict(read_per_split),
                 rejected_counts=beam.pvalue.AsDict(rejected_counts),
                 plan=beam.pvalue.AsSingleton(plan),
                 files=beam.pvalue.AsDict(files),
                 model=beam.pvalue.AsSingleton(model_description),
                 request=request, meta=meta))
    # Waiting on the rejected file too: stats.json is the last file written.
    _ = (stats
         | "WriteStats" >> beam.Map(lambda s, _done: _write_stats(s, meta.out_dir),
                                    _done=beam.pvalue.AsList(rejected_written)))
    return stats


class CheckScored(beam.DoFn):
    """Pre-scored rows: a perplexity that is missing, not a number, not finite or not > 0, or a
    negative / non-integer n_tokens, is a dead letter (it would break the histogram).
    Batches in, batches out."""

    def process(self, batch: list[dict]):
        good = []
        for doc in batch:
            letter = self._problem(doc)
            if letter is None:
                good.append({**doc, "perplexity": float(doc["perplexity"])})
            else:
                yield beam.pvalue.TaggedOutput("rejected", letter)
        if good:
            yield good

    @staticmethod
    def _problem(doc: dict):
        from pipelines.corpus_io import dead_letters

        pp, n_tokens = doc.get("perplexity"), doc.get("n_tokens")
        problem = None
        if isinstance(pp, bool) or not isinstance(pp, (int, float)) or not math.isfinite(pp) or pp <= 0:
            problem = f"perplexity is {pp!r}"
        elif n_tokens is not None and (isinstance(n_tokens, bool) or not isinstance(n_tokens, int)
                                       or n_tokens < 0):
            problem = f"n_tokens is {n_tokens!r}"
        if problem:
            letter = dead_letters.make(doc["source"], doc["line"], dead_letters.BAD_PERPLEXITY, problem,
                                       {k: doc.get(k) for k in ("text", "url", "timestamp", "perplexity",
                                                                "n_tokens", "split")},
                                       split=doc["split"])
            dead_letters.count(letter)
            return letter
        return None


def read_scored(pipeline, files: list[str], max_doc_bytes: int):
    """Scored parquet (any with text, url, timestamp, perplexity) -> (scored batches, rejected,
    counts)."""
    read = pipeline | "ReadScored" >> mc4_io.ReadDocuments(
        files, max_doc_bytes, extra_columns=("perplexity", "n_tokens"))
    checked = read["batches"] | "CheckScored" >> beam.ParDo(CheckScored()).with_outputs(
        "rejected", main="scored")
    rejected = (read["rejected"], checked.rejected) | "AllRejected" >> beam.Flatten()
    return checked.scored, rejected, read["counts"]


def scored_model_description(files: list[str]) -> dict | None:
    """The model recorded by `ppsample score` in the scored directory's stats.json, if any."""
    from apache_beam.io.filesystems import FileSystems

    folders = sorted({f.rsplit("/", 1)[0] for f in files})
    for folder in folders:
        path = writers.join(folder, STATS_JSON)
        if FileSystems.exists(path):
            try:
                return writers.read_json(path).get("model")
            except (ValueError, OSError):
                return None
    return None
