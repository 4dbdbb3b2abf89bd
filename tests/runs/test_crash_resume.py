"""Crash safety with real processes: SIGKILL a run (and a resume) part way, or interrupt it, resume, and
compare everything recorded with an uninterrupted run of the same seed.

Each process to signal is held at a known step (tests/fixtures/held.py): it cannot finish before the signal,
however fast the machine, and commits by count only, so the steps it has committed when the signal lands are
known exactly."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._cli import TIMEOUT, Started, committed_steps, has_committed, kill_when, ok, run_maker, wait_for

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

RUN_ID = "R"
DISKS = 11
TOTAL = 2**DISKS - 1
EVERY = 100
RUN_ARGS = [
    "run",
    "hanoi",
    "--set",
    f"disks={DISKS}",
    "--agent",
    "simulated:gpt-4.1-mini,call_s=0.0003",
    "--k",
    "3",
    "--seed",
    "5",
    "--run-id",
    RUN_ID,
    "--commit-every",
    str(EVERY),
    "--commit-seconds",
    "1e9",  # by count only: a run held at step N has committed exactly the multiples of EVERY up to N
]
COUNTERS = ("steps", "calls", "red_flags", "errors", "max_rounds", "tokens")


def _at_hold(run: Started, db: Path, hold: int) -> Callable[[], bool]:
    """Whether ``run`` waits at step ``hold`` with the steps before it committed as far as commits go."""
    return lambda: run.held() and has_committed(db, RUN_ID, hold // EVERY * EVERY)


def _kill_at(run: Started, db: Path, hold: int) -> int:
    """SIGKILL ``run`` once it waits at step ``hold`` (see :func:`_at_hold`); return its committed step count."""
    kill_when(run.proc, _at_hold(run, db, hold), f"step {hold} held", run.stderr)
    after = committed_steps(db, RUN_ID)
    assert after == hold // EVERY * EVERY, (hold, after)  # the decided steps after the last commit are lost
    return after


def _recorded(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        run = con.execute("SELECT * FROM runs WHERE run_id=?", (RUN_ID,)).fetchone()
        assert run is not None
        rid = run["id"]
        steps = [
            tuple(r)
            for r in con.execute(
                "SELECT step, digest, answer, votes, rounds, samples, red_flags, agent, correct"
                " FROM steps WHERE run=? ORDER BY step",
                (rid,),
            )
        ]
        snap = con.execute(
            "SELECT step, state FROM snapshots WHERE run=? ORDER BY step DESC LIMIT 1", (rid,)
        ).fetchone()
        events = [
            (k, json.loads(d))
            for k, d in con.execute("SELECT kind, data FROM events WHERE run=? ORDER BY rowid", (rid,))
        ]
        return {
            "counters": {k: run[k] for k in COUNTERS},
            "status": run["status"],
            "error": run["error"],
            "solved": run["solved"],
            "result": json.loads(run["result"]) if run["result"] else None,
            "steps": steps,
            "snapshot": (snap["step"], json.loads(snap["state"])),
            "events": events,
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("reference")
    db = tmp / "ref.sqlite"
    proc = ok(run_maker(*RUN_ARGS, "--store", db, "--json", tmp=tmp))
    summary = json.loads(proc.stdout)
    rec = _recorded(db)
    assert summary["steps"] == TOTAL and summary["solved"] is True
    assert [s[0] for s in rec["steps"]] == list(range(TOTAL))
    assert rec["snapshot"][0] == TOTAL
    rec["summary"] = summary
    return rec


# (step `maker run` is held and killed at, steps the following resumes are held and killed at)
KILL_PLANS = {
    # at the first model call: the run row exists, no step is committed
    "first-step": (0, ()),
    # 1,050 steps decided, the last 50 not committed yet
    "middle": (1050, ()),
    "run-and-resume-killed": (350, (1550,)),
}


@pytest.mark.parametrize("plan", list(KILL_PLANS), ids=list(KILL_PLANS))
def test_sigkill_then_resume_matches_uninterrupted_run(
    plan: str, tmp_path: Path, reference: dict[str, Any], background: Callable[..., Started]
) -> None:
    first, later = KILL_PLANS[plan]
    db = tmp_path / "store.sqlite"

    run = background(*RUN_ARGS, "--store", db, hold=first)
    kill_points = [_kill_at(run, db, first)]

    # a killed run is listed with its committed steps and can be resumed
    listed = ok(run_maker("runs", "--store", db, "--json", tmp=tmp_path))
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == RUN_ID and row["steps"] == kill_points[0] and row["status"] == "killed"

    for i, hold in enumerate(later):
        assert hold > kill_points[-1]
        run = background("resume", RUN_ID, "--store", db, name=f"resume{i}", hold=hold)
        kill_points.append(_kill_at(run, db, hold))

    assert kill_points == sorted(kill_points)
    done = ok(run_maker("resume", RUN_ID, "--store", db, "--json", tmp=tmp_path))
    summary = json.loads(done.stdout)
    for key in (
        "run_id",
        "status",
        "steps",
        "errors",
        "solved",
        "calls",
        "red_flags",
        "max_rounds",
        "tokens",
        "result",
        "k",
        "agents",
    ):
        assert summary[key] == reference["summary"][key], key

    rec = _recorded(db)
    # no step lost or duplicated, and every step identical to the uninterrupted run
    assert [s[0] for s in rec["steps"]] == list(range(TOTAL))
    assert len(rec["steps"]) == len(reference["steps"])
    for mine, ref in zip(rec["steps"], reference["steps"], strict=True):
        assert mine == ref
    assert rec["counters"] == reference["counters"]
    assert rec["counters"]["steps"] == TOTAL
    assert rec["snapshot"] == reference["snapshot"]
    assert rec["result"] == reference["result"]
    assert rec["solved"] == reference["solved"] == 1
    assert rec["status"] == "done" and rec["error"] is None

    # every resume is recorded, starting where the previous process's last commit left off
    resumes = [d["from_step"] for k, d in rec["events"] if k == "resume"]
    assert resumes == kill_points

    listed = ok(run_maker("runs", "--store", db, "--json", tmp=tmp_path))
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == RUN_ID
    assert row["status"] == "done"
    assert row["steps"] == row["expected_steps"] == TOTAL
    assert row["errors"] == 0 and row["solved"] is True and row["error"] is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_commits_decided_steps_and_resume_matches(
    sig: int, tmp_path: Path, reference: dict[str, Any], background: Callable[..., Started]
) -> None:
    """Interrupted while step 1,050's model call is in flight, the run commits the 50 steps it decided since its
    last commit (at 1,000) before it exits, and a resume goes on from there to the uninterrupted run's trace."""
    db = tmp_path / "store.sqlite"
    hold = 1050
    run = background(*RUN_ARGS, "--store", db, hold=hold)
    wait_for(run.proc, _at_hold(run, db, hold), f"step {hold} held", run.stderr)
    assert committed_steps(db, RUN_ID) == 1000
    run.proc.send_signal(sig)
    run.proc.wait(timeout=TIMEOUT)
    err = run.stderr.read_text()
    assert run.proc.returncode == 130, err
    assert "committed steps are saved" in err
    stopped = _recorded(db)
    assert stopped["status"] == "interrupted"
    assert [s[0] for s in stopped["steps"]] == list(range(hold))
    assert stopped["steps"] == reference["steps"][:hold]
    assert stopped["snapshot"][0] == stopped["counters"]["steps"] == hold

    ok(run_maker("resume", RUN_ID, "--store", db, "--json", tmp=tmp_path))
    rec = _recorded(db)
    assert rec["steps"] == reference["steps"]
    assert rec["counters"] == reference["counters"], "a step cut short must not be counted twice"
    assert rec["snapshot"] == reference["snapshot"]
    assert [d["from_step"] for k, d in rec["events"] if k == "resume"] == [hold]


def test_every_write_connection_waits_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILL leaves the operating system to finish writing what was committed; a power loss does not, and no
    test can cut the power. In WAL mode ``synchronous=FULL`` makes each commit wait for its fsync; NORMAL may lose
    the last commits. Many SQLite builds open connections at NORMAL (``SQLITE_DEFAULT_WAL_SYNCHRONOUS``; this one
    may not), so connections are opened here as such a build opens them, and the setting is read back from each
    way a store is opened for writing: new, existing, and upgraded from an older schema."""
    from maker.store import Store

    connect = sqlite3.connect

    def as_built_with_normal(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    monkeypatch.setattr(sqlite3, "connect", as_built_with_normal)

    db = tmp_path / "s.sqlite"
    old = tmp_path / "v1.sqlite"
    old.write_bytes((Path(__file__).parents[1] / "fixtures" / "v1-hanoi.sqlite").read_bytes())
    for open_it in (
        lambda: Store.create(db),
        lambda: Store.create(db),
        lambda: Store.open(db, write=True),
        lambda: Store.open(old, write=True),
    ):
        with open_it() as st:
            assert st.durability() == ("wal", 2)  # 2: FULL
    with Store.open(db) as st:  # the stand-in build is in force: a reader keeps its default
        assert st.durability().synchronous == 1
