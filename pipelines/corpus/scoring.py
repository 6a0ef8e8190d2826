"""Scoring documents with the KenLM perplexity model inside Beam.

The model is loaded once per worker process (DoFn.setup through `apache_beam.utils.shared`),
so all DoFn instances and threads of a process share one memory-mapped copy; documents are
scored in batches through `PerplexityModel.score`.
"""
from __future__ import annotations

import math

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipelines.corpus_io import dead_letters
from pipelines import progress


class _SharedModel:
    """kenlm.Model cannot be weak-referenced, and Shared keeps a weak reference to what it
    holds: this plain holder can be."""

    def __init__(self, model):
        self.model = model


def load_shared_model(handle: shared.Shared, source: str, preset: str | None):
    def load():
        from lm_models.perplexity import PerplexityModel

        return _SharedModel(PerplexityModel.load(source, preset=preset))

    return handle.acquire(load, tag=f"{source}|{preset}").model


class ScoreBatch(beam.DoFn):
    """list[document] -> list[scored document] (+ `perplexity`, `n_tokens`); a document the
    model cannot give a finite perplexity goes to "rejected" rather than poisoning the histogram."""

    def __init__(self, model_source: str, preset: str | None, handle: shared.Shared | None = None):
        self.model_source = model_source
        self.preset = preset
        self._shared = handle or shared.Shared()
        self.scored = Metrics.counter("ppsample", "scored")
        self.tokens = Metrics.counter("ppsample", "tokens_scored")
        self.batch_sizes = Metrics.distribution("ppsample", "score_batch_size")

    def setup(self):
        self._model = load_shared_model(self._shared, self.model_source, self.preset)

    def process(self, batch: list[dict]):
        result = self._model.score([doc["text"] for doc in batch])
        self.batch_sizes.update(len(batch))
        scored = []
        for doc, perplexity, n_tokens in zip(batch, result.perplexity, result.n_tokens):
            perplexity = float(perplexity)
            if not (math.isfinite(perplexity) and perplexity > 0):
                letter = dead_letters.make(doc["source"], doc["line"], dead_letters.BAD_PERPLEXITY,
                                           f"model gave perplexity {perplexity!r}",
                                           {k: doc.get(k) for k in ("text", "url", "timestamp")},
                                           split=doc["split"])
                dead_letters.count(letter)
                yield beam.pvalue.TaggedOutput("rejected", letter)
                continue
            self.tokens.inc(int(n_tokens))
            scored.append({**doc, "perplexity": perplexity, "n_tokens": int(n_tokens)})
        self.scored.inc(len(scored))
        progress.add(scored=len(scored))
        if scored:
            yield scored


class ScoreDocuments(beam.PTransform):
    """batches of documents -> batches of scored documents (main) and dead letters
    ("rejected")."""

    def __init__(self, model_source: str, preset: str | None = None,
                 handle: shared.Shared | None = None):
        super().__init__()
        self.model_source = model_source
        self.preset = preset
        self.handle = handle

    def expand(self, batches):
        score = ScoreBatch(self.model_source, self.preset, self.handle)
        return batches | "Score" >> beam.ParDo(score).with_outputs("rejected", main="scored")


class DescribeModel(beam.DoFn):
    """Emits `PerplexityModel.describe()` from a worker, so the driver never has to download a
    multi-GB model from gs:// just to record what it was. Give it the handle of the
    ScoreDocuments of the same pipeline so a worker loads the model once for both."""

    def __init__(self, model_source: str, preset: str | None, handle: shared.Shared | None = None):
        self.model_source = model_source
        self.preset = preset
        self._shared = handle or shared.Shared()

    def setup(self):
        self._model = load_shared_model(self._shared, self.model_source, self.preset)

    def process(self, _):
        yield self._model.describe()
