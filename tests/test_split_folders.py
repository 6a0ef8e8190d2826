"""A FineWeb-2 style layout (train/000_00000.parquet, test/000_00000.parquet): same-named files in
split folders run, keep their split apart and name distinct outputs (names: test_data_path.py)."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import cli


def _write(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": [d["text"] for d in docs], "url": [d["url"] for d in docs]}), path)


def test_fineweb2_split_folders_run_and_test_stays_test(shared_data, tmp_path):
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(50), f)]
    for d in docs:
        d["url"] = d.get("url") or f"https://example.es/{docs.index(d)}"
    root = tmp_path / "fineweb-2" / "data" / "spa_Latn"
    _write(root / "train" / "000_00000.parquet", docs[:40])
    _write(root / "test" / "000_00000.parquet", docs[40:])
    out = tmp_path / "out"
    assert cli.main(["run", "--input", f"{root}/*/*.parquet", "--method", "random", "--factor", "1",
                     "--output", str(out), "-q", "--no-figures"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert {s: v["read"] for s, v in stats["splits"].items()} == {"train": 40, "test": 10}
    assert sorted(p.name for p in (out / "scored").glob("*.parquet")) == \
        ["test__000_00000.parquet", "train__000_00000.parquet"]
    kept_test = pq.read_table(out / "parquet" / "test").column("url").to_pylist()
    assert sorted(kept_test) == sorted(d["url"] for d in docs[40:])  # factor 1: all kept, none in train
    kept_train = pq.read_table(out / "parquet" / "train").column("url").to_pylist()
    assert not set(kept_train) & set(kept_test)
    json_shards = sorted(p.name for p in out.glob("*.json.gz"))
    assert any("-test-" in n for n in json_shards) and any("-train-" in n for n in json_shards)
    assert not any(n.endswith(("-train.json.gz", "-test.json.gz")) for n in json_shards), json_shards
