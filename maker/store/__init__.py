"""The run's durable record: a SQLite file of runs, committed steps, samples, snapshots and failures.

The store owns its SQL: every reader asks it a named question (:meth:`Store.steps`, :meth:`Store.digests`, ...),
and the schema upgrades itself from older versions on open. The layout is described in ``docs/trace-format.md``.
"""

from maker.store._store import (
    FAILURE_COLUMNS,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    PlainStepRow,
    RunRecord,
    StepRow,
    Store,
    default_store_path,
)

__all__ = [
    "Store",
    "RunRecord",
    "StepRow",
    "PlainStepRow",
    "STEP_COLUMNS",
    "FAILURE_COLUMNS",
    "SCHEMA_VERSION",
    "default_store_path",
]
