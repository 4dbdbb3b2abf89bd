"""The speculative window: steps drafted and decided ahead of the chain, the committed trace the same for every
window (and the same as one step at a time), wasted calls counted, a killed windowed run resumed to the same trace."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maker.runs import start_run
from maker.store import Store
from tests._cli import Started, committed_steps, has_committed, kill_when, ok, run_maker, trace


def _trace(db: Path, run_id: str) -> tuple[Any, ...]:
    """Every step row (timings aside), every sample (:func:`tests._cli.trace`), and the counters the run record
    keeps."""
    with Store.open(db) as st:
        rec = st.run(run_id)
    counters = (rec.steps, rec.calls, rec.red_flags, rec.errors, rec.max_rounds, rec.tokens, rec.solved)
    return (*trace(db, run_id), counters)


# drafters that err and write malformed or over-long drafts; verifiers with false positives; escalation when a
# draft is rejected, and an escalation agent past --max-rounds.
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "score verifiers": (
        "hanoi",
        {"disks": 7},
        {
            "agents": ["simulated:p=0.97,seed=1,spread=2,malformed=0.02,call_s=0.002"],
            "drafter": "simulated:p=0.85,seed=2,malformed=0.05,overlong=0.03,call_s=0.0005",
            "verifiers": ["simulated:seed=3,tpr=0.95,fpr=0.2,call_s=0.002", "simulated:seed=4,tpr=0.9,fpr=0.3"],
            "verify_k": 1,
            "k": 2,
        },
    ),
    "vote verifiers, routing, large first": (
        "hanoi",
        {"disks": 6},
        {
            "agents": ["simulated:p=0.99,seed=5,hard_fraction=0.1,call_s=0.002"],
            "drafter": "simulated:p=0.8,seed=6,hard_fraction=0.1,call_s=0.0005",
            "verifiers": ["simulated:p=0.9,seed=7,call_s=0.001"],
            "verify": "vote",
            "verify_k": 2,
            "entropy_threshold": 1.0,
            "large_first": 5,
            "k": 2,
        },
    ),
    "escalation past max rounds": (
        "addition",
        {"digits": 80, "seed": 3},
        {
            "agents": ["simulated:p=0.55,seed=8,call_s=0.001", "simulated:p=0.99,seed=9,call_s=0.002"],
            "drafter": "simulated:p=0.7,seed=10,call_s=0.0005",
            "verifiers": ["simulated:seed=11,tpr=0.9,fpr=0.1"],
            "max_rounds": 2,
            "k": 3,
        },
    ),
    "voted drafts, false rejects": (
        "hanoi",
        {"disks": 7},
        {
            "agents": ["simulated:p=0.99,seed=15,call_s=0.002"],
            "drafter": "simulated:p=0.65,seed=16,malformed=0.05,spread=2,call_s=0.0005",
            "draft_k": 2,
            "draft_batch": 3,
            "verifiers": ["simulated:seed=17,tpr=0.85,fpr=0.1,call_s=0.002"],
            "k": 2,
        },
    ),
    "fan-out (a task tree)": (
        "solve",
        {"task": "Multiply 8479902459 by 2051802512"},
        {
            "agents": ["simulated:p=0.95,seed=12,malformed=0.03,call_s=0.002"],
            "drafter": "simulated:p=0.85,seed=13,call_s=0.0005",
            "verifiers": ["simulated:seed=14,tpr=0.95,fpr=0.1"],
            "k": 2,
        },
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_committed_trace_for_every_window(case: str, tmp_path: Path) -> None:
    workflow, params, options = CASES[case]
    db = tmp_path / "w.sqlite"
    runs = {}
    for name, window in (
        ("w1", {"window": 1}),
        ("w4", {"window": 4, "fixed_window": True}),
        ("w32", {"window": 32, "fixed_window": True}),
        ("adaptive", {"window": 64}),
    ):
        runs[name] = start_run(
            workflow, params, {**options, **window, "seed": 21, "detail": "samples"}, store=db, run_id=name
        )
    base = _trace(db, "w1")
    assert runs["w1"].wasted_calls == 0
    assert runs["w1"].escalated > 0 and runs["w1"].accepted > 0
    for name in ("w4", "w32", "adaptive"):
        assert _trace(db, name) == base, name
        s = runs[name]
        assert (s.drafted, s.accepted, s.escalated, s.calls, s.agent_calls) == (
            runs["w1"].drafted,
            runs["w1"].accepted,
            runs["w1"].escalated,
            runs["w1"].calls,
            runs["w1"].agent_calls,
        )
    # running ahead on drafts that turned out wrong costs calls, and they are counted, never committed
    assert runs["w32"].wasted_calls > 0 and runs["w32"].wasted_tokens > 0
    assert sum(runs["w32"].wasted_agent_calls.values()) == runs["w32"].wasted_calls


def test_wasted_calls_show_in_trace_stats_and_the_window_adapts(tmp_path: Path) -> None:
    """A poor drafter (p = 0.6), fifty times faster than the verifier: a fixed window of 32 fills up and wastes
    much; the adaptive window keeps about 0.4 of the short runs of predictions that hold, and wastes far less."""
    db = tmp_path / "w.sqlite"
    base = {
        "agents": ["simulated:p=0.99,seed=1,call_s=0.01"],
        "drafter": "simulated:p=0.6,seed=2,call_s=0.0002",
        "verifiers": ["simulated:seed=3,tpr=0.99,fpr=0.01,call_s=0.01"],
        "k": 2,
        "seed": 4,
    }
    fixed = start_run("hanoi", {"disks": 7}, {**base, "window": 32, "fixed_window": True}, store=db, run_id="fixed")
    adaptive = start_run("hanoi", {"disks": 7}, {**base, "window": 32}, store=db, run_id="adaptive")
    assert _trace(db, "fixed") == _trace(db, "adaptive")
    assert 0 < adaptive.wasted_calls < fixed.wasted_calls / 2
    out = run_maker("trace", "stats", "adaptive", "--store", db, "--json", tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    window = json.loads(out.stdout)["speculation"]["window"]
    assert window["wasted_calls"] == adaptive.wasted_calls and window["predictions_missed"] > 0
    assert window["predictions_held"] + window["predictions_missed"] > 0
    text = run_maker("trace", "stats", "adaptive", "--store", db, tmp=tmp_path).stdout
    assert "window            predictions held" in text and "wasted" in text


def test_sigkill_mid_window_resumes_to_the_same_trace(tmp_path: Path, background: Callable[..., Started]) -> None:
    args = [
        "run",
        "hanoi",
        "--set",
        "disks=9",
        "--agent",
        "simulated:p=0.99,seed=1,call_s=0.004",
        "--drafter",
        "simulated:p=0.9,seed=2,call_s=0.0005",
        "--verifier",
        "simulated:seed=3,tpr=0.99,fpr=0.05,call_s=0.004",
        "--k",
        "2",
        "--seed",
        "6",
        "--window",
        "32",
        "--commit-seconds",
        "0.05",
        "--commit-every",
        "10",
        "--run-id",
        "K",
    ]
    ok(run_maker(*args, "--store", tmp_path / "ref.sqlite", "--window", "1", "--json", tmp=tmp_path))
    db = tmp_path / "killed.sqlite"
    # Held at step 300: the chain commits at least up to step 291 and can go no further, so the kill at 200
    # committed steps lands on a running process.
    run = background(*args, "--store", db, hold=300)
    kill_when(run.proc, lambda: has_committed(db, "K", 200), "200 committed steps", run.stderr)
    killed_at = committed_steps(db, "K")
    assert killed_at is not None and 200 <= killed_at <= 300
    done = run_maker("resume", "K", "--store", db, "--json", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _trace(db, "K") == _trace(tmp_path / "ref.sqlite", "K")
    assert json.loads(done.stdout)["steps"] == 511


def test_window_without_a_drafter_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    a = start_run("hanoi", {"disks": 5}, {"agents": ["simulated:p=0.9,seed=1"], "window": 32}, store=db, run_id="a")
    b = start_run("hanoi", {"disks": 5}, {"agents": ["simulated:p=0.9,seed=1"], "window": 1}, store=db, run_id="b")
    assert _trace(db, "a") == _trace(db, "b") and a.wasted_calls == b.wasted_calls == 0


def test_a_speculative_run_prints_its_error_estimate_and_warns_naming_the_fix(tmp_path: Path) -> None:
    base = [
        "run",
        "hanoi",
        "--set",
        "disks=8",
        "--agent",
        "simulated:p=0.998,seed=1",
        "--drafter",
        "simulated:p=0.9,seed=2",
        "--store",
        tmp_path / "p.sqlite",
    ]
    one = run_maker(*base, "--verifier", "simulated:seed=3,tpr=0.99,fpr=0.05", tmp=tmp_path)
    assert one.returncode == 0, one.stderr
    lines = one.stderr.splitlines()
    estimate = next(ln for ln in lines if ln.startswith("speculation estimate: 255 steps"))
    assert "expected wrong steps 1.3" in estimate
    warning = next(ln for ln in lines if ln.startswith("warning:"))
    assert "--verify-k 3" in warning and lines.index(warning) < next(
        i for i, ln in enumerate(lines) if ln.startswith("run_id:")
    )  # before the run starts
    four = [a for i in range(4) for a in ("--verifier", f"simulated:seed={10 + i},tpr=0.99,fpr=0.05")]
    safe = run_maker(*base, *four, "--verify-k", "4", tmp=tmp_path)
    assert safe.returncode == 0, safe.stderr
    assert "speculation estimate" in safe.stderr and "warning:" not in safe.stderr
