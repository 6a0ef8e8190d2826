"""The two-phase data path shared by `run`, `score`, `sample` and `stats`, with no shuffle of
document text:

  phase 1, per input shard (ShardSummary out):  run/score: read -> score -> scored parquet
          named after the shard + its dead letters;  sample/stats: read + check the pre-scored
          parquet, dead letters
  plan:   the per-split histograms of all summaries (a combiner) -> boundaries, factor
          (a side input)
  phase 2, per shard (ShardSample out): its scored parquet read again -> keep decisions ->
          its own sampled json.gz + parquet shard(s)
  stats:  the summaries and samples combined -> stats.json, checked for conservation

Only shard descriptions, counts and histograms cross workers (the one Reshuffle carries file
names). stats.json is written last: it waits on every shard file and on the dead letters, so a
reader that sees stats.json knows the output is complete.
"""
from __future__ import annotations

import math

import apache_beam as beam

from pipelines import project_version, worker_watchdog
from pipelines.corpus.input_shards import SCORED_DIR, balanced_for_workers, plan_input_shards
from pipelines.corpus.plan import (BUDGET_SCALE, SamplingPlan, SamplingRequest, SplitAccumulator,
                                        bands_summary, budget_of, merge_split_accumulators,
                                        resolve_plan)
from pipelines.corpus.phase2 import SampleShard
from pipelines.corpus.phase1 import CheckShard, ScoreShard, SplitCounts
from pipelines.corpus.stage_config import StageConfig
from pipelines.corpus_io import writers
from pipelines.report.collect import (REPORT_JSON, merge_candidates, merge_reports,
                                      report_plan)
from pipelines.errors import OutputError
from pipelines.options import local_workers
from pipelines.splits import SPLITS
from sampling import LogHistogram

STATS_JSON = "stats.json"
# stats.json carries histograms on 100 bins per decade (1,001 edges over [1, 1e10)): fine enough
# for figures and rates; the full-resolution total histogram is kept under histogram.fine.
STATS_BINS_PER_DECADE = 100


# --- phase 1 ---------------------------------------------------------------------------------

def input_shards(pipeline, files: list[str], label: str = "Shards"):
    """The input files as InputShards, spread over workers (a Reshuffle of file names only)."""
    shards = balanced_for_workers(plan_input_shards(files), local_workers(pipeline.options))
    return (pipeline
            | label >> beam.Create(shards, reshuffle=False)  # spread once, below
            | f"Spread{label}" >> beam.Reshuffle())


def score_shards(pipeline, files, cfg: StageConfig, handle, out_dir: str):
    """run / score phase 1: ShardSummaries of freshly scored shards written under out_dir."""
    return (input_shards(pipeline, files)
            | "ScoreShards" >> beam.ParDo(ScoreShard(cfg.model, cfg.preset, handle, out_dir,
                                                     cfg.max_doc_bytes, cfg.batch_size,
                                                     cfg.report, cfg.layout, budget_unit(cfg))))


def budget_unit(cfg: StageConfig) -> str | None:
    """The unit phase 1 counts (or calibrates) tokens in for --target-tokens; None without it."""
    request = cfg.request
    return request.token_unit if request is not None and request.target_tokens else None


def check_shards(pipeline, files, cfg: StageConfig):
    """sample / stats phase 1: ShardSummaries of pre-scored parquet (dead letters under
    cfg.out_dir/rejected/)."""
    return (input_shards(pipeline, files)
            | "CheckShards" >> beam.ParDo(CheckShard(cfg.out_dir, cfg.max_doc_bytes,
                                                     cfg.batch_size, cfg.report,
                                                     budget_unit(cfg))))


class _Totals(beam.CombineFn):
    """A combiner whose accumulators merge with `_merge(into, acc)` (into the first one)."""

    def merge_accumulators(self, accs):
        accs = iter(accs)
        merged = next(accs)
        for acc in accs:
            self._merge(merged, acc)
        return merged


class ScoreTotals(_Totals):
    """ShardSummaries -> {"splits": {split: SplitCounts}, "parquet": [...], "rejected": [...],
    "domains": {host: count}} (file lists sorted, relative to the phase-1 output directory;
    domains: report.html's candidate hosts, pipelines.report.collect)."""

    def create_accumulator(self):
        return {"splits": {}, "parquet": [], "rejected": [], "domains": {}}

    def add_input(self, acc, summary):
        return self._merge(acc, {"splits": summary.splits,
                                 "parquet": [summary.scored_file] if summary.scored_file else [],
                                 "rejected": [summary.rejected_file] if summary.rejected_file else [],
                                 "domains": summary.report.counts if summary.report else {}})

    @staticmethod
    def _merge(into: dict, acc: dict) -> dict:
        for split, counts in acc["splits"].items():
            into["splits"].setdefault(split, SplitCounts()).merge(counts)
        into["parquet"].extend(acc["parquet"])
        into["rejected"].extend(acc["rejected"])
        merge_candidates(into["domains"], acc["domains"])
        return into

    def extract_output(self, acc):
        return {"splits": acc["splits"], "parquet": sorted(acc["parquet"]),
                "rejected": sorted(acc["rejected"]), "domains": acc["domains"]}


def score_stats(_, totals: dict, model: dict | None, command: str) -> dict:
    """stats.json of a scored directory (`score`, and `run`'s OUT/scored/)."""
    per_split = {s: {"read": c.read, "rejected": c.rejected, "scored": c.scored,
                     "tokens_scored": c.tokens_scored}
                 for s, c in sorted(totals["splits"].items(), key=lambda kv: _split_order(kv[0]))}
    total = {k: sum(v[k] for v in per_split.values())
             for k in ("read", "rejected", "scored", "tokens_scored")}
    check_conservation([*per_split.items(), ("total", total)])
    return {"total": total, "stage": "score", "command": command, "version": project_version(),
            "splits": per_split, "preset": (model or {}).get("preset"), "model": model,
            "files": {"parquet": totals["parquet"], "rejected": totals["rejected"]}}


def write_score_stats(totals, model, out_dir: str, command: str):
    """The scored directory's stats.json, written once every shard of phase 1 is."""
    return (totals.pipeline
            | "ScoreStatsTrigger" >> beam.Create([None])
            | "ScoreStats" >> beam.Map(score_stats, totals=beam.pvalue.AsSingleton(totals),
                                       model=beam.pvalue.AsSingleton(model), command=command)
            | "WriteScoreStats" >> beam.Map(lambda s: _write_stats(s, out_dir, "WriteScoreStats")))


# --- plan, phase 2, stats --------------------------------------------------------------------

def _plan_from_totals(_, totals: dict, request: SamplingRequest) -> SamplingPlan:
    return resolve_plan(None, {s: c.histogram for s, c in totals["splits"].items()}, request,
                        budget_of(totals["splits"], request))


class SampleTotals(_Totals):
    """ShardSamples -> {"splits": {split: SplitAccumulator}, "files": {split: {"json_gz": [...],
    "parquet": [...]}}, "rows": {split: {"json_gz": n, "parquet": n}}} (rows: written),
    "report": ShardReport | None}."""

    def create_accumulator(self):
        return {"splits": {}, "files": {}, "rows": {}, "report": None}

    def add_input(self, acc, sample):
        return self._merge(acc, {"splits": sample.splits,
                                 "files": {split: {kind: [name] for kind, name in names.items()}
                                           for split, names in sample.files.items()},
                                 "rows": sample.rows, "report": sample.report})

    @staticmethod
    def _merge(into: dict, acc: dict) -> dict:
        for split, partial in acc["splits"].items():
            into["splits"].setdefault(split, SplitAccumulator()).merge(partial)
        for split, names in acc["files"].items():
            entry = into["files"].setdefault(split, {"json_gz": [], "parquet": []})
            entry["json_gz"].extend(names["json_gz"])
            entry["parquet"].extend(names["parquet"])
        for split, rows in acc["rows"].items():
            entry = into["rows"].setdefault(split, {"json_gz": 0, "parquet": 0})
            entry["json_gz"] += rows["json_gz"]
            entry["parquet"] += rows["parquet"]
        into["report"] = merge_reports(into["report"], acc["report"])
        return into

    def extract_output(self, acc):
        return {"splits": acc["splits"],
                "files": {s: {k: sorted(v) for k, v in names.items()}
                          for s, names in acc["files"].items()},
                "rows": acc["rows"], "report": acc["report"]}


def _counts(read: int, rejected: int, acc: SplitAccumulator) -> dict:
    return {"read": read, "rejected": rejected, "scored": acc.scored, "kept": acc.kept,
            "dropped": acc.scored - acc.kept, "tokens_scored": acc.tokens_scored,
            "tokens_kept": acc.tokens_kept}


def _coarse(histogram: LogHistogram) -> LogHistogram:
    return histogram.coarsen(STATS_BINS_PER_DECADE)


def _histogram_fields(acc: SplitAccumulator) -> dict:
    coarse, coarse_kept = _coarse(acc.histogram), _coarse(acc.kept_histogram)
    return {"histogram": coarse.counts.tolist(), "kept_histogram": coarse_kept.counts.tolist(),
            # perplexities outside [1, 1e10): not in the bins above
            "histogram_outside": [coarse.underflow, coarse.overflow],
            "kept_histogram_outside": [coarse_kept.underflow, coarse_kept.overflow]}


def check_phases_agree(score_totals: dict, sample_totals: dict) -> None:
    """Phase 2 must decide exactly the documents (and tokens) phase 1 scored, per split: a
    scored shard that lost or gained rows between the phases is an error, not a quiet gap."""
    splits = set(score_totals["splits"]) | set(sample_totals["splits"])
    for split in sorted(splits):
        scored = score_totals["splits"].get(split, SplitCounts())
        decided = sample_totals["splits"].get(split, SplitAccumulator())
        if (scored.scored, scored.tokens_scored) != (decided.scored, decided.tokens_scored):
            raise OutputError(
                f"{split}: {scored.scored} documents ({scored.tokens_scored} tokens) were scored "
                f"but {decided.scored} ({decided.tokens_scored} tokens) were decided: documents "
                "were lost or duplicated between scoring and sampling")


def assemble_stats(_, score_totals: dict, sample_totals: dict, plan: SamplingPlan,
                   model: dict | None, cfg: StageConfig, rejected_prefix: str = "",
                   _done=(), _report_written=()) -> dict:
    check_phases_agree(score_totals, sample_totals)
    histogram = plan.histogram
    counts, split_stats = score_totals["splits"], sample_totals["splits"]
    files = sample_totals["files"]
    per_split = {}
    for split in sorted(set(counts) | set(split_stats), key=_split_order):
        acc = split_stats.get(split, SplitAccumulator())
        phase1 = counts.get(split, SplitCounts())
        entry = _counts(phase1.read, phase1.rejected, acc)
        entry.update(_histogram_fields(acc))
        entry["bands"] = bands_summary(acc)
        entry["expected_kept"] = sum(b["expected_kept"] for b in entry["bands"])
        if plan.counts_budget:
            entry.update(_budget_fields(acc))
        if cfg.write_documents:
            entry["files"] = files.get(split, {"json_gz": [], "parquet": []})
        per_split[split] = entry
    total_acc = merge_split_accumulators([split_stats[s] for s in sorted(split_stats)])
    total = _counts(sum(c.read for c in counts.values()),
                    sum(c.rejected for c in counts.values()), total_acc)
    total.update(_histogram_fields(total_acc))
    total["bands"] = bands_summary(total_acc)
    if plan.counts_budget:
        total.update(_budget_fields(total_acc))
    expected_kept = sum(b["expected_kept"] for b in total["bands"])
    boundaries = None
    if plan.boundaries is not None:
        boundaries = {**plan.boundaries.to_dict(), "source": plan.boundaries_source,
                      "resolution": plan.resolution}
    # What a reader wants first (`head stats.json`): the totals and what was run; the model's
    # provenance and the histograms, the long parts, last.
    stats = {
        "total": total,
        "expected_kept": expected_kept,
        "stage": cfg.stage,
        "command": cfg.command,
        "version": project_version(),
        "method": plan.params.method,
        "parameters": plan.params.to_dict(),
        "seed": plan.seed,
        "target_docs": plan.target_docs,
        "target_expected_docs": plan.target_expected_docs,
        "boundaries": boundaries,
        "splits": per_split,
        "preset": (model or {}).get("preset"),
        "model": model,
        "histogram": {"edges": _coarse(histogram).edges.tolist(),
                      "bins_per_decade": STATS_BINS_PER_DECADE,
                      "fine": histogram.to_dict()},
    }
    if plan.counts_budget:  # only then: stats.json of other runs keeps its exact fields
        stats.update({"target_tokens": plan.target_tokens, "token_unit": plan.token_unit,
                      "kept_tokens_counted": plan.token_unit != "gpt2",
                      "target_expected_tokens": plan.target_expected_tokens,
                      "token_estimate": plan.token_estimate})
    rejected = [rejected_prefix + name for name in score_totals["rejected"]]
    if not cfg.write_documents:
        stats["dry_run"] = True  # `ppsample stats`: kept counts are what `sample` would keep
    else:
        stats["prefix"] = cfg.prefix
    # dead letters are per input shard: the folder, and every file (relative paths; a shard
    # without dead letters has none)
    stats["rejected_file"] = rejected_prefix + "rejected/"
    stats["rejected_files"] = rejected
    if cfg.stage == "run":
        stats["scored_dir"] = SCORED_DIR
    if cfg.language:
        stats["language"] = cfg.language
    if _report_written:
        stats["report_file"] = REPORT_JSON
    check_conservation([*stats["splits"].items(), ("total", stats["total"])])
    if cfg.write_documents:
        check_written(per_split, sample_totals["rows"])
    return stats


def _budget_fields(acc: SplitAccumulator) -> dict:
    expected = acc.budget_expected / BUDGET_SCALE
    return {"expected_kept_tokens": expected, "kept_tokens": acc.budget_kept,
            "kept_tokens_vs_expected": (acc.budget_kept - expected) / expected if expected else None}


def check_conservation(named_counts) -> None:
    """Every record the readers counted was either scored or dead-lettered (read = scored +
    rejected), per split and in total: a document a reader or the scorer lost fails the job
    here, before stats.json. (`scored` is what phase 2 decided: check_phases_agree ties it to
    what phase 1 scored.)"""
    for name, counts in named_counts:
        if counts["read"] != counts["scored"] + counts["rejected"]:
            raise OutputError(f"{name}: read {counts['read']} != scored {counts['scored']} + "
                              f"rejected {counts['rejected']}: documents were lost")


def check_written(per_split: dict, rows: dict) -> None:
    """Every kept document is a row of its split's sampled json.gz and of its parquet shards,
    as the writers counted what they wrote: a row lost on the way out fails the job here,
    before stats.json."""
    for split, entry in per_split.items():
        written = rows.get(split, {"json_gz": 0, "parquet": 0})
        for kind in ("json_gz", "parquet"):
            if written[kind] != entry["kept"]:
                raise OutputError(f"{split}: {entry['kept']} documents kept but {written[kind]} "
                                  f"rows written to its {kind.replace('_', '.')} shards: rows "
                                  "were lost or duplicated on the way out")


def _write_stats(stats: dict, out_dir: str, step: str) -> str:
    path = writers.join(out_dir, STATS_JSON)
    writers.write_json(path, _finite(stats))
    worker_watchdog.hold_for_test(step)
    return path


def _write_report(report, out_dir: str) -> list[str]:
    """report.json (what report.html shows of the documents); nothing when not collected."""
    if report is None:
        return []
    path = writers.join(out_dir, REPORT_JSON)
    writers.write_json(path, _finite(report.to_dict()))
    return [path]


def _finite(value):
    """JSON has no NaN/inf: write them as null rather than emitting invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _split_order(split: str):
    return (split not in SPLITS, split)


def add_sampling(summaries, model_description, cfg: StageConfig, score_totals=None,
                 rejected_prefix: str = "", wait_for=None):
    """Plan, phase 2 and stats.json after phase 1. `summaries`: ShardSummaries;
    `model_description`: a one-element PCollection (describe() dict or None); `score_totals`:
    the ScoreTotals of the summaries when the caller already has them; `rejected_prefix`: where
    phase 1 wrote its dead letters, relative to cfg.out_dir; `wait_for`: a PCollection that
    must be complete before stats.json (run's scored/stats.json). Returns the stats
    PCollection."""
    p = summaries.pipeline
    if score_totals is None:
        score_totals = summaries | "ScoreTotals" >> beam.CombineGlobally(ScoreTotals())
    plan = (p
            | "PlanTrigger" >> beam.Create([None])
            | "ResolvePlan" >> beam.Map(_plan_from_totals,
                                        totals=beam.pvalue.AsSingleton(score_totals),
                                        request=cfg.request))
    collect = cfg.report
    rplan = (p
             | "ReportPlanTrigger" >> beam.Create([None])
             | "ResolveReportPlan" >> beam.Map(
                 lambda _, plan, totals: report_plan(_, plan, totals["domains"])
                 if collect else None,
                 plan=beam.pvalue.AsSingleton(plan), totals=beam.pvalue.AsSingleton(score_totals)))
    samples = summaries | "SampleShards" >> beam.ParDo(
        SampleShard(cfg.out_dir, cfg.prefix, cfg.request.method, cfg.write_documents,
                    cfg.max_doc_bytes, cfg.batch_size),
        plan=beam.pvalue.AsSingleton(plan), report_plan=beam.pvalue.AsSingleton(rplan))
    sample_totals = samples | "SampleTotals" >> beam.CombineGlobally(SampleTotals())
    done = wait_for if wait_for is not None else p | "NothingToWaitFor" >> beam.Create([])
    # report.json before stats.json: stats.json is the output's last file
    out_dir = cfg.out_dir
    report_written = (p
                      | "ReportTrigger" >> beam.Create([None])
                      | "WriteReport" >> beam.FlatMap(
                          lambda _, totals: _write_report(totals["report"], out_dir),
                          totals=beam.pvalue.AsSingleton(sample_totals)))
    stats = (p
             | "StatsTrigger" >> beam.Create([None])
             | "AssembleStats" >> beam.Map(
                 assemble_stats,
                 score_totals=beam.pvalue.AsSingleton(score_totals),
                 sample_totals=beam.pvalue.AsSingleton(sample_totals),
                 plan=beam.pvalue.AsSingleton(plan),
                 model=beam.pvalue.AsSingleton(model_description),
                 cfg=cfg, rejected_prefix=rejected_prefix,
                 _done=beam.pvalue.AsList(done),
                 _report_written=beam.pvalue.AsList(report_written)))
    _ = stats | "WriteStats" >> beam.Map(lambda s: _write_stats(s, out_dir, "WriteStats"))
    return stats


def scored_model_description(files: list[str]) -> dict | None:
    """The model recorded by `ppsample score` in the scored directory's stats.json, if any."""
    from apache_beam.io.filesystems import FileSystems

    folders = sorted({f.rsplit("/", 1)[0] for f in files})
    for folder in folders:
        path = writers.join(folder, STATS_JSON)
        if FileSystems.exists(path):
            try:
                return writers.read_json(path).get("model")
            except (ValueError, OSError):
                return None
    return None
