"""Asking a run to stop (``maker stop``, the UI's stop button): it stops at a commit, interrupted, and resumes.

Two ways a request lands, both tested: at a commit (a run deciding steps), and through the watcher while a run
waits on its model (a held step: the run is certain to be waiting there when asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from maker.errors import StopRequested, UserError
from maker.runs import RunOptions, drive, new_run, request_stop, resolve_workflow
from maker.store import Store
from tests._cli import invoke, ok, run_maker, start_maker

AGENT = "simulated:gpt-4.1-mini"


def _wait(pred, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_request_lands_at_the_next_commit(tmp_path: Path) -> None:
    """A request standing before the run starts is read at its first commit: the run stops there, its steps kept."""
    db = tmp_path / "s.sqlite"
    wf_cls = resolve_workflow("hanoi")
    opts = RunOptions(agents=[AGENT], commit_every=64, commit_seconds=3600, seed=3)  # commits by count alone
    with contextlib.ExitStack() as stack, Store.create(db) as st:
        agents = [opts.agent_maker(stack)(AGENT)]
        engine, wf, state = new_run(wf_cls, {"disks": 9}, opts, st=st, agents=agents, speculation=None, run_id="h")
        st.request_stop(engine.rid, "test")
        with pytest.raises(StopRequested, match=r"stopped at step 64, as asked"):
            asyncio.run(drive(engine, wf, state, wf_cls.name))
        record = st.run("h")
    assert record.status == "interrupted"
    assert record.steps == 64
    assert "maker resume h" in (record.error or "")
    with Store.open(db) as st:
        assert len(list(st.steps(record.id))) == 64
        assert st.stop_request(record.id) == "test"
    # resuming takes the request back and finishes the run, as if it had never stopped
    code, out = invoke("resume", "h", "--store", str(db), "--json")
    assert code == 0, out
    with Store.open(db) as st:
        done = st.run("h")
        assert st.stop_request(done.id) is None
    assert (done.status, done.steps, done.errors) == ("done", 511, 0)


def test_maker_stop_stops_a_run_waiting_on_its_model(tmp_path: Path) -> None:
    """Held at step 300 (certain to be waiting there), the run reads the request within a second, stops at a commit
    with steps 0..299 kept, exits 130; ``maker stop`` waits for that and says so."""
    db = tmp_path / "s.sqlite"
    run = start_maker(
        "run", "hanoi", "--set", "disks=9", "--agent", AGENT, "--store", db, "--run-id", "w", tmp=tmp_path, hold=300
    )
    try:
        _wait(run.held, "the run to reach its held step")
        stopped = run_maker("stop", "w", "--store", db, tmp=tmp_path)
        ok(stopped)
        assert "asked run w" in stopped.stderr
        assert "run w: interrupted at step 300" in stopped.stderr
        assert run.proc.wait(timeout=60) == 130
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait()
    assert "stopped at step 300, as asked" in run.stderr.read_text()
    with Store.open(db) as st:
        record = st.run("w")
        assert (record.status, record.steps) == ("interrupted", 300)
        assert [r.step for r in st.steps(record.id)] == list(range(300))
    ok(run_maker("resume", "w", "--store", db, tmp=tmp_path))
    with Store.open(db) as st:
        assert st.run("w").status == "done"


def test_stop_refuses_a_run_that_is_not_running(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    ok(run_maker("run", "hanoi", "--set", "disks=3", "--agent", AGENT, "--store", db, "--run-id", "d", tmp=tmp_path))
    done = run_maker("stop", "d", "--store", db, tmp=tmp_path)
    assert done.returncode == 2
    assert "run d is not running (done at step 7); nothing to stop" in done.stderr
    missing = run_maker("stop", "nope", "--store", db, tmp=tmp_path)
    assert missing.returncode == 2 and "nope" in missing.stderr
    # a run marked running whose process is gone (killed) is refused too, and nothing is written
    with Store.open(db, write=True) as st:
        rid = st.run("d").id
        st.set_status(rid, "running", pid=2**22 + 7, host=os.uname().nodename)
    with pytest.raises(UserError, match="its process .* is gone, killed at step 7"):
        request_stop(db, "d")
    with Store.open(db) as st:
        assert st.stop_request(rid) is None


def test_the_stop_request_is_in_the_trace_format(tmp_path: Path) -> None:
    """The table a request is written to is made when a store is opened for writing (older stores included), and
    readers of a store without it see no request."""
    db = tmp_path / "s.sqlite"
    ok(run_maker("run", "hanoi", "--set", "disks=3", "--agent", AGENT, "--store", db, "--run-id", "d", tmp=tmp_path))
    con = sqlite3.connect(db)
    con.execute("DROP TABLE stop_requests")
    con.commit()
    con.close()
    with Store.open(db) as st:  # read-only: no table, no request
        assert st.stop_request(st.run("d").id) is None
    with Store.open(db, write=True) as st:
        st.request_stop(st.run("d").id, "test")
        assert st.stop_request(st.run("d").id) == "test"
