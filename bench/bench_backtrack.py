"""Benchmark: backtracking against none, in deliberately weak configurations where voting lets wrong steps through.

Two workloads, each run with and without ``--backtracks`` on the same seeds, side by side:

* **addition**: long addition whose partial sum is checked modulo 99 (casting out nines and elevens) every
  ``--every`` columns (the workflow below). Weak agents (``simulated:p=0.7``) vote first-to-ahead-by-2, so wrong
  digits get through at a rate measured here. Printed: the wrong-step rate that voting lets through, the runs that
  end with a wrong sum (or fail), errors left in the final sums, calls and dollars per digit. What the check cannot
  see (errors that cancel modulo 99 within one stretch of columns) gets through.
* **solve**: the recursive solver on the MAKER authors' 5x5-digit multiplications
  (``../shared/data/maker-official/bench_long_mul_5_5__200.jsonl``), agents ``simulated:p=0.8`` at k = 1. The
  solver checks every composed product by casting out nines and elevens, and a failed node is decomposed again.
  Printed: wrong final answers, calls and dollars per problem.

Each also runs without backtracking at a larger k (4 for addition, 3 for solve), for what more voting buys at a cost
of the same order.

Dollars are at one price for every call, ``--price`` dollars per million tokens in and out (simulated usage).

    python bench/bench_backtrack.py [--runs 20] [--digits 200] [--problems 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.errors import RunError
from maker.runs import start_run
from maker.stats import wilson_interval
from maker.store import Store
from maker.workflows._reference import recognize, same_answer
from maker.workflows.addition import Addition, AdditionParams, AdditionState, add_decimal

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "maker-official" / "bench_long_mul_5_5__200.jsonl"


class NinesParams(AdditionParams):
    every: int = 5


class NinesState(AdditionState):
    every: int = 5


class NinesAddition(Addition, name="nines-addition", version=1):
    """Long addition whose partial sums are checked modulo 99 (casting out nines and elevens) every ``every``
    columns."""

    Params = NinesParams
    State = NinesState

    def start(self, params: NinesParams) -> NinesState:  # type: ignore[override]
        return NinesState(**super().start(params).model_dump(), every=params.every)

    def check(self, state: NinesState) -> bool | str | None:  # type: ignore[override]
        if state.pos == 0 or (state.pos % state.every and state.pos < len(state.a)):
            return None
        n = state.pos
        want = (int(state.a[-n:]) + int(state.b[-n:])) % 99
        got = (int(state.out[::-1]) + state.carry * pow(10, n, 99)) % 99
        return True if want == got else f"columns 0..{n - 1} add up to {got} mod 99, their digits to {want}"


def _price(price: float) -> str:
    return f"price={price}/{price}/{price}"


def _addition(db: Path, args: argparse.Namespace, backtracks: int, k: int = 2) -> dict[str, Any]:
    wrong_runs = failed = errors = steps = calls = branches = 0
    cost = 0.0
    t0 = time.perf_counter()
    for i in range(args.runs):
        agent = f"simulated:p={args.p},seed={i},{_price(args.price)}"
        options = {"agents": [agent], "k": k, "seed": i, "backtracks": backtracks}
        params = {"digits": args.digits, "seed": 1000 + i, "every": args.every}
        try:
            s = start_run(NinesAddition, params, options, store=db)
        except RunError:
            failed += 1
            with Store.open(db) as st:
                rec = max(st.runs(), key=lambda r: r.created)
            calls += rec.calls
            cost += (rec.stats or {}).get("cost") or 0.0
            continue
        assert s.result is not None
        right = add_decimal(s.result["a"], s.result["b"]).lstrip("0")
        wrong_runs += s.result["sum"].lstrip("0") != right
        errors += s.errors or 0
        steps += s.steps
        calls += s.calls
        cost += s.cost or 0.0
        branches += s.branches
    runs = args.runs
    low, high = wilson_interval(wrong_runs + failed, runs)
    return {
        "k": k,
        "backtracks": backtracks,
        "runs_wrong_sum": wrong_runs,
        "runs_failed_undecided": failed,
        "runs_not_right": wrong_runs + failed,
        "runs_not_right_95": [round(low, 3), round(high, 3)],
        "errors_in_final_sums": errors,
        "steps_of_finished_runs": steps,
        "branches": branches,
        "calls_per_digit": round(calls / (runs * args.digits), 3),
        "dollars_per_digit": round(cost / (runs * args.digits), 8),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def _solve(
    db: Path, args: argparse.Namespace, backtracks: int, problems: list[dict[str, Any]], k: int = 1
) -> dict[str, Any]:
    wrong = failed = calls = branches = 0
    cost = 0.0
    t0 = time.perf_counter()
    for i, prob in enumerate(problems):
        task = prob["question"].replace("\n", " ")
        assert recognize(task) is not None, task
        agent = f"simulated:p={args.solve_p},seed={i},{_price(args.price)}"
        options = {"agents": [agent], "k": k, "seed": i, "backtracks": backtracks}
        try:
            s = start_run("solve", {"task": task}, options, store=db)
        except RunError:
            failed += 1
            continue
        assert s.result is not None
        wrong += not same_answer(prob["answer"], s.result["answer"] or "")
        calls += s.calls
        cost += s.cost or 0.0
        branches += s.branches
    n = len(problems)
    low, high = wilson_interval(wrong + failed, n)
    return {
        "k": k,
        "backtracks": backtracks,
        "problems": n,
        "wrong_answers": wrong,
        "failed": failed,
        "not_right_95": [round(low, 3), round(high, 3)],
        "branches": branches,
        "calls_per_problem": round(calls / n, 2),
        "dollars_per_problem": round(cost / n, 8),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="addition runs per setting")
    ap.add_argument("--digits", type=int, default=200)
    ap.add_argument("--every", type=int, default=5, help="columns between two checks")
    ap.add_argument("--p", type=float, default=0.7, help="the addition agents' per-sample correct rate")
    ap.add_argument("--backtracks", type=int, default=500, help="the addition runs' backtrack limit")
    ap.add_argument("--problems", type=int, default=40, help="multiplications solved per setting")
    ap.add_argument("--solve-p", type=float, default=0.8, help="the solver agents' per-sample correct rate")
    ap.add_argument("--solve-backtracks", type=int, default=20)
    ap.add_argument("--price", type=float, default=0.4, help="dollars per million tokens, in and out")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # not each backtrack
    problems = [json.loads(line) for line in DATA.read_text().splitlines()[: args.problems]]
    figures: dict[str, Any] = {"addition_agent_p": args.p, "solve_agent_p": args.solve_p}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite"
        plain = _addition(db, args, 0)
        backed = _addition(db, args, args.backtracks)
        # the rate voting lets wrong digits through, measured on the finished runs without backtracks
        rate = plain["errors_in_final_sums"] / max(1, plain["steps_of_finished_runs"])
        figures["addition_wrong_step_rate_let_through"] = round(rate, 5)
        figures["addition_no_backtracking"] = plain
        figures["addition_backtracking"] = backed
        figures["addition_no_backtracking_k4"] = _addition(db, args, 0, k=4)
        figures["addition_cost_ratio"] = round(backed["dollars_per_digit"] / max(1e-12, plain["dollars_per_digit"]), 3)
        s_plain = _solve(db, args, 0, problems)
        s_backed = _solve(db, args, args.solve_backtracks, problems)
        figures["solve_no_backtracking"] = s_plain
        figures["solve_no_backtracking_k3"] = _solve(db, args, 0, problems, k=3)
        figures["solve_backtracking"] = s_backed
        figures["solve_cost_ratio"] = round(
            s_backed["dollars_per_problem"] / max(1e-12, s_plain["dollars_per_problem"]), 3
        )
    emit(figures, args.json)


if __name__ == "__main__":
    main()
