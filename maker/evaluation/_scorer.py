"""A benchmark's own scorer for ``maker eval --scorer``: what counts as right is the benchmark's to say.

A scorer is a function ``scorer(answer, expected, problem) -> float`` (or ``bool``):

- ``answer``: the workflow's answer as text (``str(result[answer_key])``);
- ``expected``: the problem's ``"answer"`` as text (JSON-encoded when the data file gives a list or a number);
- ``problem``: the :class:`~maker.evaluation.Problem`, whose ``record`` is the data file's whole object (for the
  extra fields a benchmark's scorer may need, such as ``metadata``).

It returns a score from 0 to 1 (``True`` is 1, ``False`` 0); the evaluation's accuracy is the mean score. A scorer
that raises, or returns anything else, fails the scoring of that problem, with a message saying what it did; the
other problems go on. It is given as ``package.module:function`` or ``path/to/file.py:function``, as workflows are.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maker.errors import UserError
from maker.runs import load_file
from maker.workflows import same_answer

if TYPE_CHECKING:
    from maker.evaluation._datasets import Problem

__all__ = ["BUILTIN_SCORER", "Scorer", "load_scorer"]

BUILTIN_SCORER = "built in (integers by value, lists element by element, else text)"
"""How the summary names the scorer used when none is given."""


@dataclass(frozen=True, slots=True)
class Scorer:
    """A scoring function and the name the summary gives it."""

    name: str
    fn: Callable[[str, str, Problem], Any]

    def score(self, answer: str, expected: str, problem: Problem) -> tuple[float | None, str | None]:
        """``(score, None)``, or ``(None, why)`` when the scorer raised or returned something other than a score."""
        try:
            value = self.fn(answer, expected, problem)
        except Exception as exc:  # the benchmark's code: this problem's scoring fails, the others go on
            return None, f"scorer {self.name} raised {type(exc).__name__}: {exc}"
        if isinstance(value, bool):
            return float(value), None
        if isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1:
            return float(value), None
        return None, f"scorer {self.name} returned {value!r}; a scorer returns a number from 0 to 1, or a bool"


def _builtin(answer: str, expected: str, problem: Problem) -> bool:
    return same_answer(expected, answer)


def load_scorer(ref: str | None) -> Scorer:
    """The scorer ``ref`` names (``module:function`` or ``file.py:function``); the built-in one for None."""
    if ref is None:
        return Scorer(BUILTIN_SCORER, _builtin)
    where, sep, attr = ref.rpartition(":")
    if not sep or not where or not attr:
        raise UserError(
            f"scorer {ref!r}: give module:function or path/to/file.py:function, "
            "where function(answer, expected, problem) returns a score from 0 to 1"
        )
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = os.path.abspath(os.path.expanduser(where))
        missing = f"scorer {ref!r}: no file {path}; give the .py file that defines the scoring function"
        module: Any = load_file(path, "scorer file", missing)
        name = f"{path}:{attr}"
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:  # modules in the working directory are found
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UserError(f"cannot load scorer {ref!r}: {exc}") from None
        name = ref
    try:
        fn = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise UserError(f"cannot load scorer {ref!r}: {where} has no {attr!r}") from None
    if not callable(fn):
        raise UserError(f"scorer {ref!r} is a {type(fn).__name__}, not a function(answer, expected, problem) -> score")
    return Scorer(name, fn)
