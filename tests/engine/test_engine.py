"""Engine behaviour: escalation, the adaptive rule, progress reports, batching."""

from __future__ import annotations

import json

import pytest

from maker import StepUndecidedError, WorkflowCodeError
from maker.agents import SimulatedBackend
from maker.runs import start_run
from maker.store import Store
from maker.voting import Voting, is_decided
from tests._cli import ok, run_maker, stored_steps


def test_undecided_steps_escalate_to_the_next_agent(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    # The first agent is a coin flip between two answers and gets three rounds; the second is reliable.
    summary = start_run(
        "addition",
        {"digits": 60},
        {"agents": ["simulated:p=0.5,spread=1,seed=1", "simulated:p=0.999,seed=2"], "k": 4, "max_rounds": 3},
        store=store,
        run_id="esc",
    )
    # the coin-flipping agent sometimes wins a vote for the wrong answer; that is what errors counts
    assert summary.status == "done" and summary.steps == 60
    rows = stored_steps(store, "esc")
    agents = [row[7] for row in rows]
    assert 1 in agents, "some steps must have been decided by the escalation agent"
    assert 0 in agents, "the coin flip decides a step when one answer gets four ahead within its three rounds"
    assert all(row[4] <= 3 for row in rows if row[7] == 0)
    escalated = [row for row in rows if row[7] == 1]
    assert all(row[4] >= 4 for row in escalated), "an escalated step spent its rounds with the first agent"
    assert all(row[10] == 1 for row in escalated), "the reliable agent decided its steps correctly"


def test_without_an_escalation_agent_the_run_fails_resumably(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    with pytest.raises(StepUndecidedError) as info:
        start_run(
            "addition",
            {"digits": 60},
            {"agents": ["simulated:p=0.5,spread=1"], "k": 6, "max_rounds": 1},
            store=store,
            run_id="fail",
        )
    assert info.value.retryable and info.value.run_id == "fail" and info.value.step is not None
    assert "maker resume fail" in str(info.value)
    with Store.open(store) as st:
        rec = st.run("fail")
        assert rec.status == "failed"
        assert st.head(rec.id) == (info.value.step, info.value.step)


def test_adaptive_rule_decides_by_posterior(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    summary = start_run(
        "addition",
        {"digits": 300},
        {"agents": ["simulated:p=0.9,seed=4"], "rule": "adaptive", "confidence": 0.99},
        store=store,
        run_id="ad",
    )
    assert summary.status == "done"
    policy = Voting(rule="adaptive", confidence=0.99)
    for row in stored_steps(store, "ad"):
        counts = json.loads(row[3])
        top, second = counts[0], (counts[1] if len(counts) > 1 else 0)
        assert is_decided(policy, top, second)
        # one vote fewer for the leader would not have decided it
        assert not is_decided(policy, top - 1, second) or top - 1 <= second


def test_samples_of_a_step_are_requested_in_batches(tmp_path, monkeypatch) -> None:
    sizes: list[int] = []
    original = SimulatedBackend.generate

    async def spy(self, requests):
        sizes.extend(r.n for r in requests)
        return await original(self, requests)

    monkeypatch.setattr(SimulatedBackend, "generate", spy)
    summary = start_run(
        "addition", {"digits": 50}, {"agents": ["simulated:p=0.95"], "k": 3}, store=tmp_path / "s.sqlite"
    )
    assert summary.steps == 50
    assert sizes.count(3) >= 45, "each step opens with one batch of k samples"
    assert sum(sizes) == summary.calls + summary.spare_samples
    assert all(n == 3 for n in sizes), "later rounds are filled up to the first round's size"


def _trace(store, run_id):
    with Store.open(store) as st:
        rid = st.run(run_id).id
        steps = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[10]) for r in st.steps(rid)]
        return steps, [st.samples(rid, i) for i in range(len(steps))]


def test_filling_rounds_ahead_gives_the_same_decisions_as_asking_for_exactly_what_each_round_needs(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    # A weak agent with spread-out wrong answers needs many rounds of one or two samples.
    opts = {"agents": ["simulated:p=0.7,spread=3,malformed=0.05,seed=4"], "k": 4, "detail": "samples"}
    exact = start_run("addition", {"digits": 40}, {**opts, "batch": 1}, store=store, run_id="exact")
    traces = {}
    for batch in (None, 7):
        s = start_run("addition", {"digits": 40}, {**opts, "batch": batch}, store=store, run_id=f"b{batch}")
        assert (s.calls, s.errors, s.red_flags, s.tokens) == (exact.calls, exact.errors, exact.red_flags, exact.tokens)
        assert s.spare_samples > 0, "rounds were filled ahead and the unneeded rest dropped"
        traces[batch] = _trace(store, f"b{batch}")
    assert exact.spare_samples == 0
    assert exact.max_rounds > 3
    assert traces[None] == traces[7] == _trace(store, "exact")


def test_progress_reports_arrive_on_long_runs(tmp_path) -> None:
    seen = []
    summary = start_run(
        "hanoi",
        {"disks": 12},
        {"agents": ["simulated:p=0.999,call_s=0.00005"]},
        store=tmp_path / "s.sqlite",
        on_progress=seen.append,
    )
    assert summary.steps == 4095
    assert seen, "a run of a few seconds reports progress"
    assert all(p.expected_steps == 4095 and 0 < p.steps <= 4095 for p in seen)
    assert [p.steps for p in seen] == sorted(p.steps for p in seen)


def test_a_crash_in_workflow_code_keeps_committed_steps_and_marks_the_run_failed(tmp_path) -> None:
    from examples.countdown import Count, Countdown

    class Brittle(Countdown, name="brittle"):
        def apply(self, state: Count, answer):
            if state.steps == 7:
                raise ZeroDivisionError("bug in apply")
            return super().apply(state, answer)

    store = tmp_path / "s.sqlite"
    with pytest.raises(WorkflowCodeError) as info:
        start_run(Brittle, {"start": 20}, {"agents": ["simulated:p=0.99"]}, store=store, run_id="b")
    assert isinstance(info.value.__cause__, ZeroDivisionError) and info.value.step == 7
    with Store.open(store) as st:
        rec = st.run("b")
        assert rec.status == "failed" and "ZeroDivisionError: bug in apply" in rec.error
        # the seven steps before the crash are kept, and the snapshot is the state after them
        assert st.head(rec.id) == (7, 7)
        step, state = st.latest_snapshot(rec.id)
        assert step == 7 and Count.model_validate_json(state).value == 13


def test_debug_logs_one_json_line_per_committed_step(tmp_path) -> None:
    proc = ok(
        run_maker(
            "run",
            "hanoi",
            "--set",
            "disks=4",
            "--agent",
            "simulated:gpt-4.1-mini",
            "--store",
            tmp_path / "s.sqlite",
            "--run-id",
            "dbg",
            "--log-level",
            "debug",
            tmp=tmp_path,
        )
    )
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step committed"]
    assert [e["step"] for e in steps] == list(range(15))
    assert all(e["run_id"] == "dbg" and e["level"] == "debug" and e["correct"] == 1 for e in steps)
