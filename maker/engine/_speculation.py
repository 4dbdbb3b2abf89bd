"""Speculative drafting: a small model drafts each step, verifier agents confirm or reject it.

Only a rejected or undecided draft costs large-model voting. Two ways to verify:

* ``score`` (SpecReason): each verifier reads the prompt, the draft and an instruction to
  rate it 0-9, and one prefill-only pass gives the log-probabilities of the ten digits; the
  score is the expected digit (or the most likely one) and a verifier accepts at or above
  the threshold.
* ``vote`` (MAKER): verifiers answer the step themselves; the draft counts as one vote and
  is accepted when first-to-ahead-by-k over the verifiers' answers agrees with it.

* ``logprob`` (SpecGuard): no verifier; the draft is accepted when its own token log-probabilities pass
  ``logprob_threshold``: their minimum (default) or their mean. One unlikely token marks a likely error, and a
  mean over a long response dilutes it, which is why SpecGuard takes the minimum.

Verdicts are tallied first-to-ahead-by-``verify_k`` (accepts minus rejects). Routing by the
drafter's first-token entropy (GlimpRouter) sends uncertain steps straight to the large model.

With ``draft_k`` > 1 the draft is itself voted: the drafter answers several times in one call and
the draft is the first answer ahead by ``draft_k``. A cheap model's vote turns most of its wrong
drafts into split tallies before any verifier sees them, and a split the drafter cannot settle
sends the step to the large model at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from maker.agents import Agent

__all__ = ["Speculation", "DRAFT_CALLS", "LOGPROB_THRESHOLD", "logprob_stat"]

LOGPROB_THRESHOLD = -2.0
"""The default ``logprob_threshold``: a draft none of whose tokens had probability under e**-2 (13.5%) is accepted.
A starting point only; ``maker calibrate --verifier logprob`` measures the threshold a model and task need."""


def logprob_stat(logprobs: Sequence[float], stat: Literal["min", "mean"]) -> float:
    """The minimum or the mean of a response's token log-probabilities (-inf for none: never accepted)."""
    if not logprobs:
        return float("-inf")
    return min(logprobs) if stat == "min" else sum(logprobs) / len(logprobs)


DRAFT_CALLS = 4
"""Drafter calls a voted draft (``draft_k`` > 1) may take before the step is routed to large-model voting."""


@dataclass(kw_only=True)
class Speculation:
    """How drafts are made and checked."""

    drafter: Agent
    """The small model that drafts every step."""
    verifiers: list[Agent] = field(default_factory=list)
    """Agents that confirm or reject the draft (none: every draft escalates to voting)."""
    mode: Literal["score", "vote", "logprob"] = "score"
    """``score``: rate the draft 0-9 in one prefill pass; ``vote``: verifiers answer the step themselves;
    ``logprob``: the draft's own token log-probabilities pass ``logprob_threshold`` (no verifier)."""
    threshold: float = 7.0
    """A verifier accepts a draft whose score is at least this (score mode)."""
    score_by: Literal["expected", "greedy"] = "expected"
    """Expected digit over the digit log-probabilities, or the most likely digit."""
    logprob_stat: Literal["min", "mean"] = "min"
    """Logprob mode: the statistic of the draft's token log-probabilities that is checked."""
    logprob_threshold: float = LOGPROB_THRESHOLD
    """Logprob mode: a draft is accepted when its statistic is at least this (a log-probability, <= 0)."""
    verify_k: int = 1
    """Verdict margin: accepted when accepts - rejects >= verify_k, rejected when rejects - accepts >= verify_k."""
    draft_k: int = 1
    """The draft is the winner of first-to-ahead-by-``draft_k`` among the drafter's own samples (1: its one
    sample). Up to :data:`DRAFT_CALLS` drafter calls; a step the drafter's samples do not decide goes to voting."""
    draft_batch: int | None = None
    """Drafter samples per call when ``draft_k`` > 1 (None: ``2 * draft_k``)."""
    large_first: int = 0
    """The first N steps are always voted by the large model."""
    entropy_threshold: float | None = None
    """Route a step to the large model when the drafter's first-token entropy (nats, top-20) exceeds this."""
