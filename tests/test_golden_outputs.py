"""Golden outputs: `ppsample run`, and `score` -> `stats` / `sample` on its output, on the bundled
sample with a fixed seed, give the same files as when the constants below were taken.

This guards refactoring (issue 17): a change that is meant to preserve behaviour must leave
every digest here unchanged. A change that alters outputs ON PURPOSE (new shard names, a new
stats.json field, ...) updates the constants, and its commit message says why. Regenerate with

    PYTHONPATH=. python tests/test_golden_outputs.py

which prints the GOLDEN dict to paste here.

What is compared, per file (relative path -> sha256):
- json.gz shards, rejected .jsonl: the raw bytes (gzip mtime 0, sorted rows: same bytes on
  every run and machine).
- parquet: the decoded content (schema, key/value metadata except pyarrow's own, and every row
  as JSON), not the bytes: the footer names the pyarrow version that wrote it
  ("created_by parquet-cpp-arrow version X"), which depends on the install, not on this code.
- .json: the parsed document with machine-specific values replaced: the checkout's and the
  working directory's absolute paths (the bundled model's directory), the package version, and
  the sizes of the png/parquet files in _ppsample_commit.json (library-dependent, see above)
  and of stats.json there (it holds the checkout's path in `score`'s command).
- .png: only that they exist and are PNGs; their bytes depend on matplotlib and freetype.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLED = "pipelines/bundled/c4-es*.json.gz"

# The commands, run in this order from one fresh working directory (relative paths, so the
# recorded "command" is the same on every machine).
COMMANDS = [
    ["run", "--seed", "0", "--output", "run"],
    ["score", "--input", "<repo>/" + BUNDLED, "--output", "scored"],
    ["stats", "--input", "scored", "--output", "stats"],
    ["sample", "--input", "scored", "--method", "gaussian", "--seed", "0", "--output", "sampled"],
    ["sample", "--input", "scored", "--method", "stepwise", "--target-docs", "200", "--seed", "1",
     "--output", "stepwise"],
    ["sample", "--input", "scored", "--method", "random", "--factor", "0.5", "--seed", "2",
     "--output", "random"],
]

# Taken on main at e9a1ab1, before the issue-17 refactor; retaken for issue 23, whose changes
# are on purpose: json.gz shards renamed without "-50M-" (same bytes), no empty rejected/*.jsonl
# (so fewer files), stats.json without model.directory and with only non-empty rejected files
# listed, commit markers listing those files. Every shard and parquet digest is unchanged.
# Issue 19 adds report.json / report.html to run, stats and sample outputs (stats.json's
# report_file, the commit markers list them); retaken once both were merged.
# Retaken when exp / log / power moved from numpy to sampling/libm (the C library's): numpy's
# results had depended on the CPU (AVX-512 or not), so the perplexities in the parquet files,
# stats.json and report.json differed between the machine that took the digests and others.
# Every json.gz shard digest is unchanged (same keep decisions).
GOLDEN: dict[str, str] = {
    'random/_ppsample_commit.json': '29e2173b4fd489c03321669adc228911012310136667cadad32bf99700389c60',
    'random/input_vs_sampled.png': 'png',
    'random/mc4-es-train-random-shard-0001-of-0002.json.gz': '476634f6c7785f6697b0002ebeebefdc6f8adb198ee3581daeab854b7d90271a',
    'random/mc4-es-train-random-shard-0002-of-0002.json.gz': '6dfbd1ba2273aaed031057bf32f513ab4f5e16289f9f6480c51e191f75f458ec',
    'random/mc4-es-validation-random-shard-0001-of-0001.json.gz': '6062042a1cc29856f1e323083cd40ad7182551c2e2da1458ae181ce1a8aa4a24',
    'random/parquet/train/part-00000-of-00002.parquet': 'df6d1ea94f423711fc6e7f60dd5c348f83240e920d21e077dc582d7fc27625d4',
    'random/parquet/train/part-00001-of-00002.parquet': '4098362408ffaae788d568b9d058ea464ab854e886d4aa0c8b114ad6d7472c90',
    'random/parquet/validation/part-00000-of-00001.parquet': '45ec1f095885cd5540190a1784c0a7f0a45687cdf4017e69499a355632308a47',
    'random/perplexity_histogram.png': 'png',
    'random/report.html': '833ce5ba480431b2b8edb0cc73e76f61fd7b918ee11bd2411e529543ed2f778e',
    'random/report.json': '869b4020b3da3c20b7177ebea5a9cee43ab7c3dfcba8d65b135665a951531b0a',
    'random/stats.json': '11df409b6de17620d84656fb093dc5befb42d0dad3cfa9b3521ce5743d6d83cc',
    'run/_ppsample_commit.json': '1a7177b603d235a0f4839db417454f6a2710c4ec5beef4b84ddf494016558c32',
    'run/input_vs_sampled.png': 'png',
    'run/mc4-es-train-gaussian-shard-0001-of-0002.json.gz': '5fdc960a3f2f33d52fc505c18e556cd5e64556ec3f8a522ca9cda0238b64e085',
    'run/mc4-es-train-gaussian-shard-0002-of-0002.json.gz': '92c9219a5a818089aa8cb4e07026b9de80aebc3005414a11db5f5124377b183d',
    'run/mc4-es-validation-gaussian-shard-0001-of-0001.json.gz': '17f922a636b91bf307bfb4c18b2cdd1e3dce92ec96a42b90d9c1a0080950e605',
    'run/parquet/train/part-00000-of-00002.parquet': '29909bba844bb7178ab338781b50ba3081737496a609194f69f3af823d085f7d',
    'run/parquet/train/part-00001-of-00002.parquet': '27bc2fe15df1912c6e095e6c5518beb841aabb3510e82cb0c89a4eb2fa1aa332',
    'run/parquet/validation/part-00000-of-00001.parquet': '12bb7c0be23d5efd49574b73c64d9f2c685a7666c75b2b9d30a3f2b7a4ab28eb',
    'run/perplexity_histogram.png': 'png',
    'run/report.html': '953868ea540697ce9244d10696f79e654f21962ae8151b44bc4cb2069d848114',
    'run/report.json': 'fff503a993813ebb401de2157140d4375d05ca04483722a7d015520d65113d1d',
    'run/scored/c4-es-validation.tfrecord-00000-of-00001.parquet': 'd256d9c71fa66daa5f41649e039a5b51dfdbc77c725c2e803276dd8fece2f9b1',
    'run/scored/c4-es.tfrecord-00000-of-00002.parquet': '4cc518b7877595cfbce8318668523979595490778ec1a6f8bd9ce8d09546d4fc',
    'run/scored/c4-es.tfrecord-00001-of-00002.parquet': '36dc4da0ab6b70f3a91fb2fdcc48f8c1d89ccb7f1812168b58b6bc9fff665dd7',
    'run/scored/stats.json': '4029b1e632a3139619fff398488021d5dafa57a4cf83569969d2e50e90f0cdbc',
    'run/stats.json': 'ab49c4550d30d565fd2749f3a89edfeeba7a705c1572fea28bccfed3db2b242e',
    'sampled/_ppsample_commit.json': '66d31ea2deb8e89bfba76178d2c3525aba6b6dcad1d1055793d143ca4d3baf9e',
    'sampled/input_vs_sampled.png': 'png',
    'sampled/mc4-es-train-gaussian-shard-0001-of-0002.json.gz': '5fdc960a3f2f33d52fc505c18e556cd5e64556ec3f8a522ca9cda0238b64e085',
    'sampled/mc4-es-train-gaussian-shard-0002-of-0002.json.gz': '92c9219a5a818089aa8cb4e07026b9de80aebc3005414a11db5f5124377b183d',
    'sampled/mc4-es-validation-gaussian-shard-0001-of-0001.json.gz': '17f922a636b91bf307bfb4c18b2cdd1e3dce92ec96a42b90d9c1a0080950e605',
    'sampled/parquet/train/part-00000-of-00002.parquet': '29909bba844bb7178ab338781b50ba3081737496a609194f69f3af823d085f7d',
    'sampled/parquet/train/part-00001-of-00002.parquet': '27bc2fe15df1912c6e095e6c5518beb841aabb3510e82cb0c89a4eb2fa1aa332',
    'sampled/parquet/validation/part-00000-of-00001.parquet': '12bb7c0be23d5efd49574b73c64d9f2c685a7666c75b2b9d30a3f2b7a4ab28eb',
    'sampled/perplexity_histogram.png': 'png',
    'sampled/report.html': '38c1b3b779df972c529393b7cb67341c50be812b17fcfb9f51f2a84b9c2009a7',
    'sampled/report.json': 'fff503a993813ebb401de2157140d4375d05ca04483722a7d015520d65113d1d',
    'sampled/stats.json': 'd46f3d4fc3f5e0f4df387d07164df7ed4c69ba33c38c56e36e3ce3d11832f974',
    'scored/_ppsample_commit.json': '2d685ae07420d35ff04737d4ad1230f71df1c11c62dd672eedf3b238ac125948',
    'scored/c4-es-validation.tfrecord-00000-of-00001.parquet': 'd256d9c71fa66daa5f41649e039a5b51dfdbc77c725c2e803276dd8fece2f9b1',
    'scored/c4-es.tfrecord-00000-of-00002.parquet': '4cc518b7877595cfbce8318668523979595490778ec1a6f8bd9ce8d09546d4fc',
    'scored/c4-es.tfrecord-00001-of-00002.parquet': '36dc4da0ab6b70f3a91fb2fdcc48f8c1d89ccb7f1812168b58b6bc9fff665dd7',
    'scored/stats.json': 'd25647c14d3ce75fc7a631e15dbe4bdac095d1a29a27e351b152ae0b218ae6d2',
    'stats/_ppsample_commit.json': '906e1d5b51245deae2c0420c9e550e3a2d13afb37e42d3afd362201e0fcc98f5',
    'stats/input_vs_sampled.png': 'png',
    'stats/perplexity_histogram.png': 'png',
    'stats/report.html': 'df1da1ff2f52e146ee802dffdc3f5f3b024f6fa06b589eb5d7ffd1a85b0ae5ee',
    'stats/report.json': 'fff503a993813ebb401de2157140d4375d05ca04483722a7d015520d65113d1d',
    'stats/stats.json': '0883d0fd8dd2af950da5216289610629f06ca95197fc9169324c6d0fb52b7432',
    'stepwise/_ppsample_commit.json': '4ac0dcaa8dfcf9891010f2bece6a4ad5814818a0d74d0850ef5e77a8e017e4dc',
    'stepwise/input_vs_sampled.png': 'png',
    'stepwise/mc4-es-train-stepwise-shard-0001-of-0002.json.gz': 'd830d97cac31a088174cd4d7cd1ba4bcda48aa12c0f30386e0689cadae1a52e9',
    'stepwise/mc4-es-train-stepwise-shard-0002-of-0002.json.gz': '162f2f290cbe75297455f7193e1d621b973cb8ddf2c37101f586e661f17954d0',
    'stepwise/mc4-es-validation-stepwise-shard-0001-of-0001.json.gz': '857dab056d8dde9047c3df6aa3f22083e9800543620a9277c218e250510ce6e1',
    'stepwise/parquet/train/part-00000-of-00002.parquet': '24fe8ef3f2f6a53b0cb29a9e952d8b520eb9ce76c6d5971f963a4bb655061cbf',
    'stepwise/parquet/train/part-00001-of-00002.parquet': '4aa2dc3cecf425a85d3e7e6b4b1ca94d28101fab69ff19c22646b9bd68ce5240',
    'stepwise/parquet/validation/part-00000-of-00001.parquet': '89d55915693fc168e5d2081cc7384d421e34e00cc3d262da71c329af6ce7f7f9',
    'stepwise/perplexity_histogram.png': 'png',
    'stepwise/report.html': 'e587efaf8b6b65bda4a81cf70e913fa61e8639f978054d4d2ed5d36e3523d4b8',
    'stepwise/report.json': 'ec10dc055c374d366cacd5d0136369db9e4d5e04564b7fa8f757d1af7a59bda7',
    'stepwise/stats.json': 'f3f9aff2ed62d789986c7d406a67460ebcb3cc1716f1508405be9a1dcf1c6e72',
}


def _normalised_json(value, repo: str, cwd: str):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "version" and isinstance(item, str):
                item = "<version>"
            out[key] = _normalised_json(item, repo, cwd)
        return out
    if isinstance(value, list):
        return [_normalised_json(item, repo, cwd) for item in value]
    if isinstance(value, str):
        return value.replace(repo, "<repo>").replace(cwd, "<cwd>")
    return value


def _parquet_digest(path: Path) -> str:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
                if k != b"ARROW:schema"}
    body = {"schema": table.schema.remove_metadata().to_string(), "metadata": metadata,
            "rows": table.to_pylist()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path, rel: str, repo: str, cwd: str) -> str:
    if rel.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
        return "png"
    if rel.endswith(".parquet"):
        return _parquet_digest(path)
    if rel.endswith(".json"):
        doc = _normalised_json(json.loads(path.read_text()), repo, cwd)
        if rel.endswith("_ppsample_commit.json"):
            # stats.json's size too: `score`'s records its command, whose --input is under the
            # checkout, so the size depends on where the checkout is (a fresh clone elsewhere);
            # its content is compared on its own, normalised.
            doc["files"] = {name: (size if not name.endswith((".png", ".parquet", "stats.json"))
                                   else "<size>")
                            for name, size in doc["files"].items()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    if rel.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            f.read()  # a valid gzip stream, whole
    return hashlib.sha256(path.read_bytes()).hexdigest()


def golden_digests(cwd: Path) -> dict[str, str]:
    """Run COMMANDS in `cwd` (which must be the current directory) and digest every file."""
    from pipelines import cli

    repo = str(REPO)
    for command in COMMANDS:
        argv = [a.replace("<repo>", repo) for a in command]
        assert cli.main(argv) == 0, argv
    return {str(p.relative_to(cwd)): _file_digest(p, str(p.relative_to(cwd)), repo, str(cwd))
            for p in sorted(cwd.rglob("*")) if p.is_file()}


def test_bundled_outputs_match_the_golden_digests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digests = golden_digests(tmp_path)
    regenerate = ("outputs differ from tests/test_golden_outputs.py GOLDEN. If this change is "
                  "meant to preserve behaviour, it does not: fix it. If it changes outputs on "
                  "purpose, regenerate with `PYTHONPATH=. python tests/test_golden_outputs.py`, "
                  "paste the printed dict and say why in the commit message.")
    missing = sorted(set(GOLDEN) - set(digests))
    extra = sorted(set(digests) - set(GOLDEN))
    changed = sorted(k for k in set(GOLDEN) & set(digests) if GOLDEN[k] != digests[k])
    assert not (missing or extra or changed), \
        f"{regenerate}\nmissing: {missing}\nnew: {extra}\nchanged: {changed}"


if __name__ == "__main__":  # the generator: prints the GOLDEN dict for the current code
    import os
    import tempfile

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        found = golden_digests(Path(tmp).resolve())
    print("GOLDEN: dict[str, str] = {")
    for key, value in found.items():
        print(f"    {key!r}: {value!r},")
    print("}")
