"""The microsteps of the recursive solver: one per role, with its prompt, answer format and red flags.

Roles: ``classify`` (is the task atomic?), ``decompose`` (sub-tasks and a composition
rule, voted by a canonical key), ``propose`` (the same question, sampled as candidates for
judges), ``judge`` (pick the best numbered candidate), ``solve`` (an atomic task) and
``compose`` (a parent's result from its children's). The prompts are data: the defaults
below, or the user's, one per role (``--set prompts='{"solve": "..."}'``).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from maker._parsing import FormatError
from maker.dsl import Microstep, RedFlag
from maker.errors import UserError
from maker.voting import Voting
from maker.workflows._reference import Problem, Proposal, canonical_result, recognize, result_mistake

__all__ = [
    "PROMPTS",
    "PLACEHOLDERS",
    "Classify",
    "Decomposition",
    "Pick",
    "Result",
    "classify",
    "decompose",
    "propose",
    "judge",
    "solve",
    "compose",
    "check_prompts",
    "decomposition_key",
    "normal_task",
]

PROMPTS: dict[str, str] = {
    "classify": """\
Decide whether a task is small enough to solve directly in one short step, or should be split into smaller
independent sub-tasks.

Task: {task}

A task is atomic when a careful person solves it in one short step without writing down intermediate
results (for example: multiplying a number by a single digit, or sorting a few numbers).
Answer with exactly one line, either
atomic = true
or
atomic = false
""",
    "decompose": """\
Split a task into at most {max_children} smaller sub-tasks that can be solved independently, and a rule
that combines their results into the task's result.

Task: {task}

Rules:
- Each sub-task is self-contained: it is solved by someone who sees only its own text, never the task or
  the other sub-tasks. Write out in full every number or list it needs.
- No sub-task refers to another sub-task or to its result.
- Each sub-task is smaller than the task.
- The rule names the results R1, R2, ... in sub-task order, for example R1 * 10^3 + R2, or merge(R1, R2).
- If the task is too small to split, give an empty list of sub-tasks.

Answer with exactly two lines:
subtasks = ["first sub-task", "second sub-task"]
compose = "the rule over R1, R2"
""",
    "judge": """\
Several ways to split a task were proposed. Pick the best: its sub-tasks are self-contained, independent of
each other and smaller than the task, and combining their correct results by its rule gives the task's
correct result.

Task: {task}

Candidates:
{candidates}

Answer with exactly one line:
choice = N
where N is the number of the best candidate, 1 to {count}.
""",
    "solve": """\
Solve the task. Work carefully; then give the final answer on the last line.

Task: {task}

The last line must be exactly:
result = <the answer>
""",
    "compose": """\
Combine the results of sub-tasks into the result of a task.

Task: {task}

Sub-tasks and their results (R1, R2, ... in this order):
{parts}

Rule: {rule}

Apply the rule to the results. Give the final answer on the last line, exactly:
result = <the answer>
""",
}

PLACEHOLDERS: dict[str, set[str]] = {
    "classify": {"task"},
    "decompose": {"task", "max_children"},
    "judge": {"task", "candidates", "count"},
    "solve": {"task"},
    "compose": {"task", "parts", "rule"},
}


def check_prompts(prompts: Mapping[str, str]) -> dict[str, str]:
    """The prompts of a run: the defaults with the user's overrides, each checked for its placeholders."""
    unknown = sorted(set(prompts) - set(PROMPTS))
    if unknown:
        raise UserError(f"prompts for {unknown}: the roles are {', '.join(PROMPTS)}")
    out = dict(PROMPTS)
    for role, text in prompts.items():
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as exc:
            raise UserError(
                f"prompt for {role!r} is not a format string ({exc}); write literal braces as {{{{ }}}}"
            ) from None
        wrong = used - PLACEHOLDERS[role]
        if wrong or "task" not in used:
            raise UserError(
                f"prompt for {role!r} may use {sorted(PLACEHOLDERS[role])} and must use {{task}}; got {sorted(used)}"
            )
        out[role] = text
    return out


def _fill(template: str, **fields: Any) -> str:
    return template.format_map(fields)


def _fill_split(template: str, rejected: Sequence[Mapping[str, Any]] = (), **fields: Any) -> str:
    """A decomposing prompt: the template, and where a backtrack rejected splits of this task (``rejected``, as
    :class:`Decomposition` dicts; only such calls have the input, so other prompts are as they always were) a
    note of them."""
    text = template.format_map(fields)
    if not rejected:
        return text
    tried = "\n".join(f"subtasks = {json.dumps(d['subtasks'])}; compose = {json.dumps(d['compose'])}" for d in rejected)
    return (
        f"{text.rstrip()}\n\nThese splits of the task were tried, and the result they composed failed a check; "
        f"give a different one:\n{tried}\n"
    )


# -- answers ---------------------------------------------------------------------------------------
class Classify(BaseModel):
    atomic: bool


class Decomposition(BaseModel):
    subtasks: list[str] = Field(max_length=64)
    """Self-contained sub-tasks; empty: the task is too small to split."""
    compose: str = ""
    """How the results R1, R2, ... combine."""


class Pick(BaseModel):
    choice: int


class Result(BaseModel):
    result: str


_RESULT = re.compile(r"^[ \t>*`-]*result[ \t]*[=:][ \t]*(.*?)[ \t`]*$", re.MULTILINE | re.IGNORECASE)


def _parse_result(text: str) -> Result:
    """``result = ANSWER`` (the last such line): a JSON string is unquoted, other JSON kept as written."""
    found = _RESULT.findall(text)
    if not found or not found[-1].strip():
        raise FormatError("missing line result = ...")
    raw = found[-1].strip()
    try:
        value = json.loads(raw)
    except ValueError:
        return Result(result=raw)
    return Result(result=value if isinstance(value, str) else json.dumps(value))


def normal_task(text: str) -> str:
    """A task's comparable form: a recognised problem's canonical text, else lower-cased words."""
    problem = recognize(text)
    if problem is not None:
        return problem.task
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def decomposition_key(d: Decomposition) -> tuple[Any, ...]:
    """Two proposals are one vote when their sub-tasks are the same problems in the same order and their rules
    are the same up to spacing and case."""
    return (tuple(normal_task(t) for t in d.subtasks), "".join(d.compose.lower().split()))


# -- red flags -------------------------------------------------------------------------------------
_REFERS = re.compile(
    r"sub-?\s?tasks?\s*#?\d|\b(?:first|second|third|other|previous)\s+sub-?\s?task"
    r"|result\s+of\s+(?:the\s+)?(?:sub-?\s?task|first|second|other|previous|P\d)|\b[PR][0-9]+\b",
    re.IGNORECASE,
)


def _one_child(d: Decomposition, inputs: Mapping[str, Any]) -> str | None:
    if len(d.subtasks) == 1:
        return "one sub-task is the task again; split into two or more, or give none"
    return None


def _too_many_children(d: Decomposition, inputs: Mapping[str, Any]) -> str | None:
    if len(d.subtasks) > inputs["max_children"]:
        return f"{len(d.subtasks)} sub-tasks, at most {inputs['max_children']}"
    return None


def _same_as_parent(d: Decomposition, inputs: Mapping[str, Any]) -> str | None:
    parent = normal_task(inputs["task"])
    for i, t in enumerate(d.subtasks):
        if not t.strip():
            return f"sub-task {i + 1} is empty"
        if normal_task(t) == parent:
            return f"sub-task {i + 1} is the task itself"
    return None


def _dependent(d: Decomposition, inputs: Mapping[str, Any]) -> str | None:
    for i, t in enumerate(d.subtasks):
        if _REFERS.search(t):
            return f"sub-task {i + 1} refers to another sub-task: {t[:80]!r}"
    if d.subtasks and not re.search(r"R[0-9]", d.compose, re.IGNORECASE):
        return "the rule names no result R1, R2, ..."
    return None


def _rejected(d: Decomposition, inputs: Mapping[str, Any]) -> str | None:
    """A split a backtrack rejected for this node (the call's ``rejected`` input) does not win the vote again: the
    next-best proposal does."""
    rejected = inputs.get("rejected")
    if not rejected:
        return None
    key = decomposition_key(d)
    if any(decomposition_key(Decomposition.model_validate(r)) == key for r in rejected):
        return "this split was tried and the result it composed failed a check"
    return None


_SPLIT_FLAGS = [
    RedFlag("too_many_children", _too_many_children),
    RedFlag("one_child", _one_child),
    RedFlag("same_as_parent", _same_as_parent),
    RedFlag("dependent", _dependent),
]


def _choice_range(p: Pick, inputs: Mapping[str, Any]) -> str | None:
    return None if 1 <= p.choice <= inputs["count"] else f"choice {p.choice} is not 1..{inputs['count']}"


def _answer_format(r: Result, inputs: Mapping[str, Any]) -> str | None:
    if not r.result.strip():
        return "empty result"
    problem = recognize(inputs["task"])
    canon = canonical_result(r.result)
    if problem is not None and problem.kind == "multiply" and not re.fullmatch(r"-?[0-9]+", canon):
        return "a product is a whole number"
    if problem is not None and problem.kind == "sort" and not canon.startswith("["):
        return "a sorted list is a JSON list of integers"
    return None


# -- simulated agents: plausible mistakes and how hard each call is ---------------------------------
def _problem(inputs: Mapping[str, Any]) -> Problem | None:
    return recognize(inputs["task"])


def _wrong_split(right: Decomposition, i: int, inputs: Mapping[str, Any]) -> Decomposition:
    problem = _problem(inputs)
    if problem is None or problem.atomic():  # splitting what should not be split: the task again
        return Decomposition(subtasks=[inputs["task"]], compose="R1")
    wrong = problem.split_mistake(i)
    return Decomposition(subtasks=list(wrong.subtasks), compose=wrong.compose)


def _wrong_pick(right: Pick, i: int, inputs: Mapping[str, Any]) -> Pick:
    others = [c for c in range(1, inputs["count"] + 1) if c != right.choice]
    return Pick(choice=others[i % len(others)] if others else right.choice + 1)  # out of range: red-flagged


def _solve_units(inputs: Mapping[str, Any]) -> float:
    problem = _problem(inputs)
    return problem.units() if problem is not None else 1.0


def _compose_units(inputs: Mapping[str, Any]) -> float:
    problem = _problem(inputs)
    if problem is None:
        return 1.0
    return problem.compose_units(Proposal(tuple(inputs["subtasks"]), inputs["rule"]))


def _result_key(r: Result) -> str:
    return canonical_result(r.result)


def _render_result(r: Result) -> str:
    return f"result = {r.result}"


# -- the microsteps --------------------------------------------------------------------------------
classify = Microstep(
    "classify",
    prompt=_fill,
    schema=Classify,
    vote_key=lambda a: a.atomic,
    mistakes=lambda right, i: Classify(atomic=not right.atomic),
)
# A split of a long list writes the list out again in its subtasks (500 integers are about 900 tokens), so the
# decomposing steps get the same room as the solving ones.
decompose = Microstep(
    "decompose",
    prompt=_fill_split,
    schema=Decomposition,
    vote_key=decomposition_key,
    red_flags=[*_SPLIT_FLAGS, RedFlag("rejected", _rejected)],
    mistakes=_wrong_split,
    max_tokens=4096,
)
# vote=judge: the proposals are not red-flagged for a rejected split; the node's candidates leave those out, unless
# nothing else was proposed (see Solve.apply)
propose = Microstep(
    "propose",
    prompt=_fill_split,
    schema=Decomposition,
    vote_key=decomposition_key,
    red_flags=_SPLIT_FLAGS,
    mistakes=_wrong_split,
    candidate=True,
    max_tokens=4096,
    voting=Voting(k=1, first_temperature=0.7, temperature=0.7, fixed=True),
)
judge = Microstep(
    "judge",
    prompt=_fill,
    schema=Pick,
    vote_key=lambda a: a.choice,
    red_flags=[RedFlag("choice_range", _choice_range)],
    mistakes=_wrong_pick,
)


def _result_step(name: str, difficulty: Callable[[Mapping[str, Any]], float]) -> Microstep[Result]:
    """A step that answers with a result line: solving a leaf, or composing its children's results."""
    return Microstep(
        name,
        prompt=_fill,
        schema=Result,
        parse=_parse_result,
        render=_render_result,
        vote_key=_result_key,
        red_flags=[RedFlag("answer_format", _answer_format)],
        max_tokens=4096,
        mistakes=lambda right, i: Result(result=result_mistake(right.result, i)),
        difficulty=difficulty,
    )


solve = _result_step("solve", _solve_units)
compose = _result_step("compose", _compose_units)
