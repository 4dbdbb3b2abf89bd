"""What a workflow's ``next`` returned, read one way for everyone: the chain, the speculative window, re-applying.

``next`` returns one call, a list of calls decided together (a fan-out), or ``DONE``. Anything else (an empty
list, a list with something other than calls in it, ``None``) is the workflow's mistake, and :func:`bad_calls`
says so, naming what came back and what to return instead.
"""

from __future__ import annotations

from typing import Any

from maker.dsl import MicrostepCall, Workflow
from maker.errors import RunError

__all__ = ["calls_of", "fan_out", "bad_calls"]


def calls_of(asked: Any) -> list[MicrostepCall] | None:
    """The calls ``next`` asked (one, or a fan-out's), or None when it asked none (DONE or something else)."""
    if type(asked) is MicrostepCall:
        return [asked]
    return fan_out(asked)


def fan_out(asked: Any) -> list[MicrostepCall] | None:
    """The calls of a fan-out (a non-empty list or tuple of calls), or None when ``asked`` is not one."""
    if isinstance(asked, (list, tuple)) and asked and all(type(c) is MicrostepCall for c in asked):
        return list(asked)
    return None


def bad_calls(wf: Workflow[Any, Any], asked: Any, step: int, run_id: str) -> RunError:
    """The error for a ``next()`` that returned neither a call, nor a list of calls, nor DONE."""
    name = type(wf).__name__
    if isinstance(asked, (list, tuple)) and not asked:
        return RunError(
            f"{name}.next() returned an empty list; return DONE when the task is finished", run_id=run_id, step=step
        )
    return RunError(
        f"{name}.next() returned {asked!r}; return microstep.ask(...), a list of such calls (decided "
        f"at the same time), or DONE",
        run_id=run_id,
        step=step,
    )
