"""Reading a run's trace: step records, statistics and export, streamed from the store.

Nothing here loads a whole run: steps are read with one ordered cursor (the steps table's
primary key is ``(run, step)``, so a single step or a range is an index lookup), and the
statistics keep counters, a fixed number of points per plot and one float per step for
the time percentiles. Nothing read from a trace is executed or unpickled: rows are JSON
and numbers.

The record format (``maker trace export``, ``maker trace show --json``) is documented in
``docs/trace-format.md``; it is versioned with ``TRACE_FORMAT``.
"""

from __future__ import annotations

import heapq
import json
import math
from array import array
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from maker.agents import Roster, agent_label
from maker.errors import UserError
from maker.stats import expected_calls, wilson_interval
from maker.store import RunRecord, Store

__all__ = [
    "TRACE_FORMAT",
    "agent_labels",
    "step_records",
    "failure_records",
    "trace_stats",
    "export_jsonl",
    "export_parquet",
    "parse_range",
]

TRACE_FORMAT = 2
_POINTS = 400  # points per series in the statistics (and the report's plots)
_HARDEST = 10


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
    st: Store, record: RunRecord, start: int = 0, stop: int | None = None, *, samples: bool = False
) -> Iterator[dict[str, Any]]:
    """One plain-data record per committed step in ``[start, stop)``, in step order."""
    labels = agent_labels(record)

    def label(i: int) -> str:
        return agent_label(labels, i)

    for row in st.steps(record.id, start, stop):
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
        ) = row
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
            "speculation": _speculation(json.loads(spec), labels) if spec else None,
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
                for idx, rnd, a, temp, tok, body, flag, vote in st.samples(record.id, step)
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


# -- statistics ------------------------------------------------------------------------------
def _percentile(hist: Counter[int], q: float) -> float:
    """The q-quantile (nearest rank) of a histogram of whole numbers."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def _sorted_percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def trace_stats(st: Store, record: RunRecord) -> dict[str, Any]:
    """Everything ``maker trace stats`` prints and the report plots, from one pass over the steps."""
    labels = agent_labels(record)
    first, end = record.first_step, record.steps
    n_steps = end - first
    width = max(1, math.ceil(n_steps / _POINTS))  # steps per plotted point
    rounds_hist: Counter[int] = Counter()
    samples_hist: Counter[int] = Counter()
    flags_by_reason: Counter[str] = Counter()
    durs = array("d")
    agent_votes: dict[int, list[int]] = {}
    routes: Counter[str] = Counter()
    drafted = accepted = escalated = 0
    errors = known = 0
    calls = flagged = tokens = 0
    max_rounds = (0, first)
    slow = (0.0, first)
    most_rounds: list[tuple[int, int, int]] = []  # (rounds, samples, -step) min-heap of the top ones
    most_split: list[tuple[float, int, int]] = []  # (disagreement, valid votes, -step)
    series: dict[str, list[float]] = {
        k: [] for k in ("step", "rounds_mean", "rounds_max", "red_flags", "calls_cum", "dur_mean_ms")
    }
    bin_rounds = bin_max = bin_flags = bin_n = 0
    bin_dur = 0.0
    seen = 0
    candidates = set((record.stats or {}).get("candidates", []))  # their mismatches are not the run's errors
    cur = st.query(
        "SELECT step, votes, rounds, samples, red_flags, agent, dur, correct, spec, tokens, microstep FROM steps"
        " WHERE run=? ORDER BY step",
        (record.id,),
    )
    for step, votes_s, rounds, n, flags_s, agent, dur, correct, spec, tok, microstep in cur:
        seen += 1
        votes = json.loads(votes_s)
        rounds_hist[rounds] += 1
        samples_hist[n] += 1
        calls += n
        tokens += tok or 0
        durs.append(dur)
        if dur > slow[0]:
            slow = (dur, step)
        nflags = 0
        if flags_s:
            for reason, c in json.loads(flags_s).items():
                flags_by_reason[reason] += c
                nflags += c
        flagged += nflags
        if correct is not None and microstep not in candidates:
            known += 1
            errors += correct == 0
        valid = sum(votes)
        av = agent_votes.setdefault(agent, [0, 0, 0])  # steps decided, votes for the right answer, valid votes
        av[0] += 1
        av[2] += valid
        if correct != 0:
            av[1] += votes[0] if votes else 0
        if rounds > max_rounds[0]:
            max_rounds = (rounds, step)
        _push(most_rounds, (rounds, n, -step))
        if valid:
            _push(most_split, (round(1 - votes[0] / valid, 4), valid, -step))
        if spec:
            info = json.loads(spec)
            if info.get("route"):
                routes[info["route"]] += 1
            else:
                drafted += 1
            accepted += bool(info.get("accepted"))
            escalated += bool(info.get("escalated"))
        bin_n += 1
        bin_rounds += rounds
        bin_max = max(bin_max, rounds)
        bin_flags += nflags
        bin_dur += dur
        if bin_n == width:
            _close_bin(series, step, bin_rounds, bin_max, bin_flags, bin_dur, bin_n, calls)
            bin_rounds = bin_max = bin_flags = bin_n = 0
            bin_dur = 0.0
    if bin_n:
        _close_bin(series, first + seen - 1, bin_rounds, bin_max, bin_flags, bin_dur, bin_n, calls)

    k = record.config.get("k") or _recorded_k(record)
    right = sum(v[1] for v in agent_votes.values())
    valid_votes = sum(v[2] for v in agent_votes.values())
    p = right / valid_votes if valid_votes else None
    valid_rate = 1 - flagged / calls if calls else None
    theory = None
    if p is not None and k and valid_rate and 0 < p <= 1 and valid_rate > 0:
        theory = expected_calls(p, k, valid_rate)
    if theory is not None:
        series["calls_theory_cum"] = [round(theory * (s - first + 1), 1) for s in series["step"]]
    ds = sorted(durs)
    agents = []
    for idx in sorted(agent_votes):
        n_steps_a, good, valid = agent_votes[idx]
        lo, hi = wilson_interval(good, valid)
        agents.append(
            {
                "agent": agent_label(labels, idx),
                "steps_decided": n_steps_a,
                "votes": valid,
                "p": round(good / valid, 4) if valid else None,
                "p_low": round(lo, 4),
                "p_high": round(hi, 4),
            }
        )
    spec_stats: dict[str, Any] | None = None
    if drafted or routes:
        spec_stats = {
            "drafted": drafted,
            "accepted": accepted,
            "escalated": escalated,
            "acceptance_rate": round(accepted / drafted, 4) if drafted else None,
            "routed": dict(routes),
        }
        wasted = (record.stats or {}).get("wasted") or {}
        if wasted.get("calls") or wasted.get("hits") or wasted.get("misses"):
            by = {agent_label(labels, i): n for i, n in enumerate(wasted.get("agent_calls", [])) if n}
            spec_stats["window"] = {
                "wasted_calls": wasted.get("calls", 0),
                "wasted_tokens": wasted.get("tokens", 0),
                "wasted_calls_per_step": round(wasted.get("calls", 0) / seen, 4) if seen else 0.0,
                "wasted_by_agent": by,
                "predictions_held": wasted.get("hits", 0),
                "predictions_missed": wasted.get("misses", 0),
                "rejected_drafts_waited_at": wasted.get("waited", 0),
                "rejected_drafts_passed": wasted.get("went_on", 0),
            }
    hardest_rounds = [{"step": -s, "rounds": r, "samples": n} for r, n, s in sorted(most_rounds, reverse=True)]
    hardest_split = [
        {"step": -s, "disagreement": d, "valid_votes": v} for d, v, s in sorted(most_split, reverse=True) if d > 0
    ]
    return {
        "trace_format": TRACE_FORMAT,
        "run_id": record.run_id,
        "workflow": record.workflow,
        "status": record.status,
        "first_step": first,
        "steps": seen,
        "k": k,
        "agents": labels,
        "errors": errors if known else None,
        "rounds": {
            "median": _percentile(rounds_hist, 0.5),
            "p99": _percentile(rounds_hist, 0.99),
            "max": max_rounds[0],
            "max_step": max_rounds[1],
            "histogram": {str(r): c for r, c in sorted(rounds_hist.items())},
        },
        "samples_per_step": {
            "mean": round(calls / seen, 4) if seen else 0.0,
            "median": _percentile(samples_hist, 0.5),
            "p99": _percentile(samples_hist, 0.99),
            "max": max(samples_hist) if samples_hist else 0,
            "histogram": {str(s): c for s, c in sorted(samples_hist.items())},
        },
        "calls": calls,
        "calls_per_step": round(calls / seen, 4) if seen else 0.0,
        "calls_per_step_theory": None if theory is None else round(theory, 4),
        "p_measured": None if p is None else round(p, 4),
        "valid_rate": None if valid_rate is None else round(valid_rate, 4),
        "tokens": tokens,
        "red_flags": {
            "total": flagged,
            "rate": round(flagged / calls, 5) if calls else 0.0,
            "by_reason": dict(flags_by_reason.most_common()),
        },
        "per_agent": agents,
        "speculation": spec_stats,
        "time": {
            "total_s": round(sum(ds), 3),
            "mean_ms": round(1000 * sum(ds) / len(ds), 4) if ds else 0.0,
            "median_ms": round(1000 * _sorted_percentile(ds, 0.5), 4),
            "p99_ms": round(1000 * _sorted_percentile(ds, 0.99), 4),
            "max_ms": round(1000 * slow[0], 4),
            "max_step": slow[1],
        },
        "hardest": {"most_rounds": hardest_rounds, "most_disagreement": hardest_split},
        "series": {"steps_per_point": width, **series},
    }


def _recorded_k(record: RunRecord) -> int | None:
    """The k every microstep voted with, from the run's recorded policies (None when they differ)."""
    policies = (record.stats or {}).get("voting") or {}
    ks = {p.get("k") for p in policies.values()}
    return ks.pop() if len(ks) == 1 else None


def _push(heap: list[Any], item: Any) -> None:
    if len(heap) < _HARDEST:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def _close_bin(
    series: dict[str, list[float]], step: int, rounds: int, rmax: int, flags: int, dur: float, n: int, calls: int
) -> None:
    series["step"].append(step)
    series["rounds_mean"].append(round(rounds / n, 4))
    series["rounds_max"].append(rmax)
    series["red_flags"].append(flags)
    series["calls_cum"].append(calls)
    series["dur_mean_ms"].append(round(1000 * dur / n, 4))


# -- export ----------------------------------------------------------------------------------
def export_jsonl(st: Store, record: RunRecord, out: TextIO, *, samples: bool = False) -> int:
    """Write one JSON line per step; returns how many."""
    n = 0
    for rec in step_records(st, record, record.first_step, None, samples=samples):
        out.write(json.dumps(rec, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n


_PARQUET_BATCH = 65536


def export_parquet(st: Store, record: RunRecord, path: str | Path) -> int:
    """Write the step records as a Parquet file, in row groups, never holding the whole run."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("Parquet export needs pyarrow: pip install 'maker[parquet]' (or use --format jsonl)") from None
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("microstep", pa.string()),
            ("tag", pa.string()),
            ("digest", pa.string()),
            ("input", pa.string()),
            ("answer", pa.string()),
            ("votes", pa.list_(pa.int64())),
            ("rounds", pa.int64()),
            ("samples", pa.int64()),
            ("tokens", pa.int64()),
            ("red_flags", pa.string()),
            ("agent", pa.string()),
            ("correct", pa.bool_()),
            ("t_start", pa.float64()),
            ("dur_s", pa.float64()),
            ("speculation", pa.string()),
        ]
    )
    json_cols = {"answer", "red_flags", "speculation"}  # nested objects of any shape stay JSON text
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: dict[str, list[Any]] = {f.name: [] for f in schema}
        for rec in step_records(st, record, record.first_step, None):
            for name, col in batch.items():
                v = rec[name]
                col.append(json.dumps(v) if name in json_cols and v is not None else v)
            n += 1
            if len(batch["step"]) >= _PARQUET_BATCH:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {f.name: [] for f in schema}
        if batch["step"] or n == 0:
            writer.write_table(pa.table(batch, schema=schema))
    return n
