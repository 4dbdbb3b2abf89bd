"""The voting policy of a microstep and the rule that decides a tally.

The mathematics of what a policy achieves (success chances, the smallest k, expected calls)
is in :mod:`maker.stats`. Everything here is a pure function of its inputs so it can be
property-tested.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Voting", "beta_confidence", "samples_needed", "is_decided"]


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
