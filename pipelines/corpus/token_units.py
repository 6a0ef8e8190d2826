"""Tokens in the unit a token budget is planned in (`--target-tokens N --token-unit U`):

- `gpt2`   GPT-2 BPE, the GPT-J finetune's tokenizer (pipelines.finetune.prepare). Counting it for
           every document costs a large share of scoring (benchmarks/bench_token_budget.py), so
           phase 1 counts it only on a deterministic 2 % subsample and the plan estimates the
           rest from KenLM's pieces (sampling.token_budget, error measured on a held-out half);
           the kept documents' tokens are that estimate too (`kept_tokens_counted: false`);
           prepare-finetune counts them exactly when it tokenises.
- `pieces` KenLM's n_tokens (SentencePiece pieces + 1 per scored line), free after scoring.
- `words`  whitespace-separated words, counted for every document.
"""
from __future__ import annotations

import numpy as np

UNITS = ("gpt2", "pieces", "words")
ESTIMATED_UNITS = ("gpt2",)  # counted on a subsample and estimated for the rest


class TokenCounter:
    def __init__(self, unit: str):
        if unit not in UNITS:
            raise ValueError(f"token unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.unit = unit
        self._tokenizer = None

    def count(self, texts: list[str], pieces) -> np.ndarray:
        """Tokens of each text in this unit (int64); `pieces`: KenLM's n_tokens of the texts."""
        if self.unit == "pieces":
            return np.asarray([p or 0 for p in pieces], dtype=np.int64)
        if self.unit == "words":
            return np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
        if not texts:
            return np.zeros(0, dtype=np.int64)
        if self._tokenizer is None:
            from pipelines.finetune.prepare import DocumentTokenizer

            self._tokenizer = DocumentTokenizer("gpt2")
        return np.fromiter((len(ids) for ids in self._tokenizer.encode_batch(list(texts))),
                           dtype=np.int64, count=len(texts))

    def __getstate__(self):
        return {"unit": self.unit}

    def __setstate__(self, state):
        self.__init__(state["unit"])
