"""Regenerate tests/data/ (the Spanish data the test suite ships) from the project's shared data.

    python scripts/make_test_data.py [--shared ../shared/data] [--output tests/data]

Deterministic: the same shared files give byte-identical outputs (gzip with mtime 0 and no file
name; JSON with sorted keys). What is taken, and why (the tests' needs, see tests/data/SOURCES.md):

- es/web.jsonl.gz: the whole file, byte for byte (1,374 documents, 1.3 MB); tests score all of
  it or slices of its first documents.
- es/reference.txt.gz: the first HEAD_LINES lines of the reference corpus (train-lm on a tiny
  corpus, the hold-out split test).
- es/reference-held-out.txt.gz: every HOLDOUT_EVERY-th line (0-based i % 20 == 0) of the whole
  reference corpus: the lines the bundled model never saw in training.
- manifest.json: sha256 of each shared source file and of each shipped file, and the rules.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAD_LINES = 4000
HOLDOUT_EVERY = 20  # the bundled model's --holdout-every (lm_models/bundled/es-reference/model.json)


def _gzip(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(text.encode("utf-8"))
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(shared: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under tests/data/ that this script owns."""
    web = (shared / "es" / "web.jsonl.gz").read_bytes()
    reference = (shared / "es" / "reference.txt.gz").read_bytes()
    # Split on "\n" only, as the tests and train-lm read it (str.splitlines also splits on
    # U+2028, \x1c, ... which occur inside some lines).
    lines = io.StringIO(gzip.decompress(reference).decode("utf-8"), newline="\n").readlines()
    files = {
        "es/web.jsonl.gz": web,
        "es/reference.txt.gz": _gzip("".join(lines[:HEAD_LINES])),
        "es/reference-held-out.txt.gz": _gzip("".join(lines[0::HOLDOUT_EVERY])),
    }
    manifest = {
        "generated_by": "python scripts/make_test_data.py",
        "sources": {"es/web.jsonl.gz": _sha256(web), "es/reference.txt.gz": _sha256(reference)},
        "reference_lines": len(lines),
        "rules": {
            "es/web.jsonl.gz": "the whole shared es/web.jsonl.gz, byte for byte",
            "es/reference.txt.gz": f"the first {HEAD_LINES} lines of shared es/reference.txt.gz",
            "es/reference-held-out.txt.gz":
                f"lines i of shared es/reference.txt.gz with i % {HOLDOUT_EVERY} == 0 (0-based)",
        },
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
    }
    files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=REPO / "tests" / "data")
    args = parser.parse_args(argv)
    for name, data in build(args.shared).items():
        path = args.output / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # never a half-written file where the tests look
        print(f"{path}  {len(data):,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
