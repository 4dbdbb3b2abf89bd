"""The recorder of a run: step rows, counters, grouped commits and progress reports.

Decisions are added here in step order, whatever order they were decided in, so the
record does not depend on which of several calls in flight finished first. Rows wait in
memory until a commit, which writes them, their samples, the state after them and the
counters in one transaction (see :meth:`maker.store._store.Store.commit`); commits happen only
between transitions, so every snapshot is the state after exactly the steps it holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from pydantic import BaseModel

from maker.agents import agent_label
from maker.agents.prices import Price
from maker.dsl import Microstep, MicrostepCall
from maker.engine._backtrack import Backtracker
from maker.engine._budget import Budget
from maker.engine._decider import Decision
from maker.engine._failures import Attempt
from maker.engine._points import Points
from maker.errors import RunError
from maker.store import Branch, PlainStepRow, StepRow, Store
from maker.voting import Voting

__all__ = ["Ledger", "Progress", "Observer"]


class Observer(Protocol):
    """Told what a run records, for tracing it (see :mod:`maker.telemetry`). Ordinary steps are never reported one
    by one, so an observer costs the chain one check per step: only *notable* steps are (more than one round,
    escalated, or an answer that differs from the workflow's ground truth), and every commit."""

    def on_begin(self, ledger: Ledger) -> None:
        """This process's segment of the run begins, after the ledger's counters are restored."""

    def on_step(
        self, step: int, call: MicrostepCall, decision: Decision, *, wrong: bool, t_start: float, dur: float
    ) -> None:
        """A notable step was decided (``wrong``: its answer differs from the ground truth); ``t_start`` is the
        wall-clock time it started and ``dur`` the seconds it took."""

    def on_commit(self, ledger: Ledger, step: int) -> None:
        """The ledger is committing ``ledger.pending`` (``step`` steps in all once it has); called before they are
        cleared."""


class Progress(BaseModel):
    """A progress report, handed to the progress callback a few times a second."""

    run_id: str
    steps: int
    expected_steps: int | None
    calls: int
    red_flags: int
    errors: int
    max_rounds: int
    elapsed_s: float
    steps_per_s: float
    wasted_calls: int = 0
    """Model calls made for speculative steps that turned out off the chain's path (never committed)."""
    tokens: int = 0
    """Tokens billed so far, prompt and completion, wasted speculative calls included."""
    cost: float | None = None
    """Dollars spent so far, wasted speculative calls included (None: an agent's price is unknown)."""
    branches: int = 0
    """Times the run went back to a state that passed its workflow's check (``--backtracks``)."""


class Ledger:
    """Counters, pending rows and commits of one run (``store=None``: count only, as a rollout does)."""

    def __init__(
        self,
        *,
        store: Store | None,
        rid: int,
        run_id: str,
        labels: list[str],
        policies: dict[str, Voting],
        microsteps: Sequence[Microstep[Any]] = (),
        detail: str = "summary",
        commit_every: int = 4096,
        commit_seconds: float = 0.5,
        expected_steps: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_seconds: float = 0.25,
        log_steps: bool = False,
        snapshot_every: int | None = None,
        prices: Sequence[Price | None] = (),
        budget: Budget | None = None,
        observer: Observer | None = None,
        backtracker: Backtracker | None = None,
    ) -> None:
        self.store = store
        self.backtracker = backtracker
        """Where the run may go back to (None: the workflow checks nothing and the run may not backtrack)."""
        self.observer = observer
        """Told of every commit and of each notable step (None: nobody is)."""
        self.rid = rid
        self.run_id = run_id
        self.labels = labels
        self.policies = policies
        self.candidates = sorted(ms.name for ms in microsteps if ms.candidate)
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.snapshot_every = snapshot_every
        """Keep the first snapshot of every stretch of this many steps and the latest (None: keep every one)."""
        self.expected_steps = expected_steps
        self.on_progress = on_progress
        self.progress_seconds = progress_seconds
        self.samples: list[tuple[Any, ...]] | None = [] if detail == "samples" else None
        """Sample rows of the pending steps (detail level ``samples``); deciders append to it."""
        self.keep_input = self.samples is not None
        self.pending: list[StepRow | PlainStepRow] = []
        self.stop_asked: bool = False
        """Whether the run was asked to stop, as read at its last commit (the chain then stops there)."""
        self._log = structlog.get_logger("maker").bind(run_id=run_id) if log_steps else None
        # Counters; restored from the store on resume.
        self.first_step = 0  # a fork's first own step
        self.steps = 0
        self.calls = 0
        self.red_flags = 0
        self.errors = 0
        self.max_rounds = 0
        self.tokens = 0
        self.wall_s = 0.0
        """The run's wall time over all its segments (the start and every resume), up to the last commit."""
        self.segment_first_step = 0
        self.segment_wall_from = 0.0
        """Where this process's segment began: the step, and ``wall_s`` as the segments before left it."""
        self.agent_calls = [0] * len(labels)
        self.drafted = self.accepted = self.escalated = 0
        self.spare_samples = self.spare_tokens = 0
        self.wasted_calls = self.wasted_tokens = 0
        self.wasted_agent_calls = [0] * len(labels)
        self.usage = [[0, 0, 0, 0] for _ in labels]
        """Billed tokens by agent: ``[prompt, cached, completion, estimated requests]`` (committed steps)."""
        self.wasted_usage = [[0, 0, 0, 0] for _ in labels]
        """The same for speculative steps that were dropped."""
        self.prices: list[Price | None] = list(prices) + [None] * (len(labels) - len(prices))
        """Each agent's price (None: unknown), in roster order."""
        self.budget = budget if budget is not None and budget.limited else None
        self._priced = all(p is not None for p in self.prices)
        self.window_hits = self.window_misses = 0
        self.window_waited = self.window_went_on = 0
        self.points = Points()
        """The run's progress, a point per commit (see :mod:`maker.engine._points`)."""
        self.rounds = 0
        """Voting rounds of the steps committed (since the run's first point)."""
        self.top_rounds = 0
        """The most rounds one step took since the last point."""
        self.flags_by_reason: dict[str, int] = {}
        """Red-flagged samples by reason (since the run's first point)."""

    def restore(self, record: Any, *, spent: bool = True) -> None:
        """Counters as a run's record left them; ``spent``: what the run spent before is spent from its budget too
        (False for a budget shared with other runs that counted it already)."""
        self.first_step = record.first_step
        for name in ("steps", "calls", "red_flags", "errors", "max_rounds", "tokens", "wall_s"):
            setattr(self, name, getattr(record, name))
        stats = record.stats or {}
        calls = stats.get("agent_calls", [])
        self.agent_calls[: len(calls)] = calls[: len(self.agent_calls)]
        for name in ("drafted", "accepted", "escalated", "spare_samples", "spare_tokens"):
            setattr(self, name, stats.get(name, 0))
        wasted = stats.get("wasted") or {}
        self.wasted_calls, self.wasted_tokens = wasted.get("calls", 0), wasted.get("tokens", 0)
        calls = wasted.get("agent_calls", [])
        self.wasted_agent_calls[: len(calls)] = calls[: len(self.wasted_agent_calls)]
        self.window_hits, self.window_misses = wasted.get("hits", 0), wasted.get("misses", 0)
        self.window_waited, self.window_went_on = wasted.get("waited", 0), wasted.get("went_on", 0)
        for into, rows in ((self.usage, stats.get("usage")), (self.wasted_usage, wasted.get("usage"))):
            for i, row in enumerate((rows or [])[: len(into)]):
                into[i][: len(row)] = row
        self.points = Points.from_json(stats.get("points"))
        if len(self.points):
            self.rounds = self.points.cols["rounds"][-1]
            self.flags_by_reason = dict(self.points.flags[-1])
        elif (
            self.steps > self.first_step
        ):  # recorded before points were kept: they start here, what came before unknown
            self._point(top_rounds=None)
        if self.budget is not None and spent:
            cost = self.cost()
            self.budget.spend(cost or 0.0, self.tokens_billed())

    def begin_segment(self) -> None:
        """Mark where this process's part of the run begins (a start, a resume or a fork)."""
        self.segment_first_step = self.steps
        self.segment_wall_from = self.wall_s
        if self.observer is not None:
            self.observer.on_begin(self)

    def waste(self, spent: Decision) -> None:
        """Count what a speculative transition that turned out off the chain's path cost (never committed)."""
        for agent, n in spent.calls.items():
            self.wasted_agent_calls[agent] += n
            self.wasted_calls += n
        self.wasted_tokens += spent.tokens
        if spent.usage:
            self._bill(self.wasted_usage, spent.usage)

    # -- recording --------------------------------------------------------------------------------
    def add(self, step: int, call: MicrostepCall, d: Decision, expected: Any, t_start: float, dur: float) -> None:
        """Count a decided step and keep its row for the next commit."""
        key = d.key
        correct: int | None = None
        wrong = False
        if expected is not None:
            correct = int(call.microstep.vote_key(expected) == key)
            if not correct and not call.microstep.candidate:
                self.errors += 1
                wrong = True
        if self.observer is not None and (d.rounds > 1 or d.escalated or wrong):
            self.observer.on_step(step, call, d, wrong=wrong, t_start=t_start, dur=dur)
        n_calls = 0
        agent_calls = self.agent_calls
        for i, n in d.calls.items():
            agent_calls[i] += n
            n_calls += n
        self.calls += n_calls
        self.tokens += d.tokens
        usage = d.usage
        if usage is not None:
            if len(usage) == 1 and self.budget is None:  # the common case, kept lean
                for a, r in usage.items():
                    t = self.usage[a]
                    t[0] += r[0]
                    t[1] += r[1]
                    t[2] += r[2]
                    t[3] += r[3]
            else:
                self._bill(self.usage, usage)
        self.red_flags += d.red_flags
        if d.spare_samples:
            self.spare_samples += d.spare_samples
            self.spare_tokens += d.spare_tokens
        if d.drafted or d.escalated:
            self.drafted += d.drafted
            self.accepted += d.accepted
            self.escalated += d.escalated
        rounds = d.rounds
        self.rounds += rounds
        if rounds > self.top_rounds:
            self.top_rounds = rounds
            if rounds > self.max_rounds:
                self.max_rounds = rounds
        ms = call.microstep
        digest, answer, tokens, name = call.digest(), ms.answer_json(d.answer), d.tokens, ms.name
        # tuple.__new__ makes the named row at a plain tuple's cost: this runs once a step
        bill = None if usage is None else d.usage_json()
        if d.flags is None and d.spec is None and call.tag is None and not self.keep_input:
            row = (
                step,
                digest,
                answer,
                d.votes,
                d.rounds,
                d.samples,
                d.agent,
                t_start,
                dur,
                correct,
                tokens,
                name,
                bill,
            )
            self.pending.append(tuple.__new__(PlainStepRow, row))
            return
        flags = None
        if d.flags is not None:
            flags = json.dumps(d.flags)
            by_reason = self.flags_by_reason
            for reason, n in d.flags.items():
                by_reason[reason] = by_reason.get(reason, 0) + n
        spec = None if d.spec is None else json.dumps(d.spec)
        prompt = call.prompt if self.keep_input else None
        head = (step, digest, answer, d.votes, d.rounds, d.samples, flags, d.agent, t_start, dur, correct, spec)
        self.pending.append(tuple.__new__(StepRow, (*head, tokens, prompt, name, call.tag, bill)))

    def _bill(self, into: list[list[int]], usage: dict[int, list[int]]) -> None:
        """Add a decision's bill to ``into`` (by agent), and spend it from the budget."""
        cost = 0.0
        tokens = 0
        prices = self.prices
        for a, r in usage.items():
            t = into[a]
            t[0] += r[0]
            t[1] += r[1]
            t[2] += r[2]
            t[3] += r[3]
            tokens += r[0] + r[2]
            price = prices[a]
            if price is not None:
                cost += price.cost(r[0], r[1], r[2])
        if self.budget is not None:
            self.budget.spend(cost, tokens)

    @property
    def over_budget(self) -> bool:
        """Whether spending has reached the budget (the chain then stops at a commit)."""
        return self.budget is not None and self.budget.reached

    def billed(self) -> list[int]:
        """The run's bill in all agents together, committed steps' and dropped speculative steps':
        ``[prompt, cached, completion, estimated requests]``."""
        rows = [*self.usage, *self.wasted_usage]
        return [sum(r[i] for r in rows) for i in range(4)]

    def tokens_billed(self) -> int:
        """Tokens billed, prompt and completion, committed steps' and dropped speculative steps'."""
        prompt, _, completion, _ = self.billed()
        return prompt + completion

    def agent_costs(self, wasted: bool = False) -> list[float | None]:
        """Dollars by agent (None: the agent's price is unknown and it was billed)."""
        out: list[float | None] = []
        for price, r in zip(self.prices, self.wasted_usage if wasted else self.usage, strict=True):
            if price is None:
                out.append(None if (r[0] or r[2]) else 0.0)
            else:
                out.append(price.cost(r[0], r[1], r[2]))
        return out

    def cost(self, wasted: bool | None = None) -> float | None:
        """Dollars spent: committed and wasted (``wasted=None``), or one of them; None when a billed agent's price
        is unknown."""
        parts = [False, True] if wasted is None else [wasted]
        total = 0.0
        for w in parts:
            for c in self.agent_costs(w):
                if c is None:
                    return None
                total += c
        return total

    @property
    def estimated(self) -> bool:
        """Whether any bill is an estimate (a server that reported no usage, or a local or simulated model)."""
        return self.billed()[3] > 0

    def commit(self, step: int, state: Any, wall_s: float) -> None:
        """Write the pending rows with the state reached after them (``step`` steps committed)."""
        self.steps = step
        self.wall_s = wall_s
        if self.pending:
            self._point(self.top_rounds)
        if self.store is not None:
            self.stop_asked = self.store.commit(
                self.rid,
                self.pending,
                self.samples or (),
                (step, state.model_dump_json()),
                self.counters(),
                self.snapshot_every,
            )
            if self._log is not None:
                for r in self.pending:
                    self._log.debug(
                        "step committed",
                        step=r.step,
                        votes=r.votes,
                        rounds=r.rounds,
                        samples=r.samples,
                        red_flags=r.red_flags,
                        agent=self._label(r.agent),
                        correct=r.correct,
                    )
        if self.observer is not None and self.pending:
            self.observer.on_commit(self, step)
        self.pending.clear()
        if self.samples:
            self.samples.clear()

    def _point(self, top_rounds: int | None) -> None:
        """Add the point of the run as it stands (``top_rounds``: the most rounds of a step since the last one)."""
        self.points.add(
            {
                "step": self.steps,
                "wall_s": round(self.wall_s, 3),
                "calls": self.calls,
                "rounds": self.rounds,
                "red_flags": self.red_flags,
                "errors": self.errors,
                "cost": None if (c := self.cost()) is None else round(c, 6),
                "wasted_calls": self.wasted_calls,
                "max_rounds": top_rounds,
            },
            self.flags_by_reason,
        )
        self.top_rounds = 0

    def failed(self, exc: BaseException) -> None:
        """Keep what a failed transition got to (``exc.attempt``: its calls, decisions, samples) in the store's
        failures. Nothing of it is counted: the run's counters stay the sums over its committed steps."""
        if self.store is None or not isinstance(exc, RunError) or exc.step is None:
            return
        step, attempt = exc.step, exc.attempt
        if not isinstance(attempt, Attempt):
            return
        t = time.time()
        error = str(exc)
        rows: list[tuple[Any, ...]] = []
        for i, (call, d, out) in enumerate(zip(attempt.calls, attempt.decisions, attempt.outs, strict=True)):
            ms = call.microstep
            answer = votes = flags = None
            rounds = samples = agent = tokens = calls = None
            if d is not None:
                answer = None if d.key is None else ms.answer_json(d.answer)
                votes, rounds, samples, agent, tokens = d.votes or None, d.rounds, d.samples, d.agent, d.tokens
                flags = None if d.flags is None else json.dumps(d.flags)
                calls = sum(d.calls.values())
            detail = (
                None
                if not out
                else json.dumps(
                    [
                        [idx, rnd, a, temp, tok, text, flag, None if vote is None else json.loads(vote)]
                        for _s, idx, rnd, a, temp, tok, text, flag, vote in out
                    ]
                )
            )
            rows.append(
                (
                    step + i,
                    t,
                    attempt.kind,
                    error,
                    ms.name,
                    call.tag,
                    call.digest(),
                    call.prompt,
                    answer,
                    votes,
                    rounds,
                    samples,
                    flags,
                    agent,
                    tokens,
                    calls,
                    detail,
                )
            )
        if not rows:
            rows.append((step, t, attempt.kind, error, *([None] * 13)))
        self.store.record_failures(self.rid, rows)

    def backtrack(self, branch: Branch, state: Any) -> None:
        """Go back to ``branch.from_step`` with ``state`` (what the new branch starts from): the pending rows before
        it are committed, and those from there on and the committed steps after it move to the branch's abandoned
        steps, in one transaction with the counters.
        What the abandoned steps cost stays spent; their wrong answers leave the run's errors."""
        self.steps = branch.from_step
        if self.store is not None:
            counters = self.counters()
            wrong = self.store.backtrack(
                self.rid,
                branch,
                self.pending,
                self.samples or (),
                state.model_dump_json(),
                counters,
                self.candidates,
            )
        else:
            start = branch.from_step
            wrong = sum(
                1 for r in self.pending if r.step >= start and r.correct == 0 and r.microstep not in self.candidates
            )
        self.errors -= wrong
        self.pending.clear()
        if self.samples:
            self.samples.clear()

    def start_at(self, step: int) -> None:
        """A fork's ledger: the run's own steps begin at ``step`` (the parent's steps before it are not counted)."""
        self.steps = self.first_step = step

    def _label(self, i: int) -> str:
        return agent_label(self.labels, i).split(": ", 1)[-1]

    def report(self, step: int, elapsed: float, done_here: int) -> None:
        assert self.on_progress is not None
        self.steps = step
        self.on_progress(
            Progress(
                run_id=self.run_id,
                steps=step,
                expected_steps=self.expected_steps,
                calls=self.calls,
                red_flags=self.red_flags,
                errors=self.errors,
                max_rounds=self.max_rounds,
                elapsed_s=elapsed,
                steps_per_s=done_here / elapsed if elapsed > 0 else 0.0,
                wasted_calls=self.wasted_calls,
                tokens=self.tokens_billed(),
                cost=self.cost(),
                branches=0 if self.backtracker is None else self.backtracker.branches,
            )
        )

    # -- what the store and the summary read --------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "calls": self.calls,
            "red_flags": self.red_flags,
            "errors": self.errors,
            "max_rounds": self.max_rounds,
            "tokens": self.tokens,
            "wall_s": self.wall_s,
            "stats": json.dumps(self.stats()),
        }

    def stats(self) -> dict[str, Any]:
        return {
            "agent_calls": list(self.agent_calls),
            "agents": self.labels,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "escalated": self.escalated,
            "spare_samples": self.spare_samples,
            "spare_tokens": self.spare_tokens,
            "wasted": {
                "calls": self.wasted_calls,
                "tokens": self.wasted_tokens,
                "agent_calls": list(self.wasted_agent_calls),
                "hits": self.window_hits,
                "misses": self.window_misses,
                "waited": self.window_waited,
                "went_on": self.window_went_on,
                "usage": [list(r) for r in self.wasted_usage],
                "cost": self.cost(wasted=True),
            },
            "usage": [list(r) for r in self.usage],
            "prices": [None if p is None else p.as_list() for p in self.prices],
            "cost": self.cost(),
            "voting": {name: {"rule": p.rule, "k": p.k} for name, p in self.policies.items()},
            "candidates": self.candidates,
            "points": self.points.as_json(),
            **({} if self.backtracker is None else {"backtrack": self.backtracker.stats()}),
        }

    def agent_calls_by_label(self) -> dict[str, int]:
        return dict(zip(self.labels, self.agent_calls, strict=True))
