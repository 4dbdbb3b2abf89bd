"""Weighted votes (a mixed ensemble, ``--ensemble``): the tally's rules, the exact estimate and real runs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maker.engine._ensemble import WeightedTally
from maker.errors import UserError
from maker.planning import ensemble_estimate
from maker.runs import start_run
from maker.stats import ensemble_step, expected_samples, step_success, wilson_interval
from maker.store import Store
from maker.trace import step_records, trace_stats
from maker.voting import (
    Voting,
    is_decided,
    log_odds,
    relative_weights,
    samples_needed,
    weighted_decided,
    weighted_needed,
)

MIXED = ["simulated:p=0.99", "simulated:p=0.8,seed=1", "simulated:p=0.8,seed=2", "simulated:p=0.8,seed=3"]


@given(st.integers(1, 20), st.integers(0, 60), st.integers(0, 60), st.integers(1, 6))
def test_equal_weights_are_plain_ahead_by_k(k: int, a: int, b: int, n: int) -> None:
    top, second = max(a, b), min(a, b)
    v = Voting(k=k)
    assert weighted_decided(v, float(top), float(second)) == is_decided(v, top, second)
    assert weighted_needed(v, float(top), float(second), [1.0] * n) == samples_needed(v, top, second)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.6, 0.999), st.integers(1, 40), st.integers(1, 5))
def test_equal_p_equal_weights_give_the_plain_step(p: float, k: int, n: int) -> None:
    w = relative_weights([log_odds(p)] * n)
    assert w == (1.0,) * n  # equal p gives weights of exactly 1: the margin is a count
    if k <= 8:
        est = ensemble_step([p] * n, w, k)
        assert est.error == pytest.approx(1 - step_success(p, k), rel=1e-6, abs=1e-15)
        assert est.calls == pytest.approx(expected_samples(p, k), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 4))
def test_batched_rounds_decide_as_one_at_a_time(seed: int, k: int) -> None:
    """Asking for the fewest samples that could decide, then checking, draws exactly what checking after every
    sample draws, and decides the same way (deterministic by seed)."""
    weights = relative_weights([log_odds(p) for p in (0.99, 0.8, 0.8, 0.8)])
    rng = random.Random(seed)
    votes = [rng.choice("aab") for _ in range(400)]  # sample i's vote
    v = Voting(k=k)
    one = WeightedTally(weights)
    i = 0
    while not one.decided(v):
        one.add(i % 4, votes[i], votes[i])
        i += 1
    batched = WeightedTally(weights)
    j = 0
    while not batched.decided(v):
        need = batched.needed(v, j)
        for m in range(j, j + need):
            batched.add(m % 4, votes[m], votes[m])
        j += need
    assert (j, batched.leader(), batched.votes()) == (i, one.leader(), one.votes())


def test_the_estimate_prefers_weights_for_a_strong_and_weak_mix() -> None:
    est = ensemble_estimate(1023, [0.99, 0.8, 0.8, 0.8])
    assert est.weighted.k == 2 and est.equal.k == 5
    assert est.weighted.calls_per_step < est.equal.calls_per_step
    assert est.weighted.step_error <= -math.expm1(math.log(0.95) / 1023)


def _summary(tmp_path: Path, name: str, agents: list[str], k: int, **extra: object) -> object:
    opts = {"agents": agents, "ensemble": True, "k": k, "seed": 7, **extra}
    return start_run("hanoi", {"disks": 8}, opts, store=tmp_path / f"{name}.db")


def test_mixed_ensemble_solves_hanoi_without_error_and_deterministically(tmp_path: Path) -> None:
    a = _summary(tmp_path, "a", MIXED, 2)
    b = _summary(tmp_path, "b", MIXED, 2)
    assert a.status == "done" and a.errors == 0 and a.solved  # type: ignore[attr-defined]
    assert len(a.agent_calls) == 4 and all(n > 0 for n in a.agent_calls.values())  # type: ignore[attr-defined]
    with Store.open(tmp_path / "a.db") as sa, Store.open(tmp_path / "b.db") as sb:
        ra = list(step_records(sa, sa.run(a.run_id)))  # type: ignore[attr-defined]
        rb = list(step_records(sb, sb.run(b.run_id)))  # type: ignore[attr-defined]
    assert [(r["votes"], r["samples"], r["weighted"]) for r in ra] == [
        (r["votes"], r["samples"], r["weighted"]) for r in rb
    ]
    assert all(r["weighted"]["margin"] >= 2 - 1e-6 and r["speculation"] is None for r in ra)
    with Store.open(tmp_path / "a.db") as sa:  # one agent's expected-calls formula is not the ensemble's: none shown
        stats = trace_stats(sa, sa.run(a.run_id))  # type: ignore[attr-defined]
    assert stats.calls_per_step_theory is None and stats.calls == sum(a.agent_calls.values())  # type: ignore[attr-defined]


def test_an_agent_without_p_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no known p"):
        _summary(tmp_path, "c", ["simulated:p=0.99", "openai:m@http://127.0.0.1:9/v1"], 2)
    with pytest.raises(UserError, match="ensemble"):
        start_run("hanoi", {"disks": 3}, {"agents": MIXED, "weights": "equal"}, store=tmp_path / "d.db")


def test_estimate_against_simulation(tmp_path: Path) -> None:
    """Errors and calls per step measured over 3,000 addition steps of simulated agents, against the exact
    estimate, each within a 99.9% interval."""
    agents = ["simulated:p=0.9", "simulated:p=0.7,seed=1", "simulated:p=0.7,seed=2", "simulated:p=0.7,seed=3"]
    for weights, k in (("p", 1), ("p", 2), ("equal", 3)):
        s = start_run(
            "addition",
            {"digits": 3000},
            {"agents": agents, "ensemble": True, "weights": weights, "k": k, "seed": 3},
            store=tmp_path / f"{weights}{k}.db",
        )
        ps = [0.9, 0.7, 0.7, 0.7]
        w = relative_weights([log_odds(p) for p in ps]) if weights == "p" else (1.0,) * 4
        est = ensemble_step(ps, w, k)
        low, high = wilson_interval(s.errors or 0, s.steps, z=3.29)
        assert low <= est.error <= high, (weights, k, s.errors, est.error)
        with Store.open(tmp_path / f"{weights}{k}.db") as st_:
            n = [r["samples"] for r in step_records(st_, st_.run(s.run_id))]
        mean = sum(n) / len(n)
        sd = math.sqrt(sum((x - mean) ** 2 for x in n) / (len(n) - 1))
        assert abs(mean - est.calls) <= 3.29 * sd / math.sqrt(len(n)), (weights, k, mean, est.calls)
