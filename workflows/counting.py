"""Counting up by one, one number per step, from the model's own last answers.

A task the bundled 135M model can do, measured: on SmolLM2-135M-Instruct the raw
completion ``Counting: 473, 474, 475, 476, 477,`` is continued with `` 478`` greedily on
128 of 128 random starts, and a single sample at temperature 1.0 is right about 80% of
the time. So a chain of single samples breaks within a few dozen steps, while voting over
samples holds. Each step's prompt is built from the chain's own last ``window`` numbers,
so one wrong committed step derails everything after it.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import BaseModel, Field

from maker.dsl import DONE, Done, FormatError, Microstep, MicrostepCall, State, Workflow

__all__ = ["Counting", "CountingParams", "CountingState", "NextNumber", "next_number"]

_NUMBER = re.compile(r"-?\d+")


class CountingParams(BaseModel):
    steps: int = Field(30, ge=1, le=1_000_000, description="how many numbers to add to the count")
    start: int | None = Field(None, ge=0, description="first number (default: drawn from seed, 10..995)")
    window: int = Field(5, ge=1, le=50, description="how many of the last numbers the prompt shows")
    seed: int = Field(0, description="seed for the start number")


class CountingState(State):
    recent: tuple[int, ...]
    step: int = 0
    steps: int


class NextNumber(BaseModel):
    value: int


def _parse(text: str) -> NextNumber:
    m = _NUMBER.search(text)
    if m is None:
        raise FormatError("no number in the response")
    return NextNumber(value=int(m.group()))


next_number = Microstep(
    "next_number",
    prompt="Counting: {recent},",
    schema=NextNumber,
    parse=_parse,
    render=lambda a: f" {a.value},",
    vote_key=lambda a: a.value,
    max_tokens=8,
    stop=[","],
    mistakes=lambda right, i: NextNumber(value=right.value + (1, -1, 2)[i % 3]),
)


class Counting(Workflow[CountingParams, CountingState], name="counting", version=1):
    """Count up by one from a start number; the bundled small model's task."""

    description = "count up by one, each number voted; a task the bundled 135M model can do"
    Params = CountingParams
    State = CountingState
    microsteps = (next_number,)

    def start(self, params: CountingParams) -> CountingState:
        first = params.start if params.start is not None else random.Random(params.seed).randint(10, 995)
        window = tuple(range(first, first + params.window))
        return CountingState(recent=window, steps=params.steps)

    def next(self, state: CountingState) -> MicrostepCall | Done:
        if state.step >= state.steps:
            return DONE
        return next_number.ask(recent=", ".join(map(str, state.recent)))

    def apply(self, state: CountingState, answer: NextNumber) -> CountingState:
        return state.model_copy(update={"recent": (*state.recent[1:], answer.value), "step": state.step + 1})

    def oracle(self, state: CountingState) -> NextNumber:
        return NextNumber(value=state.recent[-1] + 1)

    def solved(self, state: CountingState) -> bool:
        # Correct iff the count advanced by exactly one per step.
        return state.recent[-1] == state.recent[0] + len(state.recent) - 1 and state.step == state.steps

    def expected_steps(self, params: CountingParams) -> int:
        return params.steps

    def result(self, state: CountingState) -> dict[str, Any]:
        return {"last": list(state.recent)}
