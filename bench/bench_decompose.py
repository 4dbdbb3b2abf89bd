"""Benchmark: the solve workflow on the MAKER authors' four data sets, with simulated agents per role.

For each set (5x5, 6x6, 10x10 multiplication, 200 problems each; sorting 500 integers, 50 problems):

* k is chosen as ``maker estimate`` would: ``k_min`` for the set's voted steps (the reference
  trees' steps times the problems) at the worst per-sample p of any call (the decomposer's,
  or a solver's p ** difficulty on the largest leaf), target 0.95;
* accuracy, calls, tokens, steps and tree size per problem at that k, and at k = 1 (no voting);
* the same simulated solver asked the whole problem in one atomic step (``max_depth=0``) at that k;
* wall time and problems per second at ``--concurrency 1`` and ``16`` with 50 ms per backend call,
  on the first ``--latency-problems`` problems of the set (every call costs 50 ms whatever its batch).

The simulated roles: decomposer (and judge-mode proposer) p = 0.85, judge 0.9, classifier,
solver and composer 0.95; a call worth w unit steps (a 10-digit by 1-digit row is 2 units, a
500-number sort 15.6) is right with p ** w; every wrong sample of a step is the same wrong answer
(spread 1, the worst case).

    python bench/bench_decompose.py [--sets 5x5,6x6,10x10,sort] [--latency-problems 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.evaluation import evaluate
from maker.stats import k_min
from maker.store import Store
from maker.workflows._reference import Problem, Proposal, recognize

ROOT = Path(__file__).resolve().parent.parent
SETS = {
    "5x5": "bench_long_mul_5_5__200.jsonl",
    "6x6": "bench_long_mul_6_6__200.jsonl",
    "10x10": "bench_long_mul_10_10__200.jsonl",
    "sort": "bench_sort_len_500__50.jsonl",
}
P = {"decompose": 0.85, "propose": 0.85, "judge": 0.9, "classify": 0.95, "solve": 0.95, "compose": 0.95}
AGENT = "simulated:p=0.95,p_decompose=0.85,p_propose=0.85,p_judge=0.9,seed=1"


def _reference_tree(problem: Problem) -> tuple[int, float]:
    """(voted steps of the reference tree, the worst per-sample p of any of its calls)."""
    steps, worst = 1, P["classify"]  # the node's own atomic-or-not vote
    if problem.atomic():
        return steps + 1, min(worst, P["solve"] ** problem.units())
    split: Proposal = problem.split()
    worst = min(worst, P["decompose"], P["compose"] ** problem.compose_units(split))
    steps += 2  # decompose, compose
    for task in split.subtasks:
        child = recognize(task)
        assert child is not None
        s, w = _reference_tree(child)
        steps, worst = steps + s, min(worst, w)
    return steps, worst


def _plan(lines: list[dict[str, Any]]) -> dict[str, Any]:
    trees = [_reference_tree(recognize(x["question"])) for x in lines]  # type: ignore[arg-type]
    steps = sum(s for s, _ in trees)
    worst = min(w for _, w in trees)
    return {"voted_steps": steps, "worst_p": round(worst, 4), "k": k_min(steps, worst, 0.95)}


def _eval(
    data: Path,
    store: Path,
    *,
    k: int,
    concurrency: int = 16,
    limit: int | None = None,
    latency: bool = False,
    params: dict[str, Any] | None = None,
    name: str = "e",
) -> dict[str, Any]:
    agent = AGENT + (",call_s=0.05" if latency else "")
    t0 = time.perf_counter()
    s = evaluate(
        data, {"agents": [agent], "k": k}, store=store, concurrency=concurrency, limit=limit, params=params, name=name
    )
    wall = time.perf_counter() - t0
    with Store.open(store) as st:
        sizes = [(r.result or {}).get("nodes", 0) for r in st.runs() if r.run_id.startswith(f"{name}/")]
        depths = [(r.result or {}).get("depth", 0) for r in st.runs() if r.run_id.startswith(f"{name}/")]
    return {
        "problems": s.problems,
        "correct": s.correct,
        "accuracy": round(s.accuracy, 4),
        "calls": round(s.calls_mean, 1),
        "calls_max": s.calls_max,
        "tokens": round(s.tokens_mean),
        "steps": round(s.steps_mean, 1),
        "nodes": round(sum(sizes) / len(sizes), 1),
        "depth": max(depths),
        "wall_s": round(wall, 2),
        "problems_per_s": round(s.problems / wall, 2),
        "backend_calls": s.backend_calls,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--latency-problems", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {"agent": AGENT, "roles_p": json.dumps(P)}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.sets.split(","):
            data = ROOT / "data" / "maker-official" / SETS[key]
            lines = [json.loads(x) for x in data.read_text().splitlines() if x.strip()]
            plan = _plan(lines)
            k = plan["k"]
            db = Path(tmp) / f"{key}.sqlite"
            voted = _eval(data, db, k=k, name="voted")
            once = _eval(data, db, k=1, name="k1")
            oneshot = _eval(data, db, k=k, params={"max_depth": 0}, name="oneshot")
            n = min(args.latency_problems, len(lines))
            c1 = _eval(data, db, k=k, concurrency=1, limit=n, latency=True, name="c1")
            c16 = _eval(data, db, k=k, concurrency=16, limit=n, latency=True, name="c16")
            out[f"{key} plan"] = f"{plan['voted_steps']:,} voted steps, worst p {plan['worst_p']}: k = {k}"
            out[f"{key} voted k={k}"] = _line(voted)
            out[f"{key} no voting k=1"] = _line(once)
            out[f"{key} one-shot k={k}"] = _line(oneshot)
            out[f"{key} {n} problems, 50 ms calls"] = (
                f"concurrency 1: {c1['problems_per_s']} problems/s ({c1['wall_s']} s, {c1['backend_calls']} calls); "
                f"concurrency 16: {c16['problems_per_s']} problems/s ({c16['wall_s']} s, {c16['backend_calls']} "
                f"calls): {c16['problems_per_s'] / c1['problems_per_s']:.1f}x (target 8x); "
                f"accuracy {c1['accuracy']} / {c16['accuracy']}"
            )
            out[f"{key} figures"] = json.dumps({"voted": voted, "k1": once, "oneshot": oneshot, "c1": c1, "c16": c16})
            print(f"{key} done", file=sys.stderr)
    emit(out, args.json)
    return 0


def _line(f: dict[str, Any]) -> str:
    return (
        f"{f['correct']}/{f['problems']} exact ({100 * f['accuracy']:.1f}%), {f['calls']} calls "
        f"(max {f['calls_max']}), {f['tokens']:,} tokens, {f['steps']} steps, {f['nodes']} nodes, depth "
        f"{f['depth']} per problem; {f['wall_s']} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
