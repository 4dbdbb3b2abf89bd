"""Reading next-token log-probabilities: the digits of a SpecReason rating, a first token's entropy, and whether a
backend returns the log-probabilities of the tokens it generates (``--verify logprob``).

Shared by the backends that rate drafts from a top-k list (OpenAI-compatible servers, vLLM).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["digit_logprobs", "entropy", "logaddexp", "returns_logprobs", "FLOOR_GAP", "FLOOR", "TOP"]

TOP = 20  # next-token log-probs asked for when rating a draft or measuring entropy (the APIs' usual maximum)
FLOOR_GAP = 5.0  # a digit missing from the top list: this far below the least likely token listed
FLOOR = -30.0  # ... or this, when the list is empty of finite values


def digit_logprobs(top: list[tuple[str, float]]) -> list[float]:
    """Log-probabilities of "0".."9" from a top list. A digit may come as " 7" (with the space a tokenizer
    attaches); its spellings are one answer, so their probabilities add."""
    found: dict[int, float] = {}
    for token, lp in top:
        t = token.strip()
        if len(t) == 1 and t in "0123456789":
            d = int(t)
            found[d] = lp if d not in found else logaddexp(found[d], lp)
    finite = [lp for _, lp in top if math.isfinite(lp)]
    floor = min(finite) - FLOOR_GAP if finite else FLOOR
    return [found.get(d, floor) for d in range(10)]


def entropy(logprobs: list[float]) -> float:
    """Entropy in nats of the distribution the log-probs give, renormalised over them."""
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return 0.0
    top = max(finite)
    weights = [math.exp(lp - top) for lp in finite]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights if w > 0)


def logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def returns_logprobs(backend: Any) -> bool:
    """Whether a backend fills ``Sample.logprobs`` when a ``GenerateRequest`` asks for them: it says so with a
    true ``token_logprobs`` attribute (simulated, transformers, vLLM, OpenAI-compatible HTTP)."""
    return bool(getattr(backend, "token_logprobs", False))
