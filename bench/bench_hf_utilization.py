"""Benchmark: tokens/s achieved inside a voted run against the backend's own peak at the same batch size.

Loads the bundled SmolLM2 once, then in one process, alternating so that both see the same
machine (a shared CPU's speed drifts by 10% over minutes):

1. a peak block: ``generate`` on the counting prompt with ``--k`` samples per call (the
   first-round batch of a step), ``--repeats`` calls, tokens generated per second;
2. a run segment: the counting workflow run by the engine (voting ahead-by-k, every sample
   at temperature 1.0, later rounds filled up to k samples per call) with the same backend,
   tokens generated per second of wall time, and apart from them the tokens of the samples
   that were voted (the rest were generated ahead for rounds the step did not need);

``--segments`` run segments, each between two peak blocks. Utilization is the run's rate
against the peak blocks measured around it, and also against the best block of all.

    python bench/bench_hf_utilization.py [--steps 30] [--segments 3] [--k 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.agents import GenerateRequest, make_agent
from maker.runs import start_run

PROMPT = "Counting: 473, 474, 475, 476, 477,"


def peak_block(backend, k: int, repeats: int, block: int) -> float:
    tokens = 0
    t0 = time.perf_counter()
    for r in range(repeats):
        seeds = [(block * repeats + r) * 100 + i for i in range(k)]
        (samples,) = asyncio.run(backend.generate([GenerateRequest(PROMPT, [1.0] * k, seeds, 8, [","])]))
        tokens += sum(s.tokens for s in samples)
    return tokens / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="steps over all segments")
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10, help="calls per peak block")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    spec = "hf:smollm2-135m"
    backend = make_agent(spec).backend  # the same loaded model serves the runs below
    peak_block(backend, args.k, 2, -1)  # warm-up, not counted

    blocks = [peak_block(backend, args.k, args.repeats, 0)]
    ratios, run_tokens, voted_tokens, wall, busy, steps, errors, calls, spare = [], 0, 0, 0.0, 0.0, 0, 0, 0, 0
    per_segment = max(1, args.steps // args.segments)
    for seg in range(args.segments):
        before_tokens, before_busy = backend.generated_tokens, backend.busy_s
        with tempfile.TemporaryDirectory() as tmp:
            s = start_run(
                "counting",
                {"steps": per_segment, "seed": seg},
                {"agents": [spec], "k": args.k, "first_temperature": 1.0, "temperature": 1.0},
                store=Path(tmp) / "u.sqlite",
            )
        seg_tokens = backend.generated_tokens - before_tokens
        busy += backend.busy_s - before_busy
        blocks.append(peak_block(backend, args.k, args.repeats, seg + 1))
        ratios.append(seg_tokens / s.wall_s / statistics.mean(blocks[-2:]))
        run_tokens += seg_tokens
        voted_tokens += s.tokens  # tokens of samples that were voted (not the spare ones generated ahead)
        wall += s.wall_s
        steps, errors, calls, spare = steps + s.steps, errors + s.errors, calls + s.calls, spare + s.spare_samples
    around = statistics.mean(blocks)
    in_run = run_tokens / wall
    voted = voted_tokens / wall
    out = {
        "batch": args.k,
        "peak_blocks_tokens_per_s": [round(b, 1) for b in blocks],
        "in_run_tokens_per_s": round(in_run, 1),
        "utilization": round(in_run / around, 3),
        "utilization_per_segment": [round(r, 3) for r in ratios],
        "utilization_vs_best_block": round(in_run / max(blocks), 3),
        "voted_tokens_per_s": round(voted, 1),
        "voted_utilization": round(voted / around, 3),
        "spare_samples_per_step": round(spare / steps, 3),
        "backend_busy_share": round(busy / wall, 3),
        "prefix_tokens_reused": backend.reused_tokens,
        "target": 0.7,
        "run_steps": steps,
        "run_errors": errors,
        "run_calls_per_step": round(calls / steps, 3),
        "run_wall_s": round(wall, 1),
    }
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
