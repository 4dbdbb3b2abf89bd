"""A run killed (SIGKILL, a real process) in the middle of a backtrack resumes to the same trace as one never killed:
the same live steps, the same branches and the same abandoned steps.

The process kills itself at a point fixed by the workflow (tests/fixtures/checked_addition.py), not by a timer:
``retry:N`` in the N-th call of ``retry`` (the check has failed, nothing of the backtrack is written yet), and
``after:N`` at the first check of branch N's states (the backtrack is written, the new branch has decided
steps that are not committed yet)."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests._cli import maker_env, ok, run_maker

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checked_addition.py"
RUN_ID = "B"
ARGS = [
    "run",
    f"{FIXTURE}:CheckedAddition",
    "--set",
    "digits=60",
    "--set",
    "seed=1",
    "--agent",
    "simulated:p=0.9,seed=3",
    "--k",
    "1",
    "--backtracks",
    "20",
    "--detail",
    "samples",
    "--run-id",
    RUN_ID,
    "--commit-every",
    "3",
]


def _record(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        (rid,) = con.execute("SELECT id FROM runs WHERE run_id=?", (RUN_ID,)).fetchone()
        steps = con.execute(
            "SELECT step, digest, answer, votes, correct FROM steps WHERE run=? ORDER BY step", (rid,)
        ).fetchall()
        samples = con.execute(
            "SELECT step, idx, text, vote FROM samples WHERE run=? ORDER BY step, idx", (rid,)
        ).fetchall()
        branches = con.execute(
            "SELECT branch, from_step, to_step, kind, reason FROM branches WHERE run=? ORDER BY branch", (rid,)
        ).fetchall()
        abandoned = con.execute(
            "SELECT branch, step, digest, answer, votes, correct FROM branch_steps WHERE run=? ORDER BY branch, step",
            (rid,),
        ).fetchall()
        abandoned_samples = con.execute(
            "SELECT branch, step, idx, text FROM branch_samples WHERE run=? ORDER BY branch, step, idx", (rid,)
        ).fetchall()
        status, errors, solved, result, stats = con.execute(
            "SELECT status, errors, solved, result, stats FROM runs WHERE id=?", (rid,)
        ).fetchone()
        (snapshot,) = con.execute(
            "SELECT state FROM snapshots WHERE run=? ORDER BY step DESC LIMIT 1", (rid,)
        ).fetchone()
    finally:
        con.close()
    backtrack = json.loads(stats)["backtrack"]
    return {
        "steps": steps,
        "samples": samples,
        "branches": branches,
        "abandoned": abandoned,
        "abandoned_samples": abandoned_samples,
        "status": status,
        "errors": errors,
        "solved": solved,
        "result": result,
        "snapshot": snapshot,
        "backtrack": {k: backtrack[k] for k in ("branches", "failed_checks", "good")},
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("reference")
    db = tmp / "ref.sqlite"
    ok(run_maker(*ARGS, "--store", db, tmp=tmp))
    rec = _record(db)
    assert len(rec["branches"]) >= 4 and rec["status"] == "done" and rec["solved"] == 1
    return rec


@pytest.mark.parametrize("point", ["retry:2", "retry:4", "after:1", "after:3"])
def test_sigkill_during_a_backtrack_resumes_to_the_same_trace(
    point: str, tmp_path: Path, reference: dict[str, Any]
) -> None:
    db = tmp_path / "s.sqlite"
    mark = tmp_path / "killed"
    env = {**maker_env(tmp_path), "MAKER_KILL_AT": point, "MAKER_KILL_MARK": str(mark)}
    killed = run_maker(*ARGS, "--store", db, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert mark.read_text() == point
    before = _record(db)
    kind, n = point.split(":")
    # a kill before the backtrack is written leaves the branches before it; one after leaves it written too
    assert len(before["branches"]) == (int(n) - 1 if kind == "retry" else int(n))
    done = ok(run_maker("resume", RUN_ID, "--store", db, "--json", env=env))
    assert json.loads(done.stdout)["status"] == "done"
    assert _record(db) == reference
    replayed = json.loads(ok(run_maker("replay", RUN_ID, "--store", db, "--json", env=env)).stdout)
    assert replayed["branches"] == len(reference["branches"]) and replayed["finished"] is True
