"""Benchmark: the MAKER task, 20-disk Towers of Hanoi, 1,048,575 steps, with checkpoints on.

Runs the real command line, ``maker run hanoi --set disks=20 --agent simulated:gpt-4.1-mini --k 3``,
in a child process against a fresh SQLite store, and reports wall time, microseconds per step,
the child's peak memory, calls per step next to the theoretical expectation for the
preset's p, k and red-flag rate, and what the run would cost at the preset model's published
prices next to MAKER's projection (about $3.5K for gpt-4.1-mini at k = 3).

In the same run, ``shared/tools/floor_hanoi.py`` (a straight-line Python loop doing one Hanoi
step's unavoidable work: prompt, digest, three simulated samples, strict parse, ahead-by-3 vote,
apply, a grouped SQLite commit in WAL) does the same number of steps, and the engine's time per
step is given as a ratio to it. Absolute times differ between machines; the ratio is what
carries. ``--floor PATH`` points at the floor script (default: ``../shared/tools/floor_hanoi.py``
beside the repository); without it the floor is left out.

``--repeat N`` runs both N times, one after the other, and adds the median of the pairs' ratios and the ratio of
the best times of each: on a shared machine whose speed drifts within minutes, one pair can be far off.

    python bench/bench_hanoi.py [--disks 20] [--agent simulated:gpt-4.1-mini] [--k 3] [--floor PATH] [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker import _rng
from maker.agents import make_agent
from maker.stats import expected_calls, run_success

TARGET_S = 60.0
MAKER_PROJECTION_USD = 3500.0
"""MAKER's own projected cost of the 20-disk run with gpt-4.1-mini at k = 3 (Meyerson et al. 2025): about $3.5K."""
FLOOR = Path(__file__).resolve().parents[2] / "shared" / "tools" / "floor_hanoi.py"


def _floor(script: Path, disks: int, tmp: str) -> dict[str, float] | None:
    """The straight-line floor's figures for the same number of steps (None: the script is not there)."""
    if not script.is_file():
        return None
    proc = subprocess.run(
        [sys.executable, str(script), str(disks), str(Path(tmp) / "floor.sqlite")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disks", type=int, default=20)
    ap.add_argument("--agent", default="simulated:gpt-4.1-mini")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor", type=Path, default=FLOOR, help="the straight-line floor script (default: %(default)s)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the engine and the floor this many times each, one after the other, and give the median of the "
        "pairs' ratios and the ratio of the best times (a shared machine's speed drifts within minutes)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    info = make_agent(args.agent).info
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.sqlite"
        cmd = [
            sys.executable,
            "-m",
            "maker.cli",
            "run",
            "hanoi",
            "--set",
            f"disks={args.disks}",
            "--agent",
            args.agent,
            "--k",
            str(args.k),
            "--seed",
            str(args.seed),
            "--store",
            str(store),
            "--json",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        summary = json.loads(proc.stdout)
        store_mb = store.stat().st_size / 2**20
        floor = _floor(args.floor, args.disks, tmp)
        engine_runs, floor_runs = [summary["wall_s"] / summary["steps"] * 1e6], []
        if floor is not None:
            floor_runs.append(floor["us_per_step"])
            for _ in range(1, args.repeat):
                store.unlink()
                again = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
                if again.returncode != 0:
                    print(again.stderr, file=sys.stderr)
                    return again.returncode
                s = json.loads(again.stdout)
                engine_runs.append(s["wall_s"] / s["steps"] * 1e6)
                (Path(tmp) / "floor.sqlite").unlink(missing_ok=True)
                more = _floor(args.floor, args.disks, tmp)
                if more is not None:
                    floor_runs.append(more["us_per_step"])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    theory = expected_calls(info["p"], args.k, info["valid"])
    steps = summary["steps"]
    out = {
        "command": " ".join(["maker", *cmd[3:-3]]),
        "steps": steps,
        "errors": summary["errors"],
        "solved": summary["solved"],
        "wall_s": summary["wall_s"],
        "process_s": round(elapsed, 2),
        "us_per_step": round(summary["wall_s"] / steps * 1e6, 2),
        "target_s": TARGET_S,
        "wall_vs_target": round(summary["wall_s"] / TARGET_S, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "store_mb": round(store_mb, 1),
        "calls_per_step": round(summary["calls_per_step"], 5),
        "theory_calls_per_step": round(theory, 5),
        "calls_vs_theory": round(summary["calls_per_step"] / theory, 4),
        "red_flags": summary["red_flags"],
        "max_rounds": summary["max_rounds"],
        "p": info["p"],
        "k": args.k,
        "p_full_theory": round(run_success(info["p"], args.k, steps), 5),
        "c_draws": _rng.ACCELERATED,  # the child imports the same build, under the same environment
        # What the run would cost against the provider at the preset model's published prices (the simulated
        # model reports no usage: prompts are counted at four characters a token), next to MAKER's projection.
        "cost_usd": None if summary.get("cost") is None else round(summary["cost"], 2),
        "prompt_tokens": summary.get("prompt_tokens"),
        "completion_tokens": summary.get("completion_tokens"),
        "prices": next(iter((summary.get("prices") or {}).values()), None),
        "maker_projection_usd": MAKER_PROJECTION_USD,
    }
    if out["cost_usd"] is not None:
        out["cost_vs_projection"] = round(out["cost_usd"] / MAKER_PROJECTION_USD, 3)
    if floor is not None:
        out["floor_us_per_step"] = floor["us_per_step"]
        out["engine_vs_floor"] = round(out["us_per_step"] / floor["us_per_step"], 2)
        if len(floor_runs) > 1:
            pairs = [e / f for e, f in zip(engine_runs, floor_runs, strict=False)]
            out["engine_us_per_step_runs"] = [round(e, 2) for e in engine_runs]
            out["floor_us_per_step_runs"] = [round(f, 2) for f in floor_runs]
            out["engine_vs_floor_pairs"] = [round(r, 2) for r in pairs]
            out["engine_vs_floor_median"] = round(statistics.median(pairs), 2)
            out["engine_vs_floor_best"] = round(min(engine_runs) / min(floor_runs), 2)
    else:
        out["floor"] = f"not run: {args.floor} not found"
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
