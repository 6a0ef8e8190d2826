"""PerplexityModel's API: bad input, empty text, presets, pickling, provenance, the bundled model."""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from lm_models.model_sources import ModelSourceError
from lm_models.perplexity import DEFAULT_MODEL, PRESETS, PerplexityModel

BUNDLED = Path(__file__).resolve().parents[1] / "lm_models" / "bundled" / "es-reference"


@pytest.fixture(scope="module")
def model() -> PerplexityModel:
    return PerplexityModel.load(DEFAULT_MODEL)


@pytest.mark.parametrize("bad", [None, b"hola", bytearray(b"hola"), 3, 2.5, ["hola"]])
def test_non_str_is_a_type_error(model, bad):
    with pytest.raises(TypeError, match="expects str, got"):
        model.perplexity(bad)


def test_bytes_error_says_how_to_fix(model):
    with pytest.raises(TypeError, match=r"decode it first"):
        model.perplexity(b"hola")
    with pytest.raises(TypeError, match=r"got NoneType"):
        model.perplexities(["bien", None])


def test_batch_needs_a_list_not_a_string(model):
    with pytest.raises(TypeError, match="list of str"):
        model.perplexities("hola")


@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p].scores_empty])
def test_empty_and_whitespace_text_score_as_one_empty_line(preset):
    """edugp and bertin score text that normalises to nothing (edugp's get_perplexity and
    BERTIN's loop both score the empty line)."""
    m = PerplexityModel.load(BUNDLED, preset)
    empty = m.score(["", " ", "\t \u3000"])
    # Documented value: an empty line scored with <s> and </s>, length 1.
    expected = 10.0 ** -m._lm.score("", bos=True, eos=True)
    assert np.all(np.isfinite(empty.perplexity))
    assert empty.n_tokens.tolist() == [1, 1, 1]
    if PRESETS[preset].normalization is not None:
        assert np.allclose(empty.perplexity, expected, rtol=1e-12)
    else:
        # bertin scores raw text: "" and " " are the empty line, but KenLM splits on ASCII
        # whitespace only, so U+3000 is a (unknown) word to it while BERTIN's length,
        # str.split(), counts zero words. Faithful to BERTIN, and still finite.
        assert np.allclose(empty.perplexity[:2], expected, rtol=1e-12)
        assert empty.perplexity[2] > expected
    assert m.perplexities([]).shape == (0,)
    assert m.unscorable_reason("") is None


@pytest.mark.parametrize("preset", ["ccnet", "ccnet-lines"])
def test_ccnet_gives_text_that_normalises_to_nothing_no_perplexity(preset):
    """cc_net's DocLM writes no perplexity for a document whose tokenised text is empty."""
    m = PerplexityModel.load(BUNDLED, preset)
    nothing = ["", " ", "\t \u3000", "\n\n", "\x01\x02\x7f", " \u00a0\n\t"]
    texts = ["hola", *nothing, "adiós\n"]
    result = m.score(texts)
    assert np.isnan(result.perplexity[1:-1]).all() and result.n_tokens[1:-1].tolist() == [0] * 6
    assert np.isfinite(result.perplexity[[0, -1]]).all() and (result.n_tokens[[0, -1]] > 1).all()
    assert [m.unscorable_reason(t) for t in texts] == \
        [None, *["empty_after_normalization"] * 6, None]
    assert m.unscorable_reason("a\ud800") == "invalid_utf8"
    with pytest.raises(ValueError, match="normalises to nothing"):
        m.perplexity("   ")
    # the rest of a batch is scored exactly as alone
    assert result.perplexity[0] == m.perplexity("hola")


def test_unknown_preset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown preset 'cc_net'.*ccnet"):
        PerplexityModel.load(DEFAULT_MODEL, "cc_net")


def test_preset_comes_from_model_json(model):
    assert model.preset == json.loads((BUNDLED / "model.json").read_text())["preset"] == "ccnet"
    assert model.source == "es-reference"


def test_ccnet_layout_without_model_json_needs_a_preset(tmp_path, model):
    for name in ["es.arpa.bin", "es.sp.model"]:
        shutil.copy(BUNDLED / name, tmp_path / name)
    with pytest.raises(ValueError, match=r"no model.json.*preset"):
        PerplexityModel.load(tmp_path)
    plain = PerplexityModel.load(tmp_path, preset="ccnet")
    text = "El perro corre por el parque."
    assert plain.perplexity(text) == model.perplexity(text)
    assert plain.describe()["model_json"] is None


def test_missing_model_names_the_source(tmp_path):
    with pytest.raises(ModelSourceError, match=str(tmp_path / "nope")):
        PerplexityModel.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match=r"no KenLM model.*es.arpa.bin"):
        PerplexityModel.load(tmp_path / "empty", preset="ccnet")


def test_sentencepiece_presets_need_the_sp_model(tmp_path):
    shutil.copy(BUNDLED / "es.arpa.bin", tmp_path / "es.arpa.bin")
    with pytest.raises(ModelSourceError, match=r"needs a SentencePiece model"):
        PerplexityModel.load(tmp_path, preset="ccnet")
    bertin = PerplexityModel.load(tmp_path, preset="bertin")  # raw text needs no tokenizer
    assert math.isfinite(bertin.perplexity("hola mundo"))


def test_pickles_as_source_and_preset(model):
    text = "Los datos se guardan en el disco."
    for m in [model, PerplexityModel.load(BUNDLED, "bertin")]:
        payload = pickle.dumps(m)
        assert len(payload) < 1000  # the model files are not in the pickle
        again = pickle.loads(payload)
        assert (again.source, again.preset) == (m.source, m.preset)
        assert again.perplexity(text) == m.perplexity(text)


def test_describe_is_json_and_matches_the_files(model):
    info = json.loads(json.dumps(model.describe()))
    assert info["source"] == "es-reference" and info["preset"] == "ccnet"
    lm = info["files"]["es.arpa.bin"]
    assert lm["size"] == (BUNDLED / "es.arpa.bin").stat().st_size
    assert lm["sha256"] == hashlib.sha256((BUNDLED / "es.arpa.bin").read_bytes()).hexdigest()
    assert info["model_json"]["file_sha256"]["es.arpa.bin"] == lm["sha256"]


def test_bundled_model_is_small_and_documented():
    sizes = sum(p.stat().st_size for p in BUNDLED.iterdir())
    assert sizes <= 15 * 1024 * 1024
    meta = json.loads((BUNDLED / "model.json").read_text())
    assert meta["command"].startswith("ppsample train-lm ")
    assert "--holdout-every 20" in meta["command"]
    assert "UD_Spanish-GSD" in (BUNDLED / "SOURCES.md").read_text()


def test_bundled_model_prefers_held_out_reference_lines_to_web_docs(shared_data, model):
    meta = json.loads((BUNDLED / "model.json").read_text())
    manifest = json.loads((shared_data / "manifest.json").read_text())
    assert manifest["sources"]["es/reference.txt.gz"] == meta["corpus"]["sha256"], \
        "tests/data's held-out lines come from another reference.txt.gz than the bundled model's"
    assert f"% {meta['corpus']['holdout']['every']} == 0" in \
        manifest["rules"]["es/reference-held-out.txt.gz"]
    with gzip.open(shared_data / "es" / "reference-held-out.txt.gz", "rt", encoding="utf-8",
                   newline="\n") as f:
        held_out = [line.rstrip("\n") for line in f]
    assert len(held_out) == meta["corpus"]["lines_held_out"]
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        web = [json.loads(line)["text"] for line in f]
    held_median = float(np.median(model.perplexities(held_out)))
    web_median = float(np.median(model.perplexities(web)))
    assert held_median < web_median, (held_median, web_median)


@pytest.mark.parametrize("preset", ["ccnet", "bertin", "ccnet-lines"])
def test_lone_surrogates_raise_alone_and_are_nan_in_a_batch(preset):
    m = PerplexityModel.load(BUNDLED, preset)
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800 at position 4"):
        m.perplexity("malo\ud800")
    docs = ["uno bien", "malo \ud800 texto", "otro\nbien"]
    result = m.score(docs)
    assert np.isnan(result.perplexity[1]) and result.n_tokens[1] == 0
    # The other documents of the batch are scored as if alone.
    assert result.perplexity[0] == m.perplexity(docs[0])
    assert result.perplexity[2] == m.perplexity(docs[2])
    assert result.n_tokens[2] == m.score([docs[2]]).n_tokens[0]
