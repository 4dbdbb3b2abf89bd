"""Feeding recorded answers back through a workflow's own ``next`` and ``apply``.

Resume (from a snapshot to the last commit), replay (the whole trace, every input
checked) and fork (to the fork point) all walk recorded steps the same way: one
transition at a time, taking as many recorded rows as ``next`` asks calls (a fan-out
takes several consecutive steps), then one ``apply``. What each does when the records and
the code disagree differs, so the walk raises one of two exceptions and leaves the
wording to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from maker.dsl import MicrostepCall, Workflow
from maker.engine._transitions import calls_of
from maker.errors import MakerError, StoreCorruptError, WorkflowCodeError

__all__ = ["Row", "reapply", "WorkflowEnded", "SplitTransition"]


class Row(NamedTuple):
    """A recorded step as re-applying needs it."""

    owner: Any
    """Whose trace the step is in (a run's record, or its id)."""
    step: int
    digest: str
    """The recorded prompt's digest."""
    answer: str
    """The decided answer, as JSON."""


class WorkflowEnded(Exception):
    """The workflow is done, or asks nothing it can be given, where the records have another step."""

    def __init__(self, row: Row, asked: Any) -> None:
        super().__init__(f"step {row.step}")
        self.row = row
        self.asked = asked


class SplitTransition(Exception):
    """The records stop inside a fan-out: ``next`` asks ``size`` calls from step ``first``, fewer are there."""

    def __init__(self, owner: Any, first: int, size: int) -> None:
        super().__init__(f"steps {first}..{first + size - 1}")
        self.owner = owner
        self.first = first
        self.size = size


def reapply(
    wf: Workflow[Any, Any],
    state: Any,
    rows: Iterable[Row],
    start: int,
    *,
    check: Callable[[Row, MicrostepCall], None] | None = None,
    after: Callable[[int, Any, Any], None] | None = None,
    turns: Mapping[int, Callable[[Any], Any]] | None = None,
) -> tuple[Any, int]:
    """Apply recorded ``rows`` (from step ``start``, in step order) to ``state``; returns the state and the next step.

    ``check(row, call)`` sees every recorded row beside the call recomputed for it; ``after(step, state, owner)``
    sees the state after each transition (``step`` steps done). ``turns``: by step, what a run that backtracked
    did to the state there before going on (its branches' retries; see :mod:`maker.engine._backtrack`), applied
    once the transitions reach the step, before ``after`` sees it (the caller applies one at ``start`` itself).
    """
    next_, apply = wf.next, wf.apply
    it = iter(rows)
    step = start
    for row in it:
        if row.step != step:
            raise StoreCorruptError(
                f"run {_name(row.owner)}: step {step} is missing from the store (next is {row.step})"
            )
        try:
            asked = next_(state)
        except MakerError:
            raise
        except Exception as exc:
            raise _code_error(exc, wf, "next", step, row.owner) from exc
        calls = calls_of(asked)
        if calls is None:
            raise WorkflowEnded(row, asked)
        group = [row]
        for _ in range(len(calls) - 1):
            more = next(it, None)
            if more is None:
                raise SplitTransition(row.owner, step, len(calls))
            if more.step != step + len(group):
                raise StoreCorruptError(
                    f"run {_name(more.owner)}: step {step + len(group)} is missing from the store (next is {more.step})"
                )
            group.append(more)
        answers = []
        for r, call in zip(group, calls, strict=True):
            if check is not None:
                check(r, call)
            answers.append(call.microstep.load_answer(r.answer))
        try:
            state = apply(state, answers[0] if type(asked) is MicrostepCall else tuple(answers))
        except MakerError:
            raise
        except Exception as exc:
            raise _code_error(exc, wf, "apply", step, row.owner) from exc
        step += len(calls)
        if turns and step in turns:
            state = turns[step](state)
        if after is not None:
            after(step, state, row.owner)
    return state, step


def _code_error(exc: Exception, wf: Workflow[Any, Any], method: str, step: int, owner: Any) -> WorkflowCodeError:
    """The workflow's code failed on an answer it once accepted: say where, with the user's frame."""
    from maker.engine._failures import code_error

    name = f"{type(wf).__name__}.{method}"
    return code_error(exc, name, workflow=wf, step=step, run_id=_name(owner), kind=method, reapplying=True)


def _name(owner: Any) -> str:
    return str(getattr(owner, "run_id", owner))
