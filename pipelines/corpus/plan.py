"""The sampling half of the pipeline: per-split histograms merged into boundaries, the resolved
sampling plan (a side input), keep decisions, and per-split statistics.

Every number here is order-independent: histograms add integer counts, keep decisions are a
pure function of (seed, document key, perplexity), and probability sums are accumulated in
fixed point as Python integers, so stats.json comes out the same on any runner and worker count.

Cost: documents are decided a batch at a time inside the per-shard sampling DoFn
(pipelines.corpus.phase2); only the per-shard statistics leave it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sampling import (Boundaries, LogHistogram, SamplingParams, band_of, document_key,
                      document_uniforms, keep_mask, keep_probability, solve_factor)
from sampling.boundaries import BAND_LABELS
from sampling.token_budget import DEFAULT_CALIBRATION_RATE, TokenCalibration
from sampling.guidance import bertin_scale_problem

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
    force_boundaries: bool = False  # --boundaries bertin on another perplexity scale, on purpose
    boundaries_source: str | None = None  # "ccnet": --boundaries ccnet, resolved to numbers
    target_tokens: int | None = None
    token_unit: str = "gpt2"  # the unit of target_tokens (pipelines.corpus.token_units)

    def __post_init__(self):
        SamplingParams(self.method, self.factor, self.width)  # validate early, in the driver
        if self.boundaries is not None:
            Boundaries.parse(self.boundaries)
        if self.target_docs is not None and self.target_docs <= 0:
            raise ValueError(f"--target-docs must be > 0, got {self.target_docs}")
        if self.target_docs is not None and self.factor is not None:
            raise ValueError("give --factor or --target-docs, not both")
        if self.target_tokens is not None and (self.factor is not None or self.target_docs is not None):
            raise ValueError("give one of --factor, --target-docs and --target-tokens")
        if self.target_tokens is not None and self.target_tokens <= 0:
            raise ValueError(f"--target-tokens must be > 0, got {self.target_tokens}")
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
    target_docs: int | None = None
    target_expected_docs: float | None = None
    target_tokens: int | None = None
    token_unit: str | None = None
    target_expected_tokens: float | None = None
    token_ratios: object = None  # gpt2 estimate: (TokenCalibration binning, ratio per bin)
    token_estimate: dict | None = None  # how the gpt2 tokens were estimated, its measured error

    @property
    def counts_budget(self) -> bool:
        return self.target_tokens is not None


def _scale_problem(histogram: LogHistogram, boundaries: Boundaries) -> str | None:
    """BERTIN's boundaries are on BERTIN's model's perplexity scale; sampling.guidance says
    when the scored histogram is on another scale."""
    return bertin_scale_problem(histogram, boundaries)


def resolve_plan(_, histograms: dict, request: SamplingRequest, budget: dict | None = None
                 ) -> SamplingPlan:
    """Boundaries and factor from the per-split histograms of every scored document. `budget`
    (--target-tokens): {"histogram": tokens in the budget's unit per bin, "ratios", "estimate"}."""
    total = LogHistogram()
    for split in sorted(histograms):
        total.merge(histograms[split])
    if request.boundaries is not None:
        boundaries = Boundaries.parse(request.boundaries)
        source = "bertin" if request.boundaries.strip().lower() == "bertin" else \
            request.boundaries_source or "user"
        resolution = None
        if source == "bertin" and not request.force_boundaries and total.total:
            problem = _scale_problem(total, boundaries)
            if problem:
                raise ValueError(problem)
    elif total.total:
        boundaries, source, resolution = total.boundaries(), "histogram", total.resolution
    else:  # nothing was scored: nothing to sample, no boundaries to report
        boundaries, source, resolution = None, "histogram", total.resolution
    params = SamplingParams(request.method, request.factor, request.width)
    expected = expected_tokens = None
    if request.target_docs is not None and total.total:
        factor, expected = solve_factor(total, boundaries, params, request.target_docs)
        params = params.with_factor(factor)
    if request.target_tokens is not None and total.total:
        factor, expected_tokens = solve_factor(budget["histogram"], boundaries, params,
                                               target_tokens=request.target_tokens)
        params = params.with_factor(factor)
    budget = budget or {}
    return SamplingPlan(params, request.seed, boundaries, source, resolution, total,
                        request.target_docs, expected, request.target_tokens,
                        request.token_unit if request.target_tokens is not None else None,
                        expected_tokens, budget.get("ratios"), budget.get("estimate"))


def budget_of(counts: dict, request: SamplingRequest) -> dict | None:
    """The token-budget inputs of the plan from phase 1's per-split counts (None without
    --target-tokens): the histogram in the budget's unit, and for gpt2 the calibrated ratios."""
    if request.target_tokens is None:
        return None
    splits = [counts[s] for s in sorted(counts)]
    pieces = LogHistogram()
    for c in splits:
        pieces.merge(c.histogram)
    if request.token_unit == "pieces":
        return {"histogram": pieces}
    if request.token_unit == "words":
        words = LogHistogram()
        for c in splits:
            if c.budget is not None:
                words.merge(c.budget)
        return {"histogram": words}
    calibration = TokenCalibration()
    for c in splits:
        if c.calibration is not None:
            calibration.merge(c.calibration)
    if calibration.total_documents == 0:
        raise ValueError("--target-tokens with --token-unit gpt2: no document fell in the GPT-2 "
                         "calibration subsample (too few documents); use --token-unit pieces or words")
    error = calibration.measured_error()
    return {"histogram": calibration.estimated_histogram(pieces),
            "ratios": calibration,
            "estimate": {"method": "calibrated", "rate": DEFAULT_CALIBRATION_RATE,
                         "calibration_documents": calibration.total_documents,
                         "measured_error": error}}


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
    # --target-tokens: expected kept tokens in the budget's unit (fixed point, BUDGET_SCALE)
    # and the kept documents' tokens in that unit, counted
    budget_expected: int = 0
    budget_kept: int = 0

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
        self.budget_expected += other.budget_expected
        self.budget_kept += other.budget_kept
        for i in range(4):
            self.band_scored[i] += other.band_scored[i]
            self.band_kept[i] += other.band_kept[i]
            self.band_probability[i] += other.band_probability[i]
        self.histogram.merge(other.histogram)
        self.kept_histogram.merge(other.kept_histogram)
        return self


def decide(batch: list[dict], plan: SamplingPlan) -> tuple[np.ndarray, "SplitAccumulator"]:
    """Keep decisions for a batch of scored documents of one split: (kept mask, partial
    statistics). A pure function of (seed, document key, perplexity) and the plan."""
    kept, partial, _ = decide_with_uniforms(batch, plan)
    return kept, partial


def decide_with_uniforms(batch: list[dict], plan: SamplingPlan):
    """decide(), and the documents' uniforms too (report.html's sample is drawn from them:
    hashing every key a second time would cost as much as the decision)."""
    # a layout's --key-field, where the document has one; else the url, else the text
    keys = [d.get("document_key") or document_key(d.get("url"), d["text"]) for d in batch]
    pp = np.array([d["perplexity"] for d in batch], dtype=np.float64)
    # n_tokens may be null in pre-scored parquet that did not record it: counted as 0
    tokens = np.array([d["n_tokens"] or 0 for d in batch], dtype=np.int64)
    probability = keep_probability(pp, plan.boundaries, plan.params)
    uniforms = document_uniforms(plan.seed, keys)
    kept = keep_mask(pp, uniforms, plan.boundaries, plan.params)
    bands = band_of(pp, plan.boundaries) if plan.boundaries is not None \
        else np.zeros(len(batch), dtype=np.int64)
    acc = SplitAccumulator().add(pp, tokens, kept, bands, probability)
    if plan.counts_budget:
        _add_budget(acc, batch, pp, tokens, kept, probability, plan)
    return kept, acc, uniforms


BUDGET_SCALE = 2 ** 30
_COUNTERS: dict = {}


def _add_budget(acc, batch, pp, pieces, kept, probability, plan: SamplingPlan) -> None:
    """Expected kept tokens in the budget's unit and the kept documents' tokens: counted for
    pieces and words; for gpt2 the calibrated estimate (GPT-2 costs ~2x scoring per document,
    benchmarks/bench_token_budget.py: counting every kept document would cost more than the
    10 % the issue allows; prepare-finetune counts them exactly when it tokenises)."""
    from pipelines.corpus.token_units import TokenCounter

    counter = _COUNTERS.setdefault(plan.token_unit, TokenCounter(plan.token_unit))
    texts = [d["text"] for d in batch]
    chosen = np.flatnonzero(kept)
    if plan.token_unit == "gpt2":
        estimate = plan.token_ratios.estimate(pp, pieces)
        kept_tokens = np.rint(estimate[chosen]).astype(np.int64)
    else:
        estimate = counter.count(texts, pieces)
        kept_tokens = estimate[chosen]
        estimate = estimate.astype(np.float64)
    acc.budget_expected += sum(int(v) for v in np.rint(probability * estimate * BUDGET_SCALE))
    acc.budget_kept += int(np.sum(kept_tokens))


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
