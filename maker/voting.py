"""Voting policy and the error-correction mathematics of MAKER (section 3).

Everything here is a pure function of its inputs so it can be property-tested.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Voting",
    "step_success",
    "run_success",
    "k_min",
    "expected_samples",
    "expected_calls",
    "wilson_interval",
    "beta_confidence",
    "samples_needed",
    "is_decided",
]


class Voting(BaseModel):
    """How the samples of one microstep are turned into one answer."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rule: Literal["ahead_by_k", "adaptive"] = "ahead_by_k"
    """``ahead_by_k``: decided when one answer has ``k`` more votes than any other.
    ``adaptive``: decided when the Beta posterior that the leader holds the majority
    reaches ``confidence`` (Adaptive-Consistency)."""

    k: int = Field(default=3, ge=1, le=1000)
    """Margin of first-to-ahead-by-k voting; also the size of the first batch of samples."""

    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    """Posterior threshold for the ``adaptive`` rule."""

    max_rounds: int = Field(default=100, ge=1)
    """Bound on sampling rounds per step; past it the step escalates to the next agent or fails."""

    first_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """Temperature of the very first sample of a step (MAKER: 0, the model's best guess)."""

    temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    """Temperature of every later sample, to decorrelate their errors."""

    batch: int | None = Field(default=None, ge=1, le=4096)
    """Samples asked of the backend in one call (default: the first round's size). A later
    round that needs fewer is filled up to it and the extra samples serve the rounds after;
    what is left when the step is decided is dropped. Each sample keeps its index and seed,
    so decisions are the same as asking for exactly what each round needs (up to a real
    model's floating-point differences between batch shapes)."""

    fixed: bool = False
    """Run-wide voting options (``--k``, ``--rule``, ``--temperature``, ...) leave this policy as it is: for a
    microstep that draws candidates rather than votes (``k=1`` at a sampling temperature), which a judge then
    picks from."""

    @model_validator(mode="after")
    def _check(self) -> Voting:
        if self.rule == "adaptive" and self.k < 1:  # pragma: no cover - guarded by Field
            raise ValueError("adaptive voting needs k >= 1 as its first batch size")
        return self


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


def beta_confidence(leader: int, runner_up: int) -> float:
    """P(leader's share > 1/2) under a uniform prior: Beta(leader+1, runner_up+1).

    For integer counts this equals P(Binomial(leader+runner_up+1, 1/2) <= leader).
    """
    n = leader + runner_up + 1
    total = sum(math.comb(n, j) for j in range(leader + 1))
    outcomes: int = 2**n
    return total / outcomes


def is_decided(voting: Voting, top: int, second: int) -> bool:
    """Whether a tally whose two largest counts are ``top`` >= ``second`` is decided."""
    if voting.rule == "ahead_by_k":
        return top - second >= voting.k
    return top > second and beta_confidence(top, second) >= voting.confidence


def samples_needed(voting: Voting, top: int, second: int) -> int:
    """Fewest further valid votes that could decide the step (all of them for the leader).

    Asking for exactly this many keeps batches as large as possible without ever
    drawing a sample the one-at-a-time procedure would not have drawn.
    """
    if voting.rule == "ahead_by_k":
        return max(1, voting.k - (top - second))
    extra = 0
    while not is_decided(voting, top + extra, second):
        extra += 1
    return max(1, extra)
