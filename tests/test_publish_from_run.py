"""End to end: two real `ppsample run` outputs -> `ppsample publish --local-dir` -> datasets.

Each run scores a small part of the shared Spanish web data with the bundled KenLM model on
Beam's FnApiRunner; the published folder must load offline, config by config and split by
split, with exactly the row counts stats.json reports, and carry both methods' figures.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from cli_exit import exit_status as ppsample
from pipelines.corpus.plots import METHOD_COLOURS
from test_publish import load_every_config

TRAIN_DOCS, VALIDATION_DOCS = 90, 30


@pytest.fixture(scope="module")
def two_runs(shared_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(TRAIN_DOCS + VALIDATION_DOCS)]
    # Split by file name, as for mC4 shards: a name containing "validation" is the validation split.
    for name, part in (("web-part-train.jsonl.gz", lines[:TRAIN_DOCS]),
                       ("web-part-validation.jsonl.gz", lines[TRAIN_DOCS:])):
        with gzip.open(root / name, "wt", encoding="utf-8") as f:
            f.writelines(part)
    outputs = {}
    for method, seed in (("gaussian", 0), ("random", 7)):
        out = root / method
        rc = ppsample(["run", "--input", str(root / "web-part-*.jsonl.gz"), "--method", method,
                       "--seed", str(seed), "--output", str(out), "--runner", "FnApiRunner"])
        assert rc == 0
        outputs[method] = out
    return outputs


def test_published_folder_loads_every_config_and_split_with_the_stats_counts(
        tmp_path, two_runs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "mc4-es-sampled"
    rc = ppsample(["publish", "--input", str(two_runs["gaussian"]), "--input", str(two_runs["random"]),
                   "--repo-id", "bertin-project/mc4-es-sampled", "--local-dir", str(folder),
                   "--include-json-shards"])
    assert rc == 0
    rows = load_every_config(folder, tmp_path / "datasets-cache")
    assert set(rows) == {"gaussian", "random"}
    for method, out in two_runs.items():
        stats = json.loads((out / "stats.json").read_text())
        assert stats["method"] == method
        assert rows[method] == {"train": stats["splits"]["train"]["kept"],
                                "validation": stats["splits"]["validation"]["kept"]}
        assert stats["splits"]["train"]["scored"] == TRAIN_DOCS  # the whole input was scored
        assert 0 < stats["total"]["kept"] < stats["total"]["scored"]
        # The published stats are the run's, unchanged.
        assert (folder / method / "stats.json").read_bytes() == (out / "stats.json").read_bytes()

    # The published rows are the run's parquet rows.
    published = pq.read_table(folder / "random" / "validation-00000-of-00001.parquet")
    original = pq.read_table(two_runs["random"] / "parquet" / "validation" / "part-00000-of-00001.parquet")
    assert published.equals(original)

    # The card documents both runs and embeds the figures, which overlay both methods.
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["gaussian", "random"]
    from pipelines.publish.dataset_card import public_command

    for out in two_runs.values():
        command = json.loads((out / "stats.json").read_text())["command"]
        assert public_command(command) in card  # the run command, without the launcher's paths
        assert str(out) in command and str(out) not in card
        assert "--output " + out.name in card
    with Image.open(folder / "figures" / "perplexity_histogram.png") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    for method in ("gaussian", "random"):
        rgb = np.array([int(METHOD_COLOURS[method][i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=2) <= 12).sum() >= 50, method
    assert sorted(p.name for p in (folder / "gaussian" / "json").iterdir()) == [
        "mc4-es-train-gaussian-shard-0001-of-0001.json.gz",
        "mc4-es-validation-gaussian-shard-0001-of-0001.json.gz",
    ]


def test_published_card_links_the_report_and_shows_its_key_figures(tmp_path, two_runs):
    """The runs wrote report.json: publish puts every method's report on one report.html
    (commands made public, as in the card) and the card links it and shows, per quartile
    band, the kept fraction and the top hosts of report.json."""
    folder = tmp_path / "repo"
    assert ppsample(["publish", "--input", str(two_runs["gaussian"]), "--input",
                     str(two_runs["random"]), "--repo-id", "a/b", "--local-dir", str(folder)]) == 0
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="comparison"' in page and 'id="o1-examples"' in page and 'id="o2-examples"' in page
    card = (folder / "README.md").read_text()
    assert "[report.html](report.html)" in card
    for method, out in two_runs.items():
        assert str(out) not in page  # no launcher path in the public page
        report = json.loads((out / "report.json").read_text())
        for band in report["bands"][:4]:
            top = band["top_domains"][0]
            share = f"{100 * top['kept'] / top['documents']:.1f}%"
            assert f"{top['host']} ({share})" in card, (method, band["band"])
