"""Workflow parameters given as text (``maker run WF --set NAME=VALUE``), read by each parameter's declared type.

* A parameter that takes a string (``str``, a path, a ``Literal`` or ``Enum`` of strings, or a union with one
  of these) gets the text exactly as given: ``--set name=007`` is the string ``"007"``.
* A number, bool, date, time or UUID gets the text too, and pydantic reads it as such (``3``, ``0.5``,
  ``true``); ``null`` gives None where the parameter may be None.
* Anything else (lists, dicts, models, tuples, number ``Literal``) is parsed as JSON: ``--set sizes=[3,5]``.
* A parameter of no declared type (``Any``) takes JSON when the text parses as JSON, else the text.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import pathlib
import types
import typing
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from maker.errors import UserError

__all__ = ["read_params", "reading", "type_name"]

_SCALARS = (int, float, bool, decimal.Decimal, datetime.date, datetime.time, datetime.timedelta, uuid.UUID)

Reading = Literal["text", "scalar", "json", "any"]


def read_params(model: type[BaseModel], texts: Mapping[str, str]) -> dict[str, Any]:
    """Each ``name -> text`` as the value ``model`` declares for ``name``; unknown names stay text (the
    workflow then refuses them by name)."""
    fields = model.model_fields
    out: dict[str, Any] = {}
    for name, text in texts.items():
        field = fields.get(name)
        out[name] = text if field is None else _value(name, reading(field.annotation), text, field.annotation)
    return out


def reading(annotation: Any) -> Reading:
    """How a text is read for a parameter of this type: as is, as a scalar pydantic parses, or as JSON."""
    if annotation is Any or annotation is None:
        return "any"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return reading(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        kinds = {reading(a) for a in typing.get_args(annotation) if a is not type(None)}
        if "text" in kinds:
            return "text"
        if kinds == {"scalar"}:
            return "scalar"
        return "any" if "any" in kinds else "json"
    if origin is Literal:
        return "text" if any(isinstance(v, str) for v in typing.get_args(annotation)) else "json"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "text" if all(isinstance(m.value, str) for m in annotation) else "json"
        if issubclass(annotation, (str, bytes, pathlib.PurePath)):
            return "text"
        if issubclass(annotation, _SCALARS):
            return "scalar"
    return "json"


def _value(name: str, how: Reading, text: str, annotation: Any) -> Any:
    if how == "text":
        return text
    if how == "scalar":
        return None if text == "null" and _nullable(annotation) else text
    try:
        return json.loads(text)
    except ValueError:
        if how == "any":
            return text
        raise UserError(
            f"bad parameter {name}={text}: must be JSON, as {name} is {type_name(annotation)}; "
            f"e.g. {name}='[1, 2]' for a list or {name}='{{\"a\": 1}}' for a mapping"
        ) from None


def _nullable(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _nullable(typing.get_args(annotation)[0])
    return type(None) in typing.get_args(annotation)


def type_name(annotation: Any) -> str:
    """A type as a person writes it: ``int``, ``list[str]``, ``str | None``."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
