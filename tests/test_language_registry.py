"""The language registry: published models by language (served here by a local stand-in host
laid out like the real ones), their pinned hashes, cc_net's percentiles, mC4 globs, prefixes."""
import numpy as np
import pytest

from lm_models import language_registry as registry
from lm_models import model_sources
from lm_models.model_sources import ModelSourceError
from lm_models.perplexity import PerplexityModel
from model_source_fixtures import BUNDLED, TEXT, cache, expected  # noqa: F401
from registry_host import host  # noqa: F401  (the stand-in registry host fixture)


def test_lookup_picks_ccnet_then_edugp_with_the_real_urls(monkeypatch):
    monkeypatch.delenv(registry.REGISTRY_URL_ENV, raising=False)
    fr = registry.lookup("fr")
    assert (fr.name, fr.preset) == ("ccnet:fr", "ccnet")
    assert fr.lm_url == "http://dl.fbaipublicfiles.com/cc_net/lm/fr.arpa.bin"
    assert fr.lm_sha256 is None  # cc_net publishes none
    ed = registry.lookup("fr", "edugp")
    assert ed.lm_url == ("https://huggingface.co/edugp/kenlm/resolve/"
                         f"{registry.EDUGP_REVISION}/wikipedia/fr.arpa.bin")
    assert ed.preset == "edugp" and len(ed.lm_sha256) == 64
    assert registry.lookup("sw").family == "edugp"  # not among cc_net's 48
    assert registry.lookup("es", "edugp").model_json()["file_sizes"] == {"es.arpa.bin": 3828418653}
    with pytest.raises(registry.RegistryError, match="no published model for language 'xh'"):
        registry.lookup("xh")
    with pytest.raises(registry.RegistryError, match="edugp publishes no model for 'de'"):
        registry.lookup("de", "edugp")
    with pytest.raises(registry.RegistryError, match="code like"):
        registry.lookup("../etc")
    assert registry.parse_name("ccnet:fr") == fr and registry.parse_name("/models/fr") is None


def test_ccnet_model_loads_from_the_stand_in_host(host, expected):
    model = PerplexityModel.load("ccnet:fr")
    assert model.preset == "ccnet"  # from the registry, no model.json on the host
    assert any(r.endswith("/cc_net/lm/fr.arpa.bin") for r in host.requests)
    assert not any(r.endswith("model.json") for r in host.requests)
    # Same files as the bundled model, ccnet preset as the bundled model.json records.
    assert model.perplexity(TEXT) == pytest.approx(expected, rel=1e-12)


def test_wrong_sha256_is_refused_and_nothing_is_cached(host, cache):
    # The stand-in serves a file whose hash differs from edugp's published fr.arpa.bin.
    with pytest.raises(ModelSourceError, match="sha256"):
        model_sources.resolve("edugp:fr")
    assert not [p for p in cache.rglob("fr.arpa.bin")]
    # The same bytes pinned with their own hash load (the check compares, it does not just fail).
    files = dict(registry.EDUGP_LM_FILES)
    files["fr"] = (host.lm_sha256, None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "EDUGP_LM_FILES", files)
        assert model_sources.resolve("edugp:fr").lm_path.name == "fr.arpa.bin"


def test_ccnet_percentiles_are_cc_nets_table():
    # cc_net/data/cutoff.csv, rows 25/30/50/60/75 of the es and fr columns.
    assert registry.ccnet_percentiles("es") == {25: 170.0, 30: 180.0, 50: 240.0, 60: 290.0, 75: 400.0}
    assert registry.ccnet_quartiles("fr") == (170.0, 260.0, 520.0)
    assert registry.ccnet_buckets("fr") == (180.0, 330.0)
    for lang in registry.CCNET_LANGUAGES:  # a transcription slip would break the order
        p = registry.ccnet_percentiles(lang)
        values = [p[k] for k in (25, 30, 50, 60, 75)]
        assert np.all(np.diff(values) >= 0) and values[0] < values[-1], lang
    with pytest.raises(registry.RegistryError, match="no perplexity percentiles"):
        registry.ccnet_percentiles("sw")


def test_mc4_globs_and_prefixes():
    assert registry.mc4_input_glob("fr") == "hf://datasets/allenai/c4/multilingual/c4-fr.tfrecord-*.json.gz"
    assert registry.mc4_input_glob("fr", "validation") == \
        "hf://datasets/allenai/c4/multilingual/c4-fr-validation.tfrecord-*.json.gz"
    assert registry.output_prefix("fr") == "mc4-fr" and registry.output_prefix("es") == "mc4-es"
    with pytest.raises(registry.RegistryError):
        registry.output_prefix("FR!")
