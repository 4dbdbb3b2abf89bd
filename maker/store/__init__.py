"""The run's durable record: a SQLite file of runs, committed steps, samples, snapshots and failures.

The store owns its SQL: every reader asks it a named question (:meth:`Store.steps`, :meth:`Store.answers`, ...),
and the schema upgrades itself from older versions on open. The layout is described in ``docs/trace-format.md``.
"""

from maker.store._store import (
    FAILURE_COLUMNS,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    Answer,
    Branch,
    Durability,
    PlainStepRow,
    RunRecord,
    Snapshot,
    StepRow,
    StepTally,
    Store,
    default_store_path,
)
from maker.store._views import EVAL_EVENT, BinUsage, BranchTally, RunLine, StepBin

__all__ = [
    "Store",
    "RunRecord",
    "Branch",
    "StepRow",
    "PlainStepRow",
    "StepTally",
    "Answer",
    "Snapshot",
    "Durability",
    "STEP_COLUMNS",
    "FAILURE_COLUMNS",
    "SCHEMA_VERSION",
    "default_store_path",
    "StepBin",
    "BinUsage",
    "EVAL_EVENT",
    "RunLine",
    "BranchTally",
]
