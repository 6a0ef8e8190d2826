"""The sampling half of the pipeline: boundaries from the merged histogram, the resolved
sampling plan (a side input), per-document keep decisions and per-split statistics.

Every number here is order-independent: histograms add integer counts, keep decisions are a
pure function of (seed, document key, perplexity), and probability sums are accumulated in
fixed point as Python integers, so stats.json comes out the same on any runner and worker count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines import progress
from sampling import (Boundaries, LogHistogram, SamplingParams, band_of, document_key,
                      document_uniforms, keep_mask, keep_probability, solve_factor)
from sampling.boundaries import BAND_LABELS

# Keep probabilities are summed as integers in units of 2**-60: exact and associative, so the
# expected keep rates do not depend on how Beam bundled the documents.
PROBABILITY_SCALE = 2 ** 60


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
    target_docs: int | None = None
    target_expected_docs: float | None = None


def resolve_plan(histogram: LogHistogram, request: SamplingRequest) -> SamplingPlan:
    if request.boundaries is not None:
        boundaries = Boundaries.parse(request.boundaries)
        source = "bertin" if request.boundaries.strip().lower() == "bertin" else "user"
        resolution = None
    elif histogram.total:
        boundaries, source, resolution = histogram.boundaries(), "histogram", histogram.resolution
    else:  # nothing was scored: nothing to sample, no boundaries to report
        boundaries, source, resolution = None, "histogram", histogram.resolution
    params = SamplingParams(request.method, request.factor, request.width)
    expected = None
    if request.target_docs is not None and histogram.total:
        factor, expected = solve_factor(histogram, boundaries, params, request.target_docs)
        params = params.with_factor(factor)
    return SamplingPlan(params, request.seed, boundaries, source, resolution,
                        request.target_docs, expected)


class HistogramCombineFn(beam.CombineFn):
    """Perplexities (and token counts) -> one LogHistogram; merging adds integer counts."""

    def create_accumulator(self):
        return LogHistogram()

    def add_input(self, histogram, doc):
        return histogram.add([doc["perplexity"]], tokens=np.array([doc["n_tokens"] or 0], np.int64))

    def add_inputs(self, histogram, docs):
        docs = list(docs)
        if docs:
            histogram.add([d["perplexity"] for d in docs],
                          tokens=np.array([d["n_tokens"] or 0 for d in docs], dtype=np.int64))
        return histogram

    def merge_accumulators(self, histograms):
        histograms = iter(histograms)
        merged = next(histograms)
        for other in histograms:
            merged.merge(other)
        return merged

    def extract_output(self, histogram):
        return histogram


class DecideBatch(beam.DoFn):
    """list[scored document] + plan -> documents with `key`, `keep_probability`, `kept`, `band`."""

    def __init__(self):
        self.kept = Metrics.counter("ppsample", "kept")
        self.dropped = Metrics.counter("ppsample", "dropped")

    def process(self, batch: list[dict], plan: SamplingPlan):
        keys = [document_key(d.get("url"), d["text"]) for d in batch]
        perplexity = np.array([d["perplexity"] for d in batch], dtype=np.float64)
        probability = keep_probability(perplexity, plan.boundaries, plan.params)
        uniforms = document_uniforms(plan.seed, keys)
        kept = keep_mask(perplexity, uniforms, plan.boundaries, plan.params)
        bands = band_of(perplexity, plan.boundaries) if plan.boundaries is not None \
            else np.zeros(len(batch), dtype=np.int64)
        n_kept = int(kept.sum())
        self.kept.inc(n_kept)
        self.dropped.inc(len(batch) - n_kept)
        progress.add(kept=n_kept, decided=len(batch))
        for doc, key, p, k, band in zip(batch, keys, probability, kept, bands):
            yield {**doc, "key": key, "keep_probability": float(p), "kept": bool(k), "band": int(band)}


class DecideKeep(beam.PTransform):
    def __init__(self, plan_view, batch_size: int = 1024):
        super().__init__()
        self.plan_view = plan_view
        self.batch_size = batch_size

    def expand(self, scored):
        return (scored
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                | "Decide" >> beam.ParDo(DecideBatch(), plan=self.plan_view))


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


def _fixed_point(probability: float) -> int:
    return int(round(probability * PROBABILITY_SCALE))


class SplitStatsCombineFn(beam.CombineFn):
    """Decided documents of one split -> SplitAccumulator (counts, bands, histograms)."""

    def create_accumulator(self):
        return SplitAccumulator()

    def add_input(self, acc, doc):
        return self.add_inputs(acc, [doc])

    def add_inputs(self, acc, docs):
        docs = list(docs)
        if not docs:
            return acc
        pp = np.array([d["perplexity"] for d in docs], dtype=np.float64)
        # n_tokens may be null in pre-scored parquet that did not record it: counts as 0
        tokens = np.array([d["n_tokens"] or 0 for d in docs], dtype=np.int64)
        kept = np.array([d["kept"] for d in docs], dtype=bool)
        acc.histogram.add(pp, tokens=tokens)
        if kept.any():
            acc.kept_histogram.add(pp[kept], tokens=tokens[kept])
        acc.scored += len(docs)
        acc.kept += int(kept.sum())
        acc.tokens_scored += int(tokens.sum())
        acc.tokens_kept += int(tokens[kept].sum())
        for d in docs:
            band = d["band"]
            acc.band_scored[band] += 1
            acc.band_kept[band] += int(d["kept"])
            acc.band_probability[band] += _fixed_point(d["keep_probability"])
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        merged = next(accs)
        for other in accs:
            merged.scored += other.scored
            merged.kept += other.kept
            merged.tokens_scored += other.tokens_scored
            merged.tokens_kept += other.tokens_kept
            for i in range(4):
                merged.band_scored[i] += other.band_scored[i]
                merged.band_kept[i] += other.band_kept[i]
                merged.band_probability[i] += other.band_probability[i]
            merged.histogram.merge(other.histogram)
            merged.kept_histogram.merge(other.kept_histogram)
        return merged

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
    return SplitStatsCombineFn().merge_accumulators([total, *accs])
