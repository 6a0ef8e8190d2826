"""`ppsample`: one CLI, one subcommand per stage.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`main(args, beam_argv, argv) -> int` (`argv`: its arguments as typed, for the stages that record
their command); modules are imported only when their subcommand runs, so
`ppsample score` never pays for JAX and `ppsample finetune` never pays for Beam.

Arguments are strict (pipelines/options.py): a stage's own flags (underscore spellings are
refused), then, for the stages that run a Beam pipeline, only the flags Beam's PipelineOptions
declares (`--runner`, `--direct_num_workers`, `--project`, ...) pass through as `beam_argv`;
anything else is an error with a "did you mean".

Errors: every user error is one `ppsample: error: ...` line on stderr and a non-zero exit
(2 for usage, 1 for a failed run, 130 for Ctrl-C, 143 for SIGTERM): this module alone maps
pipelines.errors.PpsampleError (its `exit_code`) and lm_models.errors.ModelError (exit 1) to
them; stages raise and never print their own error lines. Errors raised inside a Beam
pipeline (which Beam wraps in pages of repeated tracebacks) are reduced to the original
exception's message; `--debug` shows the traceback instead. Beam's own logging is silent unless
`-v`.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import re
import signal
import sys
import threading

from pipelines import errors, project_version
from lm_models.errors import ModelError
from pipelines.errors import InputError, PpsampleError, UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipelines.corpus.commands.run", "score -> stats -> sample in one Beam pipeline (bundled sample by default)"),
    "score": ("pipelines.corpus.commands.score", "score documents with a KenLM perplexity model -> parquet"),
    "stats": ("pipelines.corpus.commands.stats", "perplexity boundaries and histogram of scored parquet"),
    "sample": ("pipelines.corpus.commands.sample", "keep documents by gaussian / stepwise / random sampling"),
    "report": ("pipelines.report.command", "report.html of one or several sampled outputs, side by side"),
    "publish": ("pipelines.publish.stage", "build and upload the sampled dataset to the Hugging Face Hub"),
    "train-lm": ("pipelines.train_lm", "train a SentencePiece + KenLM perplexity model"),
    "prepare-finetune": ("pipelines.finetune.prepare", "tokenise and pack sampled documents for GPT-J"),
    "finetune": ("pipelines.finetune.stage", "train GPT-J (JAX); also `finetune check-fit` and `finetune launch`"),
}
# Stages that run a Beam pipeline: the only ones that take Beam's PipelineOptions flags and -q/-v.
BEAM_STAGES = ("run", "score", "stats", "sample", "prepare-finetune")

BEAM_EPILOG = ("Any other --flag must be a Beam PipelineOptions flag (--runner, --direct_num_workers, "
               "--direct_running_mode, --project, --region, --temp_location, ...); it is passed to Beam.")
NO_BEAM_EPILOG = "This stage runs no Beam pipeline: flags other than these are errors."

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 1, 130, 143


def _not_the_apitools_notice(record: logging.LogRecord) -> bool:
    return "apitools not found" not in record.getMessage()


def _quiet_beam_import_notice() -> None:
    # `import apache_beam` logs this on every install without the gcp extra; it is about
    # BigQuery, which ppsample never uses, and would greet every user of every command.
    # Before Beam's import (entry() imports it first); once (main() calls it again).
    root = logging.getLogger()
    if _not_the_apitools_notice not in root.filters:
        root.addFilter(_not_the_apitools_notice)


def build_parser() -> argparse.ArgumentParser:
    from pipelines.options import StrictArgumentParser

    parser = StrictArgumentParser(
        prog="ppsample",
        description="Perplexity sampling of web corpora (KenLM + Beam) and a JAX GPT-J finetune stage.",
        epilog="`ppsample COMMAND --help` for each stage; `ppsample run` alone runs the bundled demo offline.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {project_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def stage_parser(name: str, module=None) -> argparse.ArgumentParser:
    """The strict parser of one stage (its own flags plus --debug, and -q/-v for Beam stages)."""
    from pipelines.options import StrictArgumentParser

    module = module or importlib.import_module(COMMANDS[name][0])
    beam = name in BEAM_STAGES
    parser = StrictArgumentParser(prog=f"ppsample {name}", description=COMMANDS[name][1],
                                  epilog=BEAM_EPILOG if beam else NO_BEAM_EPILOG)
    module.add_arguments(parser)
    common = parser.add_argument_group("ppsample")
    common.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    if beam:
        common.add_argument("-q", "--quiet", action="store_true", help="no progress line")
        common.add_argument("-v", "--verbose", action="store_true", help="show Beam's INFO logging")
    return parser


def parse_stage_args(name: str, argv: list[str], module=None):
    """(namespace, beam_argv) for `ppsample NAME argv`: the stage's own flags only (the CLI's
    --debug, -q, -v are left out); raises errors.UsageError on a mistake."""
    args, beam_argv, _flags = _parse_stage_args(name, argv, module)
    return args, beam_argv


def _parse_stage_args(name: str, argv: list[str], module=None):
    """(stage namespace, beam_argv, the CLI's own flags as a namespace: debug, quiet, verbose)."""
    from pipelines import options as opts

    parser = stage_parser(name, module)
    own = opts.option_strings(parser)
    beam = name in BEAM_STAGES
    beam_flags = opts.option_strings(opts.beam_argument_parser()) if beam else []
    argv = opts.refuse_underscore_spellings(list(argv), own, beam_flags)
    args, extra = parser.parse_known_args(argv)
    beam_argv = opts.split_beam_arguments(extra, [f for f in own if f.startswith("--")],
                                          beam=beam, stage=name)
    flags = argparse.Namespace(debug=False, quiet=False, verbose=False)
    for dest in (("debug", "quiet", "verbose") if beam else ("debug",)):
        setattr(flags, dest, getattr(args, dest))
        delattr(args, dest)  # a stage's own --quiet (train-lm) stays
    return args, beam_argv, flags


def cli_flags(name: str) -> tuple[str, ...]:
    """The CLI's own flags of stage NAME (logging, tracebacks), never a stage's."""
    return ("--debug", "-q", "--quiet", "-v", "--verbose") if name in BEAM_STAGES else ("--debug",)


def stage_argv(name: str, argv: list[str]) -> list[str]:
    """The stage's arguments as typed, without the CLI's own flags: what a stage records as its
    command (options.command_line)."""
    return [a for a in argv if a not in cli_flags(name)]


# ---------------------------------------------------------------------------------------------
# Errors in one line

# "ValueError: message" / "lm_models.errors.ModelSourceError: message" at a line start,
# as Python prints the last line of a traceback (Beam forwards a worker's traceback as text).
_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): ?(.*)$")
_BEAM_STEP = re.compile(r" \[while running '[^']*'\]")
# Exceptions whose message is the whole story for a user (no type name printed).
_PLAIN = (ValueError, OSError, LookupError)


def _chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        # `raise err from None` inside `except queue.Empty:` (Beam's data plane) hides the
        # Empty: it is not the cause, and its name says nothing to a user
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return chain


def _interrupted(exc: BaseException) -> bool:
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc)) or \
        root_message(exc).split(":", 1)[0] == "KeyboardInterrupt"


def root_message(exc: BaseException) -> str:
    """The original error of `exc` in one line: the innermost exception with a message in its
    cause/context chain, or, when Beam forwarded a worker's traceback as the message text, the
    first `Type: message` line of that text; Beam's "[while running 'Step']" suffixes removed."""
    chain = _chain(exc)
    # the innermost exception that says something: a bare `queue.Empty` or `grpc.RpcError`
    # deep in Beam's chain is no message for a user
    root = next((e for e in reversed(chain) if str(e).strip()), chain[-1])
    text = str(root)
    kind = type(root).__name__
    plain = isinstance(root, _PLAIN)
    if "Traceback (most recent call last)" in text:
        for line in text.splitlines():
            match = _EXCEPTION_LINE.match(line)
            if match:
                kind, text = match.group(1).rsplit(".", 1)[-1], match.group(2)
                plain = kind in ("ValueError", "OSError", "FileNotFoundError", "ModelSourceError",
                                 "KeyError")
                break
    text = _BEAM_STEP.sub("", text).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("ppsample: error: "):
        first = first[len("ppsample: error: "):]
    if not first:
        return kind
    return first if plain else f"{kind}: {first}"


def _configure_logging(flags: argparse.Namespace) -> dict:
    """Beam logs nothing by default (its error tracebacks would bury the one-line error), its
    INFO with -v, its warnings with --debug. Returns the previous levels, to restore."""
    beam = logging.getLogger("apache_beam")
    previous = {"apache_beam": beam.level}
    if flags.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
        beam.setLevel(logging.INFO)
    elif flags.debug:
        beam.setLevel(logging.WARNING)
    else:
        beam.setLevel(logging.CRITICAL + 1)
    return previous


def _thread_errors_to_beam_log(hook_args) -> None:
    """An exception that ends one of Beam's threads (a worker stopped by Ctrl-C, ...) goes to
    Beam's logger (shown with --debug or -v), not to stderr: what failed reaches the user as
    the pipeline's own error, in one line."""
    logging.getLogger("apache_beam").error(
        "thread %s: %s", getattr(hook_args.thread, "name", "?"), hook_args.exc_value,
        exc_info=(hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback))


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler): stopped as for Ctrl-C (staging folder removed, worker
    processes ended), instead of Python's default of dying on the spot and leaving both."""


def _interrupt_quietly(signum, frame):
    """SIGINT / SIGTERM in the driver: no more progress lines while Beam stops, then a
    KeyboardInterrupt (Terminated for SIGTERM)."""
    from pipelines import progress, worker_watchdog

    progress.mute()
    worker_watchdog.interrupted()  # the workers Beam stops now did not crash
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _say(message: str) -> None:
    print(f"ppsample: {message}", file=sys.stderr, flush=True)


def _forwarded(exc: BaseException) -> PpsampleError | None:
    """The PpsampleError behind `exc`: one in its cause/context chain (in-process runners), or
    one whose `module.Class: message` line is in a worker traceback Beam forwarded as text. An
    lm_models error (lm_models.errors.ModelError: lm_models cannot import pipelines.errors) is
    an InputError with its message's first line, found the same two ways."""
    chain = _chain(exc)
    own = next((e for e in reversed(chain) if isinstance(e, PpsampleError)), None)
    if own is not None:
        return own
    model = next((e for e in reversed(chain) if isinstance(e, ModelError)), None)
    if model is not None:
        return InputError(_first_line(str(model)))
    classes = {f"{c.__module__}.{c.__qualname__}": c
               for c in [PpsampleError, *errors.subclasses(PpsampleError),
                         ModelError, *errors.subclasses(ModelError)]}
    for line in str(chain[-1]).splitlines():
        name, sep, message = line.partition(": ")
        if sep and name in classes:
            kind = classes[name] if issubclass(classes[name], PpsampleError) else InputError
            return kind(_BEAM_STEP.sub("", message).strip())
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _fail(err: PpsampleError):
    """A PpsampleError as one line and its exit status, as a SystemExit (as argparse does)."""
    if err.exit_code == EXIT_FAILED:
        raise SystemExit(f"ppsample: error: {err.message}") from None
    _say(f"error: {err.message}")
    raise SystemExit(err.exit_code) from None


def _guarded(call, debug: bool) -> int:
    try:
        return int(call() or 0)
    except PpsampleError as err:  # raised before Beam, or re-raised as it is by a local runner
        if debug:
            raise
        _fail(err)
    except Terminated:
        if debug:
            raise
        _say("terminated (SIGTERM)")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        if debug:
            raise
        _say("interrupted (Ctrl-C)")
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the one place every error becomes one line
        if debug:
            raise
        if _interrupted(err):  # Beam re-raises a Ctrl-C caught in its worker threads
            _say("interrupted (Ctrl-C)")
            return EXIT_INTERRUPTED
        own = _forwarded(err)  # raised in a worker: its own message, its own exit status
        if own is not None:
            _fail(own)
        _say(f"error: {root_message(err)} (--debug for the traceback)")
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:  # --help, --version, or a usage error
        try:
            build_parser().parse_args(argv)  # prints help / version and exits
        except UsageError as err:
            _say(f"error: {err}")
            raise SystemExit(EXIT_USAGE) from None
        return EXIT_USAGE
    name, rest = argv[0], argv[1:]
    _quiet_beam_import_notice()
    debug = "--debug" in rest
    module = importlib.import_module(COMMANDS[name][0])
    if hasattr(module, "cli"):  # stages with sub-subcommands parse their own argv
        rest = [a for a in rest if a != "--debug"]
        return _guarded(lambda: module.cli(rest), debug)

    try:
        args, beam_argv, flags = _parse_stage_args(name, rest, module)
    except UsageError as err:
        _say(f"error: {err}")
        return EXIT_USAGE
    from pipelines import progress

    previous = _configure_logging(flags)
    loud = flags.verbose or flags.debug
    restore_signals = {}
    if name in BEAM_STAGES:
        from pipelines import worker_watchdog

        worker_watchdog.install(quiet_stderr=not loud)
        if not loud:
            previous["excepthook"] = threading.excepthook
            threading.excepthook = _thread_errors_to_beam_log
        if threading.current_thread() is threading.main_thread():
            for signum, default in ((signal.SIGINT, signal.default_int_handler),
                                    (signal.SIGTERM, signal.SIG_DFL)):
                if signal.getsignal(signum) is default:
                    restore_signals[signum] = signal.signal(signum, _interrupt_quietly)
    progress.set_quiet(flags.quiet)
    try:
        return _guarded(lambda: module.main(args, beam_argv, stage_argv(name, rest)), debug)
    finally:
        progress.set_quiet(False)
        progress.set_stage(None)
        logging.getLogger("apache_beam").setLevel(previous["apache_beam"])
        if "excepthook" in previous:
            threading.excepthook = previous["excepthook"]
        for signum, handler in restore_signals.items():
            signal.signal(signum, handler)


def entry() -> None:
    """The console script (`ppsample`, `python -m pipelines.cli`): main() in a process of its
    own. Beam is imported without the packages it would import only to offer them
    (pipelines.beam_import), and the exit skips the interpreter's last garbage collections: with
    Beam's ~190k objects they took ~0.8 s on one core after every command had finished (files
    are closed and committed by then; objects are still freed, only cycles are left to the OS).
    In-process callers (tests) use main() and keep both as they were."""
    from pipelines import beam_import

    _quiet_beam_import_notice()
    beam_import.import_beam()  # every command imports it: its arguments are parsed by pipelines.options
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
