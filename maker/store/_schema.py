"""The store's schema: its tables as SQL, and the upgrades from each older version (columns added in place)."""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "FAILURE_COLUMNS"]

SCHEMA_VERSION = 4

# A step's columns after (run, step), and a sample's: the same in the live tables and in the tables of the steps a
# branch abandoned (which have ``branch`` after ``run``).
_STEP_COLUMNS_SQL = """\
    digest TEXT NOT NULL,
    answer TEXT NOT NULL,
    votes TEXT NOT NULL,
    rounds INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    red_flags TEXT,
    agent INTEGER NOT NULL,
    t_start REAL NOT NULL,
    dur REAL NOT NULL,
    correct INTEGER,
    spec TEXT,
    tokens INTEGER,
    input TEXT,
    microstep TEXT,
    tag TEXT,
    usage TEXT,
"""
_SAMPLE_COLUMNS_SQL = """\
    idx INTEGER NOT NULL,
    round INTEGER NOT NULL,
    agent INTEGER NOT NULL,
    temperature REAL NOT NULL,
    tokens INTEGER NOT NULL,
    text TEXT NOT NULL,
    flag TEXT,
    vote TEXT,
"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    params TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    expected_steps INTEGER,
    steps INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    red_flags INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    max_rounds INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    wall_s REAL NOT NULL DEFAULT 0,
    stats TEXT,
    solved INTEGER,
    result TEXT,
    pid INTEGER,
    host TEXT,
    parent_run_id TEXT,
    parent_step INTEGER,
    workflow_ref TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run INTEGER NOT NULL,
    step INTEGER NOT NULL,
{_STEP_COLUMNS_SQL}    PRIMARY KEY (run, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    run INTEGER NOT NULL,
    step INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (run, step)
);
CREATE TABLE IF NOT EXISTS samples (
    run INTEGER NOT NULL,
    step INTEGER NOT NULL,
{_SAMPLE_COLUMNS_SQL}    PRIMARY KEY (run, step, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run INTEGER NOT NULL,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
"""

# Each entry upgrades a store from the version before it; columns are only ever added.
_MIGRATIONS = {
    2: """
ALTER TABLE runs ADD COLUMN workflow_ref TEXT;
UPDATE runs SET workflow_ref = workflow;
ALTER TABLE steps ADD COLUMN tokens INTEGER;
ALTER TABLE steps ADD COLUMN input TEXT;
""",
    3: """
ALTER TABLE steps ADD COLUMN microstep TEXT;
ALTER TABLE steps ADD COLUMN tag TEXT;
""",
    4: """
ALTER TABLE steps ADD COLUMN usage TEXT;
""",
}

_UPGRADABLE = {1, *(_MIGRATIONS)}

# Added beside the versioned schema: made (if missing) whenever a store is opened for writing, so older stores get
# them without an upgrade and older makers still read the stores that have them. ``stop_requests``: a run asked to
# stop (``maker stop``, the UI) stops at its next commit; resuming it takes the request back. ``branches``: each time
# a run went back to an earlier state (``--backtracks``), from which step, where it had got to, of what kind (``check``
# or ``undecided``) and why; the steps it abandoned move to ``branch_steps`` (and their samples to ``branch_samples``)
# under the number of the branch that abandoned them.
_FAILURES = f"""
CREATE TABLE IF NOT EXISTS failures (
    run INTEGER NOT NULL,
    step INTEGER NOT NULL,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    error TEXT NOT NULL,
    microstep TEXT,
    tag TEXT,
    digest TEXT,
    input TEXT,
    answer TEXT,
    votes TEXT,
    rounds INTEGER,
    samples INTEGER,
    red_flags TEXT,
    agent INTEGER,
    tokens INTEGER,
    calls INTEGER,
    sample_detail TEXT
);
CREATE INDEX IF NOT EXISTS failures_step ON failures (run, step);
CREATE TABLE IF NOT EXISTS stop_requests (run INTEGER PRIMARY KEY, t REAL NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS branches (
    run INTEGER NOT NULL,
    branch INTEGER NOT NULL,
    from_step INTEGER NOT NULL,
    to_step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    t REAL NOT NULL,
    PRIMARY KEY (run, branch)
);
CREATE TABLE IF NOT EXISTS branch_steps (
    run INTEGER NOT NULL,
    branch INTEGER NOT NULL,
    step INTEGER NOT NULL,
{_STEP_COLUMNS_SQL}    PRIMARY KEY (run, branch, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS branch_samples (
    run INTEGER NOT NULL,
    branch INTEGER NOT NULL,
    step INTEGER NOT NULL,
{_SAMPLE_COLUMNS_SQL}    PRIMARY KEY (run, branch, step, idx)
) WITHOUT ROWID;
"""
FAILURE_COLUMNS = (
    "step",
    "t",
    "kind",
    "error",
    "microstep",
    "tag",
    "digest",
    "input",
    "answer",
    "votes",
    "rounds",
    "samples",
    "red_flags",
    "agent",
    "tokens",
    "calls",
    "sample_detail",
)
