"""Figures of a sampled output, drawn from its stats.json content alone.

`write_figures(stats, out_dir)` is called by `stats` / `sample` / `run` so a local user sees the
figures beside stats.json; `write_figures_for_methods([stats, ...], out_dir)` draws the same two
figures for several methods' outputs at once (the dataset card of `ppsample publish`), one
keep-probability curve and one sampled distribution per method.

Both figures use the fixed log10 bins of stats["histogram"]["edges"]. Those bins are fine (they
are meant for quantiles), so for display they are merged into at most `MAX_DISPLAY_BINS` groups
over the perplexity range that holds documents; counts are summed, never interpolated.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

HISTOGRAM_PNG = "perplexity_histogram.png"
INPUT_VS_SAMPLED_PNG = "input_vs_sampled.png"
FIGURE_NAMES = (HISTOGRAM_PNG, INPUT_VS_SAMPLED_PNG)

MAX_DISPLAY_BINS = 60
# An observed kept fraction over fewer documents than this is mostly noise (0 or 1): not drawn.
MIN_DOCS_FOR_OBSERVED_FRACTION = 5
SPLIT_ORDER = ("train", "validation")

# One colour per method, stable across figures and runs (tab10 entries).
METHOD_COLOURS = {"gaussian": "#d62728", "stepwise": "#2ca02c", "random": "#9467bd"}
FALLBACK_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
INPUT_COLOUR = "#1f77b4"
BOUNDARY_COLOUR = "#444444"


def write_figures(stats: dict, out_dir: str) -> list[str]:
    """Write perplexity_histogram.png and input_vs_sampled.png for one sampled output."""
    return write_figures_for_methods([stats], out_dir)


def write_figures_for_methods(stats_list: Sequence[dict], out_dir: str) -> list[str]:
    """Write both figures for one or more sampled outputs (one per method); returns their paths."""
    if not stats_list:
        raise ValueError("write_figures needs at least one stats.json content")
    for stats in stats_list:
        _check_stats(stats)
    os.makedirs(out_dir, exist_ok=True)
    paths = [
        os.path.join(out_dir, HISTOGRAM_PNG),
        os.path.join(out_dir, INPUT_VS_SAMPLED_PNG),
    ]
    _draw_histogram_with_keep_curves(stats_list, paths[0])
    _draw_input_vs_sampled(stats_list, paths[1])
    return paths


def _figure(figsize: tuple[float, float]):
    # A bare Figure renders with Agg and touches no pyplot state: safe in Beam workers, on
    # headless servers, and inside a notebook whose backend it must not change.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=110)


def method_colour(method: str, index: int) -> str:
    return METHOD_COLOURS.get(method, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def _check_stats(stats: dict) -> None:
    try:
        edges = stats["histogram"]["edges"]
        total = stats["total"]
        counts = total["histogram"]
        kept = total["kept_histogram"]
        stats["boundaries"]["q1"], stats["boundaries"]["q2"], stats["boundaries"]["q3"]
        stats["method"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"stats.json content lacks {err} needed for the figures") from err
    if len(counts) != len(edges) - 1 or len(kept) != len(edges) - 1:
        raise ValueError(
            f"histogram has {len(counts)} input / {len(kept)} kept counts for {len(edges) - 1} bins"
        )


def _display_edges(edges: np.ndarray, count_arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Indices into `edges` of the merged display bins: the occupied range, padded by a bin."""
    occupied = np.zeros(len(edges) - 1, dtype=bool)
    for counts in count_arrays:
        occupied |= np.asarray(counts) > 0
    if not occupied.any():
        # Nothing scored: show the whole axis so the figure still says "no documents".
        first, last = 0, len(edges) - 2
    else:
        nonzero = np.flatnonzero(occupied)
        first, last = nonzero[0], nonzero[-1]
    width = last - first + 1
    group = max(1, int(np.ceil(width / MAX_DISPLAY_BINS)))
    # Pad by one display bin each side so the extreme bars do not touch the frame.
    start = max(0, first - group)
    stop = min(len(edges) - 1, last + 1 + group)
    idx = np.arange(start, stop, group)
    return np.append(idx, stop)


def _merge(counts, idx: np.ndarray) -> np.ndarray:
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.float64))])
    return cumulative[idx[1:]] - cumulative[idx[:-1]]


def _keep_curve(stats: dict, perplexities: np.ndarray) -> np.ndarray:
    # Imported here: sampling is pure numpy, but importing it lazily keeps this module importable
    # on its own (and the figures' curve is exactly the function the sampler used).
    from sampling import Boundaries, SamplingParams, keep_probability

    b = stats["boundaries"]
    params = stats.get("parameters") or {}
    sampling_params = SamplingParams(
        method=stats["method"], factor=params.get("factor"), width=params.get("width")
    )
    boundaries = Boundaries(float(b["q1"]), float(b["q2"]), float(b["q3"]))
    return np.asarray(keep_probability(perplexities, boundaries, sampling_params), dtype=np.float64)


def _method_label(stats: dict) -> str:
    params = stats.get("parameters") or {}
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()) if v is not None)
    return f"{stats['method']} ({shown})" if shown else str(stats["method"])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _draw_histogram_with_keep_curves(stats_list: Sequence[dict], path: str) -> None:
    base = stats_list[0]
    edges = np.asarray(base["histogram"]["edges"], dtype=np.float64)
    idx = _display_edges(edges, [np.asarray(base["total"]["histogram"])])
    shown_edges = edges[idx]
    input_counts = _merge(base["total"]["histogram"], idx)
    n_docs = int(np.sum(base["total"]["histogram"]))

    fig = _figure(figsize=(9, 5.2 + 0.25 * len(stats_list)))
    ax = fig.subplots()
    ax.stairs(input_counts, shown_edges, fill=True, color=INPUT_COLOUR, alpha=0.35,
              label=f"input documents (n={n_docs:,})")
    ax.stairs(input_counts, shown_edges, color=INPUT_COLOUR, linewidth=1.0)
    ax.set_xscale("log")
    ax.set_xlim(shown_edges[0], shown_edges[-1])
    ax.set_xlabel("perplexity (log scale)")
    ax.set_ylabel("documents per bin")
    ax.grid(True, which="major", axis="x", alpha=0.3)

    _draw_boundaries(ax, base["boundaries"])

    curve_ax = ax.twinx()
    curve_ax.set_ylim(0, 1.05)
    curve_ax.set_ylabel("keep probability")
    grid = np.geomspace(shown_edges[0], shown_edges[-1], 400)
    centres = np.sqrt(shown_edges[:-1] * shown_edges[1:])
    for i, stats in enumerate(stats_list):
        colour = method_colour(stats["method"], i)
        curve_ax.plot(grid, _keep_curve(stats, grid), color=colour, linewidth=2.2,
                      label=f"{_method_label(stats)}: keep probability")
        # The kept fraction actually observed per bin: checks the sampler against its curve.
        scored = _merge(stats["total"]["histogram"], idx)
        kept = _merge(stats["total"]["kept_histogram"], idx)
        has_docs = scored >= MIN_DOCS_FOR_OBSERVED_FRACTION
        curve_ax.plot(centres[has_docs], kept[has_docs] / scored[has_docs], linestyle="none",
                      marker="o", markersize=4, color=colour, alpha=0.75,
                      label=f"{stats['method']}: kept fraction observed "
                            f"(bins of ≥{MIN_DOCS_FOR_OBSERVED_FRACTION} docs)")

    title = "Input perplexity distribution and keep probability"
    if len(stats_list) == 1:
        title += f" ({_method_label(base)}, seed {base.get('seed')})"
    ax.set_title(title, fontsize=11, pad=16)
    handles, labels = ax.get_legend_handles_labels()
    handles2, labels2 = curve_ax.get_legend_handles_labels()
    # Below the axes: inside, it would hide the boundary labels or the curve wherever it sat.
    fig.legend(handles + handles2, labels + labels2, loc="lower center", ncol=2, fontsize=8,
               frameon=False)
    legend_rows = (len(labels) + len(labels2) + 1) // 2
    fig.tight_layout(rect=(0, 0.012 + 0.03 * legend_rows, 1, 1))
    fig.savefig(path)


def _draw_boundaries(ax, boundaries: dict) -> None:
    source = boundaries.get("source")
    label = "quartile boundaries" + (f" (from {source})" if source else "")
    for name in ("q1", "q2", "q3"):
        value = float(boundaries[name])
        ax.axvline(value, color=BOUNDARY_COLOUR, linestyle="--", linewidth=1.1, label=label)
        label = None
        # Above the frame, where no curve or bar can cover it.
        ax.annotate(f"{name.upper()} {value:,.4g}", xy=(value, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(0, 2),
                    textcoords="offset points", fontsize=8, color=BOUNDARY_COLOUR,
                    va="bottom", ha="center")


def _panels(stats: dict) -> list[tuple[str, dict]]:
    """Splits holding documents, then the total when it differs from the only split."""
    splits = stats.get("splits") or {}
    names = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
    with_docs = [(s, splits[s]) for s in names if int(np.sum(splits[s].get("histogram", []))) > 0]
    if len(with_docs) != 1:
        with_docs.append(("total", stats["total"]))
    return with_docs or [("total", stats["total"])]


def _draw_input_vs_sampled(stats_list: Sequence[dict], path: str) -> None:
    base = stats_list[0]
    edges = np.asarray(base["histogram"]["edges"], dtype=np.float64)
    panels = _panels(base)
    idx = _display_edges(edges, [np.asarray(base["total"]["histogram"])])
    shown_edges = edges[idx]

    fig = _figure(figsize=(4.6 * len(panels) + 1.5, 7.2))
    axes = fig.subplots(2, len(panels), squeeze=False, sharex=True)
    for col, (name, _) in enumerate(panels):
        counts_ax, density_ax = axes[0, col], axes[1, col]
        input_part = _part(base, name)
        input_counts = _merge(input_part["histogram"], idx)
        n_in = int(input_part.get("scored", int(np.sum(input_part["histogram"]))))
        for ax, normalise in ((counts_ax, False), (density_ax, True)):
            ax.stairs(_normalise(input_counts, normalise), shown_edges, fill=True,
                      color=INPUT_COLOUR, alpha=0.3, label=f"input (n={n_in:,})")
            # An outline too: where a sample kept every document its line hides the fill.
            ax.stairs(_normalise(input_counts, normalise), shown_edges, color=INPUT_COLOUR,
                      linewidth=0.8, alpha=0.8)
        for i, stats in enumerate(stats_list):
            part = _part(stats, name)
            if part is None:
                continue
            kept = _merge(part["kept_histogram"], idx)
            n_kept = int(part.get("kept", int(np.sum(part["kept_histogram"]))))
            colour = method_colour(stats["method"], i)
            for ax, normalise in ((counts_ax, False), (density_ax, True)):
                ax.stairs(_normalise(kept, normalise), shown_edges, color=colour, linewidth=1.8,
                          label=f"{stats['method']} sample (n={n_kept:,})")
        counts_ax.set_title(name, fontsize=11)
        for ax in (counts_ax, density_ax):
            ax.set_xscale("log")
            ax.set_xlim(shown_edges[0], shown_edges[-1])
            ax.grid(True, which="major", axis="x", alpha=0.3)
            for q in ("q1", "q2", "q3"):
                ax.axvline(float(base["boundaries"][q]), color=BOUNDARY_COLOUR, linestyle="--",
                           linewidth=0.9, alpha=0.8)
        counts_ax.legend(fontsize=8, loc="upper right")
        density_ax.set_xlabel("perplexity (log scale)")
    axes[0, 0].set_ylabel("documents per bin")
    axes[1, 0].set_ylabel("share of the set's documents")
    fig.suptitle("Input vs sampled perplexity distribution (dashed: Q1, Q2, Q3)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path)


def _part(stats: dict, name: str) -> dict | None:
    if name == "total":
        return stats["total"]
    return (stats.get("splits") or {}).get(name)


def _normalise(counts: np.ndarray, normalise: bool) -> np.ndarray:
    if not normalise:
        return counts
    total = counts.sum()
    return counts / total if total > 0 else counts
