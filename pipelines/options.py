"""Command-line arguments shared by the Beam stages, and the PipelineOptions they run with.

Stage arguments (--input, --method, ...) are parsed strictly by argparse. A flag the stage does
not declare is handed to Beam's PipelineOptions only when Beam declares it (--runner,
--direct_num_workers, --project, --region, ...: `split_beam_arguments` asks every
PipelineOptions subclass for its flags); anything else is an error with a "did you mean"
suggestion. Underscore spellings of the stage's own flags (`--target_docs`) are refused with the
dashed spelling as the suggestion. Without --runner the local FnApiRunner is used: Beam's DirectRunner would first
try to download the Prism runner binary.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shlex

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.corpus_io.mc4_io import DEFAULT_MAX_DOC_BYTES
from pipelines.errors import InputError, UsageError

DEFAULT_RUNNER = "FnApiRunner"
LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner",
                 "PrismRunner", "TestDirectRunner"}
REMOTE_RUNNERS = {"DataflowRunner"}
DEFAULT_PREFIX = "mc4-es"
DEFAULT_BATCH_SIZE = 256  # documents per model call / per batch read


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



def ccnet_boundaries(language: str | None, model: str | None) -> str:
    """`--boundaries ccnet`: cc_net's published quartiles for --language as "q1,q2,q3". Only
    meaningful for perplexities of cc_net's own model: the registry's (`ccnet:LANG`) or, for a
    scored input, the model its stats.json records."""
    from lm_models import language_registry as registry

    if not language:
        raise InputError("--boundaries ccnet needs --language (cc_net's "
                         "percentiles are per language)")
    if model is not None and model != f"ccnet:{language}":
        raise InputError(f"--boundaries ccnet is on cc_net's perplexity scale: "
                         f"it needs --model ccnet:{language} (the registry's cc_net model), "
                         f"not {model!r}")
    try:
        return ",".join(repr(v) for v in registry.ccnet_quartiles(language))
    except registry.RegistryError as err:
        raise InputError(f"{err}") from None


def add_layout_arguments(parser) -> None:
    from pipelines.corpus_io.layouts import LAYOUTS

    parser.add_argument("--layout", choices=sorted(LAYOUTS), default=None,
                        help="the corpus's field layout (default mc4: text, url, timestamp); "
                             "fineweb, oscar, culturax, hplt follow their dataset cards")
    for field, example in (("text", "content"), ("url", "warc_headers.warc-target-uri"),
                           ("id", "warc_headers.warc-record-id"), ("timestamp", "date")):
        parser.add_argument(f"--{field}-field", default=None, metavar="PATH",
                            help=f"dotted path of the {field} in each record (e.g. {example}); "
                                 "overrides the layout's" + ("" if field == "text" else
                                                             "; '' for none"))
    parser.add_argument("--key-field", default=None, metavar="PATH",
                        help="dotted path of the document key of the keep decision (default: "
                             "the url, else the text)")


def layout_from_args(args):
    """The Layout of --layout / --*-field; a bad path or name exits with one line."""
    from pipelines.corpus_io.layouts import resolve_layout

    given = {f"{f}_field": getattr(args, f"{f}_field", None) for f in ("url", "id", "timestamp")}
    try:
        return resolve_layout(getattr(args, "layout", None),
                              text_field=getattr(args, "text_field", None),
                              key_field=getattr(args, "key_field", None),
                              **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise InputError(f"{err}") from None


def add_output_arguments(parser, default: str | None = None, sampled: bool = True) -> None:
    parser.add_argument("--output", required=default is None, default=default,
                        help="output directory (local or gs://)"
                             + (f" (default {default})" if default else ""))
    if sampled:
        parser.add_argument("--prefix", default=None,
                            help=f"file name prefix of the json.gz shards (default {DEFAULT_PREFIX}, "
                                 "or mc4-LANG with --language)")


def add_result_arguments(parser, default: str | None = None, sampled: bool = True) -> None:
    """The flags every stage that writes sampling results shares (run, sample, stats): --output
    (and --prefix of the sampled shards), --overwrite, --no-figures, --no-report."""
    add_output_arguments(parser, default=default, sampled=sampled)
    add_overwrite_argument(parser)
    parser.add_argument("--no-figures", action="store_true", help="do not draw the PNG figures")
    parser.add_argument("--no-report", action="store_true",
                        help="do not collect example documents and domains, nor write "
                             "report.json / report.html")


def add_language_argument(parser) -> None:
    parser.add_argument("--language", default=None, metavar="LANG",
                        help="the corpus's language (e.g. fr): the registry's published model for "
                             "it when --model is not given (cc_net's, else edugp/kenlm's), the "
                             "output prefix mc4-LANG, mC4's files for it when --input is not "
                             "given (run), and the dataset card's language. Default: Spanish, "
                             "with the bundled model")


def apply_language(args) -> None:
    """Fills what --language decides and the user did not give: --model, --prefix, --input
    (run). Without --language everything stays as it always was (Spanish, bundled model)."""
    from lm_models import language_registry as registry
    from lm_models.perplexity import DEFAULT_MODEL

    language = getattr(args, "language", None)
    try:
        if language is not None:
            registry.check_language(language)
        if hasattr(args, "model") and args.model is None:
            args.model = registry.lookup(language).name if language else DEFAULT_MODEL
        if hasattr(args, "prefix") and args.prefix is None:
            args.prefix = registry.output_prefix(language) if language else DEFAULT_PREFIX
    except registry.RegistryError as err:
        raise InputError(f"{err}") from None


def mc4_inputs(language: str) -> str:
    """mC4's train and validation files for a language on the Hub (run's default --input)."""
    from lm_models import language_registry as registry

    return ",".join(registry.mc4_input_glob(language, split) for split in ("train", "validation"))


def add_overwrite_argument(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output that holds another stage's output or files "
                             "ppsample did not write (only ppsample's own files are replaced; the "
                             "previous output stays until the new one is complete)")


def add_sampling_arguments(parser) -> None:
    parser.add_argument("--method", choices=("gaussian", "stepwise", "random"), default="gaussian",
                        help="keep probability as a function of perplexity: gaussian around the "
                             "median, stepwise per quartile band, or random (default %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="the keep decision of a document is a pure function of (seed, url or "
                             "text): same seed, same sample on any runner (default %(default)s)")
    parser.add_argument("--factor", type=float, default=None,
                        help="method factor (defaults: gaussian 0.78, random 0.5; stepwise has no "
                             "default off BERTIN's perplexity scale: give --factor or --target-docs)")
    parser.add_argument("--width", type=float, default=None,
                        help="gaussian width (default 9/2; BERTIN's early coefficient is width 2/9)")
    parser.add_argument("--boundaries", default=None,
                        help="q1,q2,q3, `bertin`, or `ccnet` (cc_net's published quartiles for "
                             "--language, with a cc_net model); default: quartiles of the scored "
                             "perplexities")
    parser.add_argument("--force-boundaries", action="store_true",
                        help="use --boundaries bertin even when (almost) every document falls in "
                             "one band on this model's perplexity scale")
    parser.add_argument("--target-docs", type=_positive_int, default=None,
                        help="solve the factor so the expected number of kept documents is this")
    parser.add_argument("--target-tokens", type=_positive_int, default=None,
                        help="solve the factor so the expected kept tokens (in --token-unit) are this")
    parser.add_argument("--token-unit", choices=("gpt2", "pieces", "words"), default="gpt2",
                        help="unit of --target-tokens: GPT-2 BPE (the finetune's tokenizer; "
                             "calibrated on a 2%% subsample), KenLM pieces, or words "
                             "(default %(default)s)")


# ---------------------------------------------------------------------------------------------
# Strict parsing: the stage's own flags, Beam's flags, and nothing else

def require_extras(what: str, extras: tuple[str, ...], modules=None) -> None:
    """A UsageError naming the install line (lm_models.extras) when a module `what` needs is
    missing; stages call it before any work."""
    from lm_models.extras import missing_message

    message = missing_message(what, extras, modules)
    if message:
        raise UsageError(message)


class StrictArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching (`--out` is not `--output`) whose errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _pipeline_options_classes():
    from apache_beam.options.pipeline_options import PipelineOptions

    seen, stack = {}, list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        seen.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
        stack.extend(cls.__subclasses__())
    return [seen[k] for k in sorted(seen)]


def beam_argument_parser() -> argparse.ArgumentParser:
    """A parser of every flag Beam's PipelineOptions subclasses declare (what Beam knows)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    class _Strict(_BeamArgumentParser):
        def error(self, message):
            raise UsageError(f"Beam pipeline option: {message}")

    parser = _Strict(allow_abbrev=False, add_help=False)
    for cls in _pipeline_options_classes():
        try:
            cls._add_argparse_args(parser)  # pylint: disable=protected-access
        except argparse.ArgumentError:  # a subclass registered twice (re-imported module)
            continue
    return parser


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({s for action in parser._actions for s in action.option_strings})


def refuse_underscore_spellings(argv: list[str], own_flags: list[str], beam_flags=()) -> list[str]:
    """`--target_docs 5` is a usage error naming `--target-docs` (never silently ignored, and not
    an alias either: one spelling per flag keeps recorded commands and docs unambiguous). A
    spelling Beam itself declares (`--dry_run`) is Beam's and passes through."""
    dashed = {"--" + f[2:].replace("-", "_"): f for f in own_flags
              if f.startswith("--") and "-" in f[2:]}
    beam_flags = set(beam_flags)
    for token in argv:
        if token == "--":
            break
        name = token.partition("=")[0]
        if token.startswith("--") and name in dashed and name not in beam_flags:
            raise UsageError(f"unrecognised argument {name}: ppsample's flags are spelled with "
                             f"dashes; did you mean {dashed[name]}?")
    return argv


def did_you_mean(flag: str, candidates) -> str:
    candidates = list(candidates)
    normal = {c.replace("_", "-"): c for c in candidates}
    close = difflib.get_close_matches(flag.replace("_", "-"), list(normal), n=1, cutoff=0.7)
    return f"; did you mean {normal[close[0]]}?" if close else ""


def split_beam_arguments(extra: list[str], own_flags: list[str], *, beam: bool = True,
                         stage: str = "") -> list[str]:
    """Checks the arguments the stage did not parse: with `beam`, they must all be flags (and
    values) Beam's PipelineOptions declares; without, there must be none. Returns them (the
    pass-through argv) or raises UsageError naming the first offender."""
    if not extra:
        return []
    prog = f"ppsample {stage}".strip()
    if not beam:
        flag = next((a for a in extra if a.startswith("-")), extra[0])
        name = flag.split("=", 1)[0]
        hint = did_you_mean(name, own_flags) if name.startswith("-") else ""
        raise UsageError(f"unrecognised arguments: {flag}{hint} ({prog} runs no Beam pipeline; "
                         f"see `{prog} --help`)")
    parser = beam_argument_parser()
    beam_flags = option_strings(parser)
    _, unknown = parser.parse_known_args(list(extra))
    if unknown:
        first = unknown[0]
        name = first.split("=", 1)[0]
        if name.startswith("-"):
            raise UsageError(f"unrecognised arguments: {name} is neither a {prog} flag nor a Beam "
                             f"pipeline option{did_you_mean(name, own_flags + beam_flags)} "
                             f"(see `{prog} --help`)")
        raise UsageError(f"unexpected argument {first!r} (see `{prog} --help`)")
    return list(extra)


# Options that only mean something together with another one: not recorded without it.
DEPENDENT_OPTIONS = {"finetune_steps": "finetune", "finetune_workdir": "finetune"}


def display_path(value: str) -> str:
    """A local path as the user could re-type it without leaking where the launcher keeps its
    files: relative to the cwd when under it, `~/...` under the home directory; URLs without their
    query or user:password@ (a presigned URL's query is a secret)."""
    if isinstance(value, str) and "://" in value:
        from lm_models.model_sources import redact_url

        return redact_url(value)
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    cwd = os.getcwd()
    try:
        if os.path.commonpath([cwd, value]) == cwd:
            return os.path.relpath(value, cwd)
    except ValueError:
        pass
    home = os.path.expanduser("~")
    if home not in ("", "/") and os.path.commonpath([home, value]) == home:
        return "~/" + os.path.relpath(value, home)
    return value


def _typed_argv(argv: list[str], args: argparse.Namespace) -> list[str]:
    """The argv as typed, minus options that did not apply, paths shown with display_path."""
    dropped = {"--" + name.replace("_", "-") for name, needs in DEPENDENT_OPTIONS.items()
               if not getattr(args, needs, None)}
    out, skip_value = [], False
    for token in argv:
        if skip_value:
            skip_value = False
            continue
        name = token.split("=", 1)[0]
        if name in dropped:
            skip_value = "=" not in token
            continue
        if "=" in token and token.startswith("--"):
            out.append(f"{name}={display_path(token.split('=', 1)[1])}")
        else:
            out.append(display_path(token))
    return out


def command_line(stage: str, args: argparse.Namespace, beam_argv: list[str],
                 argv: list[str] | None = None) -> str:
    """The command as the user could re-type it (recorded in stats.json and the dataset card).

    From `ppsample` itself (`argv`: the stage's arguments as typed, which the CLI passes without
    its own --debug, -q, -v) this is that argv without options that did not apply
    (--finetune-steps without --finetune), and with local absolute paths made relative to the
    cwd (or ~) and URLs redacted, so neither the launcher's directories nor a presigned URL's
    secret leak. Called directly (argv None), it is rebuilt from the namespace with the same
    rules."""
    if argv is not None:
        return shlex.join(["ppsample", stage, *_typed_argv(list(argv), args)])
    parts = ["ppsample", stage]
    for name, value in sorted(vars(args).items()):
        if value is None or value is False or name.startswith("_"):
            continue
        if name in DEPENDENT_OPTIONS and not getattr(args, DEPENDENT_OPTIONS[name], None):
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, display_path(str(value))]
    return shlex.join(parts + _typed_argv(list(beam_argv), args))


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return runner if isinstance(runner, str) else type(runner).__name__


def is_remote(options: PipelineOptions) -> bool:
    return runner_name(options).rsplit(".", 1)[-1] in REMOTE_RUNNERS


def local_workers(options: PipelineOptions) -> int:
    """How many parts a local FnApiRunner splits each stage's input into, one per worker
    (--direct_num_workers; 0 is one per CPU); 1 for a remote runner, which balances its work
    itself."""
    if is_remote(options):
        return 1
    from apache_beam.options.pipeline_options import DirectOptions

    workers = options.view_as(DirectOptions).direct_num_workers
    if workers == 0:
        return os.cpu_count() or 1
    return max(1, workers or 1)


class ViewsOnce(PipelineOptions):
    """PipelineOptions whose `view_as(cls)` builds each view once.

    Beam's view_as builds a parser of cls's flags and parses the flags again on every call, and
    building and translating one of our pipelines calls it ~270 times: ~0.2 s of the launcher's
    start, on one core before any worker runs. A view holds no state of its own (every view
    reads and writes the options' shared `_all_options`, and the flags never change), so
    the same view can be handed out again. Declares no flags. Pickles carry no views: Beam's
    __getstate__ may pickle a copy of the values, and a pickled view would keep its own copy."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def build_pipeline_options(beam_argv: list[str], *, inputs: list[str] = (), output: str | None = None,
                           model: str | None = None) -> PipelineOptions:
    """PipelineOptions from the pass-through flags, with our defaults and Dataflow checks."""
    options = ViewsOnce(list(beam_argv))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    if is_remote(options):
        from pipelines.dataflow import configure_dataflow

        configure_dataflow(options, inputs=inputs, output=output, model=model)
    return options


def add_model_arguments(parser) -> None:
    from lm_models.perplexity import DEFAULT_MODEL, PRESETS

    parser.add_argument("--model", default=None,
                        help="bundled model name, local directory, URL (gs://, hf://owner/repo/subdir)"
                             f" or registry name (ccnet:fr, edugp:fr) (default {DEFAULT_MODEL}, or "
                             "the --language's registry model)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="normalisation preset (default: the model's own, from model.json)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help="documents scored per model call (default %(default)s)")
