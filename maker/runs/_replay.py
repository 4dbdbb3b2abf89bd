"""Replay a recorded run without model calls, and fork a new run from a recorded step.

Replay is Temporal's check for workflows: the recorded answers are fed back through the
workflow's own ``next`` and ``apply``, and every recomputed microstep input must have the
recorded digest, and every recomputed state the recorded snapshot. The first difference
is reported as a :class:`~maker.errors.NondeterminismError`.

A fork (DBOS, LangGraph's time travel) is a new run that starts from the state before a
recorded step with new settings. Its own steps are numbered from that step on; the steps
before it stay in the parent's trace, and the link is kept in the store.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from maker.agents import make_agent
from maker.dsl import Done, MicrostepCall, Workflow
from maker.engine import Progress, Row, RunSummary, SplitTransition, WorkflowEnded, calls_of, reapply, roster_of
from maker.errors import NondeterminismError, StoreCorruptError, UserError
from maker.runs._branching import replay_branch, turns_of
from maker.runs._loading import recorded_workflow
from maker.runs._runs import build_engine, check_identity, finish_run, new_run_id, read_options, state_from_snapshot
from maker.store import Branch, RunRecord, Store
from maker.telemetry import run_trace

__all__ = ["ReplayResult", "replay_run", "fork_run"]


class ReplayResult(BaseModel):
    """What ``maker replay`` reports when every step matched."""

    run_id: str
    steps: int
    """Steps replayed, the parent's before a fork's own included."""
    branches: int = 0
    """Branches the run (or an ancestor, before the fork) made by backtracking; each was replayed too."""
    branch_steps: int = 0
    """The steps those branches abandoned, re-applied and checked as the live ones are."""
    snapshots_checked: int
    finished: bool | None
    """Whether the workflow says it is done after the last step (None while the run is unfinished)."""
    wall_s: float
    steps_per_s: float


def _workflow(record: RunRecord) -> Workflow[Any, Any]:
    wf_cls = recorded_workflow(record)
    check_identity(record, wf_cls, None)
    return wf_cls()


def _lineage(st: Store, record: RunRecord) -> list[RunRecord]:
    """The run and its ancestors, oldest first."""
    chain = [record]
    while chain[0].parent_run_id is not None:
        if len(chain) > 1000:
            raise StoreCorruptError(f"run {record.run_id}: its parent links form a loop")
        chain.insert(0, st.run(chain[0].parent_run_id))
    return chain


def _rows(st: Store, lineage: list[RunRecord], stop: int) -> Iterator[Row]:
    """(owning run, step, digest, answer JSON) for steps 0..stop-1 along a fork lineage."""
    for i, rec in enumerate(lineage):
        lo = rec.first_step
        end = min(stop, lineage[i + 1].first_step if i + 1 < len(lineage) else stop)
        if end <= lo:
            continue
        for a in st.answers(rec.id, lo, end):
            yield Row(rec, a.step, a.digest, a.answer)


def _lineage_turns(
    st: Store,
    wf: Workflow[Any, Any],
    lineage: list[RunRecord],
    stop: int,
    visit: Callable[[Branch, Any, RunRecord], None] | None = None,
) -> dict[int, Callable[[Any], Any]]:
    """The retries of every run of a fork lineage at its branches' steps up to ``stop`` (the parent's before the
    fork's own where both went back to the fork point), each branch seen by ``visit`` first."""
    out: dict[int, Callable[[Any], Any]] = {}
    for i, rec in enumerate(lineage):
        end = min(stop, lineage[i + 1].first_step if i + 1 < len(lineage) else stop)

        def seen(b: Branch, state: Any, rec: RunRecord = rec) -> None:
            if visit is not None:
                visit(b, state, rec)

        for step, turn in turns_of(wf, st, rec, rec.first_step, end, seen).items():
            before = out.get(step)
            out[step] = turn if before is None else _then(before, turn)
    return out


def _then(first: Callable[[Any], Any], second: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda state: second(first(state))


def _snapshots(st: Store, lineage: list[RunRecord]) -> dict[int, tuple[str, str]]:
    """step -> (run id, state JSON) of every snapshot along the lineage that a replay passes."""
    out: dict[int, tuple[str, str]] = {}
    for i, rec in enumerate(lineage):
        end = lineage[i + 1].first_step if i + 1 < len(lineage) else None
        for snap in st.snapshots(rec.id, stop=end):
            out[snap.step] = (rec.run_id, snap.state)
    return out


def replay_run(
    run_id: str, *, store: str | os.PathLike[str], on_progress: Callable[[int, int], None] | None = None
) -> ReplayResult:
    """Re-run the workflow code over the recorded answers; raise at the first nondeterminism."""
    t0 = time.perf_counter()
    with Store.open(store) as st:
        record = st.run(run_id)
        wf = _workflow(record)
        lineage = _lineage(st, record)
        # Ancestors run with other parameters computed other inputs: their answers are re-applied unchecked.
        checked_runs = {rec.run_id for rec in lineage if rec.params == record.params}
        snaps = {s: v for s, v in _snapshots(st, lineage).items() if v[0] in checked_runs}
        params = type(wf).parse_params(record.params)
        state = wf.start(params)
        total = record.steps

        def check(row: Row, call: MicrostepCall) -> None:
            rec, step_i, digest = row.owner, row.step, row.digest
            if rec.run_id in checked_runs and call.digest() != digest:
                _diverged(st, rec, step_i, digest, call)

        branches = branch_steps = 0

        def visit(branch: Branch, state_b: Any, rec: RunRecord) -> None:
            nonlocal branches, branch_steps
            branch_steps += replay_branch(st, rec, wf, branch, state_b, check)
            branches += 1

        turns = _lineage_turns(st, wf, lineage, total, visit)
        if 0 in turns:
            state = turns[0](state)
        checked = _check_snapshot(snaps, 0, state, record)

        reported = 0

        def after(step_i: int, state_i: Any, rec: RunRecord) -> None:
            nonlocal checked, reported
            if step_i in snaps:
                checked += _check_snapshot(snaps, step_i, state_i, rec)
            if on_progress is not None and step_i >> 16 != reported >> 16:
                reported = step_i
                on_progress(step_i, total)

        try:
            state, step = reapply(wf, state, _rows(st, lineage, total), 0, check=check, after=after, turns=turns)
        except WorkflowEnded as exc:
            rec, step_i, digest = exc.row.owner, exc.row.step, exc.row.digest
            raise NondeterminismError(
                f"run {rec.run_id}, step {step_i}: the workflow is done ({exc.asked!r}) but the trace has a step here",
                run_id=rec.run_id,
                step=step_i,
                expected=digest,
                actual="DONE",
                detail="the chain ended early",
            ) from None
        except SplitTransition as exc:
            raise StoreCorruptError(
                f"run {exc.owner.run_id}: the trace stops inside the fan-out of steps "
                f"{exc.first}..{exc.first + exc.size - 1}"
            ) from None
        if step != record.steps:
            raise StoreCorruptError(f"run {record.run_id}: {record.steps - step} committed step(s) are missing")
        finished = None
        if record.status == "done":
            asked = wf.next(state)
            finished = isinstance(asked, Done)
            if not finished:
                calls = calls_of(asked)
                raise NondeterminismError(
                    f"run {record.run_id} finished after {step} steps, but the replayed workflow asks for another step",
                    run_id=record.run_id,
                    step=step,
                    expected="DONE",
                    actual=calls[0].digest() if calls else repr(asked)[:100],
                    detail="the recorded run was done here",
                )
    wall = time.perf_counter() - t0
    return ReplayResult(
        run_id=run_id,
        steps=step,
        branches=branches,
        branch_steps=branch_steps,
        snapshots_checked=checked,
        finished=finished,
        wall_s=round(wall, 3),
        steps_per_s=round(step / wall, 1) if wall > 0 else 0.0,
    )


def _check_snapshot(snaps: dict[int, tuple[str, str]], step: int, state: Any, rec: RunRecord) -> int:
    found = snaps.get(step)
    if found is None:
        return 0
    owner, recorded = found
    actual = state.model_dump_json()
    if actual == recorded:
        return 1
    want, got = json.loads(recorded), json.loads(actual)
    fields = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    shown = "; ".join(f"{k}: recorded {_short(want.get(k))}, replayed {_short(got.get(k))}" for k in fields[:3])
    raise NondeterminismError(
        f"run {owner}: the state after step {step - 1} differs from the recorded snapshot ({shown}). "
        f"The workflow's apply() is not a pure function of the state and the answer, or its code changed.",
        run_id=owner,
        step=step - 1,
        expected=recorded[:200],
        actual=actual[:200],
        detail=shown,
    )


def _short(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _diverged(st: Store, rec: RunRecord, step: int, digest: str, call: MicrostepCall) -> None:
    recorded = st.step_input(rec.id, step)
    prompt = call.prompt
    if recorded is not None:
        diff = [
            line
            for line in difflib.unified_diff(
                recorded.splitlines(), prompt.splitlines(), "recorded", "replayed", n=0, lineterm=""
            )
            if not line.startswith("@@")
        ]
        detail = "\n".join(diff[:12]) or "the microstep differs (same prompt text)"
    else:
        detail = (
            f"microstep {call.microstep.name!r}, replayed prompt starts {prompt[:160]!r}. The run did not keep "
            f"its inputs (detail 'summary'); record with `detail` samples to see the text that differs."
        )
    raise NondeterminismError(
        f"run {rec.run_id}, step {step}: nondeterminism: the recomputed microstep input has digest {call.digest()}, "
        f"the trace recorded {digest}. The workflow's next() is not a pure function of its state, or its code "
        f"changed since the run.\n{detail}",
        run_id=rec.run_id,
        step=step,
        expected=digest,
        actual=call.digest(),
        detail=detail,
    )


def _state_before(
    st: Store, parent: RunRecord, wf: Workflow[Any, Any], from_step: int, new_params: BaseModel | None
) -> Any:
    """The workflow state a fork of ``parent`` starts from at ``from_step``: the parent's, from its nearest snapshot
    on (its answers re-applied, their digests checked); with ``new_params``, their start state and the parent's
    answers up to the fork point."""
    try:
        if new_params is None:
            snap_step, snap = st.latest_snapshot(parent.id, from_step)
            return state_from_snapshot(
                st,
                parent,
                wf,
                snap_step,
                snap,
                from_step,
                lambda step, digest, call: _diverged(st, parent, step, digest, call),
            )
        lineage = _lineage(st, parent)
        turns = _lineage_turns(st, wf, lineage, from_step)
        start = wf.start(new_params)
        if 0 in turns:
            start = turns[0](start)
        return reapply(wf, start, _rows(st, lineage, from_step), 0, turns=turns)[0]
    except WorkflowEnded:
        raise UserError(f"with the new parameters the workflow is done before step {from_step}") from None
    except SplitTransition as exc:
        last = exc.first + exc.size - 1
        raise UserError(
            f"step {from_step} is inside a fan-out: steps {exc.first}..{last} were asked together and are "
            f"decided together; fork from step {exc.first} (to decide them again) or {last + 1}"
        ) from None


def check_fork_step(parent: RunRecord, from_step: int) -> None:
    """Refuse a fork of ``parent`` from a step it has not reached (or from before its own first step)."""
    if not parent.first_step <= from_step <= parent.steps:
        raise UserError(
            f"run {parent.run_id} has committed steps {parent.first_step}..{parent.steps - 1}; "
            f"fork it from a step in {parent.first_step}..{parent.steps}"
            + (f", or fork its parent {parent.parent_run_id}" if parent.parent_run_id else "")
        )


def fork_run(
    run_id: str,
    from_step: int,
    *,
    store: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    new_id: str | None = None,
    on_start: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    otel: bool | None = None,
) -> RunSummary:
    """Start a new run from the state before ``from_step`` of ``run_id``, with new settings, and drive it.
    ``otel``: emit an OpenTelemetry trace of the new run's steps (the prefix it re-applies is not traced), as for
    :func:`~maker.runs.start_run`."""
    with Store.open(store) as st:
        parent = st.run(run_id)
        wf = _workflow(parent)
        wf_cls = type(wf)
        check_fork_step(parent, from_step)
        new_params = wf_cls.parse_params({**parent.params, **(params or {})})
        same = new_params.model_dump(mode="json") == parent.params
        options = dict(parent.config)
        options.update({k: v for k, v in (overrides or {}).items() if v is not None})
        opts = read_options(options)
        agents = [make_agent(s) for s in opts.agents]
        state = _state_before(st, parent, wf, from_step, None if same else new_params)
    fork_id = new_id or new_run_id(wf_cls.name)
    speculation = opts.speculation()
    roster = roster_of(agents, speculation)
    parentage = {"maker.fork.parent_run_id": parent.run_id, "maker.fork.from_step": from_step}
    # The trace is asked for before anything is written (a refusal leaves no run); the prefix re-applied above
    # called no model and is not traced.
    with run_trace(otel, workflow=wf_cls.name, seed=opts.seed, roster=roster, attributes=parentage) as tracing:
        st = Store.open(store, write=True)
        try:
            rid = st.create_run(
                fork_id,
                workflow=wf_cls.name,
                workflow_ref=parent.workflow_ref,
                workflow_version=wf_cls.version,
                params=new_params.model_dump(mode="json"),
                config=opts.model_dump(mode="json"),
                expected_steps=wf.expected_steps(new_params),
                state_json=state.model_dump_json(),
                parent_run_id=parent.run_id,
                parent_step=from_step,
            )
            st.event(
                rid,
                "fork",
                {
                    "parent": parent.run_id,
                    "from_step": from_step,
                    "overrides": dict(overrides or {}),
                    "params": dict(params or {}),
                },
            )
            if on_start:
                on_start(fork_id)
            engine = build_engine(
                wf,
                st,
                rid,
                fork_id,
                agents,
                speculation,
                opts,
                workflow_ref=parent.workflow_ref,
                expected_steps=wf.expected_steps(new_params),
                on_progress=on_progress,
                observer=tracing,
            )
            engine.ledger.start_at(from_step)
            summary = finish_run(engine, wf, state, wf_cls.name)
        finally:
            st.close()
        if tracing is not None:
            tracing.finished(summary)
        return summary
