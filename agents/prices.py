"""What a model's tokens cost in money: prices per million tokens, a dated table of common models' published
prices, and a user's own prices file.

An agent's price comes from, first to last:

1. its spec's ``price=IN/CACHED/OUT`` (US dollars per million input, cached input and output tokens:
   ``openai:my-model@http://host/v1,price=0.4/0.1/1.6``);
2. a prices file (``--prices FILE``): JSON or TOML mapping a model name to its prices, either as
   ``"IN/CACHED/OUT"`` or as ``{input = 0.4, cached = 0.1, output = 1.6}`` (``cached`` defaults to ``input``);
3. :data:`KNOWN`, the published prices of common hosted models as of :data:`PRICES_DATE`; a simulated agent named
   after one of them (``simulated:gpt-4.1-mini``) is priced as that model, so a simulated run says what the same
   run would cost against the provider.

A local model (``hf:``, ``vllm:``) or an unknown one has no price: its cost is shown as unknown, never as zero,
unless one is given (``price=0/0/0`` for hardware you already pay for). The prices a run used are recorded with
it, so its cost reads the same after this table changes.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maker.errors import UserError

__all__ = ["Price", "KNOWN", "PRICES_DATE", "parse_price", "load_prices", "known_price", "cost_of", "usd"]

PRICES_DATE = "2025-12-01"
"""When :data:`KNOWN` was copied from the providers' published price lists."""


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens: input (prompt), cached input, output (completion)."""

    input: float
    cached: float
    output: float

    def __post_init__(self) -> None:
        for name in ("input", "cached", "output"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise UserError(f"price: {name} must be a number of dollars per million tokens, 0 or more, got {v!r}")

    def cost(self, prompt: int, cached: int, completion: int) -> float:
        """Dollars for ``prompt`` input tokens of which ``cached`` were cached, and ``completion`` output tokens."""
        fresh = max(0, prompt - cached)
        return (fresh * self.input + cached * self.cached + completion * self.output) / 1e6

    def as_list(self) -> list[float]:
        return [self.input, self.cached, self.output]

    def __str__(self) -> str:
        return f"${_num(self.input)}/${_num(self.cached)}/${_num(self.output)} per M tokens (in/cached/out)"


def _num(x: float) -> str:
    return f"{x:g}"


# Published list prices, US dollars per million tokens (input, cached input, output), as of PRICES_DATE.
KNOWN: dict[str, Price] = {
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
    "claude-haiku-4.5": Price(1.00, 0.10, 5.00),
    "claude-sonnet-4.5": Price(3.00, 0.30, 15.00),
    "deepseek-v3.1": Price(0.56, 0.07, 1.68),
}


def parse_price(text: Any, where: str = "price") -> Price:
    """``IN/CACHED/OUT`` or ``IN/OUT`` (cached input at the input price), dollars per million tokens."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise UserError(f"{where}: write IN/CACHED/OUT dollars per million tokens (e.g. 0.4/0.1/1.6), got {text!r}")
    parts = str(text).split("/")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise UserError(f"{where}: write IN/CACHED/OUT dollars per million tokens (e.g. 0.4/0.1/1.6), got {text!r}")
    if len(values) == 2:
        values = [values[0], values[0], values[1]]
    try:
        return Price(*values)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _entry(model: str, value: Any, path: str) -> Price:
    where = f"prices file {path}: {model!r}"
    if isinstance(value, str):
        return parse_price(value, where)
    if isinstance(value, Mapping):
        unknown = set(value) - {"input", "cached", "output"}
        if unknown or "input" not in value or "output" not in value:
            raise UserError(f"{where}: give input, output and optionally cached (dollars per million tokens)")
        try:
            return Price(float(value["input"]), float(value.get("cached", value["input"])), float(value["output"]))
        except (TypeError, ValueError):
            raise UserError(f"{where}: prices must be numbers, got {dict(value)!r}") from None
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    raise UserError(f'{where}: give "IN/CACHED/OUT" or a table of input, cached and output')


def load_prices(path: str | Path) -> dict[str, Price]:
    """A user's prices file: JSON (``.json``) or TOML (anything else), model name to prices."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"prices file {p}: cannot read it ({exc.strerror or exc})") from None
    try:
        data: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"prices file {p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'} ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"prices file {p}: expected a table of model names")
    return {str(model): _entry(str(model), value, str(p)) for model, value in data.items()}


def known_price(model: str | None, prices: Mapping[str, Price] | None = None) -> Price | None:
    """``model``'s price from ``prices`` (a user's file), else from :data:`KNOWN`. A simulated preset with a
    temperature suffix (``gpt-4.1-mini-t1.0``) is priced as its model."""
    if not model:
        return None
    for table in (prices or {}, KNOWN):
        if model in table:
            return table[model]
        base, sep, temp = model.rpartition("-t")
        if sep and base in table and temp.replace(".", "", 1).isdigit():
            return table[base]
    return None


def usd(cost: float | None) -> str:
    """Dollars as a person reads them: ``$3,512.40``, ``$0.0123`` (under $10, four decimals: a small sum reads as
    what it is, not $0.00), ``unknown``."""
    if cost is None:
        return "unknown"
    return f"${cost:,.2f}" if cost >= 10 else f"${cost:,.4f}"


def cost_of(price: Price | Sequence[float] | None, prompt: int, cached: int, completion: int) -> float | None:
    """Dollars for these tokens at ``price`` (a :class:`Price`, or ``[input, cached, output]`` as a run records it);
    None when the price is unknown."""
    if price is None:
        return None
    if not isinstance(price, Price):
        price = Price(*price)
    return price.cost(prompt, cached, completion)
