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
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from maker._rng import derive, mix64
from maker.agents import Agent, GenerateRequest, Oracle, make_agent
from maker.agents.prices import Price
from maker.dsl import Done, MicrostepCall, Workflow
from maker.engine import Decider, calls_of, flag_reason, price_of
from maker.errors import UserError
from maker.planning._cost import cost_estimate
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
    prompt_tokens_per_call: float = 0.0
    """Prompt tokens a request sent: as the server reported them, else estimated at four characters a token."""
    usage_estimated: bool = True
    """Whether the token counts are estimated (the server reported no usage), not as billed."""
    price: list[float] | None = None
    """The agent's price, dollars per million ``[input, cached input, output]`` tokens (None: unknown)."""
    cost_per_step: float | None = None
    """Dollars a step of the run at ``k`` is expected to cost (one request a round; see
    :func:`maker.planning.cost_estimate`)."""
    cost_total: float | None = None
    """Dollars for the whole task."""
    target: float
    k: int | None
    calls_per_step: float | None
    calls_total: float | None
    p_full: float | None
    note: str | None = None
    wall_s: float = 0.0
    by_microstep: dict[str, dict[str, Any]] = {}
    """Per microstep: samples, valid, correct, valid_rate and p (where any was valid)."""


def one_sample(
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


def pick_states(wf: Workflow[Any, Any], params: BaseModel, n: int, seed: int, max_walk: int) -> tuple[list[Any], int]:
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


def choose_steps(
    wf: Workflow[Any, Any], params: BaseModel, samples: int, seed: int, max_walk: int
) -> tuple[list[tuple[int, Any]], int]:
    """The steps to measure, one per sample: ``(which chosen state, state)``, ``samples`` of them, the states
    chosen by :func:`pick_states` and cycled if the task is shorter; and the task's length in steps."""
    states, steps_in_task = pick_states(wf, params, samples, seed, max_walk)
    if not states:
        raise UserError(f"workflow {wf.name!r} with these parameters has no steps")
    return [(i % len(states), states[i % len(states)]) for i in range(samples)], steps_in_task


def call_at(wf: Workflow[Any, Any], state: Any, index: int) -> tuple[MicrostepCall, Any]:
    """The call measured at ``state`` and its right answer: the step's call, or of a fan-out's calls the
    ``index``-th (cycled), so that successive samples take its calls in turn."""
    asked = wf.next(state)
    expected: Any = wf.oracle(state)  # one answer, or a fan-out's list of them
    if type(asked) is MicrostepCall:
        return asked, expected
    calls = calls_of(asked) or []
    pick = index % len(calls)
    return calls[pick], expected[pick]


def read_answer(call: MicrostepCall, text: str, tokens: int, max_tokens: int | None) -> tuple[str | None, Any]:
    """A response to ``call`` read as a run reads it: ``(red flag's reason, None)`` or ``(None, vote key)``."""
    ms = call.microstep
    parsed = Decider.read(ms, text, tokens, max_tokens or ms.max_tokens, call.inputs)
    if parsed.flag is not None:
        return flag_reason(parsed.flag), None
    return None, parsed.key


@dataclass
class SampleTally:
    """What :func:`calibrate` counts, fed one sample at a time (:meth:`add`)."""

    samples: int = 0
    correct: int = 0
    """Valid samples that gave the right answer."""
    valid: int = 0
    """Samples not red-flagged."""
    tokens: int = 0
    prompt_tokens: int = 0
    reported: int = 0
    """Samples whose server reported their usage."""
    red_flags: Counter[str] = field(default_factory=Counter)
    """Red-flagged samples by reason."""
    by_microstep: dict[str, list[int]] = field(default_factory=dict)
    """Per microstep, in the order first seen: ``[samples, valid, correct]``."""

    def add(self, microstep: str, tokens: int, flag: str | None, right: bool) -> None:
        """One sample of ``microstep``: its tokens, its red flag's reason (None: valid) and whether it is right
        (read only when valid)."""
        mine = self.by_microstep.setdefault(microstep, [0, 0, 0])
        self.samples += 1
        self.tokens += tokens
        mine[0] += 1
        if flag is not None:
            self.red_flags[flag] += 1
            return
        self.valid += 1
        self.correct += int(right)
        mine[1] += 1
        mine[2] += int(right)


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
    picks, steps_in_task = choose_steps(wf, p, samples, seed, max_walk)
    agent = make_agent(agent_spec)
    tally = asyncio.run(_sample(agent, wf, picks, derive(seed, 0xCA1), temperature, batch, max_tokens, on_progress))
    temp_used = wf.microsteps[0].voting.temperature if temperature is None else temperature
    report = _report(wf_cls.name, agent_spec, tally, steps_in_task, temp_used, target, t0)
    return _priced(report, price_of(agent), wf.microsteps[0].voting.k)


def drafts_bench(
    wf_cls: type[Workflow[Any, Any]],
    params: Mapping[str, Any],
    agent: str | None,
    *,
    samples: int,
    temperature: float | None,
    target: float,
    seed: int,
    batch: int,
    max_walk: int,
    max_tokens: int | None,
) -> tuple[Calibration | None, Workflow[Any, Any], list[tuple[int, Any]], int]:
    """What a verifier's calibration starts from: the large model's own calibration (None without ``agent``), the
    workflow, the steps to draft (:func:`choose_steps`) and the task's length in steps."""
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
    wf = wf_cls()
    picks, steps_in_task = choose_steps(wf, wf_cls.parse_params(params), samples, seed, max_walk)
    return large, wf, picks, steps_in_task


def _priced(c: Calibration, price: Price | None, k: int) -> Calibration:
    """The calibration with the agent's price and the run's expected cost at the measured tokens per call."""
    if price is None:
        return c
    update: dict[str, Any] = {"price": price.as_list()}
    if c.calls_per_step is not None:
        est = cost_estimate(
            steps=c.steps_in_task,
            calls_per_step=c.calls_per_step,
            k=c.k or k,
            prompt_tokens=c.prompt_tokens_per_call,
            completion_tokens=c.tokens_per_call,
            price=price,
        )
        update.update(cost_per_step=est.cost_per_step, cost_total=est.cost)
    return c.model_copy(update=update)


async def _sample(
    agent: Agent,
    wf: Workflow[Any, Any],
    picks: list[tuple[int, Any]],
    base: int,
    temperature: float | None,
    batch: int,
    max_tokens: int | None,
    on_progress: Callable[[int, int], None] | None,
) -> SampleTally:
    """One sample of each pick at the voting temperature (or ``temperature``), ``batch`` requests at a time;
    closes the agent's backend."""
    tally = SampleTally()
    try:
        for start in range(0, len(picks), batch):
            reqs, asked = [], []
            for index, (j, state) in enumerate(picks[start : start + batch], start):
                call, expected = call_at(wf, state, index)
                temp = call.microstep.voting.temperature if temperature is None else temperature
                reqs.append(one_sample(call, expected, j, temp, mix64(base + index), max_tokens))
                asked.append((call, expected))
            results = await agent.backend.generate(reqs)
            for (call, expected), (sample,) in zip(asked, results, strict=True):
                u = sample.usage
                if u is None:
                    tally.prompt_tokens += len(call.prompt) // 4 + 1
                else:
                    tally.prompt_tokens += u.prompt
                    tally.reported += 1
                flag, key = read_answer(call, sample.text, sample.tokens, max_tokens)
                right = flag is None and key == call.microstep.vote_key(expected)
                tally.add(call.microstep.name, sample.tokens, flag, right)
            if on_progress:
                on_progress(min(start + batch, len(picks)), len(picks))
    finally:
        await agent.backend.aclose()
    return tally


def _report(
    workflow: str, agent: str, tally: SampleTally, steps: int, temperature: float, target: float, t0: float
) -> Calibration:
    """The report of a measurement: p with its interval, and the k and cost a run of ``steps`` steps needs."""
    n, valid, correct = tally.samples, tally.valid, tally.correct
    out: dict[str, Any] = dict(
        workflow=workflow,
        agent=agent,
        samples=n,
        steps_in_task=steps,
        temperature=temperature,
        correct=correct,
        valid=valid,
        valid_rate=valid / n,
        red_flags=dict(tally.red_flags),
        tokens_per_call=tally.tokens / n,
        prompt_tokens_per_call=tally.prompt_tokens / n,
        usage_estimated=tally.reported < n,
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
        out.update(_advice(correct, valid, n, steps, target))
    else:
        out["note"] = "every response was red-flagged"
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    out["by_microstep"] = {
        name: {"samples": n_, "valid": v, "correct": c, "valid_rate": v / n_, "p": c / v if v else None}
        for name, (n_, v, c) in sorted(tally.by_microstep.items())
    }
    return Calibration(**out)


def _advice(correct: int, valid: int, n: int, steps: int, target: float) -> dict[str, Any]:
    """p among ``valid`` of ``n`` samples with its interval, and what it means for a run of ``steps`` steps:
    k, calls and the chance of a fully correct run, or a note where k cannot be had."""
    rate = correct / valid
    low, high = wilson_interval(correct, valid)
    out: dict[str, Any] = dict(p=rate, p_low=low, p_high=high)
    if rate > 0.5 and rate < 1.0:
        k = k_min(steps, rate, target)
        calls = expected_calls(rate, k, valid / n)
        out.update(k=k, calls_per_step=calls, calls_total=calls * steps, p_full=run_success(rate, k, steps))
        if low <= 0.5:
            out["note"] = "the 95% interval reaches 0.5: measure more samples before trusting k"
    elif rate == 1.0:
        out.update(
            k=1,
            calls_per_step=1 / (valid / n),
            calls_total=steps / (valid / n),
            p_full=None,
            note="no error seen: k cannot be estimated; measure more samples (k >= 2 is prudent)",
        )
    else:
        out["note"] = "p <= 0.5: voting cannot converge on this formulation; change the prompt, model or temperature"
    return out


# -- verifiers ---------------------------------------------------------------------------------------
