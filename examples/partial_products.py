"""A workflow with a fan-out: long multiplication by partial products.

``next`` first asks one voted microstep per digit of ``b`` (``a`` times that digit) all at
once: the calls do not depend on each other, so they are decided concurrently, their
samples batched into the same backend calls, and ``apply`` receives their answers as a
tuple in the order they were asked. Then one more microstep adds the shifted rows.

Run it with:  maker run examples.partial_products:PartialProducts --set a=46048 --set b=42098 --agent simulated:p=0.9
"""

from pydantic import BaseModel, Field

from maker import DONE, Microstep, State, Workflow


class Params(BaseModel):
    a: int = Field(46048, ge=0, description="first factor")
    b: int = Field(42098, ge=0, description="second factor, one row per digit")


class Rows(State):
    a: int
    b: int
    rows: tuple[int, ...] = ()  # a times each digit of b, least significant digit first
    product: int | None = None


class Row(BaseModel):
    product: int


class Sum(BaseModel):
    total: int


def _wrong_row(right: Row, i: int) -> Row:
    return Row(product=right.product + 10 ** (i % 3))  # a carry slipped into the wrong column


row = Microstep(
    "row",
    prompt="Multiply {a} by the digit {digit}. Answer with one line: product = N",
    schema=Row,
    mistakes=_wrong_row,
)
add = Microstep(
    "add",
    prompt="Add these numbers:\n{numbers}\nAnswer with one line: total = N",
    schema=Sum,
    mistakes=lambda right, i: Sum(total=right.total + 1 + i),
)


class PartialProducts(Workflow, name="partial-products", version=1):
    Params = Params
    State = Rows
    microsteps = (row, add)

    def start(self, params):
        return Rows(a=params.a, b=params.b)

    def next(self, state):
        if not state.rows:  # a fan-out: one call per digit, tagged with its place
            return [row.ask(a=state.a, digit=d).tagged(f"10^{i}") for i, d in enumerate(reversed(str(state.b)))]
        if state.product is None:
            return add.ask(numbers="\n".join(str(r * 10**i) for i, r in enumerate(state.rows)))
        return DONE

    def apply(self, state, answer):
        if not state.rows:  # the fan-out's answers, in the order next() asked them
            return state.model_copy(update={"rows": tuple(a.product for a in answer)})
        return state.model_copy(update={"product": answer.total})

    def oracle(self, state):
        if not state.rows:
            return tuple(Row(product=state.a * int(d)) for d in reversed(str(state.b)))
        return Sum(total=sum(r * 10**i for i, r in enumerate(state.rows)))

    def solved(self, state):
        return state.product == state.a * state.b

    def result(self, state):
        return {"product": state.product}
