"""The error-correction mathematics of MAKER (section 3) and the statistics of measured rates.

How often first-to-ahead-by-k voting picks the right answer, the smallest k that a run of a
given length needs, the calls a step is expected to take, and the Wilson interval that
calibration and the trace tools report. Pure functions of their inputs, property-tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "step_success",
    "run_success",
    "k_min",
    "expected_samples",
    "expected_calls",
    "wilson_interval",
    "EnsembleStep",
    "ensemble_step",
    "ensemble_k_min",
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


# -- a mixed ensemble: weighted first-to-ahead-by-k --------------------------------------------------
_SLACK = 1e-9  # as maker.voting's: a weighted margin within this of k counts as k


@dataclass(frozen=True)
class EnsembleStep:
    """What one step of a mixed ensemble achieves (:func:`ensemble_step`)."""

    error: float
    """Chance the step is decided for the wrong answer."""
    calls: float
    """Expected samples drawn for the step (red-flagged ones included): model calls."""
    calls_by_agent: tuple[float, ...]
    """``calls`` by agent, in the ensemble's order."""
    undecided: float
    """Chance still undecided after ``max_samples`` samples (the bound of the computation; about 0 in practice)."""


def ensemble_step(
    ps: Sequence[float],
    weights: Sequence[float],
    k: int,
    valid: Sequence[float] | None = None,
    *,
    max_samples: int = 100_000,
    tol: float = 1e-16,
) -> EnsembleStep:
    """Exact per-step error and expected calls of first-to-ahead-by-``k`` over weighted votes, samples drawn
    round-robin (agent 0, 1, ..., n-1, 0, ...; the engine's ``--ensemble`` order).

    ``weights`` are in units of the reference agent's (``k`` counts reference votes); agent ``i`` answers right with
    probability ``ps[i]`` when its response is valid (``valid[i]``, default 1) and a red-flagged response has no
    vote. Errors are taken to agree (one wrong answer: the worst case, as in :func:`step_success`). The weighted
    margin is then a random walk on the lattice of integer combinations of the distinct weights; this follows its
    distribution sample by sample until less than ``tol`` of it is left undecided. With one agent, or equal weights
    and equal p, it equals :func:`step_success` and :func:`expected_calls`.
    """
    n = len(ps)
    if n == 0 or len(weights) != n or (valid is not None and len(valid) != n):
        raise ValueError("give one p, one weight (and one valid rate) per agent")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    vs = [1.0] * n if valid is None else list(valid)
    for p, v, w in zip(ps, vs, weights, strict=True):
        _check_p(p)
        if not 0.0 < v <= 1.0 or not w > 0:
            raise ValueError(f"valid rates must be in (0, 1] and weights positive, got {v} and {w}")
    classes = sorted(set(weights))
    cls = [classes.index(w) for w in weights]
    need = k - _SLACK
    live: dict[tuple[int, ...], float] = {tuple([0] * len(classes)): 1.0}
    wrong = 0.0
    by_agent = [0.0] * n
    t = 0
    mass = 1.0
    while mass > tol and t < max_samples:
        a = t % n
        by_agent[a] += mass
        up, down, stay = vs[a] * ps[a], vs[a] * (1.0 - ps[a]), 1.0 - vs[a]
        c = cls[a]
        nxt: dict[tuple[int, ...], float] = {}
        for state, m in live.items():
            if stay > 0.0:
                nxt[state] = nxt.get(state, 0.0) + m * stay
            for delta, q in ((1, up), (-1, down)):
                if q == 0.0:
                    continue
                s = list(state)
                s[c] += delta
                margin = sum(x * w for x, w in zip(s, classes, strict=True))
                if margin <= -need:
                    wrong += m * q
                elif margin < need:
                    key = tuple(s)
                    nxt[key] = nxt.get(key, 0.0) + m * q
        live = nxt
        mass = sum(live.values())
        t += 1
    return EnsembleStep(error=wrong, calls=sum(by_agent), calls_by_agent=tuple(by_agent), undecided=mass)


def ensemble_k_min(
    steps: int,
    ps: Sequence[float],
    weights: Sequence[float],
    target: float = 0.95,
    valid: Sequence[float] | None = None,
    *,
    k_max: int = 200,
) -> int:
    """Smallest k (in reference votes) whose run of ``steps`` steps is fully right with chance ``target`` or more,
    by :func:`ensemble_step`. ValueError when none up to ``k_max`` is (the ensemble's votes do not converge)."""
    if steps < 1 or not 0.0 < target < 1.0:
        raise ValueError(f"need steps >= 1 and 0 < target < 1, got {steps} and {target}")
    allowed = -math.expm1(math.log(target) / steps)  # 1 - target^(1/s), without cancellation
    lo_err = math.inf
    for k in range(1, k_max + 1):
        err = ensemble_step(ps, weights, k, valid).error
        if err <= allowed:
            return k
        if k > 8 and err >= lo_err * 0.999:  # not falling: the walk drifts the wrong way or not at all
            break
        lo_err = min(lo_err, err)
    raise ValueError(
        f"no k up to {k_max} gives this ensemble a {target} chance over {steps} steps: its weighted votes do not "
        f"lean to the right answer enough (weights {list(weights)}, p {list(ps)})"
    )
