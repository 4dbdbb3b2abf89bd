"""Logging and progress: a live display on a terminal, JSON lines (structlog) otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO, cast

import structlog

from maker.agents.prices import usd
from maker.engine import Progress

__all__ = ["configure_logging", "ProgressDisplay", "get_logger", "money", "waiting_text"]


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


def waiting_text(now: float | None = None) -> str:
    """What the run is waiting on, if anything: ``waiting on the provider (HTTP 429, ENDPOINT) 42 s`` (a rate limit,
    a client-side limit, or a backoff after a failure); else ``""``."""
    from maker.agents import rate_limit_waits

    waits = rate_limit_waits()
    if not waits:
        return ""
    now = time.time() if now is None else now
    longest = max(waits, key=lambda w: w.until)
    return f"waiting on the provider ({longest.reason}, {longest.endpoint}) {max(0.0, longest.until - now):.0f} s"


class ProgressDisplay:
    """Steps/s, votes per step, red-flag rate, cost and ETA, and any wait on a provider's rate limit: a live bar on
    a terminal (the wait refreshed every second, steps or not), a log line every 10 s otherwise (a wait is logged by
    the backend when it begins)."""

    def __init__(self, *, live: bool, log_every_s: float = 10.0, console: Any = None) -> None:
        self.live = live
        self.console = console
        self.log_every_s = log_every_s
        self._last_log = time.monotonic()
        self._progress: Any = None
        self._task: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                BarColumn(bar_width=10),
                TextColumn(
                    "{task.completed:,}/{task.fields[total_text]} steps  ETA {task.fields[eta]}  {task.fields[rate]}"
                    "{task.fields[waiting]}"
                ),
                transient=False,
                refresh_per_second=4,
                console=self.console or Console(stderr=True),
            )
            self._progress.__enter__()
            self._ticker = threading.Thread(target=self._tick, name="maker-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def _tick(self) -> None:
        """Refresh the wait on a rate limit every second: no step is committed while it lasts."""
        while not self._stop.wait(1.0):
            if self._task is not None:
                text = waiting_text()
                self._progress.update(self._task, waiting=f"  {text}" if text else "")

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
                + (f"  wasted {p.wasted_calls / max(1, p.steps):.2f} calls/step" if p.wasted_calls else "")
                + (f"  branches {p.branches}" if p.branches else "")
                + ("" if p.cost is None else f"  {money(p.cost)}"),
                "eta": _fmt(eta_s),
                "waiting": "",
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
                branches=p.branches,
                tokens=p.tokens,
                cost_usd=None if p.cost is None else round(p.cost, 6),
            )


money = usd
"""Dollars as a person reads them (:func:`maker.agents.prices.usd`)."""


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
