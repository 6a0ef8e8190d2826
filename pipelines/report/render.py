"""report.html, drawn in the driver from stats.json and report.json alone (as the PNG figures
are from stats.json): one self-contained page, no script, no external resource (a
Content-Security-Policy forbids both), figures as inline SVG with fixed-precision numbers, so
the same outputs give the same bytes.

Every string that comes from the data (excerpts, urls, hosts, the command line) goes through
html.escape: a document holding `<script>` or `</textarea>` is shown as text. Urls are shown,
never linked (a `javascript:` url would otherwise be one click from running).
"""
from __future__ import annotations

import html
import math

import numpy as np

from pipelines.corpus import plots
from sampling import libm
from sampling.boundaries import BAND_LABELS

REPORT_HTML = "report.html"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
WIDTH, HEIGHT, PAD = 720, 260, 48
STYLE = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1000px;color:#222;line-height:1.35}
h1{font-size:1.5em}h2{border-bottom:2px solid #1f77b4;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:right;font-size:.9em}th{background:#f2f2f2}td.l,th.l{text-align:left}
.doc{border:1px solid #ddd;border-left:4px solid #999;margin:.5em 0;padding:.3em .6em}
.doc.kept{border-left-color:#2ca02c}.doc.dropped{border-left-color:#d62728}
.meta{font-size:.85em;color:#555;word-break:break-all}
pre.excerpt{white-space:pre-wrap;word-break:break-word;font-size:.85em;margin:.3em 0}
.note{color:#666;font-size:.9em}svg{display:block}
""".strip()


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(part, whole) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "–"


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return f"{value:,}"


def _table(header: list[str] | None, rows: list[list[str]], left: int = 1) -> str:
    """Cells are HTML already (escaped by the caller); the first `left` columns align left."""
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>"
                   for i, h in enumerate(header or []))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


# --- figures ---------------------------------------------------------------------------------

def _x(pp, lo: float, hi: float) -> np.ndarray:
    span = math.log10(hi) - math.log10(lo)
    return PAD + (libm.log10(pp) - math.log10(lo)) / span * (WIDTH - 2 * PAD)


def _y(fraction) -> np.ndarray:
    return HEIGHT - PAD + np.asarray(fraction) * -(HEIGHT - 2 * PAD)


def histogram_svg(stats_list: list[dict], labels: list[str]) -> str:
    """The input histogram (bars, kept documents darker for one output), the quartile
    boundaries and each output's keep-probability curve, on a log perplexity axis."""
    base = stats_list[0]
    edges = np.asarray(base["histogram"]["edges"], dtype=np.float64)
    idx = plots._display_edges(edges, [np.asarray(base["total"]["histogram"])])
    shown = edges[idx]
    lo, hi = float(shown[0]), float(shown[-1])
    counts = plots._merge(base["total"]["histogram"], idx)
    top = max(float(counts.max()), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="perplexity histogram">',
             f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}" '
             'fill="none" stroke="#999"/>']
    x0, x1 = _x(shown[:-1], lo, hi), _x(shown[1:], lo, hi)
    kept = plots._merge(base["total"]["kept_histogram"], idx) if len(stats_list) == 1 else None
    for i in range(len(counts)):
        for value, colour in ((counts[i], "#9ecae1"), (kept[i] if kept is not None else 0,
                                                         "#1f77b4")):
            if value > 0:
                y = float(_y(value / top))
                parts.append(f'<rect x="{x0[i]:.1f}" y="{y:.1f}" width="{x1[i] - x0[i]:.1f}" '
                             f'height="{HEIGHT - PAD - y:.1f}" fill="{colour}"/>')
    for row, name in enumerate(("q1", "q2", "q3")):
        value = float(base["boundaries"][name])
        if lo < value < hi:
            x = float(_x(value, lo, hi))
            # one row per label: close boundaries would print over each other
            parts.append(f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{HEIGHT - PAD}" '
                         'stroke="#444" stroke-dasharray="4 3"/>'
                         f'<text x="{x:.1f}" y="{PAD - 26 + 11 * row}" font-size="10" '
                         'text-anchor="middle">'
                         f'{name.upper()} {value:,.4g}</text>')
    grid = np.geomspace(lo, hi, 200)
    gx = _x(grid, lo, hi)
    for i, stats in enumerate(stats_list):
        curve = plots._keep_curve(stats, grid)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(gx, _y(curve)))
        colour = plots.method_colour(stats["method"], i)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        parts.append(f'<text x="{WIDTH - PAD + 4}" y="{PAD + 12 + 12 * i}" font-size="10" '
                     f'fill="{colour}" text-anchor="end" transform="translate(-8,0)">'
                     f'{esc(labels[i])}</text>')
    for decade in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1):
        x = float(_x(10.0 ** decade, lo, hi))
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - PAD + 14}" font-size="10" '
                     f'text-anchor="middle">1e{decade}</text>')
    parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 8}" font-size="11" '
                 'text-anchor="middle">perplexity (log scale); bars: documents '
                 '(dark: kept); lines: keep probability (0 to 1)</text>')
    parts.append(f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">1</text>'
                 f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" font-size="10" text-anchor="end">0'
                 '</text></svg>')
    return "".join(parts)


def lengths_svg(counts: list[int], kept: list[int]) -> str:
    """A small bar chart of n_tokens per log2 bin (all documents light, kept dark)."""
    w, h, n = 168, 28, len(counts)
    top = max(max(counts), 1)
    bars = []
    for i, (c, k) in enumerate(zip(counts, kept)):
        for value, colour in ((c, "#bbb"), (k, "#2ca02c")):
            if value:
                bh = max(1.0, h * value / top)
                bars.append(f'<rect x="{i * w / n:.1f}" y="{h - bh:.1f}" width="{w / n - 1:.1f}" '
                            f'height="{bh:.1f}" fill="{colour}"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}">{"".join(bars)}</svg>')


def _median_length(counts: list[int]) -> str:
    total = sum(counts)
    if not total:
        return "–"
    running = 0
    for i, c in enumerate(counts):
        running += c
        if 2 * running >= total:
            return "≤ 1" if i == 0 else f"{2 ** (i - 1) + 1:,}–{2 ** i:,}"
    return "–"


# --- sections --------------------------------------------------------------------------------

def output_label(stats: dict) -> str:
    return f"{stats.get('stage')}: {plots._method_label(stats)}, seed {stats.get('seed')}"


def _summary(stats: dict, name: str) -> str:
    total, b = stats["total"], stats.get("boundaries") or {}
    rows = [["output", esc(name)], ["command", f"<code>{esc(stats.get('command', ''))}</code>"],
            ["method", esc(plots._method_label(stats))], ["seed", esc(stats.get("seed"))],
            ["documents read / rejected / scored", f"{total['read']:,} / {total['rejected']:,}"
                                                   f" / {total['scored']:,}"],
            ["kept", f"{total['kept']:,} ({_pct(total['kept'], total['scored'])})"],
            ["tokens kept", f"{total.get('tokens_kept', 0):,} of "
                            f"{total.get('tokens_scored', 0):,}"],
            ["boundaries", esc(f"Q1 {b.get('q1', 0):,.6g}, Q2 {b.get('q2', 0):,.6g}, "
                               f"Q3 {b.get('q3', 0):,.6g} ({b.get('source')})") if b else "–"]]
    if stats.get("dry_run"):
        rows.append(["note", "ppsample stats: kept counts are what `sample` would keep"])
    return _table(None, rows, left=2)


def _bands_table(bands: list[dict]) -> str:
    rows = []
    for band in bands:
        rows.append([esc(band["band"]), _num(band["documents"]), _num(band["kept"]),
                     _pct(band["kept"], band["documents"]), _num(band["tokens"]),
                     _pct(band["tokens_kept"], band["tokens"]),
                     _median_length(band["length_log2_tokens"]),
                     lengths_svg(band["length_log2_tokens"], band["length_log2_tokens_kept"])])
    return _table(["band", "documents", "kept", "kept fraction", "tokens", "tokens kept",
                   "median tokens", "length (log2 tokens; green: kept)"], rows)


def _domains(bands: list[dict]) -> str:
    out = []
    for band in bands:
        rows = [[esc(d["host"]), _num(d["documents"]), _num(d["kept"]),
                 _pct(d["kept"], d["documents"])] for d in band["top_domains"]]
        other = band["other_domains"]
        rows.append(["<i>other hosts, no url</i>", _num(other["documents"]), _num(other["kept"]),
                     _pct(other["kept"], other["documents"])])
        out.append(f"<h4>{esc(band['band'])}</h4>"
                   + _table(["host", "documents", "kept", "kept fraction"], rows))
    return "".join(out)


def _example(decision: str, which: str, e: dict | None) -> str:
    if e is None:
        return ""
    more = " …" if e.get("truncated") else ""
    return (f'<div class="doc {decision}"><div class="meta"><b>{which}, {decision}</b> · '
            f'perplexity {e["perplexity"]:,.6g} · {e["n_tokens"]:,} tokens · '
            f'{esc(e["split"])} · {esc(e["url"]) or "(no url)"}</div>'
            f'<pre class="excerpt">{esc(e["excerpt"])}{more}</pre></div>')


def _examples(bands: list[dict]) -> str:
    out = []
    for band in bands:
        docs = "".join(_example(decision, which, band["examples"][decision][which])
                       for decision in ("kept", "dropped")
                       for which in ("lowest", "median", "highest"))
        out.append(f"<h4>{esc(band['band'])}</h4>{docs or '<p class=note>no documents</p>'}")
    return "".join(out)


def _quartiles(report: dict) -> list[dict]:
    return report["bands"][:4]  # collect.BANDS: the 4 quartile bands, then the 10 deciles


def output_section(index: int, name: str, stats: dict, report: dict | None) -> str:
    sid = f"o{index}"
    parts = [f'<section class="output" id="{sid}"><h2>{esc(output_label(stats))}</h2>',
             f'<section id="{sid}-summary"><h3>Summary</h3>{_summary(stats, name)}</section>']
    if stats.get("boundaries") and stats["total"]["scored"]:
        parts.append(f'<section id="{sid}-histogram"><h3>Perplexity histogram and keep '
                     f'probability</h3>{histogram_svg([stats], [plots._method_label(stats)])}'
                     "</section>")
    if report is None:
        parts.append('<p class="note">No report.json beside stats.json (written with '
                     '--no-report, or by an older ppsample): bands, domains and examples are '
                     "not shown.</p></section>")
        return "".join(parts)
    quartiles, deciles = _quartiles(report), report["bands"][4:]
    parts += [f'<section id="{sid}-quartiles"><h3>Quartile bands</h3>{_bands_table(quartiles)}'
              "</section>",
              f'<section id="{sid}-deciles"><h3>Decile bands</h3>{_bands_table(deciles)}'
              "</section>",
              f'<section id="{sid}-domains"><h3>Top domains per quartile band</h3>'
              f'<p class="note">Exact counts of the {report["candidate_domains"]} hosts most '
              "frequent in some input shard.</p>"
              f"{_domains(quartiles)}<details><summary>per decile band</summary>"
              f"{_domains(deciles)}</details></section>",
              f'<section id="{sid}-examples"><h3>Example documents per quartile band</h3>'
              '<p class="note">Lowest, median and highest perplexity, kept and dropped; the '
              "median is that of a deterministic sample (smallest hash of seed and document "
              f"key); excerpts of up to {report['excerpt_chars']} characters.</p>"
              f"{_examples(quartiles)}<details><summary>per decile band</summary>"
              f"{_examples(deciles)}</details></section></section>"]
    return "".join(parts)


def comparison_section(outputs: list[tuple[str, dict, dict | None]]) -> str:
    stats_list = [s for _, s, _ in outputs]
    labels = [f"{i + 1}: {plots._method_label(s)}" for i, s in enumerate(stats_list)]
    rows = []
    for (name, stats, report), label in zip(outputs, labels):
        total = stats["total"]
        row = [esc(label), esc(name), _num(total["scored"]), _num(total["kept"]),
               _pct(total["kept"], total["scored"])]
        quartiles = _quartiles(report) if report else [None] * 4
        row += [_pct(b["kept"], b["documents"]) if b else "–" for b in quartiles]
        rows.append(row)
    figure = ""
    if all(s.get("boundaries") and s["total"]["scored"] for s in stats_list):
        figure = histogram_svg(stats_list, labels)
    return ('<section id="comparison"><h2>Comparison</h2>'
            + _table(["output", "directory", "scored", "kept", "kept fraction",
                      *[f"kept in {esc(label)}" for label in BAND_LABELS]], rows, left=2)
            + figure + "</section>")


def render(outputs: list[tuple[str, dict, dict | None]]) -> str:
    """The page for (name, stats.json, report.json or None) of one or several outputs."""
    body = ["<h1>ppsample report</h1>"]
    if len(outputs) > 1:
        body.append(comparison_section(outputs))
    body += [output_section(i + 1, name, stats, report)
             for i, (name, stats, report) in enumerate(outputs)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width">'
            f"<title>ppsample report</title><style>{STYLE}</style></head><body>"
            + "".join(body) + "</body></html>\n")
