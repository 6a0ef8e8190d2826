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
GOLDEN: dict[str, str] = {
    'random/_ppsample_commit.json': '1449e902366129cccf84917eeee47f02adfcdfd1fde741ade769b9e9c75814ca',
    'random/input_vs_sampled.png': 'png',
    'random/mc4-es-train-random-shard-0001-of-0002.json.gz': '476634f6c7785f6697b0002ebeebefdc6f8adb198ee3581daeab854b7d90271a',
    'random/mc4-es-train-random-shard-0002-of-0002.json.gz': '6dfbd1ba2273aaed031057bf32f513ab4f5e16289f9f6480c51e191f75f458ec',
    'random/mc4-es-validation-random-shard-0001-of-0001.json.gz': '6062042a1cc29856f1e323083cd40ad7182551c2e2da1458ae181ce1a8aa4a24',
    'random/parquet/train/part-00000-of-00002.parquet': '283ec5ac562e800f9136ee2298fa69573d7f1c964d7dc15c34367597ae7bc444',
    'random/parquet/train/part-00001-of-00002.parquet': 'edb6a357f9c495bca44c185e947e553b011bf3369b0db7c425dbd9e13e984036',
    'random/parquet/validation/part-00000-of-00001.parquet': '45ec1f095885cd5540190a1784c0a7f0a45687cdf4017e69499a355632308a47',
    'random/perplexity_histogram.png': 'png',
    'random/report.html': '833ce5ba480431b2b8edb0cc73e76f61fd7b918ee11bd2411e529543ed2f778e',
    'random/report.json': '33594efc72f3f617793660310bdfe83715da8a1f96efb478182bd5481f88ab01',
    'random/stats.json': '63efaba33435ad75c8058536d610629eea34b2499ff7bede43dcbb0f97a4e6c2',
    'run/_ppsample_commit.json': '3b9212ed7a8a575e72789315f7bc2f19c28c9bb54ecb49f58a230ccfc66c5936',
    'run/input_vs_sampled.png': 'png',
    'run/mc4-es-train-gaussian-shard-0001-of-0002.json.gz': '5fdc960a3f2f33d52fc505c18e556cd5e64556ec3f8a522ca9cda0238b64e085',
    'run/mc4-es-train-gaussian-shard-0002-of-0002.json.gz': '92c9219a5a818089aa8cb4e07026b9de80aebc3005414a11db5f5124377b183d',
    'run/mc4-es-validation-gaussian-shard-0001-of-0001.json.gz': '17f922a636b91bf307bfb4c18b2cdd1e3dce92ec96a42b90d9c1a0080950e605',
    'run/parquet/train/part-00000-of-00002.parquet': '0bd8926cc100d9a5a7371772fec2ee6692d200fb65a32bed2cf62c34255b1408',
    'run/parquet/train/part-00001-of-00002.parquet': '5c8a268f34d30524f832a16279876bb57bb48ecc24e866c232802dc18e2b2ce4',
    'run/parquet/validation/part-00000-of-00001.parquet': '12bb7c0be23d5efd49574b73c64d9f2c685a7666c75b2b9d30a3f2b7a4ab28eb',
    'run/perplexity_histogram.png': 'png',
    'run/report.html': '953868ea540697ce9244d10696f79e654f21962ae8151b44bc4cb2069d848114',
    'run/report.json': '7c19e2455a0e2242cdfa2cc92a9dc6d6150524d9bbdc2f1b813df2d5a8b8d3cf',
    'run/scored/c4-es-validation.tfrecord-00000-of-00001.parquet': 'd256d9c71fa66daa5f41649e039a5b51dfdbc77c725c2e803276dd8fece2f9b1',
    'run/scored/c4-es.tfrecord-00000-of-00002.parquet': 'c3dd33b73c6edc7bad8c17180b1a9bd8c85074e1c78fdeaec98a44bb615618e3',
    'run/scored/c4-es.tfrecord-00001-of-00002.parquet': '029b29abd29d40a2a61f3372e8f8d35dceb7d30d5e8995e1db7146e3f025d286',
    'run/scored/stats.json': '4029b1e632a3139619fff398488021d5dafa57a4cf83569969d2e50e90f0cdbc',
    'run/stats.json': '9c71ada34321621d45e87f5f18e8af0bec1c775a41986c11f0552ca4f1775abd',
    'sampled/_ppsample_commit.json': '78070ea7369b63ae1fa142f0559890500bfcf76d6184d3ebb2f58155eafe2d21',
    'sampled/input_vs_sampled.png': 'png',
    'sampled/mc4-es-train-gaussian-shard-0001-of-0002.json.gz': '5fdc960a3f2f33d52fc505c18e556cd5e64556ec3f8a522ca9cda0238b64e085',
    'sampled/mc4-es-train-gaussian-shard-0002-of-0002.json.gz': '92c9219a5a818089aa8cb4e07026b9de80aebc3005414a11db5f5124377b183d',
    'sampled/mc4-es-validation-gaussian-shard-0001-of-0001.json.gz': '17f922a636b91bf307bfb4c18b2cdd1e3dce92ec96a42b90d9c1a0080950e605',
    'sampled/parquet/train/part-00000-of-00002.parquet': '0bd8926cc100d9a5a7371772fec2ee6692d200fb65a32bed2cf62c34255b1408',
    'sampled/parquet/train/part-00001-of-00002.parquet': '5c8a268f34d30524f832a16279876bb57bb48ecc24e866c232802dc18e2b2ce4',
    'sampled/parquet/validation/part-00000-of-00001.parquet': '12bb7c0be23d5efd49574b73c64d9f2c685a7666c75b2b9d30a3f2b7a4ab28eb',
    'sampled/perplexity_histogram.png': 'png',
    'sampled/report.html': '38c1b3b779df972c529393b7cb67341c50be812b17fcfb9f51f2a84b9c2009a7',
    'sampled/report.json': '7c19e2455a0e2242cdfa2cc92a9dc6d6150524d9bbdc2f1b813df2d5a8b8d3cf',
    'sampled/stats.json': 'f354c4dda66ad488b272a6c9845c974e10e6bfbd132d373323e4c2b605ac534c',
    'scored/_ppsample_commit.json': '2d685ae07420d35ff04737d4ad1230f71df1c11c62dd672eedf3b238ac125948',
    'scored/c4-es-validation.tfrecord-00000-of-00001.parquet': 'd256d9c71fa66daa5f41649e039a5b51dfdbc77c725c2e803276dd8fece2f9b1',
    'scored/c4-es.tfrecord-00000-of-00002.parquet': 'c3dd33b73c6edc7bad8c17180b1a9bd8c85074e1c78fdeaec98a44bb615618e3',
    'scored/c4-es.tfrecord-00001-of-00002.parquet': '029b29abd29d40a2a61f3372e8f8d35dceb7d30d5e8995e1db7146e3f025d286',
    'scored/stats.json': 'd25647c14d3ce75fc7a631e15dbe4bdac095d1a29a27e351b152ae0b218ae6d2',
    'stats/_ppsample_commit.json': '3224666da40662f975fb766fecad1020480d4473c0e930da1009d1bdc7af0206',
    'stats/input_vs_sampled.png': 'png',
    'stats/perplexity_histogram.png': 'png',
    'stats/report.html': 'df1da1ff2f52e146ee802dffdc3f5f3b024f6fa06b589eb5d7ffd1a85b0ae5ee',
    'stats/report.json': '7c19e2455a0e2242cdfa2cc92a9dc6d6150524d9bbdc2f1b813df2d5a8b8d3cf',
    'stats/stats.json': 'f855f109cd9d691397f0aecb797a50efa819840f7a239e66ef019a7c02b0ee35',
    'stepwise/_ppsample_commit.json': '22c220b82514d6e646ea25ca4fcb89a6ab83fdb8b636c8e02477e5f672bdce7b',
    'stepwise/input_vs_sampled.png': 'png',
    'stepwise/mc4-es-train-stepwise-shard-0001-of-0002.json.gz': 'd830d97cac31a088174cd4d7cd1ba4bcda48aa12c0f30386e0689cadae1a52e9',
    'stepwise/mc4-es-train-stepwise-shard-0002-of-0002.json.gz': '162f2f290cbe75297455f7193e1d621b973cb8ddf2c37101f586e661f17954d0',
    'stepwise/mc4-es-validation-stepwise-shard-0001-of-0001.json.gz': '857dab056d8dde9047c3df6aa3f22083e9800543620a9277c218e250510ce6e1',
    'stepwise/parquet/train/part-00000-of-00002.parquet': '11c474d978dd3f60063d7cf3fc514e81f9055e889c1b2420b8a3dc839dc34ee1',
    'stepwise/parquet/train/part-00001-of-00002.parquet': 'bb0ee4115076dca2fc1971b79a47b264a48eec4049ad50a562de378d4e25d8bc',
    'stepwise/parquet/validation/part-00000-of-00001.parquet': '89d55915693fc168e5d2081cc7384d421e34e00cc3d262da71c329af6ce7f7f9',
    'stepwise/perplexity_histogram.png': 'png',
    'stepwise/report.html': 'e587efaf8b6b65bda4a81cf70e913fa61e8639f978054d4d2ed5d36e3523d4b8',
    'stepwise/report.json': 'c651fb4b1e375a573ec756664e5a435a114a139ce25695ce628420e9643985fb',
    'stepwise/stats.json': '25caa7013631fac69b1bbc7a31c880c86c6cf465f54e6d280760f9ccf28128cb',
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
