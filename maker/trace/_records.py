"""Reading a run's trace: step and failure records, streamed from the store.

Nothing here loads a whole run: steps are read with one ordered cursor (the steps table's
primary key is ``(run, step)``, so a single step or a range is an index lookup). Nothing read
from a trace is executed or unpickled: rows are JSON and numbers.

The record format (``maker trace export``, ``maker trace show --json``) is documented in
``docs/trace-format.md``; it is versioned with ``TRACE_FORMAT``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from maker.agents import Roster, agent_label
from maker.agents.prices import Price, cost_of
from maker.errors import UserError
from maker.store import RunRecord, StepRow, Store

__all__ = ["TRACE_FORMAT", "agent_labels", "step_records", "failure_records", "parse_range"]

TRACE_FORMAT = 2


def agent_labels(record: RunRecord) -> list[str]:
    """The run's agents in the order step rows index them (``agent 1: SPEC``, ``drafter: SPEC``, ...)."""
    stats = record.stats or {}
    if stats.get("agents"):
        return list(stats["agents"])
    cfg = record.config
    return Roster.labels_for(cfg.get("agents", []), cfg.get("drafter") or None, cfg.get("verifiers", []))


def parse_range(step: int | None, steps: str | None, record: RunRecord) -> tuple[int, int]:
    """``--step N`` or ``--steps A:B`` (B exclusive; either side may be left out) as ``(start, stop)``."""
    first, end = record.first_step, record.steps
    if step is not None and steps is not None:
        raise UserError("give `step` or `steps`, not both")
    if step is not None:
        start, stop = step, step + 1
    elif steps is not None:
        a, sep, b = steps.partition(":")
        try:
            start = int(a) if a.strip() else first
            stop = (int(b) if b.strip() else end) if sep else start + 1
        except ValueError:
            raise UserError(f"`steps` {steps!r}: expected A:B, A: or :B with whole numbers") from None
    else:
        start, stop = first, end
    if start < 0 or stop < start:
        raise UserError(f"step range {start}:{stop} is empty or negative")
    if start < first:
        raise UserError(
            f"run {record.run_id} was forked from {record.parent_run_id} at step {first}; steps before {first} "
            f"are in the parent's trace (maker trace show {record.parent_run_id} --steps {start}:{min(stop, first)})"
        )
    if start >= end and end > first:
        raise UserError(f"run {record.run_id} has steps {first}..{end - 1}; step {start} is past its end")
    return start, min(stop, end)


def step_records(
    st: Store,
    record: RunRecord,
    start: int = 0,
    stop: int | None = None,
    *,
    samples: bool = False,
    rows: Iterable[StepRow] | None = None,
    sample_rows: Callable[[int], list[tuple[Any, ...]]] | None = None,
) -> Iterator[dict[str, Any]]:
    """One plain-data record per committed step in ``[start, stop)``, in step order; with ``rows`` (and
    ``sample_rows``, a step's samples), one per row given instead (a branch's abandoned steps)."""
    if rows is None:
        rows = st.steps(record.id, start, stop)
    if sample_rows is None:

        def sample_rows(step: int) -> list[tuple[Any, ...]]:
            return st.samples(record.id, step)

    labels = agent_labels(record)
    prices = [None if p is None else Price(*p) for p in (record.stats or {}).get("prices") or []]

    def label(i: int) -> str:
        return agent_label(labels, i)

    for row in rows:
        (
            step,
            digest,
            answer,
            votes,
            rounds,
            n,
            flags,
            agent,
            t_start,
            dur,
            correct,
            spec,
            tokens,
            text,
            microstep,
            tag,
            usage,
        ) = row
        info = json.loads(spec) if spec else None
        weighted = None if info is None else info.pop("weighted", None)
        rec: dict[str, Any] = {
            "run_id": record.run_id,
            "step": step,
            "microstep": microstep,
            "tag": tag,
            "digest": digest,
            "input": text,
            "answer": json.loads(answer),
            "votes": json.loads(votes),
            "rounds": rounds,
            "samples": n,
            "tokens": tokens,
            "red_flags": json.loads(flags) if flags else {},
            "agent": label(agent),
            "correct": None if correct is None else bool(correct),
            "t_start": t_start,
            "dur_s": dur,
            "speculation": _speculation(info, labels) if info else None,
            "weighted": weighted,
            "usage": _usage(usage, labels, prices) if usage else None,
        }
        if samples:
            rec["sample_detail"] = [
                {
                    "idx": idx,
                    "round": rnd,
                    "agent": label(a),
                    "temperature": temp,
                    "tokens": tok,
                    "text": body,
                    "red_flag": flag,
                    "vote": json.loads(vote) if vote else None,
                }
                for idx, rnd, a, temp, tok, body, flag, vote in sample_rows(step)
            ]
        yield rec


def failure_records(st: Store, record: RunRecord, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
    """The failed attempts at steps in ``[start, stop)``, oldest first: what each got to (never a committed step;
    ``failed`` is true and ``kind`` says what failed: ``undecided``, ``next``, ``apply``, ``oracle``, ``red_flag``)."""
    labels = agent_labels(record)
    out = []
    for f in st.failures(record.id, start, stop):
        agent = f["agent"]
        rec: dict[str, Any] = {
            "run_id": record.run_id,
            "step": f["step"],
            "failed": True,
            "kind": f["kind"],
            "error": f["error"],
            "t": f["t"],
            "microstep": f["microstep"],
            "tag": f["tag"],
            "digest": f["digest"],
            "input": f["input"],
            "answer": json.loads(f["answer"]) if f["answer"] else None,
            "votes": json.loads(f["votes"]) if f["votes"] else [],
            "rounds": f["rounds"],
            "samples": f["samples"],
            "tokens": f["tokens"],
            "calls": f["calls"],
            "red_flags": json.loads(f["red_flags"]) if f["red_flags"] else {},
            "agent": None if agent is None else agent_label(labels, agent),
            "sample_detail": [
                {
                    "idx": idx,
                    "round": rnd,
                    "agent": agent_label(labels, a),
                    "temperature": temp,
                    "tokens": tok,
                    "text": body,
                    "red_flag": flag,
                    "vote": vote,
                }
                for idx, rnd, a, temp, tok, body, flag, vote in json.loads(f["sample_detail"] or "[]")
            ],
        }
        out.append(rec)
    return out


def _speculation(info: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Name the verifiers in a step's speculation record (rows keep their indexes)."""
    verifiers = [lab for lab in labels if lab.startswith("verifier ")]
    drafter = next((lab for lab in labels if lab.startswith("drafter: ")), None)
    out = dict(info)
    out["drafter"] = drafter if info.get("route") is None else None
    verdicts = []
    for v in info.get("verdicts", []):
        who = verifiers[v[0]] if v[0] < len(verifiers) else f"verifier #{v[0]}"
        if len(v) == 3:
            verdicts.append({"verifier": who, "score": v[1], "accept": bool(v[2])})
        else:
            verdicts.append({"verifier": who, "accept": bool(v[1])})
    out["verdicts"] = verdicts
    return out


def _usage(usage: str, labels: list[str], prices: list[Any]) -> dict[str, Any]:
    """A step's recorded bill as a record shows it: by agent, its tokens and cost, and the step's cost."""
    by_agent: dict[str, Any] = {}
    total: float | None = 0.0
    for a, p, c, o, e in json.loads(usage):
        price = prices[a] if a < len(prices) else None
        cost = cost_of(price, p, c, o)
        by_agent[agent_label(labels, a)] = {
            "prompt_tokens": p,
            "cached_tokens": c,
            "completion_tokens": o,
            "estimated": bool(e),
            "cost": None if cost is None else round(cost, 8),
        }
        total = None if total is None or cost is None else total + cost
    return {"cost": None if total is None else round(total, 8), "by_agent": by_agent}
