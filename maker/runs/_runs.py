"""Starting and resuming runs: the glue between a workflow, its agents, the store and the engine."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from maker.agents import Agent
from maker.cluster.config import ClusterOptions
from maker.dsl import MicrostepCall, Workflow
from maker.engine import (
    Budget,
    BudgetExceeded,
    Engine,
    EngineConfig,
    Observer,
    Progress,
    Recipe,
    Row,
    RunSummary,
    Speculation,
    WorkflowEnded,
    reapply,
    roster_of,
)
from maker.errors import RunError, RunMismatchError, StopRequested, StoreCorruptError, UserError
from maker.runs._branching import restore_backtracker, turns_of
from maker.runs._loading import canonical_ref, recorded_workflow, resolve_workflow, workflow_ref
from maker.runs._options import DEFAULT_WINDOW, RunOptions, options_error
from maker.store import RunLine, RunRecord, Store
from maker.telemetry import run_trace

log = structlog.get_logger("maker")

__all__ = [
    "request_stop",
    "check_resumable",
    "start_run",
    "resume_run",
    "new_run_id",
    "shown_status",
    "new_run",
    "reopen_run",
    "read_options",
    "build_engine",
    "engine_config",
    "drive",
    "finish_run",
    "is_live",
    "check_identity",
    "state_from_snapshot",
]


def new_run_id(workflow: str) -> str:
    return f"{workflow}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def read_options(values: Mapping[str, Any]) -> RunOptions:
    try:
        return RunOptions.model_validate(dict(values))
    except ValidationError as exc:
        raise options_error(exc) from None


def start_run(
    workflow: str | type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    options: RunOptions | Mapping[str, Any],
    *,
    store: str | os.PathLike[str],
    run_id: str | None = None,
    on_start: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    otel: bool | None = None,
) -> RunSummary:
    """Start a new run and drive it to the end (or to a failure, which is resumable). ``otel``: emit an
    OpenTelemetry trace of it (True), never (False), or when the environment asks (None; see
    :mod:`maker.telemetry`)."""
    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    opts = options if isinstance(options, RunOptions) else read_options(options)
    wf_cls().start(wf_cls.parse_params(params))  # bad parameters fail before anything is written
    with contextlib.ExitStack() as stack:
        make = opts.agent_maker(stack)
        agents = [make(s) for s in opts.agents]  # and so do bad agent specs
        opts.ensemble_weights(agents)  # and an ensemble agent whose p is unknown
        spec = opts.speculation(make)
        roster = roster_of(agents, spec)
        tracing = stack.enter_context(run_trace(otel, workflow=wf_cls.name, seed=opts.seed, roster=roster))
        st = stack.enter_context(Store.create(store))
        ref = canonical_ref(workflow) if isinstance(workflow, str) else None  # a file by its absolute path
        engine, wf, state = new_run(
            wf_cls,
            params,
            opts,
            st=st,
            agents=agents,
            speculation=spec,
            run_id=run_id,
            ref=ref,
            on_progress=on_progress,
            observer=tracing,
        )
        if on_start:
            on_start(engine.run_id)
        summary = finish_run(engine, wf, state, wf_cls.name)
        if tracing is not None:
            tracing.finished(summary)
        return summary


def new_run(
    wf_cls: type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    opts: RunOptions,
    *,
    st: Store,
    agents: list[Agent],
    speculation: Any,
    run_id: str | None = None,
    ref: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    budget: Budget | None = None,
    observer: Observer | None = None,
) -> tuple[Engine, Workflow[Any, Any], Any]:
    """Record a new run in an open store and build its engine (with agents that may serve other runs too).
    ``budget``: one shared with other runs (an evaluation's), instead of the run's options' own; ``observer``: told
    of its commits and notable steps (a trace)."""
    p = wf_cls.parse_params(params)
    wf = wf_cls()
    state = wf.start(p)
    run_id = run_id or new_run_id(wf_cls.name)
    record_ref = ref or workflow_ref(wf_cls)
    rid = st.create_run(
        run_id,
        workflow=wf_cls.name,
        workflow_ref=record_ref,
        workflow_version=wf_cls.version,
        params=p.model_dump(mode="json"),
        config=opts.model_dump(mode="json"),
        expected_steps=wf.expected_steps(p),
        state_json=state.model_dump_json(),
    )
    engine = build_engine(
        wf,
        st,
        rid,
        run_id,
        agents,
        speculation,
        opts,
        workflow_ref=record_ref,
        expected_steps=wf.expected_steps(p),
        on_progress=on_progress,
        budget=budget,
        observer=observer,
    )
    return engine, wf, state


def resume_run(
    run_id: str,
    *,
    store: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cluster: ClusterOptions | None = None,
    otel: bool | None = None,
) -> RunSummary:
    """Continue a stopped, killed or failed run from its last commit.

    ``params``, when given, must equal the recorded ones; ``overrides`` may change the
    agents and voting settings (recorded as an event). Nothing is written until every
    check has passed. ``otel``: as for :func:`start_run`.
    """
    st = Store.open(store, write=False)
    try:
        record = st.run(run_id)
        wf_cls, opts = _resumable(record, params, overrides)
        opts.cluster = cluster
        state = _recover_state(st, record, wf_cls())
    finally:
        st.close()
    with contextlib.ExitStack() as stack:
        make = opts.agent_maker(stack)
        agents = [make(s) for s in opts.agents]
        spec = opts.speculation(make)
        roster = roster_of(agents, spec)
        tracing = stack.enter_context(run_trace(otel, workflow=wf_cls.name, seed=opts.seed, roster=roster))
        st = stack.enter_context(Store.open(store, write=True))
        engine, wf = _reopened(
            st, record, wf_cls, opts, overrides, agents, spec, on_progress, observer=tracing, head=state
        )
        summary = finish_run(engine, wf, state, wf_cls.name)
        if tracing is not None:
            tracing.finished(summary)
        return summary


def reopen_run(
    st: Store,
    record: RunRecord,
    *,
    agents: list[Agent],
    speculation: Any,
    overrides: Mapping[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    budget: Budget | None = None,
    observer: Observer | None = None,
) -> tuple[Engine, Workflow[Any, Any], Any]:
    """Resume a run of an open store: its engine (with the given agents) and the state to go on from. ``budget``:
    one shared with other runs (an evaluation's), which has counted what this run spent before already; ``observer``:
    told of its commits and notable steps (a trace)."""
    wf_cls, opts = _resumable(record, None, overrides)
    state = _recover_state(st, record, wf_cls())
    engine, wf = _reopened(
        st, record, wf_cls, opts, overrides, agents, speculation, on_progress, budget, observer=observer, head=state
    )
    return engine, wf, state


def _resumable(
    record: RunRecord, params: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None
) -> tuple[type[Workflow[Any, Any]], RunOptions]:
    wf_cls = recorded_workflow(record)
    check_identity(record, wf_cls, params)
    if record.status == "done":
        raise UserError(f"run {record.run_id} already finished ({record.steps} steps); nothing to resume")
    _check_not_live(record)
    options = dict(record.config)
    options.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return wf_cls, read_options(options)


def _reopened(
    st: Store,
    record: RunRecord,
    wf_cls: type[Workflow[Any, Any]],
    opts: RunOptions,
    overrides: Mapping[str, Any] | None,
    agents: list[Agent],
    speculation: Any,
    on_progress: Callable[[Progress], None] | None,
    budget: Budget | None = None,
    observer: Observer | None = None,
    head: Any = None,
) -> tuple[Engine, Workflow[Any, Any]]:
    """The engine of a run that goes on from ``head``, the state after its committed steps."""
    st.set_status(record.id, "running", pid=os.getpid(), host=os.uname().nodename, config=opts.model_dump(mode="json"))
    st.clear_stop(record.id)
    st.event(record.id, "resume", {"from_step": record.steps, "overrides": dict(overrides or {})})
    wf = wf_cls()
    p = wf_cls.parse_params(record.params)
    engine = build_engine(
        wf,
        st,
        record.id,
        record.run_id,
        agents,
        speculation,
        opts,
        workflow_ref=record.workflow_ref or record.workflow,
        expected_steps=wf.expected_steps(p),
        on_progress=on_progress,
        budget=budget,
        observer=observer,
    )
    engine.ledger.restore(record, spent=budget is None)
    bt = engine.scheduler.backtracker
    if bt is not None:

        def state_at(step: int) -> Any:
            snap_step, snap = st.latest_snapshot(record.id, step)
            return state_from_snapshot(st, record, wf, snap_step, snap, step)

        engine.decider.on_branch(restore_backtracker(bt, st, record, wf, head, state_at))
    return engine, wf


def check_identity(record: RunRecord, wf_cls: type[Workflow[Any, Any]], params: Mapping[str, Any] | None) -> None:
    if wf_cls.version != record.workflow_version:
        raise RunMismatchError(
            f"run {record.run_id} was made by {record.workflow_ref or record.workflow} version "
            f"{record.workflow_version}, but that workflow is now version {wf_cls.version}; its steps would not "
            f"mean the same. Fork a new run instead."
        )
    if params:
        given = wf_cls.parse_params({**record.params, **params}).model_dump(mode="json")
        if given != record.params:
            diff = {k: (record.params.get(k), given.get(k)) for k in given if given.get(k) != record.params.get(k)}
            shown = ", ".join(f"{k}: recorded {a!r}, given {b!r}" for k, (a, b) in diff.items())
            raise RunMismatchError(
                f"run {record.run_id} was started with different parameters ({shown}); "
                f"resume without `params`, or start a new run"
            )


def is_live(record: RunRecord | RunLine) -> bool:
    """Whether a run marked running still has its process (on this host; other hosts count as live)."""
    if record.status != "running" or record.pid is None:
        return False
    if record.host != os.uname().nodename:
        return True
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shown_status(record: RunRecord | RunLine) -> str:
    """The status to show a person: a 'running' run whose process is gone was killed."""
    if record.status == "running" and not is_live(record):
        return "killed"
    return record.status


def check_resumable(record: RunRecord) -> None:
    """The checks ``maker resume`` makes before it writes anything: the run is not finished, not running, and its
    workflow's code is found. Raises :class:`UserError` (or a store error) saying why not."""
    _resumable(record, None, None)


def request_stop(store: str | os.PathLike[str], run_id: str, *, source: str = "maker stop") -> RunRecord:
    """Ask a running run to stop at its next commit (the process running it reads the request when it commits, and
    about every :data:`STOP_POLL_S` seconds while it waits on its models; ``maker resume`` goes on afterwards). Refused, with nothing written, for a run that is not running. Returns the
    run's record as it was when asked."""
    with Store.open(store, write=True) as st:
        record = st.run(run_id)
        if record.status != "running":
            raise UserError(f"run {run_id} is not running ({record.status} at step {record.steps:,}); nothing to stop")
        if not is_live(record):
            raise UserError(
                f"run {run_id} is not running: its process ({record.pid}) is gone, killed at step {record.steps:,}; "
                f"its committed steps are kept (`maker resume {run_id}` goes on)"
            )
        st.request_stop(record.id, source)
    return record


def _check_not_live(record: RunRecord) -> None:
    if record.pid == os.getpid() or record.host != os.uname().nodename or not is_live(record):
        return
    raise UserError(f"run {record.run_id} is still running (pid {record.pid}); stop it before resuming")


def _recover_state(st: Store, record: RunRecord, wf: Workflow[Any, Any]) -> Any:
    count, top = st.head(record.id, record.first_step)
    if count != top:
        raise StoreCorruptError(f"run {record.run_id}: {top - count} committed step(s) are missing; cannot resume")
    if count != record.steps:
        raise StoreCorruptError(
            f"run {record.run_id}: the run row says {record.steps} steps but {count} are stored; cannot resume"
        )
    snap_step, snap = st.latest_snapshot(record.id)
    if snap_step > count:
        raise StoreCorruptError(f"run {record.run_id}: snapshot at step {snap_step} is past the last step {count}")
    return state_from_snapshot(st, record, wf, snap_step, snap, count)


def state_from_snapshot(
    st: Store,
    record: RunRecord,
    wf: Workflow[Any, Any],
    snap_step: int,
    snap: str,
    stop: int,
    mismatch: Callable[[int, str, MicrostepCall], None] | None = None,
) -> Any:
    """The state before step ``stop``: the snapshot taken at ``snap_step``, then the run's recorded answers
    of the steps in between, each step's recomputed input checked against its recorded digest.

    ``mismatch(step, recorded digest, call)`` may raise a more telling error than the default. Raises
    :class:`~maker.engine._reapply.SplitTransition` when ``stop`` is inside a fan-out.
    """
    try:
        state = type(wf).State.model_validate_json(snap)
    except ValidationError as exc:
        raise StoreCorruptError(
            f"run {record.run_id}: the state snapshot at step {snap_step} is unreadable: {exc}"
        ) from None

    def check(row: Row, call: MicrostepCall) -> None:
        if call.digest() != row.digest:
            if mismatch is not None:
                mismatch(row.step, row.digest, call)
            raise StoreCorruptError(
                f"run {record.run_id}: step {row.step} input digest {call.digest()} does not match the recorded "
                f"{row.digest}"
            )

    rows = (Row(record, r.step, r.digest, r.answer) for r in st.steps(record.id, snap_step, stop))
    # the snapshot at a branch's step holds the state after its retry: the retries after it are re-applied
    turns = turns_of(wf, st, record, snap_step + 1, stop)
    try:
        return reapply(wf, state, rows, snap_step, check=check, turns=turns)[0]
    except WorkflowEnded as exc:
        raise StoreCorruptError(
            f"run {record.run_id}: the workflow ended before recorded step {exc.row.step}"
        ) from None


def engine_config(opts: RunOptions, workflow_ref: str | None, agents: list[Agent] | None = None) -> EngineConfig:
    """The engine's configuration from a run's options (and, for an ensemble's weights, its voting ``agents``):
    made once, frozen."""
    return EngineConfig(
        weights=opts.ensemble_weights(agents) if agents is not None else None,
        seed=opts.seed,
        voting=opts.voting(),
        detail=opts.detail,
        max_tokens=opts.max_tokens,
        commit_every=opts.commit_every,
        commit_seconds=opts.commit_seconds,
        log_steps=opts.log_steps,
        window=opts.window or (1 if opts.backtracks else DEFAULT_WINDOW),
        backtracks=opts.backtracks,
        adaptive_window=not opts.fixed_window,
        snapshot_every=opts.snapshot_every(),
        workflow_ref=workflow_ref,
        prices=opts.price_table(),
    )


def build_engine(
    wf: Workflow[Any, Any],
    st: Store,
    rid: int,
    run_id: str,
    agents: list[Agent],
    speculation: Speculation | None,
    opts: RunOptions,
    *,
    workflow_ref: str | None,
    expected_steps: int | None,
    on_progress: Callable[[Progress], None] | None,
    budget: Budget | None = None,
    observer: Observer | None = None,
) -> Engine:
    """A run's engine, with a cluster replica running the chain ahead where the run's options and agents allow.
    ``budget``: what the run may spend (default: its options' ``max_cost`` and ``token_budget``; an evaluation
    hands every problem's run the same one); ``observer``: told of its commits and notable steps (a trace)."""
    config = engine_config(opts, workflow_ref, agents)
    ahead = None
    if opts.cluster is not None and opts.backtracks:
        log.info("lookahead off: a run that backtracks decides its steps again on new branches")
    elif opts.cluster is not None:
        # Both keep calls in flight ahead of the chain: a replica running the chain ahead (one model in every role)
        # unless the window was asked for, or lookahead does not apply.
        window = config.window if speculation is not None else 1
        if opts.window is not None and window > 1:
            log.info("lookahead off: the speculative window runs ahead instead")
        else:
            from maker.cluster import attach

            roster = roster_of(agents, speculation)
            ahead = attach(roster, Recipe.of(wf, config, roster, speculation), opts.cluster.lookahead)
            if ahead is not None:
                config = dataclasses.replace(config, window=1)
            elif window > 1:
                log.info("lookahead off: the speculative window runs ahead instead")
    return Engine(
        workflow=wf,
        config=config,
        agents=agents,
        speculation=speculation,
        store=st,
        rid=rid,
        run_id=run_id,
        expected_steps=expected_steps,
        on_progress=on_progress,
        ahead=ahead,
        budget=budget if budget is not None else opts.budget(),
        observer=observer,
    )


def finish_run(engine: Engine, wf: Workflow[Any, Any], state: Any, name: str) -> RunSummary:
    """Run an engine's chain to the end in this thread (:func:`drive` on its own event loop); Ctrl-C or SIGTERM
    leaves the run marked interrupted, its decided steps committed."""
    st = engine.store
    assert st is not None  # engines built here always have one (only rollout engines have none)
    try:
        return asyncio.run(drive(engine, wf, state, name))
    except (KeyboardInterrupt, SystemExit):
        st.set_status(engine.rid, "interrupted", error="interrupted")
        raise


async def drive(engine: Engine, wf: Workflow[Any, Any], state: Any, name: str, *, close: bool = True) -> RunSummary:
    """Run an engine's chain to the end and record how it ended; ``close=False`` leaves shared backends open."""
    st = engine.store
    assert st is not None  # engines built here always have one (only rollout engines have none)
    status, error, solved, result = "done", None, None, None
    try:
        try:
            final = await _stoppable(engine, state)
        finally:
            if close:
                await engine.aclose()
        solved = wf.solved(final)
        if solved is not None and engine.ledger.errors:
            solved = False
        result = wf.result(final)
    except BudgetExceeded as exc:  # stopped at a commit, as asked: nothing failed
        st.set_status(engine.rid, "stopped", error=str(exc))
        raise
    except StopRequested as exc:  # somebody asked it to stop (maker stop, the UI): as Ctrl-C, at a commit
        st.set_status(engine.rid, "interrupted", error=str(exc))
        raise
    except RunError as exc:
        status, error = "failed", str(exc)
        _keep_failure(engine, exc)
        st.set_status(engine.rid, status, error=error)
        raise
    except asyncio.CancelledError:
        st.set_status(engine.rid, "interrupted", error="interrupted")
        raise
    except Exception as exc:  # anything else (a backend, a definition error met mid-run): committed steps stay
        st.set_status(engine.rid, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    st.set_status(engine.rid, status, solved=None if solved is None else int(solved), result=result)
    return summarize(engine, name, status, solved, result, error)


STOP_POLL_S = 1.0
"""How often a run waiting on its models looks for a stop request (a run deciding steps reads it at each commit)."""


async def _stoppable(engine: Engine, state: Any) -> Any:
    """The chain from ``state``, stopped when somebody asks (:func:`request_stop`): read at each commit, and by a
    watcher every :data:`STOP_POLL_S` seconds, which cancels the chain while it waits on a model call; the decided
    steps are committed either way."""
    st = engine.store
    assert st is not None
    chain = asyncio.ensure_future(engine.run_chain(state))
    asked = False

    async def watch() -> None:
        nonlocal asked
        while not chain.done():
            await asyncio.sleep(STOP_POLL_S)
            if st.stop_request(engine.rid) is not None:
                asked = True
                chain.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await chain
    except asyncio.CancelledError:
        if not asked:
            raise
        step = engine.ledger.steps
        raise StopRequested(
            f"run {engine.run_id} stopped at step {step:,}, as asked; its steps are committed "
            f"(`maker resume {engine.run_id}` goes on)",
            run_id=engine.run_id,
            step=step,
        ) from None
    finally:
        watcher.cancel()


def _keep_failure(engine: Engine, exc: RunError) -> None:
    """Record the failed step's attempt; a failure to do so is logged, never raised over the run's own error."""
    try:
        engine.ledger.failed(exc)
    except Exception as bad:  # the store may be what failed
        import structlog

        structlog.get_logger("maker").warning(
            "failed step not recorded", run_id=engine.run_id, step=exc.step, error=f"{type(bad).__name__}: {bad}"[:300]
        )


def summarize(
    engine: Engine, name: str, status: str, solved: bool | None, result: Any, error: str | None
) -> RunSummary:
    led = engine.ledger
    bt = engine.scheduler.backtracker
    steps = led.steps - led.first_step
    ks = {p.k for p in engine.policies.values() if not p.fixed} or {p.k for p in engine.policies.values()}
    billed = led.billed()
    return RunSummary(
        run_id=engine.run_id,
        workflow=name,
        status=status,
        steps=steps,
        errors=led.errors if engine.scheduler.has_oracle else None,
        solved=solved,
        calls=led.calls,
        calls_per_step=led.calls / steps if steps else 0.0,
        red_flags=led.red_flags,
        red_flag_rate=led.red_flags / led.calls if led.calls else 0.0,
        max_rounds=led.max_rounds,
        tokens=led.tokens,
        wall_s=round(led.wall_s, 3),
        k=ks.pop() if len(ks) == 1 else None,
        agents=[a.spec for a in engine.agents],
        store=str(Path(engine.store.path)) if engine.store is not None else "",
        agent_calls=led.agent_calls_by_label(),
        drafted=led.drafted,
        accepted=led.accepted,
        escalated=led.escalated,
        spare_samples=led.spare_samples,
        wasted_calls=led.wasted_calls,
        wasted_tokens=led.wasted_tokens,
        wasted_agent_calls={k: n for k, n in zip(led.labels, led.wasted_agent_calls, strict=True) if n},
        first_step=led.first_step,
        prompt_tokens=billed[0],
        cached_tokens=billed[1],
        completion_tokens=billed[2],
        cost=led.cost(),
        cost_estimated=billed[3] > 0,
        agent_cost=dict(zip(led.labels, led.agent_costs(), strict=True)),
        wasted_cost=led.cost(wasted=True) if led.wasted_calls else None,
        prices={k: None if p is None else p.as_list() for k, p in zip(led.labels, led.prices, strict=True)},
        segment_steps=led.steps - led.segment_first_step,
        segment_wall_s=round(led.wall_s - led.segment_wall_from, 3),
        branches=0 if bt is None else bt.branches,
        failed_checks=0 if bt is None else bt.failed_checks,
        result=result,
        error=error,
    )
