"""Transcendental functions whose results do not depend on the CPU.

numpy picks its exp / log / power loops at run time from the CPU's SIMD features: on an
AVX-512 machine it uses SVML-style vector code whose results differ from the C library's in
the last bits for some inputs; elsewhere it calls the C library. A Dataflow job whose workers
run on different CPU generations, or a CI machine unlike the one that took the golden digests,
would then write different perplexities, histogram edges and keep probabilities from the same
documents. These apply Python's `math` (the C library, the same on every x86-64 and arm64
worker of one image) element by element; the cost is about 0.1 µs per value, negligible
beside scoring a document. The reference implementations (cc_net, BERTIN) compute
perplexity with Python's float `**` too.
"""
from __future__ import annotations

import math

import numpy as np


def _apply(fn, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return np.fromiter((fn(v) for v in array.ravel().tolist()), dtype=np.float64,
                       count=array.size).reshape(array.shape)


def _pow10(v: float) -> float:
    try:
        return 10.0 ** v  # nan -> nan, -inf -> 0.0, inf -> inf
    except OverflowError:
        return math.inf


def pow10(values) -> np.ndarray:
    """10 ** values."""
    return _apply(_pow10, values)


def _exp(v: float) -> float:
    try:
        return math.exp(v) if v == v else math.nan
    except OverflowError:
        return math.inf


def exp(values) -> np.ndarray:
    """e ** values."""
    return _apply(_exp, values)


def _logarithm(fn):
    def one(v: float) -> float:
        if v > 0:
            return fn(v)
        return -math.inf if v == 0 else math.nan
    return one


_log, _log10 = _logarithm(math.log), _logarithm(math.log10)


def log(values) -> np.ndarray:
    """Natural logarithm (0 -> -inf, negative or nan -> nan, as numpy gives)."""
    return _apply(_log, values)


def log10(values) -> np.ndarray:
    """Base-10 logarithm (0 -> -inf, negative or nan -> nan)."""
    return _apply(_log10, values)


def power(base, exponent) -> np.ndarray:
    """base ** exponent, broadcast, for base > 0 (the histogram's bin ends)."""
    b, e = np.broadcast_arrays(np.asarray(base, dtype=np.float64),
                               np.asarray(exponent, dtype=np.float64))
    flat = [_pow(x, y) for x, y in zip(b.ravel().tolist(), e.ravel().tolist())]
    return np.array(flat, dtype=np.float64).reshape(b.shape)


def _pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:  # a negative base with a fractional exponent
        return math.nan
