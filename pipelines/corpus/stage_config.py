"""The one configuration of a corpus stage (`run`, `score`, `stats`, `sample`), built once from
the parsed arguments and passed, frozen, to everything below the command: the driver, the
graph (pipelines.corpus.data_path) and, field by field, the DoFns.

`out_dir` is where the pipeline writes: the user's `output` until the driver stages it, then
the staging folder (`cfg.with_out_dir(staging.path)`); `output` stays the user's, for messages
and the summary.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from pipelines import options as opts
from pipelines.corpus.plan import SamplingRequest
from pipelines.corpus_io.mc4_io import DEFAULT_MAX_DOC_BYTES
from pipelines.errors import InputError

# The parsed flags that make up the SamplingRequest (options.add_sampling_arguments).
SAMPLING_FLAGS = ("method", "factor", "width", "seed", "boundaries", "force_boundaries",
                  "target_docs", "target_tokens", "token_unit")
# The flags of a corpus layout (options.add_layout_arguments): one `layout` field.
LAYOUT_FLAGS = ("layout", "text_field", "url_field", "id_field", "timestamp_field", "key_field")


@dataclass(frozen=True)
class StageConfig:
    stage: str  # run | score | sample | stats (stats.json "stage", the commit marker's stage)
    command: str  # the command as the user could retype it (options.command_line)
    output: str  # the user's --output
    out_dir: str  # where the pipeline writes (the staging folder, once staged)
    input: str | None = None
    beam_argv: tuple[str, ...] = ()
    overwrite: bool = False
    figures: bool = True
    report: bool = True  # collect report.json, draw report.html (run, sample, stats; --no-report)
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
    # another corpus's layout (pipelines.corpus_io.layouts.Layout; None: mC4's) and --language
    # (None: Spanish, with nothing recorded, as before)
    layout: object = None
    language: str | None = None
    # scoring (run, score); sample/stats rescore nothing and read in batches of batch_size
    model: str | None = None
    preset: str | None = None
    batch_size: int = opts.DEFAULT_BATCH_SIZE
    # sampling (run, sample, stats)
    request: SamplingRequest | None = None
    prefix: str = opts.DEFAULT_PREFIX
    # run --finetune
    finetune: str | None = None
    finetune_workdir: str | None = None
    finetune_steps: int | None = None

    @property
    def write_documents(self) -> bool:
        """False for `ppsample stats`: statistics only, no sampled shard."""
        return self.stage != "stats"

    def with_out_dir(self, out_dir: str) -> "StageConfig":
        return dataclasses.replace(self, out_dir=out_dir)

    @classmethod
    def from_args(cls, stage: str, args: argparse.Namespace, beam_argv, argv=None) -> "StageConfig":
        """The config of `ppsample STAGE` from its parsed flags; `argv`: the stage's arguments as
        typed (what stats.json records as the command), None when called without a CLI. A flag
        this config does not know is a bug (it would be parsed and then ignored)."""
        opts.apply_language(args)  # --model, --prefix that --language decides
        given = dict(vars(args))
        request = None
        if "method" in given:
            request = sampling_request(given)
        for name in SAMPLING_FLAGS:
            given.pop(name, None)
        if "layout" in given:
            given["layout"] = opts.layout_from_args(args)
            for name in LAYOUT_FLAGS[1:]:
                given.pop(name, None)
        # stages without --no-figures (score) draw none
        given["figures"] = "no_figures" in given and not given.pop("no_figures")
        given["report"] = "no_report" in given and not given.pop("no_report")  # score: none
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - fields)
        if unknown:
            raise TypeError(f"StageConfig has no field for --{unknown[0].replace('_', '-')}")
        return cls(stage=stage, command=opts.command_line(stage, args, beam_argv, argv),
                   out_dir=given["output"], beam_argv=tuple(beam_argv), request=request, **given)


def sampling_request(given: dict) -> SamplingRequest:
    """The SamplingRequest of the parsed sampling flags (InputError on a bad combination)."""
    from sampling.guidance import stepwise_default_problem

    method, factor, boundaries = given["method"], given["factor"], given["boundaries"]
    source = None
    if (boundaries or "").strip().lower() == "ccnet":  # cc_net's published quartiles
        boundaries = opts.ccnet_boundaries(given.get("language"), given.get("model"))
        source = "ccnet"
    try:
        request = SamplingRequest(method=method, factor=factor, width=given["width"],
                                  seed=given["seed"], boundaries=boundaries,
                                  target_docs=given["target_docs"],
                                  force_boundaries=bool(given["force_boundaries"]),
                                  target_tokens=given.get("target_tokens"),
                                  token_unit=given.get("token_unit") or "gpt2",
                                  boundaries_source=source)
    except ValueError as err:
        raise InputError(str(err)) from None
    if request.force_boundaries and (boundaries or "").strip().lower() != "bertin":
        raise InputError("--force-boundaries only applies to --boundaries bertin")
    target = given["target_docs"] if given["target_docs"] is not None else given.get("target_tokens")
    problem = stepwise_default_problem(method, factor, target, boundaries)
    if problem:
        raise InputError(problem)
    return request
