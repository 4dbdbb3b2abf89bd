"""``maker estimate`` for a mixed ensemble (``--agent-p``) and for a log-probability check (``--verify logprob``),
through the command line."""

from __future__ import annotations

import json

import pytest

from maker.planning import speculation_estimate
from maker.stats import k_min
from tests._cli import invoke


def test_a_mixed_ensemble_weighted_and_equal_side_by_side() -> None:
    code, out = invoke("estimate", "--steps", "1048575", *[f"--agent-p={p}" for p in (0.99, 0.8, 0.8, 0.8)], "--json")
    assert code == 0, out
    d = json.loads(out)
    w, e, alone = d["weighted"], d["equal"], d["first_alone"]
    assert (w["k_min"], e["k_min"]) == (4, 8)
    assert alone["k_min"] == k_min(1048575, 0.99)  # the first agent alone is plain voting's formula
    assert w["p_full"] >= 0.95 and e["p_full"] >= 0.95
    assert w["calls_per_step"] < e["calls_per_step"]  # weighting needs fewer calls at the same target


def test_a_log_probability_check_has_no_verifier_calls() -> None:
    args = ["estimate", "--steps", "16383", "--p", "0.998", "--k", "3", "--drafter-p", "0.9", "--verify", "logprob"]
    code, out = invoke(*args, "--tpr", "0.9", "--fpr", "0.02", "--json")
    assert code == 0, out
    s = json.loads(out)["speculative"]
    assert s["mode"] == "logprob" and s["verifier_calls_per_step"] == 0
    assert s["accept_rate"] == pytest.approx(0.9 * 0.9 + 0.1 * 0.02)
    want = speculation_estimate(drafter_p=0.9, p=0.998, k=3, steps=16383, mode="logprob", tpr=0.9, fpr=0.02)
    assert s["step_error"] == pytest.approx(want.step_error)
    code, out = invoke(*args, "--tpr", "0.9")
    assert code == 2 and "needs --tpr and --fpr" in out
    code, out = invoke(*args, "--tpr", "0.9", "--fpr", "0.1", "--verifiers", "2")
    assert code == 2 and "has no verifiers: leave out --verifiers" in out
