"""One exception tree for everything `maker` raises.

Three audiences:

* :class:`UserError` -- the developer used the API or CLI wrongly (bad workflow
  definition, bad agent spec, bad parameters). Fix the code or command.
* :class:`RunError` -- a run failed while working. Carries the run id, step
  index and agent, and says whether resuming may succeed (``retryable``).
  :class:`WorkflowCodeError` is the workflow's own code failing at a step.
* :class:`StoreError` -- the durable record cannot be trusted or does not match.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MakerError",
    "UserError",
    "WorkflowDefinitionError",
    "AgentSpecError",
    "RunError",
    "StepUndecidedError",
    "WorkflowCodeError",
    "StopRequested",
    "StoreError",
    "StoreCorruptError",
    "RunMismatchError",
    "RunNotFoundError",
    "NondeterminismError",
]


class MakerError(Exception):
    """Root of every error raised by maker."""


class UserError(MakerError):
    """The API or the CLI was used wrongly; the message says what to change."""


class WorkflowDefinitionError(UserError):
    """A workflow or microstep is defined wrongly (raised at definition time)."""


class AgentSpecError(UserError):
    """An agent spec string could not be understood."""


class RunError(MakerError):
    """A run stopped with a failure; committed steps are safe in the store."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        step: int | None = None,
        agent: str | None = None,
        retryable: bool | None = None,
        attempt: object | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step = step
        self.agent = agent
        if retryable is not None:
            self.retryable = retryable
        self.attempt = attempt
        """How far the failed transition got (its calls, and the decision and samples each reached), when the
        engine raised this at a step: the run keeps it in the store's failures (``maker trace show RUN --step N``).
        None for failures outside a transition."""


class StepUndecidedError(RunError):
    """No answer won the vote within the round limit and no agent was left to escalate to.

    The message names the red flags by reason and the likeliest fix; the step's attempt (its tally, red flags and,
    at detail level ``samples``, its samples) is kept in the store (``maker trace show RUN --step N``).
    """

    retryable = True

    def __init__(
        self, message: str, *, flags: dict[str, int] | None = None, votes: str = "", samples: int = 0, **where: Any
    ) -> None:
        super().__init__(message, **where)
        self.flags = dict(flags or {})
        """Red-flagged samples of the step by reason (``format``, ``schema``, ``too_long`` or a rule's name)."""
        self.votes = votes
        """The last agent's tally when it gave up, highest first: ``[3,3,1]`` (``[]``: no valid sample)."""
        self.samples = samples


class WorkflowCodeError(RunError):
    """The workflow's own code failed at a step: ``next``, ``apply``, ``oracle`` or a red-flag rule raised, or
    ``apply`` returned something that is not the workflow's ``State``.

    The message names the method, the workflow and the step and shows the user's frame; the original exception is
    the ``__cause__``. Committed steps are kept: fix the code, then resume.
    """

    def __init__(self, message: str, *, method: str, workflow: str, **where: Any) -> None:
        super().__init__(message, **where)
        self.method = method
        """What raised: ``Hanoi.apply``, ``red-flag rule 'ordered' of microstep 'pair'``."""
        self.workflow = workflow


class StopRequested(RunError):
    """Somebody asked the run to stop (``maker stop``, the UI's stop button): it stopped at its last commit, marked
    interrupted, and ``maker resume`` goes on from there."""

    retryable = True


class StoreError(MakerError):
    """The store cannot be used for what was asked."""


class StoreCorruptError(StoreError):
    """The store file is damaged or inconsistent; nothing was changed."""


class RunMismatchError(StoreError, UserError):
    """A resume was asked with a workflow, version or parameters that differ from the recorded run."""


class RunNotFoundError(StoreError, UserError):
    """No run with that id in the store."""


class NondeterminismError(MakerError):
    """Replaying recorded answers through the workflow code did not give the recorded inputs or states.

    The workflow's ``next`` or ``apply`` is not a pure function of its state (it reads a
    clock, a random source without a seed, a file, ...), or the code changed since the run.
    """

    def __init__(self, message: str, *, run_id: str, step: int, expected: str, actual: str, detail: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step = step
        self.expected = expected
        self.actual = actual
        self.detail = detail
