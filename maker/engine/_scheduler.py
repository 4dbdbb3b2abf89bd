"""Which calls are in flight: the chain (a transition at a time), a fan-out within a transition, a rollout.

A *transition* is one ``next``, the decision of every call it asks, and one ``apply``.
``next`` may ask one call or several independent ones (a fan-out); the calls of a
fan-out are decided at the same time, their requests coalesced into batched backend
calls, and take consecutive step indexes in the order ``next`` listed them. The seeds of
a call derive from its step index, and decisions are recorded in step order, so the
trace is the same whichever call finishes first.

The chain commits (through the :class:`~maker.engine._ledger.Ledger`); a rollout, which a
cluster replica runs to go ahead of the driver, decides and applies the same way and
commits nothing.

The workflow's own code (``next``, ``apply``, ``oracle``) is called inside ``try`` blocks, which cost nothing until
something raises: a crash becomes a :class:`~maker.errors.WorkflowCodeError` naming the method and the step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog

from maker.dsl import Done, MicrostepCall, Workflow
from maker.engine._backtrack import Backtracker
from maker.engine._decider import Decider, Decision
from maker.engine._failures import Attempt, code_error, state_error
from maker.engine._ledger import Ledger
from maker.engine._transitions import bad_calls, fan_out
from maker.engine._window import Window
from maker.errors import RunError, StepUndecidedError, StopRequested, WorkflowCodeError
from maker.store import Branch

log = structlog.get_logger("maker")

__all__ = ["Scheduler"]


class Scheduler:
    """Drives a workflow's transitions over one :class:`Decider`."""

    def __init__(
        self, wf: Workflow[Any, Any], decider: Decider, *, run_id: str, backtracker: Backtracker | None = None
    ) -> None:
        self.wf = wf
        self.decider = decider
        self.run_id = run_id
        self.backtracker = backtracker
        """Checks states and goes back to the last that passed (None: the workflow checks nothing and the run may
        not backtrack)."""
        self.has_oracle = wf.has_oracle()
        self.state_cls = type(wf).State

    # -- policies ---------------------------------------------------------------------------------
    async def chain(self, state: Any, ledger: Ledger, ahead: Any = None, window: Window | None = None) -> Any:
        """Advance from ``state`` (after ``ledger.steps`` committed steps) until done; returns the final state.

        ``window``: decisions come from the speculative window (:mod:`maker.engine._window`), which has them under way
        before the chain gets there; they are the same decisions, recorded the same way."""
        wf = self.wf
        decide = self.decider.decide
        has_oracle = self.has_oracle
        keep = ledger.samples
        step = first = ledger.steps
        wall0 = ledger.wall_s
        t0 = time.perf_counter()
        last_commit = last_progress = time.monotonic()
        commit_every = ledger.commit_every
        commit_seconds = ledger.commit_seconds
        pending = ledger.pending
        crash = self.crash
        advance = self.advance
        budget = ledger.budget
        bt = self.backtracker
        if bt is not None:
            bt.begin(step, state)
        try:
            while True:
                if budget is not None and budget.reached:
                    raise budget.error(self.run_id, step)
                if bt is not None:
                    try:
                        state, step, done = await self._checked(state, step, ledger, bt, ahead, window)
                    except StepUndecidedError as exc:
                        if not bt.can_go_back:
                            raise
                        ledger.failed(exc)
                        state, step = self.backtrack(
                            ledger, bt, step, "undecided", f"undecided: {str(exc).splitlines()[0]}"
                        )
                        continue
                    if done:
                        break
                elif window is not None:
                    went = await self._from_window(window, ledger, state, step)
                    if went is None:
                        break
                    state, step = went
                else:
                    if ahead is not None:
                        ahead.at(step, state)
                    try:
                        call = wf.next(state)
                    except Exception as exc:
                        raise crash("next", exc, step) from exc
                    if type(call) is MicrostepCall:  # one call: the common case, kept lean
                        try:
                            expected = wf.oracle(state) if has_oracle else None
                        except Exception as exc:
                            raise crash("oracle", exc, step, [call]) from exc
                        out: list[tuple[Any, ...]] | None = None if keep is None else []
                        t_step = time.time()
                        ts = time.perf_counter()
                        d = await decide(step, call, expected, out)
                        dur = time.perf_counter() - ts
                        state = advance(ledger, state, step, (call,), (d,), (expected,), (out,), t_step, dur, True)
                        step += 1
                    elif isinstance(call, Done):
                        break
                    else:
                        calls = self._calls(call, step)
                        n = len(calls)
                        expected_all = self.expected(state, n, step) if has_oracle else [None] * n
                        t_step = time.time()
                        ts = time.perf_counter()
                        outs: list[list[tuple[Any, ...]] | None] = [None if keep is None else [] for _ in calls]
                        decisions = await self._together(step, calls, expected_all, outs)
                        dur = time.perf_counter() - ts
                        state = advance(ledger, state, step, calls, decisions, expected_all, outs, t_step, dur, False)
                        step += n
                # Commits are grouped, by count and by time; a slow model's steps are therefore committed as they
                # come (one clock read per transition costs well under a microsecond).
                now = time.monotonic()
                if len(pending) >= commit_every or (pending and now - last_commit >= commit_seconds):
                    ledger.commit(step, state, wall0 + time.perf_counter() - t0)
                    last_commit = now
                    if ledger.stop_asked:
                        raise StopRequested(
                            f"run {self.run_id} stopped at step {step:,}, as asked; its steps are committed "
                            f"(`maker resume {self.run_id}` goes on)",
                            run_id=self.run_id,
                            step=step,
                        )
                if ledger.on_progress is not None and now - last_progress >= ledger.progress_seconds:
                    last_progress = now
                    ledger.report(step, time.perf_counter() - t0, step - first)
        finally:
            # Whatever stops the chain (done, a failure, Ctrl-C), what was decided is kept.
            if window is not None:
                window.close()
            wall = wall0 + time.perf_counter() - t0
            if pending:
                ledger.commit(step, state, wall)
            ledger.steps = step
            ledger.wall_s = wall
        return state

    async def _from_window(self, window: Window, ledger: Ledger, state: Any, step: int) -> tuple[Any, int] | None:
        """The next transition from the speculative window, applied and recorded: the state and step after it, or
        None when the workflow is done."""
        t = await window.transition(step, state)
        if t is None:
            return None
        t_step = time.time()
        ts = time.perf_counter()
        decisions = await t.decisions()
        dur = time.perf_counter() - ts
        state = self.advance(ledger, state, step, t.calls, decisions, t.expected, t.outs, t_step, dur, t.single)
        step += len(t.calls)
        window.advanced(step, state)
        return state, step

    async def _checked(
        self, state: Any, step: int, ledger: Ledger, bt: Backtracker, ahead: Any, window: Window | None
    ) -> tuple[Any, int, bool]:
        """One transition of a run whose states are checked: decided and recorded as :meth:`chain` does, then the
        workflow's check of the new state; a failed check sends the run back (:meth:`backtrack`) while it may, and is
        counted otherwise. Returns the state, its step, and whether the workflow is done."""
        wf = self.wf
        keep = ledger.samples
        if window is not None:
            went = await self._from_window(window, ledger, state, step)
            if went is None:
                return state, step, True
            state, step = went
        else:
            if ahead is not None:
                ahead.at(step, state)
            try:
                asked = wf.next(state)
            except Exception as exc:
                raise self.crash("next", exc, step) from exc
            if isinstance(asked, Done):
                return state, step, True
            calls = [asked] if type(asked) is MicrostepCall else self._calls(asked, step)
            n = len(calls)
            if not self.has_oracle:
                expected: list[Any] = [None] * n
            elif type(asked) is MicrostepCall:
                try:
                    expected = [wf.oracle(state)]
                except Exception as exc:
                    raise self.crash("oracle", exc, step, calls) from exc
            else:
                expected = self.expected(state, n, step)
            outs: list[list[tuple[Any, ...]] | None] = [None if keep is None else [] for _ in calls]
            t_step = time.time()
            ts = time.perf_counter()
            if type(asked) is MicrostepCall:
                decisions = [await self.decider.decide(step, asked, expected[0], outs[0])]
            else:
                decisions = await self._together(step, calls, expected, outs)
            dur = time.perf_counter() - ts
            single = type(asked) is MicrostepCall
            state = self.advance(ledger, state, step, calls, decisions, expected, outs, t_step, dur, single)
            step += n
        try:
            verdict = wf.check(state)
        except Exception as exc:
            raise self.crash("check", exc, step) from exc
        reason = bt.passed(step, state, verdict)
        if reason is not None:
            if bt.can_go_back:  # never with a window: run options refuse --backtracks with --window
                state, step = self.backtrack(ledger, bt, step, "check", reason)
            else:
                bt.failed_checks += 1
        return state, step, False

    def backtrack(self, ledger: Ledger, bt: Backtracker, at: int, kind: str, reason: str) -> tuple[Any, int]:
        """Go back to the last state that passed, from ``at`` steps (``kind``: ``check`` or ``undecided``, and why):
        the workflow's ``retry`` gives the new branch's state, the steps since move to the abandoned branch, and the
        decider takes the new branch's seeds. Returns the state and step to go on from."""
        assert bt.good_step is not None
        branch = Branch(bt.branches + 1, bt.good_step, at, kind, reason, time.time())
        try:
            state = self.wf.retry(bt.good_state, reason)
        except Exception as exc:
            raise self.crash("retry", exc, at) from exc
        if not isinstance(state, self.state_cls):
            raise state_error(state, workflow=self.wf, step=at, run_id=self.run_id, method="retry")
        bt.branches = branch.branch
        bt.good_state = state
        ledger.backtrack(branch, state)
        self.decider.on_branch(branch.branch)
        log.debug(  # the progress line counts them; one line each would bury it on a run that backtracks often
            "backtracked",
            run_id=self.run_id,
            branch=branch.branch,
            from_step=branch.from_step,
            to_step=at,
            kind=kind,
            reason=reason[:200],
        )
        return state, branch.from_step

    async def rollout(self, state: Any, step: int, steps: int) -> tuple[Any, int, str, str | None]:
        """Decide and apply transitions from ``state`` (at ``step``) until ``steps`` steps are done, committing
        nothing. Returns the state reached, its step, and why it stopped: ``steps`` (the budget ran out), ``done``
        (the workflow finished) or ``error`` (with the error's text)."""
        wf = self.wf
        end = step + steps
        try:
            while step < end:
                call = wf.next(state)
                if isinstance(call, Done):
                    return state, step, "done", None
                if type(call) is MicrostepCall:  # decided as the chain decides it: on its own
                    expected = wf.oracle(state) if self.has_oracle else None
                    state = wf.apply(state, (await self.decider.decide(step, call, expected, None)).answer)
                    step += 1
                    continue
                calls = self._calls(call, step)  # a fan-out, even of one call: together, answers as a tuple
                expected_all = self.expected(state, len(calls), step) if self.has_oracle else [None] * len(calls)
                decisions = await self._together(step, calls, expected_all, [None] * len(calls))
                state = wf.apply(state, tuple(d.answer for d in decisions))
                step += len(calls)
        except Exception as exc:  # the driver meets the same failure at this step and reports it
            return state, step, "error", f"{type(exc).__name__}: {exc}"[:500]
        return state, step, "steps", None

    def advance(
        self,
        ledger: Ledger,
        state: Any,
        step: int,
        calls: Sequence[MicrostepCall],
        decisions: Sequence[Decision],
        expected: Sequence[Any],
        outs: Sequence[list[tuple[Any, ...]] | None],
        t_step: float,
        dur: float,
        single: bool,
    ) -> Any:
        """The one path of a decided transition: apply its answers (one answer, or a fan-out's tuple), check that
        ``apply`` gave the workflow's State, and add its decisions to the ledger in step order with their sample
        rows; returns the new state. Only a transition whose answers applied cleanly is recorded, so every commit's
        snapshot is the state after exactly the steps it holds."""
        try:
            new = self.wf.apply(state, decisions[0].answer if single else tuple(d.answer for d in decisions))
        except Exception as exc:
            raise self.crash("apply", exc, step, calls, decisions, outs) from exc
        if type(new) is not self.state_cls:
            self._check_state(new, step, calls, decisions, outs)
        keep = ledger.samples
        if len(calls) == 1:
            ledger.add(step, calls[0], decisions[0], expected[0], t_step, dur)
            if outs[0]:
                keep.extend(outs[0])  # type: ignore[union-attr]
            return new
        for i, (c, d, e, o) in enumerate(zip(calls, decisions, expected, outs, strict=True)):
            ledger.add(step + i, c, d, e, t_step, dur)
            if o:
                keep.extend(o)  # type: ignore[union-attr]
        return new

    # -- a fan-out --------------------------------------------------------------------------------
    async def _together(
        self,
        step: int,
        calls: Sequence[MicrostepCall],
        expected: Sequence[Any],
        outs: Sequence[list[tuple[Any, ...]] | None],
    ) -> list[Decision]:
        """Decide the calls of a fan-out at once; on failure, the error of the lowest step (whatever finished
        first), after every call has finished."""
        decide = self.decider.decide
        results = await asyncio.gather(
            *(decide(step + i, c, e, o, True) for i, (c, e, o) in enumerate(zip(calls, expected, outs, strict=True))),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    # -- the workflow's own code failing ------------------------------------------------------------
    def crash(
        self,
        method: str,
        exc: BaseException,
        step: int,
        calls: Sequence[MicrostepCall] = (),
        decisions: Sequence[Decision] = (),
        outs: Sequence[list[tuple[Any, ...]] | None] = (),
    ) -> WorkflowCodeError:
        """The error for the workflow's ``method`` raising ``exc`` at ``step``, with how far the transition got."""
        names = sorted({c.microstep.name for c in calls})
        return code_error(
            exc,
            f"{type(self.wf).__name__}.{method}",
            workflow=self.wf,
            step=step,
            run_id=self.run_id,
            kind=method,
            microstep=", ".join(names) or None,
            attempt=Attempt(method, calls, decisions, outs),
        )

    def _check_state(
        self,
        new: Any,
        step: int,
        calls: Sequence[MicrostepCall],
        decisions: Sequence[Decision],
        outs: Sequence[list[tuple[Any, ...]] | None],
    ) -> None:
        """``apply`` returned something other than exactly the workflow's State: a subclass passes, anything else
        is an error at this step (nothing of the transition is kept)."""
        if not isinstance(new, self.state_cls):
            raise state_error(
                new, workflow=self.wf, step=step, run_id=self.run_id, attempt=Attempt("apply", calls, decisions, outs)
            )

    def _calls(self, asked: Any, step: int) -> list[MicrostepCall]:
        calls = fan_out(asked)
        if calls is None:
            raise bad_calls(self.wf, asked, step, self.run_id)
        return calls

    def expected(self, state: Any, n: int, step: int) -> list[Any]:
        try:
            expected = self.wf.oracle(state)
        except Exception as exc:
            raise self.crash("oracle", exc, step) from exc
        if expected is None:
            return [None] * n
        if not isinstance(expected, (list, tuple)) or len(expected) != n:
            raise RunError(
                f"{type(self.wf).__name__}.oracle() must give one answer (or None) per call that next() asked: "
                f"next() asked {n} calls, oracle() returned {expected!r}"[:400],
                run_id=self.run_id,
                step=step,
            )
        return list(expected)
