"""Speculative drafting: a small model drafts each step, verifier agents confirm or reject it.

Only a rejected or undecided draft costs large-model voting. Two ways to verify:

* ``score`` (SpecReason): each verifier reads the prompt, the draft and an instruction to
  rate it 0-9, and one prefill-only pass gives the log-probabilities of the ten digits; the
  score is the expected digit (or the most likely one) and a verifier accepts at or above
  the threshold.
* ``vote`` (MAKER): verifiers answer the step themselves; the draft counts as one vote and
  is accepted when first-to-ahead-by-k over the verifiers' answers agrees with it.

Verdicts are tallied first-to-ahead-by-``verify_k`` (accepts minus rejects). Routing by the
drafter's first-token entropy (GlimpRouter) sends uncertain steps straight to the large model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from maker.agents import Agent

__all__ = ["Speculation", "JudgeRequest", "judge_prompt", "digit_score", "RATING_INSTRUCTION"]

RATING_INSTRUCTION = (
    "\n\nIs the answer above a correct next step? Rate it from 0 (certainly wrong) to 9 (certainly right).\nRating: "
)


def judge_prompt(prompt: str, draft: str) -> str:
    """The SpecReason verification prompt: the step's prompt, the drafted answer, a rating instruction."""
    return f"{prompt}{draft}{RATING_INSTRUCTION}"


@dataclass(slots=True)
class JudgeRequest:
    """Rate one draft. ``oracle`` is the ground truth, used only by simulated verifiers."""

    prompt: str
    draft: str
    seed: int
    oracle: Any = None


def digit_score(logprobs: Sequence[float], how: Literal["expected", "greedy"] = "expected") -> float:
    """Score from the log-probabilities of the digits 0..9 (renormalised over the ten)."""
    if len(logprobs) != 10:
        raise ValueError(f"need 10 digit log-probabilities, got {len(logprobs)}")
    if how == "greedy":
        return float(max(range(10), key=lambda d: logprobs[d]))
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return sum(d * w for d, w in enumerate(weights)) / total


@dataclass(kw_only=True)
class Speculation:
    """How drafts are made and checked."""

    drafter: Agent
    """The small model that drafts every step."""
    verifiers: list[Agent] = field(default_factory=list)
    """Agents that confirm or reject the draft (none: the draft escalates unless ``accept_unverified``)."""
    mode: Literal["score", "vote"] = "score"
    """``score``: rate the draft 0-9 in one prefill pass; ``vote``: verifiers answer the step themselves."""
    threshold: float = 7.0
    """A verifier accepts a draft whose score is at least this (score mode)."""
    score_by: Literal["expected", "greedy"] = "expected"
    """Expected digit over the digit log-probabilities, or the most likely digit."""
    verify_k: int = 1
    """Verdict margin: accepted when accepts - rejects >= verify_k, rejected when rejects - accepts >= verify_k."""
    large_first: int = 0
    """The first N steps are always voted by the large model."""
    entropy_threshold: float | None = None
    """Route a step to the large model when the drafter's first-token entropy (nats, top-20) exceeds this."""
