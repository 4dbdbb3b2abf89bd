"""Backtracking: a run that finds itself in a wrong state goes back to the last state that passed, as a new branch.

A workflow may check a state (:meth:`maker.dsl.Workflow.check`): an invariant, or a verification of a result it
composed. The chain checks the state after every transition. A state that passes is one the run may come back to;
when a check fails, or a step cannot be decided, and the run has backtracks left (``--backtracks N``), the run goes
back to the last state that passed, the workflow's :meth:`~maker.dsl.Workflow.retry` says what the new branch starts
from, and the steps after it are decided again with the new branch's seeds. The steps abandoned are kept in the store
(``branch_steps``), marked with the branch that abandoned them; the branch itself (from which step, to which, why)
in ``branches``.

Without backtracks left a failed check is counted and the run goes on (it did before checks existed); an undecided
step stops the run as it always did.

The last state that passed is the chain's own from the last transition it checked; the ledger records its step at
each commit (``stats.backtrack.good``), and a resumed run rebuilds it from the snapshots. Everything a branch does
is a function of the run seed, the branch number and the recorded reasons, so the same seed gives the same branches,
and a run killed anywhere resumes to the same trace.
"""

from __future__ import annotations

from typing import Any

from maker.dsl import Workflow

__all__ = ["Backtracker", "CHECK_FAILED", "failure_of"]

CHECK_FAILED = "check failed"
"""The reason recorded when a workflow's check returned a plain False."""


def failure_of(verdict: Any) -> str | None:
    """What a workflow's ``check`` returned, as the reason the state is wrong (None: it is not)."""
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return CHECK_FAILED
    if isinstance(verdict, str) and verdict:
        return verdict
    return f"check returned {verdict!r}, which is neither None, True, False nor a reason"


class Backtracker:
    """Where a run may go back to, and how many times it still may (one per run, kept by the scheduler)."""

    def __init__(self, wf: Workflow[Any, Any], *, limit: int) -> None:
        self.limit = limit
        """Backtracks the run may make, over all its segments (``--backtracks``)."""
        self.checks = type(wf).has_check()
        """Whether the workflow checks states at all; without, every state is one the run may go back to."""
        self.branches = 0
        """Branches made so far (the branch being decided is this one)."""
        self.failed_checks = 0
        """Checks that failed with no backtrack left (the run went on)."""
        self.good_step: int | None = None
        self.good_state: Any = None
        """The last state that passed a check, and its step (None until the chain starts)."""

    @property
    def can_go_back(self) -> bool:
        return self.branches < self.limit

    def begin(self, step: int, state: Any) -> None:
        """The chain starts at ``step`` with ``state``: the state to go back to, unless one was restored."""
        if self.good_step is None:
            self.good_step, self.good_state = step, state

    def restore(self, *, branches: int, failed_checks: int, good_step: int | None, good_state: Any) -> None:
        """Where a run's record left it (resume)."""
        self.branches, self.failed_checks = branches, failed_checks
        self.good_step, self.good_state = good_step, good_state

    def passed(self, step: int, state: Any, verdict: Any) -> str | None:
        """Read ``check``'s ``verdict`` on ``state`` (after ``step`` steps): None when it did not fail (a pass moves
        the state to go back to here), else the reason."""
        if verdict is True or (verdict is None and not self.checks):
            self.good_step, self.good_state = step, state
        return failure_of(verdict)

    def stats(self) -> dict[str, Any]:
        """What the ledger records of it at each commit."""
        return {
            "limit": self.limit,
            "branches": self.branches,
            "failed_checks": self.failed_checks,
            "good": self.good_step,
        }
