"""Starting and resuming runs: the glue between a workflow, its agents, the store and the engine."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maker.agents import Agent, make_agent
from maker.cluster.config import ClusterOptions
from maker.dsl import MicrostepCall, Workflow
from maker.engine import Engine, Progress, RunSummary
from maker.errors import RunError, RunMismatchError, StoreCorruptError, UserError
from maker.store import RunRecord, Store
from maker.workflows import BUILTIN

__all__ = ["RunOptions", "start_run", "resume_run", "resolve_workflow", "new_run_id", "shown_status", "VOTING_OVERRIDES"]

VOTING_OVERRIDES = ("rule", "k", "confidence", "max_rounds", "first_temperature", "temperature", "batch")


class RunOptions(BaseModel):
    """How to run: agents, voting overrides, seed, what to record, how often to commit."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    agents: list[str] = Field(min_length=1)
    """Agent specs in escalation order: the first answers; the next takes over a step the previous could not decide."""
    seed: int = 0
    """Run seed; every sample's randomness derives from it, the step and the sample index."""
    rule: Literal["ahead_by_k", "adaptive"] | None = None
    """Override every microstep's voting rule."""
    k: int | None = Field(None, ge=1)
    """Override every microstep's k."""
    confidence: float | None = Field(None, gt=0.5, lt=1.0)
    """Override the adaptive rule's posterior threshold."""
    max_rounds: int | None = Field(None, ge=1)
    """Override the bound on sampling rounds per step and agent."""
    first_temperature: float | None = Field(None, ge=0.0)
    """Override the temperature of each step's first sample."""
    temperature: float | None = Field(None, ge=0.0)
    """Override the temperature of later samples."""
    batch: int | None = Field(None, ge=1, le=4096)
    """Override the samples asked of a backend per call (later rounds are filled up to it)."""
    max_tokens: int | None = Field(None, ge=1)
    """Override the red-flag token limit of every microstep."""
    detail: Literal["summary", "samples"] = "summary"
    """``summary``: one row per step; ``samples``: also every sample's text, tokens and red-flag reason."""
    commit_every: int = Field(4096, ge=1)
    """Commit at least every this many steps."""
    commit_seconds: float = Field(0.5, gt=0)
    """... and at least this often, in seconds."""
    drafter: str | None = None
    """Speculative drafting: the small model that drafts each step (then --agent is the large model)."""
    verifiers: list[str] = Field(default_factory=list)
    """Agents that confirm or reject each draft."""
    verify: Literal["score", "vote"] = "score"
    """``score``: rate the draft 0-9 in one prefill pass (SpecReason); ``vote``: verifiers answer themselves."""
    threshold: float = Field(7.0, ge=0.0, le=9.0)
    """Score at or above which a verifier accepts a draft."""
    score_by: Literal["expected", "greedy"] = "expected"
    """Expected digit or most likely digit."""
    verify_k: int = Field(1, ge=1)
    """Verdict margin that accepts (or rejects) a draft."""
    large_first: int = Field(0, ge=0)
    """The first N steps are always voted by the large model."""
    entropy_threshold: float | None = Field(None, ge=0.0)
    """GlimpRouter: steps whose drafter first-token entropy exceeds this go straight to the large model."""
    log_steps: bool = Field(False, exclude=True)
    """Log one debug line per committed step (``--log-level debug``); not part of the run's record."""
    cluster: ClusterOptions | None = Field(None, exclude=True)
    """Serve every agent's model from Ray replica actors (``--cluster``); where models run is not part of
    the run's record: the same seed gives the same trace in-process or on a cluster."""

    def agent_maker(self, stack: contextlib.ExitStack) -> Callable[[str], Agent]:
        """``make_agent``, or the cluster's, which starts replicas (stopped when ``stack`` closes)."""
        if self.cluster is None:
            return make_agent
        from maker.cluster import Cluster

        cluster = Cluster(self.cluster)
        stack.callback(cluster.close)
        return cluster.agent

    def speculation(self, make: Callable[[str], Agent] = make_agent) -> Any:
        from maker.speculation import Speculation

        if self.drafter is None:
            if self.verifiers:
                raise UserError("--verifier needs a --drafter whose drafts it checks")
            return None
        return Speculation(
            drafter=make(self.drafter), verifiers=[make(v) for v in self.verifiers], mode=self.verify,
            threshold=self.threshold, score_by=self.score_by, verify_k=self.verify_k, large_first=self.large_first,
            entropy_threshold=self.entropy_threshold,
        )

    def voting(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in VOTING_OVERRIDES if getattr(self, k) is not None}


def resolve_workflow(name: str) -> type[Workflow[Any, Any]]:
    """A built-in workflow by name, or ``package.module:ClassName`` for your own."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        # Like other runners of user code (uvicorn, celery): modules in the working directory are found.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot load workflow {name!r}: {exc}") from None
        if isinstance(obj, type) and issubclass(obj, Workflow):
            return obj
        raise UserError(f"{name!r} is not a maker Workflow subclass")
    raise UserError(f"unknown workflow {name!r}; built in: {', '.join(BUILTIN)} (or give module:Class)")


def workflow_ref(wf_cls: type[Workflow[Any, Any]]) -> str:
    """How a run records where its workflow code is: a built-in name, or ``module:Class``."""
    if BUILTIN.get(wf_cls.name) is wf_cls:
        return wf_cls.name
    return f"{wf_cls.__module__}:{wf_cls.__qualname__}"


def new_run_id(workflow: str) -> str:
    return f"{workflow}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _options(values: Mapping[str, Any]) -> RunOptions:
    try:
        return RunOptions.model_validate(dict(values))
    except ValidationError as exc:
        raise UserError(f"bad run options:\n{exc}") from None


def start_run(
    workflow: str | type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    options: RunOptions | Mapping[str, Any],
    *,
    store: str | os.PathLike[str],
    run_id: str | None = None,
    on_start: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunSummary:
    """Start a new run and drive it to the end (or to a failure, which is resumable)."""
    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    opts = options if isinstance(options, RunOptions) else _options(options)
    p = wf_cls.parse_params(params)
    with contextlib.ExitStack() as stack:
        make = opts.agent_maker(stack)
        agents = [make(s) for s in opts.agents]  # bad specs fail before anything is written
        spec = opts.speculation(make)
        wf = wf_cls()
        state = wf.start(p)
        run_id = run_id or new_run_id(wf_cls.name)
        st = stack.enter_context(Store.create(store))
        rid = st.create_run(
            run_id,
            workflow=wf_cls.name,
            workflow_ref=workflow if isinstance(workflow, str) else workflow_ref(wf_cls),
            workflow_version=wf_cls.version,
            params=p.model_dump(mode="json"),
            config=opts.model_dump(mode="json"),
            expected_steps=wf.expected_steps(p),
            state_json=state.model_dump_json(),
        )
        if on_start:
            on_start(run_id)
        engine = _engine(wf, st, rid, run_id, agents, spec, opts, wf.expected_steps(p), on_progress)
        return _drive(engine, wf, state, wf_cls.name)


def resume_run(
    run_id: str,
    *,
    store: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cluster: ClusterOptions | None = None,
) -> RunSummary:
    """Continue a stopped, killed or failed run from its last commit.

    ``params``, when given, must equal the recorded ones; ``overrides`` may change the
    agents and voting settings (recorded as an event). Nothing is written until every
    check has passed.
    """
    st = Store.open(store, write=False)
    try:
        record = st.run(run_id)
        wf_cls = resolve_workflow(record.workflow_ref or record.workflow)
        _check_identity(record, wf_cls, params)
        if record.status == "done":
            raise UserError(f"run {run_id} already finished ({record.steps} steps); nothing to resume")
        _check_not_live(record)
        options = dict(record.config)
        options.update({k: v for k, v in (overrides or {}).items() if v is not None})
        opts = _options(options)
        opts.cluster = cluster
        wf = wf_cls()
        state = _recover_state(st, record, wf)
    finally:
        st.close()
    with contextlib.ExitStack() as stack:
        make = opts.agent_maker(stack)
        agents = [make(s) for s in opts.agents]
        spec = opts.speculation(make)
        st = stack.enter_context(Store.open(store, write=True))
        st.set_status(record.id, "running", pid=os.getpid(), host=os.uname().nodename, config=opts.model_dump(mode="json"))
        st.event(record.id, "resume", {"from_step": record.steps, "overrides": dict(overrides or {})})
        p = wf_cls.parse_params(record.params)
        engine = _engine(wf, st, record.id, run_id, agents, spec, opts, wf.expected_steps(p), on_progress)
        engine.restore_counters(record)
        return _drive(engine, wf, state, wf_cls.name)


def _check_identity(record: RunRecord, wf_cls: type[Workflow[Any, Any]], params: Mapping[str, Any] | None) -> None:
    if wf_cls.version != record.workflow_version:
        raise RunMismatchError(
            f"run {record.run_id} was made by {record.workflow} version {record.workflow_version}, "
            f"but the installed workflow is version {wf_cls.version}; its steps would not mean the same. "
            f"Fork a new run instead."
        )
    if params:
        given = wf_cls.parse_params({**record.params, **params}).model_dump(mode="json")
        if given != record.params:
            diff = {k: (record.params.get(k), given.get(k)) for k in given if given.get(k) != record.params.get(k)}
            shown = ", ".join(f"{k}: recorded {a!r}, given {b!r}" for k, (a, b) in diff.items())
            raise RunMismatchError(
                f"run {record.run_id} was started with different parameters ({shown}); "
                f"resume without --set, or start a new run"
            )


def is_live(record: RunRecord) -> bool:
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


def shown_status(record: RunRecord) -> str:
    """The status to show a person: a 'running' run whose process is gone was killed."""
    if record.status == "running" and not is_live(record):
        return "killed"
    return record.status


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
    st: Store, record: RunRecord, wf: Workflow[Any, Any], snap_step: int, snap: str, stop: int,
    mismatch: Callable[[int, str, MicrostepCall], None] | None = None,
) -> Any:
    """The state before step ``stop``: the snapshot taken at ``snap_step``, then the run's recorded answers
    of the steps in between, each step's recomputed input checked against its recorded digest.

    ``mismatch(step, recorded digest, call)`` may raise a more telling error than the default.
    """
    try:
        state = type(wf).State.model_validate_json(snap)
    except ValidationError as exc:
        raise StoreCorruptError(f"run {record.run_id}: the state snapshot at step {snap_step} is unreadable: {exc}") from None
    for row in st.steps(record.id, snap_step, stop):
        call = wf.next(state)
        if not isinstance(call, MicrostepCall):
            raise StoreCorruptError(f"run {record.run_id}: the workflow ended before recorded step {row[0]}")
        if call.digest() != row[1]:
            if mismatch is not None:
                mismatch(row[0], row[1], call)
            raise StoreCorruptError(
                f"run {record.run_id}: step {row[0]} input digest {call.digest()} does not match the recorded {row[1]}"
            )
        state = wf.apply(state, call.microstep.load_answer(row[2]))
    return state


def _engine(wf: Workflow[Any, Any], st: Store, rid: int, run_id: str, agents: list[Any], speculation: Any,
            opts: RunOptions, expected_steps: int | None, on_progress: Callable[[Progress], None] | None) -> Engine:
    engine = Engine(
        workflow=wf, store=st, rid=rid, run_id=run_id, agents=agents, seed=opts.seed, voting=opts.voting(),
        detail=opts.detail, max_tokens=opts.max_tokens, commit_every=opts.commit_every,
        commit_seconds=opts.commit_seconds, expected_steps=expected_steps, on_progress=on_progress,
        log_steps=opts.log_steps, speculation=speculation,
    )
    if opts.cluster is not None:
        from maker.cluster.backend import attach

        attach(engine, opts.cluster.lookahead)
    return engine


def _drive(engine: Engine, wf: Workflow[Any, Any], state: Any, name: str) -> RunSummary:
    st = engine.store
    status, error, solved, result = "done", None, None, None
    try:
        final = asyncio.run(_run(engine, state))
        solved = wf.solved(final)
        if solved is not None and engine.errors:
            solved = False
        result = wf.result(final)
    except RunError as exc:
        status, error = "failed", str(exc)
        st.set_status(engine.rid, status, error=error)
        raise
    except (KeyboardInterrupt, SystemExit):
        st.set_status(engine.rid, "interrupted", error="interrupted")
        raise
    except Exception as exc:  # workflow code raised: committed steps stay, the run is marked failed
        st.set_status(engine.rid, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    st.set_status(engine.rid, status, solved=None if solved is None else int(solved), result=result)
    return summarize(engine, name, status, solved, result, error)


async def _run(engine: Engine, state: Any) -> Any:
    try:
        return await engine.run_chain(state)
    finally:
        await engine.aclose()


def summarize(engine: Engine, name: str, status: str, solved: bool | None, result: Any, error: str | None) -> RunSummary:
    steps = engine.steps - engine.first_step
    ks = {p.k for p in engine._policies.values()}
    return RunSummary(
        run_id=engine.run_id,
        workflow=name,
        status=status,
        steps=steps,
        errors=engine.errors if engine._has_oracle else None,
        solved=solved,
        calls=engine.calls,
        calls_per_step=engine.calls / steps if steps else 0.0,
        red_flags=engine.red_flags,
        red_flag_rate=engine.red_flags / engine.calls if engine.calls else 0.0,
        max_rounds=engine.max_rounds,
        tokens=engine.tokens,
        wall_s=round(engine.wall_s, 3),
        k=ks.pop() if len(ks) == 1 else None,
        agents=[a.spec for a in engine.agents],
        store=str(Path(engine.store.path)),
        agent_calls=dict(zip(engine.agent_labels(), engine.agent_calls, strict=True)),
        drafted=engine.drafted,
        accepted=engine.accepted,
        escalated=engine.escalated,
        spare_samples=engine.spare_samples,
        first_step=engine.first_step,
        result=result,
        error=error,
    )
