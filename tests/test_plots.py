"""The figures are valid, non-trivial PNGs that draw what they claim (one curve per method)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from pipelines.corpus.plots import (HISTOGRAM_PNG, INPUT_VS_SAMPLED_PNG, METHOD_COLOURS, write_figures,
                             write_figures_for_methods)
from test_publish_sampled_dir import make_sampled_dir, read_web_docs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stats_by_method(shared_data, tmp_path_factory):
    docs = read_web_docs(shared_data, 300)
    root = tmp_path_factory.mktemp("sampled")
    return {m: make_sampled_dir(root / m, docs, m, seed=1) for m in ("gaussian", "stepwise", "random")}


def _pixels(path) -> np.ndarray:
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()  # checks chunk CRCs: a truncated or corrupt file fails here
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _has_colour(pixels: np.ndarray, hex_colour: str, min_pixels: int = 50) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    close = np.abs(pixels.astype(int) - rgb).sum(axis=2) <= 12
    return int(close.sum()) >= min_pixels


def _assert_non_trivial(path) -> np.ndarray:
    pixels = _pixels(path)
    height, width, _ = pixels.shape
    assert width >= 800 and height >= 400
    packed = pixels.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    colours = np.unique(packed)
    assert len(colours) >= 20  # anti-aliased lines, fills, text: far more than a blank canvas
    not_white = (pixels < 245).any(axis=2).mean()
    assert 0.03 < not_white < 0.9  # drawn on, yet not a solid block
    return pixels


def test_write_figures_writes_both_named_pngs(tmp_path, stats_by_method):
    paths = write_figures(stats_by_method["gaussian"], str(tmp_path / "figs"))
    assert [p.rsplit("/", 1)[-1] for p in paths] == [HISTOGRAM_PNG, INPUT_VS_SAMPLED_PNG]
    for path in paths:
        pixels = _assert_non_trivial(path)
        assert _has_colour(pixels, METHOD_COLOURS["gaussian"])  # the method's curve / sample
        assert not _has_colour(pixels, METHOD_COLOURS["stepwise"])


def test_card_figure_draws_every_methods_curve(tmp_path, stats_by_method):
    stats = [stats_by_method[m] for m in ("gaussian", "stepwise", "random")]
    hist_path, versus_path = write_figures_for_methods(stats, str(tmp_path))
    for path in (hist_path, versus_path):
        pixels = _assert_non_trivial(path)
        for method in ("gaussian", "stepwise", "random"):
            assert _has_colour(pixels, METHOD_COLOURS[method]), (path, method)


def test_figures_are_deterministic(tmp_path, stats_by_method):
    first = write_figures(stats_by_method["random"], str(tmp_path / "a"))
    second = write_figures(stats_by_method["random"], str(tmp_path / "b"))
    for a, b in zip(first, second):
        assert np.array_equal(_pixels(a), _pixels(b))


def test_histogram_length_mismatch_is_a_clear_error(tmp_path, stats_by_method):
    broken = copy.deepcopy(stats_by_method["gaussian"])
    broken["total"]["histogram"] = broken["total"]["histogram"][:-5]
    with pytest.raises(ValueError, match="bins"):
        write_figures(broken, str(tmp_path))
    missing = copy.deepcopy(stats_by_method["gaussian"])
    del missing["boundaries"]
    with pytest.raises(ValueError, match="boundaries"):
        write_figures(missing, str(tmp_path))


def test_no_documents_still_gives_a_figure(tmp_path, stats_by_method):
    empty = copy.deepcopy(stats_by_method["gaussian"])
    for part in [empty["total"], *empty["splits"].values()]:
        part["histogram"] = [0] * len(part["histogram"])
        part["kept_histogram"] = [0] * len(part["kept_histogram"])
    for path in write_figures(empty, str(tmp_path)):
        _pixels(path)
