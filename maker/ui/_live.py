"""What the UI's pages show, read from the store: the runs list, a run's live facts and plots, its hardest steps.

A run's plots come from the points its ledger keeps at each commit (:mod:`maker.engine._points`), read with its
record: a page over a run of a million steps reads one row. A run recorded before points were kept is read once,
in bins, by one pass of SQL (:meth:`Store.step_bins`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from maker.agents.prices import Price, cost_of
from maker.runs import shown_status
from maker.store import EVAL_EVENT, RunLine, RunRecord, Store
from maker.trace import branch_rows, first_line

__all__ = ["RunRow", "run_row", "list_runs", "RunsPage", "series", "hardest", "eval_membership", "branches"]

_PAGE = 100  # top-level entries (runs, or evaluations) per page of the runs list
_BINS = 256  # bins of a run recorded without points


@dataclass(slots=True)
class RunRow:
    """One run as the runs list shows it."""

    run_id: str
    workflow: str
    status: str
    steps: int
    expected: int | None
    progress: float | None
    """Steps done over the steps expected (None: not known)."""
    rate: float | None
    """Steps a second over the run's wall time so far."""
    eta_s: float | None
    errors: int
    red_flag_rate: float | None
    cost: float | None
    agents: list[str]
    created: float
    updated: float
    parent: str | None
    parent_step: int | None
    evaluation: str | None = None
    problem: str | None = None
    score: float | None = None
    children: list[RunRow] = field(default_factory=list)

    @property
    def own_steps(self) -> int:
        return self.steps - (self.parent_step or 0)


def run_row(r: RunRecord | RunLine) -> RunRow:
    status = shown_status(r)
    own = r.steps - r.first_step
    rate = own / r.wall_s if r.wall_s > 0 and own > 0 else None
    expected = r.expected_steps
    eta = None
    if status == "running" and rate and expected:
        eta = max(0.0, (expected - r.steps) / rate)
    return RunRow(
        run_id=r.run_id,
        workflow=r.workflow,
        status=status,
        steps=r.steps,
        expected=expected,
        progress=min(1.0, r.steps / expected) if expected else (1.0 if status == "done" else None),
        rate=rate,
        eta_s=eta,
        errors=r.errors,
        red_flag_rate=r.red_flags / r.calls if r.calls else None,
        cost=r.cost if isinstance(r, RunLine) else (r.stats or {}).get("cost"),
        agents=(json.loads(r.agents or "[]") if isinstance(r, RunLine) else list(r.config.get("agents") or [])),
        created=r.created,
        updated=r.updated,
        parent=r.parent_run_id,
        parent_step=r.parent_step,
    )


def eval_membership(st: Store) -> dict[int, dict[str, Any]]:
    """Each evaluated run's latest ``eval`` event (by the run's row id): the evaluation, the problem, its score."""
    out: dict[int, dict[str, Any]] = {}
    for rid, _t, data in st.events_of(EVAL_EVENT):
        try:
            d = json.loads(data)
        except ValueError:
            continue
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            out[rid] = d
    return out


@dataclass(slots=True)
class Entry:
    """A top-level line of the runs list: a run (its forks under it) or an evaluation (its runs in it)."""

    run: RunRow | None = None
    evaluation: str | None = None
    runs: list[RunRow] = field(default_factory=list)
    updated: float = 0.0

    @property
    def done(self) -> int:
        return sum(r.status == "done" for r in self.runs)

    @property
    def running(self) -> int:
        return sum(r.status == "running" for r in self.runs)

    @property
    def correct(self) -> int:
        return sum(r.score == 1.0 for r in self.runs)

    @property
    def scored(self) -> int:
        return sum(r.score is not None for r in self.runs)

    @property
    def cost(self) -> float | None:
        costs = [r.cost for r in self.runs]
        return None if not costs or None in costs else sum(c for c in costs if c is not None)


@dataclass(slots=True)
class RunsPage:
    entries: list[Entry]
    total: int
    """Top-level entries that match the filter."""
    runs: int
    """Runs in the store."""
    page: int
    pages: int
    statuses: dict[str, int]


def list_runs(st: Store, *, q: str = "", status: str = "", page: int = 1) -> RunsPage:
    """The runs list: newest activity first, forks under their parents, each evaluation's runs as one entry;
    ``q`` matches a run's id, workflow, agents or evaluation (any word, case-insensitive), ``status`` its status."""
    records = st.run_lines()
    membership = eval_membership(st)
    rows: dict[str, RunRow] = {}
    for r in records:
        row = run_row(r)
        ev = membership.get(r.id)
        if ev is not None:
            row.evaluation, row.problem, row.score = ev["name"], str(ev.get("problem")), ev.get("score")
        rows[r.run_id] = row
    statuses: dict[str, int] = {}
    for row in rows.values():
        statuses[row.status] = statuses.get(row.status, 0) + 1
    words = q.lower().split()

    def matches(row: RunRow) -> bool:
        if status and row.status != status:
            return False
        text = " ".join([row.run_id, row.workflow, *row.agents, row.evaluation or ""]).lower()
        return all(w in text for w in words)

    entries: dict[str, Entry] = {}
    for row in rows.values():
        if row.evaluation is not None:
            e = entries.setdefault("eval:" + row.evaluation, Entry(evaluation=row.evaluation))
            if matches(row):
                e.runs.append(row)
                e.updated = max(e.updated, row.updated)
        elif row.parent is not None and row.parent in rows:
            continue
        elif matches(row) or any(matches(c) for c in _descendants(row, rows)):
            entries["run:" + row.run_id] = Entry(run=row, updated=row.updated)
    for row in rows.values():  # forks, each under its parent (a fork's forks under it, and so on)
        if row.parent is not None and row.parent in rows and rows[row.parent].evaluation is None:
            rows[row.parent].children.append(row)
    shown = sorted((e for e in entries.values() if e.run is not None or e.runs), key=lambda e: -e.updated)
    pages = max(1, math.ceil(len(shown) / _PAGE))
    page = min(max(1, page), pages)
    return RunsPage(shown[(page - 1) * _PAGE : page * _PAGE], len(shown), len(rows), page, pages, statuses)


def _descendants(row: RunRow, rows: dict[str, RunRow]) -> list[RunRow]:
    return [r for r in rows.values() if r.parent == row.run_id]


def series(st: Store, record: RunRecord) -> dict[str, Any]:
    """The run's plots, point by point from its first step: per-step means between points, and running totals."""
    points = (record.stats or {}).get("points")
    if not points or not points.get("step"):
        points = _points_from_steps(st, record)
    first = record.first_step
    steps = points["step"]
    out: dict[str, Any] = {
        "step": steps,
        "rounds_mean": [],
        "rounds_max": points["max_rounds"],
        "calls_per_step": [],
        "steps_per_s": [],
        "cost": points["cost"] if all(c is not None for c in points["cost"]) else None,
        "wasted_calls": points["wasted_calls"],
        "errors": points["errors"],
        "flags": {},
    }
    reasons = sorted({k for f in points["flags"] for k in f})
    flags: dict[str, list[int]] = {k: [] for k in reasons}
    prev = {"step": first, "calls": 0, "rounds": 0, "wall_s": 0.0}
    prev_flags: dict[str, int] = {}
    for i, s in enumerate(steps):
        n = s - prev["step"]
        known = points["max_rounds"][i] is not None
        out["rounds_mean"].append(round((points["rounds"][i] - prev["rounds"]) / n, 4) if n > 0 and known else None)
        out["calls_per_step"].append(round((points["calls"][i] - prev["calls"]) / n, 4) if n > 0 and i else None)
        dt = points["wall_s"][i] - prev["wall_s"]
        out["steps_per_s"].append(round(n / dt, 2) if dt > 0 and i else None)
        for k in reasons:
            flags[k].append(points["flags"][i].get(k, 0) - prev_flags.get(k, 0))
        prev = {"step": s, "calls": points["calls"][i], "rounds": points["rounds"][i], "wall_s": points["wall_s"][i]}
        prev_flags = points["flags"][i]
    if steps:  # the first point's calls and speed count from the run's start: known only for a run of one segment
        n0 = steps[0] - first
        out["calls_per_step"][0] = round(points["calls"][0] / n0, 4) if n0 > 0 else None
    out["flags"] = flags
    return out


def _points_from_steps(st: Store, record: RunRecord) -> dict[str, Any]:
    """Points for a run recorded before they were kept: its steps in bins, running totals at each bin's end."""
    first = record.first_step
    width = 1 << max(0, math.ceil(math.log2(max(1, (record.steps - first) / _BINS))))
    bins, extra = st.step_bins(record.id, first, width, first)
    prices = [None if p is None else Price(*p) for p in (record.stats or {}).get("prices") or []]
    billed: dict[int, float | None] = {}

    def bill(b: int, agent: int | None, p: int, c: int, o: int) -> None:
        if agent is None:
            return
        price = prices[agent] if agent < len(prices) else None
        cost = cost_of(price, p, c, o)
        billed[b] = None if cost is None or billed.get(b, 0.0) is None else (billed.get(b) or 0.0) + cost

    merged: dict[int, dict[str, Any]] = {}
    for x in bins:
        m = merged.setdefault(
            x.bin, {"steps": 0, "last": 0, "rounds": 0, "max": 0, "calls": 0, "dur": 0.0, "flags": {}, "wasted": 0}
        )
        m["steps"] += x.steps
        m["last"] = max(m["last"], x.last_step)
        m["rounds"] += x.rounds
        m["max"] = max(m["max"], x.max_rounds)
        m["calls"] += x.samples
        m["dur"] += x.dur
        m["wasted"] += x.rejected_verifier_calls
        for f in json.loads(x.flags) if x.flags else []:
            for k, v in f.items():
                m["flags"][k] = m["flags"].get(k, 0) + v
        bill(x.bin, x.agent, x.prompt, x.cached, x.completion)
    for u in extra:
        bill(u.bin, u.agent, u.prompt, u.cached, u.completion)
    cols: dict[str, list[Any]] = {
        k: [] for k in ("step", "wall_s", "calls", "rounds", "red_flags", "errors", "cost", "wasted_calls")
    }
    cols["max_rounds"], cols["flags"] = [], []
    calls = rounds = flagged = wasted = 0
    wall, cost = 0.0, 0.0
    by_reason: dict[str, int] = {}
    priced = bool(prices) and all(p is not None for p in prices)
    for b in sorted(merged):
        m = merged[b]
        calls, rounds, wasted = calls + m["calls"], rounds + m["rounds"], wasted + m["wasted"]
        wall += m["dur"]
        for k, v in m["flags"].items():
            by_reason[k] = by_reason.get(k, 0) + v
            flagged += v
        c = billed.get(b, 0.0)
        priced = priced and c is not None
        cost += c or 0.0
        cols["step"].append(m["last"] + 1)
        cols["wall_s"].append(round(wall, 3))
        cols["calls"].append(calls)
        cols["rounds"].append(rounds)
        cols["red_flags"].append(flagged)
        cols["errors"].append(None)
        cols["cost"].append(round(cost, 6))
        cols["wasted_calls"].append(wasted)
        cols["max_rounds"].append(m["max"])
        cols["flags"].append(dict(by_reason))
    if not priced:
        cols["cost"] = [None] * len(cols["step"])
    return cols


def hardest(st: Store, record: RunRecord, n: int = 10) -> list[tuple[int, int, int]]:
    """The ``n`` steps that took the most rounds, as ``(step, rounds, samples)``: read only between the points whose
    most rounds could hold them, most first."""
    points = (record.stats or {}).get("points") or {}
    steps, tops = points.get("step") or [], points.get("max_rounds") or []
    if not steps or any(t is None for t in tops):
        return st.most_rounds(record.id, [(record.first_step, record.steps)], 1, n)
    starts = [record.first_step, *steps[:-1]]
    order = sorted(range(len(steps)), key=lambda i: (-tops[i], starts[i]))
    found: list[tuple[int, int, int]] = []
    for j, i in enumerate(order):
        found = st.most_rounds(record.id, [(starts[i], steps[i])], tops[i], n) + found
        found.sort(key=lambda r: (-r[1], r[0]))
        found = found[:n]
        nxt = tops[order[j + 1]] if j + 1 < len(order) else 0
        if len(found) >= n and found[-1][1] > nxt:
            break
        if j > 4 * n and len(found) >= n:  # many ties: enough of them
            break
    return found


def branches(st: Store, record: RunRecord) -> list[dict[str, Any]]:
    """The run's branches (``--backtracks``) as the run page's table shows them: the reason's first line."""
    return [{**r.model_dump(), "reason_line": first_line(r.reason)} for r in branch_rows(st, record)]


def store_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The store file as the page header shows it."""
    p = os.fspath(path)
    try:
        size = os.path.getsize(p) + (os.path.getsize(p + "-wal") if os.path.exists(p + "-wal") else 0)
    except OSError:
        size = None
    return {"path": p, "bytes": size, "read_at": time.time()}
