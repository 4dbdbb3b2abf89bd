"""The one interface every model backend implements, the agent that wraps it, and what a verifier is asked.

A verifier rates a draft by the log-probabilities of the digits 0-9 after the SpecReason rating prompt
(:func:`judge_prompt`); every backend builds that prompt itself, so it lives here with the requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from maker.agents.prices import Price

__all__ = [
    "GenerateRequest",
    "Sample",
    "Usage",
    "Backend",
    "Agent",
    "Oracle",
    "JudgeRequest",
    "judge_prompt",
    "digit_score",
    "RATING_INSTRUCTION",
]


@dataclass(slots=True)
class Oracle:
    """Ground truth for one step, handed only to backends that simulate a model."""

    microstep: Any
    answer: Any
    step: int
    inputs: Any = None
    """The call's inputs: what a workflow's ``mistakes`` and ``difficulty`` may read."""


@dataclass(slots=True)
class GenerateRequest:
    """Ask for ``len(seeds)`` samples of one prompt.

    ``temperatures`` and ``seeds`` have one entry per sample; seeds are derived from the
    run seed, the step and the sample index, so a resumed run asks for the same draws.
    ``max_tokens`` is the red-flag limit: a backend generates at most ``max_tokens + 1``
    tokens, so a response that would run on is seen to exceed it.
    """

    prompt: str
    temperatures: Sequence[float]
    seeds: Sequence[int]
    max_tokens: int = 750
    stop: Sequence[str] = ()
    logprobs: bool = False
    oracle: Oracle | None = None
    """Ground truth, for simulated agents only (and error counts); real backends never read it."""
    pattern: str | None = None
    """The microstep's regex of a valid response, for backends with structured outputs (vLLM)."""

    @property
    def n(self) -> int:
        return len(self.seeds)

    def by_temperature(self) -> dict[float, list[int]]:
        """Sample indices grouped by temperature, in first-seen order (one API call per group)."""
        groups: dict[float, list[int]] = {}
        for i, t in enumerate(self.temperatures):
            groups.setdefault(t, []).append(i)
        return groups


def estimate_tokens(text: str) -> int:
    """Tokens a text takes, about: four characters a token (what a server that reports none is taken to use)."""
    return max(1, -(-len(text) // 4))


@dataclass(slots=True, frozen=True)
class Usage:
    """What one request to a model was billed, as its server reported it: prompt tokens (cached ones included),
    the cached part of them, and completion tokens (every choice's, when ``n`` asked for several)."""

    prompt: int
    completion: int
    cached: int = 0


@dataclass(slots=True)
class Sample:
    """One response: its text, how many tokens it took, and optionally token log-probs.

    ``usage`` is what the request that brought it was billed, as the server reported it, on the first sample of
    each request only (a request with ``n`` choices is billed once for its prompt): summing ``usage`` over the
    samples of a call gives the call's bill. None where the server reported nothing (or the backend is local):
    the engine then records an estimate, marked as one.
    """

    text: str
    tokens: int
    logprobs: list[float] | None = None
    finish_reason: str = "stop"
    usage: Usage | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as a constructor call: a third of the time of the default for slotted classes, which
        # matters when replicas send back thousands of samples in one reply.
        return (Sample, (self.text, self.tokens, self.logprobs, self.finish_reason, self.usage))


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


@runtime_checkable
class Backend(Protocol):
    """Async, batched text generation."""

    name: str

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        """One list of samples per request, in request order."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Judging(Protocol):
    """A backend that can rate drafts (``--verify score``): the log-probabilities of the digits 0-9 as the next
    token after each SpecReason rating prompt. Every bundled backend has it."""

    async def judge(self, requests: Sequence[JudgeRequest]) -> list[list[float]]: ...


@runtime_checkable
class EntropyProbing(Protocol):
    """A backend that can measure the entropy of a prompt's first token (``--entropy-threshold``)."""

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> list[float]: ...


@dataclass(slots=True)
class Agent:
    """A role bound to a backend. ``spec`` is the string the user gave (``simulated:gpt-4.1-mini``).

    ``model`` is the model's name as prices know it (``gpt-4.1-mini``; None: a local or unnamed model), and
    ``price`` the spec's own ``price=IN/CACHED/OUT`` when it gave one (see :mod:`maker.agents.prices`)."""

    spec: str
    backend: Backend
    info: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    price: Price | None = None

    @property
    def name(self) -> str:
        return self.spec
