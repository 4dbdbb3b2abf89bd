"""Benchmark: the log-probability verifier (``--verify logprob``, SpecGuard) against score-based verification, at
the same error target, side by side in one run, with simulated roles.

Hanoi (14 disks: 16,383 steps), large model p = 0.998 voting first-to-ahead-by-3, drafter p = 0.9, target: a 0.95
chance of a fully correct run. Each setting is the cheapest of its kind that the estimate says meets the target:

* ``score``: verifiers of TPR 0.99 and FPR 0.05 (the large model rating the draft in one prefill pass), as many as
  must all accept (the smallest unanimous ensemble);
* ``logprob``: the drafter's own minimum token log-probability, at the threshold (of the calibration grid) that
  meets the target at the fewest large-model calls, for simulated log-probabilities of AUC 0.92 (``lp_sep=2``) and
  0.98 (``lp_sep=3``), with one draft or a voted one (``--draft-k 2``).

Printed per setting: the estimate's and the run's wrong steps, large-model generation calls per step, large-model
verifications per step (prefill-only ratings; none in logprob mode), and the share of drafts accepted.

    python bench/bench_logprob.py [--disks 14] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.agents import SimulatedConfig
from maker.planning import THRESHOLD_GRID, choose_threshold, smallest_ensemble, speculation_estimate
from maker.runs import start_run

LARGE = "simulated:p=0.998,seed=1"
P, K, DRAFTER_P, TARGET = 0.998, 3, 0.9, 0.95


def _logprob_setting(sep: float, steps: int, draft_k: int) -> tuple[float | None, Any]:
    cfg = SimulatedConfig.from_options(None, {"lp_sep": sep})
    rows = []
    for t in THRESHOLD_GRID:
        tpr, fpr = cfg.min_logprob_rates(t)
        est = speculation_estimate(
            drafter_p=DRAFTER_P, p=P, k=K, steps=steps, mode="logprob", tpr=tpr, fpr=fpr, draft_k=draft_k
        )
        rows.append((t, est))
    pick = choose_threshold(rows, TARGET)
    return pick.threshold, pick.estimate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disks", type=int, default=14)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    steps = 2**args.disks - 1
    params = {"disks": args.disks}
    out: dict[str, Any] = {"steps": steps, "target": TARGET}
    ens = smallest_ensemble(drafter_p=DRAFTER_P, p=P, k=K, steps=steps, target=TARGET, tpr=0.99, fpr=0.05)
    n = ens.unanimous or 1
    settings: list[tuple[str, dict[str, Any], Any]] = [
        (
            f"score x{n}",
            {"verifiers": [f"simulated:tpr=0.99,fpr=0.05,seed={10 + i}" for i in range(n)], "verify_k": n},
            speculation_estimate(
                drafter_p=DRAFTER_P, p=P, k=K, steps=steps, tpr=0.99, fpr=0.05, verifiers=n, verify_k=n
            ),
        )
    ]
    for sep, dk in ((2.0, 1), (2.0, 2), (3.0, 1), (3.0, 2)):
        t, est = _logprob_setting(sep, steps, dk)
        if t is None:
            out[f"logprob sep {sep:g} draft-k {dk}"] = "no threshold meets the target"
            continue
        opts = {"verify": "logprob", "logprob_threshold": t, "draft_k": dk, "sep": sep}
        settings.append((f"logprob sep {sep:g} draft-k {dk} at {t:g}", opts, est))
    with tempfile.TemporaryDirectory() as tmp:
        base = start_run("hanoi", params, {"agents": [LARGE], "k": K}, store=Path(tmp) / "b.sqlite")
        out["voting: wrong steps"] = base.errors
        out["voting: large calls/step"] = round(base.agent_calls[f"agent 1: {LARGE}"] / base.steps, 3)
        for i, (label, opts, est) in enumerate(settings):
            sep = opts.pop("sep", 2.0)
            drafter = f"simulated:p={DRAFTER_P},seed=2,lp_sep={sep:g}"
            s = start_run(
                "hanoi",
                params,
                {"agents": [LARGE], "k": K, "drafter": drafter, **opts},
                store=Path(tmp) / f"s{i}.sqlite",
            )
            large = s.agent_calls[f"agent 1: {LARGE}"] / s.steps
            verify = sum(v for a, v in s.agent_calls.items() if a.startswith("verifier")) / s.steps
            out[f"{label}: wrong steps (estimate)"] = f"{s.errors} ({est.expected_wrong:.3f})"
            out[f"{label}: large calls/step (estimate)"] = f"{large:.3f} ({est.large_calls_per_step:.3f})"
            out[f"{label}: large verifications/step"] = round(verify, 3)
            out[f"{label}: drafts accepted"] = f"{s.accepted / s.steps:.1%} ({est.accept_rate:.1%})"
            out[f"{label}: wall s"] = s.wall_s
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
