"""Programmatic reference decompositions for tasks maker can check: long multiplication and sorting.

The recursive solver needs ground truth three times over: to judge whether an agent's proposed split is
correct, to drive simulated agents that make the mistakes real models make, and to score answers against a
data set. Keeping all three in one place means the simulated mistakes are exactly the ones ``check`` catches.
Composition rules are tiny arithmetic or ``merge(...)`` expressions; they come from models, so they are read
with a restricted ``ast`` walk and never executed.
"""

from __future__ import annotations

import ast
import heapq
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, TypeVar

__all__ = ["ACCEPTED", "Problem", "Proposal", "canonical_result", "recognize", "result_mistake", "same_answer"]

_MAX_OPERAND_DIGITS = 2000  # products stay under CPython's 4,300-digit int()/str() limit
_MAX_RULE_CHARS = 500
_MAX_VALUE_BITS = 200_000  # a rule like 10^10^10 is refused instead of hanging the voter
_SORT_LEAF = 32
_T = TypeVar("_T")
_S = TypeVar("_S", str, list[int])
_NUMBER_TEXT = rf"[+-]?[0-9]{{1,{_MAX_OPERAND_DIGITS}}}(?:\.[0-9]{{1,{_MAX_OPERAND_DIGITS}}})?"
_NUM = rf"(?<![\w.])({_NUMBER_TEXT})(?![\w]|\.[0-9])"
_NUMBER = re.compile(_NUM)
_TIMES = r"\s*(?:×|x|\*|times|multiplied\s+by)\s*"
_MUL_PATTERNS = [
    rf"multiply(?:\s+the\s+following\s+numbers\s*:)?\s+{_NUM}\s*(?:by|and|with|×|x|\*|times)\s*{_NUM}",
    rf"product\s+of\s+{_NUM}\s*(?:and|,|with|by)\s*{_NUM}",
    rf"{_NUM}{_TIMES}{_NUM}",
]
_MUL = [re.compile(p, re.IGNORECASE) for p in _MUL_PATTERNS]
_STRINGS = re.compile(r"list\s+of\s+strings|as\s+strings|numbers?\s+(?:\w+\s+){0,3}as\s+strings", re.IGNORECASE)
_NOT_ASCENDING = re.compile(r"descending|decreasing|reverse|largest\s+to\s+smallest", re.IGNORECASE)
_DEPENDENT = re.compile(r"sub-?\s?task|result\s+of", re.IGNORECASE)
_INT = re.compile(r"[+-]?(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,3}(?: [0-9]{3})+)(?:\.0+)?")
_REF = re.compile(r"R([0-9]{1,4})")
_LIST_RULE = re.compile(r"\s*(merge|concatenate|concat)\s*\(\s*(R[0-9]{1,4}(?:\s*,\s*R[0-9]{1,4})*)\s*\)\s*", re.I)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A decomposition: self-contained sub-tasks and the rule that composes their results."""

    subtasks: tuple[str, ...]
    """Task texts that can each be solved with no knowledge of the others."""
    compose: str
    """How the results combine, over R1, R2, ... (``R1 * 10^2 + R2``, ``merge(R1, R2)``)."""


class Problem(ABC):
    """One recognised task, with its reference decomposition and the mistakes a model plausibly makes."""

    __slots__ = ()
    kind: ClassVar[str]

    @property
    @abstractmethod
    def task(self) -> str:
        """Canonical task text: recognising it gives back an equal problem."""

    @abstractmethod
    def atomic(self) -> bool:
        """Whether the reference solves this directly instead of splitting it."""

    @abstractmethod
    def split(self) -> Proposal:
        """The reference decomposition; ``ValueError`` when the problem is atomic."""

    @abstractmethod
    def answer(self) -> str:
        """The true answer, in canonical form (see ``canonical_result``)."""

    @abstractmethod
    def units(self) -> float:
        """Difficulty of solving in one shot, in leaf units (always > 0)."""

    @abstractmethod
    def compose_units(self, proposal: Proposal) -> float:
        """Difficulty of composing the results of ``proposal`` (always > 0)."""

    @abstractmethod
    def compose(self, rule: str, results: Sequence[str]) -> str | None:
        """Apply ``rule`` to child answer texts; canonical text, or None when the rule or a result is unreadable."""

    @abstractmethod
    def _mistakes(self) -> list[Callable[[int], Proposal | None]]:
        """One generator per kind of mistake: variant number -> wrong proposal, or None when it does not apply."""

    @abstractmethod
    def _probe(self, result: str) -> str:
        """A different child result of the same type, used to show that a rule really reads that result."""

    def check(self, proposal: Proposal) -> bool:
        """Whether composing the sub-tasks' true answers by the rule gives this answer.

        Every sub-task must be recognised, of the same kind and strictly smaller (so equal or reworded copies
        of this task cannot loop), and the rule must depend on every result: ``R1 * 0 + <answer>`` is a lookup,
        not a decomposition.
        """
        if not proposal.subtasks:
            return False
        children = [recognize(text) for text in proposal.subtasks]
        if any(c is None or c.kind != self.kind or c.units() >= self.units() for c in children):
            return False
        answers = [c.answer() for c in children if c is not None]
        target = self.answer()
        if self.compose(proposal.compose, answers) != target:
            return False
        for i, result in enumerate(answers):
            probed = [*answers[:i], self._probe(result), *answers[i + 1 :]]
            if self.compose(proposal.compose, probed) == target:
                return False
        return True

    def splits(self) -> Iterator[Proposal]:
        """Every correct decomposition the reference knows, best first: ``split()``, then others that ``check``
        accepts too (another split point, the other operand, the sub-tasks in the other order). None when the
        problem is atomic. A node whose composed result failed a check is decomposed again with the next one."""
        if not self.atomic():
            yield self.split()

    def split_mistake(self, index: int) -> Proposal:
        """The ``index``-th plausible wrong decomposition (deterministic): it always differs from ``split()``
        and fails ``check``, so a simulated agent's mistakes are exactly the ones the solver must catch."""
        if self.atomic():
            raise ValueError(f"{self.task!r} is atomic: the reference does not split it, so it has no wrong split")
        right = self.split()
        wrong = _first(self._mistakes(), index, lambda p: p != right and not self.check(p))
        if wrong is None:
            raise AssertionError(f"no wrong split found for {self.task!r}; a mistake kind must always apply")
        return wrong


@dataclass(frozen=True, slots=True)
class _Multiply(Problem):
    a: int
    b: int
    kind: ClassVar[str] = "multiply"

    @property
    def task(self) -> str:
        return f"Multiply {self.a} by {self.b}"

    def atomic(self) -> bool:
        return min(len(str(self.a)), len(str(self.b))) <= 1

    def _halves(self) -> tuple[int, int, int]:
        m = len(str(self.b)) // 2
        return m, self.b // 10**m, self.b % 10**m

    def split(self) -> Proposal:
        if self.atomic():
            raise ValueError(f"{self.task!r} is atomic (an operand has one digit): solve it directly")
        m, hi, lo = self._halves()
        return Proposal((f"Multiply {self.a} by {hi}", f"Multiply {self.a} by {lo}"), f"R1 * 10^{m} + R2")

    def splits(self) -> Iterator[Proposal]:
        if self.atomic():
            return
        found: list[Proposal] = []
        for side in ("b", "a"):  # the second operand first: the reference split
            x = self.b if side == "b" else self.a
            for m in _points(len(str(x))):
                hi, lo = divmod(x, 10**m)
                tasks = (
                    (f"Multiply {self.a} by {hi}", f"Multiply {self.a} by {lo}")
                    if side == "b"
                    else (f"Multiply {hi} by {self.b}", f"Multiply {lo} by {self.b}")
                )
                found.append(Proposal(tasks[::-1], f"R2 * 10^{m} + R1"))
                yield Proposal(tasks, f"R1 * 10^{m} + R2")
        yield from found  # the same splits with the sub-tasks the other way round

    def answer(self) -> str:
        return str(self.a * self.b)

    def units(self) -> float:
        return len(str(self.a)) * len(str(self.b)) / 5

    def compose_units(self, proposal: Proposal) -> float:
        children = [c for c in map(recognize, proposal.subtasks) if c is not None and c.kind == self.kind]
        digits = max((len(c.answer()) for c in children), default=len(self.answer()))
        return max(1.0, digits / 10)

    def compose(self, rule: str, results: Sequence[str]) -> str | None:
        canon = [canonical_result(text) for text in results]
        if not all(re.fullmatch(r"-?[0-9]{1,4000}", c) for c in canon):  # int() refuses past 4,300 digits
            return None
        value = _eval_rule(rule, [int(c) for c in canon])
        return None if value is None else str(value)

    def _probe(self, result: str) -> str:
        return str(int(canonical_result(result)) + 1)

    def _mistakes(self) -> list[Callable[[int], Proposal | None]]:
        a, (m, hi, lo) = self.a, self._halves()
        right = self.split().subtasks

        def wrong_point(v: int) -> Proposal:
            shifts = [s for s in range(len(str(self.b)) + 2) if s != m]
            return Proposal(right, f"R1 * 10^{shifts[v % len(shifts)]} + R2")

        def dropped_digit(v: int) -> Proposal | None:
            operands = [[a, hi], [a, lo]]
            row, col = v % 2, v // 2 % 2
            digits = str(operands[row][col])
            if len(digits) < 2:
                return None
            operands[row][col] = int(_drop(digits, v // 4))
            return Proposal(tuple(f"Multiply {p} by {q}" for p, q in operands), f"R1 * 10^{m} + R2")

        def dependent(v: int) -> Proposal:
            second = [
                f"Add the result of sub-task 1, shifted left by {m} digits, to {a} times {lo}",
                f"Multiply {a} by {lo} and add it to the result of sub-task 1 times 10^{m}",
                f"Take the result of sub-task 1, append {m} zeros, then add {a} × {lo}",
            ][v % 3]
            return Proposal((right[0], second), "R2")

        def wrong_operator(v: int) -> Proposal:
            rules = [f"R1 * 10^{m} - R2", "R1 + R2", f"R1 * 10^{m} * R2", f"R1 - R2 * 10^{m}"]
            return Proposal(right, rules[v % len(rules)])

        return [wrong_point, dropped_digit, dependent, wrong_operator]


@dataclass(frozen=True, slots=True)
class _Sort(Problem):
    values: tuple[int, ...]
    kind: ClassVar[str] = "sort"

    @property
    def task(self) -> str:
        return _sort_task(self.values)

    def atomic(self) -> bool:
        return len(self.values) <= _SORT_LEAF

    def split(self) -> Proposal:
        if self.atomic():
            raise ValueError(f"a list of {len(self.values)} <= {_SORT_LEAF} integers is atomic: sort it directly")
        h = len(self.values) // 2
        return Proposal((_sort_task(self.values[:h]), _sort_task(self.values[h:])), "merge(R1, R2)")

    def splits(self) -> Iterator[Proposal]:
        if self.atomic():
            return
        for k in _points(len(self.values)):
            yield Proposal((_sort_task(self.values[:k]), _sort_task(self.values[k:])), "merge(R1, R2)")

    def answer(self) -> str:
        return json.dumps(sorted(self.values))

    def units(self) -> float:
        return max(len(self.values), 1) / _SORT_LEAF

    def compose_units(self, proposal: Proposal) -> float:
        children = [c for c in map(recognize, proposal.subtasks) if isinstance(c, _Sort)]
        total = sum(len(c.values) for c in children) if children else len(self.values)
        return max(1.0, total / 256)

    def compose(self, rule: str, results: Sequence[str]) -> str | None:
        match = _LIST_RULE.fullmatch(rule)
        if match is None:
            return None
        lists = [_int_list(canonical_result(text)) for text in results]
        out: list[int] = []
        for ref in re.split(r"\s*,\s*", match[2]):
            i = int(ref[1:])
            part = lists[i - 1] if 1 <= i <= len(lists) else None
            if part is None:
                return None
            # heapq.merge is a faithful two-way merge: an unsorted child gives a wrong parent, as a model's would
            out = [*out, *part] if match[1].lower().startswith("concat") else list(heapq.merge(out, part))
        return json.dumps(out)

    def _probe(self, result: str) -> str:
        return json.dumps([*(_int_list(canonical_result(result)) or []), 0])

    def _mistakes(self) -> list[Callable[[int], Proposal | None]]:
        xs, h = self.values, len(self.values) // 2
        right = self.split().subtasks

        def wrong_point(v: int) -> Proposal:
            k = 1 + (v // 2) % min(8, h - 1)
            parts = (xs[: h + k], xs[h:]) if v % 2 == 0 else (xs[:h], xs[h + k :])  # overlap, or a gap
            return Proposal(tuple(map(_sort_task, parts)), "merge(R1, R2)")

        def dropped_element(v: int) -> Proposal:
            parts = [list(xs[:h]), list(xs[h:])]
            part = parts[v % 2]
            del part[(3 + v // 2 * 7) % len(part)]
            return Proposal(tuple(map(_sort_task, parts)), "merge(R1, R2)")

        def dependent(v: int) -> Proposal:
            rest = json.dumps(list(xs[h:]))
            second = [
                f"Insert each element of {rest} into the result of sub-task 1, keeping it in ascending order",
                f"Merge the result of sub-task 1 with the elements of {rest} in ascending order",
            ][v % 2]
            return Proposal((right[0], second), "R2")

        def wrong_operator(v: int) -> Proposal:
            return Proposal(right, ["concatenate(R1, R2)", "concat(R2, R1)", "merge(R1)"][v % 3])

        return [wrong_point, dropped_element, dependent, wrong_operator]


ACCEPTED = (
    "one multiplication of two numbers (integers or decimals, negative or not), as 'Multiply 123 by 456', "
    "'123 * 456', '123 x 456', '123 times 456' or 'the product of 123 and 456', or one list of numbers to sort, "
    "as 'Sort in ascending order: [3, -1.5, 2]' or 'Sort these numbers in descending order: 3, -1.5, 2' (in "
    "brackets or after a colon, optionally asking for a list of strings); instructions around them are fine"
)
"""What :func:`recognize` accepts, for messages about a task it does not."""


@dataclass(frozen=True, slots=True)
class _Known(Problem):
    """A problem whose answer the reference knows but which it does not decompose: negative or decimal operands, a
    descending sort, an answer asked as a list of strings. It is solved in one shot; ``check`` accepts no split of
    it, as the reference cannot say which splits are right."""

    def atomic(self) -> bool:
        return True

    def split(self) -> Proposal:
        raise ValueError(f"the reference solves {self.task!r} directly: it has no decomposition")

    def check(self, proposal: Proposal) -> bool:
        return False

    def compose_units(self, proposal: Proposal) -> float:
        return 1.0

    def compose(self, rule: str, results: Sequence[str]) -> str | None:
        return None

    def _probe(self, result: str) -> str:
        return result + "0"

    def _mistakes(self) -> list[Callable[[int], Proposal | None]]:
        return []


@dataclass(frozen=True, slots=True)
class _KnownProduct(_Known):
    a: str
    b: str
    kind: ClassVar[str] = "multiply"

    @property
    def task(self) -> str:
        return f"Multiply {self.a} by {self.b}"

    def answer(self) -> str:
        return _num_text(Fraction(self.a) * Fraction(self.b))

    def units(self) -> float:
        return max(1, len(self.a.strip("-."))) * max(1, len(self.b.strip("-."))) / 5


@dataclass(frozen=True, slots=True)
class _KnownSort(_Known):
    values: tuple[str, ...]
    descending: bool
    strings: bool
    kind: ClassVar[str] = "sort"

    @property
    def task(self) -> str:
        order = "descending" if self.descending else "ascending"
        wanted = " Give the answer as a list of strings." if self.strings else ""
        return f"Sort in {order} order: [{', '.join(self.values)}]{wanted}"

    def answer(self) -> str:
        ordered = sorted(self.values, key=Fraction, reverse=self.descending)
        return json.dumps(ordered) if self.strings else f"[{', '.join(ordered)}]"

    def units(self) -> float:
        return max(len(self.values), 1) / _SORT_LEAF


def recognize(task: str) -> Problem | None:
    """The problem a task text states, or None for anything else (never raises).

    A text states one multiplication (two numbers in it, and one product of them) or one list of numbers to sort
    (see :data:`ACCEPTED`). Non-negative integer products and ascending integer sorts get the reference's recursive
    decomposition; the other variants are known in one shot only. Texts that lean on another sub-task's result are
    refused: a sub-task must be solvable on its own.
    """
    if not isinstance(task, str) or _DEPENDENT.search(task):
        return None
    text = task.strip()
    try:
        return _product(text) or _sorting(text)
    except (ValueError, ArithmeticError, RecursionError):  # numbers past what the reference handles
        return None


def _product(text: str) -> Problem | None:
    if len(_NUMBER.findall(text)) != 2:
        return None
    pairs = {(m[1], m[2]) for pattern in _MUL for m in pattern.finditer(text)}
    if len(pairs) != 1:
        return None
    a, b = (_num_text(Fraction(x)) for x in pairs.pop())
    if a.isdigit() and b.isdigit():
        return _Multiply(int(a), int(b))
    return _KnownProduct(a, b)


def _sorting(text: str) -> Problem | None:
    if "sort" not in text.lower():
        return None
    found = [xs for xs in map(_number_list, re.findall(r"\[[^\[\]]*\]", text)) if xs is not None]
    if not found:  # "Sort these numbers in ascending order: 3, -1.5, 2" on one line
        line = next((ln for ln in text.splitlines() if "sort" in ln.lower() and ":" in ln), "")
        after = line.partition(":")[2].strip().rstrip(".")
        items = [x.strip() for x in after.split(",")] if after else []
        if items and all(_NUMBER.fullmatch(x) for x in items):
            found = [[_num_text(Fraction(x)) for x in items]]
    if len(found) != 1:
        return None
    values = found[0]
    descending = bool(_NOT_ASCENDING.search(text))
    strings = bool(_STRINGS.search(text))
    if not descending and not strings and all(re.fullmatch(r"-?[0-9]+", v) for v in values):
        return _Sort(tuple(int(v) for v in values))
    return _KnownSort(tuple(values), descending, strings)


def _number_list(text: str) -> list[str] | None:
    """The numbers of a JSON list of numbers (or of numeric strings), as canonical texts; None for anything else."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float | str):
            return None
        if isinstance(x, str) and not _NUMBER.fullmatch(x.strip()):
            return None
        if isinstance(x, float) and not math.isfinite(x):
            return None
        out.append(_num_text(Fraction(str(x).strip())))
    return out


def _num_text(x: Fraction) -> str:
    """A terminating decimal as the shortest text that reads back as it: ``-1.50`` -> ``-1.5``, ``2.0`` -> ``2``."""
    if x.denominator == 1:
        return str(x.numerator)
    k = 0
    while (10**k) % x.denominator:
        k += 1
        if k > _MAX_OPERAND_DIGITS:
            raise ValueError("not a terminating decimal")
    digits = str(abs(x.numerator) * (10**k // x.denominator)).rjust(k + 1, "0")
    sign = "-" if x < 0 else ""
    return f"{sign}{digits[:-k]}.{digits[-k:]}".rstrip("0")


def canonical_result(text: str) -> str:
    """The form of an answer that votes are keyed on: ``"1,234"`` -> ``"1234"``, ``"[1,2]"`` -> ``"[1, 2]"``."""
    s = text.strip()
    for _ in range(3):  # quotes and '####' may nest either way round
        if s.startswith("####"):
            s = s[4:].strip()
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":
            s = s[1:-1].strip()
    if _INT.fullmatch(s):
        digits = re.sub(r"[^0-9]", "", s.split(".")[0]).lstrip("0") or "0"
        return f"-{digits}" if s.startswith("-") and digits != "0" else digits
    xs = _int_list(s) if s.startswith("[") else None
    return json.dumps(xs) if xs is not None else " ".join(s.split()).lower()


def result_mistake(correct: str, index: int) -> str:
    """The ``index``-th plausible wrong answer to ``correct``: a slip a model makes, never canonically equal."""
    canon = canonical_result(correct)
    if re.fullmatch(r"-?[0-9]+", canon):
        sign, digits = ("-", canon[1:]) if canon.startswith("-") else ("", canon)
        kinds: list[Callable[[int], str | None]] = [
            lambda v: _drop(digits, v) if len(digits) > 1 else None,
            lambda v: _carry(digits, v),
            lambda v: _swap(digits, v),
        ]
        return canonical_result(sign + (_first(kinds, index) or _carry(digits, index)))  # "015" is written "15"
    xs = _int_list(canon)
    if xs is not None:
        list_kinds: list[Callable[[int], list[int] | None]] = [
            lambda v: _swap(xs, v),
            lambda v: _drop(xs, v) if xs else None,
            lambda v: xs[: v % len(xs) + 1] + xs[v % len(xs) :] if xs else None,  # an element written twice
        ]
        got = _first(list_kinds, index)
        return json.dumps(got if got is not None else [*xs, index])
    suffixes = [" (approximately)", " (roughly)", " or so", " (not sure)"]
    return correct.rstrip() + suffixes[index % len(suffixes)] + " (estimate)" * (index // len(suffixes))


def same_answer(expected: str, got: str) -> bool:
    """Data-set scoring: integers by value, lists element-wise (after the last '####' if any); never raises."""
    try:
        return canonical_result(expected.rsplit("####", 1)[-1]) == canonical_result(got.rsplit("####", 1)[-1])
    except Exception:  # a scorer must not take an evaluation run down over one odd answer
        return False


def _sort_task(values: Sequence[int]) -> str:
    return f"Sort in ascending order: {json.dumps(list(values))}"


def _int_list(text: str) -> list[int] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # includes ints past the 4,300-digit limit
        return None
    if isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return value
    return None


def _eval_rule(rule: str, values: Sequence[int]) -> int | None:
    """Value of an arithmetic rule over R1..Rn, or None; parsed with ``ast`` and walked, never evaluated."""
    if len(rule) > _MAX_RULE_CHARS:
        return None
    try:
        return _walk(ast.parse(rule.replace("^", "**").replace("×", "*"), mode="eval").body, values)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: outside the rule language
        return None


def _walk(node: ast.AST, values: Sequence[int]) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and (ref := _REF.fullmatch(node.id)) and 1 <= int(ref[1]) <= len(values):
        return values[int(ref[1]) - 1]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _walk(node.operand, values)
        return -operand if isinstance(node.op, ast.USub) else operand
    if not isinstance(node, ast.BinOp) or not isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Pow):
        raise ValueError(ast.dump(node)[:80])
    left, right = _walk(node.left, values), _walk(node.right, values)
    if isinstance(node.op, ast.Pow):
        if right < 0 or max(left.bit_length(), 1) * right > _MAX_VALUE_BITS:
            raise ValueError("power too large")
        power: int = left**right  # an int, right being >= 0; typeshed cannot tell from the types alone
        return power
    if isinstance(node.op, ast.Mult):
        if left.bit_length() + right.bit_length() > _MAX_VALUE_BITS:
            raise ValueError("product too large")
        return left * right
    return left + right if isinstance(node.op, ast.Add) else left - right


def _first(
    kinds: Sequence[Callable[[int], _T | None]], index: int, ok: Callable[[_T], bool] | None = None
) -> _T | None:
    """First usable mistake: kind ``index % n`` at variant ``index // n``, then later variants, then other kinds.

    Falling through keeps every index answerable when a kind does not apply (no adjacent different digits) or
    happens to be right for this problem (``-`` instead of ``+`` when the low part is 0).
    """
    for shift in range(len(kinds)):
        for variant in range(index // len(kinds), index // len(kinds) + 16):
            got = kinds[(index + shift) % len(kinds)](variant)
            if got is not None and (ok is None or ok(got)):
                return got
    return None


def _points(n: int) -> Iterator[int]:
    """Where a sequence of ``n`` items splits into two non-empty parts, the middle (``n // 2``) first, then
    alternately after and before it, further out."""
    mid = n // 2
    for d in range(n):
        for k in (mid + d, mid - d) if d else (mid,):
            if 0 < k < n:
                yield k


def _drop(seq: _S, v: int) -> _S:
    return seq[: v % len(seq)] + seq[v % len(seq) + 1 :]


def _carry(digits: str, v: int) -> str:
    """Off by 10**j at position j from the right: what a dropped or doubled carry does."""
    pos = len(digits) - 1 - v % len(digits)
    d = int(digits[pos])
    return digits[:pos] + str(d + 1 if d < 9 else d - 1) + digits[pos + 1 :]


def _swap(seq: _S, v: int) -> _S | None:
    """Two adjacent different items exchanged; None when there are none to exchange."""
    pairs = [i for i in range(len(seq) - 1) if seq[i] != seq[i + 1]]
    if not pairs:
        return None
    i = pairs[v % len(pairs)]
    return seq[:i] + seq[i + 1 : i + 2] + seq[i : i + 1] + seq[i + 2 :]
