"""A run's task tree, for ``maker trace show --tree`` and the report.

A tree workflow (``solve``) tags each call with its node's path (``0``, ``0.1``, ``0.1.0``),
and its state holds the nodes (path, task, decision, decomposition, result). The tree is
read from two plain-data sources and nothing else: the steps, grouped by tag, give every
decision with its tally; the run's latest snapshot gives each node's task and result.
Nothing is executed and nothing is unpickled.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from maker.store import RunRecord, StepRow, Store

__all__ = ["task_tree", "tree_text", "tree_html"]

_NODE_REASON = re.compile(r"([0-9]+(?:\.[0-9]+)*): ")


def _path_key(path: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def _step(row: StepRow, abandoned_by: int | None = None) -> dict[str, Any]:
    out = {
        "step": row.step,
        "microstep": row.microstep,
        "answer": json.loads(row.answer),
        "votes": json.loads(row.votes),
        "rounds": row.rounds,
        "samples": row.samples,
        "correct": None if row.correct is None else bool(row.correct),
        "red_flags": json.loads(row.red_flags) if row.red_flags else {},
    }
    if abandoned_by is not None:
        out["abandoned_by"] = abandoned_by
    return out


def _branch_path(reason: str) -> str | None:
    """The node a branch's reason names (``PATH: ...``, as the solve workflow's checks say), if any."""
    m = _NODE_REASON.match(reason)
    return m.group(1) if m else None


def task_tree(st: Store, record: RunRecord, *, abandoned: bool = True) -> list[dict[str, Any]] | None:
    """One record per node, depth first, or None when the run's steps carry no tags.

    A node's ``steps`` are its live steps and, with ``abandoned``, the steps branches abandoned (each with
    ``abandoned_by``), in the order they were decided. The state keeps a node a retry replaced, marked
    ``dropped``, beside the one that replaced it at the same path: the tree shows the live one (``dropped`` false,
    ``dropped_versions`` the ones it replaced), or the last dropped one where none is live. ``branches`` are the
    branches that went back because of the node (the node their reason names; the first node gets the others)."""
    steps: dict[str, list[dict[str, Any]]] = {}
    order: dict[str, list[float]] = {}
    for row in st.tagged_steps(record.id):
        assert row.tag is not None  # the store reads only the tagged steps
        steps.setdefault(row.tag, []).append(_step(row))
        order.setdefault(row.tag, []).append(row.t_start)
    branches = st.branches(record.id)
    if abandoned:
        for b in branches:
            for row in st.branch_steps(record.id, b.branch):
                if row.tag is not None:
                    steps.setdefault(row.tag, []).append(_step(row, b.branch))
                    order.setdefault(row.tag, []).append(row.t_start)
        for tag, recs in steps.items():  # decided order: an abandoned step came before the one that replaced it
            steps[tag] = [r for _, r in sorted(zip(order[tag], recs, strict=True), key=lambda p: p[0])]
    if not steps:
        return None
    nodes: dict[str, dict[str, Any]] = {}
    dropped: dict[str, int] = {}
    try:
        state = json.loads(st.latest_snapshot(record.id)[1])
        for n in state.get("nodes", []) if isinstance(state, dict) else []:
            if isinstance(n, dict) and isinstance(n.get("path"), str):
                path = n["path"]
                if n.get("dropped"):
                    dropped[path] = dropped.get(path, 0) + 1
                    if path in nodes and not nodes[path].get("dropped"):
                        continue  # a live node at the path wins over a dropped one
                nodes[path] = n
    except (ValueError, AttributeError):  # a snapshot of another shape: the steps alone still make a tree
        nodes = {}
    paths = sorted(set(steps) | set(nodes), key=_path_key)
    went_back: dict[str, list[dict[str, Any]]] = {}
    for b in branches:
        named = _branch_path(b.reason)
        at = named if named in nodes or named in steps else paths[0]
        went_back.setdefault(at, []).append(
            {"branch": b.branch, "from_step": b.from_step, "to_step": b.to_step, "kind": b.kind, "reason": b.reason}
        )
    out = []
    for path in paths:
        n = nodes.get(path, {})
        is_dropped = bool(n.get("dropped"))
        out.append(
            {
                "path": path,
                "depth": path.count("."),
                "task": n.get("task"),
                "atomic": n.get("atomic"),
                "how": n.get("how"),
                "decomposition": n.get("decomposition"),
                "candidates": n.get("candidates"),
                "result": n.get("result"),
                "dropped": is_dropped,
                "dropped_versions": dropped.get(path, 0) - is_dropped,
                "branches": went_back.get(path, []),
                "steps": steps.get(path, []),
            }
        )
    return out


def _short(text: Any, width: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[: width - 3] + "..."


def _answer(a: Any) -> str:
    if isinstance(a, dict):
        return "; ".join(f"{k} = {json.dumps(v)}" for k, v in a.items())
    return json.dumps(a)


def _shape(n: dict[str, Any]) -> str:
    d = n.get("decomposition") or {}
    if n.get("atomic"):
        return f"atomic ({n['how']})" if n.get("how") else "atomic"
    if d.get("subtasks"):
        return f"split into {len(d['subtasks'])} by {n.get('how') or '?'}, compose {d.get('compose')!r}"
    return "undecided"


def _went_back(b: dict[str, Any], width: int) -> str:
    reason = _short(b["reason"].strip().split("\n", 1)[0], width)
    return f"branch {b['branch']} (went back from step {b['to_step']} to {b['from_step']}: {reason})"


def _node_mark(n: dict[str, Any]) -> str:
    if n.get("dropped"):
        return "  (dropped)"
    if n.get("dropped_versions"):
        return f"  (again: {n['dropped_versions']} dropped before)"
    return ""


def tree_text(nodes: list[dict[str, Any]], width: int = 140) -> str:
    """The tree as indented lines: each node's task, shape and result, the branches that went back because of
    it, then its steps with their tallies (abandoned ones marked)."""
    lines = []
    for n in nodes:
        pad = "  " * n["depth"]
        result = f"  => {_short(n['result'], 40)}" if n.get("result") is not None else ""
        if n.get("task") is None:  # a tag the state knows nothing about: its steps alone
            gone = n["steps"] and all(s.get("abandoned_by") is not None for s in n["steps"])
            lines.append(f"{pad}tag {n['path']}" + ("  (abandoned steps only)" if gone else ""))
        else:
            lines.append(f"{pad}node {n['path']}  {_short(n['task'], width)}{result}{_node_mark(n)}")
            lines.append(f"{pad}  {_shape(n)}")
        for b in n.get("branches") or []:
            lines.append(f"{pad}  {_went_back(b, width)}")
        for s in n["steps"]:
            wrong = "  WRONG" if s["correct"] is False else ""
            flags = f"  red flags {s['red_flags']}" if s["red_flags"] else ""
            gone = f"  abandoned by branch {s['abandoned_by']}" if s.get("abandoned_by") is not None else ""
            lines.append(
                f"{pad}  step {s['step']:<5} {s['microstep'] or '?':<10} votes {s['votes']}  "
                f"{_short(_answer(s['answer']), width)}{wrong}{flags}{gone}"
            )
    return "\n".join(lines)


def tree_html(nodes: list[dict[str, Any]]) -> str:
    """The tree as nested lists, every node's steps in a small table; every string escaped."""
    html: list[str] = []
    depth = -1
    for n in nodes:
        while depth < n["depth"]:
            html.append("<ul>")
            depth += 1
        while depth > n["depth"]:
            html.append("</li></ul>")
            depth -= 1
        if html[-1] != "<ul>":
            html.append("</li>")
        result = "" if n.get("result") is None else f" &rArr; <code>{escape(_short(n['result'], 80))}</code>"
        rows = "".join(
            f"<tr><td class=n>{s['step']}</td><td>{escape(str(s['microstep']))}</td><td>{escape(str(s['votes']))}"
            f"</td><td>{escape(_short(_answer(s['answer']), 160))}</td>"
            f"<td>{'<span class=flag>wrong</span>' if s['correct'] is False else ''}"
            + (
                f" <span class=muted>abandoned by branch {s['abandoned_by']}</span>"
                if s.get("abandoned_by") is not None
                else ""
            )
            + "</td></tr>"
            for s in n["steps"]
        )
        about = (
            ""
            if n.get("task") is None
            else (
                f" {escape(_short(n['task'], 160))}{result}{escape(_node_mark(n))}"
                f"<br><span class=muted>{escape(_shape(n))}</span>"
            )
        )
        about += "".join(f"<br><span class=flag>{escape(_went_back(b, 160))}</span>" for b in n.get("branches") or [])
        html.append(
            f"<li><b>{escape(n['path'])}</b>{about}"
            f"<table><tr><th>step</th><th>microstep</th><th>votes</th><th>answer</th><th></th></tr>{rows}</table>"
        )
    while depth >= 0:
        html.append("</li></ul>")
        depth -= 1
    return "".join(html)
