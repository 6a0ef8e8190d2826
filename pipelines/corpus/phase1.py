"""Phase 1 of the data path, one input shard per call: read -> score -> scored parquet named
after the shard + its dead letters, streamed; what leaves the DoFn is a ShardSummary (file
names, counts and one perplexity histogram per split), never a document.

`sample` and `stats` run the same phase on pre-scored parquet (CheckShard): the rows are only
checked and counted, nothing is rescored or rewritten.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipelines import progress
from pipelines import worker_watchdog
from pipelines.corpus.input_shards import InputShard
from pipelines.corpus.model_handle import load_shared_model
from pipelines.corpus_io import dead_letters
from pipelines.corpus_io import layouts
from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import writers
from pipelines.corpus.token_units import TokenCounter
from pipelines.report.collect import ShardDomains
from sampling import LogHistogram, document_key
from sampling.token_budget import TokenCalibration, calibration_mask, check_half

SCORED_COLUMNS = writers.PARQUET_COLUMNS + ("split",)
# read back from pre-scored parquet; `document_key` only in a scored layout with --key-field
SCORE_COLUMNS = ("perplexity", "n_tokens", "document_key")


@dataclass
class SplitCounts:
    """What phase 1 saw of one split: records read, dead letters, scored documents (and their
    tokens and perplexity histogram)."""
    read: int = 0
    rejected: int = 0
    scored: int = 0
    tokens_scored: int = 0
    histogram: LogHistogram = field(default_factory=LogHistogram)
    # --target-tokens only: tokens in the budget's unit per perplexity bin (words), or the
    # GPT-2 calibration subsample (gpt2); None otherwise (pieces are in `histogram`)
    budget: LogHistogram | None = None
    calibration: TokenCalibration | None = None

    def merge(self, other: "SplitCounts") -> "SplitCounts":
        self.read += other.read
        self.rejected += other.rejected
        self.scored += other.scored
        self.tokens_scored += other.tokens_scored
        self.histogram.merge(other.histogram)
        if other.budget is not None:
            self.budget = other.budget.copy() if self.budget is None else self.budget.merge(other.budget)
        if other.calibration is not None:
            self.calibration = (self.calibration or TokenCalibration()).merge(other.calibration)
        return self


@dataclass
class ShardSummary:
    shard: InputShard
    scored_path: str  # the parquet that phase 2 reads
    scored_file: str | None  # relative to the output directory (None: the input is read again)
    rejected_file: str | None  # relative to the output directory (None: no dead letter)
    splits: dict = field(default_factory=dict)  # split -> SplitCounts
    report: ShardDomains | None = None  # the shard's top url hosts (pipelines.report)

    def counts(self, split: str) -> SplitCounts:
        if split not in self.splits:
            self.splits[split] = SplitCounts()
        return self.splits[split]


def iter_records(path: str, max_doc_bytes: int, extra_columns: tuple[str, ...] = (),
                 on_bytes=None, layout=None, carried: tuple[str, ...] = ()):
    """The reader for one file (mc4_io's generators): ("doc" | "rejected" | "count", item).
    `on_bytes(n)` hears of a JSON-lines file's bytes as they are read (parquet: not called);
    `layout`: another corpus's fields (pipelines.corpus_io.layouts; None: mC4's); `carried`:
    a pre-scored parquet's columns passed through to the sampled outputs (doc["carried"])."""
    if mc4_io.is_parquet(path):
        return mc4_io.iter_parquet_rows(path, max_doc_bytes, extra_columns, layout, carried)
    return mc4_io.iter_json_lines(path, max_doc_bytes, on_bytes, layout)


def scored_stream_schema(path: str, layout):
    """The scored parquet's schema for an input read with a non-mC4 layout (None for mC4):
    a parquet input's extras keep their types, read from its footer."""
    if mc4_io.custom_layout(layout) is None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    input_schema = None
    if mc4_io.is_parquet(path):
        try:
            with mc4_io.open_binary(path) as raw:
                input_schema = pq.ParquetFile(raw).schema_arrow
        except (pa.ArrowException, OSError, ValueError):
            input_schema = pa.schema([])  # unreadable: its rows are dead letters anyway
    types = writers._parquet_types()
    own = pa.schema([(c, types[c]) for c in SCORED_COLUMNS])
    return layouts.scored_schema(layout, own, input_schema)


def input_size(path: str) -> int:
    """Compressed bytes of an input file (for the progress line); 0 when it cannot be listed."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return int(FileSystems.match([path])[0].metadata_list[0].size_in_bytes)
    except Exception:  # noqa: BLE001 - progress only, never fail a shard for it
        return 0


def report_input_bytes(n: int) -> None:
    progress.add(input_bytes=n)


class InputProgress:
    """An input file's bytes as they are read, passed on to the progress line every
    REPORT_BYTES (each report rewrites a worker's progress file), so that a large shard moves
    the line while it is scored, not only when it is done."""
    REPORT_BYTES = 4 << 20

    def __init__(self):
        self.reported = self.pending = 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= self.REPORT_BYTES:
            report_input_bytes(self.pending)
            self.reported += self.pending
            self.pending = 0

    def finish(self, path: str) -> None:
        """The rest of the file's size (its listed size is what the line's total adds up)."""
        report_input_bytes(max(0, input_size(path) - self.reported))


def scored_row_problem(doc: dict) -> dict | None:
    """Pre-scored rows: a perplexity that is missing, not a number, not finite or not > 0, or a
    negative / non-integer n_tokens, is a dead letter (it would break the histogram)."""
    pp, n_tokens = doc.get("perplexity"), doc.get("n_tokens")
    problem = None
    if isinstance(pp, bool) or not isinstance(pp, (int, float)) or not math.isfinite(pp) or pp <= 0:
        problem = f"perplexity is {pp!r}"
    elif n_tokens is not None and (isinstance(n_tokens, bool) or not isinstance(n_tokens, int)
                                   or n_tokens < 0):
        problem = f"n_tokens is {n_tokens!r}"
    if problem is None:
        return None
    return dead_letters.make(doc["source"], doc["line"], dead_letters.BAD_PERPLEXITY, problem,
                             {k: doc.get(k) for k in ("text", "url", "timestamp", "perplexity",
                                                      "n_tokens", "split")},
                             split=doc["split"])


def letter_split(letter: dict, shard: InputShard) -> str:
    """A dead letter counts in the split its record was read in (a parquet `split` column
    wins over the file name)."""
    return letter.get("split") or shard.split


def _add_scored(summary: ShardSummary, docs: list[dict], counter: TokenCounter | None = None
                ) -> None:
    by_split: dict[str, list[dict]] = {}
    for doc in docs:
        by_split.setdefault(doc["split"], []).append(doc)
    for split, group in sorted(by_split.items()):
        tokens = np.array([d["n_tokens"] or 0 for d in group], dtype=np.int64)
        counts = summary.counts(split)
        pp = np.array([d["perplexity"] for d in group], dtype=np.float64)
        counts.histogram.add(pp, tokens=tokens)
        counts.scored += len(group)
        counts.tokens_scored += int(tokens.sum())
        if counter is not None and counter.unit != "pieces":
            _add_budget(counts, group, pp, tokens, counter)


def _add_budget(counts: SplitCounts, group: list[dict], pp, pieces, counter: TokenCounter) -> None:
    """Budget tokens of scored documents: words for all; GPT-2 on the calibration subsample
    (by document key, as the keep decision, so it is the same on any runner)."""
    texts = [d["text"] for d in group]
    if counter.unit == "words":
        if counts.budget is None:
            counts.budget = LogHistogram()
        counts.budget.add(pp, tokens=counter.count(texts, pieces))
        return
    if counts.calibration is None:
        counts.calibration = TokenCalibration()
    keys = [d.get("document_key") or document_key(d.get("url"), d["text"]) for d in group]
    chosen = np.flatnonzero(calibration_mask(keys))
    if len(chosen):
        counted = counter.count([texts[i] for i in chosen.tolist()], None)
        counts.calibration.add(pp[chosen], pieces[chosen], counted,
                               check_half([keys[i] for i in chosen.tolist()]))


def _no_letters_no_file(summary: ShardSummary, letters: writers.JsonlStream) -> None:
    """A shard without dead letters has no rejected file (JsonlStream wrote none): none listed."""
    if letters.count == 0:
        summary.rejected_file = None


def _shrunk(summary: ShardSummary) -> ShardSummary:
    if summary.report is not None:
        summary.report.shrink()  # only the shard's top hosts leave it
    return summary


class _ShardDoFn(beam.DoFn):
    def __init__(self, out_dir: str, max_doc_bytes: int, batch_size: int, report: bool = True,
                 token_unit: str | None = None):
        self.counter = TokenCounter(token_unit) if token_unit else None
        self.out_dir = out_dir
        self.report = report  # collect what report.html shows (--no-report: not)
        self.max_doc_bytes = max_doc_bytes
        self.batch_size = batch_size
        self.read_counter = Metrics.counter("ppsample", "read")
        self.files_counter = Metrics.counter("ppsample", "files")
        self.scored_counter = Metrics.counter("ppsample", "scored")
        self.tokens_counter = Metrics.counter("ppsample", "tokens_scored")

    def _reject(self, letter: dict, letters: writers.JsonlStream, summary: ShardSummary) -> None:
        dead_letters.count(letter)
        letters.write(letter)
        summary.counts(letter_split(letter, summary.shard)).rejected += 1

    def _count(self, item: mc4_io.FileCount, summary: ShardSummary) -> None:
        self.read_counter.inc(item.read)
        summary.counts(item.split).read += item.read

    def _batches(self, path: str, summary: ShardSummary, letters: writers.JsonlStream,
                 extra_columns: tuple[str, ...] = (), check=None, on_bytes=None, layout=None):
        """The file's documents in lists of up to batch_size, in file order. Its dead letters
        (and those of `check(doc) -> letter | None`) are written and its counts taken here."""
        batch = []
        for kind, item in iter_records(path, self.max_doc_bytes, extra_columns, on_bytes, layout):
            if kind == "doc":
                letter = check(item) if check else None
                if letter is not None:
                    self._reject(letter, letters, summary)
                    continue
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
            elif kind == "rejected":
                self._reject(item, letters, summary)
            else:
                self._count(item, summary)
        if batch:
            yield batch

    def _summary(self, *args) -> ShardSummary:
        return ShardSummary(*args, report=ShardDomains() if self.report else None)

    def _scored(self, summary: ShardSummary, docs: list[dict]) -> None:
        _add_scored(summary, docs, self.counter)
        if summary.report is not None:
            summary.report.add_docs(docs)
        self.scored_counter.inc(len(docs))
        self.tokens_counter.inc(sum(d["n_tokens"] or 0 for d in docs))
        progress.add(scored=len(docs))
        worker_watchdog.hold_for_test("scored")


class ScoreShard(writers.ClosesAtBundleEnd, _ShardDoFn):
    """InputShard -> OUT/{stem}.parquet (text, url, timestamp, perplexity, n_tokens, split, in
    input order), OUT/rejected/{stem}.jsonl, and one ShardSummary."""

    def __init__(self, model_source: str, preset: str | None, handle: shared.Shared | None,
                 out_dir: str, max_doc_bytes: int, batch_size: int, report: bool = True,
                 layout=None, token_unit: str | None = None):
        super().__init__(out_dir, max_doc_bytes, batch_size, report, token_unit)
        self.model_source = model_source
        self.preset = preset
        self.layout = mc4_io.custom_layout(layout)
        self._shared = handle or shared.Shared()

    def setup(self):
        self._model = load_shared_model(self._shared, self.model_source, self.preset)

    def process(self, shard: InputShard):
        scored_path = writers.join(self.out_dir, shard.scored_name)
        summary = self._summary(shard, scored_path, shard.scored_name, shard.rejected_name)
        self._schema = scored_stream_schema(shard.path, self.layout)
        table = writers.ParquetStream(scored_path, SCORED_COLUMNS, schema=self._schema)
        try:
            with writers.JsonlStream(writers.join(self.out_dir, shard.rejected_name)) as letters:
                read = InputProgress()
                for batch in self._batches(shard.path, summary, letters, on_bytes=read,
                                           layout=self.layout):
                    self._score(batch, table, letters, summary)
        except BaseException:
            table.abort()
            raise
        self._closing.add(table)  # its last row groups compress while the next shard is scored
        _no_letters_no_file(summary, letters)
        self.files_counter.inc()
        read.finish(shard.path)
        yield _shrunk(summary)

    def _score(self, batch, table, letters, summary) -> None:
        result = self._model.score([doc["text"] for doc in batch])
        scored = []
        for doc, perplexity, n_tokens in zip(batch, result.perplexity.tolist(),
                                             result.n_tokens.tolist()):
            if not (math.isfinite(perplexity) and perplexity > 0):
                # the model says why (cc_net presets: text that normalises to nothing)
                reason = self._model.unscorable_reason(doc["text"]) or dead_letters.BAD_PERPLEXITY
                self._reject(dead_letters.make(
                    doc["source"], doc["line"], reason,
                    f"model gave perplexity {perplexity!r}",
                    {k: doc.get(k) for k in ("text", "url", "timestamp")}, split=doc["split"]),
                    letters, summary)
                continue
            doc["perplexity"] = perplexity
            doc["n_tokens"] = int(n_tokens)
            if self._schema is not None:
                layouts.flatten_extras(doc, self._schema)
            scored.append(doc)
        table.write(scored)
        self._scored(summary, scored)


class CheckShard(_ShardDoFn):
    """Pre-scored parquet (sample, stats) -> OUT/rejected/{stem}.jsonl and one ShardSummary;
    phase 2 reads the input file itself again."""

    def process(self, shard: InputShard):
        summary = self._summary(shard, shard.path, None, shard.rejected_name)
        with writers.JsonlStream(writers.join(self.out_dir, shard.rejected_name)) as letters:
            for good in self._batches(shard.path, summary, letters, SCORE_COLUMNS,
                                      check=scored_row_problem):
                for item in good:
                    item["perplexity"] = float(item["perplexity"])
                self._scored(summary, good)
        _no_letters_no_file(summary, letters)
        self.files_counter.inc()
        report_input_bytes(input_size(shard.path))
        yield _shrunk(summary)
