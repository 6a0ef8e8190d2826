"""The fast normaliser (one str.translate pass) equals cc_net's step-by-step algorithm."""
from __future__ import annotations

import sys

import pytest

from lm_models.normalization import CCNET, EDUGP, Normalizer, normalize_literal, translation_table
from test_perplexity_parity import reference_normalize

ALL_CHARS = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)


@pytest.mark.parametrize("options,accent_case", [(CCNET, True), (EDUGP, False)],
                         ids=["ccnet", "edugp"])
def test_every_code_point_matches_reference(options, accent_case):
    # Chunks of consecutive code points: covers every character, and the neighbours that
    # lower() and canonical reordering look at.
    normalize = Normalizer(options)
    chunk = 61
    bad = []
    for start in range(0, len(ALL_CHARS), chunk):
        text = "x" + ALL_CHARS[start:start + chunk] + "x"
        if normalize(text) != reference_normalize(text, accent_case, accent_case):
            bad.append(start)
    assert not bad, [hex(ord(ALL_CHARS[s])) for s in bad[:10]]


def test_canonical_reordering_takes_the_literal_path():
    # U+1D16D (combining class 226) before U+1D165 (216): NFD swaps them; neither is Mn, so
    # both survive accent stripping. A per-character table alone would keep the input order.
    text = "a\U0001D16D\U0001D165b"
    assert text.translate(translation_table(CCNET)) != reference_normalize(text)
    assert Normalizer(CCNET)(text) == reference_normalize(text) == "a\U0001D165\U0001D16Db"


def test_context_dependent_lowercase_is_exact():
    assert Normalizer(CCNET)("ΟΔΟΣ ΣΑΣ") == reference_normalize("ΟΔΟΣ ΣΑΣ") == "οδος σας"
    assert Normalizer(CCNET)("İSTANBUL") == "istanbul"


def test_steps_and_their_order():
    n = Normalizer(CCNET)
    assert n("  Ñandú ٣٤ «Hola» — ¿Qué? x．y\t\x00fin\n ") == 'nandu 00 "hola"  -  ¿que? x. yfin'
    assert Normalizer(EDUGP)(" Ñandú ٣٤ «Hola»\n") == 'Ñandú 00 "Hola"'
    assert n("") == "" and n(" \t\n ") == ""
    assert normalize_literal("１２") == "00"  # digits run before the punctuation map ("１" -> '"')


def test_table_covers_all_code_points():
    table = translation_table(CCNET)
    assert table[ord("é")] == "e" and table[ord("٣")] == "0" and table[ord("—")] == " - "
    assert table[0x0A] == "" and table[0x9F] == "" and table[0x0301] == ""
    assert table[ord("\U0001D7D9")] == "0"  # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE, plane 1
    assert ord("a") not in table and ord("²") not in table  # superscripts are not \d


@pytest.mark.parametrize("options", [CCNET, EDUGP], ids=["ccnet", "edugp"])
def test_replacements_are_fixed_points(options):
    # Normalizer replaces distinct characters one after another, in any order; that equals one
    # simultaneous translation only because no replacement contains a character the table maps.
    table = translation_table(options)
    assert not [cp for cp, out in table.items() if any(ord(c) in table for c in out)]


def test_astral_characters_the_table_ignores_are_skipped():
    text = "🙂 hola 𝟙𝟚 😀 𐐀" * 3  # emoji (kept), math digits (-> 0), Deseret capital (lowered)
    assert Normalizer(CCNET)(text) == reference_normalize(text)
    assert "00" in Normalizer(CCNET)(text) and "🙂" in Normalizer(CCNET)(text)
