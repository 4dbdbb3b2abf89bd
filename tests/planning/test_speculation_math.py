"""The guarantees of speculative drafting (:mod:`maker.planning._speculation`), checked three ways.

The dynamic programs are compared with brute-force enumeration of every verdict sequence, walked
by a literal copy of the decider's rules (the copy itself checked against ``Decider._verify`` on
every short sequence), in exact rational arithmetic; their limits and
monotonicity are property-tested; and the whole-run estimate is compared with the wrong steps and
calls that real simulated speculative runs commit. ``maker estimate``, ``maker calibrate
--verifier`` and the pre-run warning are exercised as users meet them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maker.agents import Oracle, Roster, make_agent
from maker.engine import Decider, Decision, Speculation
from maker.planning import (
    accept_probability,
    known_rates,
    preflight,
    score_verification,
    smallest_ensemble,
    speculation_estimate,
    verifier_calls,
    vote_accept_probability,
    vote_verification,
    vote_verifier_calls,
)
from maker.runs import RunOptions, start_run
from maker.stats import expected_samples, step_success, wilson_interval
from maker.voting import Voting
from maker.workflows.counting import NextNumber, next_number
from tests._cli import invoke as _cli

RATE = st.fractions(min_value=0, max_value=1, max_denominator=12)
LOW_RATE = st.fractions(min_value=0, max_value=Fraction(1, 2), max_denominator=12)


# -- brute force: every verdict sequence, walked by the decider's rules ----------------------------------


def _score_decider(verdicts: tuple[bool, ...], verify_k: int) -> tuple[bool, int]:
    """``Decider._verify`` in score mode, on a given sequence of verdicts: (accepted, verifier calls)."""
    margin = 0
    for i, ok in enumerate(verdicts):
        margin += 1 if ok else -1
        left = len(verdicts) - i - 1
        if margin >= verify_k:
            return True, i + 1
        if margin <= -verify_k or margin + left < verify_k:
            return False, i + 1
    return False, len(verdicts)


def _score_brute(rates: list[Fraction], verify_k: int) -> tuple[Fraction, Fraction]:
    accept = calls = Fraction(0)
    for seq in itertools.product((True, False), repeat=len(rates)):
        pr = math.prod((r if ok else 1 - r for r, ok in zip(rates, seq, strict=True)), start=Fraction(1))
        ok, n = _score_decider(seq, verify_k)
        accept += pr * ok
        calls += pr * n
    return accept, calls


def _vote_decider(answers: tuple[str, ...], verify_k: int) -> tuple[bool, int]:
    """``Decider._verify`` in vote mode: the draft is one vote; 'a' agrees with it, 'd' is the other answer,
    'f' is red-flagged (skipped). (accepted, verifier calls)."""
    counts = {"draft": 1}
    for j, a in enumerate(answers):
        if a == "f":
            continue
        key = "draft" if a == "a" else "other"
        counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.values(), reverse=True)
        if ranked[0] - (ranked[1] if len(ranked) > 1 else 0) >= verify_k:
            return max(counts, key=counts.__getitem__) == "draft", j + 1
    return False, len(answers)


def _vote_brute(
    agree: list[Fraction], valid: list[Fraction], verify_k: int, max_rounds: int
) -> tuple[Fraction, Fraction]:
    n = len(agree)
    accept = calls = Fraction(0)
    for seq in itertools.product("adf", repeat=max_rounds * n):
        pr = Fraction(1)
        for j, a in enumerate(seq):
            g, v = agree[j % n], valid[j % n]
            pr *= {"a": v * g, "d": v * (1 - g), "f": 1 - v}[a]
        if pr:
            ok, c = _vote_decider(seq, verify_k)
            accept += pr * ok
            calls += pr * c
    return accept, calls


@settings(max_examples=150, deadline=None)
@given(rates=st.lists(RATE, min_size=0, max_size=7), verify_k=st.integers(1, 5))
def test_score_walk_equals_every_verdict_sequence(rates: list[Fraction], verify_k: int) -> None:
    accept, calls = _score_brute(rates, verify_k)
    assert accept_probability(rates, len(rates), verify_k) == accept
    assert verifier_calls(rates, len(rates), verify_k) == calls
    if len(set(rates)) == 1:  # one rate for all gives the same
        assert accept_probability(rates[0], len(rates), verify_k) == accept


@settings(max_examples=60, deadline=None)
@given(
    agree=st.lists(RATE, min_size=1, max_size=2),
    valid=st.sampled_from([Fraction(1), Fraction(3, 4)]),
    verify_k=st.integers(1, 3),
    max_rounds=st.integers(1, 3),
)
def test_vote_walk_equals_every_answer_sequence(agree, valid, verify_k, max_rounds) -> None:
    n = len(agree)
    max_rounds = min(max_rounds, 6 // n)  # 3**6 answer sequences at most
    valids = [valid] * n
    accept, calls = _vote_brute(agree, valids, verify_k, max_rounds)
    assert vote_accept_probability(agree, n, verify_k, max_rounds=max_rounds, valid=valids) == accept
    assert vote_verifier_calls(agree, n, verify_k, max_rounds=max_rounds, valid=valids) == calls


# -- the copies above against the real decider ----------------------------------------------------------
# Simulated agents that always give one verdict or one kind of answer: with tpr=1 a verifier accepts the (right)
# draft, with tpr=0 it rejects it; in vote mode p=1 answers like the draft, p=0 (spread 1) otherwise, and
# malformed=1 is red-flagged.
_SCORE_AGENT = {True: "simulated:tpr=1,fpr=1", False: "simulated:tpr=0,fpr=0"}
_VOTE_AGENT = {"a": "simulated:p=1", "d": "simulated:p=0,spread=1", "f": "simulated:p=1,malformed=1"}


def _real_verify(verifiers: list[str], verify_k: int, mode: Any) -> tuple[bool, list[Any], Decision]:
    """``Decider._verify`` itself on a right draft of a counting step: (accepted, verdicts, decision)."""
    spec = Speculation(
        drafter=make_agent("simulated:seed=1"),
        verifiers=[make_agent(v) for v in verifiers],
        mode=mode,
        verify_k=verify_k,
    )
    decider = Decider(
        roster=Roster.of([make_agent("simulated:seed=2")], spec.drafter, spec.verifiers),
        speculation=spec,
        seed=0,
        policies={next_number.name: Voting(max_rounds=1)},
        max_tokens=10**6,
    )  # no answer is too long
    call = next_number.ask(recent="1, 2, 3")
    right = NextNumber(value=4)
    draft = next_number.render(right)
    parsed = Decider.read(next_number, draft, 1, next_number.max_tokens, call.inputs)
    d, info = Decision(), {}
    ok = asyncio.run(
        decider._verify(d, 0, call, draft, parsed, Oracle(next_number, right, 0, call.inputs), info, False)
    )
    return ok, info["verdicts"], d


@pytest.mark.parametrize("verify_k", [1, 2, 3])
def test_the_decider_tallies_verdicts_as_the_score_walk(verify_k: int) -> None:
    """Every verdict sequence of up to five verifiers, most of them more than ``verify_k``: the decider accepts,
    asks and records exactly as the walk the probabilities are computed from; a reject takes a point off."""
    for n in range(6):
        for seq in itertools.product((True, False), repeat=n):
            ok, verdicts, d = _real_verify([_SCORE_AGENT[v] for v in seq], verify_k, "score")
            accepted, calls = _score_decider(seq, verify_k)
            assert (ok, len(verdicts)) == (accepted, calls), seq
            assert [(j, good) for j, _score, good in verdicts] == list(enumerate(seq[:calls]))
            assert sum(d.calls.values()) == calls and sum(d.issued.values()) == calls + d.spare_samples
    # with one verifier too many, a tie is no acceptance: reject then accept is rejected at the first verdict
    ok, verdicts, _ = _real_verify([_SCORE_AGENT[False], _SCORE_AGENT[True], _SCORE_AGENT[True]], 1, "score")
    assert not ok and [good for *_, good in verdicts] == [False]


@pytest.mark.parametrize("verify_k", [1, 2, 3])
def test_the_decider_tallies_answers_as_the_vote_walk(verify_k: int) -> None:
    """Vote mode, one answer from each of up to four verifiers: the same acceptance and answers as the walk."""
    for n in range(5):
        for seq in itertools.product("adf", repeat=n):
            ok, verdicts, d = _real_verify([_VOTE_AGENT[a] for a in seq], verify_k, "vote")
            accepted, calls = _vote_decider(seq, verify_k)
            assert (ok, len(verdicts)) == (accepted, calls), seq
            assert verdicts == [[j, a == "a"] for j, a in enumerate(seq[:calls])]
            assert sum(d.calls.values()) == calls


# -- closed forms, limits, monotonicity ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(rate=RATE, n=st.integers(1, 12))
def test_all_must_agree_is_rate_to_the_n_and_falls_with_n(rate: Fraction, n: int) -> None:
    assert accept_probability(rate, n, n) == rate**n
    assert accept_probability(rate, n + 1, n + 1) <= accept_probability(rate, n, n)


@settings(max_examples=200, deadline=None)
@given(rate=RATE, n=st.integers(0, 12), verify_k=st.integers(1, 8))
def test_limits(rate: Fraction, n: int, verify_k: int) -> None:
    if n == 0 or verify_k > n:
        assert accept_probability(rate, n, verify_k) == 0
    assert accept_probability(Fraction(0), n, verify_k) == 0
    if n >= verify_k:
        assert accept_probability(Fraction(1), n, verify_k) == 1
        assert verifier_calls(Fraction(1), n, verify_k) == verify_k  # straight to the margin
    assert 0 <= verifier_calls(rate, n, verify_k) <= n
    assert vote_accept_probability(rate, 0, verify_k) == 0 and vote_verifier_calls(rate, 0, verify_k) == 0


@settings(max_examples=200, deadline=None)
@given(rate=RATE, n=st.integers(0, 10), verify_k=st.integers(1, 6))
def test_more_verifiers_at_one_verify_k_never_accept_less(rate: Fraction, n: int, verify_k: int) -> None:
    """The walk with one more verifier is the same walk with one more chance: safety comes from verify_k."""
    assert accept_probability(rate, n + 1, verify_k) >= accept_probability(rate, n, verify_k)


@settings(max_examples=200, deadline=None)
@given(rate=LOW_RATE, n=st.integers(0, 10), verify_k=st.integers(1, 6))
def test_higher_verify_k_never_accepts_a_wrong_draft_more(rate: Fraction, n: int, verify_k: int) -> None:
    """For a verifier that accepts wrong drafts at most half the time (any useful one)."""
    assert accept_probability(rate, n, verify_k + 1) <= accept_probability(rate, n, verify_k)
    assert vote_accept_probability(rate, 1, verify_k + 1, max_rounds=8) <= vote_accept_probability(
        rate, 1, verify_k, max_rounds=8
    )


@settings(max_examples=100, deadline=None)
@given(rate=RATE, n=st.integers(1, 3), verify_k=st.integers(1, 3), rounds=st.integers(1, 6))
def test_more_vote_answers_never_accept_less(rate: Fraction, n: int, verify_k: int, rounds: int) -> None:
    assert vote_accept_probability(rate, n, verify_k, max_rounds=rounds + 1) >= vote_accept_probability(
        rate, n, verify_k, max_rounds=rounds
    )


@pytest.mark.parametrize("verify_k", [1, 2, 3, 5])
@pytest.mark.parametrize("agree", [0.05, 0.3, 0.7, 0.95])
def test_vote_walk_is_gamblers_ruin_from_the_drafts_vote(agree: float, verify_k: int) -> None:
    """Many answers allowed: from a lead of 1 to +-verify_k (the first answer always moves it)."""
    got = vote_accept_probability(agree, 1, verify_k, max_rounds=2000)
    if verify_k == 1:
        assert got == pytest.approx(agree * (2 - agree))  # accepted at once, or after a tie
    else:
        r = (1 - agree) / agree
        assert got == pytest.approx((1 - r ** (verify_k + 1)) / (1 - r ** (2 * verify_k)), rel=1e-9)


def test_verification_settings_in_words() -> None:
    v = score_verification(0.99, 0.05, 4, 4)
    assert v.accept_wrong == pytest.approx(0.05**4) and v.accept_right == pytest.approx(0.99**4)
    assert 1 <= v.calls_wrong < 1.06 and v.calls_right == pytest.approx(1 + 0.99 + 0.99**2 + 0.99**3)
    w = vote_verification(0.9, 1, 3, max_rounds=100)
    assert w.accept_wrong == pytest.approx(vote_accept_probability(0.1, 1, 3))
    assert w.accept_right == pytest.approx(vote_accept_probability(0.9, 1, 3))
    with pytest.raises(ValueError):
        accept_probability(1.5, 2, 1)
    with pytest.raises(ValueError):
        accept_probability(0.5, 2, 0)
    with pytest.raises(ValueError):
        accept_probability([0.5], 2, 1)


@settings(max_examples=100, deadline=None)
@given(
    drafter_p=st.floats(0, 1),
    tpr=st.floats(0, 1),
    fpr=st.floats(0, 1),
    n=st.integers(0, 6),
    verify_k=st.integers(1, 4),
    p=st.floats(0.5, 1),
    k=st.integers(1, 6),
    steps=st.integers(1, 10**6),
    drafter_valid=st.floats(0.05, 1),
)
def test_estimate_adds_up(drafter_p, tpr, fpr, n, verify_k, p, k, steps, drafter_valid) -> None:
    e = speculation_estimate(
        drafter_p=drafter_p,
        drafter_valid=drafter_valid,
        tpr=tpr,
        fpr=fpr,
        verifiers=n,
        verify_k=verify_k,
        p=p,
        k=k,
        steps=steps,
    )
    assert e.accept_rate + e.escalation_rate == pytest.approx(1)
    assert e.step_error == pytest.approx(
        drafter_valid * (1 - drafter_p) * e.verification.accept_wrong + e.escalation_rate * (1 - step_success(p, k)),
        abs=1e-15,
    )
    assert e.expected_wrong == pytest.approx(steps * e.step_error)
    assert e.p_full == pytest.approx((1 - e.step_error) ** steps, rel=1e-6, abs=1e-300)
    assert e.large_calls_per_step == pytest.approx(e.escalation_rate * e.voting_calls_per_step)
    assert e.drafter_calls_per_step == 1
    if n == 0:
        assert e.escalation_rate == 1 and e.step_error == pytest.approx(e.voting_step_error)


def test_estimate_with_the_verifiers_as_large_model_and_large_first() -> None:
    base = dict(drafter_p=0.9, tpr=0.99, fpr=0.05, verifiers=2, verify_k=2, p=0.998, k=3, steps=1000)
    a = speculation_estimate(**base)
    b = speculation_estimate(**base, verifiers_are_large=True)
    assert b.large_calls_per_step == pytest.approx(a.large_calls_per_step + a.verifier_calls_per_step)
    c = speculation_estimate(**base, large_first=100)
    assert c.drafter_calls_per_step == pytest.approx(0.9)
    assert c.escalation_rate == pytest.approx(0.1 + 0.9 * a.escalation_rate)


def test_smallest_ensemble() -> None:
    args = dict(drafter_p=0.9, tpr=0.99, fpr=0.05, p=0.998, k=3, steps=255)
    ens = smallest_ensemble(**args, verifiers=1, verify_k=1)
    assert ens.unanimous == 3 and ens.verifiers is None and ens.verify_k_at_n is None
    meets = [speculation_estimate(**args, verifiers=n, verify_k=n).p_full >= 0.95 for n in (2, 3)]
    assert meets == [False, True]
    assert smallest_ensemble(**args, verifiers=4, verify_k=1).verify_k_at_n == 3
    assert smallest_ensemble(**args, verifiers=3, verify_k=3).verifiers == 3
    # voting by the large model that misses the target by itself: no ensemble helps
    weak = smallest_ensemble(drafter_p=0.9, tpr=0.99, fpr=0.05, p=0.9, k=1, steps=255)
    assert weak.unanimous is None and weak.verifiers is None
    vote = smallest_ensemble(drafter_p=0.9, mode="vote", verifier_p=0.9, p=0.998, k=3, steps=255)
    assert vote.verify_k_at_n == 4
    assert [
        speculation_estimate(drafter_p=0.9, mode="vote", verifier_p=0.9, verify_k=vk, p=0.998, k=3, steps=255).p_full
        >= 0.95
        for vk in (3, 4)
    ] == [False, True]


# -- the estimate against real simulated runs ----------------------------------------------------------

LARGE = "simulated:p=0.998,seed={}"

RUNS = [
    # (run options, estimate arguments, digits): each expects 20 to 100 wrong steps
    (
        {
            "agents": [LARGE.format(11)],
            "drafter": "simulated:p=0.9,seed=12",
            "verify_k": 1,
            "verifiers": ["simulated:tpr=0.99,fpr=0.02,seed=13"],
        },
        dict(drafter_p=0.9, p=0.998, k=3, tpr=0.99, fpr=0.02, verifiers=1, verify_k=1),
        40_000,
    ),
    (
        {
            "agents": [LARGE.format(21)],
            "drafter": "simulated:p=0.8,seed=22",
            "verify_k": 2,
            "verifiers": [f"simulated:tpr=0.98,fpr=0.1,seed={23 + i}" for i in range(2)],
        },
        dict(drafter_p=0.8, p=0.998, k=3, tpr=0.98, fpr=0.1, verifiers=2, verify_k=2),
        30_000,
    ),
    # a weaker large model, so escalated votes err too, and three verifiers of which two must agree
    (
        {
            "agents": ["simulated:p=0.95,seed=31"],
            "k": 2,
            "drafter": "simulated:p=0.85,seed=32",
            "verify_k": 2,
            "verifiers": [f"simulated:tpr=0.95,fpr=0.15,seed={33 + i}" for i in range(3)],
        },
        dict(drafter_p=0.85, p=0.95, k=2, tpr=0.95, fpr=0.15, verifiers=3, verify_k=2),
        20_000,
    ),
    # vote mode: every wrong answer is the same (spread=1), the worst case the estimate assumes
    (
        {
            "agents": [LARGE.format(41)],
            "drafter": "simulated:p=0.8,seed=42",
            "verify": "vote",
            "verify_k": 3,
            "verifiers": ["simulated:p=0.9,seed=43"],
        },
        dict(drafter_p=0.8, p=0.998, k=3, mode="vote", verifier_p=0.9, verifiers=1, verify_k=3),
        20_000,
    ),
]


def _binomial_interval(n: int, p: float, level: float = 0.999) -> tuple[int, int]:
    """Central interval holding a Binomial(n, p) count with probability at least ``level``."""
    tail = (1 - level) / 2
    lo = None
    cdf = 0.0
    for x in range(n + 1):
        cdf += math.exp(
            math.lgamma(n + 1)
            - math.lgamma(x + 1)
            - math.lgamma(n - x + 1)
            + x * math.log(p)
            + (n - x) * math.log1p(-p)
        )
        if lo is None and cdf > tail:
            lo = x
        if cdf >= 1 - tail:
            return lo or 0, x
    return lo or 0, n


def _vote_moments(p: float, k: int) -> tuple[float, float]:
    """First two moments of the number of votes first-to-ahead-by-k takes (two answers)."""
    live, m1, m2, t = {0: 1.0}, 0.0, 0.0, 0
    while live:
        t += 1
        nxt: dict[int, float] = {}
        for d, pr in live.items():
            for d2, w in ((d + 1, p), (d - 1, 1 - p)):
                if abs(d2) >= k:
                    m1, m2 = m1 + pr * w * t, m2 + pr * w * t * t
                else:
                    nxt[d2] = nxt.get(d2, 0.0) + pr * w
        live = {d: pr for d, pr in nxt.items() if pr > 1e-18}
    return m1, m2


@pytest.mark.parametrize("options,args,digits", RUNS, ids=["score-1", "score-2-of-2", "score-2-of-3", "vote"])
def test_estimate_matches_simulated_runs(tmp_path, options, args, digits) -> None:
    s = start_run("addition", {"digits": digits}, {**options, "seed": digits}, store=tmp_path / "s.sqlite")
    e = speculation_estimate(steps=s.steps, **args)
    assert 20 <= e.expected_wrong <= 100
    lo, hi = _binomial_interval(s.steps, e.step_error)
    assert lo <= s.errors <= hi, f"{s.errors} wrong steps, estimate {e.expected_wrong:.1f} (99.9%: {lo}..{hi})"
    calls = list(s.agent_calls.values())
    large, verifier = calls[0] / s.steps, sum(calls[2:]) / s.steps
    assert calls[1] == s.steps == s.drafted  # one draft per step
    # large-model calls: within four standard deviations of the estimate, which here is a few percent
    m1, m2 = _vote_moments(args["p"], args["k"])
    assert m1 == pytest.approx(expected_samples(args["p"], args["k"]))
    esc = e.escalation_rate
    rel_sd = math.sqrt(esc * m2 - (esc * m1) ** 2) / math.sqrt(s.steps) / (esc * m1)
    assert 4 * rel_sd < 0.06
    assert large == pytest.approx(e.large_calls_per_step, rel=4 * rel_sd)
    assert verifier == pytest.approx(e.verifier_calls_per_step, rel=0.03)
    assert s.escalated / s.steps == pytest.approx(esc, abs=4 * math.sqrt(esc * (1 - esc) / s.steps))


# -- the command line ----------------------------------------------------------------------------------


def test_cli_estimate_prints_speculation_next_to_voting() -> None:
    code, out = _cli(
        "estimate",
        "--steps",
        "4095",
        "--p",
        "0.998",
        "--k",
        "3",
        "--drafter-p",
        "0.9",
        "--tpr",
        "0.99",
        "--fpr",
        "0.05",
    )
    assert code == 0, out
    assert "k_min = 2" in out and "speculative: score, 1 verifier, verify-k 1" in out
    assert "expected wrong steps 20.48" in out and "against 3.0120 voting" in out
    assert "smallest ensemble meeting 0.95: 3 verifiers that all agree (--verifiers 3 --verify-k 3)" in out
    code, out = _cli(
        "estimate",
        "--steps",
        "4095",
        "--p",
        "0.998",
        "--k",
        "3",
        "--drafter-p",
        "0.9",
        "--tpr",
        "0.99",
        "--fpr",
        "0.05",
        "--verifiers",
        "4",
        "--verify-k",
        "4",
        "--json",
    )
    data = json.loads(out)
    spec = data["speculative"]
    assert spec["step_error"] == pytest.approx(0.1 * 0.05**4 + spec["escalation_rate"] * (1 - data["p_step"]))
    assert spec["large_calls_per_step"] == pytest.approx(0.41, abs=0.005)
    assert spec["voting_calls_per_step"] == pytest.approx(data["calls_per_step"])
    assert data["ensemble"] == {"target": 0.95, "verifiers": 4, "unanimous": 3, "verify_k_at_n": 3, "bound": 64}
    code, out = _cli(
        "estimate",
        "--steps",
        "1000",
        "--p",
        "0.998",
        "--drafter-p",
        "0.8",
        "--verify",
        "vote",
        "--verifier-p",
        "0.9",
        "--verify-k",
        "3",
        "--json",
    )
    assert code == 0 and json.loads(out)["speculative"]["verification"]["accept_wrong"] == pytest.approx(
        vote_accept_probability(0.1, 1, 3)
    )
    code, out = _cli("estimate", "--steps", "1000", "--p", "0.998")
    assert code == 0 and "speculative" not in out  # as before without --drafter-p


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tpr", "0.9"], "need --drafter-p"),
        (["--drafter-p", "0.9", "--tpr", "0.9"], "needs both --tpr and --fpr"),
        (["--drafter-p", "0.9", "--verify", "vote"], "needs --verifier-p"),
        (
            ["--drafter-p", "0.9", "--verify", "vote", "--verifier-p", "0.9", "--tpr", "0.9"],
            "vote mode takes --verifier-p",
        ),
        (
            ["--drafter-p", "0.9", "--tpr", "0.9", "--fpr", "0.1", "--verifier-p", "0.9"],
            "--verifier-p is for --verify vote",
        ),
        (["--drafter-p", "0.9", "--tpr", "0.9", "--fpr", "0.1", "--verify-k", "2"], "no draft could ever be accepted"),
        (["--drafter-p", "1.5", "--tpr", "0.9", "--fpr", "0.1"], "--drafter-p is a rate"),
    ],
)
def test_cli_estimate_refuses_inconsistent_options(args: list[str], message: str) -> None:
    code, out = _cli("estimate", "--steps", "100", "--p", "0.99", *args)
    assert code == 2 and message in out, out


def test_cli_calibrate_verifier_measures_configured_rates() -> None:
    code, out = _cli(
        "calibrate",
        "hanoi",
        "--set",
        "disks=12",
        "--verifier",
        "simulated:tpr=0.9,fpr=0.15,seed=5",
        "--samples",
        "2000",
        "--drafter-p",
        "0.9",
        "--json",
    )
    assert code == 0, out
    c = json.loads(out)
    assert c["right"] == c["wrong"] == 1000 and not c["drafts_flagged"]
    for rate, hits, n in ((0.9, c["accepted_right"], c["right"]), (0.15, c["accepted_wrong"], c["wrong"])):
        low, high = wilson_interval(hits, n, z=3.29)  # 99.9%: a fixed seed must not make this flaky
        assert low <= rate <= high
    assert (c["tpr_low"], c["tpr_high"]) == pytest.approx(wilson_interval(c["accepted_right"], c["right"]))
    est = c["estimate"]
    assert est["steps"] == 2**12 - 1 and est["drafter_p"] == 0.9
    assert est["wrong_draft_error"] == pytest.approx(0.1 * c["fpr"])
    assert c["estimate_pessimistic"]["step_error"] > est["step_error"]
    assert c["ensemble_pessimistic"]["unanimous"] >= c["ensemble"]["unanimous"] >= 2


def test_cli_calibrate_verifier_with_a_drafter_and_the_large_model() -> None:
    code, out = _cli(
        "calibrate",
        "hanoi",
        "--set",
        "disks=10",
        "--verifier",
        "simulated:tpr=0.95,fpr=0.1,seed=3",
        "--drafter",
        "simulated:p=0.8,malformed=0.05,seed=4",
        "--agent",
        "simulated:p=0.99,seed=6",
        "--samples",
        "1500",
    )
    assert code == 0, out
    assert "p = 0.99" in out  # the large model's own calibration comes first
    assert "drafts by simulated:p=0.8" in out and "TPR = 0.9" in out and "FPR = 0." in out
    assert "speculative run of 1,023 steps" in out and "smallest ensemble meeting 0.95" in out
    code, out = _cli(
        "calibrate",
        "hanoi",
        "--set",
        "disks=10",
        "--verifier",
        "simulated:tpr=0.95,fpr=0.1,seed=3",
        "--drafter",
        "simulated:p=0.8,malformed=0.05,seed=4",
        "--samples",
        "1500",
        "--json",
    )
    c = json.loads(out)
    flagged = sum(c["drafts_flagged"].values())
    assert c["right"] + c["wrong"] + flagged == 1500 and 0.03 < flagged / 1500 < 0.07
    low, high = wilson_interval(c["right"], c["right"] + c["wrong"], z=3.29)
    assert low <= 0.8 <= high and c["drafter_p"] == pytest.approx(c["right"] / (c["right"] + c["wrong"]))
    assert c["large"] is None and c["large_p"] == 1.0 and any("large model not measured" in n for n in c["notes"])


def test_cli_calibrate_verifier_vote_mode() -> None:
    code, out = _cli(
        "calibrate",
        "addition",
        "--set",
        "digits=2000",
        "--verifier",
        "simulated:p=0.9,seed=3",
        "--verify",
        "vote",
        "--drafter",
        "simulated:p=0.8,seed=4",
        "--samples",
        "1500",
        "--json",
    )
    assert code == 0, out
    c = json.loads(out)
    # a right draft is confirmed when the verifier is right; a wrong one when it makes the same mistake
    for rate, hits, n in ((0.9, c["accepted_right"], c["right"]), (0.1, c["accepted_wrong"], c["wrong"])):
        low, high = wilson_interval(hits, n, z=3.29)
        assert low <= rate <= high
    assert c["estimate"]["verification"]["accept_wrong"] == pytest.approx(
        vote_accept_probability(1 - c["verifier_p"], 1, 1)
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--agent", "simulated:p=0.9", "--drafter", "simulated:p=0.9"], "need --verifier"),
        ([], "give --agent"),
        (["--verifier", "simulated:p=0.9", "--verify", "vote", "--threshold", "5"], "are for --verify score"),
        (["--verifier", "simulated:p=0.9", "--drafter", "simulated:p=0.9", "--drafter-p", "0.9"], "not both"),
        (["--verifier", "simulated:p=0.9", "--verify-k", "2"], "no draft could ever be accepted"),
    ],
)
def test_cli_calibrate_refuses_inconsistent_options(args: list[str], message: str) -> None:
    code, out = _cli("calibrate", "hanoi", "--set", "disks=4", "--samples", "10", *args)
    assert code == 2 and message in out, out


# -- before a run --------------------------------------------------------------------------------------


def _options(verifiers: int, verify_k: int, **more) -> RunOptions:
    return RunOptions(
        agents=["simulated:p=0.998,seed=1"],
        drafter="simulated:p=0.9,seed=2",
        verifiers=[f"simulated:tpr=0.99,fpr=0.05,seed={10 + i}" for i in range(verifiers)],
        verify_k=verify_k,
        **more,
    )


def test_preflight_warns_when_wrong_steps_are_expected() -> None:
    text, wrong = preflight(_options(1, 1), None, 255, workflow="hanoi")
    assert wrong == pytest.approx(255 * 0.1 * 0.05, rel=1e-3)  # about 1.3 wrong steps in 8-disk Hanoi
    first, warning = text.split("\n")
    assert first.startswith("speculation estimate: 255 steps, per-step error 5.0e-03, expected wrong steps 1.3 ")
    assert "large-model calls per step 0.31 against 3.01 voting" in first
    assert (
        warning.startswith("warning: expect 1.3 wrong steps")
        and "3 independent verifiers that must all agree" in warning
    )
    # the fix it names is one that works
    fixed, wrong = preflight(_options(3, 3), None, 255, workflow="hanoi")
    assert "\n" not in fixed and wrong < 0.05


def test_preflight_quiet_for_four_verifiers_that_must_agree() -> None:
    text, wrong = preflight(_options(4, 4), None, 255, workflow="hanoi")
    assert wrong is not None and wrong < 1e-3 and "warning" not in text
    assert "large-model calls per step 0.41 against 3.01 voting" in text
    # four verifiers of which any one may accept are no safer than one
    text, wrong = preflight(_options(4, 1), None, 255, workflow="hanoi")
    assert wrong == pytest.approx(1.275, rel=1e-3) and "`--verify-k 3` with these 4 verifiers" in text


def test_preflight_other_cases() -> None:
    assert preflight(RunOptions(agents=["simulated:p=0.99"]), None, 100) == ("", None)
    text, wrong = preflight(
        RunOptions(agents=["hf:smollm2-135m"], drafter="hf:smollm2-135m", verifiers=["hf:smollm2-135m"]),
        None,
        30,
        workflow="counting",
    )
    assert wrong is None and "are unknown" in text
    assert "maker calibrate counting --verifier hf:smollm2-135m --drafter hf:smollm2-135m" in text
    # what the caller already knows of an agent wins over its spec
    info = {"hf:big": {"p": 0.998, "valid": 1.0}, "hf:small": {"p": 0.9}, "hf:judge": {"tpr": 0.99, "fpr": 0.05}}
    opts = RunOptions(agents=["hf:big"], drafter="hf:small", verifiers=["hf:judge"])
    assert preflight(opts, info, 255)[1] == pytest.approx(preflight(_options(1, 1), None, 255)[1])
    text, wrong = preflight(_options(1, 1), None, None)
    assert wrong is None and "steps unknown, per-step error 5.0e-03" in text
    # a large model whose own voting misses the target: the fix is a larger k
    text, _ = preflight(_options(4, 4, k=1), {"simulated:p=0.998,seed=1": {"p": 0.9}}, 4095)
    assert "use --k" in text


def test_simulated_agents_carry_their_verifier_rates() -> None:
    info = make_agent("simulated:p=0.9,tpr=0.8,fpr=0.2").info
    assert info == {"p": 0.9, "valid": 1.0, "tpr": 0.8, "fpr": 0.2}
    assert known_rates("simulated:p=0.9,tpr=0.8,fpr=0.2") == pytest.approx(info)
    assert known_rates("hf:smollm2-135m") == {} and known_rates("nonsense") == {}
