"""Following a run's branches where its recorded answers are fed back (resume, replay, fork).

A run that backtracked (``--backtracks``) went back to an earlier step and there called the workflow's ``retry`` with
the reason it recorded; the steps it had decided since were abandoned (kept as the branch's) and the live chain
goes on from the retried state. Re-applying the live chain therefore calls ``retry`` again at each branch's step,
with the recorded reason, and replay first re-applies the abandoned steps too, checking that they lead where the
run found them wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maker.dsl import Workflow
from maker.engine import Backtracker, Row, failure_of, reapply
from maker.errors import NondeterminismError, StoreCorruptError
from maker.store import Branch, RunRecord, Store

__all__ = ["turns_of", "restore_backtracker", "replay_branch"]


def _retried(wf: Workflow[Any, Any], state: Any, b: Branch, run_id: str) -> Any:
    """``state`` as branch ``b`` started from it: the workflow's ``retry`` with the recorded reason."""
    try:
        state = wf.retry(state, b.reason)
    except Exception as exc:
        raise StoreCorruptError(
            f"run {run_id}: the workflow's retry() failed on branch {b.branch}'s recorded reason "
            f"({type(exc).__name__}: {exc})"[:500]
        ) from exc
    if not isinstance(state, type(wf).State):
        raise StoreCorruptError(
            f"run {run_id}: the workflow's retry() returned {type(state).__name__} for branch {b.branch}, not its State"
        )
    return state


def turns_of(
    wf: Workflow[Any, Any],
    st: Store,
    record: RunRecord,
    lo: int,
    hi: int,
    visit: Callable[[Branch, Any], None] | None = None,
) -> dict[int, Callable[[Any], Any]]:
    """What re-applying ``record``'s steps does at its branches' steps in ``[lo, hi]``: the retries there, each
    branch seen by ``visit(branch, state before its retry)`` first (replay checks its abandoned steps)."""
    by_step: dict[int, list[Branch]] = {}
    for b in st.branches(record.id):
        if lo <= b.from_step <= hi:
            by_step.setdefault(b.from_step, []).append(b)

    def turn(branches: list[Branch]) -> Callable[[Any], Any]:
        def go(state: Any) -> Any:
            for b in branches:
                if visit is not None:
                    visit(b, state)
                state = _retried(wf, state, b, record.run_id)
            return state

        return go

    return {step: turn(bs) for step, bs in by_step.items()}


def restore_backtracker(
    bt: Backtracker,
    st: Store,
    record: RunRecord,
    wf: Workflow[Any, Any],
    head: Any,
    state_at: Callable[[int], Any],
) -> int:
    """Where a resumed run may go back to: its branches so far, the checks it let through, and the last state that
    passed (``head`` when that is the last committed one, else rebuilt by ``state_at(step)``). Returns the branch
    the run goes on deciding."""
    stats = (record.stats or {}).get("backtrack") or {}
    branches = len(st.branches(record.id))
    good = stats.get("good")
    if good is None or good >= record.steps:
        good, state = record.steps, head
    else:
        state = state_at(int(good))
    bt.restore(
        branches=branches, failed_checks=int(stats.get("failed_checks", 0)), good_step=int(good), good_state=state
    )
    return branches


def replay_branch(
    st: Store,
    record: RunRecord,
    wf: Workflow[Any, Any],
    branch: Branch,
    state: Any,
    check: Callable[[Row, Any], None],
) -> int:
    """Re-apply the steps ``branch`` abandoned from ``state`` (the state it went back to, before its retry), each
    input checked by ``check``, and confirm they lead to where the run left them: the step it had reached and,
    for a failed check, the same verdict. Returns the steps re-applied."""
    rows = [Row(record, r.step, r.digest, r.answer) for r in st.branch_steps(record.id, branch.branch)]
    end_state, end = reapply(wf, state, rows, branch.from_step, check=check)
    if end != branch.to_step:
        raise StoreCorruptError(
            f"run {record.run_id}: branch {branch.branch} left steps {branch.from_step}..{branch.to_step - 1}, "
            f"but the store keeps {len(rows)} of them"
        )
    if branch.kind == "check":
        reason = failure_of(wf.check(end_state))
        if reason != branch.reason:
            raise NondeterminismError(
                f"run {record.run_id}: branch {branch.branch} went back from step {branch.to_step} because the "
                f"check said {branch.reason!r}; replayed, it says {reason!r}. The workflow's check() is not a pure "
                f"function of the state, or its code changed.",
                run_id=record.run_id,
                step=branch.to_step,
                expected=branch.reason[:200],
                actual=repr(reason)[:200],
                detail="the check of the abandoned branch's last state",
            )
    return len(rows)
