"""A workflow written with the DSL: count down from n, one voted subtraction per step.

Run it with:  maker run examples.countdown:Countdown --set start=50 --agent simulated:p=0.95
"""

from pydantic import BaseModel, Field

from maker import DONE, Microstep, RedFlag, State, Voting, Workflow


class Params(BaseModel):
    start: int = Field(10, ge=0, description="number to count down from")


class Count(State):
    value: int
    steps: int = 0


class Next(BaseModel):
    value: int


decrement = Microstep(
    "decrement",
    prompt="Subtract one from {value}. Answer with one line: value = N",
    schema=Next,
    vote_key=lambda a: a.value,
    red_flags=[RedFlag("not_negative", lambda a, inputs: "below zero" if a.value < 0 else None)],
    voting=Voting(k=3),
    mistakes=lambda right, i: Next(value=right.value + 1 + i),
)


class Countdown(Workflow, name="countdown", version=1):
    Params = Params
    State = Count
    microsteps = (decrement,)

    def start(self, params):
        return Count(value=params.start)

    def next(self, state):
        return DONE if state.value == 0 else decrement.ask(value=state.value)

    def apply(self, state, answer):
        return state.model_copy(update={"value": answer.value, "steps": state.steps + 1})

    def oracle(self, state):
        return Next(value=state.value - 1)

    def solved(self, state):
        return state.value == 0
