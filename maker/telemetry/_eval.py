"""An evaluation's OpenTelemetry trace: one ``maker.eval`` span, and under it the ``maker.run`` span of every problem run
now (each with its commit groups and notable steps, sampled as a run's are; see :mod:`maker.telemetry._otel`).

One trace for the whole evaluation, so a back end shows it as one timeline: the problems run side by side, which
failed, where the time went. The runs' spans carry the problem's id and its score, to find the wrong ones by
attribute. Problems read back from an earlier evaluation under the same name run nothing and get no span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from maker.agents import Roster
from maker.telemetry._otel import RunTrace, _tracer

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["EvalTrace", "eval_trace"]


class EvalTrace:
    """The ``maker.eval`` span of an evaluation, and the tracer its runs' spans go to (built by :func:`eval_trace`)."""

    def __init__(self, tracer: Tracer, span: Span, name: str) -> None:
        self.tracer = tracer
        self.span = span
        self.name = name

    def run(self, *, problem: str, workflow: str, seed: int, roster: Roster) -> RunTrace:
        """The trace of one problem's run, under the evaluation's span (it is current while the evaluation runs). The
        caller ends it (:meth:`RunTrace.end`), once it has noted the problem's score."""
        attrs = {"maker.eval.name": self.name, "maker.eval.problem": problem}
        return RunTrace(self.tracer, workflow=workflow, seed=seed, roster=roster, attributes=attrs)

    def finished(self, attributes: Mapping[str, Any]) -> None:
        """The evaluation's figures (accuracy, correct, failed, cost), on its span."""
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})


@contextlib.contextmanager
def eval_trace(otel: bool | None, *, attributes: Mapping[str, Any]) -> Iterator[EvalTrace | None]:
    """The trace of the evaluation run inside: an :class:`EvalTrace` whose ``maker.eval`` span (``attributes``: its
    name, workflow, data, scorer, agents) is the current span inside, or None when no trace is asked for (``otel``:
    as for :func:`~maker.telemetry.run_trace`). Leaving ends the span, with the error that left, if one did, and
    shuts down a provider made for it."""
    setup = _tracer(otel)
    if setup is None:
        yield None
        return
    from opentelemetry import trace

    tracer, provider = setup
    span = tracer.start_span("maker.eval", attributes=dict(attributes))
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield EvalTrace(tracer, span, str(attributes.get("maker.eval.name", "")))
    except BaseException as exc:
        span.set_attribute("maker.status", "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
        raise
    finally:
        span.end()
        if provider is not None:
            provider.shutdown()
