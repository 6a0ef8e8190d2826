"""A document's perplexity under a KenLM n-gram model with a SentencePiece tokenizer.

    from lm_models.perplexity import PerplexityModel
    model = PerplexityModel.load("es-reference")        # preset from the model's model.json
    model.perplexity("Hola, ¿qué tal?")                 # float
    model.score(["doc one", "doc two"])                 # ScoreResult(perplexity, n_tokens)

Presets (how text becomes KenLM tokens):

- `ccnet`  exactly cc_net's mine pipeline: `text_normalizer.normalize` on the whole document
           (strip, lowercase, strip accents, digits -> 0, punctuation map, delete control
           characters, so newlines vanish and the document is one line), SentencePiece pieces
           joined by spaces, KenLM log10 score with <s> and </s>, length = pieces + 1.
- `edugp`  the same with case and accents kept (how the edugp/kenlm Hub models were trained).
- `bertin` BERTIN's loop: raw text, no normalisation, no SentencePiece; every `\\n`-separated line
           scored on its own, length = whitespace-separated words + 1.
- `ccnet-lines`, `edugp-lines` (non-default variants): line breaks kept; every `\\n`-separated
           line is normalised and tokenised with SentencePiece and scored on its own, then the
           document's scores and lengths are summed. (Not cc_net's DocLM with normalize=True:
           that mode normalises raw lines but never runs SentencePiece, so it scores words.)

perplexity = 10 ** (-sum(log10 scores) / sum(lengths)), never rounded.

Text that normalises to nothing (no SentencePiece piece: empty, whitespace, control characters
only) is where the references part ways, and each preset follows its own:
- ccnet, ccnet-lines: no perplexity. cc_net's DocLM skips a document whose tokenised text is
  empty and writes no perplexity field; `score` gives NaN and n_tokens 0, `perplexity` raises
  ValueError, and `unscorable_reason` says "empty_after_normalization" (the pipeline's dead
  letter reason). For ccnet-lines: when every line is empty.
- edugp, edugp-lines, bertin: one empty line, `<s> </s>`, length 1, perplexity
  10 ** -log10 P(</s> | <s>) (edugp's get_perplexity and BERTIN's loop both score "" this way).
Text with lone surrogates (invalid Unicode, e.g. from a JSON "\\ud800" escape) cannot be
tokenised: `perplexity` raises ValueError, and `score`/`perplexities` give that document NaN and
n_tokens 0 so that a batch survives it (`unscorable_reason`: "invalid_utf8").
"""
from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

from lm_models import model_sources
from lm_models.file_hash import remembered_sha256, sha256_file
from lm_models.normalization import CCNET, EDUGP, NormalizationOptions, Normalizer
from sampling import libm

DEFAULT_MODEL = "es-reference"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    name: str
    normalization: NormalizationOptions | None  # None: raw text
    sentencepiece: bool
    per_line: bool  # True: each `\n`-separated line is normalised, tokenised and scored alone
    description: str
    # False (cc_net): a document with no SentencePiece piece gets no perplexity (NaN)
    scores_empty: bool = True


PRESETS: dict[str, Preset] = {
    p.name: p for p in [
        Preset("ccnet", CCNET, True, False,
               "cc_net: normalise whole document (lower, no accents, digits 0, punct map), "
               "SentencePiece, one line", scores_empty=False),
        Preset("edugp", EDUGP, True, False,
               "edugp/kenlm: cc_net normalisation keeping case and accents, SentencePiece"),
        Preset("bertin", None, False, True,
               "BERTIN: raw text, no SentencePiece, every line scored, length = words + 1"),
        Preset("ccnet-lines", CCNET, True, True,
               "ccnet with line breaks kept: every line normalised and scored alone",
               scores_empty=False),
        Preset("edugp-lines", EDUGP, True, True,
               "edugp with line breaks kept: every line normalised and scored alone"),
    ]
}


class ScoreResult(NamedTuple):
    perplexity: np.ndarray  # float64
    n_tokens: np.ndarray  # int64: KenLM length, tokens + 1 per scored line


def get_preset(name: str) -> Preset:
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


@functools.lru_cache(maxsize=8)
def _kenlm_model(path: str):
    import kenlm

    # The default load method memory-maps a binary model (MAP_SHARED), so every process on a
    # machine shares one copy of its pages; an ARPA file is parsed into private memory.
    return kenlm.Model(path)


@functools.lru_cache(maxsize=8)
def _sentencepiece(path: str):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=path)


_SURROGATE = re.compile("[\ud800-\udfff]").search


def _check_text(text: Any, where: str) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise TypeError(f"{where} expects str, got {type(text).__name__}; "
                        "decode it first, e.g. text.decode('utf-8')")
    raise TypeError(f"{where} expects str, got {type(text).__name__}")


class PerplexityModel:
    """KenLM + SentencePiece + preset. Picklable: pickles as (source, preset) and reloads."""

    def __init__(self, files: model_sources.ModelFiles, preset: str):
        self.files = files
        self.source = files.source
        self.preset = preset
        self._preset = get_preset(preset)
        self._normalize = Normalizer(self._preset.normalization) \
            if self._preset.normalization else None
        if self._preset.sentencepiece and files.sp_path is None:
            raise model_sources.ModelSourceError(
                f"model source {files.display_source!r}: preset {preset!r} needs a SentencePiece model "
                f"({files.lm_path.name.split('.')[0]}.sp.model) beside {files.lm_path.name}")
        self._lm = _kenlm_model(str(files.lm_path))
        self._sp = _sentencepiece(str(files.sp_path)) if self._preset.sentencepiece else None
        self._description: dict[str, Any] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, source: str | os.PathLike = DEFAULT_MODEL, preset: str | None = None
             ) -> "PerplexityModel":
        """Load from a bundled name, local directory, fsspec URL or hf://owner/repo/subdir.

        `preset=None` takes the preset recorded in the model's model.json; a model without
        model.json (cc_net / edugp layout) needs an explicit preset.
        """
        if preset is not None:
            get_preset(preset)
        files = model_sources.resolve(source)
        recorded = (files.model_json or {}).get("preset")
        if preset is None:
            if recorded is None:
                raise ValueError(
                    f"model source {files.display_source!r} has no model.json recording its preset; "
                    f"pass preset= (one of {', '.join(PRESETS)}), e.g. --preset ccnet for "
                    "cc_net models, edugp for edugp/kenlm models")
            preset = recorded
        elif recorded is not None and preset.split("-")[0] != str(recorded).split("-")[0]:
            log.warning("model %s was trained with preset %r but is scored with %r",
                        files.display_source, recorded, preset)
        return cls(files, get_preset(preset).name)

    def __reduce__(self):
        return (PerplexityModel.load, (self.source, self.preset))

    def __repr__(self) -> str:
        return f"PerplexityModel(source={self.files.display_source!r}, preset={self.preset!r})"

    # ------------------------------------------------------------------ scoring

    # Texts are tokenised in chunks: one SentencePiece call per chunk saves per-call overhead,
    # and a bounded chunk keeps few piece lists alive (fewer objects for the garbage collector).
    chunk_size = 256

    def _lines_log_score(self, lines: list[str]) -> tuple[list[float], list[int]]:
        """KenLM log10 score (with <s>, </s>) and length of each line."""
        if self._normalize is not None:
            normalize = self._normalize
            lines = [normalize(line) for line in lines]
        lm_score = self._lm.score
        if self._sp is None:
            # BERTIN's length: Python's str.split words + 1 (KenLM itself splits on ASCII space).
            return [lm_score(line) for line in lines], [len(line.split()) + 1 for line in lines]
        scores, lengths = [], []
        # Pieces as UTF-8 bytes go to KenLM as they are: no decoding to str and re-encoding.
        for pieces in self._sp.encode(lines, out_type=bytes, num_threads=1):
            scores.append(lm_score(b" ".join(pieces)))
            lengths.append(len(pieces) + 1)
        return scores, lengths

    def score(self, texts: Iterable[str]) -> ScoreResult:
        """Perplexity (float64) and KenLM length (int64) of each text, in order."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("score/perplexities expect a list of str; for one text use "
                            "perplexity(text)")
        texts = [_check_text(t, "PerplexityModel.score") for t in texts]
        log_score = np.zeros(len(texts), dtype=np.float64)
        length = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), self.chunk_size):
            chunk = texts[start:start + self.chunk_size]
            try:
                self._score_chunk(chunk, start, log_score, length)
            except (UnicodeError, TypeError):
                # SentencePiece / KenLM refuse text with lone surrogates (not valid Unicode):
                # such a document gets NaN and n_tokens 0; the rest of the chunk is scored.
                for i, text in enumerate(chunk, start):
                    if _SURROGATE(text):
                        log_score[i], length[i] = np.nan, 0
                    else:
                        self._score_chunk([text], i, log_score, length)
        if not self._preset.scores_empty:
            # Every scored line has length pieces + 1, so a document whose lines hold no piece
            # has length == its line count (surrogate documents have length 0 and stay NaN).
            lines = np.array([t.count("\n") + 1 if self._preset.per_line else 1 for t in texts],
                             dtype=np.int64)
            empty = length == lines
            log_score[empty], length[empty] = np.nan, 0
        with np.errstate(invalid="ignore"):
            return ScoreResult(libm.pow10(-log_score / length), length)

    def unscorable_reason(self, text: str) -> str | None:
        """Why `score` gives this text NaN: "invalid_utf8" (lone surrogates),
        "empty_after_normalization" (a ccnet preset and no SentencePiece piece), or None."""
        text = _check_text(text, "PerplexityModel.unscorable_reason")
        if _SURROGATE(text):
            return "invalid_utf8"
        if not self._preset.scores_empty and self.score([text]).n_tokens[0] == 0:
            return "empty_after_normalization"
        return None

    def _score_chunk(self, chunk: list[str], start: int, log_score: np.ndarray,
                     length: np.ndarray) -> None:
        if not self._preset.per_line:  # normalisation deleted every newline: one line
            scores, lengths = self._lines_log_score(chunk)
            log_score[start:start + len(chunk)] = scores
            length[start:start + len(chunk)] = lengths
            return
        owner, lines = [], []
        for i, text in enumerate(chunk, start):
            doc_lines = text.split("\n")
            owner.extend([i] * len(doc_lines))
            lines.extend(doc_lines)
        scores, lengths = self._lines_log_score(lines)
        log_score[start:start + len(chunk)] = 0.0
        length[start:start + len(chunk)] = 0
        # Sum line by line in document order, as the reference loops do.
        for i, line_score, line_length in zip(owner, scores, lengths):
            log_score[i] += line_score
            length[i] += line_length

    def perplexities(self, texts: Iterable[str]) -> np.ndarray:
        return self.score(texts).perplexity

    def perplexity(self, text: str) -> float:
        """Perplexity of one text; ValueError when it holds lone surrogates (invalid Unicode) or,
        with a ccnet preset, normalises to nothing (cc_net gives such a text no perplexity)."""
        text = _check_text(text, "PerplexityModel.perplexity")
        if (bad := _SURROGATE(text)) is not None:
            raise ValueError(f"text is not valid Unicode: lone surrogate U+{ord(bad.group()):04X} "
                             f"at position {bad.start()} cannot be encoded as UTF-8")
        result = self.score([text])
        if result.n_tokens[0] == 0:
            raise ValueError(f"text normalises to nothing under preset {self.preset!r}: cc_net "
                             "gives it no perplexity (edugp and bertin score it as an empty line)")
        return float(result.perplexity[0])

    # ------------------------------------------------------------------ provenance

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: source, preset, files (size, sha256), model.json content; no
        local path (where the bundled model or a download cache lives says nothing about the
        model, and stats.json and the dataset card travel to other machines)."""
        if self._description is None:
            files = {}
            for path in [self.files.lm_path, self.files.sp_path]:
                if path is None:
                    continue
                entry = {"size": path.stat().st_size, "sha256": _sha256(path)}
                if path.name in self.files.urls:
                    entry["url"] = self.files.urls[path.name]
                files[path.name] = entry
            self._description = {
                "source": self.files.display_source,  # never a presigned URL's secret
                "preset": self.preset,
                "preset_description": self._preset.description,
                "files": files,
                "model_json": self.files.model_json,
            }
        return self._description


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so a rewritten file is hashed again; across
    # processes the record under the model cache spares re-reading a local multi-GB model
    # (a 3.3 GB file costs ~2 CPU s per run, 5 % of a 100k-document run)
    return remembered_sha256(path, model_sources.cache_root() / "hashes", sha256_file)


def _sha256(path: Path) -> str:
    # A downloaded model's hash is recorded beside it: a multi-GB file is not read again.
    recorded = model_sources.recorded_sha256(path)
    if recorded is not None:
        return recorded
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)
