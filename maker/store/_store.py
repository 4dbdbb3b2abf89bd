"""The durable record of runs: one SQLite file, plain rows, no pickle.

Tables (schema version 3; see ``docs/trace-format.md``):

* ``runs``      -- one row per run: workflow identity, configuration, status, counters.
* ``steps``     -- one row per committed step: input digest, winning answer (JSON),
                   vote tally, rounds, samples, red flags by reason, deciding agent, timings,
                   whether the answer matched the workflow's ground truth, speculation
                   record, tokens, the microstep's name and the call's tag, and the prompt
                   itself at detail level ``samples``.
* ``snapshots`` -- the workflow state (JSON) after a commit, so resume never replays the chain; a run's
                   ``snapshots`` option bounds how many are kept (the run's first, the latest, one per
                   stretch of N steps).
* ``samples``   -- every sample with its text and red-flag reason (only at detail level ``samples``).
* ``events``    -- resumes, overrides and failures.
* ``failures``  -- one row per failed attempt at a step (a vote no agent decided, workflow code that raised):
                   what it got to, apart from the committed steps, so resume, replay and fork never see it.
                   Made when a store is opened for writing; a store without it has no failures recorded.

Steps, their samples and the snapshot of a commit are written in one transaction, so a
crash loses only the uncommitted tail, never half of a commit.

A store of an older schema version is upgraded in place, in one transaction, the first
time it is opened (each version so far adds columns only); a newer one is refused untouched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from maker.errors import RunNotFoundError, StoreCorruptError, StoreError
from maker.store._rows import (
    STEP_COLUMNS,
    Answer,
    Branch,
    Durability,
    PlainStepRow,
    RunRecord,
    Snapshot,
    StepRow,
    StepTally,
)
from maker.store._schema import _FAILURES, _MIGRATIONS, _SCHEMA, _UPGRADABLE, FAILURE_COLUMNS, SCHEMA_VERSION
from maker.store._views import BranchTally, LiveViews

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
    "default_store_path",
    "SCHEMA_VERSION",
]


def default_store_path() -> Path:
    """``$MAKER_STORE``, else ``$XDG_DATA_HOME/maker/runs.sqlite`` (``~/.local/share/...``)."""
    env = os.environ.get("MAKER_STORE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "maker" / "runs.sqlite"


_EXTRA_TABLES = ("failures", "stop_requests", "branches", "branch_steps", "branch_samples")
"""The tables made beside the versioned schema whenever a store is opened for writing (see ``_schema._FAILURES``)."""
_EXTRA = ",".join(f"'{t}'" for t in _EXTRA_TABLES)
_PLAIN_VALUES = ",".join("NULL" if c in ("red_flags", "spec", "input", "tag") else "?" for c in STEP_COLUMNS)
assert _PLAIN_VALUES.count("?") == len(PlainStepRow._fields)
assert [c for c in STEP_COLUMNS if c not in ("red_flags", "spec", "input", "tag")] == list(PlainStepRow._fields)


def _step_row(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> StepRow:
    return tuple.__new__(StepRow, row)


def _answer(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Answer:
    return tuple.__new__(Answer, row)


def _step_tally(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> StepTally:
    return tuple.__new__(StepTally, row)


def _range(q: str, rid: int, start: int, stop: int | None) -> tuple[str, list[Any]]:
    """``q`` (which ends in ``WHERE run=?``) narrowed to the steps in ``[start, stop)``, and its arguments."""
    args: list[Any] = [rid, start]
    q += " AND step>=?"
    if stop is not None:
        q += " AND step<?"
        args.append(stop)
    return q, args


def _damaged(path: Path, exc: BaseException) -> StoreCorruptError:
    return StoreCorruptError(
        f"store {path} is damaged ({exc}); nothing was changed. Restore it from a copy, "
        f"or start a new run in another store (`store`)."
    )


class Store(LiveViews):
    """A SQLite store. Use :meth:`open` (existing file) or :meth:`create` (new or existing)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Store:
        """Open the store at ``path`` for writing, creating it (and its folder) if needed."""
        p = Path(path)
        if p.exists():
            return cls.open(p, write=True)
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(p)
        # One transaction: a store either has its whole schema and version or nothing.
        conn.executescript(
            f"BEGIN;{_SCHEMA}{_FAILURES}INSERT OR REPLACE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
            f"COMMIT;"
        )
        return cls(p, conn)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, write: bool = False) -> Store:
        """Open an existing store; verify it first and refuse a damaged or foreign file untouched."""
        p = Path(path)
        if not p.is_file():
            raise StoreError(f"no store at {p}; give the path of an existing store (`store`, or $MAKER_STORE)")
        version = cls.verify(p)
        if version < SCHEMA_VERSION:
            cls._migrate(p, version)
        conn = cls._connect(p) if write else cls._connect_ro(p)
        if write and conn.execute(f"SELECT count(*) FROM sqlite_master WHERE name IN ({_EXTRA})").fetchone()[0] < len(
            _EXTRA_TABLES
        ):
            try:
                conn.executescript(f"BEGIN IMMEDIATE;{_FAILURES}COMMIT;")
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(
                    f"store {p}: cannot add the failures, stop-request and branch tables ({exc}); open it with write access"
                ) from None
        return cls(p, conn)

    def reader(self) -> Store:
        """Another read-only connection to this store, opened without checking it again (a reader that checked it
        once, as :meth:`open` does, and reads it from several threads: one connection each)."""
        return Store(self.path, self._connect_ro(self.path))

    @classmethod
    def _migrate(cls, p: Path, version: int) -> None:
        """Upgrade an older store in place: every step of the way in one transaction, or nothing."""
        if not os.access(p, os.W_OK) or not os.access(p.parent, os.W_OK):
            raise StoreError(
                f"store {p} has schema version {version} and needs upgrading to {SCHEMA_VERSION}, "
                f"which writes to it; open it once with write access (or work on a copy)"
            )
        conn = cls._connect(p)
        try:
            script = "".join(_MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
            conn.executescript(
                f"BEGIN IMMEDIATE;{script}UPDATE meta SET value='{SCHEMA_VERSION}' WHERE key='schema_version';COMMIT;"
            )
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(
                f"store {p}: upgrading schema {version} -> {SCHEMA_VERSION} failed ({exc}); nothing was changed"
            ) from None
        finally:
            conn.close()
        import structlog

        structlog.get_logger("maker").info(
            "store upgraded", store=str(p), from_version=version, to_version=SCHEMA_VERSION
        )

    @staticmethod
    def _connect(p: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, so a committed step survives power loss too.
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @staticmethod
    def _connect_ro(p: Path) -> sqlite3.Connection:
        return sqlite3.connect(
            f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )

    @classmethod
    def verify(cls, p: Path) -> int:
        """Integrity and schema check on a read-only connection; returns the store's schema version."""
        try:
            conn = cls._connect_ro(p)
        except sqlite3.Error as exc:
            raise _damaged(p, exc) from None
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                raise _damaged(p, RuntimeError("; ".join(r[0] for r in rows[:3])))
            try:
                found = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            except sqlite3.OperationalError:
                raise StoreCorruptError(f"{p} is a SQLite file but not a maker store (no meta table)") from None
            version = int(found[0]) if found is not None and str(found[0]).isdigit() else None
            if version is None or version > SCHEMA_VERSION or (version < SCHEMA_VERSION and version not in _UPGRADABLE):
                raise StoreError(
                    f"store {p} has schema version {None if found is None else found[0]}; this maker reads "
                    f"versions {min(_UPGRADABLE)}-{SCHEMA_VERSION}. Use a maker release that matches, or start a new store."
                )
            return version
        except sqlite3.DatabaseError as exc:
            raise _damaged(p, exc) from None
        finally:
            conn.close()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        *,
        workflow: str,
        workflow_version: int,
        params: dict[str, Any],
        config: dict[str, Any],
        expected_steps: int | None,
        state_json: str,
        workflow_ref: str | None = None,
        parent_run_id: str | None = None,
        parent_step: int | None = None,
    ) -> int:
        """A new run whose state before its first step is ``state_json``.

        A fork names its parent and the step it starts from; its own steps are numbered
        from there on, and the steps before it stay the parent's.
        """
        now = time.time()
        first = parent_step or 0
        with self._tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                raise StoreError(
                    f"run {run_id!r} already exists in {self.path}; resume it with `maker resume {run_id}`"
                )
            cur = c.execute(
                "INSERT INTO runs (run_id, workflow, workflow_version, params, config, status, created, updated,"
                " expected_steps, pid, host, parent_run_id, parent_step, workflow_ref, steps)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    workflow,
                    workflow_version,
                    json.dumps(params, sort_keys=True),
                    json.dumps(config),
                    "running",
                    now,
                    now,
                    expected_steps,
                    os.getpid(),
                    os.uname().nodename,
                    parent_run_id,
                    parent_step,
                    workflow_ref or workflow,
                    first,
                ),
            )
            rid = int(cur.lastrowid or 0)
            c.execute("INSERT INTO snapshots VALUES (?,?,?)", (rid, first, state_json))
        return rid

    def run(self, run_id: str) -> RunRecord:
        cur = self._conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,))
        row = cur.fetchone()
        if row is None:
            known = [r[0] for r in self._conn.execute("SELECT run_id FROM runs ORDER BY id DESC LIMIT 5")]
            hint = f"; recent runs: {', '.join(known)}" if known else "; the store has no runs"
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}{hint}")
        return self._record([d[0] for d in cur.description], row)

    def runs(self) -> list[RunRecord]:
        cur = self._conn.execute("SELECT * FROM runs ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [self._record(cols, r) for r in cur]

    @staticmethod
    def _record(cols: Sequence[str], row: Sequence[Any]) -> RunRecord:
        d = dict(zip(cols, row, strict=True))
        d["params"] = json.loads(d["params"])
        d["config"] = json.loads(d["config"])
        d["result"] = json.loads(d["result"]) if d["result"] else None
        d["stats"] = json.loads(d["stats"]) if d["stats"] else None
        d["solved"] = None if d["solved"] is None else bool(d["solved"])
        return RunRecord(**d)

    def set_status(self, rid: int, status: str, *, error: str | None = None, **fields: Any) -> None:
        sets = ["status=?", "error=?", "updated=?"]
        vals: list[Any] = [status, error, time.time()]
        for k, v in fields.items():
            sets.append(f"{k}=?")
            vals.append(json.dumps(v) if k in ("result", "config") else v)
        with self._tx() as c:
            c.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id=?", (*vals, rid))

    def event(self, rid: int, kind: str, data: dict[str, Any]) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO events VALUES (?,?,?,?)", (rid, time.time(), kind, json.dumps(data)))

    # -- commits ---------------------------------------------------------------------
    def commit(
        self,
        rid: int,
        steps: Sequence[StepRow | PlainStepRow],
        samples: Sequence[tuple[Any, ...]],
        snapshot: tuple[int, str],
        counters: dict[str, Any],
        snapshot_every: int | None = None,
    ) -> bool:
        """Write a group of steps, their samples, the state after them and the run counters atomically. Returns
        whether the run has been asked to stop (:meth:`request_stop`): it then stops here, at this commit.

        ``snapshot_every=N`` bounds the snapshots kept (None keeps them all): see :meth:`_thin_snapshots`.
        """
        with self._tx() as c:
            self._insert_steps(c, rid, steps, samples)
            c.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?)", (rid, snapshot[0], snapshot[1]))
            if snapshot_every is not None:
                self._thin_snapshots(c, rid, snapshot[0], snapshot_every)
            sets = ", ".join(f"{k}=?" for k in counters)
            c.execute(f"UPDATE runs SET {sets}, updated=? WHERE id=?", (*counters.values(), time.time(), rid))
            return c.execute("SELECT source FROM stop_requests WHERE run=?", (rid,)).fetchone() is not None

    @staticmethod
    def _insert_steps(
        c: sqlite3.Connection,
        rid: int,
        steps: Sequence[StepRow | PlainStepRow],
        samples: Sequence[tuple[Any, ...]],
        branch: int | None = None,
    ) -> None:
        """Insert step rows and their samples: the live chain's, or (``branch``) the steps that branch abandoned."""
        table, key = ("", f"{rid}") if branch is None else ("branch_", f"{rid},{branch}")
        plain = [r for r in steps if type(r) is PlainStepRow]
        full = [r for r in steps if type(r) is not PlainStepRow] if len(plain) < len(steps) else ()
        if full:
            c.executemany(f"INSERT INTO {table}steps VALUES ({key},{','.join('?' * len(STEP_COLUMNS))})", full)
        if plain:
            c.executemany(f"INSERT INTO {table}steps VALUES ({key},{_PLAIN_VALUES})", plain)
        if samples:
            c.executemany(f"INSERT INTO {table}samples VALUES ({key},?,?,?,?,?,?,?,?,?)", samples)

    @staticmethod
    def _thin_snapshots(c: sqlite3.Connection, rid: int, step: int, every: int) -> None:
        """Drop the snapshot before the one just taken at ``step`` unless it is the first of its stretch of
        ``every`` steps. What stays is the run's first snapshot, the first of each stretch and the latest, so
        the nearest snapshot before any step is at most ``every`` steps and one commit's back."""
        prev = c.execute("SELECT max(step) FROM snapshots WHERE run=? AND step<?", (rid, step)).fetchone()[0]
        if prev is None:
            return
        if (
            c.execute(
                "SELECT 1 FROM snapshots WHERE run=? AND step>=? AND step<?", (rid, prev // every * every, prev)
            ).fetchone()
            is not None
        ):
            c.execute("DELETE FROM snapshots WHERE run=? AND step=?", (rid, prev))

    def snapshot_sizes(self) -> dict[int, tuple[int, int]]:
        """Run row id -> (snapshots kept, their bytes)."""
        return {
            rid: (int(n), int(size or 0))
            for rid, n, size in self._conn.execute(
                "SELECT run, count(*), sum(length(CAST(state AS BLOB))) FROM snapshots GROUP BY run"
            )
        }

    def disk_bytes(self) -> int:
        """The store's size on disk: its file and the write-ahead log beside it."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def _tx(self) -> _Tx:
        return _Tx(self._conn, self.path)

    # -- reading steps ---------------------------------------------------------------
    def head(self, rid: int, first: int = 0) -> tuple[int, int]:
        """(``first`` + number of committed steps, highest step index + 1 or ``first``); equal when nothing is missing."""
        n, top = self._conn.execute("SELECT count(*), max(step)+1 FROM steps WHERE run=?", (rid,)).fetchone()
        return first + int(n), first if top is None else int(top)

    def latest_snapshot(self, rid: int, at_most: int | None = None) -> tuple[int, str]:
        q = "SELECT step, state FROM snapshots WHERE run=?"
        args: tuple[Any, ...] = (rid,)
        if at_most is not None:
            q += " AND step<=?"
            args = (rid, at_most)
        row = self._conn.execute(q + " ORDER BY step DESC LIMIT 1", args).fetchone()
        if row is None:
            raise StoreCorruptError(f"store {self.path}: run has no state snapshot; it cannot be resumed")
        return int(row[0]), row[1]

    def steps(self, rid: int, start: int = 0, stop: int | None = None) -> Iterator[StepRow]:
        """The committed steps in ``[start, stop)``, in step order, streamed."""
        q, args = _range(f"SELECT {', '.join(STEP_COLUMNS)} FROM steps WHERE run=?", rid, start, stop)
        cur = self._conn.execute(q + " ORDER BY step", args)
        cur.row_factory = _step_row
        # Not `yield from`: a reader that stops early (an error while re-applying) may drop this generator after
        # the store is closed, and delegation would then close the cursor on a closed connection, which raises.
        for row in cur:  # noqa: UP028
            yield row

    def answers(self, rid: int, start: int = 0, stop: int | None = None) -> Iterator[Answer]:
        """The decided answers of the committed steps in ``[start, stop)`` with their prompts' digests, in step
        order, streamed: what replay and fork feed back through the workflow, reading nothing else."""
        q, args = _range("SELECT step, digest, answer FROM steps WHERE run=?", rid, start, stop)
        cur = self._conn.execute(q + " ORDER BY step", args)
        cur.row_factory = _answer
        for row in cur:  # noqa: UP028 (see steps)
            yield row

    def step_tallies(self, rid: int) -> Iterator[StepTally]:
        """How each committed step of the run was decided and what it cost, in step order, streamed: the run's
        statistics in one pass, without reading the prompts and answers."""
        cur = self._conn.execute(f"SELECT {', '.join(StepTally._fields)} FROM steps WHERE run=? ORDER BY step", (rid,))
        cur.row_factory = _step_tally
        for row in cur:  # noqa: UP028 (see steps)
            yield row

    def tagged_steps(self, rid: int) -> Iterator[StepRow]:
        """The committed steps whose call carried a tag (a tree workflow's node path), in step order, streamed."""
        cur = self._conn.execute(
            f"SELECT {', '.join(STEP_COLUMNS)} FROM steps WHERE run=? AND tag IS NOT NULL ORDER BY step", (rid,)
        )
        cur.row_factory = _step_row
        for row in cur:  # noqa: UP028 (see steps)
            yield row

    def step_input(self, rid: int, step: int) -> str | None:
        """The prompt a committed step was asked with; None when the run did not keep it (detail ``summary``) or
        has no such step."""
        row = self._conn.execute("SELECT input FROM steps WHERE run=? AND step=?", (rid, step)).fetchone()
        return None if row is None else cast("str | None", row[0])

    def snapshots(self, rid: int, start: int = 0, stop: int | None = None) -> Iterator[Snapshot]:
        """The run's kept states before steps in ``[start, stop)``, in step order, streamed."""
        q, args = _range("SELECT step, state FROM snapshots WHERE run=?", rid, start, stop)
        for step, state in self._conn.execute(q + " ORDER BY step", args):
            yield Snapshot(step, state)

    def durability(self) -> Durability:
        """How this store's connection writes: opened for writing, WAL and each commit on disk when it returns
        (see :meth:`_connect`); opened to read, SQLite's default level."""
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        return Durability(str(mode), int(sync))

    def samples(self, rid: int, step: int) -> list[tuple[Any, ...]]:
        return list(
            self._conn.execute(
                "SELECT idx, round, agent, temperature, tokens, text, flag, vote FROM samples WHERE run=? AND step=? ORDER BY idx",
                (rid, step),
            )
        )

    # -- stop requests ---------------------------------------------------------------
    def request_stop(self, rid: int, source: str) -> None:
        """Ask run ``rid`` to stop at its next commit (``source`` says who asked: ``maker stop``, ``maker ui``).
        The process running it reads the request when it commits; asking twice is asking once."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO stop_requests VALUES (?,?,?)", (rid, time.time(), source))

    def stop_request(self, rid: int) -> str | None:
        """Who asked run ``rid`` to stop, while the request stands (None: nobody, or a store without the table)."""
        try:
            row = self._conn.execute("SELECT source FROM stop_requests WHERE run=?", (rid,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise StoreError(f"store {self.path}: {exc}") from None
        return None if row is None else str(row[0])

    def clear_stop(self, rid: int) -> None:
        """Take back a stop request (a run that resumes goes on)."""
        with self._tx() as c:
            c.execute("DELETE FROM stop_requests WHERE run=?", (rid,))

    # -- branches ----------------------------------------------------------------------
    def backtrack(
        self,
        rid: int,
        branch: Branch,
        steps: Sequence[StepRow | PlainStepRow],
        samples: Sequence[tuple[Any, ...]],
        snapshot: str,
        counters: dict[str, Any],
        candidates: Sequence[str] = (),
    ) -> int:
        """Go back to ``branch.from_step`` in one transaction: the pending ``steps`` and ``samples`` of the branch
        being left, and its committed steps from ``from_step`` on, move to ``branch_steps`` / ``branch_samples``
        under ``branch.branch``; the snapshots after ``from_step`` go and ``snapshot`` becomes the state at it; the
        branch is recorded and the counters written. Returns how many of the steps moved were wrong (their answer
        differed from the ground truth, ``candidates`` microsteps not counted), which the run's errors no longer
        hold. A crash leaves either the run before it or after it."""
        b, start = branch.branch, branch.from_step
        cols = ", ".join(STEP_COLUMNS)
        with self._tx() as c:
            # the pending steps before the state gone back to stay on the chain; the rest are the branch's
            self._insert_steps(c, rid, [r for r in steps if r.step < start], [s for s in samples if s[0] < start])
            self._insert_steps(
                c, rid, [r for r in steps if r.step >= start], [s for s in samples if s[0] >= start], branch=b
            )
            c.execute(
                f"INSERT INTO branch_steps (run, branch, {cols}) SELECT run, ?, {cols} FROM steps "
                "WHERE run=? AND step>=?",
                (b, rid, start),
            )
            c.execute(
                "INSERT INTO branch_samples SELECT run, ?, step, idx, round, agent, temperature, tokens, text, flag, "
                "vote FROM samples WHERE run=? AND step>=?",
                (b, rid, start),
            )
            marks = ",".join("?" * len(candidates))
            wrong = c.execute(
                "SELECT count(*) FROM branch_steps WHERE run=? AND branch=? AND correct=0"
                + (f" AND coalesce(microstep, '') NOT IN ({marks})" if candidates else ""),
                (rid, b, *candidates),
            ).fetchone()[0]
            c.execute("DELETE FROM steps WHERE run=? AND step>=?", (rid, start))
            c.execute("DELETE FROM samples WHERE run=? AND step>=?", (rid, start))
            c.execute("DELETE FROM snapshots WHERE run=? AND step>?", (rid, start))
            c.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?)", (rid, start, snapshot))
            c.execute("INSERT INTO branches VALUES (?,?,?,?,?,?,?)", (rid, *branch))
            if "errors" in counters:
                counters = {**counters, "errors": counters["errors"] - wrong}
            sets = ", ".join(f"{k}=?" for k in counters)
            c.execute(f"UPDATE runs SET {sets}, updated=? WHERE id=?", (*counters.values(), time.time(), rid))
        return int(wrong)

    def branches(self, rid: int) -> list[Branch]:
        """The times run ``rid`` went back, in order (none in a store without the table)."""
        try:
            rows = self._conn.execute(
                f"SELECT {', '.join(Branch._fields)} FROM branches WHERE run=? ORDER BY branch", (rid,)
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StoreError(f"store {self.path}: {exc}") from None
        return [Branch(*r) for r in rows]

    def branch_steps(self, rid: int, branch: int) -> list[StepRow]:
        """The steps that branch ``branch`` abandoned, in step order."""
        cur = self._conn.execute(
            f"SELECT {', '.join(STEP_COLUMNS)} FROM branch_steps WHERE run=? AND branch=? ORDER BY step", (rid, branch)
        )
        cur.row_factory = _step_row
        return list(cur)

    def branch_tallies(self, rid: int) -> list[BranchTally]:
        """Each branch's abandoned steps summed in one pass (steps, calls, wrong ones, tokens), by branch; a branch
        that abandoned no steps is left out (none in a store without the table)."""
        try:
            rows = self._conn.execute(
                "SELECT branch, count(*), coalesce(sum(samples), 0), coalesce(sum(correct = 0), 0), "
                "coalesce(sum(tokens), 0) FROM branch_steps WHERE run=? GROUP BY branch ORDER BY branch",
                (rid,),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StoreError(f"store {self.path}: {exc}") from None
        return [BranchTally(*r) for r in rows]

    def branch_samples(self, rid: int, branch: int, step: int) -> list[tuple[Any, ...]]:
        """The samples of a step that branch ``branch`` abandoned (detail ``samples``), as :meth:`samples`."""
        return list(
            self._conn.execute(
                "SELECT idx, round, agent, temperature, tokens, text, flag, vote FROM branch_samples "
                "WHERE run=? AND branch=? AND step=? ORDER BY idx",
                (rid, branch, step),
            )
        )

    # -- failed attempts -------------------------------------------------------------
    def record_failures(self, rid: int, rows: Sequence[tuple[Any, ...]]) -> None:
        """Keep failed attempts (rows of :data:`FAILURE_COLUMNS`); the committed steps and counters are untouched."""
        with self._tx() as c:
            c.executemany(f"INSERT INTO failures VALUES ({rid},{','.join('?' * len(FAILURE_COLUMNS))})", rows)

    def failures(self, rid: int, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """The failed attempts at steps in ``[start, stop)``, oldest first (none in a store that has no table)."""
        q, args = _range(f"SELECT {', '.join(FAILURE_COLUMNS)} FROM failures WHERE run=?", rid, start, stop)
        try:
            rows = self._conn.execute(q + " ORDER BY rowid", args).fetchall()
        except sqlite3.OperationalError as exc:  # a store made before failures were kept, opened read-only
            if "no such table" in str(exc):
                return []
            raise StoreError(f"store {self.path}: {exc}") from None
        return [dict(zip(FAILURE_COLUMNS, r, strict=True)) for r in rows]


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on error and maps SQLite errors to StoreError."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
            return
        self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            raise StoreError(f"store {self._path}: {exc}") from exc
