"""Towers of Hanoi, decomposed as in MAKER: one microstep per move.

The agent sees the strategy, the previous move and the current state, and answers
``move = [disk, from, to]`` and ``next_state = [[...], [...], [...]]``. Pegs list their
disks bottom to top; disk 1 is the smallest. The strategy moves disk 1 one peg clockwise
(0 -> 1 -> 2 -> 0) after any move of another disk, and otherwise makes the only legal move
that does not involve disk 1. With that strategy the tower ends on peg 2 when the number
of disks is even and on peg 1 when it is odd, after exactly 2**n - 1 moves.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field

from maker.dsl import DONE, Done, Microstep, MicrostepCall, RedFlag, State, Workflow

__all__ = ["Hanoi", "HanoiState", "HanoiAnswer", "HanoiParams", "hanoi_move", "strategy_move"]

Pegs = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
M = TypeVar("M", bound=BaseModel)

PROMPT = """\
You are one step of a long Towers of Hanoi solution with {disks} disks on pegs 0, 1 and 2.
Disks are numbered 1 (smallest) to {disks} (largest). Each peg lists its disks from bottom to top.
Rules: move one disk at a time; only the top disk of a peg can move; never put a disk on a smaller one.

Strategy:
- If the previous move did not move disk 1, move disk 1 one peg clockwise (0 -> 1 -> 2 -> 0).
- If the previous move moved disk 1, make the only legal move that does not involve disk 1.

Previous move: {previous_move}
Current State: {state}

Apply the strategy once. Answer with exactly two lines and nothing after them:
move = [disk, from, to]
next_state = [[...], [...], [...]]
"""


class HanoiParams(BaseModel):
    disks: int = Field(3, ge=1, le=30, description="number of disks; the run takes 2**disks - 1 steps")
    steps: int | None = Field(None, ge=1, description="stop after this many moves (default: the whole solution)")


class HanoiState(State):
    disks: int
    limit: int | None = None
    pegs: Pegs
    previous_move: tuple[int, int, int] | None = None
    step: int = 0


class HanoiAnswer(BaseModel):
    move: tuple[int, int, int]
    next_state: Annotated[list[list[int]], Field(min_length=3, max_length=3)]


def _legal(pegs: Pegs | list[list[int]], src: int, dst: int) -> bool:
    return bool(pegs[src]) and (not pegs[dst] or pegs[dst][-1] > pegs[src][-1])


def _apply_move(pegs: Pegs | list[list[int]], move: tuple[int, int, int]) -> list[list[int]]:
    out = [list(p) for p in pegs]
    disk, src, dst = move
    out[src].pop()
    out[dst].append(disk)
    return out


def strategy_move(pegs: Pegs, previous: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The move the strategy prescribes (total: defined for every legal state)."""
    # Written out (no generators): the simulated agents' ground truth asks for it at every step.
    one = None
    for i in (0, 1, 2):
        peg = pegs[i]
        if peg and peg[-1] == 1:
            one = i
            break
    if one is not None and (previous is None or previous[0] != 1):
        return (1, one, (one + 1) % 3)
    a, b = (1, 2) if one == 0 else (0, 2) if one == 1 else (0, 1)
    if _legal(pegs, a, b):
        return (pegs[a][-1], a, b)
    if _legal(pegs, b, a):
        return (pegs[b][-1], b, a)
    assert one is not None  # every peg but disk 1's is empty
    return (1, one, (one + 1) % 3)


_set = object.__setattr__


def _construct(cls: type[M], **fields: Any) -> M:
    """``cls.model_construct(**fields)`` given every field in declared order, for a model with no aliases, extra
    fields, private attributes or post-init hook (Hanoi's two), in a third of the time: it runs twice a step."""
    m = cls.__new__(cls)
    _set(m, "__dict__", fields)
    _set(m, "__pydantic_fields_set__", set(fields))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


def _render(answer: HanoiAnswer) -> str:
    # next_state is a list of lists (the schema's type), so it prints as the model writes it
    disk, src, dst = answer.move
    return f"move = [{disk}, {src}, {dst}]\nnext_state = {answer.next_state}"


def _vote_key(answer: HanoiAnswer) -> Any:
    return (answer.move, tuple(map(tuple, answer.next_state)))


def _conserves_disks(answer: HanoiAnswer, inputs: Any) -> str | None:
    disks = inputs["disks"]
    a, b, c = answer.next_state  # the schema holds it to three pegs
    if len(a) + len(b) + len(c) != disks or sorted(a + b + c) != _one_to(disks):
        return f"next_state must hold disks 1..{disks} once each"
    for peg in answer.next_state:
        if peg != sorted(peg, reverse=True):
            return f"a larger disk sits on a smaller one in {peg}"
    return None


@cache
def _one_to(disks: int) -> list[int]:
    """``[1, ..., disks]``, made once per size (the red-flag rule compares with it at every sample); callers must
    not change it."""
    return list(range(1, disks + 1))


def _mistake(correct: HanoiAnswer, index: int) -> HanoiAnswer:
    """The index-th plausible wrong answer: another legal move, or the right move with a stale state."""
    disk, src, dst = correct.move
    before = [list(p) for p in correct.next_state]
    before[dst].pop()
    before[src].append(disk)
    options = [
        HanoiAnswer(move=(pegs_top, a, b), next_state=_apply_move(before, (pegs_top, a, b)))
        for a in range(3)
        for b in range(3)
        if a != b and _legal(before, a, b) and (pegs_top := before[a][-1], a, b) != correct.move
    ]
    options.append(HanoiAnswer(move=correct.move, next_state=before))
    return options[index % len(options)]


hanoi_move = Microstep(
    "hanoi_move",
    prompt=PROMPT,
    schema=HanoiAnswer,
    render=_render,
    vote_key=_vote_key,
    red_flags=[RedFlag("disks_conserved", _conserves_disks)],
    mistakes=_mistake,
)


class Hanoi(Workflow[HanoiParams, HanoiState], name="hanoi", version=1):
    """Towers of Hanoi with MAKER's strategy: 2**disks - 1 dependent moves."""

    description = "Towers of Hanoi, one voted move per step (MAKER's formulation)"
    Params = HanoiParams
    State = HanoiState
    microsteps = (hanoi_move,)

    def start(self, params: HanoiParams) -> HanoiState:
        full = (1 << params.disks) - 1
        limit = None if params.steps is None or params.steps >= full else params.steps
        return HanoiState(disks=params.disks, limit=limit, pegs=(tuple(range(params.disks, 0, -1)), (), ()))

    def next(self, state: HanoiState) -> MicrostepCall | Done:
        if state.step >= (state.limit or (1 << state.disks) - 1):
            return DONE
        prev = state.previous_move
        return hanoi_move.ask(
            disks=state.disks,
            previous_move="None" if prev is None else f"[{prev[0]}, {prev[1]}, {prev[2]}]",
            state=str([list(p) for p in state.pegs]),
        )

    def apply(self, state: HanoiState, answer: HanoiAnswer) -> HanoiState:
        return _construct(
            HanoiState,
            disks=state.disks,
            limit=state.limit,
            pegs=tuple(map(tuple, answer.next_state)),
            previous_move=answer.move,
            step=state.step + 1,
        )

    def oracle(self, state: HanoiState) -> HanoiAnswer:
        move = strategy_move(state.pegs, state.previous_move)
        return _construct(HanoiAnswer, move=move, next_state=_apply_move(state.pegs, move))

    def solved(self, state: HanoiState) -> bool | None:
        if state.limit is not None:  # a partial run: correct iff every step matched the strategy (errors == 0)
            return None
        goal = 2 if state.disks % 2 == 0 else 1
        return state.pegs[goal] == tuple(range(state.disks, 0, -1))

    def expected_steps(self, params: HanoiParams) -> int:
        full = (1 << params.disks) - 1
        return full if params.steps is None else min(full, params.steps)

    def result(self, state: HanoiState) -> dict[str, Any]:
        return {"pegs": [list(p) for p in state.pegs]}
