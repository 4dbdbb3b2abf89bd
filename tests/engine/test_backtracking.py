"""Backtracking: a failed check (or an undecided step) sends the run back to the last state that passed, as a new
branch; the abandoned steps are kept and marked, the same seed gives the same branches, and replay, resume and
fork follow them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from maker.errors import NondeterminismError, StepUndecidedError
from maker.runs import fork_run, replay_run, resume_run, start_run
from maker.store import Store

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checked_addition.py"
WORKFLOW = f"{FIXTURE}:CheckedAddition"
PARAMS = {"digits": 60, "seed": 1}


def _run(db: Path, backtracks: int, agent: str = "simulated:p=0.9,seed=3", **options: Any) -> Any:
    return start_run(WORKFLOW, PARAMS, {"agents": [agent], "k": 1, "backtracks": backtracks, **options}, store=db)


def _branches(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    with Store.open(db) as st:
        rid = st.run(run_id).id
        return [(b.branch, b.from_step, b.to_step, b.kind, b.reason) for b in st.branches(rid)]


def _abandoned(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    with Store.open(db) as st:
        rid = st.run(run_id).id
        return [
            (b.branch, r.step, r.digest, r.answer, r.votes, r.correct)
            for b in st.branches(rid)
            for r in st.branch_steps(rid, b.branch)
        ]


def _live(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    with Store.open(db) as st:
        return [(r.step, r.digest, r.answer, r.votes, r.correct) for r in st.steps(st.run(run_id).id)]


def test_a_failed_check_goes_back_and_the_new_branch_finishes_right(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    plain = _run(db, 0)
    backed = _run(db, 20)
    # without backtracks the wrong columns stay (the checks that failed are counted); with, none is left
    assert plain.errors and plain.solved is False
    assert backed.errors == 0 and backed.solved is True and backed.steps == 60
    with Store.open(db) as st:
        stats = st.run(plain.run_id).stats or {}
        assert stats["backtrack"]["failed_checks"] > 0 and stats["backtrack"]["branches"] == 0
    branches = _branches(db, backed.run_id)
    assert branches and all(kind == "check" for _, _, _, kind, _ in branches)
    # each went back to the last checked state (a multiple of 5 columns) from the check that failed after it
    for number, (b, lo, hi, _, reason) in enumerate(branches, 1):
        assert b == number and lo % 5 == 0 and hi % 5 == 0 and lo < hi
        assert reason.startswith(f"columns 0..{hi - 1} add up to")
    # the abandoned steps are kept under their branch, with the wrong answers that the check caught
    abandoned = _abandoned(db, backed.run_id)
    assert len(abandoned) == sum(hi - lo for _, lo, hi, _, _ in branches)
    assert any(correct == 0 for *_, correct in abandoned)
    # the live chain is whole, and its spending counts the abandoned steps' calls too
    assert [s[0] for s in _live(db, backed.run_id)] == list(range(60))
    assert backed.calls == 60 + len(abandoned)
    # retry ran once a branch: the state counts them
    assert backed.result is not None


def test_same_seed_same_branches(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    ra, rb = _run(a, 20), _run(b, 20)
    assert _branches(a, ra.run_id) == _branches(b, rb.run_id)
    assert _abandoned(a, ra.run_id) == _abandoned(b, rb.run_id)
    assert _live(a, ra.run_id) == _live(b, rb.run_id)
    # another seed decides other branches
    c = tmp_path / "c.sqlite"
    rc = _run(c, 20, "simulated:p=0.9,seed=4")
    assert _abandoned(c, rc.run_id) != _abandoned(a, ra.run_id)


def test_the_limit_holds_and_later_failures_are_counted(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    summary = _run(db, 3, "simulated:p=0.7,seed=3")
    assert len(_branches(db, summary.run_id)) == 3
    with Store.open(db) as st:
        stats = (st.run(summary.run_id).stats or {})["backtrack"]
    assert stats["branches"] == 3 and stats["limit"] == 3 and stats["failed_checks"] > 0
    assert summary.status == "done" and summary.steps == 60


def test_replay_goes_through_the_branches_and_catches_a_changed_reason(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    summary = _run(db, 20)
    branches = _branches(db, summary.run_id)
    result = replay_run(summary.run_id, store=db)
    assert result.steps == 60 and result.finished is True
    assert result.branches == len(branches)
    assert result.branch_steps == sum(hi - lo for _, lo, hi, _, _ in branches)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE branches SET reason='columns 0..4 add up to 0 mod 9' WHERE branch=1")
    con.close()
    with pytest.raises(NondeterminismError, match="branch 1 went back"):
        replay_run(summary.run_id, store=db)


def test_a_fork_after_a_branch_starts_from_the_retried_state(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    parent = _run(db, 20)
    (_, lo, *_), *_ = _branches(db, parent.run_id)
    fork = fork_run(parent.run_id, 60, store=db)
    # the fork re-applies the parent's 60 steps through every branch point, so its start state counts the retries
    with Store.open(db) as st:
        tries = [__import__("json").loads(s.state)["tries"] for s in st.snapshots(st.run(fork.run_id).id)]
    assert tries and tries[0] == len(_branches(db, parent.run_id)) > 0 and lo >= 0
    assert replay_run(fork.run_id, store=db).steps == 60


def test_an_undecided_step_goes_back_and_is_decided_on_a_new_branch(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    options = {"max_rounds": 2, "k": 2}
    agent = "simulated:p=0.8,seed=4"
    with pytest.raises(StepUndecidedError):
        start_run(WORKFLOW, PARAMS, {"agents": [agent], "backtracks": 0, **options}, store=db)
    summary = start_run(WORKFLOW, PARAMS, {"agents": [agent], "backtracks": 100, **options}, store=db)
    assert summary.status == "done" and summary.steps == 60
    kinds = {kind for _, _, _, kind, _ in _branches(db, summary.run_id)}
    assert "undecided" in kinds
    with Store.open(db) as st:
        # each undecided attempt is kept as a failure of the run, at the step it could not decide
        failures = st.failures(st.run(summary.run_id).id)
    assert failures and all(f["kind"] == "undecided" for f in failures)
    assert replay_run(summary.run_id, store=db).finished is True


def test_resume_after_a_stop_goes_on_the_same_branch(tmp_path: Path) -> None:
    """A run stopped by its budget part way and resumed decides what an unstopped run decides."""
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    whole = _run(a, 20)
    with pytest.raises(Exception, match="token"):
        _run(b, 20, token_budget=2500, commit_every=1)
    (run_id,) = [r.run_id for r in Store.open(b).runs()]
    done = resume_run(run_id, store=b, overrides={"token_budget": 10**9})
    assert done.steps == 60 and done.errors == whole.errors
    assert _branches(b, run_id) == _branches(a, whole.run_id)
    assert _abandoned(b, run_id) == _abandoned(a, whole.run_id)
    assert _live(b, run_id) == _live(a, whole.run_id)
