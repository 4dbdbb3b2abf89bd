"""Counter-based randomness: every draw is a pure function of (seed, step, sample, slot).

A resumed run therefore draws exactly what the uninterrupted run would have, with no
generator state to save.
"""

from __future__ import annotations

_M = 0xFFFFFFFFFFFFFFFF
_INV = 1.0 / 18446744073709551616.0


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast bijective 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


def mixes(base: int, lo: int, hi: int) -> list[int]:
    """``[mix64(base + i) for i in range(lo, hi)]``, written out: a step's sample seeds, one call for all."""
    out = []
    for i in range(lo, hi):
        x = (base + i + 0x9E3779B97F4A7C15) & _M
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M
        out.append(x ^ (x >> 31))
    return out


def derive(*parts: int) -> int:
    """One 64-bit seed from several integers (order matters)."""
    x = 0x243F6A8885A308D3
    for p in parts:
        x = mix64(x ^ (p & _M))
    return x


def uniform(seed: int, slot: int) -> float:
    """A float in [0, 1) for draw number ``slot`` of ``seed``."""
    return mix64(seed ^ (slot * 0xD1B54A32D192ED03 & _M)) * _INV
