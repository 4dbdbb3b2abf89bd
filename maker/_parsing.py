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


_LINE = re.compile(r"^[ \t>*`-]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.+?)[ \t`]*$", re.MULTILINE)


def parse_fields(text: str, fields: Iterable[str]) -> dict[str, Any]:
    """Read ``field = <json>`` lines for each of ``fields`` from ``text``."""
    wanted = tuple(fields)
    found: dict[str, str] = {}
    for name, value in _LINE.findall(text):
        if name in wanted:
            found[name] = value
    missing = [f for f in wanted if f not in found]
    if missing:
        raise FormatError(f"missing line(s) {', '.join(f'{m} = ...' for m in missing)}")
    out: dict[str, Any] = {}
    for name in wanted:
        raw = found[name]
        try:
            out[name] = json.loads(raw)
        except (ValueError, RecursionError):
            raise FormatError(f"value of {name} is not valid JSON: {raw[:60]!r}") from None
    return out


def render_fields(values: dict[str, Any]) -> str:
    """Inverse of :func:`parse_fields`: the canonical text of an answer."""
    return "\n".join(f"{k} = {json.dumps(v, separators=(', ', ': '))}" for k, v in values.items())
