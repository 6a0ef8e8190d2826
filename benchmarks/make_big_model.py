"""Builds a benchmark KenLM model the size of a real cc_net one (not committed, not shipped).

    python benchmarks/make_big_model.py                  # -> ~/.cache/ppsample/bench-model
    python benchmarks/make_big_model.py --tokens 20e6 --out /tmp/small-bench-model  # quick try

Why: the cost projection (docs/dataflow.md) needs the scoring speed of a ~5 GB cc_net 5-gram,
and the bundled model is a 6 MB 8-bit trie whose tables sit in the CPU caches. cc_net's
published models are KenLM *probing* binaries (its Makefile runs `build_binary` with no type)
of several GB, so every n-gram lookup is a random access into a table far larger than any
cache. This script builds such a table from the data we have.

How (all deterministic for a given --seed):
1. The reference corpus (../shared/data/es/reference.txt.gz) is normalised with the ccnet preset
   and tokenised with the *bundled* model's SentencePiece (lm_models/bundled/es-reference/
   es.sp.model), so benchmark documents tokenise exactly as they do for the bundled model.
2. A generated corpus of --tokens pieces: random walks of an order-2 Markov chain over those
   pieces (each next piece is drawn from the pieces that followed the same two pieces in the
   reference, i.e. reference sentences recombined wherever they share a bigram); with
   probability --backoff a step uses only the last piece as context, which keeps new 4- and
   5-grams appearing (a pure order-2 walk mostly re-copies the reference's rarer bigrams).
   A walk ends where the reference's lines end (</s>).
3. `lmplz -o 5` with NO pruning (every n-gram kept, so the table grows with the corpus), then
   `build_binary -p 2.25 probing` (KenLM's default structure, as cc_net; -p 2.25 instead of the
   default 1.5 hash slots per n-gram stretches the table to the >= 3 GB asked for, which at
   -p 1.5 would take ~2x the corpus and ~2x the build time), and a model.json so that
   `ppsample run --model DIR` accepts the directory.

How close its query pattern is to a real Wikipedia-trained model's (say so beside any figure):
- Close: the same structure (probing hash tables, 5-gram) and size, so each lookup costs a cache
  and TLB miss into a multi-GB mapping, as it does for the real model; the same SentencePiece, so
  the same number of tokens per document and the same tokenising cost.
- Far: its vocabulary and all its 1-3-grams are the 6 MB reference's (a real model trained on
  Wikipedia has ~100x more distinct contexts), and its 4-5-grams are random recombinations. On
  web text a real model matches longer contexts (more probes per token before the first miss);
  ours matches about as far as the bundled model does, so per token it does somewhat FEWER
  lookups than the real model. The figure is therefore an upper bound on the real model's speed
  as far as match length goes, and a fair one as far as table size (cache misses) goes.

Measured with the defaults (2026-12-02, 2-core machine at load ~7): 91 M training pieces ->
106 M n-grams (1-5: 16 k, 0.71 M, 8.3 M, 34.9 M, 63.0 M), a 5.1 GB ARPA, a 3.28 GB binary
(2.08 GB at -p 1.5); ~1 min generating, ~13 min lmplz, ~4 min build_binary; peak disk ~9 GB.
lmplz sorts in -S (default 25% of RAM); the ARPA is deleted once the binary is built.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUNDLED = ROOT / "lm_models" / "bundled" / "es-reference"
REFERENCE = ROOT.parent / "shared" / "data" / "es" / "reference.txt.gz"
DEFAULT_OUT = Path.home() / ".cache" / "ppsample" / "bench-model"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reference_ids(reference: Path, sp_model: Path) -> tuple[list[str], np.ndarray]:
    """(pieces, ids): the normalised reference tokenised by sp_model, one int32 array of ids
    with -1 between lines."""
    import sentencepiece

    from lm_models.normalization import Normalizer
    from lm_models.perplexity import get_preset

    normalize = Normalizer(get_preset("ccnet").normalization)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
    with gzip.open(reference, "rt", encoding="utf-8") as f:
        lines = [t for t in (normalize(line.rstrip("\n")) for line in f) if t.strip()]
    out: list[int] = []
    for ids in sp.encode(lines):
        out.extend(ids)
        out.append(-1)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    return pieces, np.asarray(out, dtype=np.int64)


class Chain:
    """An order-2 (and order-1) Markov chain over piece ids, walked as positions in the
    reference: from position p (last two pieces seq[p-1], seq[p]) the walk jumps to a random
    position q with the same two pieces and emits seq[q + 1], i.e. the next piece has the
    reference's conditional frequencies. Plain array indexing: fast enough for 1e8 pieces."""

    def __init__(self, ids: np.ndarray, vocab: int):
        self.bos, self.eos = vocab, vocab + 1  # line start / end as ids of their own
        seq = np.where(ids < 0, self.eos, ids)
        # every line starts with (bos, bos): two bos before each line start
        starts = np.concatenate([[0], np.flatnonzero(seq == self.eos)[:-1] + 1])
        seq = np.insert(seq, np.repeat(starts, 2), self.bos)
        self.seq = seq
        self.start = int(np.flatnonzero(seq == self.bos)[1])  # any (bos, bos) position
        base = vocab + 2
        prev = np.concatenate([[self.eos], seq[:-1]])
        valid = (seq != self.eos) & (np.arange(len(seq)) < len(seq) - 1)
        self.group2 = self._groups(np.where(valid, prev * base + seq, -1), valid)
        self.group1 = self._groups(np.where(valid, seq, -1), valid)

    @staticmethod
    def _groups(keys: np.ndarray, valid: np.ndarray):
        """(group of each position, positions sorted by group, first index, count)."""
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return inverse, order, first, counts

    @staticmethod
    def _jump(groups, pos, rng):
        inverse, order, first, counts = groups
        g = inverse[pos]
        return order[first[g] + (rng.random(len(pos)) * counts[g]).astype(np.int64)]

    def walk(self, chains: int, steps: int, backoff: float, rng) -> np.ndarray:
        """(chains, steps) piece ids, eos where a line ends (that walk then restarts)."""
        pos = np.full(chains, self.start, dtype=np.int64)
        out = np.empty((steps, chains), dtype=np.int64)
        for t in range(steps):
            q = self._jump(self.group2, pos, rng)
            use1 = rng.random(chains) < backoff
            if use1.any():
                q[use1] = self._jump(self.group1, pos[use1], rng)
            nxt = self.seq[q + 1]
            out[t] = nxt
            pos = np.where(nxt == self.eos, self.start, q + 1)
        return out.T


def write_corpus(chain: Chain, pieces: list[str], path: Path, tokens: int, backoff: float,
                 seed: int, chains: int = 100_000, steps: int = 200) -> int:
    """Writes about `tokens` generated pieces to path, one line per walk; returns lines."""
    rng = np.random.default_rng(seed)
    words = np.array([" " + p for p in pieces] + ["", "\n"], dtype=object)
    lines = written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < tokens:
            block = chain.walk(chains, steps, backoff, rng)
            is_end = block == chain.eos
            # whole lines only: drop each walk's piece after its last line end
            last = steps - 1 - np.argmax(is_end[:, ::-1], axis=1)
            last[~is_end.any(axis=1)] = -1
            keep = block[np.arange(steps)[None, :] <= last[:, None]]
            f.write("".join(words[keep].tolist()))
            ends = int(is_end.sum())
            lines += ends
            written += len(keep) - ends
            say(f"  generated {written / 1e6:.0f}M of {tokens / 1e6:.0f}M pieces")
    return lines


def distinct_ngrams(path: Path, order: int, limit: int) -> list[int]:
    """Distinct 1..order-grams in the first `limit` pieces of path (a novelty check)."""
    counts = []
    with open(path, encoding="utf-8") as f:
        toks = []
        for line in f:
            toks.extend(line.split() + ["</s>"])
            if len(toks) >= limit:
                break
    ids = np.unique(np.array(toks), return_inverse=True)[1].astype(np.int64)
    for n in range(1, order + 1):
        key = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        for k in range(n):
            key = key * np.uint64(1_000_003) + ids[k:len(ids) - n + 1 + k].astype(np.uint64)
        counts.append(len(np.unique(key)))
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tokens", type=float, default=80e6, help="generated pieces (default 80e6)")
    p.add_argument("--backoff", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory", default="25%", help="lmplz -S (default %(default)s)")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder (default OUT.work; removed at the end)")
    p.add_argument("--reference", type=Path, default=REFERENCE)
    p.add_argument("--probing-multiplier", type=float, default=2.25,
                   help="build_binary -p: hash table slots per n-gram (KenLM's default is 1.5)")
    p.add_argument("--arpa", type=Path, default=None,
                   help="an ARPA file lmplz already wrote (e.g. OUT.work/es.arpa of a run cut "
                        "short during build_binary): skip generating and lmplz")
    p.add_argument("--check-only", action="store_true",
                   help="generate 5M pieces and print distinct n-gram counts, build nothing")
    args = p.parse_args(argv)

    from lm_models.kenlm_training import find_tool

    started = time.monotonic()
    out: Path = args.out
    work = args.work or out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    sp_model = BUNDLED / "es.sp.model"
    lmplz_args = ["-o", "5", "-S", args.memory, "--skip_symbols"]
    if args.arpa is not None:
        return build(args, args.arpa, work, sp_model, lmplz_args, None, started)
    say(f"tokenising {args.reference} with {sp_model}")
    pieces, ids = reference_ids(args.reference, sp_model)
    say(f"reference: {int((ids >= 0).sum()):,} pieces, {int((ids < 0).sum()):,} lines")
    chain = Chain(ids, len(pieces))
    corpus = work / "generated.txt"
    tokens = int(5e6) if args.check_only else int(args.tokens)
    lines = write_corpus(chain, pieces, corpus, tokens, args.backoff, args.seed)
    ref_txt = work / "reference_tokens.txt"
    words = np.array([" " + x for x in pieces] + ["", "\n"], dtype=object)
    ref_txt.write_text("".join(words[np.where(ids < 0, len(pieces) + 1, ids)].tolist()),
                       encoding="utf-8")
    if args.check_only:
        limit = int((ids >= 0).sum())
        print("distinct 1..5-grams per piece, first", f"{limit:,}", "pieces:")
        for name, path in [("reference", ref_txt), ("generated", corpus)]:
            c = distinct_ngrams(path, 5, limit)
            print(f"  {name:9s}", " ".join(f"{x / limit:.3f}" for x in c))
        return 0

    lmplz = find_tool("lmplz")
    arpa = work / "es.arpa"
    # The reference itself is part of the training text, so its own n-grams are all there.
    say(f"lmplz {' '.join(lmplz_args)} on {lines:,} generated lines + the reference")
    with open(arpa, "wb") as dst:
        cat = subprocess.Popen(["cat", str(ref_txt), str(corpus)], stdout=subprocess.PIPE)
        subprocess.run([lmplz, *lmplz_args, "-T", str(work) + "/"], stdin=cat.stdout,
                       stdout=dst, check=True)
        cat.stdout.close()
        if cat.wait() != 0:
            raise RuntimeError("cat failed")
    corpus.unlink()
    return build(args, arpa, work, sp_model, lmplz_args, lines, started)


def build(args, arpa: Path, work: Path, sp_model: Path, lmplz_args: list[str],
          lines: int | None, started: float) -> int:
    from lm_models.file_hash import sha256_file
    from lm_models.kenlm_training import find_tool

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    binary_args = ["-p", str(args.probing_multiplier), "probing"]
    say(f"build_binary {' '.join(binary_args)}")
    tmp_bin = out / "es.arpa.bin.partial"
    subprocess.run([find_tool("build_binary"), *binary_args, str(arpa), str(tmp_bin)], check=True)
    os.replace(tmp_bin, out / "es.arpa.bin")
    shutil.copyfile(sp_model, out / "es.sp.model")
    shutil.rmtree(work)
    files = {"lm": "es.arpa.bin", "sp": "es.sp.model"}
    sizes = {n: (out / n).stat().st_size for n in files.values()}
    bundled = json.loads((BUNDLED / "model.json").read_text(encoding="utf-8"))
    model_json = {
        "format": 1, "preset": "ccnet", "language": "es", "files": files, "order": 5,
        "vocab_size": bundled["vocab_size"],
        "benchmark_only": "generated by benchmarks/make_big_model.py: random recombinations of "
                          "the reference corpus, for timing only; its perplexities mean nothing",
        "generation": {"tokens": int(args.tokens), "backoff": args.backoff, "seed": args.seed,
                       "lines": lines, "reference": str(args.reference)},
        "lmplz_args": lmplz_args, "build_binary_args": binary_args,
        "file_sizes": sizes,
        "file_sha256": {n: sha256_file(out / n) for n in files.values()},
        "total_size": sum(sizes.values()),
        "command": "python benchmarks/make_big_model.py " + " ".join(sys.argv[1:]),
    }
    (out / "model.json").write_text(json.dumps(model_json, indent=2) + "\n", encoding="utf-8")
    say(f"wrote {out} ({sum(sizes.values()) / 1e9:.2f} GB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
