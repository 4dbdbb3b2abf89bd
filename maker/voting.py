"""The voting policy of a microstep and the rule that decides a tally.

The mathematics of what a policy achieves (success chances, the smallest k, expected calls)
is in :mod:`maker.stats`. Everything here is a pure function of its inputs so it can be
property-tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Voting",
    "beta_confidence",
    "samples_needed",
    "is_decided",
    "log_odds",
    "relative_weights",
    "weighted_decided",
    "weighted_needed",
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


# -- weighted votes (a mixed ensemble) ---------------------------------------------------------------
_MARGIN_SLACK = 1e-9
"""Weighted margins are sums of floats: a margin within this of ``k`` (in reference-agent units) counts as ``k``,
so that sums of weights equal to 1 (or to any common value) decide exactly where counts do."""


def log_odds(p: float) -> float:
    """The weight of a voter right with probability ``p``, ``ln(p / (1 - p))``: the optimal weight for independent
    voters (each vote adds its log-likelihood ratio). Needs ``0.5 < p < 1``: a voter at 1/2 carries nothing, one
    below it is against the truth, and one at 1 would outvote everyone (say ``p=0.9999`` instead)."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"a weighted voter needs 0.5 < p < 1, got p={p}")
    return math.log(p) - math.log1p(-p)


def relative_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """Weights in units of the reference agent's, the first one's: ``k`` is then a margin in reference votes."""
    if not weights or any(not w > 0 for w in weights):
        raise ValueError(f"weights must be positive, got {list(weights)}")
    ref = weights[0]
    return tuple(w / ref for w in weights)


def weighted_decided(voting: Voting, top: float, second: float) -> bool:
    """Whether a weighted tally (weights in reference-agent units) whose two largest sums are ``top`` >= ``second``
    is decided: ``top - second >= k``. With every weight 1 this is :func:`is_decided` on counts, exactly."""
    if voting.rule == "adaptive":  # equal weights only (checked before a run): the sums are counts
        return is_decided(voting, round(top), round(second))
    return top - second >= voting.k - _MARGIN_SLACK


def weighted_needed(voting: Voting, top: float, second: float, upcoming: Sequence[float]) -> int:
    """Fewest further samples, taken in the order their agents' weights come in ``upcoming`` (cycled), that could
    decide the tally if every one voted for the leader. No fewer can decide it, so asking for exactly these keeps a
    batch as large as possible without drawing a sample the one-at-a-time procedure would not have drawn."""
    if voting.rule == "adaptive":
        return samples_needed(voting, round(top), round(second))
    gap = voting.k - _MARGIN_SLACK - (top - second)
    n = 0
    while gap > 0:
        gap -= upcoming[n % len(upcoming)]
        n += 1
    return max(1, n)
