"""The normalisation tables' file cache (issue 9: every worker process paid ~0.5 s building
them): a cached table is the built table exactly, a damaged cache file is rebuilt, and a change
of anything the tables depend on looks under another name."""
from __future__ import annotations

import json

import pytest

from lm_models import normalization as n

TEXT = "  ¿Qué tal?\tÁrbol «1984» — ＡＢＣ … 𝄞\u1d16d\u1d165 ı İ ΣΑΣ\n\x07fin  "


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PPSAMPLE_CACHE", str(tmp_path))
    n.translation_table.cache_clear()
    n._literal_path_chars.cache_clear()
    yield tmp_path / "normalization"
    n.translation_table.cache_clear()
    n._literal_path_chars.cache_clear()


def _reload_tables(options):
    n.translation_table.cache_clear()
    n._literal_path_chars.cache_clear()
    return n.translation_table(options), n._literal_path_chars()


@pytest.mark.parametrize("options", [n.CCNET, n.EDUGP])
def test_cached_tables_are_the_built_tables(fresh_cache, options):
    built = n._build_translation_table(options), n._build_literal_path_chars()
    first = _reload_tables(options)  # builds and stores
    assert n.cache_path("table", options).exists() and n.cache_path("literal", None).exists()
    second = _reload_tables(options)  # loads
    assert first == built and second == built
    assert n.Normalizer(options)(TEXT) == n.normalize_literal(TEXT, options)


def test_a_damaged_cache_file_is_rebuilt(fresh_cache):
    _reload_tables(n.CCNET)
    path = n.cache_path("table", n.CCNET)
    path.write_text('{"value": {"65": "trunc')
    table, _ = _reload_tables(n.CCNET)
    assert table == n._build_translation_table(n.CCNET)
    rewritten = json.loads(path.read_text())["value"]  # whole again
    assert {int(cp): out for cp, out in rewritten.items()} == table


def test_the_cache_name_follows_options_source_and_unicode_version(fresh_cache, monkeypatch):
    names = {n.cache_path("table", n.CCNET), n.cache_path("table", n.EDUGP)}
    n._source_digest.cache_clear()
    monkeypatch.setattr(n, "_source_digest", lambda: "another version of the module")
    names.add(n.cache_path("table", n.CCNET))
    monkeypatch.setattr(n.unicodedata, "unidata_version", "99.0.0")
    names.add(n.cache_path("table", n.CCNET))
    assert len(names) == 4


def test_an_unwritable_cache_only_costs_the_build(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PPSAMPLE_CACHE", str(blocker))
    n.translation_table.cache_clear()
    try:
        assert n.translation_table(n.EDUGP) == n._build_translation_table(n.EDUGP)
    finally:
        n.translation_table.cache_clear()
