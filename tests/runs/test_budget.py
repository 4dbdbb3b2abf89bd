"""Usage, cost and budgets through the real command line: what every step was billed, what the run cost at its
agents' prices, a run stopped at its budget and resumed with a larger one, and runs refused before they start."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from maker.agents.prices import KNOWN
from tests._cli import ok, run_maker, step_rows

HANOI = ("run", "hanoi", "--set", "disks=8", "--agent", "simulated:gpt-4.1-mini", "--seed", "3")
LARGE, DRAFTER, VERIFIER = (
    "simulated:gpt-4.1-mini",
    "simulated:gpt-4.1-nano",
    "simulated:gpt-4.1-mini,tpr=0.99,fpr=0.02",
)
SPECULATIVE = ("--agent", LARGE, "--drafter", DRAFTER, "--verifier", VERIFIER)
"""A speculative run's agents: the large model, a drafter and one verifier."""


def _run_json(proc: Any) -> dict[str, Any]:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _record(db: Path, run_id: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        status, stats, config = con.execute(
            "SELECT status, stats, config FROM runs WHERE run_id=?", (run_id,)
        ).fetchone()
    finally:
        con.close()
    return status, json.loads(stats), json.loads(config)


def _hand_cost(db: Path, run_id: str) -> tuple[float, int, int]:
    """The run's cost worked out from its step rows' usage and the prices recorded with it: dollars, prompt
    tokens, completion tokens."""
    _, stats, _ = _record(db, run_id)
    prices = stats["prices"]
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT usage FROM steps WHERE run=(SELECT id FROM runs WHERE run_id=?) ORDER BY step", (run_id,)
        ).fetchall()
    finally:
        con.close()
    cost, prompt, completion = 0.0, 0, 0
    for (usage,) in rows:
        for agent, p, c, o, _est in json.loads(usage):
            price = prices[agent]
            cost += ((p - c) * price[0] + c * price[1] + o * price[2]) / 1e6
            prompt += p
            completion += o
    return cost, prompt, completion


def test_every_step_records_its_bill_and_the_run_its_cost(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    summary = _run_json(ok(run_maker(*HANOI, "--run-id", "r", "--store", db, "--json", tmp=tmp_path)))
    cost, prompt, completion = _hand_cost(db, "r")
    assert summary["prices"] == {"agent 1: simulated:gpt-4.1-mini": KNOWN["gpt-4.1-mini"].as_list()}
    assert summary["cost"] == pytest.approx(cost, rel=1e-9)
    assert (summary["prompt_tokens"], summary["completion_tokens"]) == (prompt, completion)
    assert summary["cost_estimated"] is True  # a simulated model reports no usage: the bill is estimated
    # every call's completion is billed, spare samples too: at least the voted samples' tokens
    assert completion >= summary["tokens"] > 0
    stats = json.loads(ok(run_maker("trace", "stats", "r", "--store", db, "--json", tmp=tmp_path)).stdout)
    assert stats["cost"]["total"] == pytest.approx(cost, rel=1e-6)
    assert stats["cost"]["by_agent"][0]["price"] == KNOWN["gpt-4.1-mini"].as_list()
    shown = ok(run_maker("runs", "--store", db, "--json", tmp=tmp_path)).stdout
    assert json.loads(shown)[0]["cost"] == pytest.approx(cost, rel=1e-9)
    text = ok(run_maker("trace", "stats", "r", "--store", db, tmp=tmp_path)).stdout
    assert "cost              $" in text and "estimated usage" in text


def test_a_run_stopped_at_its_budget_resumes_with_a_larger_one_to_the_same_trace(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    ok(run_maker(*HANOI, "--run-id", "straight", "--store", db, tmp=tmp_path))
    full_cost = _hand_cost(db, "straight")[0]
    budget = round(full_cost / 3, 4)
    stopped = run_maker(
        *HANOI,
        "--run-id",
        "b",
        "--store",
        db,
        "--max-cost",
        budget,
        "--over-budget",
        "--commit-every",
        "1",
        tmp=tmp_path,
    )
    assert stopped.returncode == 3, stopped.stderr
    assert "stopped: run b stopped at step" in stopped.stderr and "--max-cost MORE" in stopped.stderr
    status, stats, _ = _record(db, "b")
    assert status == "stopped"
    spent = _hand_cost(db, "b")[0]
    # it stops at the first step whose bill reaches the budget: over it, by less than one step's cost
    assert budget <= spent < budget + full_cost / 100
    assert stats["cost"] == pytest.approx(spent, rel=1e-9)
    # the same budget again: nothing more is spent
    again = run_maker("resume", "b", "--store", db, tmp=tmp_path)
    assert again.returncode == 3 and _hand_cost(db, "b")[0] == spent
    ok(run_maker("resume", "b", "--store", db, "--max-cost", round(full_cost * 2, 4), tmp=tmp_path))
    assert step_rows(db, "b") == step_rows(db, "straight")
    assert _record(db, "b")[1]["cost"] == pytest.approx(full_cost, rel=1e-9)


def test_a_token_budget_stops_the_run_too(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    proc = run_maker(*HANOI, "--run-id", "t", "--store", db, "--token-budget", 50_000, "--over-budget", tmp=tmp_path)
    assert proc.returncode == 3 and "tokens of the 50,000-token budget" in proc.stderr
    _, prompt, completion = _hand_cost(db, "t")
    assert 50_000 <= prompt + completion < 50_000 + 5_000  # one step is under 2,000 tokens


def test_a_run_expected_to_exceed_its_budget_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    proc = run_maker(*HANOI, "--store", db, "--max-cost", "0.01", tmp=tmp_path)
    assert proc.returncode == 2
    assert "expected to spend more than its budget" in proc.stderr and "--over-budget" in proc.stderr
    assert not db.exists()
    # a budget in money needs every agent priced: a local model has no price unless one is given
    proc = run_maker(
        "run",
        "hanoi",
        "--set",
        "disks=3",
        "--agent",
        "simulated:p=0.99",
        "--store",
        db,
        "--max-cost",
        "1",
        tmp=tmp_path,
    )
    assert proc.returncode == 2 and "has none: give price=IN/CACHED/OUT" in proc.stderr
    assert not db.exists()
    ok(
        run_maker(
            "run",
            "hanoi",
            "--set",
            "disks=3",
            "--agent",
            "simulated:p=0.99,price=1/0.5/2",
            "--store",
            db,
            "--max-cost",
            "1",
            tmp=tmp_path,
        )
    )


def test_a_prices_file_prices_the_run_and_is_recorded_with_it(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    prices = tmp_path / "prices.toml"
    prices.write_text('"gpt-4.1-mini" = {input = 1.0, cached = 0.5, output = 2.0}\n')
    summary = _run_json(
        ok(run_maker(*HANOI, "--run-id", "p", "--prices", prices, "--store", db, "--json", tmp=tmp_path))
    )
    assert summary["prices"] == {"agent 1: simulated:gpt-4.1-mini": [1.0, 0.5, 2.0]}
    _, stats, config = _record(db, "p")
    assert config["prices"] == {"gpt-4.1-mini": [1.0, 0.5, 2.0]}
    assert summary["cost"] == pytest.approx(
        (summary["prompt_tokens"] * 1.0 + summary["completion_tokens"] * 2.0) / 1e6, rel=1e-9
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"m": "0.4/x"}')
    proc = run_maker(*HANOI, "--prices", bad, "--store", db, tmp=tmp_path)
    assert proc.returncode == 2 and "prices file" in proc.stderr and "IN/CACHED/OUT" in proc.stderr


def test_the_estimate_matches_a_simulated_runs_recorded_cost(tmp_path: Path) -> None:
    """``maker estimate`` at the preset's p and tokens, and the run's first prompt, against what a 4,095-step
    simulated run recorded: within 2% (the simulated tokens a call vary by a quarter either way around the mean,
    so the mean over 12,000 calls is within a fraction of a percent)."""
    from maker.agents import make_agent

    db = tmp_path / "s.sqlite"
    summary = _run_json(
        ok(
            run_maker(
                "run",
                "hanoi",
                "--set",
                "disks=12",
                "--agent",
                "simulated:gpt-4.1-mini",
                "--store",
                db,
                "--json",
                tmp=tmp_path,
            )
        )
    )
    agent = make_agent("simulated:gpt-4.1-mini")
    prompt = summary["prompt_tokens"] / 4095  # about one request a step
    out = json.loads(
        ok(
            run_maker(
                "estimate",
                "--steps",
                4095,
                "--p",
                agent.info["p"],
                "--valid",
                agent.info["valid"],
                "--k",
                3,
                "--model",
                "gpt-4.1-mini",
                "--prompt-tokens",
                round(prompt, 1),
                "--completion-tokens",
                538,
                "--json",
                tmp=tmp_path,
            )
        ).stdout
    )
    assert out["cost"]["cost"] == pytest.approx(summary["cost"], rel=0.02)


def test_a_speculative_runs_cost_by_role_and_its_dropped_steps(tmp_path: Path) -> None:
    """Drafter, verifier and large model are each billed at their own price; what the window drafted ahead and
    dropped is counted apart, and the run's cost is the two together."""
    db = tmp_path / "s.sqlite"
    summary = _run_json(
        ok(
            run_maker(
                "run",
                "hanoi",
                "--set",
                "disks=8",
                *SPECULATIVE,
                "--store",
                db,
                "--run-id",
                "s",
                "--json",
                tmp=tmp_path,
            )
        )
    )
    stats = json.loads(ok(run_maker("trace", "stats", "s", "--store", db, "--json", tmp=tmp_path)).stdout)["cost"]
    assert set(stats["by_role"]) == {"voting", "drafter", "verifier"}
    assert all(v is not None and v > 0 for v in stats["by_role"].values())
    committed = _hand_cost(db, "s")[0]
    assert stats["committed"] == pytest.approx(committed, rel=1e-6)
    assert summary["cost"] == pytest.approx(committed + (summary["wasted_cost"] or 0.0), rel=1e-6)
    assert stats["total"] == pytest.approx(summary["cost"], rel=1e-6)
    drafter = next(a for a in stats["by_agent"] if a["role"] == "drafter")
    assert drafter["price"] == KNOWN["gpt-4.1-nano"].as_list()


def test_a_speculative_runs_estimate_by_role_against_its_recorded_cost(tmp_path: Path) -> None:
    """The budget check's estimate of a speculative run (the drafter's drafts, the verifier's ratings, the large
    model's votes on escalated steps, at the agents' known rates) against what the run's committed steps
    recorded: within 10%. The drafter here, gpt-4.1-nano, writes 842 tokens a call on average, past the
    750-token limit more often than not, so most drafts are red-flagged and escalate: the estimate has to
    know that too."""
    from maker.planning import budget_check
    from maker.runs import RunOptions, resolve_workflow

    options = RunOptions(agents=[LARGE], drafter=DRAFTER, verifiers=[VERIFIER], max_cost=100)
    check = budget_check(options, resolve_workflow("hanoi"), {"disks": 10})
    assert check.estimate is not None and set(check.by_role) == {"large", "drafter", "verifier"}
    db = tmp_path / "s.sqlite"
    ok(
        run_maker(
            "run",
            "hanoi",
            "--set",
            "disks=10",
            *SPECULATIVE,
            "--store",
            db,
            "--run-id",
            "s",
            tmp=tmp_path,
        )
    )
    assert check.estimate.cost == pytest.approx(_hand_cost(db, "s")[0], rel=0.10)
