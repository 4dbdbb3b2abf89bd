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
from typing import Any, Literal, cast

from pydantic import BaseModel

from maker._rng import derive, mix64
from maker.agents import JudgeRequest, Judging, Oracle, digit_score, make_agent
from maker.dsl import MicrostepCall, Workflow
from maker.engine import Decider, calls_of, flag_reason
from maker.errors import UserError
from maker.planning._calibrate import Calibration, _one_sample, _pick_states, calibrate
from maker.planning._speculation import Ensemble, SpeculationEstimate, smallest_ensemble, speculation_estimate
from maker.stats import wilson_interval

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
    large = None
    if agent is not None:
        large = calibrate(
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
    p = wf_cls.parse_params(params)
    wf = wf_cls()
    states, steps_in_task = _pick_states(wf, p, samples, seed, max_walk)
    if not states:
        raise UserError(f"workflow {wf_cls.name!r} with these parameters has no steps")
    ver = make_agent(verifier_spec)
    dra = make_agent(drafter) if drafter is not None else None
    if mode == "score" and not hasattr(ver.backend, "judge"):
        raise UserError(
            f"verifier {verifier_spec!r} cannot rate drafts (its backend has no judge); verify by vote instead"
        )
    d_base, v_base = derive(seed, 0xD4AF7), derive(seed, 0x5E1F1)
    picks = [(i, states[i % len(states)]) for i in range(samples)]
    right = wrong = acc_right = acc_wrong = v_answers = v_valid = v_correct = d_right = d_total = 0
    flagged: Counter[str] = Counter()

    def one_call(i: int, state: Any) -> tuple[MicrostepCall, Any]:
        expected: Any  # one answer, or a fan-out's list of them
        asked, expected = wf.next(state), wf.oracle(state)
        if type(asked) is MicrostepCall:
            return asked, expected
        calls = calls_of(asked) or []  # a fan-out: one of its calls, in turn
        return calls[i % len(calls)], expected[i % len(calls)]

    async def run() -> None:
        nonlocal right, wrong, acc_right, acc_wrong, v_answers, v_valid, v_correct, d_right, d_total
        try:
            for start in range(0, len(picks), batch):
                group = [(i, *one_call(i, state)) for i, state in picks[start : start + batch]]
                # drafts: the drafter's, or alternately the right answer and a plausible mistake
                if dra is not None:
                    reqs = [
                        _one_sample(
                            call, expected, i, call.microstep.voting.first_temperature, mix64(d_base + i), max_tokens
                        )
                        for i, call, expected in group
                    ]
                    drafts = [(s.text, s.tokens) for (s,) in await dra.backend.generate(reqs)]
                else:
                    drafts = [
                        (
                            call.microstep.render(
                                expected
                                if i % 2 == 0
                                else call.microstep.mistake(expected, (i // 2) % 3, call.inputs or {})
                            ),
                            0,
                        )
                        for i, call, expected in group
                    ]
                judged = []  # (i, call, expected, draft text, parsed draft, right)
                for (i, call, expected), (text, tokens) in zip(group, drafts, strict=True):
                    ms = call.microstep
                    parsed = Decider.read(ms, text, tokens, max_tokens or ms.max_tokens, call.inputs)
                    if parsed.flag is not None:
                        flagged[flag_reason(parsed.flag)] += 1
                        continue
                    is_right = parsed.key == ms.vote_key(expected)
                    d_total += 1
                    d_right += int(is_right)
                    judged.append((i, call, expected, text, parsed, is_right))
                if mode == "score":
                    reqs_j = [
                        JudgeRequest(
                            call.prompt, text, mix64(v_base + i), Oracle(call.microstep, expected, i, call.inputs)
                        )
                        for i, call, expected, text, _, _ in judged
                    ]
                    # the check above turned away a backend without judge in score mode
                    digits = await cast(Judging, ver.backend).judge(reqs_j) if reqs_j else []
                    verdicts: list[bool | None] = [digit_score(d, score_by) >= threshold for d in digits]
                else:
                    reqs_v = [
                        _one_sample(
                            call,
                            expected,
                            i,
                            call.microstep.voting.temperature if temperature is None else temperature,
                            mix64(v_base + i),
                            max_tokens,
                        )
                        for i, call, expected, _, _, _ in judged
                    ]
                    answers = await ver.backend.generate(reqs_v) if reqs_v else []
                    verdicts = []
                    for (_, call, expected, _, parsed, _), (s,) in zip(judged, answers, strict=True):
                        ms = call.microstep
                        a = Decider.read(ms, s.text, s.tokens, max_tokens or ms.max_tokens, call.inputs)
                        v_answers += 1
                        if a.flag is not None:  # a run skips it and asks again: neither agreement nor not
                            verdicts.append(None)
                            continue
                        v_valid += 1
                        v_correct += int(a.key == ms.vote_key(expected))
                        verdicts.append(a.key == parsed.key)
                for (*_, is_right), ok in zip(judged, verdicts, strict=True):
                    if ok is None:
                        continue
                    if is_right:
                        right += 1
                        acc_right += int(ok)
                    else:
                        wrong += 1
                        acc_wrong += int(ok)
                if on_progress:
                    on_progress(min(start + batch, len(picks)), len(picks))
        finally:
            await ver.backend.aclose()
            if dra is not None and dra.backend is not ver.backend:
                await dra.backend.aclose()

    asyncio.run(run())
    notes: list[str] = []
    tpr, tpr_low, tpr_high = _rate(acc_right, right)
    fpr, fpr_low, fpr_high = _rate(acc_wrong, wrong)
    d_p = d_low = d_high = d_valid = None
    if dra is not None:
        d_valid = d_total / samples
        d_p, d_low, d_high = _rate(d_right, d_total)
    elif drafter_p is not None:
        d_p = d_low = d_high = drafter_p
        d_valid = 1.0
    vp, vp_low, vp_high = _rate(v_correct, v_valid)
    policy = wf.microsteps[0].voting
    if large is not None and large.p is not None:
        large_p, k = large.p, large.k or policy.k
    else:
        large_p, k = 1.0, policy.k
        notes.append(
            "large model not measured (give --agent to measure it too): its escalated votes are counted "
            f"as error-free at k = {k}"
        )
    out: dict[str, Any] = dict(
        workflow=wf_cls.name,
        verifier=verifier_spec,
        drafter=drafter,
        mode=mode,
        threshold=threshold if mode == "score" else None,
        score_by=score_by if mode == "score" else None,
        samples=samples,
        steps_in_task=steps_in_task,
        right=right,
        accepted_right=acc_right,
        tpr=tpr,
        tpr_low=tpr_low,
        tpr_high=tpr_high,
        wrong=wrong,
        accepted_wrong=acc_wrong,
        fpr=fpr,
        fpr_low=fpr_low,
        fpr_high=fpr_high,
        drafts_flagged=dict(flagged),
        drafter_p=d_p,
        drafter_p_low=d_low,
        drafter_p_high=d_high,
        drafter_valid=d_valid,
        verifier_p=vp,
        verifier_p_low=vp_low,
        verifier_p_high=vp_high,
        verifier_valid=v_valid / v_answers if v_answers else None,
        large=large,
        large_p=large_p,
        k=k,
        verifiers=verifiers,
        verify_k=verify_k,
        target=target,
        estimate=None,
        estimate_pessimistic=None,
        ensemble=None,
        ensemble_pessimistic=None,
    )
    if d_p is None or d_low is None:
        notes.append("give --drafter (measured) or --drafter-p (assumed) for the estimate of a speculative run")
    elif not d_valid:
        notes.append("every draft was red-flagged: a speculative run would escalate every step")
    else:
        common: dict[str, Any] = dict(
            drafter_valid=d_valid,
            p=large_p,
            k=k,
            valid=large.valid_rate if large else 1.0,
            steps=steps_in_task,
            mode=mode,
        )
        verifier_valid = out["verifier_valid"] or 1.0
        if mode == "score":
            point: dict[str, Any] | None = dict(tpr=tpr, fpr=fpr) if tpr is not None and fpr is not None else None
            worst: dict[str, Any] = dict(
                tpr=tpr_low if tpr_low is not None else 0.0, fpr=fpr_high if fpr_high is not None else 1.0
            )
        else:
            point = dict(verifier_p=vp, verifier_valid=verifier_valid) if vp is not None else None
            worst = dict(verifier_p=vp_low if vp_low is not None else 0.0, verifier_valid=verifier_valid)
        if point is not None:
            out["estimate"] = speculation_estimate(
                drafter_p=d_p, verifiers=verifiers, verify_k=verify_k, **point, **common
            )
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
    if mode == "vote":
        notes.append(
            "vote mode: the estimate takes every wrong answer of the verifier to agree with a wrong draft "
            "(the worst case); FPR above is the agreement measured with these drafts"
        )
    if wrong and wrong < 30:
        notes.append(f"only {wrong} wrong drafts judged: the FPR interval is wide; sample more steps")
    out["notes"] = notes
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    return VerifierCalibration(**out)
