"""Scoring documents with the KenLM perplexity model inside Beam.

The model is loaded once per worker process (DoFn.setup through `apache_beam.utils.shared`),
so all DoFn instances and threads of a process share one memory-mapped copy; the per-shard
scorer (pipelines.corpus.phase1.ScoreShard) scores batches through
`PerplexityModel.score`.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.utils import shared



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


class DescribeModel(beam.DoFn):
    """Emits `PerplexityModel.describe()` from a worker, so the driver never has to download a
    multi-GB model from gs:// just to record what it was. Give it the handle of the
    ScoreShard of the same pipeline so a worker loads the model once for both."""

    def __init__(self, model_source: str, preset: str | None, handle: shared.Shared | None = None):
        self.model_source = model_source
        self.preset = preset
        self._shared = handle or shared.Shared()

    def setup(self):
        self._model = load_shared_model(self._shared, self.model_source, self.preset)

    def process(self, _):
        yield self._model.describe()
