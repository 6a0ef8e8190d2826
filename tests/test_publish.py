"""`ppsample publish`: the folder it builds, its plan, and what it refuses."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cli_exit import exit_status as ppsample
from test_publish_sampled_dir import make_sampled_dir, read_web_docs


@pytest.fixture(scope="module")
def sampled(shared_data, tmp_path_factory) -> dict[str, Path]:
    docs = read_web_docs(shared_data, 240)
    root = tmp_path_factory.mktemp("sampled")
    make_sampled_dir(root / "gaussian", docs, "gaussian", seed=0)
    make_sampled_dir(root / "random", docs, "random", seed=5)
    return {"gaussian": root / "gaussian", "random": root / "random"}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_stats(root: Path, edit) -> None:
    stats = json.loads((root / "stats.json").read_text())
    edit(stats)
    (root / "stats.json").write_text(json.dumps(stats))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def load_every_config(folder: Path, cache_dir: Path) -> dict[str, dict[str, int]]:
    """Row counts of every config and split, loaded offline the way a user would."""
    import datasets

    meta = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    rows = {}
    for config in meta["configs"]:
        name = config["config_name"]
        ds = datasets.load_dataset(str(folder), name, cache_dir=str(cache_dir))
        rows[name] = {split: ds[split].num_rows for split in ds}
        assert ds["train"].column_names == ["text", "url", "timestamp", "perplexity", "n_tokens"]
    return rows


def test_local_dir_loads_with_datasets_and_matches_stats(tmp_path, sampled, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "repo"
    rc = ppsample(["publish", "--input", str(sampled["gaussian"]), "--input", str(sampled["random"]),
                   "--repo-id", "someone/mc4-es-sampled", "--local-dir", str(out)])
    assert rc == 0
    rows = load_every_config(out, tmp_path / "cache")
    for method, path in sampled.items():
        stats = json.loads((path / "stats.json").read_text())
        assert rows[method] == {s: p["kept"] for s, p in stats["splits"].items()}
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted([
        "README.md", "figures/input_vs_sampled.png", "figures/perplexity_histogram.png",
        "gaussian/stats.json", "random/stats.json",
        *[f"{m}/{s}-0000{i}-of-00002.parquet" for m in sampled for s in ("train", "validation")
          for i in (0, 1)],
    ])
    assert not (out / ".cache").exists()  # upload bookkeeping only appears when uploading


def test_same_inputs_give_the_same_folder_and_rebuild_keeps_unchanged_files(tmp_path, sampled):
    args = ["publish", "--input", str(sampled["random"]), "--repo-id", "a/b",
            "--include-json-shards"]
    assert ppsample([*args, "--local-dir", str(tmp_path / "one")]) == 0
    assert ppsample([*args, "--local-dir", str(tmp_path / "two")]) == 0
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    assert any(k.startswith("random/json/mc4-es-train-random-shard-") for k in _digests(tmp_path / "one"))
    # Rebuilding in place leaves files whose bytes are right untouched (a resumed upload relies
    # on it) and removes what the plan no longer has.
    shard = tmp_path / "one" / "random" / "train-00000-of-00002.parquet"
    before = shard.stat().st_mtime_ns
    (tmp_path / "one" / "random" / "old-shard.parquet").write_bytes(b"stale")
    assert ppsample(["publish", "--input", str(sampled["random"]), "--repo-id", "a/b",
                     "--local-dir", str(tmp_path / "one")]) == 0
    assert shard.stat().st_mtime_ns == before
    assert not (tmp_path / "one" / "random" / "old-shard.parquet").exists()
    assert not (tmp_path / "one" / "random" / "json").exists()


def test_local_dir_refuses_a_foreign_non_empty_directory(tmp_path, sampled, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    rc = ppsample(["publish", "--input", str(sampled["random"]), "--repo-id", "a/b",
                   "--local-dir", str(tmp_path / "mine")])
    assert rc == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_dry_run_prints_files_sizes_and_targets_and_writes_nothing(tmp_path, sampled, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login: dry run needs none
    before = _digests(sampled["gaussian"])
    rc = ppsample(["publish", "--input", str(sampled["gaussian"]), "--repo-id", "me/x", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "https://huggingface.co/datasets/me/x" in out
    source = sampled["gaussian"] / "parquet" / "train" / "part-00001-of-00002.parquet"
    line = next(l for l in out.splitlines() if "gaussian/train-00001-of-00002.parquet" in l)
    assert str(source) in line
    size = source.stat().st_size
    assert f"{size / 1024:.1f} KiB" in line
    assert "README.md" in out and "(generated)" in out
    assert "config gaussian: train: 2 shard(s), validation: 2 shard(s)" in out
    assert _digests(sampled["gaussian"]) == before
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "-bad/name", "owner/na me", "owner/x--y",
                                     "owner/../etc", "/name", "owner/", "owner/" + "n" * 97])
def test_malformed_repo_id_is_refused(tmp_path, sampled, capsys, repo_id):
    rc = ppsample(["publish", "--input", str(sampled["random"]), f"--repo-id={repo_id}", "--dry-run"])
    assert rc == 2
    assert "malformed repo id" in capsys.readouterr().err


def test_missing_stats_is_refused(tmp_path, sampled, capsys):
    broken = _copy(sampled["random"], tmp_path / "s")
    (broken / "stats.json").unlink()
    assert ppsample(["publish", "--input", str(broken), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "no stats.json" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["splits"]["train"].update(kept=s["splits"]["train"]["kept"] + 1),
     "train counts do not conserve: scored"),
    (lambda s: s["splits"]["validation"].update(rejected=s["splits"]["validation"]["rejected"] + 1),
     "validation counts do not conserve: read"),
    (lambda s: s["total"].update(read=s["total"]["read"] + 1, rejected=s["total"]["rejected"] + 1),
     "total.read"),
    (lambda s: s["splits"]["train"].update(kept=-1), "not a count"),
])
def test_non_conserving_counts_are_refused(tmp_path, sampled, capsys, edit, message):
    broken = _copy(sampled["random"], tmp_path / "s")
    _edit_stats(broken, edit)
    assert ppsample(["publish", "--input", str(broken), "--repo-id", "a/b", "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_parquet_rows_must_equal_kept(tmp_path, sampled, capsys):
    broken = _copy(sampled["random"], tmp_path / "s")
    shard = broken / "parquet" / "train" / "part-00000-of-00002.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(1), shard)
    assert ppsample(["publish", "--input", str(broken), "--repo-id", "a/b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train parquet holds" in err and "were kept" in err


def test_paths_leaving_the_sampled_dir_are_refused(tmp_path, sampled, capsys):
    outside = tmp_path / "outside.parquet"
    shutil.copy(sampled["random"] / "parquet" / "train" / "part-00000-of-00002.parquet", outside)

    dotdot = _copy(sampled["random"], tmp_path / "dotdot")
    _edit_stats(dotdot, lambda s: s["splits"]["train"]["files"]["parquet"].__setitem__(0, "../outside.parquet"))
    assert ppsample(["publish", "--input", str(dotdot), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "leaves the sampled directory" in capsys.readouterr().err

    absolute = _copy(sampled["random"], tmp_path / "absolute")
    _edit_stats(absolute, lambda s: s["splits"]["train"]["files"]["parquet"].__setitem__(0, str(outside)))
    assert ppsample(["publish", "--input", str(absolute), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "leaves the sampled directory" in capsys.readouterr().err

    linked = _copy(sampled["random"], tmp_path / "linked")
    shard = linked / "parquet" / "train" / "part-00000-of-00002.parquet"
    shard.unlink()
    os.symlink(outside, shard)
    assert ppsample(["publish", "--input", str(linked), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "outside the sampled directory" in capsys.readouterr().err

    linked_stats = tmp_path / "linked_stats"
    linked_stats.mkdir()
    os.symlink(sampled["random"] / "stats.json", linked_stats / "stats.json")
    assert ppsample(["publish", "--input", str(linked_stats), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "outside the sampled directory" in capsys.readouterr().err


def test_duplicate_methods_are_refused(tmp_path, sampled, capsys):
    again = _copy(sampled["random"], tmp_path / "again")
    rc = ppsample(["publish", "--input", str(sampled["random"]), "--input", str(again),
                   "--repo-id", "a/b", "--dry-run"])
    assert rc == 2
    assert "method 'random' given twice" in capsys.readouterr().err


def test_listed_file_that_does_not_exist_is_refused(tmp_path, sampled, capsys):
    broken = _copy(sampled["random"], tmp_path / "s")
    (broken / "parquet" / "validation" / "part-00001-of-00002.parquet").unlink()
    assert ppsample(["publish", "--input", str(broken), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_stray_arguments_and_exclusive_modes_are_refused(tmp_path, sampled, capsys):
    rc = ppsample(["publish", "--input", str(sampled["random"]), "--repo-id", "a/b", "--dry-run",
                   "--runner", "FnApiRunner"])
    assert rc == 2 and "unrecognised arguments" in capsys.readouterr().err
    rc = ppsample(["publish", "--input", str(sampled["random"]), "--repo-id", "a/b", "--dry-run",
                   "--local-dir", str(tmp_path / "x")])
    assert rc == 2 and "exclusive" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_method_that_kept_nothing_is_refused(tmp_path, shared_data, capsys):
    docs = read_web_docs(shared_data, 40)
    # stepwise's factor is on the perplexity scale: 1e-6 keeps (almost surely) nothing here.
    stats = make_sampled_dir(tmp_path / "s", docs, "stepwise", parameters={"factor": 1e-6})
    assert stats["total"]["kept"] == 0
    rc = ppsample(["publish", "--input", str(tmp_path / "s"), "--repo-id", "a/b", "--dry-run"])
    assert rc == 2
    assert "the stepwise sample kept no documents" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["../../../escaped", "nested/split", "/tmp/absolute", "..",
                                   "train ", "a..b", ""])
def test_unsafe_split_names_are_refused_and_nothing_is_written(tmp_path, sampled, capsys, split):
    hostile = _copy(sampled["random"], tmp_path / "hostile")
    _edit_stats(hostile, lambda s: s["splits"].__setitem__(split, s["splits"].pop("validation")))
    out = tmp_path / "a" / "b" / "out"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert ppsample(["publish", "--input", str(hostile), "--repo-id", "a/b",
                     "--local-dir", str(out)]) == 2
    assert "is not a safe split name" in capsys.readouterr().err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # not a byte written anywhere
    assert not list(Path("/tmp").glob("absolute*"))


def test_write_folder_refuses_targets_outside_the_folder(tmp_path):
    from pipelines.errors import RefusedInputError
    from pipelines.publish.stage import PlannedFile, PublishPlan, write_folder

    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    for target in ["../x.parquet", "/tmp/x.parquet", "m/../../x", "m//x", "./x"]:
        plan = PublishPlan("a/b", [PlannedFile("README.md", b"r"),
                                   PlannedFile(target, b"x")], {})
        with pytest.raises(RefusedInputError, match="refusing to write"):
            write_folder(plan, out)
        assert not out.exists()  # refused before the first write
    out.mkdir()
    os.symlink(tmp_path / "elsewhere", out / "m")
    plan = PublishPlan("a/b", [PlannedFile("m/x.parquet", b"x")], {})
    with pytest.raises(RefusedInputError, match="resolves outside"):
        write_folder(plan, out)
    assert not list((tmp_path / "elsewhere").iterdir())
