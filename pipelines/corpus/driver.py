"""What the `ppsample` Beam stages do around their pipeline: check their input and output
directories, run the pipeline into a staging folder (pipelines.corpus_io.commit) with live
progress on local runners, then check the result, draw the figures and commit the output; read
stats.json back and print a summary.

Where the commit happens: on local runners, here in the driver once the pipeline succeeded. On
remote runners (Dataflow), in a last pipeline step after the one that writes stats.json (the
`WriteStats` transform), so the output is committed even when the launcher does not wait for
the job; when that step cannot be attached, the driver commits after the job, if it waited.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import sys
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import options as opts
from pipelines import progress
from pipelines import worker_watchdog
from pipelines.corpus.input_shards import SCORED_DIR
from pipelines.corpus_io import commit
from pipelines.corpus_io import mc4_io
from pipelines.corpus_io import writers
from pipelines.errors import InputError, OutputError, PpsampleError


def run_pipeline(pipeline: beam.Pipeline, options, on_submit=None) -> None:
    """Runs the pipeline to its end; `on_submit(result)` is called once it is submitted."""
    local = not opts.is_remote(options)
    if local:
        worker_watchdog.prefork_for(options)  # before progress.enable starts a thread
    progress.enable(local)
    progress.reset()
    try:
        with worker_watchdog.watching(local):  # a dead worker process stops the run
            result = pipeline.run()
            if on_submit is not None:
                on_submit(result)
            result.wait_until_finish()
    finally:
        progress.enable(False)
    state = getattr(result, "state", None)
    if state is not None and str(state) not in ("DONE", "PipelineState.DONE"):
        raise PpsampleError(f"pipeline ended in state {state}")


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


def format_parameters(parameters: dict) -> str:
    """{'factor': 87.93916769267169, 'width': 4.5} -> 'factor=87.9392 width=4.5' (6 digits, as the
    boundaries; stats.json keeps the exact values)."""
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in parameters.items())


def print_summary(stats: dict, out_dir: str, stream=None) -> None:
    total = stats["total"]
    lines = [f"ppsample: {total['read']:,} read, {total['rejected']:,} rejected, "
             f"{total['scored']:,} scored, {total['kept']:,} kept, {total['dropped']:,} dropped"]
    b = stats.get("boundaries")
    if b:
        lines.append(f"ppsample: boundaries ({b['source']}) q1={b['q1']:.6g} q2={b['q2']:.6g} "
                     f"q3={b['q3']:.6g}; {stats['method']} {format_parameters(stats['parameters'])}")
    if stats.get("target_docs"):
        lines.append(f"ppsample: target {stats['target_docs']:,} docs: expected "
                     f"{stats['target_expected_docs']:.1f}, kept {total['kept']:,}")
    if stats.get("target_tokens"):
        counted = "kept" if stats.get("kept_tokens_counted") else "kept (estimated)"
        lines.append(f"ppsample: target {stats['target_tokens']:,} {stats['token_unit']} tokens: "
                     f"expected {stats['target_expected_tokens']:,.0f}, {counted} "
                     f"{total['kept_tokens']:,}")
    from sampling.guidance import summary_warnings

    lines += [f"ppsample: {warning}" for warning in summary_warnings(stats)]
    lines.append(f"ppsample: output in {out_dir}")
    print("\n".join(lines), file=stream or sys.stderr)


_PRESET_NOT_GIVEN = object()


def check_model(source: str, preset=_PRESET_NOT_GIVEN, *, remote: bool = False) -> None:
    """Fails fast, on the launcher and before any Beam work, on a model the workers could not
    use: a bundled name or local path that does not exist, a remote model that is unreachable or
    holds no KenLM file (read from its model.json and file sizes: the multi-GB binary is not
    downloaded here), or, when the caller passes the --preset value, a model whose preset is
    neither recorded in its model.json nor given.

    A registry model (`ccnet:fr`) is downloaded here on a local runner: its workers share this
    machine's cache, so the download happens once and a wrong sha256 is refused before any
    scoring. With a `remote` runner (Dataflow) the workers download it themselves, so the
    launcher only checks the source (reachable, the published size where the registry has one)
    and never fetches the binary; the sha256 the registry pins is checked by each worker's
    download (model_sources' locked fetch), which refuses a wrong file before scoring."""
    from lm_models import model_sources

    try:
        text = str(source)
        if model_sources.is_url(text) or (remote and model_sources.is_registry_name(text)):
            recorded = model_sources.describe_remote(text)["preset"]
        else:
            files = model_sources.resolve(source)
            model_sources.check_lm_file(files.lm_path)
            recorded = (files.model_json or {}).get("preset")
    except (model_sources.ModelSourceError, ValueError) as err:
        raise InputError(str(err)) from None
    if preset is None and recorded is None:
        from lm_models.perplexity import PRESETS

        raise InputError(f"model {model_sources.redact_url(str(source))!r} has no model.json "
                         f"recording its preset: pass --preset ({', '.join(sorted(PRESETS))}); "
                         "ccnet for cc_net models, edugp for edugp/kenlm models")


def remote_runner(beam_argv) -> bool:
    """Whether the pass-through Beam flags name a remote runner (Dataflow)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return opts.is_remote(PipelineOptions(list(beam_argv)))


def exists(path: str) -> bool:
    return FileSystems.exists(path)


# ---------------------------------------------------------------------------------------------
# Staged outputs

SCORE_FIX = "ppsample score --input MC4_SHARDS --output SCORED_DIR"


@contextlib.contextmanager
def staged_output(cfg, options):
    """Checks cfg.output (refusing foreign or other-stage outputs unless --overwrite), creates
    the staging folder and yields the Staging; a failed or interrupted local run removes its
    staging folder, leaving the output exactly as it was."""
    from pipelines import dataflow  # what the Dataflow API says of jobs earlier runs left

    remote = opts.is_remote(options)
    staging = commit.begin(cfg.output, cfg.stage, overwrite=cfg.overwrite, remote=remote,
                           command=cfg.command, job_status=dataflow.job_status)
    try:
        yield staging
    except KeyboardInterrupt:
        if remote:  # the remote job keeps running and writing into its staging folder
            if staging.job:
                from pipelines import dataflow

                print(f"ppsample: Dataflow job {staging.job['job_id']} keeps running and writes "
                      f"into {staging.path}; to stop it: {dataflow.cancel_command(staging.job)} "
                      f"(the next run into {staging.out} removes that folder once the job has "
                      "ended)", file=sys.stderr)
            else:
                print(f"ppsample: the Dataflow job may still be running; it writes into "
                      f"{staging.path}", file=sys.stderr)
        else:
            staging.abort()
        raise
    except BaseException:
        staging.abort()
        raise


def run_stage(cfg, files: list[str], build, model: str | None = None) -> dict | None:
    """A corpus command's run: its PipelineOptions, the staged output, the graph
    `build(pipeline, files, cfg staged)`, the run and the commit. Returns stats.json, or None
    when a remote job was only submitted. `model`: checked by the Dataflow options."""
    options = opts.build_pipeline_options(list(cfg.beam_argv), inputs=files, output=cfg.output,
                                          model=model)
    with staged_output(cfg, options) as staging:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, files, cfg.with_out_dir(staging.path))
        return run_staged(pipeline, options, staging, figures=cfg.figures, inputs=files)


def finalize(staging, figures: bool) -> dict:
    """After a successful pipeline: refuse an output with nothing scored, draw the figures into
    the staging folder, commit. Returns stats.json."""
    stats = read_stats(staging.path)
    check_scored_something(stats, staging)
    if figures:
        write_figures(stats, staging.path)
    if stats.get("report_file"):
        from pipelines.report.command import write_report_html

        write_report_html(staging.path, name=staging.out)
    staging.commit()
    return stats


def check_scored_something(stats: dict, staging) -> None:
    total = stats.get("total") or {}
    if total.get("scored", 1):
        return
    read, stage = total.get("read", 0), staging.stage
    if not read:
        hint = "the input holds no documents; check --input"
    else:
        reasons = rejection_reasons(staging.path)
        shown = ", ".join(f"{reason} x{n:,}" for reason, n in reasons.most_common(3))
        hint = f"all {read:,} documents were rejected ({shown or 'see rejected/'})"
        if stage in ("sample", "stats"):
            hint += (f"; is the input scored? run `{SCORE_FIX}`, then "
                     f"`ppsample {stage} --input SCORED_DIR`")
        else:
            hint += "; fix --input (mC4 json lines with a string `text`) or raise --max-doc-bytes"
    raise OutputError(f"no document was scored: {hint}; {staging.out} was left as it was")


def rejection_reasons(out_dir: str, limit: int = 100_000) -> collections.Counter:
    """Dead-letter reasons in an output's rejected/*.jsonl files (the first `limit` lines)."""
    reasons = collections.Counter()
    for rel in sorted(commit.list_tree(out_dir)):
        if not (rel.startswith("rejected/") or "/rejected/" in rel) or not rel.endswith(".jsonl"):
            continue
        with FileSystems.open(writers.join(out_dir, rel)) as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if sum(reasons.values()) >= limit:
                    return reasons
                try:
                    reasons[json.loads(line).get("reason", "?")] += 1
                except (ValueError, AttributeError):
                    continue
    return reasons


# Labels of the transforms that write a stats.json (the stage's last files): the commit step
# runs after all of them.
STATS_WRITERS = ("WriteStats", "WriteScoreStats")


def attach_commit(pipeline: beam.Pipeline, staging, figures: bool) -> bool:
    """On remote runners: a last pipeline step, after every step that writes a stats.json,
    that checks, draws the figures and commits (runs on a worker; idempotent under retries).
    Returns whether it could be attached (it needs the stage's `WriteStats` /
    `WriteScoreStats` transforms)."""
    from apache_beam.pipeline import PipelineVisitor

    found = []

    class _FindStatsWriters(PipelineVisitor):
        def visit_transform(self, node):
            if node.full_label.rsplit("/", 1)[-1] in STATS_WRITERS and None in node.outputs:
                found.append(node.outputs[None])

    pipeline.visit(_FindStatsWriters())
    if not found:
        return False
    first, *others = found
    _ = first | "CommitOutput" >> beam.Map(
        _finalize_on_worker, staging, figures,
        *[beam.pvalue.AsList(other) for other in others])  # waits for every stats writer
    return True


def _finalize_on_worker(_written, staging, figures: bool, *_other_writers) -> None:
    # the launcher says what was replaced (a worker's stderr is in the job's logs)
    finalize(dataclasses.replace(staging, replacing=None), figures)


def is_committed_by(out_dir: str, staging) -> bool:
    """The job's last step committed (its staging folder is gone and a marker is there)."""
    state = commit.inspect(out_dir)
    return state.marker is not None and staging.id not in state.staging


def record_submitted(staging, result, options) -> None:
    """Records a submitted Dataflow job in its staging folder (see commit.recover)."""
    from pipelines import dataflow

    job = dataflow.submitted_job(result, options)
    if job is not None:
        staging.record_job(job)
        print(f"ppsample: Dataflow job {job['job_id']} submitted; it writes into {staging.path}",
              file=sys.stderr)


def run_staged(pipeline: beam.Pipeline, options, staging, figures: bool, inputs=()) -> dict | None:
    """Runs the pipeline into the staging folder and commits its output. Returns stats.json,
    or None when a remote job was only submitted (it commits itself when it finishes).
    `inputs`: the input files, whose sizes are the progress line's total on local runs."""
    remote = opts.is_remote(options)
    if not remote:
        progress.set_total(progress.total_input_bytes(inputs))
        progress.set_stage(staging.stage)
    in_pipeline = remote and attach_commit(pipeline, staging, figures)
    run_pipeline(pipeline, options,
                 on_submit=(lambda result: record_submitted(staging, result, options))
                 if remote else None)
    if in_pipeline:
        if is_committed_by(staging.out, staging):
            if staging.replacing:
                print(f"ppsample: {staging.replacing}", file=sys.stderr)
            return read_stats(staging.out)
        print(f"ppsample: job submitted; its output appears in {staging.out} when it finishes "
              f"(until then it is in {staging.path})", file=sys.stderr)
        return None
    if remote and not exists(writers.join(staging.path, "stats.json")):
        print(f"ppsample: job submitted; when it has finished, commit its output with "
              f"`python -m pipelines.corpus_io.commit {staging.path}`", file=sys.stderr)
        return None
    finalize(staging, figures)
    return read_stats(staging.out)


# ---------------------------------------------------------------------------------------------
# Inputs of `sample` / `stats`: scored parquet

def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _looks_like_dir(path: str) -> bool:
    if _has_glob(path):
        return False
    if commit.is_local(path):
        return os.path.isdir(path)
    return not path.lower().endswith(mc4_io.DATA_SUFFIXES) and bool(commit.list_tree(path))


def scored_input_files(spec: str, reader: str) -> list[str]:
    """The parquet files `sample`/`stats` read, checked on the launcher before Beam starts:
    a directory must be a complete `score` (or `run`, its scored/ shards) output or a folder of
    parquet files ppsample did not write; no file may lie in a staging folder; every file must
    be parquet with a `perplexity` column (an unscored input is refused with the command that
    scores it)."""
    files: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if _looks_like_dir(part):
            files += _scored_files_of_dir(part, reader)
        else:
            files += mc4_io.expand_inputs(part)
    staged = [f for f in files if f"/{commit.STAGING_DIR}/" in f.replace(os.sep, "/")]
    if staged:
        raise OutputError(f"{reader}: {staged[0]} lies in an unfinished ppsample output "
                                 f"({commit.STAGING_DIR}/); rerun the stage that writes it")
    check_scored_schema(sorted(set(files)), reader)
    return sorted(set(files))


def _scored_files_of_dir(path: str, reader: str) -> list[str]:
    fix = f"run `{SCORE_FIX}`, then `ppsample {reader} --input SCORED_DIR`"
    path = path.rstrip("/") if not commit.is_local(path) else os.path.normpath(path)
    parent, name = (os.path.split(path) if commit.is_local(path) else path.rsplit("/", 1))
    if name == SCORED_DIR and parent and commit.inspect(parent).stage == "run":
        # OUT/scored of a committed `run` output: the scored shards its marker lists
        return _committed_scored_files(parent, reader, fix)
    state = commit.inspect(path)
    if state.marker is None and not state.staging and state.legacy_stats() is None:
        return mc4_io.expand_inputs(path)  # a folder of someone's own parquet files
    state = commit.check_complete(path, want=("score", "run"), reader=reader, fix=fix)
    if state.marker is None:  # an output written before commit markers
        return mc4_io.expand_inputs(path)
    return _committed_scored_files(path, reader, fix)


def _committed_scored_files(path: str, reader: str, fix: str) -> list[str]:
    """The scored parquet a committed `score` output (or a `run` output's scored/) lists."""
    state = commit.check_complete(path, want=("score", "run"), reader=reader, fix=fix)
    listed = [rel for rel in sorted(state.marker["files"]) if mc4_io.is_parquet(rel)]
    if state.stage == "run":  # its scored shards, not its sampled ones
        listed = [rel for rel in listed if rel.startswith(SCORED_DIR + "/")]
    else:
        listed = [rel for rel in listed if not rel.startswith("rejected/")]
    if not listed:
        raise OutputError(f"{reader}: {path} (a `ppsample {state.stage}` output) lists no "
                                 f"scored parquet; {fix}")
    return [commit.join(state.path, *rel.split("/")) for rel in listed]


def check_scored_schema(files: list[str], reader: str) -> None:
    """Every input must be parquet with text and perplexity columns (footers only, read in
    parallel: thousands of shards on gs:// take seconds, not minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    fix = f"run `{SCORE_FIX}`, then `ppsample {reader} --input SCORED_DIR`"
    unscored = [f for f in files if not mc4_io.is_parquet(f)]
    if unscored:
        raise OutputError(f"{reader}: {unscored[0]} is not scored parquet "
                                 f"({len(unscored)} such input files); {fix}")

    def columns(path: str):
        import pyarrow.parquet as pq

        try:
            with mc4_io.open_binary(path) as raw:
                return path, pq.ParquetFile(raw).schema_arrow.names
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            return path, err

    with ThreadPoolExecutor(max_workers=16) as pool:
        for path, names in pool.map(columns, files):
            if isinstance(names, Exception):
                continue  # an unreadable file is the pipeline's to dead-letter, with its reason
            if "perplexity" not in names:
                raise OutputError(f"{reader}: {path} has no `perplexity` column (columns: "
                                         f"{', '.join(names[:6])}): unscored input; {fix}")
