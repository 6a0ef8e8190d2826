"""Per-document uniforms: a pure function of (seed, document key), never a stateful RNG.

Definition (stable across platforms, processes and Python versions; reproducible anywhere):

    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                     key=seed.to_bytes(8, "little")).digest()
    U = (int.from_bytes(digest, "little") >> 11) / 2**53        # 53 bits -> [0, 1)

So the kept set never depends on runner, worker count, bundle retries or input order.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MAX_SEED = 2**64


def document_key(url, text) -> str:
    """The identity a document's uniform is drawn from: its url when non-empty, else its text.

    A url of only whitespace counts as missing. Two documents with the same url (or, without
    url, the same text) get the same uniform.
    """
    if isinstance(url, str) and url.strip():
        return url
    if not isinstance(text, str):
        raise TypeError(f"document has no url and its text is not a string: {type(text).__name__}")
    return text


def _seed_bytes(seed) -> bytes:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed.to_bytes(8, "little")


def document_uniforms(seed: int, keys) -> np.ndarray:
    """One uniform in [0, 1) per key (float64 array), a pure function of (seed, key)."""
    salt = _seed_bytes(seed)
    blake2b = hashlib.blake2b
    digests = []
    append = digests.append
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"document keys must be strings (see document_key), got {type(key).__name__}")
        append(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest())
    words = np.frombuffer(b"".join(digests), dtype="<u8")
    # Top 53 bits of the 64-bit hash: exactly representable, so U < 1 always.
    return (words >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def document_uniform(seed: int, key: str) -> float:
    """Scalar form of document_uniforms."""
    return float(document_uniforms(seed, [key])[0])
