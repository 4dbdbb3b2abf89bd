"""A run's branches (``--backtracks``): each time it went back to an earlier state, and the steps it abandoned.

The branches and their abandoned steps are read through the store's named questions (:meth:`Store.branches`,
:meth:`Store.branch_tallies`, :meth:`Store.branch_steps`); the abandoned steps become the same records as live
steps (:func:`maker.trace.step_records`), marked with the branch that abandoned them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from maker.errors import UserError
from maker.store import RunRecord, Store
from maker.trace._records import step_records
from maker.trace._stats_model import BranchRow, BranchStats

__all__ = ["branch_rows", "branch_stats", "branch_step_records", "first_line"]


def first_line(reason: str) -> str:
    """A branch's reason as one line: its first (a check may add lines for the workflow's retry)."""
    return reason.strip().split("\n", 1)[0].strip()


def branch_rows(st: Store, record: RunRecord) -> list[BranchRow]:
    """Every branch of the run, in order, with what its abandoned steps spent."""
    tallies = {t.branch: t for t in st.branch_tallies(record.id)}
    rows = []
    for b in st.branches(record.id):
        t = tallies.get(b.branch)
        rows.append(
            BranchRow(
                branch=b.branch,
                from_step=b.from_step,
                to_step=b.to_step,
                kind=b.kind,
                reason=b.reason,
                steps=0 if t is None else t.steps,
                wrong=0 if t is None else t.wrong,
                calls=0 if t is None else t.calls,
                tokens=0 if t is None else t.tokens,
            )
        )
    return rows


def branch_stats(st: Store, record: RunRecord) -> BranchStats | None:
    """The run's backtracking, or None for a run that neither checks states nor may backtrack (no
    ``stats.backtrack``) and made no branch."""
    recorded = (record.stats or {}).get("backtrack")
    rows = branch_rows(st, record)
    if not recorded and not rows:
        return None
    recorded = recorded or {}
    return BranchStats(
        limit=recorded.get("limit"),
        branches=len(rows),
        by_kind=dict(Counter(r.kind for r in rows).most_common()),
        steps_abandoned=sum(r.steps for r in rows),
        calls=sum(r.calls for r in rows),
        tokens=sum(r.tokens for r in rows),
        wrong=sum(r.wrong for r in rows),
        failed_checks=int(recorded.get("failed_checks") or 0),
        by_branch=rows,
    )


def branch_step_records(
    st: Store, record: RunRecord, branch: int, *, samples: bool = False
) -> Iterator[dict[str, Any]]:
    """The steps branch ``branch`` abandoned, as :func:`maker.trace.step_records` gives live steps, each with
    ``abandoned_by`` (the branch). Raises :class:`UserError` when the run has no such branch."""
    known = [b.branch for b in st.branches(record.id)]
    if branch not in known:
        has = f"branches 1..{max(known)}" if known else "no branches"
        raise UserError(f"run {record.run_id} has {has}; there is no branch {branch}")
    recs = step_records(
        st,
        record,
        rows=st.branch_steps(record.id, branch),
        sample_rows=lambda step: st.branch_samples(record.id, branch, step),
        samples=samples,
    )
    return ({**rec, "abandoned_by": branch} for rec in recs)
