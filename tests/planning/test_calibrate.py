"""`maker calibrate` measures p on random steps and recommends k (simulated agents: p is known)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from maker.cli import main
from maker.planning import calibrate
from maker.stats import expected_calls, k_min, wilson_interval


@pytest.mark.parametrize("p", [0.7, 0.9, 0.98])
def test_measured_p_brackets_the_true_rate(p: float) -> None:
    c = calibrate("addition", {"digits": 3000}, f"simulated:p={p},seed=5", samples=1500, batch=64)
    assert c.samples == 1500 and c.valid == 1500 and c.steps_in_task == 3000
    low, high = wilson_interval(c.correct, c.valid, z=3.29)  # 99.9%: a fixed seed must not make this flaky
    assert low <= p <= high
    assert (c.p_low, c.p_high) == wilson_interval(c.correct, c.valid)
    assert c.k == k_min(3000, c.p, 0.95)
    assert c.calls_per_step == pytest.approx(expected_calls(c.p, c.k, c.valid_rate))


def test_red_flags_and_tokens_are_reported() -> None:
    c = calibrate("hanoi", {"disks": 10}, "simulated:p=0.95,malformed=0.2,overlong=0.1,tokens=300", samples=1000)
    assert 0.25 < 1 - c.valid_rate < 0.35
    assert set(c.red_flags) <= {"format", "too_long", "schema"} and c.red_flags.get("too_long", 0) > 50
    assert sum(c.red_flags.values()) == c.samples - c.valid
    assert 200 < c.tokens_per_call < 500


def test_a_formulation_below_one_half_is_called_out() -> None:
    c = calibrate("addition", {"digits": 200}, "simulated:p=0.3,spread=1", samples=300)
    assert c.p is not None and c.p < 0.5 and c.k is None
    assert "cannot converge" in (c.note or "")


def test_same_seed_same_measurement() -> None:
    a = calibrate("hanoi", {"disks": 12}, "simulated:p=0.8", samples=200, seed=3)
    b = calibrate("hanoi", {"disks": 12}, "simulated:p=0.8", samples=200, seed=3)
    c = calibrate("hanoi", {"disks": 12}, "simulated:p=0.8", samples=200, seed=4)
    assert a.correct == b.correct and a.model_dump(exclude={"wall_s"}) == b.model_dump(exclude={"wall_s"})
    assert (a.correct, a.red_flags) != (c.correct, c.red_flags) or a.p != c.p


def test_cli_calibrate_json() -> None:
    result = CliRunner().invoke(
        main,
        ["calibrate", "hanoi", "--set", "disks=16", "--agent", "simulated:gpt-4.1-mini", "--samples", "500", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["steps_in_task"] == 2**16 - 1 and data["samples"] == 500
    # the measurement itself, the same as calibrate() makes with the command's defaults
    same = calibrate("hanoi", {"disks": 16}, "simulated:gpt-4.1-mini", samples=500).model_dump(mode="json")
    assert {k: v for k, v in data.items() if k != "wall_s"} == {k: v for k, v in same.items() if k != "wall_s"}
    low, high = wilson_interval(data["correct"], data["valid"], z=3.29)
    assert low <= 1 - 0.0022 <= high  # the preset's rate
    assert (data["p_low"], data["p_high"]) == pytest.approx(wilson_interval(data["correct"], data["valid"]))
    assert data["valid"] + sum(data["red_flags"].values()) == 500
    assert data["k"] == k_min(2**16 - 1, data["p"], 0.95)
    assert data["calls_per_step"] == pytest.approx(expected_calls(data["p"], data["k"], data["valid_rate"]))


def test_cli_calibrate_needs_an_oracle() -> None:
    result = CliRunner().invoke(main, ["calibrate", "nosuch", "--agent", "simulated:p=0.9"])
    assert result.exit_code == 2 and "unknown workflow" in result.output


def test_a_tree_workflow_is_measured_role_by_role() -> None:
    """solve asks several microsteps, some of them in fan-outs: each role's p is measured apart, and the agent's
    per-role rates show through (decompose at 0.6, everything else at 0.97)."""
    c = calibrate(
        "solve",
        {"task": "Multiply 8479902459 by 2051802512"},
        "simulated:p=0.97,p_decompose=0.6,seed=2,overlong=0.2,tokens=100",
        samples=1200,
        max_tokens=150,
    )
    by = c.by_microstep
    assert set(by) == {"classify", "decompose", "solve", "compose"}
    assert c.steps_in_task == 42  # the reference tree: 17 nodes (8 split, 9 solved) -> 17 + 8 + 9 + 8 voted steps
    assert sum(m["samples"] for m in by.values()) == 1200
    assert sum(m["valid"] for m in by.values()) == c.valid and sum(m["correct"] for m in by.values()) == c.correct
    lo, hi = wilson_interval(by["decompose"]["correct"], by["decompose"]["valid"], z=3.29)
    assert lo <= 0.6 <= hi
    lo, hi = wilson_interval(by["classify"]["correct"], by["classify"]["valid"], z=3.29)
    assert lo <= 0.97 <= hi
    # max_tokens=150 instead of the microsteps' 750 and 4,096: the simulated over-long answers (past the limit)
    # and nothing else are red-flagged as too long
    assert set(c.red_flags) == {"too_long"} and 0.15 < 1 - c.valid_rate < 0.25
