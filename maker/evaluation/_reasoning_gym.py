"""reasoning-gym data sets for ``maker eval rg:NAME``: problems generated, not read, and scored by the data set's own
``score_answer``.

`reasoning-gym <https://github.com/open-thought/reasoning-gym>`_ generates its problems from a seed: the same name,
size, seed and configuration give the same problems, so an evaluation under the same name finds the same runs to read
back or resume. It is imported only when such a data set is asked for (``pip install 'maker[rg]'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from maker.errors import UserError
from maker.evaluation._datasets import Problem
from maker.evaluation._scorer import Scorer

__all__ = ["PREFIX", "ReasoningGym", "is_reasoning_gym", "reasoning_gym_data"]

PREFIX = "rg:"
"""How a data argument names a reasoning-gym data set: ``rg:products``."""


def is_reasoning_gym(data: object) -> bool:
    """Whether ``data`` names a reasoning-gym data set (``rg:NAME``) rather than a file."""
    return isinstance(data, ReasoningGym) or (isinstance(data, str) and data.startswith(PREFIX))


@dataclass(frozen=True, kw_only=True, slots=True)
class ReasoningGym:
    """A reasoning-gym data set, checked: build it with :func:`reasoning_gym_data`."""

    name: str
    """The data set's registered name (``products``, ``basic_arithmetic``, ``spell_backward``, ...)."""
    size: int
    """How many problems it generates."""
    seed: int
    """The generator's seed: the same seed, the same problems."""
    config: dict[str, Any] = field(default_factory=dict)
    """The other fields of the data set's configuration, over its defaults."""

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def settings(self) -> dict[str, Any]:
        """What generated the problems, for the evaluation's recorded settings."""
        return {"source": "reasoning-gym", "name": self.name, "size": self.size, "seed": self.seed, **self.config}

    def _dataset(self) -> Any:
        rg = _import()
        try:
            return rg.create_dataset(self.name, size=self.size, seed=self.seed, **self.config)
        except (AssertionError, ValueError, TypeError) as exc:  # the data set's own checks of its configuration
            raise UserError(
                f"{self}: reasoning-gym refused the configuration {self.config}: {exc or 'invalid'}"
            ) from None

    def problems(self, limit: int | None = None) -> list[Problem]:
        """The generated problems (the first ``limit``), ids ``0``, ``1``, ...; each problem's ``record`` is the
        reasoning-gym entry, its ``metadata`` included, as the data set's scorer wants it."""
        ds = self._dataset()
        n = self.size if limit is None else min(limit, self.size)
        return [_problem(i, ds[i]) for i in range(n)]

    def scorer(self) -> Scorer:
        """The data set's own ``score_answer(answer, entry)``, named ``reasoning-gym:NAME``."""
        ds = self._dataset()

        def score(answer: str, expected: str, problem: Problem) -> float:
            return float(ds.score_answer(answer=answer, entry=problem.record))

        return Scorer(f"reasoning-gym:{self.name}", score)


def _problem(index: int, entry: Mapping[str, Any]) -> Problem:
    answer = entry.get("answer")
    if not isinstance(answer, str):
        answer = json.dumps(answer, default=str)
    return Problem(str(index), str(entry["question"]), answer, index + 1, dict(entry))


def reasoning_gym_data(
    data: str, *, size: int | None = None, seed: int = 0, config: Mapping[str, Any] | Sequence[str] = ()
) -> ReasoningGym:
    """The reasoning-gym data set ``data`` (``rg:NAME``) names, checked: a known name, configuration fields the data
    set has. ``size``: problems to generate (default: the data set's own, 500 for most); ``seed``: the generator's,
    unless ``config`` gives one; ``config``: fields of the data set's configuration, as a mapping or as ``KEY=VALUE``
    texts (a value read as JSON where it parses, else as text)."""
    name = data.removeprefix(PREFIX).strip()
    rg = _import()
    registered = sorted(rg.factory.DATASETS)
    if not name:
        raise UserError(f"give a reasoning-gym data set after {PREFIX}, one of: {', '.join(registered)}")
    if name not in registered:
        close = difflib.get_close_matches(name, registered, n=5, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else "."
        raise UserError(
            f"reasoning-gym has no data set {name!r}{hint} `maker eval {PREFIX}` lists all {len(registered)} of them"
        )
    fields = {f.name: f for f in dataclasses.fields(rg.factory.DATASETS[name][1])}
    values = _read_config(config, fields, name)
    if size is None:
        default = fields["size"].default if "size" in fields else dataclasses.MISSING
        size = default if isinstance(default, int) else 500
    if size < 1:
        raise UserError(f"size must be at least 1, got {size}")
    seed = values.pop("seed", seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"the generator's seed must be an integer, got {seed!r}")
    found = ReasoningGym(name=name, size=size, seed=seed, config=values)
    found._dataset()  # the data set's own checks of its configuration, before anything runs
    return found


def _read_config(config: Mapping[str, Any] | Sequence[str], fields: Mapping[str, Any], name: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    items = config.items() if isinstance(config, Mapping) else (_pair(text) for text in config)
    for key, value in items:
        if key not in fields:
            known = ", ".join(k for k in fields if k != "size")
            raise UserError(f"reasoning-gym data set {name!r} has no configuration field {key!r}; it has: {known}")
        if key == "size":
            raise UserError(f"give the number of problems as --size (`size`), not as configuration field {key!r}")
        values[key] = _value(value, fields[key].type) if isinstance(value, str) else value
    return values


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--rg-config takes KEY=VALUE (a field of the data set's configuration), got {text!r}")
    return key.strip(), value


def _value(text: str, kind: Any) -> Any:
    """A configuration value as typed on the command line: JSON where it parses (numbers, true, lists), else text;
    a field declared ``str`` keeps the text."""
    if kind is str or kind == "str":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return tuple(value) if isinstance(value, list) and "tuple" in str(kind).lower() else value


def _import() -> Any:
    try:  # by name: reasoning-gym ships no type information
        reasoning_gym = importlib.import_module("reasoning_gym")
        importlib.import_module("reasoning_gym.factory")
    except ImportError:
        raise UserError(
            "reasoning-gym data sets (rg:NAME) need reasoning-gym, which is not installed: pip install 'maker[rg]'"
        ) from None
    return reasoning_gym
