"""The error-correction mathematics of MAKER (section 3) and the statistics of measured rates.

How often first-to-ahead-by-k voting picks the right answer, the smallest k that a run of a
given length needs, the calls a step is expected to take, and the Wilson interval that
calibration and the trace tools report. Pure functions of their inputs, property-tested.
"""

from __future__ import annotations

import math

__all__ = [
    "step_success",
    "run_success",
    "k_min",
    "expected_samples",
    "expected_calls",
    "wilson_interval",
]


def _check_p(p: float) -> None:
    if not 0.0 < p <= 1.0:
        raise ValueError(f"per-sample correct rate p must be in (0, 1], got {p}")


def _ratio(p: float) -> float:
    _check_p(p)
    return (1.0 - p) / p


def _log_odds_against(p: float, k: int) -> float:
    """k * ln((1-p)/p); -inf when p == 1."""
    _check_p(p)
    if p == 1.0:
        return -math.inf
    return k * (math.log1p(-p) - math.log(p))


def step_success(p: float, k: int) -> float:
    """Chance that first-to-ahead-by-k picks the correct answer: ``1 / (1 + ((1-p)/p)^k)``."""
    x = _log_odds_against(p, k)
    if x > 0:  # stable logistic for p < 1/2
        e = math.exp(-x)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(x))


def run_success(p: float, k: int, steps: int) -> float:
    """Chance that all ``steps`` steps are decided correctly."""
    x = _log_odds_against(p, k)
    softplus = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
    return math.exp(-steps * softplus)


def k_min(steps: int, p: float, target: float = 0.95) -> int:
    """Smallest k whose :func:`run_success` reaches ``target`` (MAKER eq. 14)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if p <= 0.5:
        raise ValueError(f"voting converges only when p > 0.5, got p={p}")
    if p == 1.0:
        return 1
    # t^(-1/s) - 1 computed without cancellation for large s.
    need = math.expm1(-math.log(target) / steps)
    k = math.ceil(math.log(need) / math.log(_ratio(p)) - 1e-12)
    return max(1, k)


def expected_samples(p: float, k: int) -> float:
    """Expected valid votes until one side is k ahead (binary gambler's ruin from the middle)."""
    _check_p(p)
    q = 1.0 - p
    if p == q:
        return float(k * k)
    # The duration is symmetric in p and q; use the ratio below 1 so r**k cannot overflow.
    r = min(p, q) / max(p, q)
    rk = r**k
    return k / abs(p - q) * (1.0 - rk) / (1.0 + rk)


def expected_calls(p: float, k: int, valid: float = 1.0) -> float:
    """Expected model calls per step when a fraction ``valid`` of responses is not red-flagged."""
    if not 0.0 < valid <= 1.0:
        raise ValueError(f"valid rate must be in (0, 1], got {valid}")
    return expected_samples(p, k) / valid


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n <= 0:
        return (0.0, 1.0)
    phat = successes / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)
