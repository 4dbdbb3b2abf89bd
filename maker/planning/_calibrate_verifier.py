"""``maker calibrate --verifier``: a verifier's TPR and FPR on drafts of ground-truth steps, before a speculative run.

Steps are chosen along the workflow's ground-truth chain as :func:`maker.planning._calibrate.calibrate`
chooses them; each gets a draft (the drafter's, or alternately the right answer and a
plausible mistake) which the verifier judges the way a speculative run would. The report
gives TPR and FPR with 95% Wilson intervals and what they mean for a speculative run of the
whole task (:mod:`maker.planning._speculation`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel

from maker._rng import derive, mix64
from maker.agents import Agent, JudgeRequest, Judging, Oracle, digit_score, make_agent
from maker.dsl import MicrostepCall, Workflow
from maker.errors import UserError
from maker.planning._calibrate import Calibration, call_at, drafts_bench, one_sample, read_answer
from maker.planning._speculation import Ensemble, SpeculationEstimate, smallest_ensemble, speculation_estimate
from maker.stats import wilson_interval
from maker.voting import Voting

__all__ = ["VerifierCalibration", "calibrate_verifier"]


class VerifierCalibration(BaseModel):
    """What ``maker calibrate --verifier`` reports: the verifier's TPR and FPR on ground-truth steps, the drafter's
    p (with ``--drafter``), and what they mean for a speculative run of the whole task."""

    workflow: str
    verifier: str
    drafter: str | None
    """The drafter whose drafts were judged; None: alternately the right answer and a plausible mistake."""
    mode: Literal["score", "vote"]
    threshold: float | None
    """Score mode: a verifier accepts at or above this score."""
    score_by: Literal["expected", "greedy"] | None
    samples: int
    """Steps sampled, one draft each."""
    steps_in_task: int
    right: int
    """Right drafts judged."""
    accepted_right: int
    tpr: float | None
    tpr_low: float | None
    tpr_high: float | None
    wrong: int
    """Wrong drafts judged."""
    accepted_wrong: int
    fpr: float | None
    fpr_low: float | None
    fpr_high: float | None
    drafts_flagged: dict[str, int]
    """Red-flagged drafts by reason: not drafts (a run escalates them), so neither right nor wrong."""
    drafter_p: float | None
    """Drafter's correct rate among valid drafts (measured with ``--drafter``, else as given)."""
    drafter_p_low: float | None
    drafter_p_high: float | None
    drafter_valid: float | None
    verifier_p: float | None
    """Vote mode: the verifier's own correct rate among its valid answers, over every sampled step."""
    verifier_p_low: float | None
    verifier_p_high: float | None
    verifier_valid: float | None
    """Vote mode: the verifier's share of answers not red-flagged (a run skips the others)."""
    large: Calibration | None
    """The large model measured too (``--agent``); without it the estimate counts its votes as error-free."""
    large_p: float
    k: int
    """The large model's voting margin used in the estimate."""
    verifiers: int
    verify_k: int
    target: float
    estimate: SpeculationEstimate | None
    """The speculative run at the measured rates (None when a rate could not be measured or the drafter's p is
    unknown)."""
    estimate_pessimistic: SpeculationEstimate | None
    """The same at the pessimistic ends of the 95% intervals (lower TPR and drafter p, upper FPR)."""
    ensemble: Ensemble | None
    """Smallest ensembles meeting ``target`` at the measured rates."""
    ensemble_pessimistic: Ensemble | None
    """... and at the pessimistic ends of the intervals: the safe choice."""
    notes: list[str] = []
    wall_s: float = 0.0


def _rate(hits: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    low, high = wilson_interval(hits, n)
    return hits / n, low, high


@dataclass
class VerdictTally:
    """What :func:`calibrate_verifier` counts, fed each draft, each of the verifier's own answers (vote mode) and
    each verdict as they come."""

    right: int = 0
    """Right drafts judged (given a verdict)."""
    accepted_right: int = 0
    wrong: int = 0
    """Wrong drafts judged (given a verdict)."""
    accepted_wrong: int = 0
    drafts_valid: int = 0
    """Drafts not red-flagged."""
    drafts_right: int = 0
    """... of them right."""
    drafts_flagged: Counter[str] = field(default_factory=Counter)
    """Red-flagged drafts by reason: neither right nor wrong, and not judged."""
    verifier_answers: int = 0
    """Vote mode: the verifier's own answers."""
    verifier_valid: int = 0
    """... of them not red-flagged."""
    verifier_correct: int = 0
    """... of those right."""

    def draft(self, flag: str | None, right: bool) -> None:
        """A draft: its red flag's reason (None: valid) and whether it is right (read only when valid)."""
        if flag is not None:
            self.drafts_flagged[flag] += 1
            return
        self.drafts_valid += 1
        self.drafts_right += int(right)

    def answer(self, flag: str | None, correct: bool) -> None:
        """Vote mode: one of the verifier's own answers, its red flag's reason (None: valid) and whether it is
        right (read only when valid)."""
        self.verifier_answers += 1
        if flag is None:
            self.verifier_valid += 1
            self.verifier_correct += int(correct)

    def verdict(self, right: bool, accepted: bool | None) -> None:
        """The verdict on a valid draft, right or wrong: accepted or not, or None where the verifier gave none
        (a red-flagged answer in vote mode: a run asks again)."""
        if accepted is None:
            return
        if right:
            self.right += 1
            self.accepted_right += int(accepted)
        else:
            self.wrong += 1
            self.accepted_wrong += int(accepted)

    @property
    def tpr(self) -> tuple[float | None, float | None, float | None]:
        """The share of right drafts accepted, with its 95% interval (Nones when none was judged)."""
        return _rate(self.accepted_right, self.right)

    @property
    def fpr(self) -> tuple[float | None, float | None, float | None]:
        """The share of wrong drafts accepted, with its 95% interval."""
        return _rate(self.accepted_wrong, self.wrong)

    @property
    def drafter_p(self) -> tuple[float | None, float | None, float | None]:
        """The drafter's correct rate among its valid drafts, with its 95% interval."""
        return _rate(self.drafts_right, self.drafts_valid)

    @property
    def verifier_p(self) -> tuple[float | None, float | None, float | None]:
        """Vote mode: the verifier's correct rate among its valid answers, with its 95% interval."""
        return _rate(self.verifier_correct, self.verifier_valid)

    @property
    def verifier_valid_rate(self) -> float | None:
        """Vote mode: the verifier's share of answers not red-flagged (None without answers)."""
        return self.verifier_valid / self.verifier_answers if self.verifier_answers else None


@dataclass(frozen=True)
class _Bench:
    """How the drafts of a calibration are made and judged."""

    wf: Workflow[Any, Any]
    verifier: Agent
    drafter: Agent | None
    """None: alternately the right answer and a plausible mistake."""
    mode: Literal["score", "vote"]
    threshold: float
    score_by: Literal["expected", "greedy"]
    temperature: float | None
    max_tokens: int | None
    draft_base: int
    verify_base: int


@dataclass(frozen=True, slots=True)
class _Draft:
    """A valid draft of the ``index``-th step measured, to be judged."""

    index: int
    call: MicrostepCall
    expected: Any
    text: str
    key: Any
    right: bool


def calibrate_verifier(
    workflow: str | type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    verifier_spec: str,
    *,
    drafter: str | None = None,
    drafter_p: float | None = None,
    agent: str | None = None,
    mode: Literal["score", "vote"] = "score",
    threshold: float = 7.0,
    score_by: Literal["expected", "greedy"] = "expected",
    verifiers: int = 1,
    verify_k: int = 1,
    samples: int = 200,
    temperature: float | None = None,
    target: float = 0.95,
    seed: int = 0,
    batch: int = 16,
    max_walk: int = 2_000_000,
    max_tokens: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> VerifierCalibration:
    """Measure a verifier's TPR and FPR on ground-truth steps, judged as a speculative run judges drafts.

    Each sampled step gets a draft: the ``drafter``'s (at the microstep's first temperature, as a run drafts; a
    red-flagged draft is counted apart), else alternately the right answer and one of the workflow's plausible
    mistakes. ``score`` mode rates it through the verifier's ``judge`` and accepts at ``threshold``; ``vote`` mode
    has the verifier answer the step (at ``temperature``, default the microstep's voting temperature) and
    accepts when the answers share a vote key. ``agent``: also measure the large model (:func:`calibrate`) for
    the run's estimate. ``verifiers``, ``verify_k``: the setting the estimate is for.
    """
    from maker.runs import resolve_workflow

    t0 = time.perf_counter()
    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    if not wf_cls.has_oracle():
        raise UserError(f"workflow {wf_cls.name!r} has no oracle(state), so drafts cannot be labelled right or wrong")
    _check_options(samples, drafter, drafter_p, mode, verifiers, verify_k)
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
    bench = _make_bench(wf, verifier_spec, drafter, mode, threshold, score_by, temperature, max_tokens, seed)
    tally = asyncio.run(_judge_all(bench, [state for _, state in picks], batch, on_progress))
    return _report(
        tally,
        large,
        wf.microsteps[0].voting,
        workflow=wf_cls.name,
        verifier=verifier_spec,
        drafter=drafter,
        drafter_p=drafter_p,
        mode=mode,
        threshold=threshold,
        score_by=score_by,
        samples=samples,
        steps_in_task=steps_in_task,
        verifiers=verifiers,
        verify_k=verify_k,
        target=target,
        t0=t0,
    )


def _check_options(
    samples: int, drafter: str | None, drafter_p: float | None, mode: str, verifiers: int, verify_k: int
) -> None:
    """UserError for options that contradict each other or could measure nothing."""
    if samples < 1:
        raise UserError(f"`samples` must be at least 1, got {samples}")
    if drafter is not None and drafter_p is not None:
        raise UserError("give a drafter to measure its p (`drafter`) or a p to assume (`drafter_p`), not both")
    if drafter_p is not None and not 0.0 <= drafter_p <= 1.0:
        raise UserError(f"`drafter_p` is a rate in [0, 1], got {drafter_p}")
    if verifiers < 1 or verify_k < 1:
        raise UserError(f"need at least one verifier and `verify_k` >= 1, got {verifiers} and {verify_k}")
    if mode == "score" and verify_k > verifiers:
        raise UserError(
            f"`verify_k` {verify_k} is more than the {verifiers} verifier(s): no draft could ever be accepted"
        )


def _make_bench(
    wf: Workflow[Any, Any],
    verifier_spec: str,
    drafter: str | None,
    mode: Literal["score", "vote"],
    threshold: float,
    score_by: Literal["expected", "greedy"],
    temperature: float | None,
    max_tokens: int | None,
    seed: int,
) -> _Bench:
    """The agents and settings that draft and judge; UserError for a verifier that cannot rate in score mode."""
    ver = make_agent(verifier_spec)
    dra = make_agent(drafter) if drafter is not None else None
    if mode == "score" and not hasattr(ver.backend, "judge"):
        raise UserError(
            f"verifier {verifier_spec!r} cannot rate drafts (its backend has no judge); verify by vote instead"
        )
    return _Bench(
        wf, ver, dra, mode, threshold, score_by, temperature, max_tokens, derive(seed, 0xD4AF7), derive(seed, 0x5E1F1)
    )


async def _judge_all(
    bench: _Bench, states: list[Any], batch: int, on_progress: Callable[[int, int], None] | None
) -> VerdictTally:
    """Draft and judge one step of each state (the ``i``-th measured as the ``i``-th of ``states``), ``batch``
    steps at a time; closes the agents' backends."""
    tally = VerdictTally()
    try:
        for start in range(0, len(states), batch):
            group = [(i, *call_at(bench.wf, state, i)) for i, state in enumerate(states[start : start + batch], start)]
            drafts = await _make_drafts(bench, group)
            judged = _read_drafts(bench, group, drafts, tally)
            if bench.mode == "score":
                verdicts = await _judge_by_score(bench, judged)
            else:
                verdicts = await _judge_by_vote(bench, judged, tally)
            for draft, accepted in zip(judged, verdicts, strict=True):
                tally.verdict(draft.right, accepted)
            if on_progress:
                on_progress(min(start + batch, len(states)), len(states))
    finally:
        await bench.verifier.backend.aclose()
        if bench.drafter is not None and bench.drafter.backend is not bench.verifier.backend:
            await bench.drafter.backend.aclose()
    return tally


async def _make_drafts(bench: _Bench, group: list[tuple[int, MicrostepCall, Any]]) -> list[tuple[str, int]]:
    """A draft of each call, ``(text, tokens)``: the drafter's at the microstep's first temperature, or
    alternately the right answer and a plausible mistake."""
    if bench.drafter is not None:
        reqs = [
            one_sample(
                call,
                expected,
                i,
                call.microstep.voting.first_temperature,
                mix64(bench.draft_base + i),
                bench.max_tokens,
            )
            for i, call, expected in group
        ]
        return [(s.text, s.tokens) for (s,) in await bench.drafter.backend.generate(reqs)]
    return [
        (
            call.microstep.render(
                expected if i % 2 == 0 else call.microstep.mistake(expected, (i // 2) % 3, call.inputs or {})
            ),
            0,
        )
        for i, call, expected in group
    ]


def _read_drafts(
    bench: _Bench, group: list[tuple[int, MicrostepCall, Any]], drafts: list[tuple[str, int]], tally: VerdictTally
) -> list[_Draft]:
    """The valid drafts, labelled right or wrong; each draft counted in ``tally``."""
    judged = []
    for (i, call, expected), (text, tokens) in zip(group, drafts, strict=True):
        flag, key = read_answer(call, text, tokens, bench.max_tokens)
        right = flag is None and key == call.microstep.vote_key(expected)
        tally.draft(flag, right)
        if flag is None:
            judged.append(_Draft(i, call, expected, text, key, right))
    return judged


async def _judge_by_score(bench: _Bench, judged: list[_Draft]) -> list[bool | None]:
    """Score mode: the verifier rates each draft and accepts it at the threshold."""
    reqs = [
        JudgeRequest(
            d.call.prompt,
            d.text,
            mix64(bench.verify_base + d.index),
            Oracle(d.call.microstep, d.expected, d.index, d.call.inputs),
        )
        for d in judged
    ]
    # calibrate_verifier turned away a backend without judge in score mode
    digits = await cast(Judging, bench.verifier.backend).judge(reqs) if reqs else []
    return [digit_score(x, bench.score_by) >= bench.threshold for x in digits]


async def _judge_by_vote(bench: _Bench, judged: list[_Draft], tally: VerdictTally) -> list[bool | None]:
    """Vote mode: the verifier answers each step itself and accepts the draft when the answers share a vote key;
    no verdict (None) where its answer is red-flagged (a run skips it and asks again). Its answers are counted in
    ``tally``."""
    reqs = [
        one_sample(
            d.call,
            d.expected,
            d.index,
            d.call.microstep.voting.temperature if bench.temperature is None else bench.temperature,
            mix64(bench.verify_base + d.index),
            bench.max_tokens,
        )
        for d in judged
    ]
    answers = await bench.verifier.backend.generate(reqs) if reqs else []
    verdicts: list[bool | None] = []
    for d, (s,) in zip(judged, answers, strict=True):
        flag, key = read_answer(d.call, s.text, s.tokens, bench.max_tokens)
        tally.answer(flag, flag is None and key == d.call.microstep.vote_key(d.expected))
        verdicts.append(None if flag is not None else key == d.key)
    return verdicts


def _drafter_rates(
    tally: VerdictTally, measured: bool, drafter_p: float | None, samples: int
) -> tuple[float | None, float | None, float | None, float | None]:
    """The drafter's p with its interval, and its valid rate: measured, assumed (``drafter_p``) or unknown."""
    if measured:
        d_p, d_low, d_high = tally.drafter_p
        return d_p, d_low, d_high, tally.drafts_valid / samples
    if drafter_p is not None:
        return drafter_p, drafter_p, drafter_p, 1.0
    return None, None, None, None


def _large_model(large: Calibration | None, policy: Voting, notes: list[str]) -> tuple[float, int]:
    """The large model's p and voting margin for the estimate: measured, or error-free at the workflow's k."""
    if large is not None and large.p is not None:
        return large.p, large.k or policy.k
    notes.append(
        "large model not measured (give --agent to measure it too): its escalated votes are counted "
        f"as error-free at k = {policy.k}"
    )
    return 1.0, policy.k


def _report(
    tally: VerdictTally,
    large: Calibration | None,
    policy: Voting,
    *,
    workflow: str,
    verifier: str,
    drafter: str | None,
    drafter_p: float | None,
    mode: Literal["score", "vote"],
    threshold: float,
    score_by: Literal["expected", "greedy"],
    samples: int,
    steps_in_task: int,
    verifiers: int,
    verify_k: int,
    target: float,
    t0: float,
) -> VerifierCalibration:
    """The report from the counts: the rates with their intervals, the speculative run they mean (for
    ``verifiers`` and ``verify_k``) and notes on what is missing or uncertain."""
    notes: list[str] = []
    large_p, k = _large_model(large, policy, notes)
    d_p, d_low, d_high, d_valid = _drafter_rates(tally, drafter is not None, drafter_p, samples)
    common: dict[str, Any] = dict(
        drafter_valid=d_valid, p=large_p, k=k, valid=large.valid_rate if large else 1.0, steps=steps_in_task, mode=mode
    )
    outlook = _outlook(tally, d_p, d_low, common, verifiers, verify_k, target, notes)
    if mode == "vote":
        notes.append(
            "vote mode: the estimate takes every wrong answer of the verifier to agree with a wrong draft "
            "(the worst case); FPR above is the agreement measured with these drafts"
        )
    if tally.wrong and tally.wrong < 30:
        notes.append(f"only {tally.wrong} wrong drafts judged: the FPR interval is wide; sample more steps")
    return VerifierCalibration(
        workflow=workflow,
        verifier=verifier,
        drafter=drafter,
        mode=mode,
        threshold=threshold if mode == "score" else None,
        score_by=score_by if mode == "score" else None,
        samples=samples,
        steps_in_task=steps_in_task,
        right=tally.right,
        accepted_right=tally.accepted_right,
        **_interval("tpr", tally.tpr),
        wrong=tally.wrong,
        accepted_wrong=tally.accepted_wrong,
        **_interval("fpr", tally.fpr),
        drafts_flagged=dict(tally.drafts_flagged),
        **_interval("drafter_p", (d_p, d_low, d_high)),
        drafter_valid=d_valid,
        **_interval("verifier_p", tally.verifier_p),
        verifier_valid=tally.verifier_valid_rate,
        large=large,
        large_p=large_p,
        k=k,
        verifiers=verifiers,
        verify_k=verify_k,
        target=target,
        **outlook,
        notes=notes,
        wall_s=round(time.perf_counter() - t0, 3),
    )


def _interval(name: str, rate: tuple[float | None, float | None, float | None]) -> dict[str, Any]:
    """A rate and its 95% interval as the report's fields ``name``, ``name_low`` and ``name_high``."""
    return {name: rate[0], f"{name}_low": rate[1], f"{name}_high": rate[2]}


def _outlook(
    tally: VerdictTally,
    d_p: float | None,
    d_low: float | None,
    common: dict[str, Any],
    verifiers: int,
    verify_k: int,
    target: float,
    notes: list[str],
) -> dict[str, Any]:
    """The speculative run's estimates and smallest ensembles, at the measured rates and at the pessimistic ends
    of their intervals (None where the drafter's p is unknown or the rates at the measured point are)."""
    out: dict[str, Any] = dict(estimate=None, estimate_pessimistic=None, ensemble=None, ensemble_pessimistic=None)
    if d_p is None or d_low is None:
        notes.append("give --drafter (measured) or --drafter-p (assumed) for the estimate of a speculative run")
        return out
    if not common["drafter_valid"]:
        notes.append("every draft was red-flagged: a speculative run would escalate every step")
        return out
    tpr, tpr_low, _ = tally.tpr
    fpr, _, fpr_high = tally.fpr
    vp, vp_low, _ = tally.verifier_p
    verifier_valid = tally.verifier_valid_rate or 1.0
    if common["mode"] == "score":
        point: dict[str, Any] | None = dict(tpr=tpr, fpr=fpr) if tpr is not None and fpr is not None else None
        worst: dict[str, Any] = dict(
            tpr=tpr_low if tpr_low is not None else 0.0, fpr=fpr_high if fpr_high is not None else 1.0
        )
    else:
        point = dict(verifier_p=vp, verifier_valid=verifier_valid) if vp is not None else None
        worst = dict(verifier_p=vp_low if vp_low is not None else 0.0, verifier_valid=verifier_valid)
    if point is not None:
        out["estimate"] = speculation_estimate(drafter_p=d_p, verifiers=verifiers, verify_k=verify_k, **point, **common)
        out["ensemble"] = smallest_ensemble(
            drafter_p=d_p, target=target, verifiers=verifiers, verify_k=verify_k, **point, **common
        )
    else:
        notes.append(
            "no right or no wrong draft was judged, so one rate is unknown: sample more steps "
            "(the pessimistic estimate takes it at its worst)"
        )
    out["estimate_pessimistic"] = speculation_estimate(
        drafter_p=d_low, verifiers=verifiers, verify_k=verify_k, **worst, **common
    )
    out["ensemble_pessimistic"] = smallest_ensemble(
        drafter_p=d_low, target=target, verifiers=verifiers, verify_k=verify_k, **worst, **common
    )
    return out
