"""Data sets for ``maker eval``: JSON lines ``{"id", "question", "answer"}``, checked whole before anything runs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maker.errors import UserError

__all__ = ["Problem", "load_problems"]

_FIELDS = ("id", "question", "answer")


@dataclass(frozen=True, slots=True)
class Problem:
    id: str
    question: str
    answer: str
    line: int
    """Line of the data file it was read from (1-based), for error messages."""
    record: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """The data file's whole object, its other fields (a benchmark's ``metadata``) included: for a scorer."""


def load_problems(path: str | os.PathLike[str], limit: int | None = None) -> list[Problem]:
    """Every problem of a JSON-lines data file (the first ``limit``); the whole file is checked either way."""
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f'no data file at {p}; give a JSON-lines file with one {{"id", "question", "answer"}} object per line'
        )
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{p} is not UTF-8 text ({exc}); a data file is JSON lines") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            problems.append(_problem(p, n, line, seen))
    if not problems:
        raise UserError(f'{p} holds no problems; each line should be {{"id", "question", "answer"}}')
    return problems[:limit] if limit is not None else problems


def _problem(p: Path, n: int, line: str, seen: dict[str, int]) -> Problem:
    where = f"{p}, line {n}"
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise UserError(
            f'{where} is not JSON ({exc}); each line must be one object {{"id", "question", "answer"}}'
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f'{where} is a JSON {type(obj).__name__}, not an object {{"id", "question", "answer"}}')
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        raise UserError(
            f'{where} has no {", ".join(map(repr, missing))}; every line needs "id", "question" and '
            f'"answer" (this one has {", ".join(map(repr, obj)) or "nothing"})'
        )
    pid, question, answer = obj["id"], obj["question"], obj["answer"]
    if isinstance(pid, bool) or not isinstance(pid, str | int) or not str(pid).strip():
        raise UserError(f'{where}: "id" must be a non-empty string or an integer, got {pid!r}')
    if not isinstance(question, str) or not question.strip():
        raise UserError(f'{where}: "question" must be non-empty text, got {question!r}')
    pid = str(pid)
    if pid in seen:
        raise UserError(f"{where}: id {pid!r} is also on line {seen[pid]}; ids must be unique (each names its run)")
    seen[pid] = n
    return Problem(pid, question, answer if isinstance(answer, str) else json.dumps(answer), n, obj)
