"""``maker eval`` and money: each problem's cost and the total, and one budget for the whole evaluation. Real data
files, real SQLite stores, the real command line in subprocesses, priced simulated agents."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from maker.cli._logging import money
from maker.evaluation import evaluate
from maker.runs import RunOptions
from maker.store import Store
from tests._cli import ok, run_maker, step_rows

MUL5 = Path(__file__).resolve().parents[2] / "data" / "maker-official" / "bench_long_mul_5_5__200.jsonl"
AGENT = "simulated:p=0.95,seed=1,price=0.4/0.1/1.6"


def _eval(tmp: Path, db: Path, name: str, *extra: str) -> Any:
    """``maker eval`` of the first four problems, one at a time, its summary in ``tmp/NAME.json``."""
    return run_maker(
        "eval",
        MUL5,
        "--limit",
        "4",
        "--agent",
        AGENT,
        "--k",
        "3",
        "--concurrency",
        "1",
        "--name",
        name,
        "--store",
        db,
        "--summary",
        tmp / f"{name}.json",
        *extra,
        tmp=tmp,
        cwd=tmp,
    )


def _recorded_cost(db: Path, run_id: str) -> float:
    """A run's dollars from its recorded usage and prices, read with plain SQL: committed steps' usage rows, and
    the speculative steps dropped."""
    con = sqlite3.connect(db)
    try:
        rid, stats = con.execute("SELECT id, stats FROM runs WHERE run_id=?", (run_id,)).fetchone()
        usage = [json.loads(u) for (u,) in con.execute("SELECT usage FROM steps WHERE run=?", (rid,))]
    finally:
        con.close()
    prices = json.loads(stats)["prices"]
    wasted = [[a, *r] for a, r in enumerate(json.loads(stats)["wasted"]["usage"])]
    rows = [r for step in usage for r in step] + wasted
    return sum(((p - c) * prices[a][0] + c * prices[a][1] + o * prices[a][2]) / 1e6 for a, p, c, o, _ in rows)


def _runs(db: Path) -> dict[str, Any]:
    with Store.open(db) as st:
        return {r.run_id: r for r in st.runs()}


def test_each_problem_shows_its_cost_and_they_sum_to_the_total(tmp_path: Path) -> None:
    db = tmp_path / "e.sqlite"
    proc = ok(_eval(tmp_path, db, "c", "--report", "r.html"))
    summary = json.loads((tmp_path / "c.json").read_text())
    rows = summary["rows"]
    assert len(rows) == 4 and all(r["status"] == "done" and r["cost"] > 0 for r in rows)
    assert summary["cost"] == sum(r["cost"] for r in rows)
    assert summary["cost_mean"] == summary["cost"] / 4 and summary["cost_estimated"]
    for r in rows:
        assert abs(r["cost"] - _recorded_cost(db, r["run_id"])) < 1e-9
        line = next(x for x in proc.stderr.splitlines() if f"] {r['id']}  correct" in x)
        assert f"  {money(r['cost'])}  " in line, line
    assert f"cost            {money(summary['cost'])}  ({money(summary['cost'] / 4)} per problem; " in proc.stdout
    # what the lines show sums to the total shown, to the rounding of the last digit shown
    shown = [float(m) for m in re.findall(r"calls  \$([0-9.]+)  ", proc.stderr)]
    assert len(shown) == 4 and abs(sum(shown) - summary["cost"]) <= 4 * 0.00005

    html = (tmp_path / "r.html").read_text()
    assert f'<th>cost</th><td><span title="${summary["cost"]:,.6f}">' in html
    assert all(f'<span title="${r["cost"]:,.6f}">' in html for r in rows)


def test_budget_stops_the_evaluation_partway_and_a_larger_one_finishes_it(tmp_path: Path) -> None:
    free_db, db = tmp_path / "free.sqlite", tmp_path / "b.sqlite"
    ok(_eval(tmp_path, free_db, "free"))
    free = json.loads((tmp_path / "free.json").read_text())
    costs = [r["cost"] for r in free["rows"]]
    ids = [r["id"] for r in free["rows"]]
    # enough for the first problem and half the second
    budget = f"{costs[0] + costs[1] / 2:.6f}"

    proc = _eval(tmp_path, db, "b", "--max-cost", budget)
    assert proc.returncode == 3, proc.stderr
    runs = _runs(db)
    assert set(runs) == {f"b/{ids[0]}", f"b/{ids[1]}"}, "the problems after the stopped one were not started"
    assert runs[f"b/{ids[0]}"].status == "done"
    stopped = runs[f"b/{ids[1]}"]
    free_rows = step_rows(free_db, f"free/{ids[1]}")
    assert stopped.status == "stopped" and 0 < stopped.steps < len(free_rows)
    # every step it decided is committed, and they are the steps the unbudgeted evaluation took
    assert step_rows(db, f"b/{ids[1]}") == free_rows[: stopped.steps]
    message = proc.stderr.splitlines()[-1]
    assert message.startswith("stopped: evaluation b: spent $") and "budget (--max-cost)" in message, message
    assert "1 of 4 problems done" in message
    assert f"1 stopped at a commit ({ids[1]} at step {stopped.steps})" in message
    assert f"2 not started ({ids[2]}, {ids[3]})" in message
    assert "--name b and a larger --max-cost" in message
    summary = json.loads((tmp_path / "b.json").read_text())
    assert (summary["correct"], summary["failed"], summary["out_of_budget"]) == (1, 0, 3)
    assert [r["status"] for r in summary["rows"]] == ["done", "stopped", "not started", "not started"]
    assert summary["budget_reached"] and summary["cost"] >= float(budget)

    # again with the same budget: it was spent, nothing more runs
    again = _eval(tmp_path, db, "b", "--max-cost", budget)
    assert again.returncode == 3, again.stderr
    assert json.loads((tmp_path / "b.json").read_text())["backend_calls"] == 0
    assert {r.run_id: r.steps for r in _runs(db).values()} == {rid: r.steps for rid, r in runs.items()}

    # with a larger one it goes on, to the same traces as the evaluation without a budget
    ok(_eval(tmp_path, db, "b", "--max-cost", "10"))
    done = json.loads((tmp_path / "b.json").read_text())
    assert (done["correct"], done["out_of_budget"], done["budget_reached"]) == (4, 0, None)
    for pid in ids:
        assert step_rows(db, f"b/{pid}") == step_rows(free_db, f"free/{pid}"), pid
    assert all(abs(r["cost"] - c) < 1e-9 for r, c in zip(done["rows"], costs, strict=True))


def test_concurrent_problems_spend_from_one_budget(tmp_path: Path) -> None:
    """Four runs at once and a token budget smaller than one problem: they all stop soon after it is reached
    (each at most one step past), and the problems after them are not started."""
    db = tmp_path / "e.sqlite"
    opts = RunOptions(agents=[AGENT], k=3, token_budget=1500)
    s = evaluate(MUL5, opts, store=db, limit=10, concurrency=4, name="t")
    assert s.budget_reached and "1,500-token budget" in s.budget_reached
    statuses = [r.status for r in s.rows]
    assert statuses.count("stopped") == 4 and statuses.count("not started") == 6 and s.out_of_budget == 10
    assert set(_runs(db)) == {r.run_id for r in s.rows if r.status == "stopped"}
    con = sqlite3.connect(db)
    try:
        bills = [json.loads(u) for (u,) in con.execute("SELECT usage FROM steps")]
        usage = [r for (x,) in con.execute("SELECT stats FROM runs") for r in json.loads(x)["usage"]]
    finally:
        con.close()
    spent = sum(p + o for p, _, o, _ in usage)
    biggest_step = max(sum(p + o for _, p, _, o, _ in bill) for bill in bills)
    assert 1500 <= spent <= 1500 + 4 * biggest_step
    # the runs record no budget of their own: the evaluation's is not a run option
    assert all(r.config["max_cost"] is None and r.config["token_budget"] is None for r in _runs(db).values())


def test_an_evaluation_expected_over_its_budget_is_refused_before_anything_runs(tmp_path: Path) -> None:
    data = tmp_path / "hanoi.jsonl"
    data.write_text('{"id": "five", "question": "5", "answer": "-"}\n{"id": "six", "question": "6", "answer": "-"}\n')
    db = tmp_path / "h.sqlite"
    args = ["eval", data, "--workflow", "hanoi", "--param", "disks", "--answer-key", "pegs", "--name", "h"]
    args += ["--agent", "simulated:gpt-4.1-mini", "--max-cost", "0.05", "--store", db]
    proc = run_maker(*args, tmp=tmp_path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "expected to spend more than its budget over its 2 problems: estimated $" in proc.stderr
    assert "against --max-cost $0.05" in proc.stderr and "--over-budget" in proc.stderr
    assert not db.exists()
    # started anyway, it stops when the budget is reached
    proc = run_maker(*args, "--over-budget", tmp=tmp_path, cwd=tmp_path)
    assert proc.returncode == 3 and "stopped: evaluation h: spent $" in proc.stderr, proc.stderr
    assert {r.status for r in _runs(db).values()} <= {"stopped", "done"}
