"""`ppsample train-lm` end to end with the real lmplz / build_binary (tiny corpus)."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import fsspec
import numpy as np
import pytest

from lm_models import kenlm_training
from lm_models.perplexity import PerplexityModel
from cli_exit import exit_status as ppsample

try:
    kenlm_training.find_tool("lmplz")
    kenlm_training.find_tool("build_binary")
    MISSING = None
except kenlm_training.KenLMToolMissing as exc:
    MISSING = str(exc)
needs_kenlm_tools = pytest.mark.skipif(
    MISSING is not None,
    reason="lmplz/build_binary not installed: run scripts/install_kenlm_tools.sh (CI does)")

TINY = ["--vocab-size", "400", "--order", "3", "--discount-fallback", "--memory", "64M"]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    """The first 1,500 lines of the reference corpus, gzipped."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt.gz"
    with gzip.open(shared_data / "es" / "reference.txt.gz", "rt", encoding="utf-8") as src, \
            gzip.open(path, "wt", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i == 1500:
                break
            dst.write(line)
    return path


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-ccnet"
    code = ppsample(["train-lm", "--corpus", str(corpus), "--output", str(out), *TINY,
                     "--prune", "0", "1", "--holdout-every", "10", "-q", "8", "-b", "8",
                     "--quiet"])
    assert code == 0
    return out


@needs_kenlm_tools
def test_trains_a_model_that_loads_with_its_preset(trained, corpus):
    meta = json.loads((trained / "model.json").read_text())
    assert meta["preset"] == "ccnet" and meta["order"] == 3 and meta["vocab_size"] == 400
    assert meta["corpus"]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert meta["corpus"]["lines_read"] == 1500
    assert meta["corpus"]["lines_held_out"] == 150
    for name, size in meta["file_sizes"].items():
        assert (trained / name).stat().st_size == size
        assert hashlib.sha256((trained / name).read_bytes()).hexdigest() == \
            meta["file_sha256"][name]
    assert meta["lmplz_args"] == ["-o", "3", "-S", "64M", "--prune", "0", "1",
                                  "--discount_fallback"]
    assert meta["build_binary_args"] == ["-q", "8", "-b", "8", "trie"]
    assert meta["command"].startswith("ppsample train-lm --corpus ")
    assert "--holdout-every 10" in meta["command"]

    model = PerplexityModel.load(trained)
    assert model.preset == "ccnet"
    with open(trained / "es.arpa.bin", "rb") as f:
        assert f.read(4) != b"\\dat"  # a KenLM binary, not ARPA text
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(trained / "es.sp.model"))
    assert sp.get_piece_size() == 400


@needs_kenlm_tools
def test_held_out_lines_score_better_than_scrambled_ones(trained, corpus):
    model = PerplexityModel.load(trained)
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        held = [line.rstrip("\n") for i, line in enumerate(f) if i % 10 == 0]
    rng = np.random.default_rng(0)
    scrambled = [" ".join(rng.permutation(line.split())) for line in held]
    assert np.median(model.perplexities(held)) < np.median(model.perplexities(scrambled))


@needs_kenlm_tools
def test_same_corpus_and_options_give_the_same_files(trained, corpus, tmp_path):
    again = tmp_path / "again"
    assert ppsample(["train-lm", "--corpus", str(corpus), "--output", str(again), *TINY,
                     "--prune", "0", "1", "--holdout-every", "10", "-q", "8", "-b", "8",
                     "--quiet"]) == 0
    for name in ["es.arpa.bin", "es.sp.model"]:
        assert (again / name).read_bytes() == (trained / name).read_bytes(), name


@needs_kenlm_tools
def test_progress_output_and_edugp_and_bertin_presets(corpus, tmp_path, capsys):
    edugp = tmp_path / "edugp"
    assert ppsample(["train-lm", "--corpus", str(corpus), "--output", str(edugp),
                     "--preset", "edugp", "--max-lines", "800", "--keep-arpa", *TINY]) == 0
    err = capsys.readouterr().err
    for stage in ["normalised 800 lines", "training SentencePiece", "lmplz -o 3",
                  "build_binary", "wrote"]:
        assert stage in err, stage
    m = PerplexityModel.load(edugp)
    assert m.preset == "edugp"
    # The kept ARPA file alone (cc_net layout `es.arpa`) loads too, and scores like the
    # unquantised binary built from it.
    arpa_only = tmp_path / "arpa-only"
    arpa_only.mkdir()
    shutil.copy(edugp / "es.arpa", arpa_only / "es.arpa")
    shutil.copy(edugp / "es.sp.model", arpa_only / "es.sp.model")
    from_arpa = PerplexityModel.load(arpa_only, preset="edugp")
    assert from_arpa.files.lm_path.name == "es.arpa"
    docs = ["El Río Grande nace en las montañas.", "Hoy es lunes, 3 de marzo de 2024."]
    np.testing.assert_allclose(from_arpa.perplexities(docs), m.perplexities(docs), rtol=1e-5)
    # Trained with case kept, the model knows capitalised pieces.
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(edugp / "es.sp.model"))
    assert any(any(c.isupper() for c in sp.id_to_piece(i)) for i in range(sp.get_piece_size()))

    bertin = tmp_path / "bertin"
    assert ppsample(["train-lm", "--corpus", str(corpus), "--output", str(bertin),
                     "--preset", "bertin", "--max-lines", "800", *TINY, "--quiet"]) == 0
    assert not (bertin / "es.sp.model").exists()
    meta = json.loads((bertin / "model.json").read_text())
    assert meta["files"] == {"lm": "es.arpa.bin"} and meta["vocab_size"] is None
    b = PerplexityModel.load(bertin)
    assert b.preset == "bertin" and np.isfinite(b.perplexity("El libro está en la mesa."))


@needs_kenlm_tools
def test_corpus_from_urls_plain_and_gz(corpus, tmp_path):
    plain = gzip.decompress(corpus.read_bytes())[:60000]
    fsspec.filesystem("memory").pipe("/corpora/tiny.txt", plain)
    out = tmp_path / "from-memory"
    assert ppsample(["train-lm", "--corpus", "memory://corpora/tiny.txt", "--output", str(out),
                     *TINY, "--quiet"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["corpus"]["sha256"] == hashlib.sha256(plain).hexdigest()

    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(corpus, www / "tiny.txt.gz")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny.txt.gz"
        out2 = tmp_path / "from-http"
        assert ppsample(["train-lm", "--corpus", url, "--output", str(out2), *TINY,
                         "--max-lines", "600", "--quiet"]) == 0
        assert json.loads((out2 / "model.json").read_text())["corpus"]["lines_read"] == 600
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_missing_lmplz_says_how_to_install(tmp_path, monkeypatch, capsys, corpus):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(kenlm_training, "tool_dirs", lambda: [tmp_path / "nowhere"])
    code = ppsample(["train-lm", "--corpus", str(corpus), "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 1
    assert "lmplz" in err and "scripts/install_kenlm_tools.sh" in err
    assert not (tmp_path / "m").exists()  # fails before doing any work


def test_bad_corpus_and_options_are_clear_errors(tmp_path, capsys):
    if MISSING:
        pytest.skip(MISSING)
    code = ppsample(["train-lm", "--corpus", str(tmp_path / "none.txt"), "--output",
                     str(tmp_path / "m")])
    assert code == 1 and "none.txt" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    assert ppsample(["train-lm", "--corpus", str(empty), "--output", str(tmp_path / "m")]) == 1
    assert "no non-empty training lines" in capsys.readouterr().err
    assert ppsample(["train-lm", "--corpus", str(empty), "--output", str(tmp_path / "m"),
                     "--holdout-every", "1"]) == 1
    assert "holdout_every" in capsys.readouterr().err


@pytest.mark.slow
@needs_kenlm_tools
def test_recorded_command_rebuilds_the_bundled_model(full_shared_data, tmp_path):
    """The bundled model is exactly what its recorded `ppsample train-lm` command makes (~1 min)."""
    import shlex

    bundled = Path(__file__).resolve().parents[1] / "lm_models" / "bundled" / "es-reference"
    meta = json.loads((bundled / "model.json").read_text())
    argv = shlex.split(meta["command"])[1:]
    argv[argv.index("--corpus") + 1] = str(full_shared_data / "es" / "reference.txt.gz")
    argv[argv.index("--output") + 1] = str(tmp_path / "rebuilt")
    assert ppsample([*argv, "--quiet"]) == 0
    for name, sha in meta["file_sha256"].items():
        assert hashlib.sha256((tmp_path / "rebuilt" / name).read_bytes()).hexdigest() == sha, name


def test_held_out_lines_are_exactly_every_20th_reference_line(shared_data, tmp_path):
    """The split itself (no lmplz needed): content, not counts. Lines 0, 20, 40, ... (0-based)
    are held out and never reach the training file; every other line does, normalised, in order."""
    from lm_models.normalization import CCNET, Normalizer

    corpus = shared_data / "es" / "reference.txt.gz"
    with gzip.open(corpus, "rt", encoding="utf-8", newline="\n") as f:
        lines = [line.rstrip("\n") for line in f][:4000]
    split = list(kenlm_training.holdout_split(iter(lines), 20))
    assert [line for held, line in split if held] == lines[0::20]
    assert [line for held, line in split if not held] == [x for i, x in enumerate(lines) if i % 20]
    assert [line for _, line in split] == lines  # nothing dropped, nothing reordered
    assert [line for held, line in kenlm_training.holdout_split(iter(lines), 20, max_lines=45)
            if held] == [lines[0], lines[20], lines[40]]
    assert not any(held for held, _ in kenlm_training.holdout_split(iter(lines), None))

    small = tmp_path / "ref.txt.gz"
    with gzip.open(small, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    out = tmp_path / "normalized.txt"
    config = kenlm_training.TrainingConfig(preset="ccnet", holdout_every=20)
    read, held_out, used = kenlm_training.write_training_lines(small, out, config)
    normalize = Normalizer(CCNET)
    want = [n for i, x in enumerate(lines) if i % 20 and (n := normalize(x)).strip()]
    assert out.read_text(encoding="utf-8").splitlines() == want
    assert (read, held_out, used) == (len(lines), len(lines[0::20]), len(want))
    held = {normalize(x) for x in lines[0::20]} - {normalize(x) for i, x in enumerate(lines) if i % 20}
    assert held and not held & set(want)  # a held-out line's text is nowhere in the training file
