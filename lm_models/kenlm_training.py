"""Train a perplexity model: preset normalisation -> SentencePiece (unigram) -> KenLM.

The output directory has cc_net's layout plus provenance, so `PerplexityModel.load(dir)` scores
with the same preset it was trained with:

    es.sp.model   SentencePiece unigram model trained on the normalised corpus
    es.arpa.bin   KenLM binary (build_binary trie, optional quantisation), memory-mapped at load
    model.json    preset, order, vocabulary size, corpus sha256, held-out rule, file sizes,
                  lmplz / build_binary arguments and the command that made it

The `bertin` preset trains KenLM on raw whitespace-separated words (no SentencePiece model).
`lmplz` and `build_binary` are KenLM's C++ tools; PyPI's kenlm has only the query library, so
they are installed by scripts/install_kenlm_tools.sh.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lm_models.errors import ModelError
from lm_models.file_hash import sha256_file
from lm_models.model_sources import MODEL_JSON, SP_SUFFIX, is_url
from lm_models.normalization import Normalizer
from lm_models.perplexity import get_preset

INSTALL_HINT = ("KenLM's `{tool}` was not found on PATH (nor in {dirs}). PyPI's kenlm ships only "
                "the query library; build the tools with `bash scripts/install_kenlm_tools.sh` "
                "from the perplexity-sampling repository (it needs Debian's Boost dev packages "
                "and installs into the active venv's bin or ~/.local/bin), then put that bin "
                "directory on PATH.")


class KenLMToolMissing(ModelError, RuntimeError):
    """lmplz or build_binary is not installed; the message says how to build them."""


class KenLMToolFailed(ModelError, RuntimeError):
    """lmplz or build_binary exited non-zero. The message's first line is what the CLI shows
    (the tool's last output line); the lines after it hold the tool's output (--debug)."""


class CorpusError(ModelError, OSError):
    """The training corpus is missing or cannot be downloaded."""


class TrainingError(ModelError, ValueError):
    """A corpus or an option train_model cannot train on (no lines, a bad order or holdout)."""


@dataclass
class TrainingConfig:
    preset: str = "ccnet"
    language: str = "es"
    order: int = 5
    vocab_size: int = 16000
    character_coverage: float = 0.9999
    sp_input_sentence_size: int = 2_000_000  # SentencePiece samples at most this many lines
    prune: list[int] = field(default_factory=list)  # lmplz --prune thresholds per order
    discount_fallback: bool = False
    memory: str = "1G"  # lmplz -S
    data_structure: str = "trie"  # build_binary: trie | probing
    quantize_prob_bits: int | None = None  # build_binary -q
    quantize_backoff_bits: int | None = None  # build_binary -b
    pointer_compress_bits: int | None = None  # build_binary -a
    keep_arpa: bool = False
    max_lines: int | None = None  # read at most this many corpus lines
    holdout_every: int | None = None  # line i (0-based) is held out when i % holdout_every == 0
    seed: int = 0


def tool_dirs() -> list[Path]:
    """Where scripts/install_kenlm_tools.sh puts the tools, searched after PATH."""
    return [Path(sys.prefix) / "bin", Path.home() / ".local" / "bin"]


def find_tool(name: str) -> str:
    """Path of a KenLM tool: PATH, then the venv's bin, then ~/.local/bin."""
    found = shutil.which(name)
    extra = tool_dirs()
    if found is None:
        for directory in extra:
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found = str(candidate)
                break
    if found is None:
        raise KenLMToolMissing(INSTALL_HINT.format(tool=name, dirs=", ".join(map(str, extra))))
    return found




def _fetch_corpus(corpus: str, workdir: Path) -> Path:
    if not is_url(corpus):
        path = Path(corpus.removeprefix("file://"))
        if not path.is_file():
            raise CorpusError(f"corpus {corpus!r} not found")
        return path
    local = workdir / ("corpus" + "".join(Path(corpus.rstrip("/")).suffixes[-2:]))
    try:
        if corpus.startswith(("http://", "https://")):
            import urllib.request

            remote = urllib.request.urlopen(corpus, timeout=60)  # fsspec's http needs aiohttp
        else:
            import fsspec

            remote = fsspec.open(corpus, "rb").open()
        with remote, open(local, "wb") as out:
            shutil.copyfileobj(remote, out, length=8 << 20)
    except Exception as exc:
        raise CorpusError(f"cannot download corpus {corpus!r}: {type(exc).__name__}: {exc}") from exc
    return local


def _corpus_lines(path: Path) -> Iterator[str]:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        for line in f:
            yield line.rstrip("\n")


def holdout_split(lines: Iterable[str], holdout_every: int | None,
                  max_lines: int | None = None) -> Iterator[tuple[bool, str]]:
    """(held_out, line) for each corpus line within max_lines: line i (0-based) is held out
    when i % holdout_every == 0, so with 20 the held-out set is lines 0, 20, 40, ... exactly
    (an evaluation set anyone can rebuild with `sed -n '1~20p'`)."""
    for i, line in enumerate(lines):
        if max_lines is not None and i >= max_lines:
            break
        yield bool(holdout_every) and i % holdout_every == 0, line


def write_training_lines(corpus_path: Path, out_path: Path, config: TrainingConfig,
                         say: Callable[[str], None] = lambda message: None
                         ) -> tuple[int, int, int]:
    """Writes the normalised training lines (held-out and blank ones left out) to out_path;
    returns (lines read, held out, written)."""
    preset = get_preset(config.preset)
    normalize = Normalizer(preset.normalization) if preset.normalization else None
    read = held_out = used = 0
    with open(out_path, "w", encoding="utf-8") as f:
        for is_held_out, line in holdout_split(_corpus_lines(corpus_path), config.holdout_every,
                                               config.max_lines):
            read += 1
            if is_held_out:
                held_out += 1
                continue
            text = normalize(line) if normalize else line.strip()
            if text.strip():
                f.write(text + "\n")
                used += 1
            if read % 20000 == 0:
                say(f"  normalised {read:,} lines")
    return read, held_out, used


def _command_line() -> str:
    import shlex

    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("ppsample", "cli.py", "__main__.py"):
        argv[0] = "ppsample"
    return " ".join(shlex.quote(a) for a in argv)


def train_model(corpus: str, output_dir: str | os.PathLike, config: TrainingConfig,
                command: str | None = None, progress: Callable[[str], None] | None = None
                ) -> dict:
    """Train a model from `corpus` (local or URL, plain or .gz) into `output_dir`.

    Returns the model.json content. Raises KenLMToolMissing before any work when lmplz or
    build_binary is missing; CorpusError, TrainingError, KenLMToolFailed (all
    lm_models.errors.ModelError) for a corpus, an option or a tool run it cannot go on with.
    """
    say = progress or (lambda message: None)
    preset = get_preset(config.preset)
    if preset.per_line and preset.sentencepiece:
        raise TrainingError(f"train with the base preset ({config.preset.split('-')[0]}); "
                            "the -lines variants only change scoring")
    if config.order < 1 or config.vocab_size < 1:
        raise TrainingError("order and vocab_size must be positive")
    if config.holdout_every is not None and config.holdout_every < 2:
        raise TrainingError("holdout_every must be at least 2")
    lmplz, build_binary = find_tool("lmplz"), find_tool("build_binary")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm_name, sp_name = f"{config.language}.arpa.bin", f"{config.language}{SP_SUFFIX}"
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="ppsample-train-lm-") as tmp:
        work = Path(tmp)
        corpus_path = _fetch_corpus(corpus, work)
        corpus_sha = sha256_file(corpus_path)
        say(f"corpus {corpus} ({corpus_path.stat().st_size:,} bytes, sha256 {corpus_sha[:12]}…)")

        # 1. select and normalise the training lines (held-out lines never reach the model)
        normalized = work / "normalized.txt"
        read, held_out, used = write_training_lines(corpus_path, normalized, config, say)
        if used == 0:
            raise TrainingError(f"corpus {corpus!r} has no non-empty training lines")
        say(f"normalised {read:,} lines ({held_out:,} held out, {used:,} used) "
            f"with preset {config.preset}")

        # 2. SentencePiece unigram model, 3. tokenise
        tokens = work / "tokens.txt"
        if preset.sentencepiece:
            import sentencepiece

            say(f"training SentencePiece unigram, vocab {config.vocab_size:,}")
            sentencepiece.set_random_generator_seed(config.seed)  # its line sampling
            # Lines come from an iterator and the model goes to memory so that no temporary
            # path is recorded inside the model: same corpus and options -> same bytes.
            model_bytes = io.BytesIO()
            with open(normalized, encoding="utf-8") as lines:
                sentencepiece.SentencePieceTrainer.train(
                    sentence_iterator=(line.rstrip("\n") for line in lines),
                    model_writer=model_bytes, model_type="unigram",
                    vocab_size=config.vocab_size, character_coverage=config.character_coverage,
                    input_sentence_size=config.sp_input_sentence_size,
                    shuffle_input_sentence=True, num_threads=1, minloglevel=2)
            (out / sp_name).write_bytes(model_bytes.getvalue())
            sp = sentencepiece.SentencePieceProcessor(model_file=str(out / sp_name))
            with open(normalized, encoding="utf-8") as src, \
                    open(tokens, "w", encoding="utf-8") as dst:
                batch: list[str] = []
                for line in src:
                    batch.append(line.rstrip("\n"))
                    if len(batch) == 10000:
                        dst.writelines(" ".join(p) + "\n" for p in sp.encode(batch, out_type=str))
                        batch = []
                dst.writelines(" ".join(p) + "\n" for p in sp.encode(batch, out_type=str))
            say("tokenised the training lines")
        else:
            tokens = normalized
            if (out / sp_name).exists():
                (out / sp_name).unlink()

        # 4. lmplz -> ARPA, 5. build_binary -> binary
        arpa = work / f"{config.language}.arpa"
        lmplz_args = ["-o", str(config.order), "-S", config.memory]
        if config.prune:
            lmplz_args += ["--prune", *map(str, config.prune)]
        if config.discount_fallback:
            lmplz_args.append("--discount_fallback")
        say(f"lmplz {' '.join(lmplz_args)}")
        _run([lmplz, *lmplz_args, "-T", str(work) + "/", "--text", str(tokens),
              "--arpa", str(arpa)], "lmplz", say)
        binary_args = []
        if config.pointer_compress_bits is not None:
            binary_args += ["-a", str(config.pointer_compress_bits)]
        if config.quantize_prob_bits is not None:
            binary_args += ["-q", str(config.quantize_prob_bits)]
        if config.quantize_backoff_bits is not None:
            binary_args += ["-b", str(config.quantize_backoff_bits)]
        binary_args += [config.data_structure, str(arpa), str(out / lm_name)]
        say(f"build_binary {' '.join(binary_args)}")
        _run([build_binary, *binary_args], "build_binary", say)
        if config.keep_arpa:
            shutil.copyfile(arpa, out / arpa.name)

    files = {"lm": lm_name}
    if preset.sentencepiece:
        files["sp"] = sp_name
    sizes = {name: (out / name).stat().st_size for name in files.values()}
    model_json = {
        "format": 1,
        "preset": config.preset,
        "language": config.language,
        "files": files,
        "order": config.order,
        "vocab_size": config.vocab_size if preset.sentencepiece else None,
        "corpus": {
            "source": corpus,
            "sha256": corpus_sha,
            "lines_read": read,
            "lines_trained": used,
            "lines_held_out": held_out,
            "max_lines": config.max_lines,
            "holdout": None if not config.holdout_every else {
                "every": config.holdout_every,
                "rule": "0-based line index i of the corpus (within max_lines) is held out "
                        "when i % every == 0",
            },
        },
        "training": asdict(config),
        "lmplz_args": lmplz_args,
        "build_binary_args": binary_args[:-2],
        "file_sizes": sizes,
        "file_sha256": {name: sha256_file(out / name) for name in files.values()},
        "total_size": sum(sizes.values()),
        "command": command if command is not None else _command_line(),
    }
    with open(out / MODEL_JSON, "w", encoding="utf-8") as f:
        json.dump(model_json, f, indent=2, ensure_ascii=False)
        f.write("\n")
    say(f"wrote {out} ({sum(sizes.values()) / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return model_json


def _run(argv: list[str], tool: str, say: Callable[[str], None]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace")
    if proc.returncode != 0:
        last = next((line.strip() for line in reversed(proc.stdout.splitlines()) if line.strip()),
                    "no output")
        raise KenLMToolFailed(f"{tool} failed (exit {proc.returncode}): {last}\n"
                              f"{proc.stdout[-4000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith(("=== ", "Unigram tokens", "Memory estimate", "Statistics:")):
            say(f"  {tool}: {line}")
