"""``maker calibrate --verifier logprob``: how well a drafter's own token log-probabilities tell its right drafts from
its wrong ones, at each threshold of a grid, and the threshold to run at.

Steps are chosen along the workflow's ground-truth chain as :func:`maker.planning._calibrate.calibrate` chooses
them; the drafter drafts each one (asking for token log-probabilities, as a ``--verify logprob`` run does), and each
valid draft's statistic (minimum or mean log-probability) is kept with whether the draft is right. At each
threshold the TPR (right drafts accepted) and FPR (wrong drafts accepted) with 95% Wilson intervals give a
speculative run's per-step error and large-model calls (:func:`speculation_estimate` in ``logprob`` mode); the
recommended threshold meets the target chance of a fully correct run at the fewest large-model calls.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from maker._rng import derive, mix64
from maker.agents import make_agent, returns_logprobs
from maker.dsl import Workflow
from maker.engine import logprob_stat
from maker.errors import UserError
from maker.planning._calibrate import Calibration, call_at, drafts_bench, one_sample, read_answer
from maker.planning._logprob import THRESHOLD_GRID, choose_threshold
from maker.planning._speculation import SpeculationEstimate, speculation_estimate
from maker.stats import wilson_interval

__all__ = ["LogprobCalibration", "ThresholdRow", "calibrate_logprob", "auc"]


class ThresholdRow(BaseModel):
    """The log-probability check at one threshold."""

    threshold: float
    accepted_right: int
    accepted_wrong: int
    tpr: float | None
    tpr_low: float | None
    tpr_high: float | None
    fpr: float | None
    fpr_low: float | None
    fpr_high: float | None
    estimate: SpeculationEstimate | None
    """The speculative run at the measured rates (None where one of them is unknown)."""
    estimate_pessimistic: SpeculationEstimate | None
    """... at the pessimistic ends of the intervals (lower TPR and drafter p, upper FPR)."""


class LogprobCalibration(BaseModel):
    """What ``maker calibrate --verifier logprob`` reports."""

    workflow: str
    drafter: str
    stat: Literal["min", "mean"]
    temperature: float | None
    """Drafting temperature (None: each microstep's first temperature, as a run drafts)."""
    samples: int
    steps_in_task: int
    right: int
    """Valid right drafts."""
    wrong: int
    """Valid wrong drafts."""
    drafts_flagged: dict[str, int]
    drafter_p: float | None
    drafter_p_low: float | None
    drafter_p_high: float | None
    drafter_valid: float
    auc: float | None
    """Chance a right draft's statistic is above a wrong one's (ties count half): 0.5 tells nothing, 1 separates."""
    right_median: float | None
    """Median statistic of the right drafts."""
    wrong_median: float | None
    """Median statistic of the wrong drafts."""
    large: Calibration | None
    """The large model measured too (``--agent``); without it its votes are counted as error-free."""
    large_p: float
    k: int
    target: float
    rows: list[ThresholdRow]
    recommended: float | None
    """The threshold meeting ``target`` at the fewest large-model calls per step, at the measured rates."""
    recommended_pessimistic: float | None
    """The same at the pessimistic ends of the intervals: the safe choice (None: no threshold is safe enough at
    this sample size)."""
    notes: list[str] = []
    wall_s: float = 0.0


def auc(right: Sequence[float], wrong: Sequence[float]) -> float | None:
    """The Mann-Whitney AUC: the chance a right draft's statistic exceeds a wrong one's, ties counted half."""
    if not right or not wrong:
        return None
    ordered = sorted([(v, 1) for v in right] + [(v, 0) for v in wrong])
    # average ranks over ties, then U = rank sum of the right ones - n(n+1)/2
    rank_sum = 0.0
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(1 for _, r in ordered[i:j] if r)
        i = j
    n_r = len(right)
    return (rank_sum - n_r * (n_r + 1) / 2) / (n_r * len(wrong))


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def calibrate_logprob(
    workflow: str | type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    drafter: str,
    *,
    stat: Literal["min", "mean"] = "min",
    agent: str | None = None,
    samples: int = 200,
    temperature: float | None = None,
    target: float = 0.95,
    seed: int = 0,
    batch: int = 16,
    max_walk: int = 2_000_000,
    max_tokens: int | None = None,
    grid: Sequence[float] = THRESHOLD_GRID,
    on_progress: Callable[[int, int], None] | None = None,
) -> LogprobCalibration:
    """Measure the log-probability check's TPR and FPR at each threshold of ``grid`` on ``drafter``'s drafts of
    ground-truth steps, and recommend the threshold that meets ``target`` at the fewest large-model calls.
    ``agent``: also measure the large model (:func:`calibrate`) for the run's estimate."""
    from maker.runs import resolve_workflow

    t0 = time.perf_counter()
    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    if not wf_cls.has_oracle():
        raise UserError(f"workflow {wf_cls.name!r} has no oracle(state), so drafts cannot be labelled right or wrong")
    if samples < 1:
        raise UserError(f"`samples` must be at least 1, got {samples}")
    dra = make_agent(drafter)
    if not returns_logprobs(dra.backend):
        raise UserError(
            f"drafter {drafter} cannot return its tokens' log-probabilities, which the logprob verifier checks; "
            f"use a drafter that does (simulated, hf, vllm, openai)"
        )
    large, wf, picks, steps_in_task = drafts_bench(
        wf_cls,
        params,
        agent,
        samples=samples,
        temperature=temperature,
        target=target,
        seed=seed,
        batch=batch,
        max_walk=max_walk,
        max_tokens=max_tokens,
    )
    states = [state for _, state in picks]
    base = derive(seed, 0xD4AF7)
    right: list[float] = []
    wrong: list[float] = []
    flagged: Counter[str] = Counter()

    async def draft_all() -> None:
        try:
            for start in range(0, len(states), batch):
                group = [(i, *call_at(wf, s, i)) for i, s in enumerate(states[start : start + batch], start)]
                reqs = []
                for i, call, expected in group:
                    t = call.microstep.voting.first_temperature if temperature is None else temperature
                    req = one_sample(call, expected, i, t, mix64(base + i), max_tokens)
                    req.logprobs = True
                    reqs.append(req)
                out = await dra.backend.generate(reqs)
                for (_, call, expected), (s,) in zip(group, out, strict=True):
                    flag, key = read_answer(call, s.text, s.tokens, max_tokens)
                    if flag is not None:
                        flagged[flag] += 1
                        continue
                    value = logprob_stat(s.logprobs or [], stat)
                    (right if key == call.microstep.vote_key(expected) else wrong).append(value)
                if on_progress:
                    on_progress(min(start + batch, len(states)), len(states))
        finally:
            await dra.backend.aclose()

    asyncio.run(draft_all())
    notes: list[str] = []
    policy = wf.microsteps[0].voting
    if large is not None and large.p is not None:
        large_p, k = large.p, large.k or policy.k
    else:
        large_p, k = 1.0, policy.k
        notes.append(
            f"large model not measured (give --agent to measure it too): its escalated votes are counted as "
            f"error-free at k = {k}, so the recommendation is only as safe as that"
        )
    valid = len(right) + len(wrong)
    d_p, d_low, d_high = _rate(len(right), valid)
    common: dict[str, Any] = dict(
        drafter_valid=valid / samples if samples else 0.0,
        p=large_p,
        k=k,
        valid=large.valid_rate if large is not None else 1.0,
        steps=steps_in_task,
        mode="logprob",
    )
    rows = [_row(t, right, wrong, d_p, d_low, common) for t in grid]
    if not valid:
        notes.append("every draft was red-flagged: a speculative run would escalate every step")
    if len(wrong) < 30:
        notes.append(f"only {len(wrong)} wrong drafts: the FPR intervals are wide; sample more steps")
    point = choose_threshold([(r.threshold, r.estimate) for r in rows if r.estimate is not None], target)
    safe = choose_threshold(
        [(r.threshold, r.estimate_pessimistic) for r in rows if r.estimate_pessimistic is not None], target
    )
    if point.threshold is None:
        notes.append(
            f"no threshold reaches a {target} chance of a fully correct run (best {point.best_p_full:.4g}): vote the "
            "drafts (--draft-k), use a larger --k, or verify by score"
        )
    return LogprobCalibration(
        workflow=wf_cls.name,
        drafter=drafter,
        stat=stat,
        temperature=temperature,
        samples=samples,
        steps_in_task=steps_in_task,
        right=len(right),
        wrong=len(wrong),
        drafts_flagged=dict(flagged),
        drafter_p=d_p,
        drafter_p_low=d_low,
        drafter_p_high=d_high,
        drafter_valid=common["drafter_valid"],
        auc=auc(right, wrong),
        right_median=_median(right),
        wrong_median=_median(wrong),
        large=large,
        large_p=large_p,
        k=k,
        target=target,
        rows=rows,
        recommended=point.threshold,
        recommended_pessimistic=safe.threshold,
        notes=notes,
        wall_s=round(time.perf_counter() - t0, 3),
    )


def _rate(hits: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    low, high = wilson_interval(hits, n)
    return hits / n, low, high


def _row(
    t: float,
    right: list[float],
    wrong: list[float],
    d_p: float | None,
    d_low: float | None,
    common: dict[str, Any],
) -> ThresholdRow:
    """One threshold: the counts, the rates with their intervals, and the run they mean."""
    ar, aw = sum(v >= t for v in right), sum(v >= t for v in wrong)
    tpr, tpr_low, tpr_high = _rate(ar, len(right))
    fpr, fpr_low, fpr_high = _rate(aw, len(wrong))
    est = pess = None
    if d_p is not None and d_low is not None and common["drafter_valid"]:
        if tpr is not None and fpr is not None:
            est = speculation_estimate(drafter_p=d_p, tpr=tpr, fpr=fpr, **common)
        pess = speculation_estimate(
            drafter_p=d_low,
            tpr=tpr_low if tpr_low is not None else 0.0,
            fpr=fpr_high if fpr_high is not None else 1.0,
            **common,
        )
    return ThresholdRow(
        threshold=t,
        accepted_right=ar,
        accepted_wrong=aw,
        tpr=tpr,
        tpr_low=tpr_low,
        tpr_high=tpr_high,
        fpr=fpr,
        fpr_low=fpr_low,
        fpr_high=fpr_high,
        estimate=est,
        estimate_pessimistic=pess,
    )
