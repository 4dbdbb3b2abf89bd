"""``maker calibrate``: measure an agent's per-sample correct rate before a run (MAKER section 4).

Steps are chosen at random (seeded) along the workflow's ground-truth chain; each gets one
sample at the voting temperature; the report gives p among valid responses with a 95%
Wilson interval, the red-flag rate, tokens per call, and the k and cost a full run needs.
A verifier is measured by :mod:`maker.planning._calibrate_verifier`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from maker._rng import derive, mix64
from maker.agents import GenerateRequest, Oracle, make_agent
from maker.dsl import Done, MicrostepCall, Workflow
from maker.engine import Decider, calls_of, flag_reason
from maker.errors import UserError
from maker.stats import expected_calls, k_min, run_success, wilson_interval

__all__ = ["Calibration", "calibrate"]


class Calibration(BaseModel):
    """What ``maker calibrate`` reports."""

    workflow: str
    agent: str
    samples: int
    steps_in_task: int
    temperature: float
    correct: int
    valid: int
    p: float | None
    p_low: float | None
    p_high: float | None
    valid_rate: float
    red_flags: dict[str, int]
    tokens_per_call: float
    target: float
    k: int | None
    calls_per_step: float | None
    calls_total: float | None
    p_full: float | None
    note: str | None = None
    wall_s: float = 0.0
    by_microstep: dict[str, dict[str, Any]] = {}
    """Per microstep: samples, valid, correct, valid_rate and p (where any was valid)."""


def _one_sample(
    call: MicrostepCall, expected: Any, index: int, temperature: float, seed: int, max_tokens: int | None
) -> GenerateRequest:
    """A request for one sample of ``call`` (the ``index``-th call measured), as a run would ask it: the
    microstep's stop strings, pattern and token limit (``max_tokens`` overrides the limit)."""
    ms = call.microstep
    return GenerateRequest(
        call.prompt,
        [temperature],
        [seed],
        max_tokens or ms.max_tokens,
        ms.stop,
        False,
        Oracle(ms, expected, index, call.inputs),
        ms.pattern,
    )


def _pick_states(wf: Workflow[Any, Any], params: BaseModel, n: int, seed: int, max_walk: int) -> tuple[list[Any], int]:
    """Walk the ground-truth chain and keep ``n`` states chosen uniformly (reservoir sampling)."""
    rng = random.Random(seed)
    state = wf.start(params)
    chosen: list[tuple[int, Any]] = []
    step = 0
    while step < max_walk:
        call = wf.next(state)
        if isinstance(call, Done):
            break
        if len(chosen) < n:
            chosen.append((step, state))
        else:
            j = rng.randrange(step + 1)
            if j < n:
                chosen[j] = (step, state)
        state = wf.apply(state, wf.oracle(state))
        step += len(calls_of(call) or ())
    chosen.sort(key=lambda x: x[0])
    return [s for _, s in chosen], step


def calibrate(
    workflow: str | type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    agent_spec: str,
    *,
    samples: int = 100,
    temperature: float | None = None,
    target: float = 0.95,
    seed: int = 0,
    batch: int = 16,
    max_walk: int = 2_000_000,
    max_tokens: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    from maker.runs import resolve_workflow

    t0 = time.perf_counter()
    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    if not wf_cls.has_oracle():
        raise UserError(f"workflow {wf_cls.name!r} has no oracle(state), so answers cannot be checked")
    if samples < 1:
        raise UserError(f"`samples` must be at least 1, got {samples}")
    p = wf_cls.parse_params(params)
    wf = wf_cls()
    states, steps_in_task = _pick_states(wf, p, samples, seed, max_walk)
    if not states:
        raise UserError(f"workflow {wf_cls.name!r} with these parameters has no steps")
    agent = make_agent(agent_spec)
    base = derive(seed, 0xCA1)
    correct = valid = tokens = 0
    flags: Counter[str] = Counter()
    by: dict[str, list[int]] = {}  # microstep -> [samples, valid, correct]
    jobs = [(i, s) for i, s in enumerate(states)]
    # One sample per chosen step, `samples` in all: steps are cycled if the task is shorter.
    picks = [jobs[i % len(jobs)] for i in range(samples)]

    async def run() -> None:
        nonlocal correct, valid, tokens
        try:
            for start in range(0, len(picks), batch):
                group = picks[start : start + batch]
                reqs, meta = [], []
                for i, (j, state) in enumerate(group):
                    asked = wf.next(state)
                    expected: Any = wf.oracle(state)  # one answer, or a fan-out's list of them
                    if type(asked) is MicrostepCall:
                        call = asked
                    else:  # a fan-out: one of its calls, in turn
                        calls = calls_of(asked) or []
                        pick = (start + i) % len(calls)
                        call, expected = calls[pick], expected[pick]
                    temp = call.microstep.voting.temperature if temperature is None else temperature
                    reqs.append(_one_sample(call, expected, j, temp, mix64(base + start + i), max_tokens))
                    meta.append((call, expected))
                results = await agent.backend.generate(reqs)
                for (call, expected), (sample,) in zip(meta, results, strict=True):
                    ms = call.microstep
                    tokens += sample.tokens
                    parsed = Decider.read(ms, sample.text, sample.tokens, max_tokens or ms.max_tokens, call.inputs)
                    mine = by.setdefault(ms.name, [0, 0, 0])
                    mine[0] += 1
                    if parsed.flag is not None:
                        flags[flag_reason(parsed.flag)] += 1
                        continue
                    right = int(parsed.key == ms.vote_key(expected))
                    valid += 1
                    correct += right
                    mine[1] += 1
                    mine[2] += right
                if on_progress:
                    on_progress(min(start + batch, len(picks)), len(picks))
        finally:
            await agent.backend.aclose()

    asyncio.run(run())
    n = len(picks)
    temp_used = wf.microsteps[0].voting.temperature if temperature is None else temperature
    out: dict[str, Any] = dict(
        workflow=wf_cls.name,
        agent=agent_spec,
        samples=n,
        steps_in_task=steps_in_task,
        temperature=temp_used,
        correct=correct,
        valid=valid,
        valid_rate=valid / n,
        red_flags=dict(flags),
        tokens_per_call=tokens / n,
        target=target,
        p=None,
        p_low=None,
        p_high=None,
        k=None,
        calls_per_step=None,
        calls_total=None,
        p_full=None,
    )
    if valid:
        rate = correct / valid
        low, high = wilson_interval(correct, valid)
        out.update(p=rate, p_low=low, p_high=high)
        if rate > 0.5 and rate < 1.0:
            k = k_min(steps_in_task, rate, target)
            calls = expected_calls(rate, k, valid / n)
            out.update(
                k=k, calls_per_step=calls, calls_total=calls * steps_in_task, p_full=run_success(rate, k, steps_in_task)
            )
            if low <= 0.5:
                out["note"] = "the 95% interval reaches 0.5: measure more samples before trusting k"
        elif rate == 1.0:
            out.update(
                k=1,
                calls_per_step=1 / (valid / n),
                calls_total=steps_in_task / (valid / n),
                p_full=None,
                note="no error seen: k cannot be estimated; measure more samples (k >= 2 is prudent)",
            )
        else:
            out["note"] = (
                "p <= 0.5: voting cannot converge on this formulation; change the prompt, model or temperature"
            )
    else:
        out["note"] = "every response was red-flagged"
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    out["by_microstep"] = {
        name: {"samples": n_, "valid": v, "correct": c, "valid_rate": v / n_, "p": c / v if v else None}
        for name, (n_, v, c) in sorted(by.items())
    }
    return Calibration(**out)


# -- verifiers ---------------------------------------------------------------------------------------
