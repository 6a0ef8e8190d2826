"""`ppsample`: one CLI, one subcommand per stage.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`main(args, beam_argv) -> int`; modules are imported only when their subcommand runs, so
`ppsample score` never pays for JAX and `ppsample finetune` never pays for Beam.
Unknown `--flags` are handed to the stage as `beam_argv` (Beam's PipelineOptions: `--runner`,
`--direct_num_workers`, `--project`, ...).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipelines.corpus.run", "score -> stats -> sample in one Beam pipeline (bundled sample by default)"),
    "score": ("pipelines.corpus.score", "score documents with a KenLM perplexity model -> parquet"),
    "stats": ("pipelines.corpus.stats", "perplexity boundaries and histogram of scored parquet"),
    "sample": ("pipelines.corpus.sample", "keep documents by gaussian / stepwise / random sampling"),
    "publish": ("pipelines.publish.stage", "build and upload the sampled dataset to the Hugging Face Hub"),
    "train-lm": ("pipelines.train_lm", "train a SentencePiece + KenLM perplexity model"),
    "prepare-finetune": ("pipelines.finetune.prepare", "tokenise and pack sampled documents for GPT-J"),
    "finetune": ("pipelines.finetune.stage", "train GPT-J (JAX); also `finetune check-fit` and `finetune launch`"),
}


def _quiet_beam_import_notice() -> None:
    # `import apache_beam` logs this on every install without the gcp extra; it is about
    # BigQuery, which ppsample never uses, and would greet every user of every command.
    logging.getLogger().addFilter(
        lambda record: "apitools not found" not in record.getMessage())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("perplexity-sampling")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppsample",
        description="Perplexity sampling of web corpora (KenLM + Beam) and a JAX GPT-J finetune stage.",
        epilog="`ppsample COMMAND --help` for each stage; `ppsample run` alone runs the bundled demo offline.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:  # --help, --version, or a usage error
        build_parser().parse_args(argv)  # prints usage / error and exits
        return 2
    name, rest = argv[0], argv[1:]
    _quiet_beam_import_notice()
    module = importlib.import_module(COMMANDS[name][0])
    if hasattr(module, "cli"):  # stages with sub-subcommands parse their own argv
        return int(module.cli(rest) or 0)
    parser = argparse.ArgumentParser(prog=f"ppsample {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args, beam_argv = parser.parse_known_args(rest)
    stray = [a for a in beam_argv if not a.startswith("-")]
    if stray and not any(a.startswith("--") for a in beam_argv):
        parser.error(f"unrecognised arguments: {' '.join(stray)}")
    return int(module.main(args, beam_argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
