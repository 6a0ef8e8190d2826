"""sha256 of a local file, read in blocks (model files can be several GB), and a record of it
per (path, size, mtime, inode) so that a local multi-GB model is not read again by every run."""
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def sha256_file(path: str | Path, block_size: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(path: str) -> dict:
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "device": st.st_dev}


def remembered_sha256(path: str | Path, records: Path,
                      hash_file: Callable[[str], str] = sha256_file) -> str:
    """sha256 of `path`, taken from a record in `records` when one matches the file's real
    path, size, mtime and inode (the same trust as a downloaded model's sidecar: a file
    rewritten since is hashed anew), else hashed and recorded. A record that cannot be read or
    written only costs the hash."""
    real = os.path.realpath(path)
    identity = _identity(real)
    record = records / (hashlib.sha256(real.encode("utf-8", "surrogatepass")).hexdigest()[:32]
                        + ".json")
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(known, dict) and isinstance(known.get("sha256"), str) \
                and {k: known.get(k) for k in identity} == identity:
            return known["sha256"]
    except (OSError, ValueError):
        pass
    digest = hash_file(real)
    if _identity(real) != identity:  # changed while it was read: do not record that hash
        return digest
    try:
        records.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=record.name + ".", suffix=".part", dir=records)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({**identity, "sha256": digest}, out)
            os.replace(tmp, record)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
    return digest
