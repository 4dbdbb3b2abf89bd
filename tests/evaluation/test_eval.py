"""``maker eval``: real data files, real SQLite stores, the real command line in subprocesses, a real SIGKILL."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maker.evaluation import evaluate
from maker.runs import RunOptions
from maker.store import Store
from maker.workflows._reference import same_answer
from tests._cli import Started, kill_when, ok, peek, run_maker, step_rows

DATA = Path(__file__).resolve().parents[2] / "data" / "maker-official"
MUL5 = DATA / "bench_long_mul_5_5__200.jsonl"
SORT = DATA / "bench_sort_len_500__50.jsonl"
AGENT = "simulated:p=0.95,seed=1"


def _answers(path: Path) -> dict[str, str]:
    return {(o := json.loads(line))["id"]: o["answer"] for line in path.read_text().splitlines() if line.strip()}


def _runs(db: Path) -> dict[str, Any]:
    with Store.open(db) as st:
        return {r.run_id: r for r in st.runs()}


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without what depends on this invocation: timings, what was run now, backend calls."""
    skip = {"wall_s", "problems_per_s", "ran", "reused", "backend_calls", "backend_requests"}
    out = {k: v for k, v in summary.items() if k not in skip}
    out["rows"] = [{k: v for k, v in r.items() if k != "reused"} for r in summary["rows"]]
    return out


def test_eval_twenty_problems_then_again_runs_nothing(tmp_path: Path) -> None:
    db = tmp_path / "eval.sqlite"
    args = [
        "eval",
        MUL5,
        "--limit",
        "20",
        "--agent",
        AGENT,
        "--k",
        "3",
        "--concurrency",
        "4",
        "--name",
        "mul5",
        "--summary",
        "s.json",
        "--report",
        "r.html",
        "--store",
        db,
    ]
    proc = ok(run_maker(*args, tmp=tmp_path, cwd=tmp_path))
    assert "accuracy        100.0%" in proc.stdout, proc.stdout
    assert "correct         20  (wrong 0, failed 0)" in proc.stdout, proc.stdout
    assert "--name mul5" in proc.stderr and "[20/20]" in proc.stderr, proc.stderr

    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["problems"], summary["correct"], summary["settings"]["concurrency"]) == (20, 20, 4)
    runs = _runs(db)
    truth = _answers(MUL5)
    assert len(summary["rows"]) == 20
    for row in summary["rows"]:
        assert row["run_id"] == f"mul5/{row['id']}" and runs[row["run_id"]].status == "done"
        assert row["correct"] and row["expected"] == truth[row["id"]] and same_answer(truth[row["id"]], row["got"])
        assert row["steps"] == runs[row["run_id"]].steps > 0

    html = (tmp_path / "r.html").read_text()
    assert all(row["id"] in html for row in summary["rows"])
    assert "<script" not in html.lower()
    assert f"maker trace show mul5/mul-5x5-0 --store {db}" in html

    # Again under the same name: everything is read back, nothing is run.
    calls = sum(r.calls for r in runs.values())
    proc = ok(run_maker(*args, tmp=tmp_path, cwd=tmp_path))
    assert "(run now 0, read back 20)" in proc.stdout, proc.stdout
    again = json.loads((tmp_path / "s.json").read_text())
    assert sum(r.calls for r in _runs(db).values()) == calls
    assert again["backend_calls"] == 0 and again["reused"] == 20
    assert _figures(again) == _figures(summary)


def _done_steps(db: Path, prefix: str) -> dict[str, int] | None:
    """Steps of the evaluation's finished runs, or None while the store is not readable yet."""
    rows = peek(db, "SELECT run_id, steps FROM runs WHERE status='done' AND run_id LIKE ?", (prefix + "/%",))
    return None if rows is None else dict(rows)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_evaluation_resumes_and_finishes(tmp_path: Path, background: Callable[..., Started]) -> None:
    db = tmp_path / "eval.sqlite"
    args = [
        "eval",
        str(MUL5),
        "--limit",
        "16",
        "--agent",
        "simulated:p=0.95,seed=1,call_s=0.02",
        "--k",
        "3",
        "--concurrency",
        "2",
        "--name",
        "killed",
        "--store",
        str(db),
        "--summary",
        "s.json",
    ]
    # Two at a time, in data order: the fourth problem starts once two runs are done. Its first model call is
    # held, so the evaluation is still running when it is killed.
    fourth = json.loads(MUL5.read_text().splitlines()[3])["question"].splitlines()[-1]
    run = background(*args, name="first", hold=0, hold_prompt=fourth, cwd=tmp_path)
    kill_when(
        run.proc,
        lambda: run.held() and len(_done_steps(db, "killed") or {}) >= 2,
        "2 runs done and the 4th problem held",
        run.stderr,
    )
    before = {r.run_id: r for r in _runs(db).values()}
    done_before = {rid: r.steps for rid, r in before.items() if r.status == "done"}
    assert 2 <= len(done_before) < 16

    proc2 = ok(run_maker(*args, tmp=tmp_path, cwd=tmp_path))
    assert f"{len(done_before)} already done" in proc2.stderr, proc2.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["problems"], summary["correct"], summary["reused"]) == (16, 16, len(done_before))
    after = _runs(db)
    assert len(after) == 16 and all(r.status == "done" for r in after.values())
    assert {rid: after[rid].steps for rid in done_before} == done_before
    truth = _answers(MUL5)
    assert all(same_answer(truth[r["id"]], r["got"]) for r in summary["rows"])


def test_weak_agent_lists_wrong_problems_and_exits_zero(tmp_path: Path) -> None:
    db = tmp_path / "eval.sqlite"
    args = ["eval", MUL5, "--limit", "10", "--agent", "simulated:p=0.6,seed=3,spread=3", "--k", "1", "--name", "weak"]
    proc = ok(run_maker(*args, "--store", db, "--json", tmp=tmp_path, cwd=tmp_path))
    summary = json.loads(proc.stdout)
    wrong = [r for r in summary["rows"] if not r["correct"]]
    assert wrong and summary["wrong"] + summary["failed"] == len(wrong)
    assert summary["accuracy"] == summary["correct"] / 10 and summary["accuracy_low"] <= summary["accuracy"]
    runs = _runs(db)
    for r in wrong:
        assert runs[r["run_id"]].status == r["status"]
        assert f"{r['id']}  WRONG" in proc.stderr or f"{r['id']}  FAILED" in proc.stderr

    table = ok(run_maker(*args, "--store", db, tmp=tmp_path, cwd=tmp_path)).stdout
    assert f"not correct ({len(wrong)}):" in table
    assert all(f"run {r['run_id']}" in table for r in wrong)


def test_concurrent_runs_share_batched_backend_calls(tmp_path: Path) -> None:
    opts = RunOptions(agents=[AGENT], k=3)
    one = evaluate(MUL5, opts, store=tmp_path / "one.sqlite", limit=8, concurrency=1, name="c")
    eight = evaluate(MUL5, opts, store=tmp_path / "eight.sqlite", limit=8, concurrency=8, name="c")
    assert one.correct == eight.correct == 8
    assert eight.backend_calls < one.backend_calls
    assert eight.backend_requests == one.backend_requests  # the same requests, fewer calls

    def steps(db: Path) -> dict[str, list[tuple[Any, ...]]]:
        return {run_id: step_rows(db, run_id) for run_id in _runs(db)}

    assert steps(tmp_path / "one.sqlite") == steps(tmp_path / "eight.sqlite")


def test_sorting_problems(tmp_path: Path) -> None:
    proc = ok(
        run_maker(
            "eval",
            SORT,
            "--limit",
            "2",
            "--agent",
            AGENT,
            "--k",
            "3",
            "--store",
            tmp_path / "s.sqlite",
            "--json",
            tmp=tmp_path,
            cwd=tmp_path,
        )
    )
    summary = json.loads(proc.stdout)
    assert (summary["problems"], summary["correct"]) == (2, 2)
    truth = _answers(SORT)
    assert all(r["expected"] == truth[r["id"]] and same_answer(r["expected"], r["got"]) for r in summary["rows"])


_GOOD = '{"id": "a", "question": "Multiply 12 by 34", "answer": "408"}'


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        ([_GOOD, "{not json"], [], "line 2 is not JSON"),
        ([_GOOD, '{"id": "b", "question": "Multiply 1 by 2"}'], [], "line 2 has no 'answer'"),
        ([_GOOD, _GOOD], [], "id 'a' is also on line 1"),
        ([_GOOD], ["--param", "nosuch"], "no parameter 'nosuch'"),
        ([_GOOD], ["--agent", "nosuch:model"], "nosuch:model"),
    ],
    ids=["not-json", "no-answer", "duplicate-id", "no-param", "bad-agent"],
)
def test_bad_input_fails_before_anything_runs(tmp_path: Path, lines: list[str], extra: list[str], message: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    db = tmp_path / "eval.sqlite"
    proc = run_maker("eval", data, "--agent", AGENT, *extra, "--store", db, tmp=tmp_path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not db.exists() or not _runs(db)


def test_changed_settings_under_the_same_name_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "eval.sqlite"
    base = ["eval", MUL5, "--limit", "2", "--agent", AGENT, "--name", "n", "--store", db]
    ok(run_maker(*base, "--k", "3", tmp=tmp_path, cwd=tmp_path))
    proc = run_maker(*base, "--k", "4", tmp=tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and "k recorded 3, given 4" in proc.stderr and "new --name" in proc.stderr
