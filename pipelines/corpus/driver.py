"""What the `ppsample` Beam stages do around their pipeline: clear stale outputs, run with live
progress on local runners, then read stats.json back, draw the figures and print a summary."""
from __future__ import annotations

import os
import sys
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import options as opts
from pipelines import progress
from pipelines.corpus_io import writers

# Names a sampled / scored output directory holds; removed before a run writes it again.
SAMPLED_OUTPUTS = ("*-shard-*-of-*.json.gz", "parquet/*/part-*-of-*.parquet", "rejected/*.jsonl",
                   "stats.json", "perplexity_histogram.png", "input_vs_sampled.png")
SCORED_OUTPUTS = ("part-*-of-*.parquet", "rejected/*.jsonl", "stats.json")


def prepare_output(out_dir: str, patterns) -> None:
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)
    writers.clear_outputs(out_dir, patterns)


def run_pipeline(pipeline: beam.Pipeline, options) -> None:
    local = not opts.is_remote(options)
    progress.enable(local)
    progress.reset()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        progress.enable(False)
    state = getattr(result, "state", None)
    if state is not None and str(state) not in ("DONE", "PipelineState.DONE"):
        raise SystemExit(f"ppsample: pipeline ended in state {state}")


def read_stats(out_dir: str) -> dict:
    return writers.read_json(writers.join(out_dir, "stats.json"))


def write_figures(stats: dict, out_dir: str) -> list[str]:
    """The figures beside stats.json (drawn here, in the driver, from stats.json alone)."""
    from pipelines.corpus.plots import write_figures as draw  # lazy: matplotlib only when drawing

    if not stats.get("boundaries") or not stats["total"]["scored"]:
        print("ppsample: no document was scored: no figures", file=sys.stderr)
        return []
    if "://" not in out_dir:
        return draw(stats, out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for local in draw(stats, tmp):
            remote = writers.join(out_dir, os.path.basename(local))
            with open(local, "rb") as f:
                writers.write_bytes(remote, f.read())
            paths.append(remote)
        return paths


def print_summary(stats: dict, out_dir: str, stream=sys.stderr) -> None:
    total = stats["total"]
    lines = [f"ppsample: {total['read']:,} read, {total['rejected']:,} rejected, "
             f"{total['scored']:,} scored, {total['kept']:,} kept, {total['dropped']:,} dropped"]
    b = stats.get("boundaries")
    if b:
        lines.append(f"ppsample: boundaries ({b['source']}) q1={b['q1']:.6g} q2={b['q2']:.6g} "
                     f"q3={b['q3']:.6g}; {stats['method']} {stats['parameters']}")
    if stats.get("target_docs"):
        lines.append(f"ppsample: target {stats['target_docs']:,} docs: expected "
                     f"{stats['target_expected_docs']:.1f}, kept {total['kept']:,}")
    lines.append(f"ppsample: output in {out_dir}")
    print("\n".join(lines), file=stream)


_PRESET_NOT_GIVEN = object()


def check_model(source: str, preset=_PRESET_NOT_GIVEN) -> None:
    """Fails fast, on the launcher and before any Beam work, on a model the workers could not
    use: a bundled name or local path that does not exist, a remote model that is unreachable or
    holds no KenLM file (read from its model.json and file sizes: the multi-GB binary is not
    downloaded here), or, when the caller passes the --preset value, a model whose preset is
    neither recorded in its model.json nor given."""
    from lm_models import model_sources

    try:
        if model_sources.is_url(str(source)):
            recorded = model_sources.describe_remote(str(source))["preset"]
        else:
            recorded = (model_sources.resolve(source).model_json or {}).get("preset")
    except (model_sources.ModelSourceError, ValueError) as err:
        raise SystemExit(f"ppsample: error: {err}") from None
    if preset is None and recorded is None:
        from lm_models.perplexity import PRESETS

        raise SystemExit(f"ppsample: error: model {source!r} has no model.json recording its "
                         f"preset: pass --preset ({', '.join(sorted(PRESETS))}); ccnet for "
                         "cc_net models, edugp for edugp/kenlm models")


def exists(path: str) -> bool:
    return FileSystems.exists(path)
