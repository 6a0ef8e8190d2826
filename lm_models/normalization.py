"""Text normalisation of the perplexity presets, equal to cc_net's `text_normalizer.normalize`.

cc_net (facebookresearch/cc_net, `cc_net/text_normalizer.py`) normalises a document with, in order:
strip; lower(); strip accents (NFD, drop category Mn); every `\\d` -> "0"; its Unicode punctuation
map; delete control characters U+0000-U+001F and U+007F-U+009F. Done literally, that is five
Python passes over every character, the slowest part of scoring.

Everything after `lower()` acts on one character at a time, so it is folded into a single
table over all code points, applied at C speed (see `Normalizer`). `strip()` and `lower()`
stay Python's own: `lower()` is not per character (final sigma depends on its neighbours, and
U+0130 lowers to two characters). The one place where NFD is not per character is canonical
reordering of combining marks: two non-Mn marks with different combining classes (a few musical
symbols, e.g. U+1D16D then U+1D165) swap places. Text containing such a character takes the
literal path, so the result is exact for every input.

Building the tables scans every code point (~0.5 s, in every worker process); the result is
kept in a small JSON file under the model cache (`$PPSAMPLE_CACHE/normalization/`), named by a
hash of this module's source, the Unicode database version and the options, so a process
that finds it loads the tables in milliseconds, and any change that could alter them misses.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import sys
import unicodedata
from dataclasses import astuple, dataclass
from pathlib import Path

# cc_net's UNICODE_PUNCT, verbatim (note "１" -> '"': unreachable with digits on, kept for fidelity).
UNICODE_PUNCT: dict[str, str] = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"',
    "１": '"', "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":",
    "？": "?", "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ",
    "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]",
    "％": "%", "►": "-",
}
NON_PRINTING_CHARS = frozenset(chr(c) for c in [*range(0, 32), *range(127, 160)])
_DIGIT_RE = re.compile(r"\d")


@dataclass(frozen=True)
class NormalizationOptions:
    """cc_net's `normalize(line, accent, case, numbers, punct)` switches (punct: 0 keep, 1 map)."""

    lower_case: bool = True
    remove_accents: bool = True
    normalize_numbers: bool = True
    map_punctuation: bool = True


CCNET = NormalizationOptions()
EDUGP = NormalizationOptions(lower_case=False, remove_accents=False)


def _strip_accents_literal(text: str) -> str:
    nfd = unicodedata.normalize("NFD", text)
    return "".join(c for c in nfd if unicodedata.category(c) != "Mn")


def normalize_literal(text: str, options: NormalizationOptions = CCNET) -> str:
    """cc_net's algorithm step by step (the slow reference; `normalize` is the fast equal)."""
    text = text.strip()
    if not text:
        return text
    if options.lower_case:
        text = text.lower()
    if options.remove_accents:
        text = _strip_accents_literal(text)
    if options.normalize_numbers:
        text = _DIGIT_RE.sub("0", text)
    if options.map_punctuation:
        text = "".join(UNICODE_PUNCT.get(c, c) for c in text)
    return "".join(c for c in text if c not in NON_PRINTING_CHARS)


def _after_lower(char: str, options: NormalizationOptions) -> str:
    """What the per-character steps (accents, digits, punctuation, control) make of `char`."""
    out = _strip_accents_literal(char) if options.remove_accents else char
    if options.normalize_numbers:
        out = _DIGIT_RE.sub("0", out)
    if options.map_punctuation:
        out = "".join(UNICODE_PUNCT.get(c, c) for c in out)
    return "".join(c for c in out if c not in NON_PRINTING_CHARS)


def _may_change(cp: int, char: str, options: NormalizationOptions) -> bool:
    # Cheap filter so building the table touches only the ~10% of code points that can change.
    if cp < 160 or char in UNICODE_PUNCT:
        return True
    if options.normalize_numbers and char.isdecimal():  # \d in `re` is exactly isdecimal()
        return True
    if options.remove_accents:
        return unicodedata.category(char) == "Mn" or not unicodedata.is_normalized("NFD", char)
    return False


def _build_translation_table(options: NormalizationOptions) -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:  # lone surrogates: NFD would fail; str.translate leaves them
            continue
        char = chr(cp)
        if _may_change(cp, char, options):
            out = _after_lower(char, options)
            if out != char:
                table[cp] = out
    return table


@functools.lru_cache(maxsize=None)
def translation_table(options: NormalizationOptions) -> dict[int, str]:
    """code point -> replacement ("" deletes) for every code point the steps after lower() change."""
    cached = _load_cached("table", options)
    if cached is not None:
        return {int(cp): out for cp, out in cached.items()}
    table = _build_translation_table(options)
    _store_cached("table", options, {str(cp): out for cp, out in table.items()})
    return table


# --- the tables' cache ------------------------------------------------------------------------

def cache_dir() -> Path:
    """Beside the downloaded models (lm_models.model_sources: $PPSAMPLE_CACHE)."""
    root = os.environ.get("PPSAMPLE_CACHE", Path.home() / ".cache" / "ppsample" / "models")
    return Path(root) / "normalization"


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def cache_path(kind: str, options: NormalizationOptions | None) -> Path:
    """The file one table is kept in; every input the table depends on is in its name."""
    key = json.dumps([kind, astuple(options) if options else None, _source_digest(),
                      unicodedata.unidata_version, sys.maxunicode])
    return cache_dir() / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _load_cached(kind: str, options: NormalizationOptions | None):
    try:
        with open(cache_path(kind, options), encoding="utf-8") as f:
            return json.load(f)["value"]
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or damaged: rebuild
        return None


def _store_cached(kind: str, options: NormalizationOptions | None, value) -> None:
    """Written to a temporary name and renamed: a concurrent reader sees the whole file or no
    file. A cache that cannot be written (read-only home) only costs the rebuild next time."""
    path = cache_path(kind, options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # surrogate escapes only: the values are whatever NFD and the maps produce
            json.dump({"value": value}, f, ensure_ascii=True)
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except (OSError, UnboundLocalError):
            pass


def _reorders_under_nfd(char: str) -> bool:
    # A non-Mn combining mark survives accent stripping and may be moved by canonical reordering.
    return any(
        unicodedata.combining(c) and unicodedata.category(c) != "Mn"
        for c in unicodedata.normalize("NFD", char)
    )


@functools.lru_cache(maxsize=None)
def _literal_path_chars() -> frozenset[str]:
    cached = _load_cached("literal", None)
    if cached is not None:
        return frozenset(chr(cp) for cp in cached)
    chars = _build_literal_path_chars()
    _store_cached("literal", None, sorted(ord(c) for c in chars))
    return chars


def _build_literal_path_chars() -> frozenset[str]:
    return frozenset(
        chr(cp) for cp in range(0x300, sys.maxunicode + 1)
        if not 0xD800 <= cp <= 0xDFFF
        and (unicodedata.combining(chr(cp)) or not unicodedata.is_normalized("NFD", chr(cp)))
        and _reorders_under_nfd(chr(cp))
    )


def _char_class(code_points: list[int]) -> str:
    """A regex character class body from sorted code points, as ranges."""
    parts, i = [], 0
    while i < len(code_points):
        j = i
        while j + 1 < len(code_points) and code_points[j + 1] == code_points[j] + 1:
            j += 1
        a, b = chr(code_points[i]), chr(code_points[j])
        parts.append(re.escape(a) if i == j else f"{re.escape(a)}-{re.escape(b)}")
        i = j + 1
    return "".join(parts)


_LITERAL = object()  # marks characters that send the text down the literal path


class Normalizer:
    """Callable `text -> normalised text`, equal to `normalize_literal(text, options)`.

    After strip() and lower(), the text is scanned for characters the table changes; each
    distinct one is replaced everywhere with one `str.replace` (C speed). Web text holds a few
    dozen distinct such characters (accented letters, digits, newlines, quotes) among thousands,
    which makes this ~2x faster than `str.translate`, whose per-character lookup goes through
    Python objects. Replacing in any order is exact because every replacement is a fixed point
    of the table (tested). The regex class holds the Basic Multilingual Plane characters of the
    table plus all astral code points (a class with many astral ranges is scanned linearly by
    `re`); astral characters are looked up one by one.
    """

    def __init__(self, options: NormalizationOptions = CCNET):
        self.options = options
        self._table = translation_table(options)
        replacements: dict[str, object] = {chr(cp): out for cp, out in self._table.items()}
        if options.remove_accents:
            for char in _literal_path_chars():
                replacements[char] = _LITERAL
        self._replacements = replacements
        bmp = sorted(ord(c) for c in replacements if ord(c) < 0x10000)
        self._find = re.compile(f"[{_char_class(bmp)}\U00010000-\U0010FFFF]").search

    def __call__(self, text: str) -> str:
        out = text.strip()
        if self.options.lower_case:
            out = out.lower()
        find, replacements = self._find, self._replacements
        pos = 0
        while (match := find(out, pos)) is not None:
            char = match.group()
            replacement = replacements.get(char)
            if replacement is None:  # an astral character the table leaves alone
                pos = match.end()
            elif replacement is _LITERAL:
                # Rare: non-Mn combining marks, which canonical reordering may move.
                return normalize_literal(text, self.options)
            else:
                pos = match.start()  # everything before it is already final
                out = out.replace(char, replacement)
        return out

    def __reduce__(self):
        return (Normalizer, (self.options,))


def normalize(text: str, options: NormalizationOptions = CCNET) -> str:
    return _normalizer(options)(text)


@functools.lru_cache(maxsize=None)
def _normalizer(options: NormalizationOptions) -> Normalizer:
    return Normalizer(options)
