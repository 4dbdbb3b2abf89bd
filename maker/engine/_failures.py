"""What a failed step says, and what it leaves in the store.

* :func:`code_error`: the workflow's own code raised (``next``, ``apply``, ``oracle``, a red-flag rule) at a step:
  a :class:`~maker.errors.WorkflowCodeError` that names the method, the workflow and the step, shows the user's
  frames (the engine's are left out, of the message and of the original exception's traceback) and says how to go on.
* :func:`undecided_error`: no vote decided a step: the red flags by reason and the likeliest fix.
* :class:`Attempt`: how far the failed transition got (its calls, decisions and samples); the ledger keeps it in the
  store's ``failures`` table, apart from the committed steps, and ``maker trace show RUN --step N`` shows it.

Only a failure runs any of this; the chain's hot path pays nothing for it.
"""

from __future__ import annotations

import inspect
import os
import sysconfig
import traceback
from collections.abc import Sequence
from typing import Any

from maker.errors import MakerError, StepUndecidedError, WorkflowCodeError

__all__ = ["Attempt", "EARLY_SAMPLES", "code_error", "state_error", "undecided_error", "unknown_microstep"]

EARLY_SAMPLES = 30
"""An agent that gave a step this many samples, at most one in twenty of them valid (not red-flagged), stops there
(the step escalates, or fails with its diagnosis) instead of spending every round. A model that is valid half the
time stops a step this way with probability about 3e-8 (one step in thirty million); one valid a fifth of the time,
about one step in 100."""

_ENGINE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
"""The package's own folder (``maker/``, every subpackage in it): frames from there are the engine's, not the user's."""
_LIBS = tuple(
    {os.path.abspath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)
_FRAMES = 3


class Attempt:
    """A failed transition's calls, with the decision and sample rows each got to (None where it got none)."""

    __slots__ = ("kind", "calls", "decisions", "outs")

    def __init__(
        self,
        kind: str,
        calls: Sequence[Any] = (),
        decisions: Sequence[Any] = (),
        outs: Sequence[list[tuple[Any, ...]] | None] = (),
    ) -> None:
        self.kind = kind
        """``undecided``, or the method that failed: ``next``, ``apply``, ``oracle``, ``red_flag``."""
        self.calls = list(calls)
        self.decisions = list(decisions) + [None] * (len(self.calls) - len(decisions))
        self.outs = list(outs) + [None] * (len(self.calls) - len(outs))


# -- workflow code ------------------------------------------------------------------------------------
def code_error(
    exc: BaseException,
    method: str,
    *,
    workflow: Any,
    step: int,
    run_id: str,
    kind: str,
    microstep: str | None = None,
    attempt: Attempt | None = None,
    reapplying: bool = False,
) -> WorkflowCodeError:
    """The error for ``exc``, raised by the workflow's ``method`` at ``step``; raise it ``from exc``.

    ``workflow``: the workflow (or its class); ``kind``: what the failure record calls it (``next``, ``apply``, ...).
    ``reapplying``: the code failed on a recorded answer while resume, replay or fork re-applied it (nothing is
    attempted, so there is no failure record).
    """
    cls = workflow if isinstance(workflow, type) else type(workflow)
    name = getattr(cls, "name", cls.__name__)
    frames = _user_frames(exc)
    text = f"{type(exc).__name__}: {exc}".strip()
    if reapplying:
        message = (
            f"{method} raised {text[:500]} while re-applying recorded step {step} of run {run_id} (workflow "
            f"{name!r}); the recorded steps are kept. The code no longer accepts what it accepted when the run was "
            f"recorded: fix it (or give the workflow a new version), then try again\n{frames}"
        )
    else:
        where = f" (microstep {microstep!r})" if microstep else ""
        message = (
            f"{method} raised {text[:500]} at step {step}{where} of workflow {name!r}\n{frames}\n{_go_on(run_id, step)}"
        )
    return WorkflowCodeError(
        message,
        method=method,
        workflow=name,
        run_id=run_id,
        step=step,
        attempt=None if reapplying else attempt if attempt is not None else Attempt(kind),
    )


def state_error(
    returned: Any, *, workflow: Any, step: int, run_id: str, attempt: Attempt | None = None, method: str = "apply"
) -> WorkflowCodeError:
    """``apply`` (or ``retry``) returned something that is not the workflow's ``State``."""
    cls = type(workflow)
    state = cls.State.__name__
    shown = repr(returned)
    where = ""
    try:
        fn = inspect.unwrap(getattr(cls, method))
        where = f'\n  File "{inspect.getsourcefile(fn)}", line {fn.__code__.co_firstlineno}, in {method}'
    except (TypeError, AttributeError):
        pass
    what = "the state after the answer" if method == "apply" else "the state a new branch starts from"
    err = WorkflowCodeError(
        f"{cls.__name__}.{method} returned {type(returned).__name__} {shown[:120]}{'...' if len(shown) > 120 else ''} "
        f"at step {step} of workflow {cls.name!r}; it must return a {state}, {what} "
        f"(`state.model_copy(update=...)` or `{state}(...)`){where}\n{_go_on(run_id, step)}",
        method=f"{cls.__name__}.{method}",
        workflow=cls.name,
        run_id=run_id,
        step=step,
        attempt=attempt,
    )
    return err


def unknown_microstep(ms: Any, *, workflow: Any, step: int, known: Sequence[str]) -> MakerError:
    """``next`` asked a microstep the workflow does not declare."""
    from maker.errors import WorkflowDefinitionError

    cls = workflow if isinstance(workflow, type) or workflow is None else type(workflow)
    name = "the workflow" if cls is None else f"{cls.__name__}.next"
    owner = "the workflow's" if cls is None else f"{cls.__name__}'s"
    return WorkflowDefinitionError(
        f"{name} asked microstep {ms.name!r} at step {step}, but it is not in {owner} microsteps "
        f"({', '.join(known) or 'none'}); declare it: microsteps = ({', '.join([*known, ms.name])})"
    )


def _go_on(run_id: str, step: int) -> str:
    return f"Committed steps are kept; fix the code, then `maker resume {run_id}` goes on from step {step}."


def _user_frames(exc: BaseException) -> str:
    """The user's frames of ``exc``'s traceback, as Python prints them. The engine's leading frames are cut from
    the exception's own traceback too, so printing it shows the user's code first."""
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_ENGINE):
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [
        f
        for f in frames
        if not os.path.abspath(f.filename).startswith(_ENGINE) and not os.path.abspath(f.filename).startswith(_LIBS)
    ]
    shown = mine[-_FRAMES:] or frames[:1]
    return "".join(traceback.format_list(shown)).rstrip("\n")


# -- a step no vote decided ---------------------------------------------------------------------------
def undecided_error(
    *,
    step: int,
    call: Any,
    decision: Any,
    votes: str,
    agents: Sequence[str],
    policy: Any,
    max_tokens: int,
    run_id: str,
    workflow: Any,
    workflow_ref: str | None = None,
    attempt: Attempt | None = None,
    early: int,
    kept: bool,
    examples: dict[str, str],
) -> StepUndecidedError:
    """The error of a step whose vote no agent decided: its red flags by reason and the likeliest fix.

    ``early``: the samples after which the last agent gave up because nearly all were red-flagged (0: it spent every
    round); ``kept``: the step's samples are recorded (detail level ``samples``).
    """
    ms = call.microstep
    d = decision
    n, red = d.samples, d.red_flags
    flags = dict(sorted((d.flags or {}).items(), key=lambda kv: -kv[1]))
    head = f"step {step}: no answer won the vote"
    if early:
        head += (
            f": nearly every sample was red-flagged, so the last agent stopped after {early} samples "
            f"instead of spending up to {policy.max_rounds} rounds"
        )
    else:
        head += f" within {policy.max_rounds} rounds"
    head += f" (microstep {ms.name!r}; agents tried: {', '.join(agents)})."
    counts = f"{n} samples, {red} red-flagged" + (
        ": " + ", ".join(f"{k} {v}" for k, v in flags.items()) if flags else ""
    )
    ahead = policy.rule == "ahead_by_k"
    counts += f"; tally {votes}, first-to-ahead-by-{policy.k}" if ahead else f"; tally {votes}"
    calibrate = _calibrate(workflow_ref, agents)
    if n and (n - red) * 20 <= n:
        reason = next(iter(flags))
        every = "Every" if red == n else "Nearly every"
        said = f" as {reason}" if flags[reason] == red else f", most as {reason}"
        fix = (
            f"{every} sample was red-flagged{said}: {_fix(reason, ms, max_tokens, examples.get(reason))}; {calibrate}."
        )
    else:
        goal = f"got {policy.k} ahead" if ahead else f"reached confidence {policy.confidence}"
        fix = (
            f"The votes never {goal}: the model is not reliable enough on this step. Give a larger `max_rounds`, "
            f"or another agent to escalate to (a stronger model, in `agents`); {calibrate}."
        )
    trace = f"`maker trace show {run_id} --step {step}` shows this attempt"
    trace += ", its samples included" if kept else " (run with `detail` = samples to keep its samples too)"
    return StepUndecidedError(
        f"{head}\n  {counts}.\n  {fix}\n  Committed steps are saved; {trace}. After the fix, resume with "
        f"`maker resume {run_id}`.",
        run_id=run_id,
        step=step,
        agent=agents[-1] if agents else None,
        flags=flags,
        votes=votes,
        samples=n,
        attempt=attempt,
    )


def _fix(reason: str, ms: Any, max_tokens: int, example: str | None) -> str:
    eg = f" (e.g. {example[:160]!r})" if example else ""
    if reason == "format":
        if ms.reads_fields:
            fields = ", ".join(f"`{f}`" for f in ms.fields)
            return f"check that the prompt asks for the fields {fields}, one `name = value` line each{eg}"
        return f"check that the prompt asks for the form microstep {ms.name!r}'s parse function reads{eg}"
    if reason == "schema":
        return (
            f"answers were read but did not fit {ms.schema.__name__}{eg}: check that the prompt gives each "
            f"field's type and range"
        )
    if reason == "too_long":
        return f"responses ran past {max_tokens} tokens: ask for a shorter answer in the prompt, or raise `max_tokens`"
    return (
        f"microstep {ms.name!r}'s rule {reason!r} rejected them{eg}: check the rule, and that the prompt asks "
        f"for what it requires"
    )


def _calibrate(workflow_ref: str | None, agents: Sequence[str]) -> str:
    ref = workflow_ref or "WORKFLOW"
    agent = agents[0] if agents else "SPEC"
    return f"measure the model on this workflow with `maker calibrate {ref} --agent {agent}`"
