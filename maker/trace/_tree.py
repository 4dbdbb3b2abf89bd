"""A run's task tree, for ``maker trace show --tree`` and the report.

A tree workflow (``solve``) tags each call with its node's path (``0``, ``0.1``, ``0.1.0``),
and its state holds the nodes (path, task, decision, decomposition, result). The tree is
read from two plain-data sources and nothing else: the steps, grouped by tag, give every
decision with its tally; the run's latest snapshot gives each node's task and result.
Nothing is executed and nothing is unpickled.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from maker.store import RunRecord, Store

__all__ = ["task_tree", "tree_text", "tree_html"]


def _path_key(path: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def task_tree(st: Store, record: RunRecord) -> list[dict[str, Any]] | None:
    """One record per node, depth first, or None when the run's steps carry no tags."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for row in st.tagged_steps(record.id):
        assert row.tag is not None  # the store reads only the tagged steps
        steps.setdefault(row.tag, []).append(
            {
                "step": row.step,
                "microstep": row.microstep,
                "answer": json.loads(row.answer),
                "votes": json.loads(row.votes),
                "rounds": row.rounds,
                "samples": row.samples,
                "correct": None if row.correct is None else bool(row.correct),
                "red_flags": json.loads(row.red_flags) if row.red_flags else {},
            }
        )
    if not steps:
        return None
    nodes: dict[str, dict[str, Any]] = {}
    try:
        state = json.loads(st.latest_snapshot(record.id)[1])
        for n in state.get("nodes", []) if isinstance(state, dict) else []:
            if isinstance(n, dict) and isinstance(n.get("path"), str):
                nodes[n["path"]] = n
    except (ValueError, AttributeError):  # a snapshot of another shape: the steps alone still make a tree
        nodes = {}
    out = []
    for path in sorted(set(steps) | set(nodes), key=_path_key):
        n = nodes.get(path, {})
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


def tree_text(nodes: list[dict[str, Any]], width: int = 140) -> str:
    """The tree as indented lines: each node's task, shape and result, then its steps with their tallies."""
    lines = []
    for n in nodes:
        pad = "  " * n["depth"]
        result = f"  => {_short(n['result'], 40)}" if n.get("result") is not None else ""
        if n.get("task") is None:  # a tag the state knows nothing about: its steps alone
            lines.append(f"{pad}tag {n['path']}")
        else:
            lines.append(f"{pad}node {n['path']}  {_short(n['task'], width)}{result}")
            lines.append(f"{pad}  {_shape(n)}")
        for s in n["steps"]:
            wrong = "  WRONG" if s["correct"] is False else ""
            flags = f"  red flags {s['red_flags']}" if s["red_flags"] else ""
            lines.append(
                f"{pad}  step {s['step']:<5} {s['microstep'] or '?':<10} votes {s['votes']}  "
                f"{_short(_answer(s['answer']), width)}{wrong}{flags}"
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
            f"<td>{'<span class=flag>wrong</span>' if s['correct'] is False else ''}</td></tr>"
            for s in n["steps"]
        )
        about = (
            ""
            if n.get("task") is None
            else (f" {escape(_short(n['task'], 160))}{result}<br><span class=muted>{escape(_shape(n))}</span>")
        )
        html.append(
            f"<li><b>{escape(n['path'])}</b>{about}"
            f"<table><tr><th>step</th><th>microstep</th><th>votes</th><th>answer</th><th></th></tr>{rows}</table>"
        )
    while depth >= 0:
        html.append("</li></ul>")
        depth -= 1
    return "".join(html)
