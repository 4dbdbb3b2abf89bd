"""Long addition, one digit column per step, with the carry in the state.

A different shape from Hanoi: the state grows an output string, and each step's input
is two digits and a carry rather than the whole state.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, Field, model_validator

from maker.dsl import DONE, Done, Microstep, MicrostepCall, State, Workflow

__all__ = ["add_decimal", "Addition", "AdditionParams", "AdditionState", "DigitAnswer", "add_digit"]

PROMPT = """\
Long addition, one column. Add the two digits and the carry.
Top digit: {x}
Bottom digit: {y}
Carry in: {carry}
Answer with exactly two lines:
digit = the last digit of the sum
carry = 1 if the sum is 10 or more, else 0
"""


def add_decimal(a: str, b: str) -> str:
    """a + b on decimal strings of any length (``int()`` refuses more than 4,300 digits)."""
    width = max(len(a), len(b))
    a, b = a.zfill(width), b.zfill(width)
    out, carry = [], 0
    for x, y in zip(reversed(a), reversed(b), strict=True):
        carry, digit = divmod(int(x) + int(y) + carry, 10)
        out.append(str(digit))
    if carry:
        out.append("1")
    return "".join(reversed(out))


class AdditionParams(BaseModel):
    digits: int = Field(
        20, ge=1, le=1_000_000, description="length of the random numbers (ignored when a and b are given)"
    )
    seed: int = Field(0, description="seed for the random numbers")
    a: str | None = Field(None, pattern=r"^[0-9]+$", description="first number (decimal digits)")
    b: str | None = Field(None, pattern=r"^[0-9]+$", description="second number (decimal digits)")

    @model_validator(mode="after")
    def _both(self) -> AdditionParams:
        if (self.a is None) != (self.b is None):
            raise ValueError("give both a and b, or neither")
        return self


class AdditionState(State):
    a: str
    b: str
    pos: int = 0
    carry: int = 0
    out: str = ""  # digits of the sum so far, least significant first


class DigitAnswer(BaseModel):
    digit: int = Field(ge=0, le=9)
    carry: int = Field(ge=0, le=1)


def _mistake(correct: DigitAnswer, index: int) -> DigitAnswer:
    options = (
        DigitAnswer(digit=(correct.digit + 1) % 10, carry=correct.carry),
        DigitAnswer(digit=correct.digit, carry=1 - correct.carry),
        DigitAnswer(digit=(correct.digit + 9) % 10, carry=correct.carry),
    )
    return options[index % len(options)]


add_digit = Microstep(
    "add_digit",
    prompt=PROMPT,
    schema=DigitAnswer,
    vote_key=lambda ans: (ans.digit, ans.carry),
    mistakes=_mistake,
)


class Addition(Workflow[AdditionParams, AdditionState], name="addition", version=1):
    """Add two long numbers digit by digit, right to left."""

    description = "long addition, one voted digit column per step, carry kept in the state"
    Params = AdditionParams
    State = AdditionState
    microsteps = (add_digit,)

    def start(self, params: AdditionParams) -> AdditionState:
        if params.a is not None and params.b is not None:
            a, b = params.a, params.b
        else:
            rng = random.Random(params.seed)
            a = "".join(rng.choice("0123456789") for _ in range(params.digits))
            b = "".join(rng.choice("0123456789") for _ in range(params.digits))
        width = max(len(a), len(b))
        return AdditionState(a=a.zfill(width), b=b.zfill(width))

    def next(self, state: AdditionState) -> MicrostepCall | Done:
        if state.pos >= len(state.a):
            return DONE
        i = len(state.a) - 1 - state.pos
        return add_digit.ask(x=state.a[i], y=state.b[i], carry=state.carry)

    def apply(self, state: AdditionState, answer: DigitAnswer) -> AdditionState:
        return state.model_copy(
            update={"pos": state.pos + 1, "carry": answer.carry, "out": state.out + str(answer.digit)}
        )

    def oracle(self, state: AdditionState) -> DigitAnswer:
        i = len(state.a) - 1 - state.pos
        total = int(state.a[i]) + int(state.b[i]) + state.carry
        return DigitAnswer(digit=total % 10, carry=total // 10)

    def total(self, state: AdditionState) -> str:
        return (str(state.carry) if state.carry else "") + state.out[::-1]

    def solved(self, state: AdditionState) -> bool:
        return self.total(state).lstrip("0") == add_decimal(state.a, state.b).lstrip("0")

    def expected_steps(self, params: AdditionParams) -> int:
        if params.a is not None and params.b is not None:
            return max(len(params.a), len(params.b))
        return params.digits

    def result(self, state: AdditionState) -> dict[str, Any]:
        return {"a": state.a.lstrip("0") or "0", "b": state.b.lstrip("0") or "0", "sum": self.total(state)}
