"""Whole runs through the `maker` CLI against a provider that behaves like a hosted one (tests/fixtures/provider.py):
rate limits, overload and a flaky network cost time, never steps; a run killed while it waits out a rate limit, or
stopped by an open circuit, resumes to the trace an undisturbed run commits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._cli import Started, committed_steps, kill_when, ok, run_maker, step_rows, trace
from tests.fixtures.provider import Provider

RUN = ("run", "hanoi", "--set", "disks=5", "--k", "3", "--seed", "7")


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The run every test's run must match: the same seed against a provider with no limits and no faults."""
    tmp = tmp_path_factory.mktemp("undisturbed")
    with Provider() as provider:
        proc = run_maker(
            *RUN, "--agent", f"openai:m@{provider.url}", "--run-id", "base", "--store", tmp / "base.sqlite", tmp=tmp
        )
    ok(proc)
    return tmp / "base.sqlite", "base"


def _resume(tmp: Path, db: Path, run_id: str) -> dict[str, Any]:
    with Provider() as healthy:
        proc = run_maker("resume", run_id, "--agent", f"openai:m@{healthy.url}", "--store", db, "--json", tmp=tmp)
    return json.loads(ok(proc).stdout)


def test_a_run_through_a_limited_flaky_provider_commits_the_same_trace(
    tmp_path: Path, undisturbed: tuple[Path, str]
) -> None:
    """Twelve requests a second, answered 429 past that (``retry-after-ms``), and on the way a 503, a dropped
    connection, a proxy's HTML page, a 529, JSON without choices, a bare 429, a 500, a 429 saying wait a second,
    and an answer slower than the client waits: the run loses nothing and decides exactly as undisturbed."""
    faults = {
        3: "503",
        6: "drop",
        9: "garbage",
        12: "slow",
        15: "529",
        18: "nochoices",
        21: "429",
        24: "500",
        27: "429:1",
    }
    db = tmp_path / "runs.sqlite"
    with Provider(requests_per_window=12, window_s=1.0, wait_header="ms", faults=faults, slow_s=60) as provider:
        agent = f"openai:m@{provider.url},timeout=2,backoff=0.05"
        proc = run_maker(*RUN, "--agent", agent, "--run-id", "flaky", "--store", db, "--json", tmp=tmp_path)
    summary = json.loads(ok(proc).stdout)
    assert summary["status"] == "done" and summary["steps"] == 31 and summary["solved"] is True
    assert trace(db, "flaky") == trace(*undisturbed)
    for fault in ("503", "drop", "garbage", "slow", "529", "nochoices", "500"):
        assert provider.events[fault] == 1, (fault, provider.events)
    assert provider.rate_limited >= 2  # the two scripted; the window's own come on top, as the machine's speed has it


def test_killed_while_waiting_out_a_rate_limit_then_resumed_the_trace_is_an_undisturbed_runs(
    tmp_path: Path, undisturbed: tuple[Path, str], background: Callable[..., Started]
) -> None:
    """From its 40th request the provider answers 429 with ``Retry-After: 60``: the run logs that it waits (and
    waits a minute, so the kill is certain to find it waiting), is SIGKILLed, and resumes against a provider with
    no limit."""
    db = tmp_path / "runs.sqlite"
    with Provider(fail_from=40, fail_with="429:60") as limited:
        run = background(*RUN, "--agent", f"openai:m@{limited.url}", "--run-id", "killed", "--store", db)
        kill_when(
            run.proc, lambda: "rate limited; waiting" in run.stderr.read_text(), "waiting on the rate limit", run.stderr
        )
    waited = [json.loads(line) for line in run.stderr.read_text().splitlines() if "rate limited; waiting" in line]
    assert len(waited) == 1 and waited[0]["seconds"] >= 59 and waited[0]["status"] == "HTTP 429"
    # the request that met the 429, and at most the seven others in flight with it: nothing sent during the wait
    assert 1 <= limited.rate_limited <= 8 and limited.posts <= 40 + 7
    summary = _resume(tmp_path, db, "killed")
    assert summary["status"] == "done" and summary["steps"] == 31
    assert trace(db, "killed") == trace(*undisturbed)


def test_a_provider_that_keeps_failing_opens_the_circuit_and_the_run_resumes(
    tmp_path: Path, undisturbed: tuple[Path, str]
) -> None:
    """From its 30th request the provider answers 500. With ``circuit=3,circuit_minutes=0`` three failures in a
    row open the circuit: the run stops with exit 1 and one error line that names the provider, what it answered
    and how to go on; the steps decided before are committed, and a resume finishes the undisturbed trace."""
    db = tmp_path / "runs.sqlite"
    with Provider(fail_from=30, fail_with="500") as failing:
        spec = f"openai:m@{failing.url},circuit=3,circuit_minutes=0,backoff=0.01"
        proc = run_maker(*RUN, "--agent", spec, "--run-id", "down", "--store", db, tmp=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert line.startswith(f"error: {spec}: the circuit is open: "), line
    assert "it last answered HTTP 500: " in line and "scripted HTTP 500" in line
    assert "committed steps are kept; `maker resume RUN_ID` continues" in line
    # the three failures that opened the circuit and at most the seven in flight with the third: nothing more
    assert failing.posts <= 29 + 3 + 7
    committed = committed_steps(db, "down")
    assert committed is not None and committed > 0
    assert step_rows(db, "down") == step_rows(*undisturbed)[:committed]
    summary = _resume(tmp_path, db, "down")
    assert summary["status"] == "done" and summary["steps"] == 31
    assert trace(db, "down") == trace(*undisturbed)
