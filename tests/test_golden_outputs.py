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
  the sizes of the png/parquet files in _ppsample_commit.json (library-dependent, see above).
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

# Taken on main at e9a1ab1, before the issue-17 refactor; issue 19 added report.json and
# report.html to run/stats/sample outputs (hence stats.json's report_file and the commit markers).
GOLDEN: dict[str, str] = {
    'random/_ppsample_commit.json': 'e1c928f83a994d0a88f654dc905ceebd4d828bdf2ed62e906b4e28a391341ad4',
    'random/input_vs_sampled.png': 'png',
    'random/mc4-es-train-50M-random-shard-0001-of-0002.json.gz': '476634f6c7785f6697b0002ebeebefdc6f8adb198ee3581daeab854b7d90271a',
    'random/mc4-es-train-50M-random-shard-0002-of-0002.json.gz': '6dfbd1ba2273aaed031057bf32f513ab4f5e16289f9f6480c51e191f75f458ec',
    'random/mc4-es-validation-50M-random-shard-0001-of-0001.json.gz': '6062042a1cc29856f1e323083cd40ad7182551c2e2da1458ae181ce1a8aa4a24',
    'random/parquet/train/part-00000-of-00002.parquet': '283ec5ac562e800f9136ee2298fa69573d7f1c964d7dc15c34367597ae7bc444',
    'random/parquet/train/part-00001-of-00002.parquet': 'edb6a357f9c495bca44c185e947e553b011bf3369b0db7c425dbd9e13e984036',
    'random/parquet/validation/part-00000-of-00001.parquet': '45ec1f095885cd5540190a1784c0a7f0a45687cdf4017e69499a355632308a47',
    'random/perplexity_histogram.png': 'png',
    'random/rejected/c4-es-validation.tfrecord-00000-of-00001.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'random/rejected/c4-es.tfrecord-00000-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'random/rejected/c4-es.tfrecord-00001-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'random/report.html': '833ce5ba480431b2b8edb0cc73e76f61fd7b918ee11bd2411e529543ed2f778e',
    'random/report.json': '33594efc72f3f617793660310bdfe83715da8a1f96efb478182bd5481f88ab01',
    'random/stats.json': 'c2c82d0c4ea9a08759f20af00519e170930f7af43cd7c7a7fcb2d93ff558b298',
    'run/_ppsample_commit.json': '15fe0910f20aff467bda25310c4a463a855ffa9d856d5b92ec1d28cf6524368a',
    'run/input_vs_sampled.png': 'png',
    'run/mc4-es-train-50M-gaussian-shard-0001-of-0002.json.gz': '5fdc960a3f2f33d52fc505c18e556cd5e64556ec3f8a522ca9cda0238b64e085',
    'run/mc4-es-train-50M-gaussian-shard-0002-of-0002.json.gz': '92c9219a5a818089aa8cb4e07026b9de80aebc3005414a11db5f5124377b183d',
    'run/mc4-es-validation-50M-gaussian-shard-0001-of-0001.json.gz': '17f922a636b91bf307bfb4c18b2cdd1e3dce92ec96a42b90d9c1a0080950e605',
    'run/parquet/train/part-00000-of-00002.parquet': '0bd8926cc100d9a5a7371772fec2ee6692d200fb65a32bed2cf62c34255b1408',
    'run/parquet/train/part-00001-of-00002.parquet': '5c8a268f34d30524f832a16279876bb57bb48ecc24e866c232802dc18e2b2ce4',
    'run/parquet/validation/part-00000-of-00001.parquet': '12bb7c0be23d5efd49574b73c64d9f2c685a7666c75b2b9d30a3f2b7a4ab28eb',
    'run/perplexity_histogram.png': 'png',
    'run/report.html': '953868ea540697ce9244d10696f79e654f21962ae8151b44bc4cb2069d848114',
    'run/report.json': '7c19e2455a0e2242cdfa2cc92a9dc6d6150524d9bbdc2f1b813df2d5a8b8d3cf',
    'run/scored/c4-es-validation.tfrecord-00000-of-00001.parquet': 'd256d9c71fa66daa5f41649e039a5b51dfdbc77c725c2e803276dd8fece2f9b1',
    'run/scored/c4-es.tfrecord-00000-of-00002.parquet': 'c3dd33b73c6edc7bad8c17180b1a9bd8c85074e1c78fdeaec98a44bb615618e3',
    'run/scored/c4-es.tfrecord-00001-of-00002.parquet': '029b29abd29d40a2a61f3372e8f8d35dceb7d30d5e8995e1db7146e3f025d286',
    'run/scored/rejected/c4-es-validation.tfrecord-00000-of-00001.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'run/scored/rejected/c4-es.tfrecord-00000-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'run/scored/rejected/c4-es.tfrecord-00001-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'run/scored/stats.json': '6ade6be894e74e904bde2a21dabcec679e3b7437a6cf3481333a48350980133b',
    'run/stats.json': '12df0f6e59d5718b5e229871e519d3e2e2efa97a5ff9b8402389c337c763c6f9',
    'sampled/_ppsample_commit.json': 'cba52836be9996f26c8acf9999e7646f8c2fde94ce9b11724e73f3343f9e805c',
    'sampled/input_vs_sampled.png': 'png',
    'sampled/mc4-es-train-50M-gaussian-shard-0001-of-0002.json.gz': '5fdc960a3f2f33d52fc505c18e556cd5e64556ec3f8a522ca9cda0238b64e085',
    'sampled/mc4-es-train-50M-gaussian-shard-0002-of-0002.json.gz': '92c9219a5a818089aa8cb4e07026b9de80aebc3005414a11db5f5124377b183d',
    'sampled/mc4-es-validation-50M-gaussian-shard-0001-of-0001.json.gz': '17f922a636b91bf307bfb4c18b2cdd1e3dce92ec96a42b90d9c1a0080950e605',
    'sampled/parquet/train/part-00000-of-00002.parquet': '0bd8926cc100d9a5a7371772fec2ee6692d200fb65a32bed2cf62c34255b1408',
    'sampled/parquet/train/part-00001-of-00002.parquet': '5c8a268f34d30524f832a16279876bb57bb48ecc24e866c232802dc18e2b2ce4',
    'sampled/parquet/validation/part-00000-of-00001.parquet': '12bb7c0be23d5efd49574b73c64d9f2c685a7666c75b2b9d30a3f2b7a4ab28eb',
    'sampled/perplexity_histogram.png': 'png',
    'sampled/rejected/c4-es-validation.tfrecord-00000-of-00001.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'sampled/rejected/c4-es.tfrecord-00000-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'sampled/rejected/c4-es.tfrecord-00001-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'sampled/report.html': '38c1b3b779df972c529393b7cb67341c50be812b17fcfb9f51f2a84b9c2009a7',
    'sampled/report.json': '7c19e2455a0e2242cdfa2cc92a9dc6d6150524d9bbdc2f1b813df2d5a8b8d3cf',
    'sampled/stats.json': '4de019de2b10c78a2a45fc235286e35faa86428bd2404430f0e8632e5b7977e8',
    'scored/_ppsample_commit.json': '7f1f685172d13d75c7836ff134686a64e6760632ed330a958ddae567886af4e3',
    'scored/c4-es-validation.tfrecord-00000-of-00001.parquet': 'd256d9c71fa66daa5f41649e039a5b51dfdbc77c725c2e803276dd8fece2f9b1',
    'scored/c4-es.tfrecord-00000-of-00002.parquet': 'c3dd33b73c6edc7bad8c17180b1a9bd8c85074e1c78fdeaec98a44bb615618e3',
    'scored/c4-es.tfrecord-00001-of-00002.parquet': '029b29abd29d40a2a61f3372e8f8d35dceb7d30d5e8995e1db7146e3f025d286',
    'scored/rejected/c4-es-validation.tfrecord-00000-of-00001.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'scored/rejected/c4-es.tfrecord-00000-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'scored/rejected/c4-es.tfrecord-00001-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'scored/stats.json': '8f26fa6c5853eb0a813c12c1cf5f91ad38313ee10b38d4bd5e5a336d25c07dd5',
    'stats/_ppsample_commit.json': '062ffa9f460265220d097e3c3a59c21ad9c9b11b94dc63fe7cb5995dce994045',
    'stats/input_vs_sampled.png': 'png',
    'stats/perplexity_histogram.png': 'png',
    'stats/rejected/c4-es-validation.tfrecord-00000-of-00001.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'stats/rejected/c4-es.tfrecord-00000-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'stats/rejected/c4-es.tfrecord-00001-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'stats/report.html': 'df1da1ff2f52e146ee802dffdc3f5f3b024f6fa06b589eb5d7ffd1a85b0ae5ee',
    'stats/report.json': '7c19e2455a0e2242cdfa2cc92a9dc6d6150524d9bbdc2f1b813df2d5a8b8d3cf',
    'stats/stats.json': '66e440e43cacd4bc2763a82cb02b2dbf0ed7d85a8df73489bcb1221045e902ef',
    'stepwise/_ppsample_commit.json': 'ffecb2aaaafef41d28df0c13343aaf13eb4a11a41a63d9b48c67af551d3db5af',
    'stepwise/input_vs_sampled.png': 'png',
    'stepwise/mc4-es-train-50M-stepwise-shard-0001-of-0002.json.gz': 'd830d97cac31a088174cd4d7cd1ba4bcda48aa12c0f30386e0689cadae1a52e9',
    'stepwise/mc4-es-train-50M-stepwise-shard-0002-of-0002.json.gz': '162f2f290cbe75297455f7193e1d621b973cb8ddf2c37101f586e661f17954d0',
    'stepwise/mc4-es-validation-50M-stepwise-shard-0001-of-0001.json.gz': '857dab056d8dde9047c3df6aa3f22083e9800543620a9277c218e250510ce6e1',
    'stepwise/parquet/train/part-00000-of-00002.parquet': '11c474d978dd3f60063d7cf3fc514e81f9055e889c1b2420b8a3dc839dc34ee1',
    'stepwise/parquet/train/part-00001-of-00002.parquet': 'bb0ee4115076dca2fc1971b79a47b264a48eec4049ad50a562de378d4e25d8bc',
    'stepwise/parquet/validation/part-00000-of-00001.parquet': '89d55915693fc168e5d2081cc7384d421e34e00cc3d262da71c329af6ce7f7f9',
    'stepwise/perplexity_histogram.png': 'png',
    'stepwise/rejected/c4-es-validation.tfrecord-00000-of-00001.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'stepwise/rejected/c4-es.tfrecord-00000-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'stepwise/rejected/c4-es.tfrecord-00001-of-00002.jsonl': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'stepwise/report.html': 'e587efaf8b6b65bda4a81cf70e913fa61e8639f978054d4d2ed5d36e3523d4b8',
    'stepwise/report.json': 'c651fb4b1e375a573ec756664e5a435a114a139ce25695ce628420e9643985fb',
    'stepwise/stats.json': '0075c469a1130f3f68a686154c51a19b9eb978a5269587d6dc2ff30bd9f0dcfd',
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
            doc["files"] = {name: (size if not name.endswith((".png", ".parquet")) else "<size>")
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
