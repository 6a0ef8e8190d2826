"""Published per-language perplexity models, and what a language changes in a run.

Two families of KenLM 5-gram + SentencePiece models trained on Wikipedia are published per
language, in the layout lm_models.model_sources loads as it is (`xx.arpa.bin` + `xx.sp.model`):

- `ccnet`: cc_net's models (Wenzek et al., 2020), at http://dl.fbaipublicfiles.com/cc_net/lm/
  ({lang}.arpa.bin, {lang}.sp.model), for the 48 languages of cc_net's Makefile (`langs?=` and
  its `dl_lm` target, github.com/facebookresearch/cc_net). No size or sha256 is published.
  Preset `ccnet` (cc_net's own normalisation). cc_net also publishes the percentiles of its
  documents' perplexities per language (cc_net/data/cutoff.csv; its PerplexityBucket cuts
  head / middle / tail at the 30th and 60th percentiles): `ccnet_percentiles` holds the rows
  25, 30, 50, 60, 75 of that table (lm_models/ccnet_cutoffs.csv; values are perplexities
  under the language's cc_net model, rounded to 10 as cc_net wrote them).
- `edugp`: edugp/kenlm on the Hugging Face Hub (wikipedia/{lang}.arpa.bin, {lang}.sp.model),
  pinned to revision 13451d2f73e80e70da91c6b6f8b7bcb6f11b76cb; the sha256 of every
  `.arpa.bin` below is the one the Hub's Git LFS pointer records (huggingface.co/edugp/kenlm,
  "Git LFS Details"), exact sizes only where the pointer was read. Preset `edugp`.

A registry model is named `FAMILY:LANG` (`ccnet:fr`, `edugp:fr`) wherever a model source is
accepted: model_sources resolves the name to the URLs below with the published sha256 as the
expected hash, so a file that does not match is refused when it is downloaded, on the launcher
or on a worker, before any document is scored. `PPSAMPLE_MODEL_REGISTRY_URL` (e.g.
`http://127.0.0.1:8000`) replaces the scheme and host of every registry URL, keeping the hosts'
paths: a mirror, or the tests' local stand-in server.
"""
from __future__ import annotations

import csv
import os
import re
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lm_models.errors import ModelError

REGISTRY_URL_ENV = "PPSAMPLE_MODEL_REGISTRY_URL"
FAMILIES = ("ccnet", "edugp")
CCNET_BASE = "http://dl.fbaipublicfiles.com/cc_net/lm"
EDUGP_REVISION = "13451d2f73e80e70da91c6b6f8b7bcb6f11b76cb"
EDUGP_BASE = f"https://huggingface.co/edugp/kenlm/resolve/{EDUGP_REVISION}/wikipedia"

CCNET_LANGUAGES = tuple(
    "af,ar,az,be,bg,bn,ca,cs,da,de,el,en,es,et,fa,fi,fr,gu,he,hi,hr,hu,hy,id,is,it,ja,ka,kk,km,kn,"
    "ko,lt,lv,mk,ml,mn,mr,my,ne,nl,no,pl,pt,ro,ru,uk,zh".split(","))

# edugp/kenlm wikipedia/{lang}.arpa.bin: (sha256 from the LFS pointer, exact size or None).
EDUGP_LM_FILES: dict[str, tuple[str, int | None]] = {
    "ar": ("e5ad5fe3355e9775d0045ac38ee24ef585b373c99350bc612e5bda9cbdd701fe", None),
    "bn": ("9d2148db7af960f9468adc5c0b2c39f75d969b816014098c45de93517ac1c555", None),
    "ca": ("2ece1e503d4b44409069ea9c5c5125b74792b575143169e08cf9a27248f9a78e", None),
    "en": ("04923fccbb4e63005c40f01d66112659416de01accd80d16e366a592289ee07a", None),
    "es": ("26964ff8185eb105021fc0e9eaa0a1de590c4a12f8aa3fe12112b29d42281cf3", 3828418653),
    "eu": ("2d04c4d1233b40044e2facc978987ecd4a6d4f84032f2af3f85f7079676fa08b", None),
    "fr": ("301c82d52a8e34f63937afc12970794c8783244c8c0b085a8bbfb0d54dcb9374", None),
    "hi": ("f76e9238ccab63fc175ed40786888c0078cc7bb1de9519536a89473a60a17f8d", None),
    "id": ("6e099b6216a558d6c6f6108895e2e13fbc6ffd00b59791d16d6a5f85103ac0be", None),
    "pt": ("ad7241c4b11d902fa092506b731f61e5f67177897c2598b750d1a2e519be87ad", None),
    "sw": ("5245f3df623fad2d6299b3f825b0b4c95f4ca74048827b532991a2381cbafb53", None),
    "ur": ("cda435e6d899daa71aba3cffccd0558ef9eb8a00f2b9ae8ba7b69326dc535511", None),
    "vi": ("983460dc00aaaec7325139cd87e89e937fcf5ac0cba4b16f23241fcc52d3c0ca", None),
    "zh": ("240f156d70a4b04cb078b4f127ae0103378454143a77442c18e5e24b93404e56", None),
}

# mC4 (allenai/c4 on the Hub, multilingual/): c4-{lang}.tfrecord-NNNNN-of-NNNNN.json.gz and
# c4-{lang}-validation.tfrecord-...; mC4's codes are ISO 639-1 plus a few of its own (iw,
# zh-Latn, ...), so a code is checked for its form only.
MC4_GLOB = "hf://datasets/allenai/c4/multilingual/c4-{lang}{split}.tfrecord-*.json.gz"
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,8})?$")
_REGISTRY_NAME = re.compile(r"^(ccnet|edugp):([A-Za-z-]+)$")
CUTOFFS_CSV = Path(__file__).resolve().parent / "ccnet_cutoffs.csv"


class RegistryError(ModelError, ValueError):
    """An unknown language or family; the message lists what exists."""


@dataclass(frozen=True)
class RegistryModel:
    family: str
    language: str
    preset: str
    base_url: str  # directory URL (after any PPSAMPLE_MODEL_REGISTRY_URL override)
    lm_name: str
    sp_name: str
    lm_sha256: str | None
    lm_size: int | None

    @property
    def name(self) -> str:
        return f"{self.family}:{self.language}"

    @property
    def lm_url(self) -> str:
        return f"{self.base_url}/{self.lm_name}"

    def model_json(self) -> dict:
        """What model_sources treats as the model's model.json: files, preset, expected hash."""
        data = {"name": self.name, "language": self.language, "preset": self.preset,
                "kenlm_model": self.lm_name, "sentencepiece_model": self.sp_name,
                "source": self.lm_url, "registry": self.family}
        if self.lm_sha256:
            data["file_sha256"] = {self.lm_name: self.lm_sha256}
        if self.lm_size:
            data["file_sizes"] = {self.lm_name: self.lm_size}
        return data


def check_language(language: str) -> str:
    if not isinstance(language, str) or not _LANGUAGE_CODE.match(language):
        raise RegistryError(f"language must be a code like 'fr' or 'zh-Latn', got {language!r}")
    return language


def _override(url: str) -> str:
    mirror = os.environ.get(REGISTRY_URL_ENV, "").strip().rstrip("/")
    if not mirror:
        return url
    return mirror + urllib.parse.urlsplit(url).path


def families_for(language: str) -> list[str]:
    check_language(language)
    return [f for f, langs in (("ccnet", CCNET_LANGUAGES), ("edugp", EDUGP_LM_FILES)) if language in langs]


def lookup(language: str, family: str | None = None) -> RegistryModel:
    """The registry's model for `language` (default family: ccnet where it has one, else edugp)."""
    available = families_for(language)
    if family is None:
        if not available:
            raise RegistryError(f"no published model for language {language!r}; ccnet has "
                                f"{', '.join(CCNET_LANGUAGES)}; edugp has {', '.join(sorted(EDUGP_LM_FILES))}. "
                                "Give --model (a directory or URL) or train one with `ppsample train-lm`")
        family = available[0]
    if family not in FAMILIES:
        raise RegistryError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if family not in available:
        known = CCNET_LANGUAGES if family == "ccnet" else sorted(EDUGP_LM_FILES)
        raise RegistryError(f"{family} publishes no model for {language!r}; it has {', '.join(known)}")
    if family == "ccnet":
        return RegistryModel("ccnet", language, "ccnet", _override(CCNET_BASE), f"{language}.arpa.bin",
                             f"{language}.sp.model", None, None)
    sha256, size = EDUGP_LM_FILES[language]
    return RegistryModel("edugp", language, "edugp", _override(EDUGP_BASE), f"{language}.arpa.bin",
                         f"{language}.sp.model", sha256, size)


def parse_name(source: str) -> RegistryModel | None:
    """The RegistryModel a `FAMILY:LANG` source names; None for any other source."""
    match = _REGISTRY_NAME.match(source) if isinstance(source, str) else None
    return lookup(match.group(2), match.group(1)) if match else None


@lru_cache(maxsize=1)
def _cutoffs() -> dict[str, dict[int, float]]:
    with open(CUTOFFS_CSV, newline="") as f:
        rows = list(csv.reader(f))
    header, table = rows[0][1:], {}
    for row in rows[1:]:
        for language, value in zip(header, row[1:]):
            table.setdefault(language, {})[int(row[0])] = float(value)
    return table


def ccnet_percentiles(language: str) -> dict[int, float]:
    """cc_net's published perplexity percentiles for `language` ({25, 30, 50, 60, 75: PP})."""
    table = _cutoffs()
    if language not in table:
        raise RegistryError(f"cc_net publishes no perplexity percentiles for {language!r}; it has "
                            f"{', '.join(sorted(table))}")
    return dict(table[language])


def ccnet_quartiles(language: str) -> tuple[float, float, float]:
    """(Q1, Q2, Q3) of cc_net's perplexity distribution for `language`: the `--boundaries ccnet`."""
    p = ccnet_percentiles(language)
    return p[25], p[50], p[75]


def ccnet_buckets(language: str) -> tuple[float, float]:
    """cc_net's head / middle / tail cuts (30th, 60th percentiles): head < first <= middle < second <= tail."""
    p = ccnet_percentiles(language)
    return p[30], p[60]


def mc4_input_glob(language: str, split: str = "train") -> str:
    """mC4's files for `language` on the Hub (`split`: train or validation)."""
    check_language(language)
    if split not in ("train", "validation"):
        raise RegistryError(f"mC4 splits are train and validation, got {split!r}")
    return MC4_GLOB.format(lang=language, split="" if split == "train" else "-validation")


def output_prefix(language: str, corpus: str = "mc4") -> str:
    """Output shard prefix, e.g. mc4-fr (BERTIN's mc4-es for Spanish)."""
    return f"{corpus}-{check_language(language)}"
