"""The log-probability verifier (``--verify logprob``, SpecGuard) before a run: its TPR and FPR where they are known,
the threshold to use, and the preflight estimate.

A draft is accepted when the minimum (or the mean) of its own token log-probabilities is at least a threshold; no
verifier is asked. Its TPR and FPR at a threshold come from ``maker calibrate --verifier logprob`` on ground truth,
or, for a simulated drafter and the minimum, exactly from its spec (``lp_sep``, ``lp_mu``). The run's error and
large-model calls then follow from :func:`maker.planning._speculation.speculation_estimate` in ``logprob`` mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from maker.planning._speculation import SpeculationEstimate, speculation_estimate

if TYPE_CHECKING:  # pragma: no cover
    from maker.runs import RunOptions

__all__ = ["THRESHOLD_GRID", "ThresholdChoice", "choose_threshold", "simulated_logprob_rates", "logprob_preflight"]

THRESHOLD_GRID: tuple[float, ...] = (
    -0.01,
    -0.02,
    -0.05,
    -0.1,
    -0.2,
    -0.3,
    -0.5,
    -0.75,
    -1.0,
    -1.5,
    -2.0,
    -3.0,
    -4.0,
    -5.0,
    -6.0,
    -8.0,
    -10.0,
    -15.0,
    -20.0,
)
"""The thresholds (log-probabilities) ``maker calibrate --verifier logprob`` measures and the preflight searches."""


class ThresholdChoice(BaseModel):
    """The threshold to run at: the one that meets the target at the fewest large-model calls per step."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    threshold: float | None
    """None: no threshold of the grid meets the target."""
    estimate: SpeculationEstimate | None
    """The run at that threshold."""
    best_p_full: float
    """The best chance of a fully correct run over the grid (what the target is measured against)."""


def choose_threshold(rows: Sequence[tuple[float, SpeculationEstimate]], target: float) -> ThresholdChoice:
    """Of ``(threshold, estimate)`` rows, the one whose ``p_full`` meets ``target`` at the fewest large-model calls
    per step (ties: the higher p_full). Accepting more drafts saves calls and lets more wrong ones through, so this
    is the loosest threshold that is still safe enough."""
    ok = [(t, e) for t, e in rows if e.p_full >= target]
    best = max((e.p_full for _, e in rows), default=0.0)
    if not ok:
        return ThresholdChoice(threshold=None, estimate=None, best_p_full=best)
    t, e = min(ok, key=lambda r: (r[1].large_calls_per_step, -r[1].p_full))
    return ThresholdChoice(threshold=t, estimate=e, best_p_full=best)


def simulated_logprob_rates(spec: str, stat: Literal["min", "mean"], threshold: float) -> tuple[float, float] | None:
    """``(TPR, FPR)`` of the log-probability check of a simulated drafter, exactly, for the minimum; None for a real
    model or for the mean (whose spread depends on the responses' lengths: measure it with calibrate)."""
    from maker.agents.simulated import SimulatedConfig
    from maker.agents.specs import parse_spec

    if stat != "min":
        return None
    try:
        kind, name, options = parse_spec(spec)
        if kind != "simulated":
            return None
        cfg = SimulatedConfig.from_options(name, options)
    except Exception:  # a bad spec fails the run itself, with its own message
        return None
    return cfg.min_logprob_rates(threshold)


def _fmt(x: float) -> str:
    return f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}"


def logprob_preflight(
    options: RunOptions,
    common: dict[str, Any] | None,
    expected_steps: int | None,
    *,
    target: float,
    workflow: str,
    large: Mapping[str, Any],
) -> tuple[str, float | None]:
    """The preflight lines of a ``--verify logprob`` run (see :func:`maker.planning.preflight`): the estimate at
    the check's known rates, and, when half a wrong step or more is expected, the threshold that meets ``target``.
    ``common``: the estimate's drafter, large-model and voting arguments (None: the drafter's p is unknown);
    ``large``: what is known of the large model's rates."""
    assert options.drafter is not None
    stat, threshold = options.logprob_stat, options.logprob_threshold
    rates = simulated_logprob_rates(options.drafter, stat, threshold)
    note = "" if "p" in large else f" (voting by {options.agents[0]} counted as error-free: its rate is unknown)"
    if rates is None or common is None:
        return (
            f"speculation estimate: the drafter's p and its log-probability check's TPR and FPR are unknown for "
            f"{options.drafter}; "
            f"measure them with `maker calibrate {workflow} --verifier logprob --drafter {options.drafter}"
            f"{' --logprob-stat mean' if stat == 'mean' else ''}` before a long run"
        ), None
    steps = expected_steps or 1
    est = speculation_estimate(steps=steps, mode="logprob", tpr=rates[0], fpr=rates[1], **common)
    how = f"{stat} token log-probability >= {threshold:g}: TPR {rates[0]:.4f}, FPR {rates[1]:.4f}"
    if expected_steps is None:
        return (
            f"speculation estimate ({how}): steps unknown, per-step error {est.step_error:.1e}; large-model calls "
            f"per step {est.large_calls_per_step:.2f} against {est.voting_calls_per_step:.2f} voting{note}"
        ), None
    text = (
        f"speculation estimate ({how}): {expected_steps:,} steps, per-step error {est.step_error:.1e}, expected "
        f"wrong steps {est.expected_wrong:.1f} (chance of a fully correct run {_fmt(est.p_full)}); large-model "
        f"calls per step {est.large_calls_per_step:.2f} against {est.voting_calls_per_step:.2f} voting{note}"
    )
    if est.expected_wrong >= 0.5:
        rows = []
        for t in THRESHOLD_GRID:
            r = simulated_logprob_rates(options.drafter, stat, t)
            assert r is not None
            rows.append((t, speculation_estimate(steps=steps, mode="logprob", tpr=r[0], fpr=r[1], **common)))
        pick = choose_threshold(rows, target)
        head = f"warning: expect {est.expected_wrong:.1f} wrong steps in this run"
        if pick.threshold is not None and pick.estimate is not None:
            text += (
                f"\n{head}; to reach a {target} chance of a fully correct run use `--logprob-threshold "
                f"{pick.threshold:g}` ({pick.estimate.large_calls_per_step:.2f} large-model calls per step)"
            )
        else:
            text += (
                f"\n{head}; no threshold reaches a {target} chance of a fully correct run (best "
                f"{_fmt(pick.best_p_full)}): vote the drafts (`--draft-k 2`), use a larger --k, or verify by score"
            )
    return text, est.expected_wrong
