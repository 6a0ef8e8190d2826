"""`ppsample run` on the real Spanish web sample, split into mC4-named shards: every output
file (scored shards, sampled shards, dead letters) is byte-identical across runner modes,
worker counts and the order the input files are listed in; re-sharding and reordering the
documents keeps exactly the same set; another seed gives another sample; the kept set is
exactly what the sampling formula says for the model's perplexities; stats.json agrees with
the files written (tokens, kept histogram, per-band counts); --target-docs lands within 3
sigma.

The runs are module-scoped (one run per variant) because multi_processing runs are slow on
two cores.
"""
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from sampling import Boundaries, SamplingParams, document_key, document_uniforms, keep_probability


def _write_shards(docs, folder: Path, n_train: int, order_seed: int | None):
    """mC4-named shards: every tenth document to validation, the rest dealt over n_train
    train shards; with order_seed the documents are shuffled first (another split and order)."""
    folder.mkdir(parents=True)
    docs = list(docs)
    if order_seed is not None:
        random.Random(order_seed).shuffle(docs)
    shards = {}
    validation = [d for d in docs if d["_i"] % 10 == 9]
    train = [d for d in docs if d["_i"] % 10 != 9]
    for k in range(n_train):
        shards[f"c4-es.tfrecord-{k:05d}-of-{n_train:05d}.json.gz"] = train[k::n_train]
    shards["c4-es-validation.tfrecord-00000-of-00001.json.gz"] = validation
    for name, rows in shards.items():
        with gzip.open(folder / name, "wt", encoding="utf-8") as f:
            for d in rows:
                f.write(json.dumps({"text": d["text"], "timestamp": d["timestamp"], "url": d["url"]},
                                   ensure_ascii=False) + "\n")
    return sorted(str(p) for p in folder.iterdir())


@pytest.fixture(scope="module")
def web_docs(shared_data):
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        return [{**json.loads(line), "_i": i} for i, line in enumerate(f)]


@pytest.fixture(scope="module")
def shard_sets(web_docs, tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    return {"a": _write_shards(web_docs, base / "a", n_train=4, order_seed=None),
            "b": _write_shards(web_docs, base / "b", n_train=3, order_seed=7)}


def _run(out: Path, files, *extra):
    rc = cli.main(["run", "--input", ",".join(files), "--output", str(out), "--no-figures",
                   *extra])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def runs(shard_sets, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    a, b = shard_sets["a"], shard_sets["b"]
    return {
        "in_memory_1": _run(base / "in_memory_1", a),
        "multi_processing_2": _run(base / "multi_processing_2", a, "--direct_running_mode",
                                   "multi_processing", "--direct_num_workers", "2"),
        "listed_reversed": _run(base / "listed_reversed", list(reversed(a)),
                                "--direct_num_workers", "1"),
        "resharded": _run(base / "resharded", list(reversed(b))),
        "seed_1": _run(base / "seed_1", a, "--seed", "1"),
    }


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix != ".png"
            and p.name not in ("stats.json", "_ppsample_commit.json", "report.html")}  # all record the command


def _stats(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("command")  # the flags differ between variants by design
    return stats


def _kept_keys(out: Path) -> set[str]:
    keys = set()
    for path in out.glob("*.json.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            keys.update(document_key(r["url"], r["text"]) for r in map(json.loads, f))
    return keys


@pytest.mark.parametrize("variant", ["multi_processing_2", "listed_reversed"])
def test_output_is_byte_identical_across_runners_workers_and_listing_order(runs, variant):
    reference, other = _files(runs["in_memory_1"]), _files(runs[variant])
    assert sorted(reference) == sorted(other)
    # one sampled shard per input shard and split; the scored shards are kept under scored/
    assert sum(name.endswith(".json.gz") for name in reference) == 5
    assert sum(name.startswith("scored/") and name.endswith(".parquet") for name in reference) == 5
    for name in reference:
        assert reference[name] == other[name], f"{name} differs in {variant}"
    assert _stats(runs["in_memory_1"]) == _stats(runs[variant])
    assert "report.json" in reference  # compared above, byte for byte
    assert _report_page(runs["in_memory_1"]) == _report_page(runs[variant])


def _report_page(out: Path) -> bytes:
    """report.html with the two things that differ by design (the command, the output
    directory) taken out: the rest must be the same bytes."""
    import html

    page = (out / "report.html").read_text(encoding="utf-8")
    command = json.loads((out / "stats.json").read_text())["command"]
    return page.replace(html.escape(command), "COMMAND").replace(html.escape(str(out)), "OUT") \
        .encode("utf-8")


def test_resharding_and_reordering_the_input_keeps_the_same_set(runs):
    """Other shards (3 train instead of 4, documents shuffled): other files, same documents."""
    assert _kept_keys(runs["resharded"]) == _kept_keys(runs["in_memory_1"])
    a, b = _stats(runs["in_memory_1"]), _stats(runs["resharded"])
    assert a["boundaries"] == b["boundaries"]
    for split in ("train", "validation"):
        for key in ("read", "scored", "kept", "tokens_scored", "tokens_kept", "histogram",
                    "kept_histogram", "bands"):
            assert a["splits"][split][key] == b["splits"][split][key], (split, key)


def test_counts_conserve_and_match_the_input(runs, web_docs):
    stats = json.loads((runs["in_memory_1"] / "stats.json").read_text())
    total = stats["total"]
    assert total["read"] == len(web_docs) == total["scored"] + total["rejected"]
    assert total["scored"] == total["kept"] + total["dropped"]
    assert stats["splits"]["validation"]["read"] == sum(d["_i"] % 10 == 9 for d in web_docs)
    assert stats["boundaries"]["source"] == "histogram"
    written = 0
    for split, entry in stats["splits"].items():
        for name in entry["files"]["parquet"]:
            written += pq.read_metadata(runs["in_memory_1"] / name).num_rows
        assert entry["scored"] == entry["kept"] + entry["dropped"]
    assert written == total["kept"]


def test_another_seed_gives_another_sample(runs):
    same_boundaries = _stats(runs["seed_1"])["boundaries"] == _stats(runs["in_memory_1"])["boundaries"]
    assert same_boundaries  # boundaries do not depend on the seed
    kept0, kept1 = _kept_keys(runs["in_memory_1"]), _kept_keys(runs["seed_1"])
    assert kept0 != kept1
    # ...but both keep roughly the same share (same formula, independent uniforms)
    assert abs(len(kept0) - len(kept1)) < 0.15 * len(kept0)


@pytest.fixture(scope="module")
def model_scores(web_docs):
    """The bundled model's perplexities, computed outside Beam."""
    from lm_models.perplexity import PerplexityModel

    model = PerplexityModel.load("es-reference")
    result = model.score([d["text"] for d in web_docs])
    return result.perplexity


def test_kept_set_is_the_formula_applied_to_model_perplexities(runs, web_docs, model_scores):
    stats = json.loads((runs["in_memory_1"] / "stats.json").read_text())
    b = stats["boundaries"]
    boundaries = Boundaries(b["q1"], b["q2"], b["q3"])
    params = SamplingParams(stats["method"], **stats["parameters"])
    # numpy's exact quartiles agree with the histogram's within its documented resolution
    exact = np.quantile(model_scores, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(boundaries.as_tuple(), exact, rtol=b["resolution"])
    keys = [document_key(d["url"], d["text"]) for d in web_docs]
    keep = document_uniforms(stats["seed"], keys) < keep_probability(model_scores, boundaries, params)
    assert _kept_keys(runs["in_memory_1"]) == {k for k, kept in zip(keys, keep) if kept}
    # the parquet perplexity is the model's, unrounded
    by_key = dict(zip(keys, model_scores))
    table = pq.read_table(runs["in_memory_1"] / "parquet" / "validation").to_pylist()
    assert table and all(row["perplexity"] == by_key[document_key(row["url"], row["text"])]
                         for row in table)


@pytest.mark.parametrize("method,target", [("gaussian", 500), ("stepwise", 300)])
def test_target_docs_keeps_n_within_three_sigma(shard_sets, tmp_path, web_docs, model_scores,
                                                method, target):
    out = _run(tmp_path / "target", shard_sets["a"], "--method", method,
               "--target-docs", str(target))
    stats = json.loads((out / "stats.json").read_text())
    b = stats["boundaries"]
    params = SamplingParams(method, **stats["parameters"])
    p = keep_probability(model_scores, Boundaries(b["q1"], b["q2"], b["q3"]), params)
    sigma = float(np.sqrt(np.sum(p * (1 - p))))
    assert stats["target_docs"] == target
    assert abs(stats["target_expected_docs"] - target) < 1e-6 * target
    assert abs(stats["expected_kept"] - target) < 3 * sigma  # histogram solve vs exact sum
    assert abs(stats["total"]["kept"] - target) <= 3 * sigma


def _written_rows(out: Path, stats: dict, split: str) -> list[dict]:
    rows = []
    for name in stats["splits"][split]["files"]["parquet"]:
        rows.extend(pq.read_table(out / name).to_pylist())
    return rows


def _json_gz_rows(out: Path, stats: dict, split: str) -> list[dict]:
    rows = []
    for name in stats["splits"][split]["files"]["json_gz"]:
        with gzip.open(out / name, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f)
    return rows


def test_stats_agree_with_the_written_shards(runs):
    """tokens_kept, kept_histogram and the per-band counts are those of the files written
    (and of the scored shards), not a separate tally that could drift from them."""
    from sampling import LogHistogram, band_of

    out = runs["in_memory_1"]
    stats = json.loads((out / "stats.json").read_text())
    b = stats["boundaries"]
    boundaries = Boundaries(b["q1"], b["q2"], b["q3"])
    params = SamplingParams(stats["method"], **stats["parameters"])
    scored_stats = json.loads((out / "scored" / "stats.json").read_text())
    assert scored_stats["stage"] == "score" and stats["stage"] == "run"
    scored_rows = []
    for name in scored_stats["files"]["parquet"]:
        scored_rows.extend(pq.read_table(out / "scored" / name).to_pylist())
    assert len(scored_rows) == stats["total"]["scored"]
    for split in ("train", "validation"):
        entry = stats["splits"][split]
        rows = _written_rows(out, stats, split)
        assert [(r["url"], r["text"]) for r in rows] == \
            [(r["url"], r["text"]) for r in _json_gz_rows(out, stats, split)]
        assert len(rows) == entry["kept"] > 0
        assert entry["tokens_kept"] == sum(r["n_tokens"] for r in rows)
        pp = np.array([r["perplexity"] for r in rows])
        kept_hist = LogHistogram().add(pp).coarsen(stats["histogram"]["bins_per_decade"])
        assert entry["kept_histogram"] == kept_hist.counts.tolist()
        kept_bands = np.bincount(band_of(pp, boundaries), minlength=4)
        in_split = [r for r in scored_rows if r["split"] == split]
        all_pp = np.array([r["perplexity"] for r in in_split])
        scored_bands = band_of(all_pp, boundaries)
        p = keep_probability(all_pp, boundaries, params)
        assert entry["tokens_scored"] == sum(r["n_tokens"] for r in in_split)
        for i, band in enumerate(entry["bands"]):
            assert band["kept"] == kept_bands[i]
            assert band["scored"] == int(np.sum(scored_bands == i))
            assert band["expected_kept"] == pytest.approx(float(p[scored_bands == i].sum()),
                                                          rel=1e-9, abs=1e-9)
