"""`ppsample train-lm`: train a SentencePiece + KenLM perplexity model from a text corpus.

    ppsample train-lm --corpus corpus.txt.gz --output models/es-wiki --preset ccnet \\
        --order 5 --vocab-size 16000 --prune 0 0 1 -q 8 -b 8

One document or paragraph per line; local path or URL (fsspec), plain or .gz.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from lm_models.kenlm_training import TrainingConfig, train_model
from pipelines.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainingConfig()
    parser.add_argument("--corpus", required=True,
                        help="training text, one paragraph per line (path or URL, plain or .gz)")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--preset", default=defaults.preset, choices=["ccnet", "edugp", "bertin"],
                        help="normalisation the model is trained and later scored with "
                             "(default %(default)s)")
    parser.add_argument("--language", default=defaults.language,
                        help="file prefix: LANG.arpa.bin, LANG.sp.model (default %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size,
                        help="SentencePiece unigram vocabulary size (default %(default)s)")
    parser.add_argument("--character-coverage", type=float,
                        default=defaults.character_coverage,
                        help="SentencePiece character coverage (default %(default)s)")
    parser.add_argument("--order", "-o", type=int, default=defaults.order,
                        help="n-gram order for lmplz (default %(default)s)")
    parser.add_argument("--prune", type=int, nargs="+", default=[], metavar="COUNT",
                        help="lmplz --prune thresholds per order, e.g. 0 0 1 "
                             "(drop singleton 3-grams and above)")
    parser.add_argument("--discount-fallback", action="store_true",
                        help="lmplz --discount_fallback (needed for tiny corpora)")
    parser.add_argument("--memory", "-S", default=defaults.memory,
                        help="lmplz sorting memory, e.g. 1G or 20%% (default %(default)s)")
    parser.add_argument("--data-structure", choices=["trie", "probing"],
                        default=defaults.data_structure,
                        help="build_binary data structure (default %(default)s)")
    parser.add_argument("-q", "--quantize-prob-bits", type=int, default=None,
                        help="build_binary -q: quantise probabilities to this many bits (trie)")
    parser.add_argument("-b", "--quantize-backoff-bits", type=int, default=None,
                        help="build_binary -b: quantise backoffs to this many bits (trie)")
    parser.add_argument("-a", "--pointer-compress-bits", type=int, default=None,
                        help="build_binary -a: trie pointer compression bits")
    parser.add_argument("--max-lines", type=int, default=None,
                        help="read only the first N lines of the corpus")
    parser.add_argument("--holdout-every", type=int, default=None, metavar="N",
                        help="keep line i (0-based) out of training when i %% N == 0; "
                             "recorded in model.json for evaluation")
    parser.add_argument("--keep-arpa", action="store_true", help="also keep the ARPA file")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="SentencePiece sampling seed (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace, beam_argv: list[str], argv=None) -> int:  # argv: unused
    """Errors are raised for pipelines.cli to print: train_model's are lm_models.errors.ModelError
    (a missing tool, an unusable corpus or option: exit 1)."""
    if beam_argv:
        raise UsageError(f"unrecognised arguments: {' '.join(beam_argv)} (train-lm runs no Beam "
                         "pipeline)")
    config = TrainingConfig(
        preset=args.preset, language=args.language, order=args.order,
        vocab_size=args.vocab_size, character_coverage=args.character_coverage,
        prune=list(args.prune), discount_fallback=args.discount_fallback, memory=args.memory,
        data_structure=args.data_structure, quantize_prob_bits=args.quantize_prob_bits,
        quantize_backoff_bits=args.quantize_backoff_bits,
        pointer_compress_bits=args.pointer_compress_bits, keep_arpa=args.keep_arpa,
        max_lines=args.max_lines, holdout_every=args.holdout_every, seed=args.seed)
    command = "ppsample train-lm " + " ".join(shlex.quote(a) for a in _own_argv(args))
    progress = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    train_model(args.corpus, args.output, config, command=command, progress=progress)
    return 0


def _own_argv(args: argparse.Namespace) -> list[str]:
    """The arguments as given on the command line, for model.json's `command`."""
    argv = sys.argv[1:]
    if argv and argv[0] == "train-lm":
        return argv[1:]
    # Called programmatically: rebuild from the parsed values.
    out = ["--corpus", args.corpus, "--output", args.output, "--preset", args.preset]
    for flag, value in [("--language", args.language), ("--vocab-size", args.vocab_size),
                        ("--order", args.order), ("--memory", args.memory),
                        ("--data-structure", args.data_structure),
                        ("-q", args.quantize_prob_bits), ("-b", args.quantize_backoff_bits),
                        ("-a", args.pointer_compress_bits), ("--max-lines", args.max_lines),
                        ("--holdout-every", args.holdout_every), ("--seed", args.seed)]:
        if value is not None:
            out += [flag, str(value)]
    if args.prune:
        out += ["--prune", *map(str, args.prune)]
    if args.discount_fallback:
        out.append("--discount-fallback")
    return out
