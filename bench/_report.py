"""Shared output for the benchmarks: one JSON object, or aligned ``name  value`` lines."""

from __future__ import annotations

import json
from typing import Any


def emit(figures: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
