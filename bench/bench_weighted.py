"""Benchmark: a mixed ensemble's votes weighted by ln(p/(1-p)) against counted equally, at the same error target.

One agent at p = 0.99 and three at p = 0.8 vote on every step (``--ensemble``, round-robin). For each way of counting,
k is the smallest that :func:`maker.planning.ensemble_estimate` says meets the target for a task of ``--task-steps``
steps; both then run the same addition task of ``--steps`` digit steps (same seed), and the measured calls, cost and
errors per step are printed next to the estimate's. Cost model: a call of the p = 0.99 agent costs 10, of a p = 0.8
agent 1 (a strong and a weak model). A third, looser setting (``--loose``: k 1 weighted, 2 equal) makes errors
frequent enough to measure against the estimate in a short run.

    python bench/bench_weighted.py [--steps 20000] [--task-steps 1048575] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.planning import ensemble_estimate
from maker.runs import start_run
from maker.stats import ensemble_step, wilson_interval
from maker.voting import log_odds, relative_weights

PS = [0.99, 0.8, 0.8, 0.8]
AGENTS = ["simulated:p=0.99", "simulated:p=0.8,seed=1", "simulated:p=0.8,seed=2", "simulated:p=0.8,seed=3"]
COST = [10.0, 1.0, 1.0, 1.0]


def _run(store: Path, steps: int, weights: str, k: int) -> dict[str, Any]:
    opts = {"agents": AGENTS, "ensemble": True, "weights": weights, "k": k, "seed": 11}
    s = start_run("addition", {"digits": steps}, opts, store=store / f"{weights}-{k}.db")
    w = relative_weights([log_odds(p) for p in PS]) if weights == "p" else (1.0,) * len(PS)
    est = ensemble_step(PS, w, k)
    calls = [s.agent_calls.get(f"agent {i + 1}: {a}", 0) for i, a in enumerate(AGENTS)]
    errors = s.errors or 0
    low, high = wilson_interval(errors, s.steps)
    return {
        "k": k,
        "steps": s.steps,
        "calls_per_step": round(s.calls_per_step, 4),
        "calls_per_step_estimate": round(est.calls, 4),
        "cost_per_step": round(sum(c * n for c, n in zip(COST, calls, strict=True)) / s.steps, 4),
        "cost_per_step_estimate": round(sum(c * n for c, n in zip(COST, est.calls_by_agent, strict=True)), 4),
        "errors": errors,
        "error_rate": errors / s.steps,
        "error_rate_95": [low, high],
        "error_estimate": est.error,
        "wall_s": s.wall_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--task-steps", type=int, default=1_048_575)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    plan = ensemble_estimate(args.task_steps, PS, target=args.target, costs=COST)
    figures: dict[str, Any] = {"agents": AGENTS, "cost_per_call": COST, "task_steps": args.task_steps}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        for label, weights, k in (
            ("weighted", "p", plan.weighted.k),
            ("equal", "equal", plan.equal.k),
            ("weighted_loose", "p", 1),
            ("equal_loose", "equal", 2),
        ):
            figures[label] = _run(store, args.steps, weights, k)
    w, e = figures["weighted"], figures["equal"]
    figures["first_alone_estimate"] = {
        "k": plan.first_alone.k,
        "calls_per_step": round(plan.first_alone.calls_per_step, 4),
        "cost_per_step": round(plan.first_alone.cost_per_step or 0.0, 4),
    }
    figures["equal_over_weighted"] = {
        "calls_per_step": round(e["calls_per_step"] / w["calls_per_step"], 3),
        "cost_per_step": round(e["cost_per_step"] / w["cost_per_step"], 3),
        "estimate_calls_per_step": round(e["calls_per_step_estimate"] / w["calls_per_step_estimate"], 3),
        "estimate_cost_per_step": round(e["cost_per_step_estimate"] / w["cost_per_step_estimate"], 3),
    }
    emit(figures, args.json)


if __name__ == "__main__":
    main()
