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


def _drawn_figures(monkeypatch, stats_list, out_dir) -> dict[str, object]:
    """The matplotlib Figure objects as they are saved, by file name: their artists hold the
    data that was plotted."""
    from matplotlib.figure import Figure

    saved = {}
    real_savefig = Figure.savefig

    def capture(fig, path, *args, **kwargs):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    write_figures_for_methods(stats_list, str(out_dir))
    return saved


def _rgb(colour):
    from matplotlib.colors import to_rgb

    return tuple(round(c, 3) for c in to_rgb(colour))


def _stairs_by_colour(ax) -> dict[tuple, list]:
    from matplotlib.patches import StepPatch

    out: dict[tuple, list] = {}
    for patch in ax.patches:
        if isinstance(patch, StepPatch):
            values, edges, _ = patch.get_data()
            colour = patch.get_edgecolor() if not patch.get_fill() else patch.get_facecolor()
            out.setdefault(_rgb(colour[:3]), []).append((np.asarray(values), np.asarray(edges)))
    return out


def _regrouped(counts, edges, shown_edges) -> np.ndarray:
    """The fine histogram summed into the displayed bins, computed here from the edges alone."""
    at = np.searchsorted(np.asarray(edges), shown_edges)
    assert np.allclose(np.asarray(edges)[at], shown_edges)  # display edges are histogram edges
    return np.array([np.sum(counts[a:b]) for a, b in zip(at[:-1], at[1:])], dtype=np.float64)


def test_input_vs_sampled_plots_each_panels_kept_histogram_not_the_input(
        tmp_path, monkeypatch, stats_by_method):
    from pipelines.corpus.plots import INPUT_COLOUR

    stats_list = [stats_by_method["gaussian"], stats_by_method["random"]]
    fig = _drawn_figures(monkeypatch, stats_list, tmp_path)[INPUT_VS_SAMPLED_PNG]
    edges = stats_list[0]["histogram"]["edges"]
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert panels and set(panels) <= {"train", "validation", "total"}
    counts_axes = [ax for ax in fig.axes if ax.get_title()]
    for name, ax in zip(panels, counts_axes):
        stairs = _stairs_by_colour(ax)
        (input_values, shown_edges), *_ = stairs[_rgb(INPUT_COLOUR)]
        part_of = (lambda s: s["total"]) if name == "total" else (lambda s: s["splits"][name])
        assert np.array_equal(input_values,
                              _regrouped(part_of(stats_list[0])["histogram"], edges, shown_edges))
        for stats in stats_list:
            part = part_of(stats)
            [(kept_values, kept_edges)] = stairs[_rgb(METHOD_COLOURS[stats["method"]])]
            assert np.array_equal(kept_edges, shown_edges)
            want = _regrouped(part["kept_histogram"], edges, shown_edges)
            assert np.array_equal(kept_values, want), (name, stats["method"])
            assert kept_values.sum() == part["kept"] < part["scored"] == input_values.sum()


def test_histogram_figure_plots_the_input_and_the_observed_kept_fraction(
        tmp_path, monkeypatch, stats_by_method):
    from pipelines.corpus.plots import INPUT_COLOUR, MIN_DOCS_FOR_OBSERVED_FRACTION

    stats = stats_by_method["gaussian"]
    fig = _drawn_figures(monkeypatch, [stats], tmp_path)[HISTOGRAM_PNG]
    counts_ax, curve_ax = fig.axes[0], fig.axes[1]
    input_values, shown_edges = _stairs_by_colour(counts_ax)[_rgb(INPUT_COLOUR)][0]
    edges = stats["histogram"]["edges"]
    scored = _regrouped(stats["total"]["histogram"], edges, shown_edges)
    kept = _regrouped(stats["total"]["kept_histogram"], edges, shown_edges)
    assert np.array_equal(input_values, scored)
    observed = [line for line in curve_ax.get_lines() if line.get_marker() == "o"]
    [points] = observed
    has_docs = scored >= MIN_DOCS_FOR_OBSERVED_FRACTION
    assert np.allclose(points.get_xdata(), np.sqrt(shown_edges[:-1] * shown_edges[1:])[has_docs])
    assert np.array_equal(points.get_ydata(), kept[has_docs] / scored[has_docs])
    assert points.get_ydata().min() < 1.0  # a fraction, not the input drawn again
