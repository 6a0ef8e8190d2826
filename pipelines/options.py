"""Command-line arguments shared by the Beam stages, and the PipelineOptions they run with.

Stage arguments (--input, --method, ...) are parsed by argparse; every flag argparse does not
know (--runner, --direct_num_workers, --project, --region, ...) is handed to Beam's
PipelineOptions unchanged. Without --runner the local FnApiRunner is used: Beam's DirectRunner
would first try to download the Prism runner binary.
"""
from __future__ import annotations

import argparse
import shlex

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.corpus_io.mc4_io import DEFAULT_MAX_DOC_BYTES
from pipelines.corpus_io.writers import DEFAULT_DOCS_PER_SHARD

DEFAULT_RUNNER = "FnApiRunner"
LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner",
                 "PrismRunner", "TestDirectRunner"}
REMOTE_RUNNERS = {"DataflowRunner"}
DEFAULT_PREFIX = "mc4-es"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2**64), got {value}")
    return value


def add_input_arguments(parser, required: bool = True, help_text: str | None = None) -> None:
    parser.add_argument("--input", required=required, default=None,
                        help=help_text or "glob(s), comma-separated: mC4 *.json.gz, *.jsonl, *.parquet;"
                                          " local, gs:// or any fsspec URL (hf://...)")
    parser.add_argument("--max-doc-bytes", type=_positive_int, default=DEFAULT_MAX_DOC_BYTES,
                        help="documents whose text is larger are dead-lettered (default %(default)s)")



def add_output_arguments(parser, default: str | None = None, sampled: bool = True) -> None:
    parser.add_argument("--output", required=default is None, default=default,
                        help="output directory (local or gs://)"
                             + (f" (default {default})" if default else ""))
    if sampled:
        parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                            help="file name prefix of the json.gz shards (default %(default)s)")
    parser.add_argument("--docs-per-shard", type=_positive_int, default=DEFAULT_DOCS_PER_SHARD,
                        help="shard count = ceil(documents / this) (default %(default)s)")


def add_overwrite_argument(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output that holds another stage's output or files "
                             "ppsample did not write (only ppsample's own files are replaced; the "
                             "previous output stays until the new one is complete)")


def add_sampling_arguments(parser) -> None:
    parser.add_argument("--method", choices=("gaussian", "stepwise", "random"), default="gaussian")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="the keep decision of a document is a pure function of (seed, url or text)")
    parser.add_argument("--factor", type=float, default=None,
                        help="method factor (defaults: gaussian 0.78, stepwise 1.5e5, random 0.5)")
    parser.add_argument("--width", type=float, default=None,
                        help="gaussian width (default 9/2; BERTIN's early coefficient is width 2/9)")
    parser.add_argument("--boundaries", default=None,
                        help="q1,q2,q3 or `bertin`; default: quartiles of the scored perplexities")
    parser.add_argument("--target-docs", type=_positive_int, default=None,
                        help="solve the factor so the expected number of kept documents is this")


def sampling_request(args):
    from pipelines.corpus.selection import SamplingRequest

    try:
        return SamplingRequest(method=args.method, factor=args.factor, width=args.width,
                               seed=args.seed, boundaries=args.boundaries,
                               target_docs=args.target_docs)
    except ValueError as err:
        raise SystemExit(f"ppsample: error: {err}") from None


def command_line(stage: str, args: argparse.Namespace, beam_argv: list[str]) -> str:
    """The command as the user could re-type it (recorded in stats.json)."""
    parts = ["ppsample", stage]
    for name, value in sorted(vars(args).items()):
        if value is None or value is False or name.startswith("_"):
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts + list(beam_argv))


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return runner if isinstance(runner, str) else type(runner).__name__


def is_remote(options: PipelineOptions) -> bool:
    return runner_name(options).rsplit(".", 1)[-1] in REMOTE_RUNNERS


def build_pipeline_options(beam_argv: list[str], *, inputs: list[str] = (), output: str | None = None,
                           model: str | None = None) -> PipelineOptions:
    """PipelineOptions from the pass-through flags, with our defaults and Dataflow checks."""
    options = PipelineOptions(list(beam_argv))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    if is_remote(options):
        from pipelines.dataflow import configure_dataflow

        configure_dataflow(options, inputs=inputs, output=output, model=model)
    return options


def add_model_arguments(parser) -> None:
    from lm_models.perplexity import DEFAULT_MODEL, PRESETS

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="bundled model name, local directory, or URL (gs://, hf://owner/repo/subdir)"
                             " (default %(default)s)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="normalisation preset (default: the model's own, from model.json)")
    parser.add_argument("--batch-size", type=_positive_int, default=256,
                        help="documents scored per model call (default %(default)s)")
