"""What speculative drafting guarantees: the chance it commits a wrong step, and what it costs.

A drafted step (:mod:`maker.engine._speculation`, ``Decider._speculate``) goes one of three ways: the
draft is red-flagged and escalates; the verifiers accept it and it is committed; or they reject
it (or cannot decide) and it escalates to first-to-ahead-by-k voting by the large model. A
wrong step is committed when a wrong draft is accepted, or when an escalated vote goes wrong:

    error per step = valid * (1 - p_draft) * P(accept | wrong draft)
                     + P(escalate) * (1 - step_success(p, k))

Verifiers are taken as independent (each has its own seed, as simulated ones do; real models
that share blind spots are worse than this). The verification walks are computed exactly by
dynamic programming over the running tally, with the same early stops as the decider, so
every function here is a pure function of its inputs and works on :class:`fractions.Fraction`
too (exactly), which is how the tests check it.

Two facts the walks make plain, and that the ensemble search follows:

* in ``score`` mode, adding verifiers at a fixed ``verify_k`` never lowers the chance of
  accepting (a right or a wrong draft alike: they are more chances to reach the margin), so
  safety comes from raising ``verify_k``; ``n == verify_k`` (all must agree) accepts with
  ``rate ** n``;
* for a rate at most 1/2 (a wrong draft and a useful verifier), raising ``verify_k`` never raises
  the chance of accepting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict

from maker.engine import DRAFT_CALLS
from maker.stats import expected_calls, step_success

__all__ = [
    "accept_probability",
    "verifier_calls",
    "vote_accept_probability",
    "vote_verifier_calls",
    "Verification",
    "score_verification",
    "vote_verification",
    "logprob_verification",
    "SpeculationEstimate",
    "speculation_estimate",
    "Ensemble",
    "smallest_ensemble",
    "ENSEMBLE_BOUND",
    "DraftVote",
    "draft_vote",
]

ENSEMBLE_BOUND = 64
"""The largest ensemble (verifiers, or verify_k) :func:`smallest_ensemble` tries."""

Rate = float | Fraction
Rates = float | Fraction | Sequence[float] | Sequence[Fraction]

# A float walk stops once this little probability is left undecided (exact Fractions never stop early).
_NEGLIGIBLE = 1e-22


def _rates(rate: Rates, n: int, what: str) -> list[Any]:
    """One rate per verifier, in the order they are asked."""
    if n < 0:
        raise ValueError(f"number of verifiers must be >= 0, got {n}")
    rates: list[Any] = list(rate) if isinstance(rate, Sequence) else [rate] * n
    if len(rates) != n:
        raise ValueError(f"{what}: got {len(rates)} rates for {n} verifiers")
    for r in rates:
        if not 0 <= r <= 1:
            raise ValueError(f"{what} must be in [0, 1], got {r}")
    return rates


def _check_k(verify_k: int) -> None:
    if verify_k < 1:
        raise ValueError(f"verify_k must be >= 1, got {verify_k}")


def _out(x: Any, exact: bool) -> Rate:
    return Fraction(x) if exact else float(x)


def _exact(*values: Any) -> bool:
    return any(
        isinstance(v, Fraction) or (isinstance(v, Sequence) and any(isinstance(x, Fraction) for x in v)) for v in values
    )


# -- score mode --------------------------------------------------------------------------------------


def _score_walk(rates: list[Any], verify_k: int) -> tuple[Any, Any]:
    """(P(accept), expected verifier calls) of the decider's score-mode tally.

    Verifier i says +1 with probability ``rates[i]``, else -1. After each verdict, with ``left``
    verifiers still unasked: accept at margin >= verify_k; reject at margin <= -verify_k or when
    margin + left < verify_k; after the last verifier, reject.
    """
    _check_k(verify_k)
    n = len(rates)
    live: dict[int, Any] = {0: 1}
    accept: Any = 0
    calls: Any = 0
    for i, r in enumerate(rates):
        left = n - i - 1
        nxt: dict[int, Any] = {}
        for m, pr in live.items():
            calls += pr
            for step, w in ((1, r), (-1, 1 - r)):
                if w == 0:
                    continue
                m2, q = m + step, pr * w
                if m2 >= verify_k:
                    accept += q
                elif m2 > -verify_k and m2 + left >= verify_k:
                    nxt[m2] = nxt.get(m2, 0) + q
        live = nxt
        if not live:
            break
    return accept, calls


def accept_probability(rate: Rates, n: int, verify_k: int) -> Rate:
    """Chance that ``score``-mode verification accepts a draft that each of ``n`` independent verifiers
    accepts with probability ``rate`` (their TPR for a right draft, FPR for a wrong one; or one rate per
    verifier, in order), with the decider's early stops. ``n == 0``: never accepted; ``verify_k > n``: never
    accepted; ``n == verify_k``: ``rate ** n``."""
    rates = _rates(rate, n, "rate")
    return _out(_score_walk(rates, verify_k)[0], _exact(rate))


def verifier_calls(rate: Rates, n: int, verify_k: int) -> Rate:
    """Expected verifier calls of the same walk as :func:`accept_probability` (between 1 and n for n >= 1)."""
    rates = _rates(rate, n, "rate")
    return _out(_score_walk(rates, verify_k)[1], _exact(rate))


# -- vote mode ---------------------------------------------------------------------------------------


def _vote_walk(agree: list[Any], valid: list[Any], verify_k: int, max_answers: int) -> tuple[Any, Any]:
    """(P(accept), expected verifier answers) of the decider's vote-mode tally.

    The draft holds one vote; answer j comes from verifier j % n and is red-flagged (skipped, but a call)
    with probability 1 - valid, else agrees with the draft with probability ``agree`` and otherwise names
    the one other answer (all disagreeing answers agree with each other: the worst case). After each valid
    answer, a lead of verify_k decides: accepted if the draft leads. Undecided after ``max_answers``: rejected.
    """
    _check_k(verify_k)
    n = len(agree)
    if n == 0:
        return 0, 0
    exact = _exact(agree, valid)
    live: dict[int, Any] = {1: 1}  # draft's votes minus the other answer's
    accept: Any = 0
    calls: Any = 0
    for j in range(max_answers):
        a, v = agree[j % n], valid[j % n]
        mass = sum(live.values())
        if not exact and mass < _NEGLIGIBLE:
            break
        calls += mass
        nxt: dict[int, Any] = {}
        for d, pr in live.items():
            if v != 1:
                nxt[d] = nxt.get(d, 0) + pr * (1 - v)
            for step, w in ((1, v * a), (-1, v * (1 - a))):
                if w == 0:
                    continue
                d2, q = d + step, pr * w
                if abs(d2) >= verify_k:
                    if d2 > 0:
                        accept += q
                else:
                    nxt[d2] = nxt.get(d2, 0) + q
        live = nxt
        if not live:
            break
    return accept, calls


def vote_accept_probability(agree: Rates, n: int, verify_k: int, *, max_rounds: int = 100, valid: Rates = 1.0) -> Rate:
    """Chance that ``vote``-mode verification accepts a draft: ``n`` verifiers answer the step round-robin
    (at most ``max_rounds * n`` answers), each valid with probability ``valid`` and then agreeing with the
    draft with probability ``agree``; the draft counts as one vote; first to lead by ``verify_k`` decides.

    For a right draft ``agree`` is the verifier's correct rate p_v; for a wrong one, in the worst case (every
    wrong answer the same, which is what a simulated agent with ``spread=1`` does), ``1 - p_v``."""
    a = _rates(agree, n, "agree rate")
    v = _rates(valid, n, "valid rate")
    return _out(_vote_walk(a, v, verify_k, max_rounds * n)[0], _exact(agree, valid))


def vote_verifier_calls(agree: Rates, n: int, verify_k: int, *, max_rounds: int = 100, valid: Rates = 1.0) -> Rate:
    """Expected verifier answers (calls, red-flagged ones included) of the walk of :func:`vote_accept_probability`."""
    a = _rates(agree, n, "agree rate")
    v = _rates(valid, n, "valid rate")
    return _out(_vote_walk(a, v, verify_k, max_rounds * n)[1], _exact(agree, valid))


class Verification(BaseModel):
    """How one verification setting treats a valid draft."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    accept_right: float
    """P(accepted | the draft is right)."""
    accept_wrong: float
    """P(accepted | the draft is wrong): the verifiers' share of the run's errors."""
    calls_right: float
    """Expected verifier calls for a right draft."""
    calls_wrong: float
    """Expected verifier calls for a wrong draft."""


def score_verification(tpr: Rates, fpr: Rates, n: int, verify_k: int) -> Verification:
    """``score`` mode: each verifier accepts a right draft with ``tpr`` and a wrong one with ``fpr``."""
    r, w = _rates(tpr, n, "TPR"), _rates(fpr, n, "FPR")
    (ar, cr), (aw, cw) = _score_walk(r, verify_k), _score_walk(w, verify_k)
    return Verification(accept_right=float(ar), accept_wrong=float(aw), calls_right=float(cr), calls_wrong=float(cw))


def vote_verification(
    verifier_p: Rates, n: int, verify_k: int, *, max_rounds: int = 100, verifier_valid: Rates = 1.0
) -> Verification:
    """``vote`` mode with verifiers of per-sample correct rate ``verifier_p`` (among valid answers), every
    wrong answer agreeing with a wrong draft (the worst case)."""
    p = _rates(verifier_p, n, "verifier p")
    v = _rates(verifier_valid, n, "verifier valid rate")
    ar, cr = _vote_walk(p, v, verify_k, max_rounds * n)
    aw, cw = _vote_walk([1 - x for x in p], v, verify_k, max_rounds * n)
    return Verification(accept_right=float(ar), accept_wrong=float(aw), calls_right=float(cr), calls_wrong=float(cw))


def logprob_verification(tpr: float, fpr: float) -> Verification:
    """``logprob`` mode: the draft's own log-probability check accepts a right draft with ``tpr`` and a wrong one
    with ``fpr`` (measured at a threshold by ``maker calibrate --verifier logprob``); it costs no call."""
    for what, r in (("TPR", tpr), ("FPR", fpr)):
        if isinstance(r, Sequence) or not 0 <= r <= 1:
            raise ValueError(f"logprob mode takes one {what} in [0, 1], got {r!r}")
    return Verification(accept_right=float(tpr), accept_wrong=float(fpr), calls_right=0.0, calls_wrong=0.0)


# -- a whole run -------------------------------------------------------------------------------------


class SpeculationEstimate(BaseModel):
    """What a speculative run is expected to do, per step and over the run, next to plain voting."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    mode: Literal["score", "vote", "logprob"]
    """How drafts are verified (``logprob``: by the draft's own log-probabilities, no verifier calls)."""
    steps: int
    """Steps in the run."""
    verifiers: int
    """Verifiers n."""
    verify_k: int
    """Verdict margin."""
    drafter_p: float
    """Drafter's correct rate among valid drafts (per sample)."""
    draft_k: int = 1
    """The drafter's own voting margin (1: one sample is the draft)."""
    draft_p: float | None = None
    """A draft's correct rate among valid drafts: ``drafter_p``, or its vote's at ``draft_k``."""
    drafter_valid: float
    """Drafter's share of drafts not red-flagged."""
    p: float
    """Large model's per-sample correct rate (escalated voting)."""
    k: int
    """Large model's voting margin."""
    verification: Verification
    """How the verifiers treat a right and a wrong draft."""
    accept_rate: float
    """Share of steps whose draft is accepted."""
    escalation_rate: float
    """Share of steps decided by large-model voting (red-flagged, rejected or undecided drafts)."""
    wrong_draft_error: float
    """Per step: chance a wrong draft is accepted."""
    voting_error_share: float
    """Per step: chance the step escalates and the vote goes wrong."""
    step_error: float
    """Per step: chance of committing a wrong answer (the sum of the two above)."""
    expected_wrong: float
    """Expected wrong steps in the run: steps * step_error."""
    p_full: float
    """Chance of a fully correct run: (1 - step_error) ** steps."""
    large_calls_per_step: float
    """Expected large-model calls per step (escalated votes, and the verifiers' calls when they are the large model)."""
    drafter_calls_per_step: float
    """Expected drafter calls per step."""
    verifier_calls_per_step: float
    """Expected verifier calls per step."""
    voting_step_error: float
    """Plain voting by the large model at k: per-step error."""
    voting_expected_wrong: float
    """Plain voting: expected wrong steps."""
    voting_p_full: float
    """Plain voting: chance of a fully correct run."""
    voting_calls_per_step: float
    """Plain voting: expected large-model calls per step."""


class DraftVote(BaseModel):
    """How a voted draft comes out (:func:`draft_vote`)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    right: float
    """Chance the vote decides for the right answer."""
    wrong: float
    """Chance it decides for a wrong one."""
    split: float
    """Chance the tally is still split after the last call (the step goes to voting)."""
    flagged: float
    """Chance every sample is red-flagged (the step goes to voting)."""
    samples: float
    """Expected drafter samples per step."""


def draft_vote(p: float, k: int, batch: int, *, valid: float = 1.0, calls: int = DRAFT_CALLS) -> DraftVote:
    """A voted draft, exactly: ``batch`` samples a call, each red-flagged with ``1 - valid`` and otherwise right
    with ``p``, the tally checked after each call for a lead of ``k``, at most ``calls`` calls. Every wrong
    sample is taken to give the same wrong answer (the worst case). A dynamic program over the tally's lead."""
    if not 0 <= p <= 1 or not 0 <= valid <= 1 or k < 1 or batch < 1 or calls < 1:
        raise ValueError(f"need p and valid in [0, 1], k, batch, calls >= 1; got {p}, {valid}, {k}, {batch}, {calls}")
    # per call: the chance of r right and w wrong samples among `batch` (the rest red-flagged)
    counted: list[tuple[int, bool, float]] = []
    for r in range(batch + 1):
        for w in range(batch - r + 1):
            f = batch - r - w
            pr = (
                math.comb(batch, r)
                * math.comb(batch - r, w)
                * (valid * p) ** r
                * (valid * (1 - p)) ** w
                * (1 - valid) ** f
            )
            if pr:
                counted.append((r - w, r + w > 0, pr))
    live: dict[tuple[int, bool], float] = {(0, False): 1.0}  # (lead of the right answer, any valid sample yet)
    right = wrong = 0.0
    made = 0.0
    for _ in range(calls):
        made += sum(live.values())
        nxt: dict[tuple[int, bool], float] = {}
        for (lead, seen), pr in live.items():
            for dl, any_valid, q in counted:
                lead2 = lead + dl
                if lead2 >= k:
                    right += pr * q
                elif lead2 <= -k:
                    wrong += pr * q
                else:
                    key = (lead2, seen or any_valid)
                    nxt[key] = nxt.get(key, 0.0) + pr * q
        live = nxt
    split = sum(pr for (_, seen), pr in live.items() if seen)
    flagged = sum(pr for (_, seen), pr in live.items() if not seen)
    return DraftVote(right=right, wrong=wrong, split=split, flagged=flagged, samples=batch * made)


def _p_full(error: float, steps: int) -> float:
    if error >= 1.0:
        return 0.0 if steps else 1.0
    return math.exp(steps * math.log1p(-error))


def speculation_estimate(
    *,
    drafter_p: float,
    p: float,
    k: int,
    steps: int,
    mode: Literal["score", "vote", "logprob"] = "score",
    tpr: Rates | None = None,
    fpr: Rates | None = None,
    verifier_p: Rates | None = None,
    verifier_valid: Rates = 1.0,
    verifiers: int = 1,
    verify_k: int = 1,
    drafter_valid: float = 1.0,
    valid: float = 1.0,
    max_rounds: int = 100,
    verifiers_are_large: bool = False,
    large_first: int = 0,
    draft_k: int = 1,
    draft_batch: int | None = None,
) -> SpeculationEstimate:
    """The speculative run's error and cost, from the agents' rates.

    ``drafter_p``/``drafter_valid``: the drafter's correct rate among valid drafts and its valid rate.
    ``mode="score"`` takes ``tpr`` and ``fpr`` (one value, or one per verifier); ``mode="logprob"`` takes the
    log-probability check's ``tpr`` and ``fpr`` (one value each; ``verifiers`` and ``verify_k`` are not read, and
    with ``draft_k`` > 1 they are the rates on the voted draft); ``mode="vote"`` takes
    ``verifier_p`` (and ``verifier_valid``, ``max_rounds``). ``p``, ``k``, ``valid``: the large model's
    escalated voting. ``verifiers_are_large``: the verifiers' calls are large-model calls too.
    ``large_first``: the first steps are voted without a draft. Routing by entropy is not modelled (it sends
    more steps to voting, whose error is usually the smaller one).

    ``draft_k`` > 1: each draft is voted among the drafter's own samples (:func:`draft_vote`); a tally left
    split, or every sample red-flagged, sends the step to voting.
    """
    if not 0 <= drafter_p <= 1 or not 0 < drafter_valid <= 1:
        raise ValueError(f"drafter p must be in [0, 1] and its valid rate in (0, 1], got {drafter_p}, {drafter_valid}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if draft_k < 1 or (draft_batch is not None and draft_batch < 1):
        raise ValueError(f"draft_k and draft_batch must be >= 1, got {draft_k} and {draft_batch}")
    drafter_samples = 1.0
    draft_p, draft_valid = drafter_p, drafter_valid
    if draft_k > 1:
        vote = draft_vote(drafter_p, draft_k, draft_batch or 2 * draft_k, valid=drafter_valid)
        draft_valid = vote.right + vote.wrong
        draft_p = vote.right / draft_valid if draft_valid else 0.0
        drafter_samples = vote.samples
    if mode == "score":
        if tpr is None or fpr is None:
            raise ValueError("score mode needs the verifiers' TPR and FPR")
        ver = score_verification(tpr, fpr, verifiers, verify_k)
    elif mode == "logprob":
        if tpr is None or fpr is None:
            raise ValueError("logprob mode needs the log-probability check's TPR and FPR")
        ver = logprob_verification(cast(float, tpr), cast(float, fpr))
        verifiers, verify_k = 0, 1
    elif mode == "vote":
        if verifier_p is None:
            raise ValueError("vote mode needs the verifiers' per-sample correct rate")
        ver = vote_verification(verifier_p, verifiers, verify_k, max_rounds=max_rounds, verifier_valid=verifier_valid)
    else:
        raise ValueError(f"mode must be 'score', 'vote' or 'logprob', got {mode!r}")
    vote_error = 1.0 - step_success(p, k)
    vote_calls = expected_calls(p, k, valid)
    right, wrong = draft_valid * draft_p, draft_valid * (1.0 - draft_p)
    accept = right * ver.accept_right + wrong * ver.accept_wrong
    wrong_draft = wrong * ver.accept_wrong
    ver_calls = right * ver.calls_right + wrong * ver.calls_wrong
    # The first `large_first` steps are voted, no draft.
    f = min(large_first, steps) / steps if steps else 0.0
    accept, wrong_draft, ver_calls = (1 - f) * accept, (1 - f) * wrong_draft, (1 - f) * ver_calls
    escalate = 1.0 - accept
    step_error = wrong_draft + escalate * vote_error
    large = escalate * vote_calls + (ver_calls if verifiers_are_large else 0.0)
    return SpeculationEstimate(
        mode=mode,
        steps=steps,
        verifiers=verifiers,
        verify_k=verify_k,
        drafter_p=drafter_p,
        draft_k=draft_k,
        draft_p=draft_p,
        drafter_valid=drafter_valid,
        p=p,
        k=k,
        verification=ver,
        accept_rate=accept,
        escalation_rate=escalate,
        wrong_draft_error=wrong_draft,
        voting_error_share=escalate * vote_error,
        step_error=step_error,
        expected_wrong=steps * step_error,
        p_full=_p_full(step_error, steps),
        large_calls_per_step=large,
        drafter_calls_per_step=(1.0 - f) * drafter_samples,
        verifier_calls_per_step=ver_calls,
        voting_step_error=vote_error,
        voting_expected_wrong=steps * vote_error,
        voting_p_full=_p_full(vote_error, steps),
        voting_calls_per_step=vote_calls,
    )


class Ensemble(BaseModel):
    """The smallest verification settings that meet a target chance of a fully correct run."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    target: float
    """Wanted chance of a fully correct run."""
    verifiers: int | None
    """Smallest number of verifiers (at least verify_k) at the given verify_k; None when none up to the bound
    does. In score mode more verifiers at one verify_k only accept more, so this is verify_k or None."""
    unanimous: int | None
    """Smallest K with K verifiers and verify_k = K (all must agree, in score mode); None when unreachable."""
    verify_k_at_n: int | None
    """Smallest verify_k (score mode: at most n) with the given n verifiers; None when unreachable."""
    bound: int
    """The largest ensemble tried."""


def smallest_ensemble(
    *,
    drafter_p: float,
    p: float,
    k: int,
    steps: int,
    target: float = 0.95,
    mode: Literal["score", "vote", "logprob"] = "score",
    tpr: float | None = None,
    fpr: float | None = None,
    verifier_p: float | None = None,
    verifier_valid: float = 1.0,
    verifiers: int = 1,
    verify_k: int = 1,
    drafter_valid: float = 1.0,
    valid: float = 1.0,
    max_rounds: int = 100,
    verifiers_are_large: bool = False,
    large_first: int = 0,
    draft_k: int = 1,
    draft_batch: int | None = None,
    bound: int = ENSEMBLE_BOUND,
) -> Ensemble:
    """The smallest n (at the given ``verify_k``), the smallest unanimous K (n = verify_k = K), and the smallest
    verify_k at the given n that give :func:`speculation_estimate`'s ``p_full >= target``. Each is None when
    nothing up to ``bound`` reaches it (a drafter or verifiers too weak, or large-model voting at k that
    alone misses the target). Rates are one value for all verifiers here."""
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    common: dict[str, Any] = dict(
        drafter_p=drafter_p,
        p=p,
        k=k,
        steps=steps,
        mode=mode,
        tpr=tpr,
        fpr=fpr,
        verifier_p=verifier_p,
        verifier_valid=verifier_valid,
        drafter_valid=drafter_valid,
        valid=valid,
        max_rounds=max_rounds,
        verifiers_are_large=verifiers_are_large,
        large_first=large_first,
        draft_k=draft_k,
        draft_batch=draft_batch,
    )

    def meets(n: int, vk: int) -> bool:
        return speculation_estimate(verifiers=n, verify_k=vk, **common).p_full >= target

    # n < verify_k accepts nothing in score mode (plain voting, not speculation): start at verify_k.
    first_n = verify_k if mode == "score" else 1
    by_n = next((n for n in range(first_n, bound + 1) if meets(n, verify_k)), None)
    unanimous = next((kk for kk in range(1, bound + 1) if meets(kk, kk)), None)
    top_k = min(verifiers, bound) if mode == "score" else bound
    at_n = next((vk for vk in range(1, top_k + 1) if meets(verifiers, vk)), None) if verifiers else None
    return Ensemble(target=target, verifiers=by_n, unanimous=unanimous, verify_k_at_n=at_n, bound=bound)


# -- before a run ------------------------------------------------------------------------------------
