"""Benchmark: the trace tools on a million-step run, and the cost of each detail level.

1. Records the 20-disk Hanoi run (1,048,575 steps, simulated gpt-4.1-mini, k=3) in a fresh
   store, then runs the real command lines against it, each in its own child process, and
   reports wall time and the child's peak memory: ``maker replay`` (target: 30 s or less),
   ``maker trace show --step``, ``maker trace stats``, ``maker trace export --format jsonl``
   and ``--format parquet``, and ``maker trace report``.
2. Runs ``--detail summary`` and ``--detail samples`` side by side on a smaller Hanoi
   (``--detail-disks``, default 14) and reports steps/s and store bytes per step of each.

    python bench/bench_trace.py [--disks 20] [--detail-disks 14] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

REPLAY_TARGET_S = 30.0
AGENT = "simulated:gpt-4.1-mini"

# Runs the maker CLI in this child and prints its peak RSS (KiB) on the last line of stderr.
_CHILD = (
    "import resource, sys\n"
    "from maker.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:], standalone_mode=False)\n"
    "finally:\n"
    "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def _maker(*args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one maker command in a child process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"maker {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    rss_kib = int(proc.stderr.strip().splitlines()[-1])
    return wall, rss_kib / 1024, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disks", type=int, default=20)
    ap.add_argument("--detail-disks", type=int, default=14)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "big.sqlite")
        wall, rss, text = _maker(
            "run",
            "hanoi",
            "--set",
            f"disks={args.disks}",
            "--agent",
            AGENT,
            "--k",
            "3",
            "--store",
            store,
            "--run-id",
            "big",
            "--json",
        )
        summary = json.loads(text)
        out["steps"] = summary["steps"]
        out["errors"] = summary["errors"]
        out["record_s"] = round(wall, 1)
        out["store_mb"] = round(os.path.getsize(store) / 2**20, 1)

        wall, rss, text = _maker("replay", "big", "--store", store, "--json")
        replay = json.loads(text)
        out["replay_s"] = round(wall, 1)
        out["replay_steps_per_s"] = round(replay["steps"] / replay["wall_s"])
        out["replay_target_s"] = REPLAY_TARGET_S
        out["replay_vs_target"] = round(wall / REPLAY_TARGET_S, 3)
        out["replay_peak_mb"] = round(rss, 1)
        mid = str(summary["steps"] // 2)
        for name, cmd in (
            ("show_step", ("trace", "show", "big", "--step", mid, "--store", store)),
            ("stats", ("trace", "stats", "big", "--store", store, "--json")),
            ("export_jsonl", ("trace", "export", "big", "-o", str(Path(tmp) / "big.jsonl"), "--store", store)),
            (
                "export_parquet",
                (
                    "trace",
                    "export",
                    "big",
                    "--format",
                    "parquet",
                    "-o",
                    str(Path(tmp) / "big.parquet"),
                    "--store",
                    store,
                ),
            ),
            ("report", ("trace", "report", "big", "-o", str(Path(tmp) / "big.html"), "--store", store)),
        ):
            wall, rss, _ = _maker(*cmd)
            out[f"{name}_s"] = round(wall, 2)
            out[f"{name}_peak_mb"] = round(rss, 1)
        out["jsonl_mb"] = round(os.path.getsize(Path(tmp) / "big.jsonl") / 2**20, 1)
        out["parquet_mb"] = round(os.path.getsize(Path(tmp) / "big.parquet") / 2**20, 1)
        os.remove(store)

        levels = {}
        for detail in ("summary", "samples"):
            path = str(Path(tmp) / f"{detail}.sqlite")
            _, _, text = _maker(
                "run",
                "hanoi",
                "--set",
                f"disks={args.detail_disks}",
                "--agent",
                AGENT,
                "--k",
                "3",
                "--detail",
                detail,
                "--store",
                path,
                "--json",
            )
            s = json.loads(text)
            levels[detail] = (s["steps"] / s["wall_s"], os.path.getsize(path) / s["steps"])
            out[f"detail_{detail}_steps_per_s"] = round(levels[detail][0])
            out[f"detail_{detail}_bytes_per_step"] = round(levels[detail][1])
        out["samples_vs_summary_time"] = round(levels["summary"][0] / levels["samples"][0], 2)
        out["samples_vs_summary_bytes"] = round(levels["samples"][1] / levels["summary"][1], 2)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
