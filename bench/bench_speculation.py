"""Benchmark: speculative drafting against large-model-only voting, with simulated roles.

100,000 Hanoi steps (20 disks, stopped after 100,000 moves), the same seed for both runs:

* baseline: the large model (p = 0.998) votes every step, first-to-ahead-by-3;
* speculative: a small drafter (p = 0.9) drafts each step; verifiers (TPR 0.99, FPR 0.05 each,
  independent) rate it and the draft is accepted when all ``--verifiers`` accept; otherwise the
  large model votes as in the baseline.

Cost model (printed with the figures): a small-model call costs 1, a large-model generation
call 10; a verification is a prefill-only scoring pass of the large model (about one or two
decode tokens with the prompt cached), priced here as conservatively as a whole small call.

    python bench/bench_speculation.py [--steps 100000] [--verifiers 4] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.runs import start_run

LARGE = "simulated:p=0.998,seed=1"
DRAFTER = "simulated:p=0.9,seed=2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--verifiers", type=int, default=4)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    params = {"disks": 20, "steps": args.steps}
    verifiers = [f"simulated:tpr=0.99,fpr=0.05,seed={10 + i}" for i in range(args.verifiers)]
    with tempfile.TemporaryDirectory() as tmp:
        base = start_run("hanoi", params, {"agents": [LARGE], "k": args.k}, store=Path(tmp) / "b.sqlite")
        spec = start_run(
            "hanoi",
            params,
            {"agents": [LARGE], "k": args.k, "drafter": DRAFTER, "verifiers": verifiers, "verify_k": args.verifiers},
            store=Path(tmp) / "s.sqlite",
        )
    steps = base.steps

    def cost(s, large_calls: int, small_calls: int, verify_calls: int) -> float:
        return (10 * large_calls + small_calls + verify_calls) / s.steps

    b_large = base.agent_calls[f"agent 1: {LARGE}"]
    s_large = spec.agent_calls[f"agent 1: {LARGE}"]
    s_small = spec.agent_calls[f"drafter: {DRAFTER}"]
    s_verify = sum(n for label, n in spec.agent_calls.items() if label.startswith("verifier"))
    out = {
        "steps": steps,
        "baseline_errors": base.errors,
        "speculative_errors": spec.errors,
        "baseline_large_calls_per_step": round(b_large / steps, 4),
        "speculative_large_calls_per_step": round(s_large / spec.steps, 4),
        "large_calls_ratio": round(b_large / max(1, s_large), 2),
        "drafts_accepted": round(spec.accepted / spec.steps, 4),
        "escalated": round(spec.escalated / spec.steps, 4),
        "small_calls_per_step": round(s_small / spec.steps, 4),
        "verifications_per_step": round(s_verify / spec.steps, 4),
        "baseline_cost_per_step": round(cost(base, b_large, 0, 0), 3),
        "speculative_cost_per_step": round(cost(spec, s_large, s_small, s_verify), 3),
        "cost_ratio": round(cost(base, b_large, 0, 0) / cost(spec, s_large, s_small, s_verify), 2),
        "baseline_wall_s": base.wall_s,
        "speculative_wall_s": spec.wall_s,
    }
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
