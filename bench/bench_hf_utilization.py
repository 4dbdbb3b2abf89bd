"""Benchmark: tokens/s achieved inside a voted run against the backend's own peak at the same batch size.

Loads the bundled SmolLM2 once, then in one process:

1. peak: ``generate`` on the counting prompt with ``--k`` samples per call (the first-round
   batch of a step), repeated, and tokens generated per second, the best of ``--blocks``;
2. pipeline: the counting workflow run by the engine (voting ahead-by-k, every sample at
   temperature 1.0, later rounds filled up to k samples per call) with the same backend:
   tokens generated per second of wall time, and apart from them the tokens of the samples
   that were voted (the rest were generated ahead for rounds the step did not need).

    python bench/bench_hf_utilization.py [--steps 20] [--k 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.agents import GenerateRequest, make_agent
from maker.runs import start_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    spec = "hf:smollm2-135m"
    backend = make_agent(spec).backend  # the same loaded model serves the run below

    prompt = "Counting: 473, 474, 475, 476, 477,"
    peak = 0.0
    for block in range(args.blocks):  # the best of several blocks: a peak, not a noisy average
        tokens = 0
        t0 = time.perf_counter()
        for r in range(args.repeats):
            seeds = [(block * args.repeats + r) * 100 + i for i in range(args.k)]
            (samples,) = asyncio.run(backend.generate([GenerateRequest(prompt, [1.0] * args.k, seeds, 8, [","])]))
            tokens += sum(s.tokens for s in samples)
        peak = max(peak, tokens / (time.perf_counter() - t0))

    before_tokens = backend.generated_tokens
    before_busy = backend.busy_s
    with tempfile.TemporaryDirectory() as tmp:
        s = start_run("counting", {"steps": args.steps}, {"agents": [spec], "k": args.k, "first_temperature": 1.0,
                                                          "temperature": 1.0}, store=Path(tmp) / "u.sqlite")
    run_tokens = backend.generated_tokens - before_tokens
    in_run = run_tokens / s.wall_s
    voted = s.tokens / s.wall_s  # tokens of samples that were voted (not the spare ones generated ahead)
    out = {
        "batch": args.k,
        "peak_tokens_per_s": round(peak, 1),
        "in_run_tokens_per_s": round(in_run, 1),
        "utilization": round(in_run / peak, 3),
        "voted_tokens_per_s": round(voted, 1),
        "voted_utilization": round(voted / peak, 3),
        "spare_samples_per_step": round(s.spare_samples / s.steps, 3),
        "backend_busy_share": round((backend.busy_s - before_busy) / s.wall_s, 3),
        "prefix_tokens_reused": backend.reused_tokens,
        "target": 0.7,
        "run_steps": s.steps,
        "run_errors": s.errors,
        "run_calls_per_step": round(s.calls_per_step, 3),
        "run_wall_s": s.wall_s,
    }
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
