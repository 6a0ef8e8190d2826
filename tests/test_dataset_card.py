"""The dataset card states what the stats say, in a YAML header datasets can use."""
from __future__ import annotations

import copy

import pytest
import yaml

from pipelines.publish.dataset_card import CardConfig, input_kind, render_card
from test_publish_sampled_dir import make_sampled_dir, read_web_docs


@pytest.fixture(scope="module")
def two_methods(shared_data, tmp_path_factory):
    docs = read_web_docs(shared_data, 200)
    root = tmp_path_factory.mktemp("card")
    return (make_sampled_dir(root / "g", docs, "gaussian", seed=11, parameters={"width": 2.0}),
            make_sampled_dir(root / "r", docs, "random", seed=12, parameters={"factor": 0.3}))


def _configs(*stats_list):
    return [CardConfig(s["method"], s, {split: [f"{s['method']}/{split}-00000-of-00001.parquet"]
                                        for split in ("train", "validation")})
            for s in stats_list]


def _split_card(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    header, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_yaml_header_declares_one_config_per_method(two_methods):
    meta, _ = _split_card(render_card(_configs(*two_methods), repo_id="me/sampled"))
    assert [c["config_name"] for c in meta["configs"]] == ["gaussian", "random"]
    assert meta["configs"][0]["default"] is True and "default" not in meta["configs"][1]
    assert meta["configs"][1]["data_files"] == [
        {"split": "train", "path": ["random/train-00000-of-00001.parquet"]},
        {"split": "validation", "path": ["random/validation-00000-of-00001.parquet"]},
    ]
    assert meta["language"] == ["es"]


def test_body_reports_the_stats(two_methods):
    gaussian, random_ = two_methods
    _, body = _split_card(render_card(_configs(gaussian, random_), repo_id="me/sampled",
                                      publish_command="ppsample publish --input g --repo-id me/sampled"))
    # method parameters and seeds
    assert "| `gaussian` | gaussian | factor=0.78, width=2 | 11 |" in body
    assert "| `random` | random | factor=0.3 | 12 |" in body
    # boundaries as computed from the histogram
    q1 = gaussian["boundaries"]["q1"]
    assert f"{q1:,.6g}" in body
    # per-split documents and tokens, with the kept percentage
    train = random_["splits"]["train"]
    assert (f"| `random` | train | {train['read']:,} | {train['rejected']:,} | {train['scored']:,} | "
            f"{train['kept']:,} | {train['dropped']:,} | "
            f"{100 * train['kept'] / train['scored']:.1f}% | {train['tokens_scored']:,} | "
            f"{train['tokens_kept']:,} |") in body
    # kept fraction per band
    band = gaussian["total"]["bands"][3]
    assert f"| `gaussian` | >=Q3 | {band['scored']:,} | {band['kept']:,} |" in body
    # exact reproduce commands
    assert f"```bash\n{gaussian['command']}\n```" in body
    assert f"```bash\n{random_['command']}\n```" in body
    assert "ppsample publish --input g --repo-id me/sampled" in body
    # figures embedded
    assert "](figures/perplexity_histogram.png)" in body and "](figures/input_vs_sampled.png)" in body
    assert 'load_dataset("me/sampled", "gaussian")' in body


@pytest.mark.parametrize("inputs, kind, licence, attribution", [
    (["gs://my-bucket/mc4/c4-es.tfrecord-00000-of-01024.json.gz"], "mc4", "odc-by", "ODC-BY"),
    (["/work/shared/data/es/web.jsonl.gz"], "bundled", "other", "FakeNewsCorpusSpanish"),
    (["/data/my-own-crawl/*.jsonl.gz"], "other", "other", "neither mC4 nor the bundled"),
])
def test_licence_follows_the_input(two_methods, inputs, kind, licence, attribution):
    stats = copy.deepcopy(two_methods[0])
    stats["input"] = inputs
    assert input_kind(stats) == kind
    meta, body = _split_card(render_card(_configs(stats), repo_id="me/sampled"))
    assert meta["license"] == licence
    assert attribution in body.split("## Licence and attribution", 1)[1]


def test_input_read_from_the_command_when_not_recorded(two_methods):
    stats = copy.deepcopy(two_methods[0])
    del stats["input"]
    stats["command"] = "ppsample run --input 'hf://datasets/allenai/c4/multilingual/c4-es.*.json.gz' --seed 0"
    assert input_kind(stats) == "mc4"
    stats["command"] = "ppsample run --seed 0"  # no --input: the bundled sample
    assert input_kind(stats) == "bundled"


def test_the_card_carries_no_absolute_local_path_of_the_launcher(two_methods):
    stats = copy.deepcopy(two_methods[0])
    stats["input"] = ["/home/alice/corpora/mc4/c4-es.tfrecord-*.json.gz",
                      "https://user:pw@data.example/c4-es.tfrecord-9.json.gz?X-Amz-Signature=s3cr3t"]
    stats["command"] = ("ppsample run --input /home/alice/corpora/mc4/c4-es.tfrecord-*.json.gz "
                        "--output=/home/alice/out/sampled/ --model /home/alice/models/es "
                        "--seed 0 --repo-id alice/x")
    stats["model"] = {**stats.get("model", {}), "source": "/home/alice/models/es",
                      "directory": "/home/alice/models/es",
                      "model_json": {"preset": "ccnet", "source": "/home/alice/ref/es.txt.gz",
                                     "training": {"order": 5}}}
    card = render_card(_configs(stats), repo_id="me/sampled",
                       publish_command="ppsample publish --input /home/alice/out/sampled "
                                       "--local-dir ~/stage --repo-id me/sampled")
    assert "/home/alice" not in card and "~/stage" not in card
    assert "s3cr3t" not in card and "user:pw" not in card
    _, body = _split_card(card)
    # what remains says what was used, without saying where on whose machine
    assert "`c4-es.tfrecord-*.json.gz`" in body
    assert "https://data.example/c4-es.tfrecord-9.json.gz" in body
    assert "--input 'c4-es.tfrecord-*.json.gz' --output=sampled/ --model es --seed 0" in body
    assert "- source: `es`" in body and '"source": "es.txt.gz"' in body
    assert "--input sampled --local-dir stage --repo-id me/sampled" in body


@pytest.mark.parametrize("value, shown", [
    ("/abs/dir/file.json.gz", "file.json.gz"),
    ("/abs/dir/", "dir/"),
    ("../../up/there.parquet", "there.parquet"),
    ("relative/ok.parquet", "relative/ok.parquet"),
    ("es-reference", "es-reference"),
    ("hf://owner/repo/sub", "hf://owner/repo/sub"),
    ("gs://bucket/path/*.json.gz", "gs://bucket/path/*.json.gz"),
    ("https://a:b@host/x?sig=1#frag", "https://host/x"),
    ("C:\\Users\\me\\data.jsonl", "data.jsonl"),
    ("/", "<local path>"),
])
def test_public_path(value, shown):
    from pipelines.publish.dataset_card import public_path

    assert public_path(value) == shown
