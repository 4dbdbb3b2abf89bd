"""The speculative window: a fast drafter runs the chain ahead, and the decisions of the drafted steps go out together.

A chain is sequential: step t+1's prompt needs step t's answer, so one step costs at least
one model latency. With a drafter, the next state can be *predicted*: apply the draft of
step t to its state, draft step t+1 on that, and so on, up to ``size`` transitions ahead.
Each drafted transition's ordinary decision starts at once (verifier scores or votes, and
escalation to voting if the draft is rejected), exactly as it would when the chain got
there: same call, same seeds, same ground truth. Their requests go out concurrently and
are batched. When the chain reaches a transition whose real state equals the predicted
one, that decision is the one the chain would have made itself, so it is taken as it is;
otherwise everything predicted from there on is dropped (and counted as wasted), and
drafting starts again from the real state. Nothing speculative is ever committed: the
ledger only ever sees the decisions of real states, in step order, so the trace is the
one a run without a window makes.

The window adapts to how often predictions hold, as adaptive draft lengths do in
speculative decoding: with a share ``a`` of the recent predictions holding, about
``L = a / (1 - a)`` transitions hold in a row, and the window keeps ``1 + 0.4 L`` in flight
(at least two, at most ``cap``). A miss then drops about 0.4 L transitions, once every L:
whatever the drafter, the calls wasted per step stay near 0.4 of a transition's own calls
(its verifier calls), so a poor drafter gets a short window and a good one a long one.
Measured trade-off (``bench/bench_pipeline.py``): a larger share runs faster and wastes more.

A rejected draft escalates to voting, which takes a large-model latency. Whether the window
waits for that vote depends on what rejections have meant so far in the run: when most
rejected drafts were overturned by their vote (a drafter that errs more often than the
verifiers reject a right draft), it waits, since what lies past the draft is most likely
wasted; when most were upheld (false rejects), it keeps drafting and verifying past it, and
the vote's latency is hidden behind the steps after it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import structlog

from maker.dsl import Done, MicrostepCall, Workflow
from maker.engine._decider import Decider, Decision, Drafted
from maker.engine._ledger import Ledger
from maker.engine._transitions import bad_calls, calls_of

__all__ = ["Window", "Transition"]

log = structlog.get_logger("maker")

FLOOR = 2  # the least an adaptive window keeps in flight: with nothing predicted, nothing shows that more would hold
SHARE = 0.4  # the share of the expected run of predictions that hold which an adaptive window keeps in flight
RECENT = 64  # predictions the hold rate is measured over
PRIOR = (7, 1)  # held, missed: a start of 1 + 0.4 * 7, about 4 transitions, until the run's own figures come in
REJECTS = 32  # rejected drafts the share overturned by their vote is measured over
REJECT_PRIOR = (1, 1)  # overturned, upheld: until the run's own figures come in, a rejected draft is a coin toss


class Transition:
    """One transition asked on a (real or predicted) state: its calls, drafts and decisions in flight."""

    __slots__ = ("step", "state", "calls", "single", "expected", "outs", "drafts", "tasks", "after", "rejected")

    def __init__(
        self,
        step: int,
        state: Any,
        calls: list[MicrostepCall],
        single: bool,
        expected: list[Any],
        outs: list[list[tuple[Any, ...]] | None],
    ) -> None:
        self.step = step
        self.state = state
        self.calls = calls
        self.single = single
        self.expected = expected
        self.outs = outs
        self.drafts: list[Drafted] = []
        self.tasks: list[asyncio.Task[Decision]] = []
        self.after: Any = None
        """The state its drafts lead to (None: the drafts do not say, so nothing can be predicted past it)."""
        self.rejected = False
        """The verifiers turned one of its drafts down (its vote may still agree with the draft)."""

    async def decisions(self) -> list[Decision]:
        """Its decisions; on failure, the error of the lowest step, after every call has finished."""
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def drop(self) -> Decision:
        """Cancel what is in flight; what it cost so far (its calls, tokens, red flags) as one Decision."""
        spent = Decision()
        for task, drafted in zip(self.tasks, self.drafts, strict=False):
            if task.done() and not task.cancelled() and task.exception() is None:
                d = task.result()
            else:
                task.cancel()
                d = drafted.decision  # a drafted step's decision builds on its draft's: what it asked so far
            for agent, n in d.issued.items():  # requests sent, answered or not: each was paid for
                spent.called(agent, n)
            spent.tokens += d.tokens
            if d.usage:  # what came back; a request cancelled in flight has no bill to read
                for agent, (p, c, o, e) in d.usage.items():
                    spent.billed(agent, p, c, o, e)
        return spent


class Window:
    """Keeps up to ``size`` transitions drafted and being decided ahead of the chain (``size`` <= ``cap``)."""

    def __init__(
        self,
        wf: Workflow[Any, Any],
        decider: Decider,
        *,
        cap: int,
        adaptive: bool,
        keep_samples: bool,
        oracle: bool,
        expected: Any,
        ledger: Ledger,
        crash: Any = None,
    ) -> None:
        self.wf = wf
        self.decider = decider
        self.cap = max(1, cap)
        self.adaptive = adaptive
        self._recent: deque[bool] = deque(maxlen=RECENT)
        self.size = self._fit() if adaptive else self.cap
        self.keep_samples = keep_samples
        self.has_oracle = oracle
        self._expected = expected  # the scheduler's oracle reader: (state, n, step) -> list
        self._crash = crash  # the scheduler's error for workflow code that raised: (method, exc, step) -> error
        self.ledger = ledger  # counts what dropped transitions cost, and how often predictions held
        self.ahead: deque[Transition] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._paused: Transition | None = None  # a transition whose draft the verifiers turned down
        self._overturned: deque[bool] = deque(maxlen=REJECTS)  # per rejected draft: did its vote overturn it

    # -- what the chain calls ----------------------------------------------------------------------
    async def transition(self, step: int, state: Any) -> Transition | None:
        """The transition at this real step and state, its decisions under way (None: the workflow is done)."""
        head = self.ahead[0] if self.ahead else None
        if head is not None and head.step == step and head.state == state:
            return head
        self._drop_all()
        t = await self._draft(step, state)
        if t is None:
            return None
        self.ahead.append(t)
        self._run_ahead()
        return t

    def advanced(self, step: int, state: Any) -> None:
        """The chain applied the head transition and is at ``step`` with ``state``: keep what was predicted if it
        holds, else drop it all."""
        done = self.ahead.popleft() if self.ahead else None
        head = self.ahead[0] if self.ahead else None
        if head is None:
            return
        held = head.step == step and head.state == state
        if done is not None and done.rejected:
            self._overturned.append(not held)
        if held:
            self.ledger.window_hits += 1
        else:
            self.ledger.window_misses += 1
            self._drop_all()
        if self.adaptive:
            self._recent.append(held)
            self.size = self._fit()
        if self._paused is not None and self._paused not in self.ahead:
            self._paused = None  # its escalated vote is in, and the chain went on from it
        self._room.set()

    def _fit(self) -> int:
        """The adaptive size: 1 + SHARE of the expected run of predictions that hold, at the recent hold rate."""
        held = PRIOR[0] + sum(self._recent)
        missed = PRIOR[1] + len(self._recent) - sum(self._recent)
        return max(min(FLOOR, self.cap), min(self.cap, round(1 + SHARE * held / missed)))

    def close(self) -> None:
        """Stop drafting and drop whatever is in flight (the chain ended, or failed)."""
        self._drop_all()

    # -- inside ------------------------------------------------------------------------------------
    def _rejected(self, t: Transition) -> None:
        """The verifiers turned down a draft of ``t``. When the recent rejected drafts were mostly overturned by
        their vote, what is predicted past it most likely rests on a wrong draft: draft no further until the vote
        is in. When they were mostly upheld (the verifiers' false rejects outnumber the drafter's errors, as with
        a voted draft), keep going: the vote will most likely agree, and the steps past it are then ready."""
        t.rejected = True
        if t not in self.ahead or self._paused is not None:
            return  # the chain is past it already, or the window waits at an earlier rejected draft
        if self.overturn_share() >= 0.5:
            self._paused = t
            self.ledger.window_waited += 1
        else:
            self.ledger.window_went_on += 1

    def overturn_share(self) -> float:
        """The share of recent rejected drafts that their vote overturned (with a prior of one each way)."""
        over = REJECT_PRIOR[0] + sum(self._overturned)
        return over / (sum(REJECT_PRIOR) + len(self._overturned))

    def _drop_all(self) -> None:
        self._paused = None
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None
        while self.ahead:
            self.ledger.waste(self.ahead.pop().drop())

    def _run_ahead(self) -> None:
        if self._runner is None and self.size > 1:
            self._runner = asyncio.get_running_loop().create_task(self._predict())

    async def _predict(self) -> None:
        """Draft transitions on predicted states while there is room in the window and the drafts say where the
        chain goes next."""
        try:
            while True:
                while len(self.ahead) >= self.size or self._paused is not None:
                    self._room.clear()
                    await self._room.wait()
                last = self.ahead[-1]
                if last.after is None:
                    return  # a draft that was routed away, red-flagged or not applicable: the chain must get there
                t = await self._draft(last.step + len(last.calls), last.after, predicted=True)
                if t is None:
                    return
                self.ahead.append(t)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a predicted state the workflow cannot work on: the real chain will tell
            log.debug("speculative window stopped drafting", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _draft(self, step: int, state: Any, predicted: bool = False) -> Transition | None:
        wf = self.wf
        try:
            asked: Any = wf.next(state)  # whatever the workflow's code returned: checked below
        except Exception as exc:
            if predicted or self._crash is None:
                raise
            raise self._crash("next", exc, step) from exc
        if isinstance(asked, Done):
            return None
        single = type(asked) is MicrostepCall
        calls = calls_of(asked)
        if calls is None:
            if predicted:
                return None
            raise bad_calls(wf, asked, step, self.decider.run_id)
        if not self.has_oracle:
            expected: list[Any] = [None] * len(calls)
        elif single:
            try:
                expected = [wf.oracle(state)]
            except Exception as exc:
                if predicted or self._crash is None:
                    raise
                raise self._crash("oracle", exc, step, calls) from exc
        else:
            expected = self._expected(state, len(calls), step)
        outs: list[list[tuple[Any, ...]] | None] = [[] if self.keep_samples else None for _ in calls]
        t = Transition(step, state, calls, single, expected, outs)
        decider = self.decider
        t.drafts = list(
            await asyncio.gather(
                *(decider.draft(step + i, c, e, True) for i, (c, e) in enumerate(zip(calls, expected, strict=True)))
            )
        )
        for dr in t.drafts:
            dr.on_reject = lambda t=t: self._rejected(t)
        loop = asyncio.get_running_loop()
        t.tasks = [
            loop.create_task(decider.decide(step + i, c, e, o, True, drafted=dr))
            for i, (c, e, o, dr) in enumerate(zip(calls, expected, outs, t.drafts, strict=True))
        ]
        if all(dr.usable for dr in t.drafts):
            try:
                t.after = wf.apply(state, t.drafts[0].answer if single else tuple(dr.answer for dr in t.drafts))
            except Exception:  # the drafts do not apply: nothing to predict from
                t.after = None
        return t
