"""Counter-based randomness: every draw is a pure function of (seed, step, sample, slot).

A resumed run therefore draws exactly what the uninterrupted run would have, with no
generator state to save.

The functions here are defined in Python (``*_py``) and, where the package was built with its C
accelerator (``maker/_rngc.c``, built by ``pip install``), bound to the C versions, which return the
same values bit for bit at a tenth of the cost: a simulated run draws about a dozen values a step.
``ACCELERATED`` says which are in use; the environment variable ``MAKER_PURE_PYTHON=1`` keeps the Python ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["ACCELERATED", "derive", "mix64", "mixes", "uniform"]

_M = 0xFFFFFFFFFFFFFFFF
_INV = 1.0 / 18446744073709551616.0


def mix64_py(x: int) -> int:
    """SplitMix64 finaliser: a fast bijective 64-bit hash (of ``x`` modulo 2**64)."""
    x = (x + 0x9E3779B97F4A7C15) & _M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


def mixes_py(base: int, lo: int, hi: int) -> list[int]:
    """``[mix64(base + i) for i in range(lo, hi)]``: a step's sample seeds, one call for all."""
    return [mix64_py(base + i) for i in range(lo, hi)]


def uniform_py(seed: int, slot: int) -> float:
    """A float in [0, 1) for draw number ``slot`` of ``seed``."""
    return mix64_py(seed ^ (slot * 0xD1B54A32D192ED03 & _M)) * _INV


mix64: Callable[[int], int]
mixes: Callable[[int, int, int], list[int]]
uniform: Callable[[int, int], float]
ACCELERATED = False
mix64, mixes, uniform = mix64_py, mixes_py, uniform_py
if os.environ.get("MAKER_PURE_PYTHON", "") in ("", "0"):  # MAKER_PURE_PYTHON=1 keeps the Python versions
    try:
        from maker._rngc import mix64, mixes, uniform
    except ImportError:  # built without a C compiler: the same values, slower
        pass
    else:
        ACCELERATED = True


def derive(*parts: int) -> int:
    """One 64-bit seed from several integers (order matters)."""
    x = 0x243F6A8885A308D3
    for p in parts:
        x = mix64(x ^ (p & _M))
    return x
