"""`ppsample finetune`: train GPT-J on packed token shards (local JAX devices: CPU, GPU or TPU).

    ppsample finetune --config C --data TOKENS_DIR --workdir DIR [--steps N] [--init HF_DIR]
    ppsample finetune check-fit ...     (lm_models.gptj.check_fit: will a config fit a TPU?)
    ppsample finetune launch ...        (pipelines.finetune.launch: run it on a Cloud TPU VM)

The tokens directory is checked (manifest, shard sizes and sha256, token ids inside the
vocabulary, window length against the config) before any device work, so bad data is a clear
error, not a crash at step 10,000. With `--verify auto` (default) the full check (reading every
byte: ~128 GB for a BERTIN-size dataset) runs once per dataset and is recorded in
WORKDIR/data_verified.json; restarts (preemptions) then only check shard sizes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np

from pipelines.errors import RefusedInputError
from pipelines.finetune import token_shards as ts

EXPORT_DTYPES = {"float32": np.float32, "float16": np.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="'tiny', 'gptj-6b-v3-8' or a JSON config file")
    parser.add_argument("--data", required=True, help="tokens directory from prepare-finetune (local or gs://)")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics.jsonl and the exported model (local or gs://); "
                             "an existing run there is resumed")
    parser.add_argument("--steps", type=int, default=None,
                        help="train until this global step (default: the config's total_steps)")
    parser.add_argument("--init", default=None,
                        help="Hugging Face GPT-J directory to start from (ignored when resuming)")
    parser.add_argument("--init-state", default=None,
                        help="another run's workdir (local or gs://): start from the params AND Adam moments "
                             "of its latest checkpoint, step reset to 0 (ignored when resuming)")
    parser.add_argument("--verify", choices=["auto", "full", "size"], default="auto",
                        help="full: check every shard's sha256 and token ids; size: only sizes; auto "
                             "(default): full the first time this workdir sees the dataset, size after")
    parser.add_argument("--export-dtype", choices=sorted(EXPORT_DTYPES), default="float32",
                        help="dtype of the exported Hugging Face weights")
    parser.add_argument("--no-export", action="store_true", help="do not export WORKDIR/hf at the end")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (multi-host TPU slices)")


def open_training_data(tokens_dir: str, cfg, verify: str = "full"):
    """(train, validation or None) splits, checked against the config before training starts."""
    train = ts.open_split(tokens_dir, "train", verify)
    manifest = train.manifest
    if train.window != cfg.seq_len + 1:
        raise RefusedInputError(
            f"{tokens_dir} holds windows of {train.window} ids but config {cfg.name!r} trains on "
            f"seq_len+1 = {cfg.seq_len + 1}; rerun prepare-finetune with --window {cfg.seq_len + 1}")
    if int(manifest["vocab_size"]) > cfg.model.vocab_size:
        raise RefusedInputError(
            f"{tokens_dir} was tokenised with a vocabulary of {manifest['vocab_size']} ids, more than "
            f"the model's {cfg.model.vocab_size}")
    validation = None
    if manifest["splits"].get("validation", {}).get("windows", 0) > 0:
        validation = ts.open_split(tokens_dir, "validation", verify)
    return train, validation


VERIFIED = "data_verified.json"


def _manifest_digest(tokens_dir: str) -> str:
    manifest = ts.read_manifest(tokens_dir)
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _verified_before(workdir: str, digest: str) -> bool:
    import fsspec
    fs, path = fsspec.core.url_to_fs(ts.join(workdir, VERIFIED))
    if not fs.exists(path):
        return False
    try:
        with fs.open(path, "r") as f:
            return json.load(f).get("manifest_sha256") == digest
    except (ValueError, OSError):
        return False


def _record_verified(workdir: str, tokens_dir: str, digest: str) -> None:
    import fsspec
    fs, path = fsspec.core.url_to_fs(ts.join(workdir, VERIFIED))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as f:
        json.dump({"manifest_sha256": digest, "tokens_dir": tokens_dir, "verified": "full"}, f)


def resolve_verify(verify: str, data: str, workdir: str) -> tuple[str, str | None]:
    """auto -> 'size' when this workdir already verified this exact manifest fully, else 'full'.
    Returns (mode, digest to record after a successful full check or None)."""
    if verify != "auto":
        return verify, (_manifest_digest(data) if verify == "full" else None)
    digest = _manifest_digest(data)
    return ("size", None) if _verified_before(workdir, digest) else ("full", digest)


def run_finetune(config: str, data: str, workdir: str, steps: int | None = None, init: str | None = None,
                 verify: str = "auto", export: bool = True, export_dtype: str = "float32",
                 init_state: str | None = None) -> dict:
    import jax

    from lm_models.gptj.train_step import load_config
    from lm_models.gptj.train_loop import train

    cfg = load_config(config)
    mode, digest = resolve_verify(verify, data, workdir)
    train_split, val_split = open_training_data(data, cfg, mode)
    if digest is not None and jax.process_index() == 0:
        _record_verified(workdir, data, digest)
    if val_split is None:
        print(f"warning: {data} has no validation windows; no validation loss will be reported",
              file=sys.stderr)
    summary = train(cfg, train_split, val_split, workdir, steps=steps, init=init, init_state=init_state, export=export,
                    export_dtype=EXPORT_DTYPES[export_dtype], data_fingerprint=data_fingerprint(train_split))
    if summary["export"] and jax.process_index() == 0:
        export_tokenizer(train_split.manifest, summary["export"], cfg.seq_len)
    return summary


def export_tokenizer(manifest: dict, hf_dir: str, model_max_length: int) -> None:
    """Put the data's tokenizer beside the exported weights (skipped if it cannot be rebuilt here)."""
    import tempfile

    import fsspec
    from pipelines.finetune.prepare import DocumentTokenizer

    try:
        tokenizer = DocumentTokenizer(manifest["tokenizer"]["name"], manifest["eos_id"])
    except Exception as e:  # e.g. a Hub tokenizer name on a machine without network
        print(f"warning: tokenizer not exported with the model: {e}", file=sys.stderr)
        return
    if "://" not in hf_dir:
        tokenizer.save_pretrained(hf_dir, model_max_length)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp, model_max_length)
        fs, path = fsspec.core.url_to_fs(hf_dir)
        fs.put(tmp.rstrip("/") + "/", path, recursive=True)


def data_fingerprint(split: ts.TokenSplit) -> str:
    """The training windows' identity: their shards' checksums and the seed-free layout."""
    content = json.dumps({"window": split.window, "dtype": split.dtype.str,
                          "shards": [[s["path"], s["windows"], s["sha256"]] for s in split.shards]})
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def run_after_sample(sampled_dir: str, config: str, workdir: str, steps: int | None = None) -> dict:
    """The `ppsample run --finetune CONFIG` hand-off: prepare WORKDIR/tokens, then finetune there."""
    from lm_models.gptj.train_step import load_config
    from pipelines.finetune.prepare import prepare

    cfg = load_config(config)
    tokens_dir = ts.join(workdir, "tokens")
    manifest = prepare(sampled_dir, tokens_dir, window=cfg.seq_len + 1)
    summary = run_finetune(config, tokens_dir, workdir, steps=steps)
    return {**summary, "tokens_dir": tokens_dir,
            "tokens": {split: {k: info[k] for k in ("documents", "windows", "tokens")}
                       for split, info in manifest["splits"].items()}}


def cli(argv: list[str]) -> int:
    if argv and argv[0] == "check-fit":
        from lm_models.gptj.check_fit import cli as check_fit_cli
        return int(check_fit_cli(argv[1:]) or 0)
    if argv and argv[0] == "launch":
        from pipelines.finetune.launch import cli as launch_cli
        return int(launch_cli(argv[1:]) or 0)
    parser = argparse.ArgumentParser(
        prog="ppsample finetune", description=__doc__.splitlines()[0],
        epilog="sub-commands: `ppsample finetune check-fit --help`, `ppsample finetune launch --help`")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from pipelines.options import require_extras

    require_extras("ppsample finetune", ("finetune",))
    if args.distributed:
        import jax
        jax.distributed.initialize()
    try:
        run_finetune(args.config, args.data, args.workdir, args.steps, args.init, args.verify,
                     not args.no_export, args.export_dtype, init_state=args.init_state)
    except (FileNotFoundError, ValueError) as e:  # a config, --init or a loss (lm_models.gptj)
        # exit 2 (RefusedInputError): the TPU supervisor does not retry what a retry cannot fix
        raise RefusedInputError(str(e)) from e
    return 0  # also when preempted: the state is saved and the same command resumes it
