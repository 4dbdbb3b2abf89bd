"""Running the real ``maker`` command in a subprocess, killing it part way, peeking at a store another process is
writing, and reading a run's step rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

_SCRIPT = Path(sys.executable).with_name("maker")
MAKER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "maker.cli"]
TIMEOUT = 120


def maker_env(tmp: Path) -> dict[str, str]:
    """The environment with ``MAKER_STORE`` pointed at a file no test expects, so a forgotten --store shows."""
    env = dict(os.environ)
    env["MAKER_STORE"] = str(tmp / "default-store-must-not-be-used.sqlite")
    return env


def run_maker(*args: str | Path, tmp: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAKER, *map(str, args)],
        capture_output=True,
        text=True,
        env=maker_env(tmp),
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
        cwd=cwd,
    )


def peek(db: Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]] | None:
    """The rows of a read-only query, or None while the store is not readable yet (not made, schema being
    written, a writer holding a lock)."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=0.05)
    except sqlite3.Error:
        return None
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.Error:
        return None
    finally:
        con.close()


def step_rows(db: Path, run_id: str, leave_out: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Every recorded column of a run's steps, in step order, but the timings (which no two runs share) and the
    columns in ``leave_out``."""
    con = sqlite3.connect(db)
    try:
        skip = ("run", "t_start", "dur", *leave_out)
        cols = [r[1] for r in con.execute("PRAGMA table_info(steps)") if r[1] not in skip]
        return con.execute(
            f"SELECT {', '.join(cols)} FROM steps WHERE run=(SELECT id FROM runs WHERE run_id=?) ORDER BY step",
            (run_id,),
        ).fetchall()
    finally:
        con.close()


def committed_steps(db: Path, run_id: str) -> int | None:
    """A run's committed step counter, or None while the store or its run row is not readable yet."""
    rows = peek(db, "SELECT steps FROM runs WHERE run_id=?", (run_id,))
    return int(rows[0][0]) if rows else None


def has_committed(db: Path, run_id: str, steps: int) -> bool:
    """Whether the run's row is readable and counts at least ``steps`` committed steps."""
    n = committed_steps(db, run_id)
    return n is not None and n >= steps


def wait_for(
    proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, stderr: Path, timeout: float = TIMEOUT
) -> None:
    """Poll ``ready()`` every few milliseconds while ``proc`` runs. Fails, with the process's ``stderr`` file, when it
    ends first or ``what`` has not happened within ``timeout`` seconds (a guard against a hang, not a timing
    assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}; stderr:\n{stderr.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout} s")
        if ready():
            return
        time.sleep(0.004)


def kill_when(
    proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, stderr: Path, timeout: float = TIMEOUT
) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` (see :func:`wait_for`), and reap it."""
    try:
        wait_for(proc, ready, what, stderr, timeout)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=timeout)  # reaped: a zombie would still look alive to `resume`'s liveness check
    assert proc.returncode == -signal.SIGKILL, stderr.read_text()
