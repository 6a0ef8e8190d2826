"""`ppsample report --input OUT [--input OUT2 ...] [--output FILE]`: report.html of one or
several `run` / `sample` / `stats` outputs side by side (e.g. gaussian vs stepwise vs random),
from their stats.json and report.json alone: no document is read again.

`run`, `sample` and `stats` write OUT/report.html themselves (write_report_html, called by the
driver before the commit); this command never writes into an output directory.
"""
from __future__ import annotations

import sys

from pipelines.corpus_io import writers
from pipelines.report.collect import REPORT_JSON
from pipelines.report.render import REPORT_HTML, render

STATS_JSON = "stats.json"


def read_output(out_dir: str) -> tuple[dict, dict | None]:
    """(stats.json, report.json or None) of an output directory."""
    from apache_beam.io.filesystems import FileSystems

    stats = writers.read_json(writers.join(out_dir, STATS_JSON))
    report_path = writers.join(out_dir, REPORT_JSON)
    report = writers.read_json(report_path) if FileSystems.exists(report_path) else None
    return stats, report


def html_bytes(outputs: list[tuple[str, dict, dict | None]]) -> bytes:
    return render(outputs).encode("utf-8", "replace")


def write_report_html(out_dir: str, name: str | None = None) -> str | None:
    """OUT/report.html from OUT's stats.json and report.json (None: no report.json, as with
    --no-report or when nothing was scored)."""
    stats, report = read_output(out_dir)
    if report is None:
        return None
    path = writers.join(out_dir, REPORT_HTML)
    writers.write_bytes(path, html_bytes([(name or out_dir, stats, report)]))
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--input", action="append", required=True, metavar="OUT",
                        help="a `ppsample run`, `sample` or `stats` output directory (local or "
                             "gs://); repeat it to compare outputs")
    parser.add_argument("--output", default=REPORT_HTML,
                        help="the HTML file to write (default %(default)s in the current "
                             "directory)")


def main(args, _beam_argv, _argv=None) -> int:
    from apache_beam.io.filesystems import FileSystems

    from pipelines.errors import InputError

    outputs = []
    for out_dir in args.input:
        # an output's stats.json appears only when it is complete (it is committed last)
        if not FileSystems.exists(writers.join(out_dir, STATS_JSON)):
            raise InputError(f"{out_dir} holds no complete ppsample output "
                             "(no stats.json); give a `ppsample run`, `sample` or `stats` output")
        stats, report = read_output(out_dir)
        if stats.get("stage") not in ("run", "sample", "stats"):
            raise InputError(f"{out_dir} is a `ppsample {stats.get('stage')}` "
                             "output: only run, sample and stats outputs have a report")
        outputs.append((out_dir, stats, report))
    writers.write_bytes(args.output, html_bytes(outputs))
    print(f"ppsample: report of {len(outputs)} output(s) in {args.output}", file=sys.stderr)
    return 0
