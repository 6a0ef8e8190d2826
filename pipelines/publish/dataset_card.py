"""The dataset card (README.md) of a published sample, generated from stats.json alone.

Its YAML header declares one config per method with explicit parquet `data_files`, so
`datasets.load_dataset(repo, "gaussian")` needs no loading script (datasets >= 4 runs none).
The body says what was sampled from what, with which model, boundaries, method parameters and
seed, what was kept per split and per perplexity band, how to reproduce it, and under which
licence and attribution the text may be used.
"""
from __future__ import annotations

import html
import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

MC4_ATTRIBUTION = """\
The documents come from **mC4** (the multilingual Colossal Clean Crawled Corpus, Spanish part),
released by AllenAI under the [ODC-BY 1.0](https://opendatacommons.org/licenses/by/1-0/)
licence; by using it you are also bound by the
[Common Crawl terms of use](https://commoncrawl.org/terms-of-use) of the underlying pages.
mC4 was introduced in Xue et al., 2021, *mT5: A massively multilingual pre-trained
text-to-text transformer* (NAACL). Perplexity sampling follows BERTIN (de la Rosa et al., 2022,
*BERTIN: Efficient Pre-Training of a Spanish Language Model using Perplexity Sampling*,
Procesamiento del Lenguaje Natural 68).
"""

# The bundled sample is a slice of ../shared/data/es/web.jsonl.gz; its SOURCES.md requires this
# attribution on anything shipped from it. A SOURCES.md shipped beside the bundled sample, when
# present, is used verbatim instead (it is the authoritative copy).
BUNDLED_ATTRIBUTION = """\
The documents come from the small Spanish web-like sample bundled with `ppsample` (mC4 layout,
real text written by people, mixed quality on purpose). Each part keeps its own licence:

| part | source | licence |
|---|---|---|
| Spanish Fake News Corpus v2 (news and hoax sites, with URLs) | jpposadas/FakeNewsCorpusSpanish | CC BY 4.0 |
| Whole rendered help pages (libreoffice-help-es, freedombox-doc-es, aptitude-doc-es), navigation kept | Debian packages of those names | MPL-2.0, CC BY-SA 3.0 / GPL-3+, GPL-2+ |
| fortunes-es, 12 quotes per document | Debian fortunes-es | GPL-2+ |
| OSCAR 2019 es sample documents (Common Crawl spam) | huggingface/datasets test fixtures | CC0 metadata |

Perplexity sampling follows BERTIN (de la Rosa et al., 2022, *BERTIN: Efficient Pre-Training of
a Spanish Language Model using Perplexity Sampling*, Procesamiento del Lenguaje Natural 68).
"""

BERTIN_CREDIT = """\
Perplexity sampling follows BERTIN (de la Rosa et al., 2022, *BERTIN: Efficient Pre-Training of
a Spanish Language Model using Perplexity Sampling*, Procesamiento del Lenguaje Natural 68).
"""

BAND_NAMES = ("<=Q1", "(Q1,Q2]", "(Q2,Q3)", ">=Q3")


@dataclass(frozen=True)
class CardConfig:
    """One config of the repo: a method's stats and its parquet targets per split."""

    method: str
    stats: dict
    data_files: dict[str, list[str]]
    report: dict | None = None  # the output's report.json (pipelines.report), when it has one


def render_card(configs: list[CardConfig], repo_id: str, figures_dir: str = "figures",
                publish_command: str | None = None, include_json_shards: bool = False,
                generator_mark: str = "", report_file: str | None = None) -> str:
    if not configs:
        raise ValueError("a dataset card needs at least one config")
    kinds = {input_kind(c.stats) for c in configs}
    # Mixed inputs get the most restrictive statement: "other" > "bundled" > "mc4".
    kind = "other" if "other" in kinds else "bundled" if "bundled" in kinds else "mc4"
    header = _yaml_header(configs, kind)
    methods = ", ".join(f"`{c.method}`" for c in configs)
    first = configs[0]
    model = first.stats.get("model") or {}
    preset = first.stats.get("preset") or model.get("preset")
    inputs = sorted({_input_description(c.stats) for c in configs})

    out: list[str] = ["---", header.rstrip("\n"), "---", ""]
    if generator_mark:
        out += [generator_mark, ""]
    out += [
        f"# {_pretty_name(repo_id)}",
        "",
        f"Documents of {' and '.join(inputs)} kept by **perplexity sampling** (BERTIN-style): every "
        "document was scored with a KenLM n-gram model trained on clean Spanish prose and kept "
        "with a probability that depends on its perplexity, to favour well-formed text without "
        f"keeping only the most formulaic. One config per sampling method: {methods}.",
        "",
        "## Configs and splits",
        "",
        "| config | split | documents | tokens (KenLM) | parquet shards |",
        "|---|---|---:|---:|---:|",
    ]
    for c in configs:
        for split, targets in c.data_files.items():
            part = c.stats["splits"][split]
            out.append(f"| `{c.method}` | {split} | {part['kept']:,} | {part['tokens_kept']:,} "
                       f"| {len(targets)} |")
    out += [
        "",
        "Columns: `text` (the document, lines separated by `\\n`), `url`, `timestamp` (as in mC4; "
        "may be null), `perplexity` (float64, not rounded), `n_tokens` (KenLM length: "
        "SentencePiece pieces + 1 per scored line).",
        "",
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_id}", "{first.method}")',
        f'train = load_dataset("{repo_id}", "{first.method}", split="train", streaming=True)',
        "```",
        "",
        "## Figures",
        "",
        f"![Input perplexity histogram with the quartile boundaries and each method's keep "
        f"probability]({figures_dir}/perplexity_histogram.png)",
        "",
        "The input perplexity distribution (log axis), the quartile boundaries Q1, Q2, Q3, each "
        "method's keep-probability curve, and the kept fraction observed per bin.",
        "",
        f"![Input vs sampled perplexity distributions]({figures_dir}/input_vs_sampled.png)",
        "",
    ]
    out += _report_lines(configs, report_file)
    out += [
        "## How it was made",
        "",
        "### Perplexity model",
        "",
    ]
    out += _model_lines(model, preset)
    out += ["", "### Perplexity boundaries", ""]
    out += _boundary_lines(configs)
    out += ["", "### Sampling", "", "| config | method | parameters | seed | target documents "
            "| expected kept | kept |", "|---|---|---|---:|---:|---:|---:|"]
    for c in configs:
        s = c.stats
        params = ", ".join(f"{k}={_num(v)}" for k, v in (s.get("parameters") or {}).items()
                           if v is not None) or "defaults"
        target = s.get("target_docs")
        expected = s.get("expected_kept")
        out.append(f"| `{c.method}` | {s['method']} | {params} | {s['seed']} | "
                   f"{'-' if target is None else f'{target:,}'} | "
                   f"{'-' if expected is None else f'{expected:,.1f}'} | {s['total']['kept']:,} |")
    out += ["", "A document is kept iff its uniform draw, a pure function of (seed, document key: "
            "url, or text when the url is empty), is below its keep probability; the same input "
            "and seed keep the same documents on any runner.", "",
            "### Documents and tokens per split", "",
            "| config | split | read | rejected | scored | kept | dropped | kept % | "
            "tokens scored | tokens kept |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in configs:
        parts = [(s, c.stats["splits"][s]) for s in _ordered(c.stats["splits"])]
        for name, part in parts + [("**total**", c.stats["total"])]:
            out.append(
                f"| `{c.method}` | {name} | {part['read']:,} | {part['rejected']:,} | "
                f"{part['scored']:,} | {part['kept']:,} | {part['dropped']:,} | "
                f"{_pct(part['kept'], part['scored'])} | {part['tokens_scored']:,} | "
                f"{part['tokens_kept']:,} |")
    budgeted = [c for c in configs if c.stats.get("target_tokens") is not None]
    if budgeted:
        out += ["", "### Token budget", "",
                "| config | split | target | unit | expected kept tokens | kept tokens |",
                "|---|---|---:|---|---:|---:|"]
        for c in budgeted:
            s = c.stats
            counted = "" if s.get("kept_tokens_counted", True) else " (estimated)"
            for name, part in [(x, s["splits"][x]) for x in _ordered(s["splits"])] + [("**total**", s["total"])]:
                out.append(f"| `{c.method}` | {name} | {s['target_tokens']:,} | {s['token_unit']} | "
                           f"{part.get('expected_kept_tokens', 0):,.0f} | "
                           f"{part.get('kept_tokens', 0):,}{counted} |")
        estimate = budgeted[0].stats.get("token_estimate")
        if estimate and estimate.get("measured_error") is not None:
            out += ["", f"GPT-2 tokens were estimated from KenLM pieces, calibrated on a "
                        f"{estimate['rate']:.0%} subsample ({estimate['calibration_documents']:,} "
                        f"documents); measured error on its held-out half: "
                        f"{estimate['measured_error']:.2%}."]
    out += ["", "Rejected documents (unreadable or empty) were not scored; they are listed with "
            "the reason in the sampled output's `rejected/` folder, not published.", "",
            "### Kept fraction per perplexity band", "",
            "| config | band | scored | kept | expected keep rate | actual keep rate |",
            "|---|---|---:|---:|---:|---:|"]
    for c in configs:
        for i, band in enumerate(c.stats["total"].get("bands") or []):
            name = band.get("band", BAND_NAMES[i] if i < len(BAND_NAMES) else str(i))
            out.append(f"| `{c.method}` | {name} | {band.get('scored', 0):,} | "
                       f"{band.get('kept', 0):,} | {_rate(band.get('expected_keep_rate'))} | "
                       f"{_rate(band.get('actual_keep_rate'))} |")
    out += ["", "## Reproduce", "", "Each config was produced by (`ppsample` "
            f"{first.stats.get('version', '')}):", ""]
    for c in configs:
        command = c.stats.get("command")
        out += [f"`{c.method}`:", "", "```bash",
                public_command(command) if command else "(command not recorded)", "```", ""]
    if publish_command:
        out += ["and published with:", "", "```bash", public_command(publish_command), "```",
                ""]
    out += ["## Files", "", "- `{config}/{split}-NNNNN-of-NNNNN.parquet`: the documents.",
            "- `{config}/stats.json`: the full statistics the card was generated from "
            "(histograms on fixed log10 bins, counts, bands, model description).",
            f"- `{figures_dir}/*.png`: the figures above."]
    if report_file:
        out.append(f"- `{report_file}`: the report of every config (open it in a browser; "
                   "no script, no network).")
    if include_json_shards:
        out.append("- `{config}/json/*.json.gz`: the same documents in BERTIN's mC4 layout "
                   "(`text`, `timestamp`, `url` per line), for tools that read mC4 shards.")
    out += ["", "## Licence and attribution", ""]
    out += [{"mc4": MC4_ATTRIBUTION, "bundled": _bundled_attribution(),
             "other": OTHER_ATTRIBUTION}[kind]]
    return "\n".join(out).rstrip("\n") + "\n"


def _md_cell(text) -> str:
    """Text from the data (a url host) inside a markdown table: no HTML, no cell break."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def _report_lines(configs: list[CardConfig], report_file: str | None) -> list[str]:
    """The report's key figures (per quartile band: kept fraction and top hosts) and a link."""
    if not report_file:
        return []
    out = ["## Report", "",
           f"[{report_file}]({report_file}) shows, for every config, the histogram with the "
           "boundaries and the keep-probability curve, and per quartile and decile band the "
           "documents, kept fraction, tokens, length distribution, top url hosts and example "
           "documents (lowest, median and highest perplexity, kept and dropped). Its key "
           "figures:", "",
           "| config | band | documents | kept % | top hosts (kept %) |", "|---|---|---:|---:|---|"]
    for c in configs:
        for band in (c.report or {}).get("bands", [])[:4]:  # the quartile bands
            hosts = ", ".join(f"{_md_cell(d['host'])} ({_pct(d['kept'], d['documents'])})"
                              for d in band.get("top_domains", [])[:3]) or "-"
            out.append(f"| `{c.method}` | {_md_cell(band['band'])} | {band['documents']:,} | "
                       f"{_pct(band['kept'], band['documents'])} | {hosts} |")
    return out + [""]


def _yaml_header(configs: list[CardConfig], kind: str) -> str:
    total_docs = sum(c.stats["total"]["kept"] for c in configs)
    meta: dict = {
        "language": [configs[0].stats.get("language") or "es"],
        "multilinguality": ["monolingual"],
        "task_categories": ["text-generation", "fill-mask"],
        "pretty_name": f"mC4-{configs[0].stats.get('language') or 'es'} sampled by perplexity",
        "size_categories": [_size_category(total_docs)],
        "tags": ["perplexity-sampling", "kenlm"] + (["mc4"] if kind == "mc4" else []),
    }
    if kind == "mc4":
        meta["license"] = "odc-by"
        meta["source_datasets"] = ["mc4"]
    elif kind == "bundled":
        meta["license"] = "other"
        meta["license_name"] = "mixed-open-licences"
    else:
        meta["license"] = "other"
        meta["license_name"] = "see-source"
    meta["configs"] = [
        {
            "config_name": c.method,
            "data_files": [{"split": split, "path": list(targets)}
                           for split, targets in c.data_files.items()],
            **({"default": True} if i == 0 else {}),
        }
        for i, c in enumerate(configs)
    ]
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                        (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < limit:
            return name
    return "1B<n<10B"


def _pretty_name(repo_id: str) -> str:
    return repo_id.split("/", 1)[1]


def _input_paths(stats: dict) -> list[str]:
    recorded = stats.get("input")
    if isinstance(recorded, str):
        return [recorded]
    if isinstance(recorded, list):
        return [str(p) for p in recorded]
    try:
        argv = shlex.split(stats.get("command") or "")
    except ValueError:
        return []
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--input"] + \
        [a.split("=", 1)[1] for a in argv if a.startswith("--input=")]


def input_kind(stats: dict) -> str:
    """"bundled", "mc4" or "other": decides the licence and attribution the card states."""
    paths = _input_paths(stats)
    # `ppsample run` with no --input samples the bundled data; the bundled sample and the shared
    # data it was cut from are both named web.jsonl.gz.
    if not paths or any("bundled" in p or p.rsplit("/", 1)[-1] == "web.jsonl.gz" for p in paths):
        return "bundled"
    if all("c4" in p.lower() for p in paths):
        return "mc4"
    return "other"


def _input_description(stats: dict) -> str:
    paths = _input_paths(stats)
    if not paths or any("bundled" in p for p in paths):
        return "the Spanish web sample bundled with `ppsample`"
    return ", ".join(f"`{public_path(p)}`" for p in paths)


# ---------------------------------------------------------------------------------------------
# The launcher's machine stays off the card: a local absolute path (/home/me/corpus/...) says
# who ran it and where, and means nothing to a reader. URLs lose credentials and query strings
# (a presigned URL's signature is a secret).

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def is_local_absolute(value: str) -> bool:
    return value.startswith(("/", "~")) or bool(_WINDOWS_DRIVE.match(value))


def public_path(value: str) -> str:
    """A path or URL as the card shows it: a URL without user, password, query or fragment; a
    local absolute path, or a relative one that climbs out with '..', as its last component
    (a glob or folder name keeps its meaning: `c4-es.*.json.gz`, `sampled/`); anything else
    (a bundled name, a plain relative path) as it is."""
    if not isinstance(value, str) or not value:
        return value
    if _SCHEME.match(value):
        parts = urlsplit(value)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    normal = value.replace("\\", "/")
    if is_local_absolute(value) or ".." in normal.split("/"):
        trailing = "/" if normal.endswith("/") else ""
        base = posixpath.basename(normal.rstrip("/"))
        return (base + trailing) if base not in ("", "~", "..", ".") else "<local path>"
    return value


def public_command(command: str) -> str:
    """A recorded command line with every path argument made public (see public_path)."""
    try:
        argv = shlex.split(command)
    except ValueError:  # not shell syntax: hide what looks like a path, word by word
        return " ".join(public_path(w) if is_local_absolute(w) or _SCHEME.match(w) else w
                        for w in command.split())
    out = []
    for arg in argv:
        if arg.startswith("-") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={public_path(value)}")
        elif "," in arg and any(public_path(p) != p for p in arg.split(",")):
            out.append(",".join(public_path(p) for p in arg.split(",")))  # comma-separated globs
        else:
            out.append(public_path(arg))
    return shlex.join(out)


def _public_json(value):
    """model.json content with local paths made public (its training `source`, for one)."""
    if isinstance(value, dict):
        return {k: _public_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public_json(v) for v in value]
    if isinstance(value, str) and (is_local_absolute(value) or _SCHEME.match(value)):
        return public_path(value)
    return value


OTHER_ATTRIBUTION = """\
The input is neither mC4 nor the bundled sample: the licence and attribution of its source apply
to these documents; check them before using or redistributing this dataset. Perplexity sampling
follows BERTIN (de la Rosa et al., 2022, *BERTIN: Efficient Pre-Training of a Spanish Language
Model using Perplexity Sampling*, Procesamiento del Lenguaje Natural 68).
"""


def _bundled_attribution() -> str:
    shipped = sorted((Path(__file__).parents[1] / "bundled").glob("**/SOURCES.md"))
    if shipped:
        text = shipped[0].read_text(encoding="utf-8").strip()
        # Demote its headings below the card's "Licence and attribution" section.
        demoted = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
        return demoted + "\n\n" + BERTIN_CREDIT
    return BUNDLED_ATTRIBUTION


def _model_lines(model: dict, preset) -> list[str]:
    lines = [f"- source: `{public_path(model.get('source', 'unknown'))}`",
             f"- normalisation preset: `{preset}`"]
    files = model.get("files")
    if isinstance(files, dict):
        for name, info in files.items():
            lines.append(f"- file `{name}`: {_describe_file(info)}")
    elif isinstance(files, list):
        for info in files:
            name = info.get("name") or info.get("path") if isinstance(info, dict) else info
            lines.append(f"- file `{name}`: {_describe_file(info)}")
    if model.get("source") == "es-reference":
        lines.append("- the bundled `es-reference` model was trained on clean Spanish prose (UD "
                     "treebanks, the UDHR, Debian documentation, public-domain novels); its "
                     "sources and licences are in `lm_models/bundled/es-reference/SOURCES.md` "
                     "of `ppsample`")
    extra = model.get("model.json") or model.get("model_json")
    if extra:
        lines += ["", "`model.json`:", "", "```json", json.dumps(_public_json(extra), indent=2,
                  ensure_ascii=False, sort_keys=True), "```"]
    return lines


def _describe_file(info) -> str:
    if not isinstance(info, dict):
        return str(info)
    bits = []
    if "size" in info:
        bits.append(f"{info['size']:,} bytes")
    for key in ("sha256", "sha"):
        if key in info:
            bits.append(f"sha256 `{info[key]}`")
            break
    return ", ".join(bits) or json.dumps(info, sort_keys=True)


def _boundary_lines(configs: list[CardConfig]) -> list[str]:
    lines = ["| config | Q1 | Q2 (median) | Q3 | from | resolution |", "|---|---:|---:|---:|---|---:|"]
    for c in configs:
        b = c.stats["boundaries"]
        lines.append(f"| `{c.method}` | {_num(b['q1'])} | {_num(b['q2'])} | {_num(b['q3'])} | "
                     f"{b.get('source', '-')} | {_num(b.get('resolution', '-'))} |")
    lines += ["", "`histogram`: quartiles of the input's perplexity histogram; `user`: given on "
              "the command line; `bertin`: BERTIN's published mC4-es quartiles."]
    return lines


def _ordered(splits: dict) -> list[str]:
    order = ("train", "validation")
    return [s for s in order if s in splits] + sorted(s for s in splits if s not in order)


def _num(value) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _rate(value) -> str:
    return "-" if value is None else f"{float(value):.3f}"
