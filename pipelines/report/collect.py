"""What report.html shows of the documents, collected inside the pipeline in bounded memory and
merged in any order to the same result (so the report is the same on any runner and worker
count); never by reading the output again.

Two pieces, riding on the per-shard summaries that already flow to stats.json:

- phase 1 (ShardSummary.report): a capped Misra-Gries counter of the url hosts of every
  MG_EVERY-th document of a shard, cut to
  its TOP_PER_SHARD hosts. The combiner keeps, over all shards, the DOMAIN_CANDIDATES hosts with
  the largest per-shard count (ties by name). That selection does not depend on merge order: a
  host among the global top is never cut in a partial merge that holds its best shard, and its
  key there is its global key.
- phase 2 (ShardSample.report, a ShardReport): per band (quartiles from the boundaries, deciles
  from the histogram) and per decision (dropped / kept): documents, tokens, a log2 histogram of
  n_tokens, exact document counts of the candidate hosts (a side input, the same on every
  worker), and example documents: the lowest and highest perplexity (running min / max) and the
  EXAMPLES_SAMPLE documents with the smallest report hash (the keep uniform, a pure function
  of seed and document key, scrambled), from which the median example is taken.
  Excerpts are cut to EXCERPT_CHARS characters when a document enters the sample.

Memory per shard and in every combiner accumulator: 14 bands x 2 decisions x (2 +
EXAMPLES_SAMPLE) excerpts, and (DOMAIN_CANDIDATES + 1) x 14 x 2 counts: about 0.5 MB,
whatever the shard or corpus size.
"""
from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field

import numpy as np

from sampling import band_of
from sampling.boundaries import BAND_LABELS

REPORT_JSON = "report.json"  # beside stats.json, written just before it
MG_CAPACITY = 2048  # Misra-Gries counters per shard (phase 1)
MG_EVERY = 8  # phase 1 counts the hosts of every 8th document of a shard (enough to find the
# frequent ones; phase 2 counts the candidates exactly)
TOP_PER_SHARD = 128  # hosts a shard passes on
DOMAIN_CANDIDATES = 256  # hosts counted exactly in phase 2
TOP_DOMAINS = 8  # hosts shown per band
EXAMPLES_SAMPLE = 7  # smallest-hash documents kept per band and decision
EXCERPT_CHARS = 360
LENGTH_BINS = 21  # n_tokens in [0,1], (1,2], (2,4], ... (2**19, inf)
REPORT_SEED_SALT = 0x7265706F7274  # "report"

QUARTILES = tuple(f"quartile {label}" for label in BAND_LABELS)
DECILES = tuple(f"decile {i + 1}" for i in range(10))
BANDS = QUARTILES + DECILES
DECISIONS = ("dropped", "kept")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\Z")


def url_host(url) -> str | None:
    """The lower-cased host of an absolute url; None for a missing or relative one. (String
    methods, not a regex or urllib: this runs once per document in both phases.)"""
    if url.__class__ is not str:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.match(scheme):
        return None
    for end in "/?#":
        rest = rest.partition(end)[0]
    rest = rest.rpartition("@")[2]
    if rest.startswith("["):  # an IPv6 literal: [::1]:80
        rest = rest.partition("]")[0] + "]"
    else:
        rest = rest.partition(":")[0]
    return rest.lower() or None


def report_hashes(uniforms: np.ndarray) -> np.ndarray:
    """hash(seed, document key) as uint64, from the keep uniforms (already a pure function of
    seed and key; hashing every key again would cost as much as the keep decision), scrambled
    by splitmix64's finaliser: the smallest keep uniforms would lean, among kept documents,
    towards the perplexities kept most often; their scrambled bits do not."""
    x = (np.asarray(uniforms, dtype=np.float64) * 2.0**53).astype(np.uint64) \
        ^ np.uint64(REPORT_SEED_SALT)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# --- phase 1: host candidates ----------------------------------------------------------------

class ShardDomains:
    """Misra-Gries heavy hitters of one shard's hosts: at most MG_CAPACITY counters; a host seen
    more than n / MG_CAPACITY times is always among them. Deterministic for a shard (its rows
    come in file order)."""

    def __init__(self, capacity: int = MG_CAPACITY):
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.seen = 0  # documents offered (add_docs)

    def add_docs(self, docs: list[dict]) -> None:
        """The hosts of every MG_EVERY-th document, counted over the shard whatever the
        batches."""
        start = -self.seen % MG_EVERY
        self.seen += len(docs)
        self.add(d.get("url") for d in docs[start::MG_EVERY])

    def add(self, urls) -> None:
        counts = self.counts
        for url in urls:
            host = url_host(url)
            if host is None:
                continue
            if host in counts:
                counts[host] += 1
            elif len(counts) < self.capacity:
                counts[host] = 1
            else:  # decrement all: amortised O(1), each decrement pays for one earlier increment
                self.counts = counts = {h: c - 1 for h, c in counts.items() if c > 1}

    def top(self, n: int = TOP_PER_SHARD) -> list[tuple[str, int]]:
        return heapq.nsmallest(n, self.counts.items(), key=lambda hc: (-hc[1], hc[0]))

    def shrink(self) -> "ShardDomains":
        """What leaves the shard: its top hosts only."""
        self.counts = dict(self.top())
        return self


def merge_candidates(into: dict, hosts) -> dict:
    """host -> largest per-shard count, cut to DOMAIN_CANDIDATES (order-independent, see the
    module docstring). `hosts`: (host, count) pairs or another candidates dict."""
    items = hosts.items() if isinstance(hosts, dict) else hosts
    for host, count in items:
        if count > into.get(host, 0):
            into[host] = count
    if len(into) > DOMAIN_CANDIDATES:
        kept = heapq.nsmallest(DOMAIN_CANDIDATES, into.items(), key=lambda hc: (-hc[1], hc[0]))
        into.clear()
        into.update(kept)
    return into


# --- the report plan (a side input of phase 2) -----------------------------------------------

@dataclass(frozen=True)
class ReportPlan:
    seed: int
    deciles: tuple  # the 9 inner decile edges of the scored histogram
    domains: tuple  # candidate hosts, sorted


def report_plan(_, plan, candidates: dict | None):
    """None (nothing to report) when nothing was scored."""
    if plan.boundaries is None or not plan.histogram.total:
        return None
    edges = plan.histogram.quantiles(np.arange(1, 10) / 10.0)
    return ReportPlan(plan.seed, tuple(float(e) for e in edges), tuple(sorted(candidates or {})))


# --- phase 2: per-band statistics and examples -----------------------------------------------

@dataclass(order=True, frozen=True)
class Example:
    """One document in the report, ordered by (report hash, ...) for the bounded sample."""
    hash: int
    perplexity: float
    url: str
    excerpt: str
    n_tokens: int
    chars: int
    split: str


def _example(doc: dict, split: str, h: float) -> Example:
    text = doc["text"] if isinstance(doc.get("text"), str) else ""
    url = doc.get("url") if isinstance(doc.get("url"), str) else ""
    return Example(int(h), float(doc["perplexity"]), _utf8(url), _utf8(text[:EXCERPT_CHARS]),
                   int(doc.get("n_tokens") or 0), len(text), split)


def _utf8(text: str) -> str:
    """A lone surrogate (json allows "\\ud800") would make report.json unwritable: replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _by_perplexity(e: Example):
    return (e.perplexity, e.hash, e.url, e.excerpt)


@dataclass
class Examples:
    lowest: Example | None = None
    highest: Example | None = None
    sample: list = field(default_factory=list)  # the EXAMPLES_SAMPLE smallest by hash, sorted

    def threshold(self) -> int:
        return self.sample[-1].hash if len(self.sample) >= EXAMPLES_SAMPLE else 2**64 - 1

    def offer(self, e: Example) -> None:
        if self.lowest is None or _by_perplexity(e) < _by_perplexity(self.lowest):
            self.lowest = e
        if self.highest is None or _by_perplexity(e) > _by_perplexity(self.highest):
            self.highest = e
        if e.hash <= self.threshold() and e not in self.sample:
            self.sample = sorted(self.sample + [e])[:EXAMPLES_SAMPLE]

    def merge(self, other: "Examples") -> None:
        for e in [other.lowest, other.highest, *other.sample]:
            if e is not None:
                self.offer(e)

    def median(self) -> Example | None:
        if not self.sample:
            return None
        ordered = sorted(self.sample, key=_by_perplexity)
        return ordered[(len(ordered) - 1) // 2]


def _batch_candidates(cell: np.ndarray, h: np.ndarray, pp: np.ndarray) -> np.ndarray:
    """The documents of a batch that can still be among their cell's examples once the whole
    batch is offered: per cell, those with one of its EXAMPLES_SAMPLE smallest distinct hashes
    or its lowest or highest perplexity (ties included). Any other document has, in its own
    batch and cell, EXAMPLES_SAMPLE distinct examples of smaller hash and a lower and a higher
    one, so offering it changes nothing; skipping it saves building its Example (at the start
    of a shard, before the thresholds fall, nearly every document passes them)."""
    mask = np.zeros(len(cell), dtype=bool)
    order = np.argsort(cell, kind="stable")
    starts = np.flatnonzero(np.r_[True, cell[order][1:] != cell[order][:-1]])
    for members in np.split(order, starts[1:]):
        hashes, values = h[members], pp[members]
        distinct = np.unique(hashes)
        chosen = hashes <= distinct[min(EXAMPLES_SAMPLE, len(distinct)) - 1]
        chosen |= (values == values.min()) | (values == values.max())
        mask[members[chosen]] = True
    return mask


class ShardReport:
    """Per-band statistics of one shard's decided documents (or of several, merged)."""

    def __init__(self, rplan: ReportPlan, boundaries):
        self.rplan, self.boundaries = rplan, boundaries
        self._domain_index = {h: i for i, h in enumerate(rplan.domains)}
        n, d = len(BANDS), len(rplan.domains)
        self.docs = np.zeros((n, 2), dtype=np.int64)
        self.tokens = np.zeros((n, 2), dtype=np.int64)
        self.lengths = np.zeros((n, 2, LENGTH_BINS), dtype=np.int64)
        self.domains = np.zeros((d + 1, n, 2), dtype=np.int64)  # row d: other hosts and no url
        self.examples = [[Examples(), Examples()] for _ in BANDS]
        self._lowest = np.full((n, 2), np.inf)
        self._highest = np.full((n, 2), -np.inf)
        self._threshold = np.full((n, 2), 2**64 - 1, dtype=np.uint64)

    def add(self, docs: list[dict], kept: np.ndarray, split: str, uniforms) -> None:
        """A decided batch of one split; `uniforms`: its keep uniforms (decide_with_uniforms)."""
        if not docs:
            return
        pp = np.array([d["perplexity"] for d in docs], dtype=np.float64)
        tokens = np.array([d.get("n_tokens") or 0 for d in docs], dtype=np.int64)
        status = kept.astype(np.int64)
        quartile = band_of(pp, self.boundaries)
        decile = len(QUARTILES) + np.searchsorted(np.array(self.rplan.deciles), pp, side="left")
        # ceil(log2(n)) exactly, from the float's exponent (no CPU-dependent log2): n = m * 2**e
        # with 0.5 <= m < 1, so ceil(log2 n) = e - 1 for a power of two, else e
        mantissa, exponent = np.frexp(np.maximum(tokens, 1).astype(np.float64))
        length_bin = np.minimum(LENGTH_BINS - 1, exponent - (mantissa == 0.5)).astype(np.int64)
        other = len(self.rplan.domains)
        host_row = np.fromiter((self._host_row(d.get("url"), other) for d in docs),
                               dtype=np.int64, count=len(docs))
        n = len(BANDS) * 2
        # every document counts in its quartile and in its decile: both at once
        cell = np.concatenate([quartile * 2 + status, decile * 2 + status])  # (band, decision)
        self.docs += np.bincount(cell, minlength=n).reshape(self.docs.shape)
        self.tokens += np.bincount(cell, weights=np.concatenate([tokens, tokens]), minlength=n) \
            .round().astype(np.int64).reshape(self.tokens.shape)
        self.lengths += np.bincount(cell * LENGTH_BINS + np.concatenate([length_bin, length_bin]),
                                    minlength=n * LENGTH_BINS).reshape(self.lengths.shape)
        self.domains += np.bincount(np.concatenate([host_row, host_row]) * n + cell,
                                    minlength=(other + 1) * n).reshape(self.domains.shape)
        self._add_examples(docs, pp, status, quartile, decile, split, uniforms)

    def _host_row(self, url, other: int) -> int:
        """The candidate index of the url's host (`other` when none). Fast path, the common
        url: scheme://host/... with a lower-case host that is a candidate (url_host would give
        the same); anything else goes through url_host."""
        if url.__class__ is not str:
            return other
        parts = url.split("/", 3)
        if len(parts) > 2 and not parts[1] and parts[0][-1:] == ":" and parts[0][:-1].isalpha():
            row = self._domain_index.get(parts[2])
            if row is not None:
                return row
        return self._domain_index.get(url_host(url), other)

    def _add_examples(self, docs, pp, status, quartile, decile, split, uniforms) -> None:
        h = report_hashes(uniforms)
        candidate = np.zeros(len(docs), dtype=bool)
        for band in (quartile, decile):
            candidate |= ((pp <= self._lowest[band, status]) | (pp >= self._highest[band, status])
                          | (h <= self._threshold[band, status])) \
                & _batch_candidates(band * 2 + status, h, pp)
        for i in np.flatnonzero(candidate).tolist():
            e = _example(docs[i], split, h[i])
            for band in (int(quartile[i]), int(decile[i])):
                self._offer(band, int(status[i]), e)

    def _offer(self, band: int, decision: int, e: Example) -> None:
        examples = self.examples[band][decision]
        examples.offer(e)
        self._lowest[band, decision] = examples.lowest.perplexity
        self._highest[band, decision] = examples.highest.perplexity
        self._threshold[band, decision] = examples.threshold()

    def merge(self, other: "ShardReport") -> "ShardReport":
        self.docs += other.docs
        self.tokens += other.tokens
        self.lengths += other.lengths
        self.domains += other.domains
        for band in range(len(BANDS)):
            for decision in (0, 1):
                self.examples[band][decision].merge(other.examples[band][decision])
                examples = self.examples[band][decision]
                if examples.lowest is not None:
                    self._lowest[band, decision] = examples.lowest.perplexity
                    self._highest[band, decision] = examples.highest.perplexity
                self._threshold[band, decision] = examples.threshold()
        return self

    def __getstate__(self):  # the lookup table is rebuilt, not shipped between workers
        state = dict(self.__dict__)
        del state["_domain_index"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._domain_index = {h: i for i, h in enumerate(self.rplan.domains)}

    def to_dict(self) -> dict:
        """report.json's "bands": one entry per quartile and decile."""
        hosts = self.rplan.domains
        bands = []
        for b, label in enumerate(BANDS):
            docs = self.docs[b]
            entry = {"band": label, "documents": int(docs.sum()), "kept": int(docs[1]),
                     "tokens": int(self.tokens[b].sum()), "tokens_kept": int(self.tokens[b, 1]),
                     "length_log2_tokens": self.lengths[b].sum(axis=0).tolist(),
                     "length_log2_tokens_kept": self.lengths[b, 1].tolist()}
            per_host = self.domains[:len(hosts), b]  # (hosts, 2)
            order = sorted(range(len(hosts)), key=lambda i: (-int(per_host[i].sum()), hosts[i]))
            entry["top_domains"] = [
                {"host": hosts[i], "documents": int(per_host[i].sum()), "kept": int(per_host[i, 1])}
                for i in order[:TOP_DOMAINS] if per_host[i].sum() > 0]
            entry["other_domains"] = {"documents": int(self.domains[len(hosts), b].sum()),
                                      "kept": int(self.domains[len(hosts), b, 1])}
            entry["examples"] = {
                decision: {which: _example_dict(getattr(ex, which) if which != "median"
                                                else ex.median())
                           for which in ("lowest", "median", "highest")}
                for decision, ex in zip(DECISIONS, self.examples[b])}
            bands.append(entry)
        return {"deciles": list(self.rplan.deciles), "candidate_domains": len(hosts),
                "excerpt_chars": EXCERPT_CHARS, "bands": bands}


def _example_dict(e: Example | None) -> dict | None:
    if e is None:
        return None
    return {"perplexity": e.perplexity, "url": e.url, "excerpt": e.excerpt,
            "truncated": e.chars > len(e.excerpt), "n_tokens": e.n_tokens, "split": e.split}


def merge_reports(into: ShardReport | None, other: ShardReport | None) -> ShardReport | None:
    if other is None:
        return into
    if into is None:  # a copy: a combiner must not change the elements it is given
        into = ShardReport(other.rplan, other.boundaries)
    return into.merge(other)
