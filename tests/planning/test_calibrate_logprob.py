"""``maker calibrate --verifier logprob``: TPR and FPR over a grid of thresholds, and the one recommended."""

from __future__ import annotations

import json

import pytest

from maker.agents import SimulatedConfig
from maker.errors import UserError
from maker.planning import calibrate_logprob
from maker.planning._calibrate_logprob import auc
from tests._cli import run_maker

DRAFTER = "simulated:p=0.8,seed=2,lp_sep=2.0"


def test_calibration_measures_the_stated_rates_and_recommends_a_threshold() -> None:
    c = calibrate_logprob("hanoi", {"disks": 10}, DRAFTER, samples=1000, agent="simulated:p=0.99,seed=1")
    cfg = SimulatedConfig.from_options(None, {"lp_sep": 2.0})
    assert c.right + c.wrong == 1000 and c.auc is not None and abs(c.auc - cfg.lp_auc) < 0.05
    for r in c.rows:
        tpr, fpr = cfg.min_logprob_rates(r.threshold)
        assert r.tpr_low <= tpr <= r.tpr_high or abs(r.tpr - tpr) < 0.05
        assert r.fpr_low <= fpr <= r.fpr_high or abs(r.fpr - fpr) < 0.05
    assert c.recommended is not None
    pick = next(r for r in c.rows if r.threshold == c.recommended)
    assert pick.estimate is not None and pick.estimate.p_full >= c.target
    # no threshold that also meets the target costs fewer large-model calls
    assert all(
        r.estimate.large_calls_per_step >= pick.estimate.large_calls_per_step
        for r in c.rows
        if r.estimate is not None and r.estimate.p_full >= c.target
    )


def test_the_command_prints_the_grid_and_the_recommendation(tmp_path) -> None:
    r = run_maker(
        "calibrate", "hanoi", "--set", "disks=8", "--verifier", "logprob", "--drafter", DRAFTER,
        "--samples", "300", "--json", tmp=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["stat"] == "min" and len(out["rows"]) > 10 and "recommended" in out
    r = run_maker("calibrate", "hanoi", "--verifier", "logprob", "--samples", "10", tmp=tmp_path)
    assert r.returncode == 2 and "--drafter" in r.stderr


def test_auc() -> None:
    assert auc([1, 2, 3], [0, -1]) == 1.0
    assert auc([0, 0], [0, 0]) == 0.5
    assert auc([], [1]) is None


def test_a_drafter_without_logprobs_is_refused(monkeypatch) -> None:
    import maker.planning._calibrate_logprob as mod

    monkeypatch.setattr(mod, "returns_logprobs", lambda backend: False)
    with pytest.raises(UserError, match="log-probabilities"):
        calibrate_logprob("hanoi", {"disks": 4}, DRAFTER, samples=10)
