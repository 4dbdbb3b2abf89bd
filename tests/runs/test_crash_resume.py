"""Crash safety with real processes: SIGKILL a run (and a resume) part way, resume, and
compare everything recorded with an uninterrupted run of the same seed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._cli import committed_steps, has_committed, kill_when, wait_for

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

_SCRIPT = Path(sys.executable).with_name("maker")
MAKER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "maker.cli"]

RUN_ID = "R"
DISKS = 11
TOTAL = 2**DISKS - 1
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
    "--commit-seconds",
    "0.05",
]
COUNTERS = ("steps", "calls", "red_flags", "errors", "max_rounds", "tokens")
TIMEOUT = 120


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MAKER_STORE"] = str(tmp / "default-store-must-not-be-used.sqlite")
    return env


def _maker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAKER, *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=TIMEOUT
    )


def _start(args: list[str], tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    err = tmp / f"{name}.stderr"
    with open(tmp / f"{name}.stdout", "wb") as out, open(err, "wb") as errf:
        proc = subprocess.Popen([*MAKER, *args], stdout=out, stderr=errf, stdin=subprocess.DEVNULL, env=_env(tmp))
    return proc, err


def _kill_when(proc: subprocess.Popen[bytes], stderr: Path, db: Path, threshold: int) -> int:
    """SIGKILL ``proc`` as soon as the committed step counter reaches ``threshold``; return the counter after."""
    kill_when(proc, lambda: has_committed(db, RUN_ID, threshold), f"{threshold} committed steps", stderr)
    after = committed_steps(db, RUN_ID)
    assert after is not None and threshold <= after < TOTAL, (threshold, after)
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
    proc = _maker(*RUN_ARGS, "--store", str(db), "--json", env=_env(tmp))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    rec = _recorded(db)
    assert summary["steps"] == TOTAL and summary["solved"] is True
    assert [s[0] for s in rec["steps"]] == list(range(TOTAL))
    assert rec["snapshot"][0] == TOTAL
    rec["summary"] = summary
    return rec


# (threshold for the kill of `maker run`, thresholds for kills of the following resumes)
KILL_PLANS = {
    # as soon as the run row exists: well within the first second, usually before any step is committed
    "first-second": (0, ()),
    "middle": (1000, ()),
    "run-and-resume-killed": (300, (1500,)),
}


@pytest.mark.parametrize("plan", list(KILL_PLANS), ids=list(KILL_PLANS))
def test_sigkill_then_resume_matches_uninterrupted_run(plan: str, tmp_path: Path, reference: dict[str, Any]) -> None:
    first, later = KILL_PLANS[plan]
    db = tmp_path / "store.sqlite"
    env = _env(tmp_path)

    proc, err = _start([*RUN_ARGS, "--store", str(db)], tmp_path, "run")
    kill_points = [_kill_when(proc, err, db, first)]

    # a killed run is listed with its committed steps and can be resumed
    listed = _maker("runs", "--store", str(db), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == RUN_ID and row["steps"] == kill_points[0] and row["status"] == "killed"

    for i, threshold in enumerate(later):
        assert threshold > kill_points[-1]
        proc, err = _start(["resume", RUN_ID, "--store", str(db)], tmp_path, f"resume{i}")
        kill_points.append(_kill_when(proc, err, db, threshold))

    assert kill_points == sorted(kill_points)
    done = _maker("resume", RUN_ID, "--store", str(db), "--json", env=env)
    assert done.returncode == 0, done.stderr
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

    listed = _maker("runs", "--store", str(db), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == RUN_ID
    assert row["status"] == "done"
    assert row["steps"] == row["expected_steps"] == TOTAL
    assert row["errors"] == 0 and row["solved"] is True and row["error"] is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_commits_decided_steps_and_resume_matches(
    sig: int, tmp_path: Path, reference: dict[str, Any]
) -> None:
    db = tmp_path / "store.sqlite"
    env = _env(tmp_path)
    proc, err = _start([*RUN_ARGS, "--store", str(db)], tmp_path, "run")
    wait_for(proc, lambda: has_committed(db, RUN_ID, 300), "300 committed steps", err)
    proc.send_signal(sig)
    proc.wait(timeout=TIMEOUT)
    assert proc.returncode == 130, err.read_text()
    assert "committed steps are saved" in err.read_text()
    stopped = _recorded(db)
    assert stopped["status"] == "interrupted"
    assert [s[0] for s in stopped["steps"]] == list(range(len(stopped["steps"])))
    assert stopped["snapshot"][0] == len(stopped["steps"]) == stopped["counters"]["steps"]

    done = _maker("resume", RUN_ID, "--store", str(db), "--json", env=env)
    assert done.returncode == 0, done.stderr
    rec = _recorded(db)
    assert rec["steps"] == reference["steps"]
    assert rec["counters"] == reference["counters"], "a step cut short must not be counted twice"
    assert rec["snapshot"] == reference["snapshot"]


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

    def settings(st: Store) -> tuple[Any, ...]:
        return (st.query("PRAGMA journal_mode").fetchone()[0], st.query("PRAGMA synchronous").fetchone()[0])

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
            assert settings(st) == ("wal", 2)  # 2: FULL
    with Store.open(db) as st:  # the stand-in build is in force: a reader keeps its default
        assert st.query("PRAGMA synchronous").fetchone() == (1,)
