"""Cheap checks of a task's result that do not know the answer: what ``solve`` verifies a composed result with.

A check is far cheaper than solving the task again, and it never uses the true answer, so it is what a run
could do for any model's result. It says only when a result is *surely* wrong; passing it is no proof.

- A product ``a * b`` (integers, or decimals read as integers scaled by their decimal places): the result must be a
  number with no more decimal places than the operands together, of the product's sign, with as many digits as a
  product of operands that long can have (the lengths of ``a`` and ``b`` together, or one fewer), and equal to
  ``a * b`` modulo 9 (*casting out nines*: digit sums) and modulo 11 (*casting out elevens*: alternating digit
  sums). Their blind spots: a wrong result that differs from the product by a multiple of 99 passes both, as two
  digits exchanged an even number of places apart do (``7006652`` for ``7600652``); exchanging adjacent
  digits, a digit dropped or doubled (the length), a carry dropped (off by ``10^j``, which is ±1 modulo 11) and
  a part shifted by an odd number of places are caught.
- A sort: the result must read as a list of numbers that is a permutation of the task's list (nothing dropped,
  added or changed) and in the order the task asks (ascending, or descending).

Tasks the reference does not recognise (:func:`~maker.workflows._reference.recognize`) are not checked; a result
that cannot be read for a task it does recognise fails.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from fractions import Fraction

from maker.workflows._reference import (
    Problem,
    _KnownProduct,
    _KnownSort,
    _Multiply,
    _number_list,
    _Sort,
    canonical_result,
    recognize,
)

__all__ = ["result_check", "problem_check"]

_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
_MAX_DIGITS = 4400  # past any product the reference reads (2,000-digit operands), and under int()'s 4,300 limit


def result_check(task: str, result: str) -> str | None:
    """Why ``result`` surely is not the answer to ``task`` (a short reason), or None: it passes, or the task is not
    one the reference recognises. Pure and cached: ``solve`` checks every composed node after every transition."""
    problem = recognize(task)
    return None if problem is None else problem_check(problem, result)


@functools.lru_cache(maxsize=4096)
def problem_check(problem: Problem, result: str) -> str | None:
    """:func:`result_check` of a recognised problem."""
    if isinstance(problem, _Multiply | _KnownProduct):
        return _product_check(str(problem.a), str(problem.b), result)
    if isinstance(problem, _Sort):
        return _sort_check([Fraction(v) for v in problem.values], False, result)
    if isinstance(problem, _KnownSort):
        return _sort_check([Fraction(v) for v in problem.values], problem.descending, result)
    return None


def _scaled(text: str) -> tuple[int, str, int] | None:
    """A decimal's sign (-1, 0 or 1), its digits as an integer's (no leading zeros) and how many are decimal places
    (trailing zeros after the point dropped); None when the text is not a decimal."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return None
    places = (match[3] or "").rstrip("0")
    digits = (match[2] + places).lstrip("0")
    if not digits:
        return 0, "0", 0
    return (-1 if match[1] else 1), digits, len(places)


def _alternating(digits: str) -> int:
    """``int(digits) % 11`` by alternating digit sums, from the units digit up."""
    return sum(int(d) * (1 if i % 2 == 0 else -1) for i, d in enumerate(reversed(digits))) % 11


def _product_check(a: str, b: str, result: str) -> str | None:
    shown = f"{a} * {b} = {_short(result)}"
    x, y, r = _scaled(a), _scaled(b), _scaled(canonical_result(result))
    if x is None or y is None:  # the reference reads its operands as decimals: never happens
        return None
    if r is None:
        return f"{shown} is not a number"
    (sx, dx, px), (sy, dy, py), (sr, dr, pr) = x, y, r
    if pr > px + py:
        return f"{shown} has {pr} decimal places, a product of these operands at most {px + py}"
    dr += "0" * (px + py - pr)  # the result as an integer scaled as the operands' product is
    if sx * sy == 0:
        return None if sr == 0 else f"{shown} is not 0"
    if sr != sx * sy:
        return f"{shown} has the wrong sign"
    low, high = len(dx) + len(dy) - 1, len(dx) + len(dy)
    if not low <= len(dr) <= high:
        return f"{shown} has {len(dr)} digits, a product of {len(dx)}- and {len(dy)}-digit numbers {low} or {high}"
    nines = (sum(map(int, dx)) * sum(map(int, dy))) % 9, sum(map(int, dr)) % 9
    if nines[0] != nines[1]:
        return f"{shown} fails casting out nines ({nines[1]} vs {nines[0]})"
    elevens = (_alternating(dx) * _alternating(dy)) % 11, _alternating(dr)
    if elevens[0] != elevens[1]:
        return f"{shown} fails casting out elevens ({elevens[1]} vs {elevens[0]})"
    return None


def _sort_check(values: list[Fraction], descending: bool, result: str) -> str | None:
    order = "descending" if descending else "ascending"
    shown = f"sorting {len(values)} numbers in {order} order gave {_short(result)}"
    if len(result) > _MAX_DIGITS * max(len(values), 1):
        return f"{shown}: far too long"
    try:
        got = _number_list(canonical_result(result))
        read = None if got is None else [Fraction(v) for v in got]
    except (ValueError, ArithmeticError):
        read = None
    if read is None:
        return f"{shown}: not a list of numbers"
    if len(read) != len(values):
        return f"{shown}: {len(read)} numbers, not {len(values)}"
    missing, extra = Counter(values) - Counter(read), Counter(read) - Counter(values)
    if missing or extra:
        lost, added = min(missing, default=None), min(extra, default=None)
        return f"{shown}: not a permutation of the list (lost {_num(lost)}, has {_num(added)} instead)"
    for i in range(len(read) - 1):
        if (read[i] < read[i + 1]) if descending else (read[i] > read[i + 1]):
            return f"{shown}: not in {order} order at position {i + 1} ({_num(read[i])}, {_num(read[i + 1])})"
    return None


def _num(x: Fraction | None) -> str:
    if x is None:
        return "nothing"
    return str(x.numerator) if x.denominator == 1 else str(float(x))


def _short(text: str, width: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 3] + "..."
