"""A run's OpenTelemetry trace: the :class:`~maker.engine.Observer` that turns what the ledger records into spans.

Only this module imports ``opentelemetry``, and only when a trace is asked for (see :func:`run_trace`); the engine
never does. The spans are made after the fact, with the times the ledger recorded, so nothing waits on them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from maker.agents import Agent, Roster
from maker.dsl import MicrostepCall
from maker.engine import BudgetExceeded, Decision, Ledger, RunSummary
from maker.errors import RunError, UserError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "RunTrace",
    "run_trace",
    "group_traced",
    "GROUPS_IN_FULL",
    "STEPS_PER_GROUP",
    "ENDPOINT_VARIABLES",
]

GROUPS_IN_FULL = 256
"""Commit groups of a process's segment that each get a span; past them, see :func:`group_traced`."""
STEPS_PER_GROUP = 4
"""Notable-step spans under one commit group's span, at most (wrong answers first)."""
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""The standard variables that ask for a trace (and say where the OTLP HTTP exporter sends it)."""

_log = structlog.get_logger("maker")


def group_traced(index: int) -> bool:
    """Whether the commit group ``index`` (0-based, in this process) gets a span: the first
    :data:`GROUPS_IN_FULL` do; after them, the stride doubles each time the count of groups does (every 2nd group
    up to 512, every 4th up to 1,024, ...), so each doubling of a run's length adds 128 group spans."""
    if index < GROUPS_IN_FULL:
        return True
    stride = 1 << (index // GROUPS_IN_FULL).bit_length()
    return index % stride == 0


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _system(agent: Agent) -> str:
    """``gen_ai.system``: the backend's kind (``openai``, ``vllm``, ``hf``, ``simulated``)."""
    return agent.spec.split(":", 1)[0]


def _model(agent: Agent) -> str:
    return agent.model or agent.spec.split(":", 1)[-1]


class RunTrace:
    """One process's segment of a run as spans: the run, its sampled commit groups, and their notable steps (more
    than one round, escalated, or wrong). Built by :func:`run_trace`; the engine's ledger calls it (see
    :class:`~maker.engine.Observer`)."""

    def __init__(
        self, tracer: Tracer, *, workflow: str, seed: int, roster: Roster, attributes: Mapping[str, Any] | None = None
    ) -> None:
        self.tracer = tracer
        self.workflow = workflow
        self.seed = seed
        self.attributes = dict(attributes or {})
        """More attributes of the run's span: what made the run (a fork's parent, an evaluation's problem)."""
        self.agents: Sequence[Agent] = roster.agents
        self.voting = len(roster.voting)
        self.ledger: Ledger | None = None
        self.span: Span | None = None
        self.groups = self.groups_traced = 0
        self.notable = self.notable_traced = 0
        self._traced_now = True
        self._kept: list[tuple[bool, float, float, dict[str, Any]]] = []
        self._group_notable = 0
        self._seen = (0, 0, 0, 0, 0.0)  # calls, red flags, prompt tokens, completion tokens, cost (at the last commit)
        self._summary: RunSummary | None = None

    # -- the engine's observer --------------------------------------------------------------------
    def on_begin(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._seen = self._totals(ledger)
        if self.span is None:
            self.span = self.tracer.start_span("maker.run", attributes=self._run_attributes(ledger))

    def on_step(
        self, step: int, call: MicrostepCall, decision: Decision, *, wrong: bool, t_start: float, dur: float
    ) -> None:
        self.notable += 1
        self._group_notable += 1
        if not self._traced_now:
            return
        kept = self._kept
        if len(kept) >= STEPS_PER_GROUP:
            if not wrong:
                return
            right = next((i for i, k in enumerate(kept) if not k[0]), None)
            if right is None:
                return
            del kept[right]
        kept.append((wrong, t_start, dur, self._step_attributes(step, call, decision, wrong)))

    def on_commit(self, ledger: Ledger, step: int) -> None:
        try:
            self._commit(ledger)
        except Exception as exc:  # a trace must never stop the run it watches
            _log.warning("trace: commit group not traced", error=f"{type(exc).__name__}: {exc}"[:300])
            self._kept = []
            self._group_notable = 0

    def _commit(self, ledger: Ledger) -> None:
        index = self.groups
        self.groups += 1
        now = time.time()
        totals = self._totals(ledger)
        seen, self._seen = self._seen, totals
        if self._traced_now and self.span is not None:
            self.groups_traced += 1
            self.notable_traced += len(self._kept)
            pending = ledger.pending
            attrs: dict[str, Any] = {
                "maker.steps.first": pending[0].step,
                "maker.steps.last": pending[-1].step,
                "maker.steps": len(pending),
                "maker.calls": totals[0] - seen[0],
                "maker.red_flags": totals[1] - seen[1],
                "gen_ai.usage.input_tokens": totals[2] - seen[2],
                "gen_ai.usage.output_tokens": totals[3] - seen[3],
                "maker.notable_steps": self._group_notable,
                "maker.notable_steps.traced": len(self._kept),
            }
            if ledger.cost() is not None:
                attrs["maker.cost_usd"] = totals[4] - seen[4]
            from opentelemetry import trace

            parent = trace.set_span_in_context(self.span)
            group = self.tracer.start_span(
                "maker.commit", context=parent, attributes=attrs, start_time=_ns(pending[0].t_start)
            )
            inside = trace.set_span_in_context(group)
            for wrong, t_start, dur, step_attrs in sorted(self._kept, key=lambda k: k[3]["maker.step"]):
                s = self.tracer.start_span("maker.step", context=inside, attributes=step_attrs, start_time=_ns(t_start))
                if wrong:
                    s.set_status(trace.Status(trace.StatusCode.ERROR, "the answer differs from the ground truth"))
                s.end(end_time=_ns(t_start + dur))
            group.end(end_time=_ns(now))
        self._kept = []
        self._group_notable = 0
        self._traced_now = group_traced(index + 1)

    # -- the run's span ---------------------------------------------------------------------------
    def note(self, attributes: Mapping[str, Any]) -> None:
        """More attributes of the run's span, set before it ends (an evaluation's score of the run's answer)."""
        if self.span is not None:
            self.span.set_attributes(dict(attributes))

    def finished(self, summary: RunSummary) -> None:
        """The run's summary, whose status, errors, k and cost the run's span carries."""
        self._summary = summary

    def end(self, error: BaseException | None = None) -> None:
        """End the run's span: with the summary's figures, or the ledger's as the last commit left them, and
        ``error`` (with a span for the step that failed, when it names one)."""
        from opentelemetry import trace

        if self.span is None:
            self.span = self.tracer.start_span(
                "maker.run", attributes={"maker.workflow": self.workflow, **self.attributes}
            )
        span = self.span
        led = self.ledger
        if led is not None:
            totals = self._totals(led)
            span.set_attributes(
                {
                    "maker.steps": led.steps - led.first_step,
                    "maker.segment.steps": led.steps - led.segment_first_step,
                    "maker.calls": led.calls,
                    "maker.red_flags": led.red_flags,
                    "maker.max_rounds": led.max_rounds,
                    "gen_ai.usage.input_tokens": totals[2],
                    "gen_ai.usage.output_tokens": totals[3],
                }
            )
            cost = led.cost()
            if cost is not None:
                span.set_attribute("maker.cost_usd", cost)
        span.set_attributes(
            {
                "maker.commit_groups": self.groups,
                "maker.commit_groups.traced": self.groups_traced,
                "maker.notable_steps": self.notable,
                "maker.notable_steps.traced": self.notable_traced,
            }
        )
        s = self._summary
        if s is not None:
            span.set_attribute("maker.status", s.status)
            if s.errors is not None:
                span.set_attribute("maker.errors", s.errors)
            if s.k is not None:
                span.set_attribute("maker.k", s.k)
            if s.solved is not None:
                span.set_attribute("maker.solved", s.solved)
        if isinstance(error, BudgetExceeded):  # stopped at a commit, as asked: nothing failed
            span.set_attribute("maker.status", "stopped")
            span.add_event("budget reached", {"maker.message": str(error)[:500]})
        elif error is not None:
            span.set_attribute("maker.status", "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
            if isinstance(error, RunError) and error.step is not None:
                failed = self.tracer.start_span(
                    "maker.step.failed",
                    context=trace.set_span_in_context(span),
                    attributes=self._failure_attributes(error),
                )
                failed.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:500]))
                failed.end()
        span.end()

    # -- attributes -------------------------------------------------------------------------------
    def _run_attributes(self, ledger: Ledger) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "maker.run_id": ledger.run_id,
            "maker.workflow": self.workflow,
            "maker.agents": [a.spec for a in self.agents],
            "maker.seed": self.seed,
            "maker.segment.first_step": ledger.steps,
            **self.attributes,
        }
        ks = {p.k for p in ledger.policies.values() if not p.fixed} or {p.k for p in ledger.policies.values()}
        if len(ks) == 1:
            attrs["maker.k"] = next(iter(ks))
        if self.agents:
            attrs["gen_ai.system"] = _system(self.agents[0])
            attrs["gen_ai.request.model"] = _model(self.agents[0])
        return attrs

    def _step_attributes(self, step: int, call: MicrostepCall, d: Decision, wrong: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "maker.step": step,
            "maker.microstep": call.microstep.name,
            "maker.rounds": d.rounds,
            "maker.votes": d.votes,
            "maker.samples": d.samples,
            "maker.red_flags": d.red_flags,
            "maker.escalated": bool(d.escalated) or 0 < d.agent < self.voting,
            "maker.wrong": wrong,
            "maker.calls": sum(d.calls.values()),
        }
        if call.tag is not None:
            attrs["maker.tag"] = str(call.tag)
        if d.flags:
            attrs["maker.red_flags.reasons"] = sorted(d.flags)
        if 0 <= d.agent < len(self.agents):
            agent = self.agents[d.agent]
            attrs["maker.agent"] = agent.spec
            attrs["gen_ai.system"] = _system(agent)
            attrs["gen_ai.request.model"] = _model(agent)
        if d.usage:
            attrs["gen_ai.usage.input_tokens"] = sum(r[0] for r in d.usage.values())
            attrs["gen_ai.usage.output_tokens"] = sum(r[2] for r in d.usage.values())
            cost = self._cost(d.usage)
            if cost is not None:
                attrs["maker.cost_usd"] = cost
        else:
            attrs["maker.tokens"] = d.tokens
        return attrs

    def _failure_attributes(self, error: RunError) -> dict[str, Any]:
        attrs: dict[str, Any] = {"maker.step": error.step or 0, "maker.retryable": bool(error.retryable)}
        if error.agent is not None:
            attrs["maker.agent"] = str(error.agent)
        return attrs

    def _cost(self, usage: dict[int, list[int]]) -> float | None:
        if self.ledger is None:
            return None
        cost = 0.0
        for a, r in usage.items():
            price = self.ledger.prices[a] if a < len(self.ledger.prices) else None
            if price is None:
                return None
            cost += price.cost(r[0], r[1], r[2])
        return cost

    @staticmethod
    def _totals(ledger: Ledger) -> tuple[int, int, int, int, float]:
        prompt = sum(r[0] for r in ledger.usage)
        completion = sum(r[2] for r in ledger.usage)
        return ledger.calls, ledger.red_flags, prompt, completion, ledger.cost(wasted=False) or 0.0


# -- which tracer -------------------------------------------------------------------------------------
def _app_provider() -> Any:
    """The application's tracer provider, or None when it has set none (the API's default proxy, or no-op)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def _tracer(otel: bool | None) -> tuple[Tracer, TracerProvider | None] | None:
    """The tracer a run's trace goes to, and the provider made for it (None: the application's, not ours to shut
    down); None when no trace is asked for. ``otel``: True asks for one, False refuses, None leaves it to the
    environment (the endpoint variables, or an application that has set a tracer provider)."""
    if otel is False or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    by_env = any(os.environ.get(v) for v in ENDPOINT_VARIABLES)
    if not otel and not by_env and "opentelemetry.trace" not in sys.modules:
        return None  # nobody asked, and no application has set a provider (it would have imported the API)
    try:
        from opentelemetry import trace  # noqa: F401
    except ImportError:
        if otel:
            raise UserError(
                "--otel needs OpenTelemetry, which is not installed: pip install 'maker[otel]' (opentelemetry-sdk "
                "and opentelemetry-exporter-otlp-proto-http)"
            ) from None
        _log.debug("no trace: the OTLP endpoint variable is set but opentelemetry is not installed")
        return None
    version = _version()
    app = _app_provider()
    if app is not None:
        return app.get_tracer("maker", version), None
    if not otel and not by_env:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise UserError(
            "a trace was asked for (--otel or OTEL_EXPORTER_OTLP_*ENDPOINT) but the OpenTelemetry SDK or its OTLP "
            "HTTP exporter is not installed: pip install 'maker[otel]'"
        ) from None
    attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "maker"}
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("maker", version), provider


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maker")
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def run_trace(
    otel: bool | None, *, workflow: str, seed: int, roster: Roster, attributes: Mapping[str, Any] | None = None
) -> Iterator[RunTrace | None]:
    """The trace of the run started, resumed or forked inside: a :class:`RunTrace` to hand the engine as its
    observer, or None when no trace is asked for (``otel``: see :func:`_tracer`). ``attributes``: more of the run's
    span (a fork's parent). Leaving ends the run's span (with the error that left, if one did) and, when the trace
    has its own provider, sends what is left and shuts it down."""
    setup = _tracer(otel)
    if setup is None:
        yield None
        return
    tracer, provider = setup
    trace = RunTrace(tracer, workflow=workflow, seed=seed, roster=roster, attributes=attributes)
    try:
        yield trace
    except BaseException as exc:
        trace.end(exc)
        raise
    else:
        trace.end()
    finally:
        if provider is not None:
            provider.shutdown()
