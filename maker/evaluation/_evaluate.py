"""Evaluating a workflow on a data set: one durable run per problem, many at once, in one store.

A data file is JSON lines ``{"id", "question", "answer"}``. Each problem becomes the run
``NAME/<id>`` of one store, its question passed as one workflow parameter. The runs share one
process, one event loop and one set of agents; every backend sits behind one coalescing front
(:class:`~maker.engine._batching.Coalescing`), so the requests that concurrent runs make in the same
turn of the loop reach the model as one batched call.

Evaluating again under the same name finishes what is left: a finished run is read back, not
run; a killed, interrupted, failed or stopped one is resumed from its last commit.

A budget (``max_cost`` dollars, ``token_budget`` tokens) is the evaluation's, not each run's: one
:class:`~maker.engine.Budget` that every problem's run spends from, counting what its runs spent in
earlier evaluations under the same name. Once it is reached, the runs under way stop at a commit
(status ``stopped``) and the problems left are not started; evaluating again with a larger budget
goes on from there. The budget is therefore not part of a run's recorded options.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from maker._rng import derive
from maker.agents import Agent
from maker.dsl import Workflow
from maker.engine import Budget, BudgetExceeded, Coalescing, RunSummary, roster_of
from maker.errors import RunError, RunNotFoundError, StoreError, UserError
from maker.evaluation._datasets import Problem, load_problems
from maker.evaluation._reasoning_gym import PREFIX, ReasoningGym, is_reasoning_gym, reasoning_gym_data
from maker.evaluation._scorer import Scorer, load_scorer
from maker.runs import (
    RunOptions,
    drive,
    is_live,
    new_run,
    read_options,
    reopen_run,
    resolve_workflow,
    shown_status,
    workflow_ref,
)
from maker.stats import wilson_interval
from maker.store import EVAL_EVENT, RunRecord, Store
from maker.telemetry import EvalTrace, RunTrace, eval_trace

__all__ = [
    "EvalSettings",
    "EvalSummary",
    "ProblemRow",
    "Problem",
    "evaluate",
    "evaluate_async",
    "load_problems",
    "read_data",
    "default_name",
]


class ProblemRow(BaseModel):
    """How one problem went."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    run_id: str
    status: str
    """The run's status: ``done``, ``failed``, ``stopped`` (at a commit, the budget reached), or ``not started``
    (the workflow refused the problem, or the budget was reached first)."""
    correct: bool
    """Scored 1 (full marks)."""
    score: float | None = None
    """The scorer's score from 0 to 1 of a finished run's answer; None when there is none (the run did not finish,
    its result has no answer, or the scorer failed: ``error`` says why)."""
    scoring_failed: bool = False
    """The scorer raised, or returned something other than a score from 0 to 1, on this problem's answer."""
    expected: str
    got: str | None
    """``str(result[answer_key])`` of a finished run."""
    steps: int
    calls: int
    tokens: int
    red_flags: int
    wall_s: float
    error: str | None
    """Why it failed, or why a finished run's answer could not be read."""
    reused: bool = False
    """Finished in an earlier evaluation under the same name: read back, not run."""
    cost: float | None = 0.0
    """Dollars its run spent, committed steps and speculative ones dropped, in this evaluation and earlier ones
    under the same name (None: a billed agent's price is unknown)."""
    cost_estimated: bool = False
    """Whether some of that usage is estimated (the server reported none), not as billed."""
    out_of_budget: bool = False
    """The evaluation's budget was reached before this problem finished: its run stopped at a commit, or was not
    started (or resumed). Evaluating again under the same name with a larger budget finishes it."""


class EvalSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    data: str
    """The data file, or the generated data set (``rg:NAME``)."""
    generated: dict[str, Any] | None = None
    """What generated the problems of a generated data set (reasoning-gym: its name, size, seed and configuration);
    None for a data file."""
    workflow: str
    param: str
    answer_key: str
    scorer: str = "built in"
    """What scored the answers: ``module:function``, ``/abs/path.py:function``, or the built-in comparison."""
    params: dict[str, Any]
    """The other workflow parameters (``--set``), the same for every problem."""
    agents: list[str]
    options: dict[str, Any]
    """Voting, speculation and recording options (the run options other than the agents)."""
    concurrency: int
    limit: int | None
    name: str
    store: str


class EvalSummary(BaseModel):
    """The figures of an evaluation, its settings and one row per problem (in data-file order)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    settings: EvalSettings
    problems: int
    correct: int
    wrong: int
    failed: int
    """Problems whose run failed, that the workflow refused, or whose scoring failed (not those the budget left
    unfinished)."""
    out_of_budget: int
    """Problems left unfinished because the budget was reached (see :attr:`ProblemRow.out_of_budget`)."""
    accuracy: float
    """The mean score over every problem (a problem with no score counts 0)."""
    accuracy_low: float
    """95% Wilson interval of the accuracy (partial scores are summed, then rounded, as successes)."""
    accuracy_high: float
    calls_mean: float
    calls_max: int
    tokens_mean: float
    steps_mean: float
    red_flags: int
    cost: float | None
    """Dollars spent on every problem, the sum of the rows' (None: a billed agent's price is unknown)."""
    cost_mean: float | None
    """``cost`` per problem."""
    cost_estimated: bool
    """Whether some of the usage is estimated, not as billed."""
    budget_reached: str | None = None
    """How the budget was reached (``spent $0.0512 of the $0.05 budget (`max_cost`)``) when it left problems
    unfinished; None otherwise."""
    wall_s: float
    """Wall time of this evaluation (problems read back from earlier ones take none)."""
    problems_per_s: float | None
    """Problems run (not read back) per second of wall time."""
    ran: int
    reused: int
    backend_calls: int
    """Calls the backends received in this evaluation, after coalescing (one batched call counts once)."""
    backend_requests: int
    """Requests those calls carried (one per voting round of a step)."""
    rows: list[ProblemRow]

    @property
    def failures(self) -> list[ProblemRow]:
        return [r for r in self.rows if not r.correct]

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the summary as JSON (whole, then moved into place); returns the path."""
        out = Path(path)
        tmp = out.with_name(out.name + ".partial")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(out)
        return out


Data = str | os.PathLike[str] | ReasoningGym
"""A data set: a JSON-lines file, or a reasoning-gym one (``rg:NAME``, or a :class:`ReasoningGym`)."""


def default_name(data: Data) -> str:
    if isinstance(data, ReasoningGym):
        stem = f"rg-{data.name}"
    elif isinstance(data, str) and is_reasoning_gym(data):
        stem = f"rg-{data.removeprefix(PREFIX)}"
    else:
        stem = Path(data).stem
    return f"eval-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_data(data: Data, limit: int | None = None, *, seed: int = 0) -> tuple[list[Problem], Scorer | None]:
    """The problems of a data set (the first ``limit``), and the scorer it brings (a reasoning-gym data set's own;
    None: a file's answers are compared by the evaluation's). ``rg:NAME`` given as text is generated with the data
    set's default size from ``seed``."""
    if isinstance(data, str) and is_reasoning_gym(data):
        data = reasoning_gym_data(data, seed=seed)
    if isinstance(data, ReasoningGym):
        return data.problems(limit), data.scorer()
    return load_problems(data, limit), None


def _problem_seed(seed: int, pid: str) -> int:
    """A run seed of its own per problem: problems whose runs have the same shape do not err at the same steps."""
    return derive(seed, int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "big")) & (2**63 - 1)


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    requests: int = 0


class _Counted:
    """A backend that counts what reaches it (beneath the coalescing front: the batched calls themselves)."""

    def __init__(self, backend: Any, tally: _Tally) -> None:
        self.inner = backend
        self.name = backend.name
        self._tally = tally

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def generate(self, requests: Any) -> Any:
        return await self._call("generate", requests)

    async def judge(self, requests: Any) -> Any:
        return await self._call("judge", requests)

    async def first_token_entropy(self, requests: Any) -> Any:
        return await self._call("first_token_entropy", requests)

    async def _call(self, method: str, requests: Any) -> Any:
        self._tally.calls += 1
        self._tally.requests += len(requests)
        return await getattr(self.inner, method)(requests)


@dataclass(slots=True)
class _Job:
    problem: Problem
    run_id: str
    params: dict[str, Any]
    opts: RunOptions


@dataclass(slots=True)
class _Shared:
    """What every run of the evaluation shares: the workflow, the store, the agents."""

    wf_cls: type[Workflow[Any, Any]]
    st: Store
    agents: list[Agent]
    speculation: Any
    answer_key: str
    scorer: Scorer
    budget: Budget | None
    """What every run spends from (None: no limit)."""
    held: set[str] = dataclasses.field(default_factory=set)
    """Problems not run now because the budget was reached before their turn."""
    tracing: EvalTrace | None = None
    """The evaluation's OpenTelemetry trace (None: not traced)."""
    name: str = ""
    """The evaluation's name (its runs are ``NAME/<id>``)."""

    def note(self, rid: int, job: _Job, row: ProblemRow | None = None) -> None:
        """Record on the problem's run what it is to the evaluation, and once scored how it came out (a live view,
        ``maker ui``, groups and scores the evaluation's runs by these)."""
        data: dict[str, Any] = {
            "name": self.name,
            "problem": job.problem.id,
            "expected": job.problem.answer,
            "scorer": self.scorer.name,
        }
        if row is not None:
            data.update(got=row.got, score=row.score, correct=row.correct, error=row.error, status=row.status)
        self.st.event(rid, EVAL_EVENT, data)

    def trace(self, job: _Job) -> RunTrace | None:
        """The trace of one problem's run, under the evaluation's span (None: not traced)."""
        if self.tracing is None:
            return None
        roster = roster_of(self.agents, self.speculation)
        return self.tracing.run(problem=job.problem.id, workflow=self.wf_cls.name, seed=job.opts.seed, roster=roster)


def evaluate(data: Data, options: RunOptions | Mapping[str, Any], **keywords: Any) -> EvalSummary:
    """Evaluate a workflow on a data set in a new event loop; the keywords are :func:`evaluate_async`'s."""
    return asyncio.run(evaluate_async(data, options, **keywords))


async def evaluate_async(
    data: Data,
    options: RunOptions | Mapping[str, Any],
    *,
    store: str | os.PathLike[str],
    workflow: str = "solve",
    param: str = "task",
    answer_key: str = "answer",
    scorer: str | None = None,
    params: Mapping[str, Any] | None = None,
    concurrency: int = 8,
    limit: int | None = None,
    name: str | None = None,
    on_start: Callable[[str, int, int], None] | None = None,
    on_result: Callable[[ProblemRow, int, int], None] | None = None,
    otel: bool | None = None,
) -> EvalSummary:
    """Run every problem of ``data`` (``concurrency`` at a time) and score the answers.

    Bad input raises :class:`UserError` before anything is written. ``on_start(name, problems,
    already done)`` is called once the input is checked; ``on_result(row, finished, problems)``
    once per problem. A problem whose run fails is a failed row; the others go on. When the budget (the
    options' ``max_cost``, ``token_budget``: the whole evaluation's) is reached, the summary's
    ``budget_reached`` says how, and its rows which problems it left unfinished; nothing is raised.

    ``otel``: emit an OpenTelemetry trace, one ``maker.eval`` span over the runs' spans (True), never (False), or
    when the environment asks (None; see :mod:`maker.telemetry`).

    ``scorer`` (``module:function`` or ``path/file.py:function``) scores each answer from 0 to 1 (see
    :mod:`maker.evaluation._scorer`); by default a reasoning-gym data set's own ``score_answer`` scores them, and a
    data file's answers are compared with :func:`maker.workflows.same_answer`. ``data``: a JSON-lines file, or a
    reasoning-gym data set (:func:`~maker.evaluation.reasoning_gym_data`; ``rg:NAME`` as text is generated with the
    data set's default size, from the options' seed).
    """
    opts = options if isinstance(options, RunOptions) else read_options(options)
    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1, got {concurrency}")
    if isinstance(data, str) and is_reasoning_gym(data):
        data = reasoning_gym_data(data, seed=opts.seed)
    problems, own = read_data(data, limit)
    score = load_scorer(scorer) if scorer is not None or own is None else own
    wf_cls = resolve_workflow(workflow)
    extra = dict(params or {})
    if param not in wf_cls.Params.model_fields:
        raise UserError(
            f"workflow {wf_cls.name!r} has no parameter {param!r} to take each question; its parameters "
            f"are {', '.join(wf_cls.Params.model_fields) or '(none)'}: name the one that takes it (`param`)"
        )
    if param in extra:
        raise UserError(f"parameter {param} (`params`) would be replaced by each problem's question; leave it out")
    name = name or default_name(data)
    jobs = [_job(p, name, param, extra, opts, wf_cls, data) for p in problems]
    existing = _existing(store, jobs, wf_cls)
    settings = EvalSettings(
        data=str(data),
        generated=data.settings if isinstance(data, ReasoningGym) else None,
        workflow=workflow,
        param=param,
        answer_key=answer_key,
        scorer=score.name,
        params=extra,
        agents=opts.agents,
        options=opts.model_dump(mode="json", exclude={"agents"}),
        concurrency=concurrency,
        limit=limit,
        name=name,
        store=os.path.abspath(store),
    )
    tally = _Tally()
    with contextlib.ExitStack() as stack:
        make = opts.agent_maker(stack)
        built: dict[str, Agent] = {}

        def shared(spec: str) -> Agent:  # one agent, and one backend behind one front, per spec
            if spec not in built:
                a = make(spec)
                front: Any = Coalescing.over(_Counted(a.backend, tally))
                built[spec] = dataclasses.replace(a, backend=front)  # its model and price kept: they price its calls
            return built[spec]

        try:
            agents = [shared(s) for s in opts.agents]
            speculation = opts.speculation(shared)
            budget = _budget(opts, existing.values())
            tracing = stack.enter_context(eval_trace(otel, attributes=_trace_attributes(settings, len(jobs))))
            st = stack.enter_context(Store.create(store))
            if on_start:
                on_start(name, len(jobs), sum(1 for r in existing.values() if r.status == "done"))
            t0 = time.perf_counter()
            sh = _Shared(wf_cls, st, agents, speculation, answer_key, score, budget, tracing=tracing, name=name)
            rows = await _run_all(sh, jobs, existing, concurrency, on_result)
            wall = time.perf_counter() - t0
        finally:
            await asyncio.gather(*(a.backend.aclose() for a in built.values()), return_exceptions=True)
        summary = _summarize(settings, rows, wall, tally, budget, len(sh.held))
        if tracing is not None:
            tracing.finished(_trace_figures(summary))
    return summary


def _trace_attributes(s: EvalSettings, problems: int) -> dict[str, Any]:
    """The ``maker.eval`` span's attributes as it starts."""
    return {
        "maker.eval.name": s.name,
        "maker.eval.data": s.data,
        "maker.eval.scorer": s.scorer,
        "maker.eval.problems": problems,
        "maker.workflow": s.workflow,
        "maker.agents": s.agents,
        "maker.eval.concurrency": s.concurrency,
    }


def _trace_figures(s: EvalSummary) -> dict[str, Any]:
    """The ``maker.eval`` span's attributes at the end: how the evaluation went."""
    return {
        "maker.eval.correct": s.correct,
        "maker.eval.wrong": s.wrong,
        "maker.eval.failed": s.failed,
        "maker.eval.out_of_budget": s.out_of_budget,
        "maker.eval.accuracy": s.accuracy,
        "maker.eval.ran": s.ran,
        "maker.eval.reused": s.reused,
        "maker.cost_usd": s.cost,
        "maker.eval.budget_reached": s.budget_reached,
    }


def _job(
    p: Problem,
    name: str,
    param: str,
    extra: dict[str, Any],
    opts: RunOptions,
    wf_cls: type[Workflow[Any, Any]],
    data: Data,
) -> _Job:
    values = {**extra, param: p.question}
    try:
        wf_cls.parse_params(values)
    except UserError as exc:
        where = f"problem {p.id}" if isinstance(data, ReasoningGym) else f"line {p.line} (id {p.id!r})"
        raise UserError(f"{data}, {where}: {exc}") from None
    # The budget is the evaluation's (see the module's doc): a run records none, and resumes under any.
    run_opts = opts.model_copy(update={"seed": _problem_seed(opts.seed, p.id), **dict.fromkeys(_BUDGET_KEYS)})
    return _Job(p, f"{name}/{p.id}", values, run_opts)


_BUDGET_KEYS = ("max_cost", "token_budget")


def _budget(opts: RunOptions, earlier: Iterable[RunRecord]) -> Budget | None:
    """The evaluation's one budget, what its runs spent in earlier evaluations under the same name already spent
    from it; None without a limit. A dollar limit needs every agent's price: refused before anything runs."""
    if opts.max_cost is None and opts.token_budget is None:
        return None
    opts.check_priced()
    cost, tokens = 0.0, 0
    for record in earlier:
        c, t, _ = _spent(record)
        cost += c or 0.0
        tokens += t
    return Budget(opts.max_cost, opts.token_budget, cost=cost, tokens=tokens)


def _spent(record: RunRecord | None) -> tuple[float | None, int, bool]:
    """What a run spent, committed steps and speculative ones dropped, from its recorded counters: dollars (None: a
    billed agent's price is unknown, or its steps were recorded before usage was), tokens billed (prompt and
    completion), and whether any of it is estimated."""
    if record is None:
        return 0.0, 0, False
    stats = record.stats or {}
    rows = [*(stats.get("usage") or []), *((stats.get("wasted") or {}).get("usage") or [])]
    tokens = sum(r[0] + r[2] for r in rows)
    estimated = any(r[3] for r in rows)
    if "usage" not in stats:  # nothing committed yet, or committed by a maker that kept no usage
        return (0.0 if record.steps == record.first_step else None), tokens, estimated
    return stats.get("cost"), tokens, estimated


def _existing(
    store: str | os.PathLike[str], jobs: list[_Job], wf_cls: type[Workflow[Any, Any]]
) -> dict[str, RunRecord]:
    """The runs an earlier evaluation under this name left, checked to be the same problems and settings."""
    if not Path(store).exists():
        return {}
    wanted = {j.run_id: j for j in jobs}
    with Store.open(store) as st:
        found = {r.run_id: r for r in st.runs() if r.run_id in wanted}
    for rid, record in found.items():
        problem = _mismatch(record, wanted[rid], wf_cls)
        if problem:
            raise UserError(
                f"run {rid} of an earlier evaluation under this name was made with {problem}; rerun with "
                f"the settings it was started with, or give a new `name`"
            )
        if record.status == "running" and is_live(record) and record.pid != os.getpid():
            raise UserError(
                f"run {rid} is being run by process {record.pid}; stop that evaluation first (or give a new `name`)"
            )
    return found


def _mismatch(record: RunRecord, job: _Job, wf_cls: type[Workflow[Any, Any]]) -> str | None:
    ref = workflow_ref(wf_cls)
    if (record.workflow_ref or record.workflow) != ref or record.workflow_version != wf_cls.version:
        recorded = record.workflow_ref or record.workflow
        return f"workflow {recorded} v{record.workflow_version}, not {ref} v{wf_cls.version}"
    given = wf_cls.parse_params(job.params).model_dump(mode="json")
    if given != record.params:
        return "other parameters: " + _diff(record.params, given)
    try:
        recorded_opts = RunOptions.model_validate(record.config).model_dump(mode="json", exclude=set(_BUDGET_KEYS))
    except ValidationError:
        return f"options this maker cannot read ({record.config})"
    current = job.opts.model_dump(mode="json", exclude=set(_BUDGET_KEYS))
    return "other options: " + _diff(recorded_opts, current) if recorded_opts != current else None


def _diff(recorded: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    keys = [k for k in {**recorded, **given} if recorded.get(k) != given.get(k)]
    return ", ".join(f"{k} recorded {_short(recorded.get(k))}, given {_short(given.get(k))}" for k in keys)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


async def _run_all(
    sh: _Shared,
    jobs: list[_Job],
    existing: dict[str, RunRecord],
    concurrency: int,
    on_result: Callable[[ProblemRow, int, int], None] | None,
) -> list[ProblemRow]:
    rows: list[ProblemRow | None] = [None] * len(jobs)
    queue: Iterator[int] = iter(range(len(jobs)))
    finished = 0

    async def worker() -> None:
        nonlocal finished
        for i in queue:  # one iterator shared by the workers: each problem is taken once, in data order
            row = rows[i] = await _one(sh, jobs[i], existing.get(jobs[i].run_id))
            finished += 1
            if on_result:
                on_result(row, finished, len(jobs))

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(concurrency, len(jobs))):
                tg.create_task(worker())
    except BaseExceptionGroup as group:  # a store failure: the other runs were cancelled and marked interrupted
        raise group.exceptions[0] from None
    return [r for r in rows if r is not None]


async def _one(sh: _Shared, job: _Job, record: RunRecord | None) -> ProblemRow:
    if record is not None and record.status == "done":
        return _row(sh, job, record, reused=True)
    if sh.budget is not None and sh.budget.reached:  # what is left waits for a larger budget
        sh.held.add(job.problem.id)
        return _row(sh, job, record, held=True)
    tracing = sh.trace(job)
    try:
        row, failure = await _attempt(sh, job, record, tracing)
    except BaseException as exc:  # a store failure, or cancelled: the run's span says so
        if tracing is not None:
            tracing.end(exc)
        raise
    if tracing is not None:
        if row.score is not None:
            tracing.note({"maker.eval.score": row.score, "maker.eval.correct": row.correct})
        tracing.end(failure)
    return row


async def _attempt(
    sh: _Shared, job: _Job, record: RunRecord | None, tracing: RunTrace | None
) -> tuple[ProblemRow, BaseException | None]:
    """Run (or resume) one problem's run: its row, and what stopped the run (None: it finished)."""
    error: str | None = None
    failure: BaseException | None = None
    try:
        if record is None:
            engine, wf, state = new_run(
                sh.wf_cls,
                job.params,
                job.opts,
                st=sh.st,
                agents=sh.agents,
                speculation=sh.speculation,
                run_id=job.run_id,
                budget=sh.budget,
                observer=tracing,
            )
            sh.note(engine.rid, job)
        else:
            # a resumed run's past spending is counted in the evaluation's budget already
            engine, wf, state = reopen_run(
                sh.st, record, agents=sh.agents, speculation=sh.speculation, budget=sh.budget, observer=tracing
            )
        summary: RunSummary = await drive(engine, wf, state, sh.wf_cls.name, close=False)
        if tracing is not None:
            tracing.finished(summary)
    except StoreError:
        raise
    except BudgetExceeded as exc:  # stopped at a commit: its row says so
        failure = exc
    except RunError as exc:
        error, failure = str(exc), exc
    except Exception as exc:  # workflow code raised: this problem failed, the others go on
        error, failure = f"{type(exc).__name__}: {exc}", exc
    try:
        record = sh.st.run(job.run_id)
    except RunNotFoundError:  # the workflow refused the problem before its run was recorded
        record = None
    row = _row(sh, job, record, error=error)
    if record is not None:
        sh.note(record.id, job, row)
    return row, failure


def _row(
    sh: _Shared,
    job: _Job,
    record: RunRecord | None,
    *,
    reused: bool = False,
    error: str | None = None,
    held: bool = False,
) -> ProblemRow:
    """The row of a problem; ``held``: left as it was because the budget was reached before its turn."""
    expected, got, score, scoring_failed = job.problem.answer, None, None, False
    if record is None:
        return ProblemRow(
            id=job.problem.id,
            run_id=job.run_id,
            status="not started",
            correct=False,
            expected=expected,
            got=None,
            steps=0,
            calls=0,
            tokens=0,
            red_flags=0,
            wall_s=0.0,
            error="not started: the evaluation's budget was reached" if held else error,
            out_of_budget=held,
        )
    error = record.error or error
    cost, _, estimated = _spent(record)
    out_of_budget = held or record.status == "stopped"
    if held:
        error = f"not resumed: the evaluation's budget was reached ({shown_status(record)} at step {record.steps:,})"
    elif record.status == "stopped":
        error = f"stopped at step {record.steps:,}: the evaluation's budget was reached"
    elif record.status == "done":
        result = record.result or {}
        if sh.answer_key in result:
            got = str(result[sh.answer_key])
            score, why = sh.scorer.score(got, expected, job.problem)
            error = error or why
            scoring_failed = score is None
        else:
            keys = ", ".join(map(repr, result)) or "none"
            error = f"the workflow's result has no key {sh.answer_key!r} (it has {keys}); name its key (`answer_key`)"
    elif error is None:
        error = f"run {record.status}"
    return ProblemRow(
        id=job.problem.id,
        run_id=job.run_id,
        status=record.status,
        correct=score == 1.0,
        score=score,
        scoring_failed=scoring_failed,
        expected=expected,
        got=got,
        steps=record.steps - record.first_step,
        calls=record.calls,
        tokens=record.tokens,
        red_flags=record.red_flags,
        wall_s=round(record.wall_s, 3),
        error=error,
        reused=reused,
        cost=cost,
        cost_estimated=estimated,
        out_of_budget=out_of_budget,
    )


def _reached(budget: Budget) -> str:
    """The limit reached, as a person reads it (the limit as given: a budget under a cent shows as given)."""
    if budget.max_cost is not None and budget.cost >= budget.max_cost:
        return f"spent ${budget.cost:,.4f} of the ${budget.max_cost:,g} budget (`max_cost`)"
    return f"spent {budget.tokens:,} tokens of the {budget.max_tokens or 0:,}-token budget (`token_budget`)"


def _summarize(
    settings: EvalSettings, rows: list[ProblemRow], wall: float, tally: _Tally, budget: Budget | None, held: int
) -> EvalSummary:
    n = len(rows)
    correct = sum(r.correct for r in rows)
    out_of_budget = sum(r.out_of_budget for r in rows)
    failed = sum((r.status != "done" or r.scoring_failed) and not r.out_of_budget for r in rows)
    total = sum(r.score or 0.0 for r in rows)
    costs = [r.cost for r in rows]
    cost = None if None in costs else sum(c for c in costs if c is not None)
    low, high = wilson_interval(round(total), n)
    ran = sum(not r.reused for r in rows) - held
    return EvalSummary(
        settings=settings,
        problems=n,
        correct=correct,
        wrong=n - correct - failed - out_of_budget,
        failed=failed,
        out_of_budget=out_of_budget,
        accuracy=total / n,
        accuracy_low=low,
        accuracy_high=high,
        calls_mean=sum(r.calls for r in rows) / n,
        calls_max=max(r.calls for r in rows),
        tokens_mean=sum(r.tokens for r in rows) / n,
        steps_mean=sum(r.steps for r in rows) / n,
        red_flags=sum(r.red_flags for r in rows),
        cost=cost,
        cost_mean=None if cost is None else cost / n,
        cost_estimated=any(r.cost_estimated for r in rows),
        budget_reached=_reached(budget) if budget is not None and out_of_budget else None,
        wall_s=round(wall, 3),
        problems_per_s=round(ran / wall, 3) if ran and wall > 0 else None,
        ran=ran,
        reused=sum(r.reused for r in rows),
        backend_calls=tally.calls,
        backend_requests=tally.requests,
        rows=rows,
    )
