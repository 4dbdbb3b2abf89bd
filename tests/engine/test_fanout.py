"""Fan-out: several calls of one transition decided at once, recorded the same whatever finishes first.

Real SQLite stores, real processes for the kill: a fan-out's decisions do not depend on the
order its calls complete in, a killed tree run resumes to the same tree and answer, replay
and fork walk fan-outs, and a workflow's mistakes with fan-out fail clearly.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import maker.engine._decider
from maker import DONE, Microstep, RunError, State, UserError, Workflow
from maker.agents import Agent, SimulatedBackend, SimulatedConfig
from maker.agents import specs as agent_specs
from maker.runs import fork_run, replay_run, resume_run, start_run
from maker.store import Store
from maker.workflows._reference import recognize
from tests._cli import Started, committed_steps, kill_when, ok, run_maker, step_rows

ROOT = Path(__file__).resolve().parents[2]
TASK_6X6 = "Multiply 877572 by 388389"


# -- completion order ---------------------------------------------------------------------------------------
class Jitter:
    """A simulated backend whose every call takes a random time: concurrent calls finish in a random order."""

    def __init__(self, inner: SimulatedBackend, seed: int, finished: list[int]) -> None:
        self.inner = inner
        self.name = inner.name
        self.rng = random.Random(seed)
        self.finished = finished

    async def generate(self, requests: Any) -> Any:
        await asyncio.sleep(self.rng.random() * 0.003)
        out = await self.inner.generate(requests)
        self.finished.extend(r.oracle.step for r in requests)
        return out

    async def aclose(self) -> None:
        return None


@pytest.fixture
def jitter(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[int]]:
    """Agent kind ``jitter:SIMULATED-OPTIONS,delay=N``; the order steps' calls finished in, by delay seed.

    Coalescing is switched off, so each decision calls the backend on its own and its rounds race the others'.
    """
    orders: dict[int, list[int]] = {}

    def make(spec: str, name: str | None, options: dict[str, Any]) -> Agent:
        options = dict(options)
        delay = int(options.pop("delay"))
        backend = SimulatedBackend(SimulatedConfig.from_options(name, options), name=spec)
        return Agent(spec, Jitter(backend, delay, orders.setdefault(delay, [])))

    class NoCoalescing:
        @staticmethod
        def over(backend: Any) -> Any:
            return backend

    monkeypatch.setitem(agent_specs.AGENT_KINDS, "jitter", make)
    monkeypatch.setattr(maker.engine._decider, "Coalescing", NoCoalescing)
    return orders


@pytest.mark.parametrize(
    "workflow, params",
    [
        ("examples.partial_products:PartialProducts", {"a": 46048, "b": 42098731}),
        ("solve", {"task": TASK_6X6}),
        ("solve", {"task": TASK_6X6, "vote": "judge"}),
    ],
    ids=["partial-products", "solve-key", "solve-judge"],
)
def test_fan_out_record_does_not_depend_on_completion_order(
    workflow: str, params: dict[str, Any], tmp_path: Path, jitter: dict[int, list[int]]
) -> None:
    agent = "simulated:p=0.85,seed=4,spread=3,malformed=0.15,overlong=0.05"
    db = tmp_path / "s.sqlite"
    base = start_run(workflow, params, {"agents": [agent], "k": 2, "seed": 1}, store=db, run_id="plain")
    assert base.status == "done" and base.red_flags > 0 and base.steps > 5
    for delay in (1, 2, 3):
        s = start_run(
            workflow,
            params,
            {"agents": [f"jitter:{agent[10:]},delay={delay}"], "k": 2, "seed": 1},
            store=db,
            run_id=f"jitter{delay}",
        )
        assert (s.steps, s.calls, s.red_flags, s.errors, s.result) == (
            base.steps,
            base.calls,
            base.red_flags,
            base.errors,
            base.result,
        )
        assert step_rows(db, f"jitter{delay}") == step_rows(db, "plain")
    # the calls really did finish in different orders
    assert len({tuple(order) for order in jitter.values()}) == 3
    assert any(order != sorted(order) for order in jitter.values())


def test_a_fan_out_goes_to_the_backend_as_one_batched_call(tmp_path: Path) -> None:
    # b has 8 digits: 8 calls asked at once; k=3 first rounds are 8 requests of 3 samples in ONE generate call
    seen: list[int] = []
    orig = SimulatedBackend.generate

    async def counting(self: SimulatedBackend, requests: Any) -> Any:
        seen.append(len(requests))
        return await orig(self, requests)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SimulatedBackend, "generate", counting)
        s = start_run(
            "examples.partial_products:PartialProducts",
            {"a": 46048, "b": 42098731},
            {"agents": ["simulated:p=1.0"], "k": 3},
            store=tmp_path / "s.sqlite",
        )
    assert s.steps == 9 and s.calls == 27 and s.solved
    assert seen == [8, 1]  # the eight rows in one call, then the sum


# -- a killed tree run ------------------------------------------------------------------------------------------
def test_sigkill_mid_tree_then_resume_gives_the_uninterrupted_tree(
    tmp_path: Path, background: Callable[..., Started]
) -> None:
    args = [
        "run",
        "solve",
        "--set",
        "task=Multiply 8479902459 by 2051802512",
        "--agent",
        "simulated:p=0.9,seed=2,call_s=0.004",
        "--k",
        "3",
        "--seed",
        "3",
        "--commit-every",
        "1",
    ]
    ref_db, db = tmp_path / "ref.sqlite", tmp_path / "killed.sqlite"
    reference = json.loads(ok(run_maker(*args, "--run-id", "T", "--store", ref_db, "--json", tmp=tmp_path)).stdout)
    assert reference["solved"] and reference["result"]["answer"] == "17399085166891177008"
    total = reference["steps"]

    # Held at the fan-out that holds step 3/4 of the way: every transition before it committed, that one not.
    hold = total * 3 // 4
    run = background(*args, "--run-id", "T", "--store", db, hold=hold)
    kill_when(run.proc, run.held, f"step {hold} held", run.stderr)
    killed_at = committed_steps(db, "T") or 0
    assert total // 2 <= killed_at <= hold < total
    with Store.open(db) as st:  # the kill left a tree half solved: some nodes have results, the root has none
        state = json.loads(st.latest_snapshot(st.run("T").id)[1])
    assert state["nodes"][0]["result"] is None and any(n["result"] for n in state["nodes"])

    summary = json.loads(ok(run_maker("resume", "T", "--store", db, "--json", tmp=tmp_path)).stdout)
    for key in ("steps", "calls", "errors", "solved", "result", "red_flags", "tokens"):
        assert summary[key] == reference[key], key
    assert step_rows(db, "T") == step_rows(ref_db, "T")
    with Store.open(db) as st, Store.open(ref_db) as rs:
        assert st.latest_snapshot(st.run("T").id) == rs.latest_snapshot(rs.run("T").id)
    assert replay_run("T", store=db).steps == total


# -- replay and fork through fan-outs ---------------------------------------------------------------------------
def test_replay_and_fork_inside_a_tree(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    s = start_run("solve", {"task": TASK_6X6}, {"agents": ["simulated:p=0.97,seed=1"], "k": 3}, store=db, run_id="P")
    assert s.solved
    assert replay_run("P", store=db).steps == s.steps
    with Store.open(db) as st:
        rows = list(st.steps(st.run("P").id))
    tags = [r[15] for r in rows]
    # the first fan-out with more than one call: the root's two children are classified together
    first = next(i for i in range(1, len(rows)) if rows[i][14] == "classify" and tags[i] == "0.0")
    assert tags[first + 1] == "0.1" and rows[first + 1][14] == "classify"
    with pytest.raises(UserError, match=rf"inside a fan-out: steps {first}\.\.{first + 1}.*fork from step {first}"):
        fork_run("P", first + 1, store=db, new_id="bad")
    with Store.open(db) as st:
        assert [r.run_id for r in st.runs()] == ["P"]  # the refused fork wrote nothing
    same = fork_run("P", first, store=db, new_id="F")
    assert same.status == "done" and same.result == s.result and same.first_step == first
    with Store.open(db) as st:
        parent = [r[:8] + r[10:] for r in st.steps(st.run("P").id, first)]
        child = [r[:8] + r[10:] for r in st.steps(st.run("F").id, first)]
    assert child == parent  # same settings and seed: the fork decides the rest of the tree as the parent did
    harder = fork_run("P", first, store=db, new_id="K5", overrides={"k": 5})
    assert harder.solved and harder.calls > same.calls
    assert replay_run("K5", store=db).steps == s.steps - first + first


# -- workflow mistakes with fan-out -------------------------------------------------------------------------------
class _Two(State):
    n: int = 0


class _Val(State):
    value: int


_ask = Microstep(
    "ask",
    prompt="Say {x}. Answer with one line: value = N",
    schema=_Val,
    mistakes=lambda right, i: _Val(value=right.value + 1 + i),
)


class EmptyFanOut(Workflow, name="empty-fan-out"):
    Params = _Two
    State = _Two
    microsteps = (_ask,)

    def start(self, params):
        return _Two()

    def next(self, state):
        return [] if state.n else [_ask.ask(x=1), _ask.ask(x=2)]

    def apply(self, state, answers):
        return state.model_copy(update={"n": state.n + len(answers)})

    def oracle(self, state):
        return (_Val(value=1), _Val(value=2))


class ShortOracle(EmptyFanOut, name="short-oracle"):
    def next(self, state):
        return [_ask.ask(x=1), _ask.ask(x=2)] if state.n < 4 else DONE

    def oracle(self, state):
        return (_Val(value=1),)


def test_fan_out_mistakes_fail_clearly_and_keep_what_was_committed(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with pytest.raises(RunError, match=r"next\(\) returned an empty list; return DONE") as err:
        start_run(EmptyFanOut, {}, {"agents": ["simulated:p=1.0"]}, store=db, run_id="E")
    assert err.value.step == 2
    with Store.open(db) as st:  # the fan-out before the bad transition is committed; the run is marked failed
        rec = st.run("E")
        assert rec.steps == 2 and rec.status == "failed" and [r[0] for r in st.steps(rec.id)] == [0, 1]
    with pytest.raises(RunError, match=r"oracle\(\) must give one answer \(or None\) per call"):
        start_run(ShortOracle, {}, {"agents": ["simulated:p=1.0"]}, store=db, run_id="O")


def test_the_error_of_the_lowest_step_is_raised_whatever_fails_first(tmp_path: Path) -> None:
    # Every sample is malformed: no call of the eight-way fan-out can be decided; each fails after max rounds.
    with pytest.raises(RunError, match=r"step 0: no answer won the vote within 2 rounds") as err:
        start_run(
            "examples.partial_products:PartialProducts",
            {"a": 7, "b": 12345678},
            {"agents": ["simulated:p=1.0,malformed=1.0"], "max_rounds": 2},
            store=tmp_path / "s.sqlite",
            run_id="M",
        )
    assert err.value.step == 0


def test_a_failed_tree_run_resumes_with_other_settings(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    # k=6 with max_rounds=1 cannot decide any step: the run fails at its first transition ...
    with pytest.raises(RunError):
        start_run(
            "solve",
            {"task": TASK_6X6},
            {"agents": ["simulated:p=0.8,seed=5"], "k": 6, "max_rounds": 1},
            store=db,
            run_id="R",
        )
    # ... and resumes with a policy that can, to the same tree as a run made that way from the start
    s = resume_run("R", store=db, overrides={"max_rounds": 100})
    ref = start_run("solve", {"task": TASK_6X6}, {"agents": ["simulated:p=0.8,seed=5"], "k": 6}, store=db, run_id="ref")
    assert s.result == ref.result and s.solved and step_rows(db, "R") == step_rows(db, "ref")
    assert recognize(TASK_6X6) is not None and s.result["answer"] == recognize(TASK_6X6).answer()
