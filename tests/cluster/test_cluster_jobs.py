"""`maker submit` and `maker jobs` against a real Ray head node started with `ray start --head`
(job server on loopback), running a workflow shipped in the working directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from tests._cli import run_maker  # noqa: E402

BIN = Path(sys.executable).parent
RAY = [str(BIN / "ray")] if (BIN / "ray").exists() else [sys.executable, "-m", "ray.scripts.scripts"]

WORKFLOW = textwrap.dedent('''
    """A user workflow that exists only in the submitted working directory."""
    from maker.workflows import Counting


    class CountFrom100(Counting, name="count-from-100", version=1):
        def start(self, params):
            return super().start(params.model_copy(update={"start": 100}))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEAD_MARK = "MAKER_TEST_RAY_HEAD"
"""Set, to the head's session folder, in the environment of the head and so of every process it starts."""


def _stop(temp: Path, timeout: float = 60) -> None:
    """SIGKILL every process of the head started in ``temp``, found by the mark in its environment (Ray's agents
    rename themselves, so their command lines do not say), until none is left. ``ray stop`` would stop every Ray
    instance of this user, those of tests running alongside too."""
    deadline = time.monotonic() + timeout
    mark = os.fsencode(f"{HEAD_MARK}={temp}")
    while True:
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != os.getpid():
                try:
                    if mark in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                        pids.append(int(d))
                except OSError:
                    continue
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def head() -> Any:
    # A one-machine head, kept on loopback as the README shows (Ray's single-machine switch), with a session folder
    # of its own (short: Ray's socket paths in it must fit in 107 bytes) and free ports, beside any other Ray.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    temp = Path(tempfile.mkdtemp(prefix="ray-"))
    env[HEAD_MARK] = str(temp)
    dash = _free_port()
    try:
        start = subprocess.run(
            [
                *RAY,
                "start",
                "--head",
                "--temp-dir",
                str(temp),
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(_free_port()),
                "--ray-client-server-port",
                str(_free_port()),
                "--dashboard-agent-listen-port",
                str(_free_port()),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(dash),
                "--include-dashboard",
                "true",
                "--num-cpus",
                "2",
                "--disable-usage-stats",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        if start.returncode != 0:
            pytest.fail(f"ray start --head failed:\n{start.stdout}\n{start.stderr}")
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _stop(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _maker(head: dict[str, Any], *args: str, cwd: Path | None = None, timeout: int = 240) -> Any:
    """``maker ARGS`` in the head's environment (its ``ray`` on the PATH, no ``RAY_ADDRESS``)."""
    return run_maker(*args, env=head["env"], cwd=cwd, timeout=timeout)


def test_submit_runs_a_shipped_workflow_and_its_trace_is_readable(head: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    (work / "mycount.py").write_text(WORKFLOW)
    store = tmp_path / "cluster-store.sqlite"
    out = _maker(
        head,
        "submit",
        "mycount:CountFrom100",
        "--address",
        head["address"],
        "--working-dir",
        str(work),
        "--agent",
        "simulated:p=0.9,tokens=5",
        "--set",
        "steps=40",
        "--k",
        "3",
        "--store",
        str(store),
        cwd=work,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCEEDED" in out.stderr
    assert '"event": "replicas ready"' in out.stdout  # the job's driver served its model from a replica actor
    job_id = out.stderr.split("job ", 1)[1].split()[0]
    run_id = out.stderr.split("run_id ", 1)[1].split()[0]

    # The store the job wrote on the cluster holds the whole run; the trace tools read it.
    stats = _maker(head, "trace", "stats", run_id, "--store", str(store), "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["steps"] == 40 and data["errors"] == 0
    shown = _maker(head, "trace", "show", run_id, "--store", str(store), "--step", "0", "--json")
    assert json.loads(shown.stdout.splitlines()[0])["answer"] == {"value": 105}  # started at 100, window of 5

    listed = _maker(head, "jobs", "list", "--address", head["address"], "--json")
    rows = {r["job_id"]: r for r in json.loads(listed.stdout)}
    assert rows[job_id]["status"] == "SUCCEEDED" and rows[job_id]["run_id"] == run_id
    status = _maker(head, "jobs", "status", job_id, "--address", head["address"], "--json")
    assert json.loads(status.stdout)["status"] == "SUCCEEDED"
    logs = _maker(head, "jobs", "logs", job_id, "--address", head["address"])
    assert f"run {run_id}: done, 40 steps" in logs.stdout


def test_submit_and_stop(head: dict[str, Any], tmp_path: Path) -> None:
    store = tmp_path / "stop.sqlite"
    out = _maker(
        head,
        "submit",
        "hanoi",
        "--address",
        head["address"],
        "--working-dir",
        str(tmp_path),
        "--no-follow",
        "--agent",
        "simulated:p=0.99,call_s=0.01",
        "--set",
        "disks=14",
        "--store",
        str(store),
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    stop = _maker(head, "jobs", "stop", job_id, "--address", head["address"])
    assert stop.returncode == 0 and job_id in stop.stdout
    logs = _maker(head, "jobs", "logs", job_id, "--address", head["address"], "--follow")
    status = _maker(head, "jobs", "status", job_id, "--address", head["address"], "--json")
    assert json.loads(status.stdout)["status"] == "STOPPED", logs.stdout


def test_submit_refuses_what_would_be_lost(head: dict[str, Any], tmp_path: Path) -> None:
    out = _maker(
        head,
        "submit",
        "hanoi",
        "--address",
        head["address"],
        "--agent",
        "simulated:p=0.9",
        "--store",
        "relative.sqlite",
    )
    assert out.returncode == 2 and "absolute path" in out.stderr
    out = _maker(
        head, "submit", "hanoi", "--address", head["address"], "--agent", "simulated:p=0.9", "--cluster", "local"
    )
    assert out.returncode == 2 and "sets --cluster itself" in out.stderr
    out = _maker(head, "submit", "hanoi", "--address", head["address"], "--bogus-option", "3")
    assert out.returncode == 2 and "bogus" in out.stderr
    out = _maker(head, "jobs", "list", "--address", "http://127.0.0.1:1")
    assert out.returncode == 2 and "cannot reach the Ray job server" in out.stderr
