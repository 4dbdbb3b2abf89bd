"""The questions a live view asks of a store (``maker ui``): what changed, and a run's steps gathered into bins.

Each is one pass of SQL over the rows asked for, so a view that polls asks only for the steps committed since it
last looked; a million steps are read in one pass, in C, never row by row in Python.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

__all__ = ["StepBin", "BinUsage", "LiveViews", "EVAL_EVENT", "RunLine", "BranchTally"]

EVAL_EVENT = "eval"
"""The event ``maker eval`` records on each problem's run: when it starts, the evaluation's name, the problem, the
answer expected and the scorer; once scored, the answer got, the score and why it failed, if it did. A live view
groups an evaluation's runs by it."""

# Verifier calls spent on a drafted step whose draft was rejected: what speculation paid for nothing.
_REJECTED_VERIFIER_CALLS = (
    "CASE WHEN spec IS NOT NULL AND json_extract(spec, '$.route') IS NULL "
    "AND coalesce(json_extract(spec, '$.accepted'), 0) = 0 "
    "THEN coalesce(json_array_length(spec, '$.verdicts'), 0) ELSE 0 END"
)


class StepBin(NamedTuple):
    """The steps of one bin (``first + bin * width`` to the next bin) whose bill's first agent is ``agent``."""

    bin: int
    agent: int | None
    """The first agent of the steps' bills (None: steps without one)."""
    steps: int
    last_step: int
    rounds: int
    max_rounds: int
    samples: int
    dur: float
    flags: str | None
    """The red flags of the bin's flagged steps, as a JSON list of ``{reason: count}`` (None: no flagged step)."""
    rejected_verifier_calls: int
    prompt: int
    cached: int
    completion: int
    """Tokens billed to ``agent`` (the bill's first entry; the others are in :class:`BinUsage`)."""
    split_bills: int
    """Steps whose bill names more than one agent."""


class BranchTally(NamedTuple):
    """What the steps one branch abandoned had spent (:meth:`~maker.store.Store.branch_tallies`)."""

    branch: int
    steps: int
    calls: int
    """Their samples (model calls)."""
    wrong: int
    """Those whose answer was wrong against the ground truth (``correct = 0``)."""
    tokens: int


class BinUsage(NamedTuple):
    """Tokens billed in one bin to one agent beyond the bills' first entries."""

    bin: int
    agent: int
    prompt: int
    cached: int
    completion: int


class RunLine(NamedTuple):
    """What a list of runs shows of one: its record's columns, with only the cost and the agents read out of its
    stats and options (a list of ten thousand runs parses no record whole)."""

    id: int
    run_id: str
    workflow: str
    status: str
    created: float
    updated: float
    expected_steps: int | None
    steps: int
    calls: int
    red_flags: int
    errors: int
    wall_s: float
    pid: int | None
    host: str | None
    parent_run_id: str | None
    parent_step: int | None
    cost: float | None
    agents: str | None
    """The agent specs, as a JSON list."""

    @property
    def first_step(self) -> int:
        return self.parent_step or 0


class LiveViews:
    """Mixed into :class:`~maker.store.Store`: the named questions of a live view."""

    _conn: sqlite3.Connection

    def changes(self) -> tuple[int, float]:
        """How many runs the store holds and when any of them last changed (0.0: none)."""
        n, t = self._conn.execute("SELECT count(*), coalesce(max(updated), 0) FROM runs").fetchone()
        return int(n), float(t)

    def run_lines(self) -> list[RunLine]:
        """Every run as a list shows it, oldest first."""
        return [
            RunLine(*r)
            for r in self._conn.execute(
                "SELECT id, run_id, workflow, status, created, updated, expected_steps, steps, calls, red_flags, "
                "errors, wall_s, pid, host, parent_run_id, parent_step, json_extract(stats, '$.cost'), "
                "json_extract(config, '$.agents') FROM runs ORDER BY id"
            )
        ]

    def run_change(self, run_id: str) -> tuple[float, str, int] | None:
        """When a run last changed, its status and its steps (None: no such run)."""
        row = self._conn.execute("SELECT updated, status, steps FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else (float(row[0]), str(row[1]), int(row[2]))

    def step_bins(self, rid: int, first: int, width: int, start: int) -> tuple[list[StepBin], list[BinUsage]]:
        """The run's steps from ``start`` on, gathered ``width`` to a bin counted from step ``first``."""
        rows = self._conn.execute(
            "SELECT (step - ?) / ? AS b, json_extract(usage, '$[0][0]') AS a, count(*), max(step), sum(rounds), "
            "max(rounds), sum(samples), sum(dur), '[' || group_concat(red_flags) || ']', "
            f"sum({_REJECTED_VERIFIER_CALLS}), coalesce(sum(json_extract(usage, '$[0][1]')), 0), "
            "coalesce(sum(json_extract(usage, '$[0][2]')), 0), coalesce(sum(json_extract(usage, '$[0][3]')), 0), "
            "sum(coalesce(instr(usage, '],['), 0) > 0) "
            "FROM steps WHERE run=? AND step>=? GROUP BY b, a ORDER BY b",
            (first, width, rid, start),
        ).fetchall()
        bins = [StepBin(*r) for r in rows]
        extra: list[BinUsage] = []
        if any(b.split_bills for b in bins):
            extra = [
                BinUsage(*r)
                for r in self._conn.execute(
                    "SELECT (s.step - ?) / ? AS b, json_extract(j.value, '$[0]') AS a, "
                    "sum(json_extract(j.value, '$[1]')), sum(json_extract(j.value, '$[2]')), "
                    "sum(json_extract(j.value, '$[3]')) "
                    "FROM steps AS s, json_each(s.usage) AS j "
                    "WHERE s.run=? AND s.step>=? AND instr(s.usage, '],[') > 0 AND j.key > 0 GROUP BY b, a",
                    (first, width, rid, start),
                )
            ]
        return bins, extra

    def most_rounds(self, rid: int, ranges: list[tuple[int, int]], at_least: int, n: int) -> list[tuple[int, int, int]]:
        """Of the steps in the given ``[start, stop)`` ranges, the ``n`` with the most rounds (``at_least``), as
        ``(step, rounds, samples)``: most rounds first, then the earlier step."""
        found: list[tuple[int, int, int]] = []
        for start, stop in ranges:
            found += self._conn.execute(
                "SELECT step, rounds, samples FROM steps WHERE run=? AND step>=? AND step<? AND rounds>=? "
                "ORDER BY rounds DESC, step LIMIT ?",
                (rid, start, stop, at_least, n),
            ).fetchall()
        found.sort(key=lambda r: (-r[1], r[0]))
        return found[:n]

    def events_of(self, kind: str) -> list[tuple[int, float, str]]:
        """Every event of one kind, oldest first, as ``(run, t, data)`` (data as JSON)."""
        return [
            (int(r), float(t), str(d))
            for r, t, d in self._conn.execute("SELECT run, t, data FROM events WHERE kind=? ORDER BY t", (kind,))
        ]

    def run_events(self, rid: int) -> list[tuple[float, str, str]]:
        """A run's events, oldest first, as ``(t, kind, data)``."""
        return [
            (float(t), str(k), str(d))
            for t, k, d in self._conn.execute("SELECT t, kind, data FROM events WHERE run=? ORDER BY t", (rid,))
        ]
