"""Logging and progress: a live display on a terminal, JSON lines (structlog) otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO, cast

import structlog

from maker.engine import Progress

__all__ = ["configure_logging", "ProgressDisplay", "get_logger"]


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written: a caller that swaps it (a test runner capturing
    output, click's CliRunner) and closes the old one does not leave the logger writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, json_logs: bool | None = None, level: str = "info") -> None:
    """JSON lines on stderr when it is not a terminal (or when asked); readable lines otherwise."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # _Stderr has the two methods PrintLogger uses (write, flush), not all of TextIO.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("maker").bind(**context)


class ProgressDisplay:
    """Steps/s, votes per step, red-flag rate and ETA: a live bar on a terminal, a log line every 10 s otherwise."""

    def __init__(self, *, live: bool, log_every_s: float = 10.0, console: Any = None) -> None:
        self.live = live
        self.console = console
        self.log_every_s = log_every_s
        self._last_log = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                BarColumn(bar_width=10),
                TextColumn(
                    "{task.completed:,}/{task.fields[total_text]} steps  ETA {task.fields[eta]}  {task.fields[rate]}"
                ),
                transient=False,
                refresh_per_second=4,
                console=self.console or Console(stderr=True),
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def __call__(self, p: Progress) -> None:
        votes = p.calls / p.steps if p.steps else 0.0
        flag_rate = p.red_flags / p.calls if p.calls else 0.0
        eta_s = None
        if p.expected_steps and p.steps_per_s > 0:
            eta_s = max(0.0, (p.expected_steps - p.steps) / p.steps_per_s)
        if self._progress is not None:
            fields = {
                "total_text": f"{p.expected_steps:,}" if p.expected_steps else "?",
                "rate": f"{p.steps_per_s:,.0f}/s  {votes:.3f} votes/step  red flags {flag_rate:.2%}  errors {p.errors}"
                + (f"  wasted {p.wasted_calls / max(1, p.steps):.2f} calls/step" if p.wasted_calls else ""),
                "eta": _fmt(eta_s),
            }
            if self._task is None:
                self._task = self._progress.add_task(p.run_id, total=p.expected_steps, completed=p.steps, **fields)
            else:
                self._progress.update(self._task, completed=p.steps, **fields)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            get_logger(run_id=p.run_id).info(
                "progress",
                steps=p.steps,
                expected_steps=p.expected_steps,
                steps_per_s=round(p.steps_per_s, 1),
                votes_per_step=round(votes, 4),
                red_flag_rate=round(flag_rate, 5),
                errors=p.errors,
                eta_s=None if eta_s is None else round(eta_s, 1),
                wasted_calls=p.wasted_calls,
            )


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
