"""Default text format for microstep answers: one ``name = value`` line per schema field.

Values are JSON (lists, numbers, strings, ``true``/``false``/``null``). The parser
reads the *last* occurrence of each field so a model may think aloud before answering,
and never repairs: text it cannot read as JSON is a format error (a red flag). Type
checking is the schema's: pydantic's default lax mode accepts ``5.0`` for an ``int``;
give the schema ``ConfigDict(strict=True)`` where that matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["FormatError", "parse_fields", "render_fields"]


class FormatError(ValueError):
    """The response text is not in the expected format."""


# One line ``name = value``: the value runs to the end of the line, less trailing blanks and backticks (at least
# one character stays). Greedy to the end of the line and stripped after is what the lazy form
# ``(.+?)[ \t`]*$`` matches, at a fifth of the cost.
_LINE = re.compile(r"^[ \t>*`-]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.+)$", re.MULTILINE)
_TRAILING = " \t`"
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # what json.loads reads a value with


def parse_fields(text: str, fields: Iterable[str]) -> dict[str, Any]:
    """Read ``field = <json>`` lines for each of ``fields`` from ``text``."""
    wanted = fields if type(fields) is tuple else tuple(fields)
    found: dict[str, str] = {}
    for name, value in _LINE.findall(text):
        if name in wanted:
            found[name] = value
    if len(found) != len(wanted):
        missing = [f for f in wanted if f not in found]
        if missing:
            raise FormatError(f"missing line(s) {', '.join(f'{m} = ...' for m in missing)}")
    out: dict[str, Any] = {}
    for name in wanted:
        line = found[name]
        raw = line.rstrip(_TRAILING) or line[:1]
        try:
            out[name] = _loads(raw)
        except (ValueError, RecursionError):
            raise FormatError(f"value of {name} is not valid JSON: {raw[:60]!r}") from None
    return out


def _loads(raw: str) -> Any:
    """``json.loads(raw)``; a value that fills the text is read by the scanner directly (a third of the time)."""
    try:
        value, end = _scan(raw, 0)
    except StopIteration:  # not a value at its first character: json.loads says what it is
        return json.loads(raw)
    return value if end == len(raw) else json.loads(raw)


def render_fields(values: dict[str, Any]) -> str:
    """Inverse of :func:`parse_fields`: the canonical text of an answer."""
    return "\n".join(f"{k} = {json.dumps(v, separators=(', ', ': '))}" for k, v in values.items())
