"""Running the real ``maker`` command (in a subprocess, or in process through click), starting it in the background
held at a step so that a signal is certain to find it running, killing it part way, peeking at a store another
process is writing, and reading a run's rows back."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from maker.cli import main
from maker.store import StepRow, Store

_SCRIPT = Path(sys.executable).with_name("maker")
MAKER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "maker.cli"]
HELD = [sys.executable, str(Path(__file__).with_name("fixtures") / "held.py")]
"""``maker`` with the model calls of one step held (see tests/fixtures/held.py and :func:`start_maker`)."""
TIMEOUT = 120


def maker_env(tmp: Path) -> dict[str, str]:
    """The environment with ``MAKER_STORE`` pointed at a file no test expects, so a forgotten --store shows."""
    env = dict(os.environ)
    env["MAKER_STORE"] = str(tmp / "default-store-must-not-be-used.sqlite")
    return env


def run_maker(
    *args: str | Path,
    tmp: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``maker ARGS`` to the end, its output captured, in the environment ``env`` or else :func:`maker_env` of
    ``tmp`` (one of the two is needed)."""
    if env is None:
        assert tmp is not None, "give tmp (for maker_env) or env"
        env = maker_env(tmp)
    return subprocess.run(
        [*MAKER, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        cwd=cwd,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``proc``, once it is seen to have exited 0 (else a failure showing its output)."""
    assert proc.returncode == 0, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def invoke(*args: str) -> tuple[int, str]:
    """``maker ARGS`` in this process (click's runner): its exit code and output."""
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


@dataclass
class Started:
    """A ``maker`` process started by :func:`start_maker`."""

    proc: subprocess.Popen[bytes]
    stderr: Path
    """The file its stderr goes to."""
    marker: Path
    """Written when a call of the held step is waiting (only with ``hold``)."""

    def held(self) -> bool:
        """Whether the process is waiting at its held step: until it is signalled, it can go no further."""
        return self.marker.exists()


def start_maker(
    *args: str | Path,
    tmp: Path,
    name: str = "run",
    hold: int | None = None,
    hold_prompt: str | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> Started:
    """Start ``maker ARGS`` in the background, stdout and stderr in ``tmp/NAME.stdout`` and ``tmp/NAME.stderr``.

    ``hold=N``: every model call for step N (whose prompt contains ``hold_prompt``, if given) waits until the
    process is signalled (tests/fixtures/held.py). So the run cannot finish: a signal sent once
    :meth:`Started.held`, or once the steps before N are committed, lands on a running process, however fast the
    machine. ``new_session``: the process leads its own process group (to kill it with what it started)."""
    env = maker_env(tmp)
    cmd = MAKER
    marker = tmp / f"{name}.held"
    if hold is not None:
        cmd = HELD
        env.update(MAKER_HOLD_STEP=str(hold), MAKER_HOLD_FILE=str(marker))
        if hold_prompt is not None:
            env["MAKER_HOLD_PROMPT"] = hold_prompt
    err = tmp / f"{name}.stderr"
    with open(tmp / f"{name}.stdout", "wb") as out, open(err, "wb") as errf:
        proc = subprocess.Popen(
            [*cmd, *map(str, args)],
            stdout=out,
            stderr=errf,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=new_session,
        )
    return Started(proc, err, marker)


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


def stored_steps(db: Path, run_id: str) -> list[StepRow]:
    """A run's step rows as the store reads them back (every column, timings too), in step order."""
    with Store.open(db) as st:
        return list(st.steps(st.run(run_id).id))


def sample_rows(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    """Every sample a run kept of its committed steps: the step, then the sample's columns, in step and sample
    order."""
    con = sqlite3.connect(db)
    try:
        (rid,) = con.execute("SELECT id FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return con.execute(
            "SELECT step, idx, round, agent, temperature, tokens, text, flag, vote FROM samples"
            " WHERE run=? AND step IN (SELECT step FROM steps WHERE run=?) ORDER BY step, idx",
            (rid, rid),
        ).fetchall()
    finally:
        con.close()


def trace(db: Path, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What two runs that decided alike share: every step row but its timings (:func:`step_rows`), and every
    sample (:func:`sample_rows`)."""
    return step_rows(db, run_id), sample_rows(db, run_id)


def shown_steps(db: Path, run_id: str, tmp: Path) -> list[dict[str, Any]]:
    """A run's steps as ``maker trace show RUN_ID --steps 0: --json`` prints them, one dict a step."""
    out = ok(run_maker("trace", "show", run_id, "--steps", "0:", "--json", "--store", db, tmp=tmp)).stdout
    return [json.loads(line) for line in out.splitlines()]


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


def copy_store(src: Path, dst: Path) -> Path:
    """A consistent copy of a store (SQLite's online backup: safe while it is being written), at ``dst``."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()
    return dst
