"""The sampling half of the pipeline: per-split histograms merged into boundaries, the resolved
sampling plan (a side input), keep decisions, and per-split statistics.

Every number here is order-independent: histograms add integer counts, keep decisions are a
pure function of (seed, document key, perplexity), and probability sums are accumulated in
fixed point as Python integers, so stats.json comes out the same on any runner and worker count.

Cost: documents reach this stage in batches and are decided a batch at a time; a batch leaves
as its kept documents (already keyed by output shard) and one partial statistics record per
split, so dropped documents and statistics never cost Beam a per-document step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines import progress
from pipelines.corpus_io import writers
from sampling import (Boundaries, LogHistogram, SamplingParams, band_of, document_key,
                      document_uniforms, expected_kept, keep_mask, keep_probability, solve_factor)
from sampling.boundaries import BAND_LABELS

# Keep probabilities are summed as integers in units of 2**-60: exact and associative, so the
# expected keep rates do not depend on how Beam bundled the documents.
PROBABILITY_SCALE = 2 ** 60


def merge_in_place(accumulators):
    """Merge Beam accumulators that have an in-place `.merge(other)` into the first one."""
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for other in accumulators:
        merged.merge(other)
    return merged


@dataclass(frozen=True)
class SamplingRequest:
    """What the user asked for, before the data is seen."""
    method: str = "gaussian"
    factor: float | None = None
    width: float | None = None
    seed: int = 0
    boundaries: str | None = None  # None: from the histogram; "q1,q2,q3" or a preset name
    target_docs: int | None = None

    def __post_init__(self):
        SamplingParams(self.method, self.factor, self.width)  # validate early, in the driver
        if self.boundaries is not None:
            Boundaries.parse(self.boundaries)
        if self.target_docs is not None and self.target_docs <= 0:
            raise ValueError(f"--target-docs must be > 0, got {self.target_docs}")
        if self.target_docs is not None and self.factor is not None:
            raise ValueError("give --factor or --target-docs, not both")
        document_uniforms(self.seed, [])  # seed range check


@dataclass(frozen=True)
class SamplingPlan:
    """The resolved plan, the same for every worker (a side input)."""
    params: SamplingParams
    seed: int
    boundaries: Boundaries | None
    boundaries_source: str  # histogram | user | bertin
    resolution: float | None
    histogram: LogHistogram  # all scored documents
    shard_counts: dict  # split -> number of output shards
    target_docs: int | None = None
    target_expected_docs: float | None = None


def resolve_plan(_, histograms: dict, request: SamplingRequest,
                 docs_per_shard: int = writers.DEFAULT_DOCS_PER_SHARD) -> SamplingPlan:
    """Boundaries, factor and shard counts from the per-split histograms.

    The shard count of a split follows its *expected* kept count, a function of the histogram
    alone, so the kept documents can be routed to their shard as they are decided."""
    total = LogHistogram()
    for split in sorted(histograms):
        total.merge(histograms[split])
    if request.boundaries is not None:
        boundaries = Boundaries.parse(request.boundaries)
        source = "bertin" if request.boundaries.strip().lower() == "bertin" else "user"
        resolution = None
    elif total.total:
        boundaries, source, resolution = total.boundaries(), "histogram", total.resolution
    else:  # nothing was scored: nothing to sample, no boundaries to report
        boundaries, source, resolution = None, "histogram", total.resolution
    params = SamplingParams(request.method, request.factor, request.width)
    expected = None
    if request.target_docs is not None and total.total:
        factor, expected = solve_factor(total, boundaries, params, request.target_docs)
        params = params.with_factor(factor)
    shard_counts = {}
    for split, histogram in sorted(histograms.items()):
        kept = expected_kept(histogram, boundaries, params) if histogram.total else 0.0
        shard_counts[split] = writers.num_shards_for(round(kept), docs_per_shard)
    return SamplingPlan(params, request.seed, boundaries, source, resolution, total,
                        shard_counts, request.target_docs, expected)


def by_split(batch: list[dict]):
    """A batch -> (split, sub-batch) pairs (a parquet file may mix splits)."""
    groups: dict[str, list] = {}
    for doc in batch:
        groups.setdefault(doc["split"], []).append(doc)
    return sorted(groups.items(), key=lambda kv: kv[0])


class HistogramCombineFn(beam.CombineFn):
    """Batches of scored documents -> one LogHistogram of perplexities (with token sums);
    merging adds integer counts."""

    def create_accumulator(self):
        return LogHistogram()

    def add_input(self, histogram, batch):
        # n_tokens may be null in pre-scored parquet that did not record it: counts as 0
        return histogram.add([d["perplexity"] for d in batch],
                             tokens=np.array([d["n_tokens"] or 0 for d in batch], dtype=np.int64))

    def merge_accumulators(self, histograms):
        return merge_in_place(histograms)

    def extract_output(self, histogram):
        return histogram


@dataclass
class SplitAccumulator:
    scored: int = 0
    kept: int = 0
    tokens_scored: int = 0
    tokens_kept: int = 0
    band_scored: list = field(default_factory=lambda: [0, 0, 0, 0])
    band_kept: list = field(default_factory=lambda: [0, 0, 0, 0])
    band_probability: list = field(default_factory=lambda: [0, 0, 0, 0])  # fixed point
    histogram: LogHistogram = field(default_factory=LogHistogram)
    kept_histogram: LogHistogram = field(default_factory=LogHistogram)

    def add(self, pp, tokens, kept, bands, probability) -> "SplitAccumulator":
        """Folds in a batch given as arrays (tokens int64, kept bool, bands 0..3)."""
        self.histogram.add(pp, tokens=tokens)
        if kept.any():
            self.kept_histogram.add(pp[kept], tokens=tokens[kept])
        self.scored += len(pp)
        self.kept += int(kept.sum())
        self.tokens_scored += int(tokens.sum())
        self.tokens_kept += int(tokens[kept].sum())
        fixed = [int(v) for v in np.rint(probability * PROBABILITY_SCALE)]
        for band, k, p in zip(bands.tolist(), kept.tolist(), fixed):
            self.band_scored[band] += 1
            self.band_kept[band] += k
            self.band_probability[band] += p
        return self

    def merge(self, other: "SplitAccumulator") -> "SplitAccumulator":
        self.scored += other.scored
        self.kept += other.kept
        self.tokens_scored += other.tokens_scored
        self.tokens_kept += other.tokens_kept
        for i in range(4):
            self.band_scored[i] += other.band_scored[i]
            self.band_kept[i] += other.band_kept[i]
            self.band_probability[i] += other.band_probability[i]
        self.histogram.merge(other.histogram)
        self.kept_histogram.merge(other.kept_histogram)
        return self


class DecideBatch(beam.DoFn):
    """(split, batch of scored documents) + plan -> kept documents keyed by their output shard
    ((split, shard), document) as main output, and one ("stats", (split, SplitAccumulator))."""

    def __init__(self, emit_documents: bool = True):
        self.emit_documents = emit_documents
        self.kept_counter = Metrics.counter("ppsample", "kept")
        self.dropped_counter = Metrics.counter("ppsample", "dropped")

    def process(self, element, plan: SamplingPlan):
        split, batch = element
        keys = [document_key(d.get("url"), d["text"]) for d in batch]
        pp = np.array([d["perplexity"] for d in batch], dtype=np.float64)
        # n_tokens may be null in pre-scored parquet that did not record it: counted as 0
        tokens = np.array([d["n_tokens"] or 0 for d in batch], dtype=np.int64)
        probability = keep_probability(pp, plan.boundaries, plan.params)
        kept = keep_mask(pp, document_uniforms(plan.seed, keys), plan.boundaries, plan.params)
        bands = band_of(pp, plan.boundaries) if plan.boundaries is not None \
            else np.zeros(len(batch), dtype=np.int64)
        n_kept = int(kept.sum())
        self.kept_counter.inc(n_kept)
        self.dropped_counter.inc(len(batch) - n_kept)
        progress.add(kept=n_kept, decided=len(batch))
        yield beam.pvalue.TaggedOutput(
            "stats", (split, SplitAccumulator().add(pp, tokens, kept, bands, probability)))
        if not self.emit_documents:
            return
        n_shards = plan.shard_counts[split]
        for i in np.flatnonzero(kept).tolist():
            doc = batch[i]
            yield (split, writers.shard_of(keys[i], n_shards)), {
                "key": keys[i], "text": doc["text"], "url": doc.get("url"),
                "timestamp": doc.get("timestamp"), "perplexity": doc["perplexity"],
                "n_tokens": doc.get("n_tokens")}


class MergeSplitStats(beam.CombineFn):
    """Partial SplitAccumulators of one split -> their sum."""

    def create_accumulator(self):
        return SplitAccumulator()

    def add_input(self, acc, partial):
        return acc.merge(partial)

    def merge_accumulators(self, accs):
        return merge_in_place(accs)

    def extract_output(self, acc):
        return acc


def bands_summary(acc: SplitAccumulator) -> list[dict]:
    rows = []
    for i, label in enumerate(BAND_LABELS):
        scored, kept = acc.band_scored[i], acc.band_kept[i]
        expected = acc.band_probability[i] / PROBABILITY_SCALE
        rows.append({"band": label, "scored": scored, "kept": kept,
                     "expected_kept": expected,
                     "expected_keep_rate": expected / scored if scored else None,
                     "actual_keep_rate": kept / scored if scored else None})
    return rows


def merge_split_accumulators(accs) -> SplitAccumulator:
    total = SplitAccumulator()
    for acc in accs:
        total.merge(acc)
    return total
