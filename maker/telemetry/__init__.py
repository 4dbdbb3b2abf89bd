"""OpenTelemetry traces of a run: with ``--otel`` (``otel=True``), the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variables, or an application that has set its own tracer provider, a run
started, resumed or forked emits one trace (a fork: its new steps, not the prefix it re-applies); an evaluation emits
one trace, a ``maker.eval`` span over its problems' runs; ``maker replay`` emits nothing.

The trace holds:

* a ``maker.run`` span for this process's segment of the run (run id, workflow, agents, seed, k; at the end steps,
  calls, red flags, errors, tokens and cost where known, and how much the sampling below left out);
* under it, a ``maker.commit`` span per traced commit group (steps from..to, calls, red flags, tokens, cost);
* under each, ``maker.step`` spans for notable decided steps: more than one round, escalated, or an answer that
  differs from the workflow's ground truth (step index, microstep, rounds, votes, red flags, agent), with the
  GenAI semantic conventions' ``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` and
  ``gen_ai.usage.output_tokens``, and ``maker.cost_usd`` where the agents' prices are known;
* a ``maker.step.failed`` span when the run fails at a step.

**Sampling.** The first 256 commit groups of a segment each get a span; after them every 2nd group up to the
512th, every 4th up to the 1,024th, and so on (:func:`group_traced`): each doubling of the number of groups adds
128 group spans. Under a traced group at most 4 notable steps get spans, wrong answers first; notable steps of
untraced groups are only counted. A run of a million commit groups (a million steps committed one at a time)
therefore has at most 1,792 group spans and 7,168 step spans; one of a million steps at the default 4,096 steps
a commit has about 245 groups, all traced.

The spans go to the application's tracer provider when it has set one; else, when asked, to an SDK provider with
the OTLP HTTP exporter (``pip install 'maker[otel]'``), which reads the endpoint from the standard variables.
"""

from maker.telemetry._eval import EvalTrace, eval_trace
from maker.telemetry._otel import ENDPOINT_VARIABLES, GROUPS_IN_FULL, STEPS_PER_GROUP, RunTrace, group_traced, run_trace

__all__ = [
    "RunTrace",
    "run_trace",
    "EvalTrace",
    "eval_trace",
    "group_traced",
    "GROUPS_IN_FULL",
    "STEPS_PER_GROUP",
    "ENDPOINT_VARIABLES",
]
