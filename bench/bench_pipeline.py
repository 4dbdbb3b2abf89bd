"""Benchmark: the speculative window against one step at a time, with a 50 ms large model and a 5 ms drafter.

Hanoi (12 disks, 4,095 steps by default). The large model is simulated at p = 0.998, voting
first-to-ahead-by-3, 50 ms per call whatever its batch (``call_s=0.05``); it also verifies
drafts: two verifier passes of it (independent draws, TPR 0.99, FPR 0.01 each), both needed
(``--verify-k 2``). The drafter is simulated at 5 ms per call, for p in {0.9, 0.95, 0.99}.

For each drafter: steps/s of large-model voting alone, of speculative drafting one step at a
time (window 1), with fixed windows 4, 16 and 64, with the adaptive window (cap 64), and with
the adaptive window and voted drafts (``--draft-k 2``: four drafter samples a call, the draft
the first answer ahead by 2);
large-model calls per step (voting plus verification) and wasted ones (made for drafted steps
off the chain's path); errors. Beside each figure, the ceilings: the drafter's own step rate
(1 / 5 ms = 200 steps/s), the window's (W steps per 50 ms), and the accepted run length
(predictions held per prediction missed). With ``--openai``, one configuration is repeated
through the OpenAI-compatible backend against loopback servers with 50 ms per request.

Runs whose time is mostly waiting (voting alone, window 1) go in parallel processes; the rest
one at a time.

    python bench/bench_pipeline.py [--disks 12] [--drafters 0.9,0.95,0.99] [--openai] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.store import Store

LARGE = "simulated:p=0.998,seed=1,tpr=0.99,fpr=0.01,call_s=0.05"
VERIFIERS = [
    "simulated:p=0.998,seed=3,tpr=0.99,fpr=0.01,call_s=0.05",
    "simulated:p=0.998,seed=4,tpr=0.99,fpr=0.01,call_s=0.05",
]
LATENCY_S, DRAFT_S = 0.05, 0.005


def _drafter(p: float) -> str:
    return f"simulated:p={p},seed=2,call_s={DRAFT_S}"


def _run(disks: int, options: dict[str, Any], store: str) -> dict[str, Any]:
    from maker.runs import start_run

    t0 = time.perf_counter()
    s = start_run("hanoi", {"disks": disks}, options, store=store, run_id="b")
    wall = time.perf_counter() - t0
    large = sum(n for label, n in s.agent_calls.items() if not label.startswith("drafter"))
    wasted_large = sum(n for label, n in s.wasted_agent_calls.items() if not label.startswith("drafter"))
    with Store.open(store) as st:
        stats = st.run("b").stats or {}
    wasted = stats.get("wasted") or {}
    return {
        "steps": s.steps,
        "errors": s.errors,
        "wall_s": round(wall, 2),
        "steps_per_s": round(s.steps / wall, 1),
        "large_calls_per_step": round(large / s.steps, 3),
        "wasted_large_per_step": round(wasted_large / s.steps, 3),
        "wasted_per_step": round(s.wasted_calls / s.steps, 3),
        "accepted": s.accepted,
        "escalated": s.escalated,
        "held": wasted.get("hits", 0),
        "missed": wasted.get("misses", 0),
    }


def _configs(p: float) -> dict[str, dict[str, Any]]:
    spec = {"agents": [LARGE], "k": 3, "drafter": _drafter(p), "verifiers": VERIFIERS, "verify_k": 2}
    return {
        "window 1": {**spec, "window": 1},
        "window 4": {**spec, "window": 4, "fixed_window": True},
        "window 16": {**spec, "window": 16, "fixed_window": True},
        "window 64": {**spec, "window": 64, "fixed_window": True},
        "adaptive (cap 64)": {**spec, "window": 64},
        "adaptive, voted drafts (--draft-k 2)": {**spec, "window": 64, "draft_k": 2},
    }


def _line(f: dict[str, Any], base: float, window: int | None) -> str:
    held = f["held"] / max(1, f["missed"])
    ceiling = min(1 / DRAFT_S, (window or 64) / LATENCY_S)
    return (
        f"{f['steps_per_s']} steps/s = {f['steps_per_s'] / base:.1f}x voting (ceiling {ceiling:.0f} steps/s, "
        f"{ceiling / base:.1f}x); large-model calls {f['large_calls_per_step']}/step, wasted "
        f"{f['wasted_large_per_step']} large and {f['wasted_per_step']} in all per step; errors {f['errors']}; "
        f"accepted run length {held:.1f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disks", type=int, default=12)
    ap.add_argument("--drafters", default="0.9,0.95,0.99")
    ap.add_argument("--openai", action="store_true", help="also one configuration through loopback HTTP servers")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ps = [float(x) for x in args.drafters.split(",")]
    out: dict[str, Any] = {
        "setup": f"hanoi {args.disks} disks ({2**args.disks - 1:,} steps); large {LARGE}, k=3; "
        f"verifiers {VERIFIERS} (verify-k 2); drafter simulated at {DRAFT_S * 1000:.0f} ms"
    }
    with tempfile.TemporaryDirectory() as tmp:
        jobs: dict[tuple[str, str], Any] = {}
        with ProcessPoolExecutor(max_workers=1 + len(ps)) as pool:  # the waiting-bound runs, side by side
            jobs[("voting", "alone")] = pool.submit(_run, args.disks, {"agents": [LARGE], "k": 3}, f"{tmp}/v.sqlite")
            for p in ps:
                jobs[(str(p), "window 1")] = pool.submit(
                    _run, args.disks, _configs(p)["window 1"], f"{tmp}/w1-{p}.sqlite"
                )
            done = {key: job.result() for key, job in jobs.items()}
        base = done[("voting", "alone")]["steps_per_s"]
        out["large-model voting alone"] = (
            f"{base} steps/s; large-model calls "
            f"{done[('voting', 'alone')]['large_calls_per_step']}/step; errors "
            f"{done[('voting', 'alone')]['errors']}"
        )
        figures: dict[str, Any] = {"voting": done[("voting", "alone")]}
        for p in ps:
            for name, opts in _configs(p).items():
                f = done.get((str(p), name)) or _run(args.disks, opts, f"{tmp}/{name.replace(' ', '')}-{p}.sqlite")
                window = opts["window"] if opts.get("fixed_window") or opts["window"] == 1 else None
                out[f"drafter p={p}, {name}"] = _line(f, base, window)
                figures[f"{p} {name}"] = f
                print(f"p={p} {name} done", file=sys.stderr)
        if args.openai:
            out.update(_openai(args.disks, base, ps[1] if len(ps) > 1 else ps[0], tmp))
        out["figures"] = json.dumps(figures)
    emit(out, args.json)
    return 0


def _openai(disks: int, base: float, p: float, tmp: str) -> dict[str, str]:
    """The adaptive window through the OpenAI-compatible backend: three loopback servers (large model, verifier,
    drafter) answering Hanoi steps like calibrated models, 50 ms (5 ms for the drafter) per request."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fixtures.hanoi_server import HanoiServer

    with (
        HanoiServer(error=0.002, latency_s=LATENCY_S, seed=1) as large,
        HanoiServer(error=0.002, latency_s=LATENCY_S, seed=3, judge_tpr=0.99, judge_fpr=0.01) as verifier,
        HanoiServer(error=1 - p, latency_s=DRAFT_S, seed=2) as drafter,
    ):
        opts = {
            "agents": [f"openai:large@{large.url},concurrency=64"],
            "k": 3,
            "drafter": f"openai:drafter@{drafter.url},concurrency=64",
            "verifiers": [f"openai:v@{verifier.url},concurrency=64"] * 2,
            "verify_k": 2,
        }
        voting = _run(disks, {"agents": opts["agents"], "k": 3}, f"{tmp}/oa-v.sqlite")
        adaptive = _run(disks, {**opts, "window": 64}, f"{tmp}/oa-a.sqlite")
        voted = _run(disks, {**opts, "window": 64, "draft_k": 2}, f"{tmp}/oa-d.sqlite")
    return {
        "openai loopback, voting alone": f"{voting['steps_per_s']} steps/s; errors {voting['errors']}",
        f"openai loopback, drafter p={p}, adaptive": _line(adaptive, voting["steps_per_s"], None),
        f"openai loopback, drafter p={p}, adaptive, voted drafts (--draft-k 2)": _line(
            voted, voting["steps_per_s"], None
        ),
    }


if __name__ == "__main__":
    raise SystemExit(main())
