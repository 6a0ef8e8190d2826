"""A hand-made sampled output directory, laid out exactly as docs/INTERFACES.md describes.

The publish/card/plot tests that do not need the whole Beam pipeline build their input with
`make_sampled_dir`: real documents from the shared Spanish data, a perplexity that is a pure
function of the text (log-normal around 1e3, so the quartiles are not degenerate), and the real
sampling math (boundaries from the histogram, keep probability, per-document uniforms).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sampling import (BAND_LABELS, LogHistogram, SamplingParams, band_of, document_key,
                      document_uniforms, keep_probability)

SCHEMA = pa.schema([("text", pa.string()), ("url", pa.string()), ("timestamp", pa.string()),
                    ("perplexity", pa.float64()), ("n_tokens", pa.int64())])
COUNT_KEYS = ("read", "rejected", "scored", "kept", "dropped", "tokens_scored", "tokens_kept")


def read_web_docs(shared_data: Path, limit: int) -> list[dict]:
    docs = []
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line))
            if len(docs) == limit:
                break
    return docs


def fake_perplexity(text: str) -> float:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    u1, u2 = (int.from_bytes(digest[:8], "big") + 1) / 2**64, int.from_bytes(digest[8:16], "big") / 2**64
    normal = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)  # Box-Muller: deterministic
    return float(10 ** (3.0 + 0.4 * normal))


def make_sampled_dir(root: Path, docs: list[dict], method: str, seed: int = 0,
                     parameters: dict | None = None, shards_per_split: int = 2,
                     rejected: int = 1) -> dict:
    """Write OUT/stats.json, json.gz shards, parquet shards and rejected/ for `docs`; return stats."""
    root.mkdir(parents=True, exist_ok=True)
    params = SamplingParams(method, **(parameters or {}))
    splits = {"train": [], "validation": []}
    for i, doc in enumerate(docs):
        splits["validation" if i % 7 == 0 else "train"].append(doc)
    histogram = LogHistogram()
    all_pp = np.array([fake_perplexity(d["text"]) for d in docs])
    histogram.add(all_pp)
    boundaries = histogram.boundaries()
    stats = {
        "version": "0.1.0",
        "command": f"ppsample run --input web.jsonl.gz --method {method} --seed {seed} "
                   "--runner FnApiRunner",
        "input": ["web.jsonl.gz"],
        "method": method, "parameters": params.to_dict(), "seed": seed, "target_docs": None,
        "model": {"source": "es-reference", "preset": "ccnet",
                  "files": {"es.arpa.bin": {"size": 123, "sha256": "ab" * 32}}},
        "preset": "ccnet",
        "boundaries": {**boundaries.to_dict(), "source": "histogram",
                       "resolution": histogram.resolution},
        "histogram": {"edges": histogram.edges.tolist()},
        "splits": {},
    }
    total = {k: 0 for k in COUNT_KEYS}
    total_hist = np.zeros(histogram.n_bins, dtype=np.int64)
    total_kept_hist = np.zeros(histogram.n_bins, dtype=np.int64)
    total_bands = [{"band": b, "scored": 0, "kept": 0} for b in BAND_LABELS]
    for split, split_docs in splits.items():
        pp = np.array([fake_perplexity(d["text"]) for d in split_docs])
        n_tokens = np.array([len(d["text"].split()) + d["text"].count("\n") + 1 for d in split_docs])
        keys = [document_key(d.get("url"), d["text"]) for d in split_docs]
        probability = keep_probability(pp, boundaries, params)
        uniforms = document_uniforms(seed, keys)
        keep = uniforms <= probability if method == "random" else uniforms < probability
        kept_docs = [d for d, k in zip(split_docs, keep) if k]
        files = {"json_gz": [], "parquet": []}
        for shard in range(shards_per_split):
            part = [i for i in range(len(split_docs)) if keep[i] and i % shards_per_split == shard]
            name = f"mc4-es-{split}-{method}-shard-{shard + 1:04d}-of-{shards_per_split:04d}.json.gz"
            with gzip.open(root / name, "wt", encoding="utf-8") as f:
                for i in part:
                    d = split_docs[i]
                    f.write(json.dumps({"text": d["text"], "timestamp": d.get("timestamp"),
                                        "url": d.get("url")}, ensure_ascii=False) + "\n")
            files["json_gz"].append(name)
            rel = f"parquet/{split}/part-{shard:05d}-of-{shards_per_split:05d}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            table = pa.table({
                "text": [split_docs[i]["text"] for i in part],
                "url": [split_docs[i].get("url") for i in part],
                "timestamp": [split_docs[i].get("timestamp") for i in part],
                "perplexity": [float(pp[i]) for i in part],
                "n_tokens": [int(n_tokens[i]) for i in part],
            }, schema=SCHEMA)
            pq.write_table(table, root / rel)
            files["parquet"].append(rel)
        split_hist, kept_hist = LogHistogram(), LogHistogram()
        split_hist.add(pp)
        kept_hist.add(pp[keep])
        bands = band_of(pp, boundaries)
        band_rows = []
        for b, label in enumerate(BAND_LABELS):
            in_band = bands == b
            row = {"band": label, "scored": int(in_band.sum()), "kept": int((keep & in_band).sum()),
                   "expected_keep_rate": float(probability[in_band].mean()) if in_band.any() else None,
                   "actual_keep_rate": float(keep[in_band].mean()) if in_band.any() else None}
            band_rows.append(row)
            total_bands[b]["scored"] += row["scored"]
            total_bands[b]["kept"] += row["kept"]
        counts = {"read": len(split_docs) + rejected, "rejected": rejected,
                  "scored": len(split_docs), "kept": len(kept_docs),
                  "dropped": len(split_docs) - len(kept_docs),
                  "tokens_scored": int(n_tokens.sum()), "tokens_kept": int(n_tokens[keep].sum())}
        stats["splits"][split] = {**counts, "histogram": split_hist.counts.tolist(),
                                  "kept_histogram": kept_hist.counts.tolist(), "bands": band_rows,
                                  "files": files}
        for k in COUNT_KEYS:
            total[k] += counts[k]
        total_hist += split_hist.counts
        total_kept_hist += kept_hist.counts
    for row in total_bands:
        row["actual_keep_rate"] = row["kept"] / row["scored"] if row["scored"] else None
        row["expected_keep_rate"] = None
    stats["total"] = {**total, "histogram": total_hist.tolist(),
                      "kept_histogram": total_kept_hist.tolist(), "bands": total_bands}
    stats["expected_kept"] = float(keep_probability(all_pp, boundaries, params).sum())
    (root / "rejected").mkdir(exist_ok=True)
    with open(root / "rejected" / "rejected-00000.jsonl", "w", encoding="utf-8") as f:
        for i in range(2 * rejected):
            f.write(json.dumps({"source": "web.jsonl.gz", "line": i, "reason": "empty text",
                                "record": "{}"}) + "\n")
    (root / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return stats


@pytest.fixture(scope="module")
def web_docs(shared_data) -> list[dict]:
    return read_web_docs(shared_data, 160)


def test_hand_made_dir_follows_the_interface(tmp_path, web_docs):
    from pipelines.publish.stage import load_sampled_output

    stats = make_sampled_dir(tmp_path / "g", web_docs, "gaussian")
    output = load_sampled_output(tmp_path / "g")
    assert output.method == "gaussian"
    assert 0 < stats["total"]["kept"] < stats["total"]["scored"]  # a real sample: neither all nor none
    for split in ("train", "validation"):
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in output.parquet[split])
        assert rows == stats["splits"][split]["kept"] == output.rows[split]
