"""Benchmark: throughput under a provider's rate limit, through the real command line.

A loopback provider (tests/fixtures/provider.py: Hanoi answers behind fixed windows) admits at most R requests
and T tokens per 60-second window; past either it answers 429 with ``Retry-After`` and ``x-ratelimit-*``
headers, and every answer says what is left of the window. Two workloads, each ``maker`` in a child process
against a fresh store and a provider of its own:

- **hanoi**: ``maker run hanoi --set disks=12`` (4,095 steps, one after another);
- **eval**: ``maker eval`` of small Hanoi problems (4 to 6 disks) at ``--concurrency 64``.

Each runs three times: against the provider without limits (the reference trace, and the rate the limit is
measured against), at the limits, and at the limits with the client-side ``rpm=`` / ``tpm=`` set to them. The
figures once settled are taken over the provider's complete windows after the first one, from the opening of
the second window to the opening of the last: requests/s and tokens/s admitted, as a share of the limits
(target at least 90% of the binding one), and 429s per 100 requests sent (target under 5; zero expected with the
client-side limits). Lost steps are steps expected but not committed; failed runs are runs not done, unsolved
or wrong; a trace differs when a run's step rows, timings aside, are not the reference run's (targets 0).

The two workloads run side by side (two processes, each with its provider), so each run at the limits takes
about (requests / R) minutes: some seven minutes in all with the defaults.

    python bench/bench_rate_limit.py [--rpm 2400] [--tpm 3500000] [--problems 112] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.fixtures, in the workers too

from tests._cli import step_rows  # noqa: E402  (after the path above)

WINDOW_S = 60.0
DISKS = 12
EVAL_DISKS = (4, 5, 6)
MODES = ("unlimited", "limited", "client-side")


def _dataset(path: Path, problems: int) -> dict[str, int]:
    """Write ``problems`` Hanoi problems (the disk count as the question, the solved pegs as the answer); their
    ids and expected steps."""
    expected: dict[str, int] = {}
    with path.open("w") as f:
        for i in range(problems):
            disks = EVAL_DISKS[i % len(EVAL_DISKS)]
            pegs: list[list[int]] = [[], [], []]
            pegs[2 if disks % 2 == 0 else 1] = list(range(disks, 0, -1))
            pid = f"h{i:03d}"
            f.write(json.dumps({"id": pid, "question": str(disks), "answer": pegs}) + "\n")
            expected[pid] = 2**disks - 1
    return expected


def _command(workload: str, agent: str, store: Path, data: Path) -> list[str]:
    common = ["--agent", agent, "--store", str(store), "--json"]
    if workload == "hanoi":
        return [sys.executable, "-m", "maker.cli", "run", "hanoi", "--set", f"disks={DISKS}", "--run-id", "h", *common]
    workflow = ["--workflow", "hanoi", "--param", "disks", "--answer-key", "pegs"]
    return [
        sys.executable,
        "-m",
        "maker.cli",
        "eval",
        str(data),
        *workflow,
        "--concurrency",
        "64",
        "--name",
        "e",
        *common,
    ]


def _settled(starts: list[float], admissions: list[tuple[float, str, int]], rpm: int, tpm: int) -> dict[str, Any]:
    """Figures over the complete windows after the first: from the second window's opening to the last's."""
    if len(starts) < 3:
        return {"settled_windows": 0}
    a, b = starts[1], starts[-1]
    inside = [(outcome, cost) for t, outcome, cost in admissions if a <= t < b]
    admitted = [cost for outcome, cost in inside if outcome == "ok"]
    span = b - a
    rps, tps = len(admitted) / span, sum(admitted) / span
    return {
        "settled_windows": len(starts) - 2,
        "settled_s": round(span, 1),
        "rps": round(rps, 2),
        "rps_of_limit": round(rps / (rpm / WINDOW_S), 3),
        "tokens_per_s": round(tps),
        "tokens_of_limit": round(tps / (tpm / WINDOW_S), 3),
        "429_per_100": round(100 * (len(inside) - len(admitted)) / max(1, len(inside)), 2),
    }


def _workload(workload: str, mode: str, rpm: int, tpm: int, tmp: str) -> dict[str, Any]:
    """One workload in one mode, its provider in this process and ``maker`` in a child: its figures."""
    from tests.fixtures.provider import Provider

    limits = {} if mode == "unlimited" else {"requests_per_window": rpm, "tokens_per_window": tpm}
    store = Path(tmp) / f"{workload}-{mode}.sqlite"
    with Provider(window_s=WINDOW_S, latency_s=0.0, **limits) as provider:
        agent = f"openai:hanoi@{provider.url},concurrency=64"
        if mode == "client-side":
            agent += f",rpm={rpm},tpm={tpm}"
        cmd = _command(workload, agent, store, Path(tmp) / "problems.jsonl")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=dict(os.environ))
        wall = time.perf_counter() - t0
        starts, admissions = list(provider.window_starts), list(provider.admissions)
    out: dict[str, Any] = {"rc": proc.returncode, "wall_s": round(wall, 1), "store": str(store)}
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-2000:]
        return out
    summary = json.loads(proc.stdout)
    out["requests"] = len(admissions)
    out["429s"] = sum(1 for _, outcome, _ in admissions if outcome != "ok")
    out["rps_overall"] = round(len(admissions) / wall, 1)
    if workload == "hanoi":
        out["runs"] = {"h": {"steps": summary["steps"], "ok": bool(summary["solved"]) and summary["errors"] == 0}}
    else:
        out["runs"] = {
            r["run_id"]: {"steps": r["steps"], "ok": r["status"] == "done" and bool(r["correct"])}
            for r in summary["rows"]
        }
    if mode != "unlimited":
        out.update(_settled(starts, admissions, rpm, tpm))
    return out


def _outcome(f: dict[str, Any], ref: dict[str, Any], expected: dict[str, int]) -> dict[str, Any]:
    """Lost steps, failed runs and traces unlike the reference's."""
    lost = sum(max(0, n - f["runs"].get(rid, {}).get("steps", 0)) for rid, n in expected.items())
    failed = sum(1 for rid in expected if not f["runs"].get(rid, {}).get("ok", False))
    differ = sum(1 for rid in expected if step_rows(Path(f["store"]), rid) != step_rows(Path(ref["store"]), rid))
    return {"lost_steps": lost, "failed_runs": failed, "traces_unlike_reference": differ}


def _line(f: dict[str, Any]) -> str:
    if f["rc"] != 0:
        return f"FAILED (exit {f['rc']}): {f['stderr'].strip().splitlines()[-1:]}"
    head = f"{f['requests']:,} requests, {f['429s']} 429s in {f['wall_s']} s"
    if "rps" not in f:
        return f"{head} ({f['rps_overall']} requests/s); lost steps {f['lost_steps']}, failed runs {f['failed_runs']}"
    if not f["settled_windows"]:
        return f"{head}; too short to settle (fewer than 3 windows)"
    return (
        f"{head}; settled ({f['settled_windows']} windows, {f['settled_s']} s): {f['rps']} requests/s = "
        f"{f['rps_of_limit']:.1%} of R, {f['tokens_per_s']:,} tokens/s = {f['tokens_of_limit']:.1%} of T, "
        f"{f['429_per_100']} 429s per 100 requests; lost steps {f['lost_steps']}, failed runs {f['failed_runs']}, "
        f"traces unlike the unlimited run's {f['traces_unlike_reference']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm", type=int, default=2400, help="R: requests the provider admits per 60 s window")
    ap.add_argument("--tpm", type=int, default=3_500_000, help="T: tokens the provider admits per 60 s window")
    ap.add_argument("--problems", type=int, default=112, help="Hanoi problems (4 to 6 disks) in the eval")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "setup": f"loopback provider, R = {args.rpm:,} requests and T = {args.tpm:,} tokens per {WINDOW_S:g} s "
        f"window; hanoi: {DISKS} disks ({2**DISKS - 1:,} steps); eval: {args.problems} problems of "
        f"{EVAL_DISKS[0]}-{EVAL_DISKS[-1]} disks at --concurrency 64; agent concurrency=64",
    }
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        per_problem = _dataset(Path(tmp) / "problems.jsonl", args.problems)
        expected = {"hanoi": {"h": 2**DISKS - 1}, "eval": {f"e/{pid}": n for pid, n in per_problem.items()}}
        with ProcessPoolExecutor(max_workers=2) as pool:  # the two workloads side by side, one mode at a time
            for mode in MODES:
                jobs = {w: pool.submit(_workload, w, mode, args.rpm, args.tpm, tmp) for w in ("hanoi", "eval")}
                for workload, job in jobs.items():
                    figures[f"{workload} {mode}"] = job.result()
                print(f"{mode} done", file=sys.stderr)
        for workload in ("hanoi", "eval"):
            ref = figures[f"{workload} unlimited"]
            for mode in MODES:
                f = figures[f"{workload} {mode}"]
                if f["rc"] == 0 and ref["rc"] == 0:
                    f.update(_outcome(f, ref, expected[workload]))
                out[f"{workload}, {mode}"] = _line(f)
    for f in figures.values():
        f.pop("store", None)
        f.pop("runs", None)
    out["figures"] = json.dumps(figures)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
