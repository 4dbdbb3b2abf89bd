"""A run's statistics (``maker trace stats``, the report): a typed :class:`TraceStats`, built in one pass.

The accumulator keeps counters, a fixed number of points per plot and one float per step for
the time percentiles, so a run of a million steps is read once, with one ordered cursor.
"""

from __future__ import annotations

import heapq
import json
import math
from array import array
from collections import Counter
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from maker.agents import agent_label
from maker.agents.prices import Price, cost_of
from maker.stats import expected_calls, wilson_interval
from maker.store import RunRecord, StepTally, Store
from maker.trace._records import TRACE_FORMAT, agent_labels

_POINTS = 400  # points per series in the statistics (and the report's plots)
_HARDEST = 10

__all__ = [
    "trace_stats",
    "TraceStats",
    "RoundStats",
    "SampleStats",
    "RedFlagStats",
    "AgentStats",
    "SpeculationStats",
    "WindowStats",
    "TimeStats",
    "HardestSteps",
    "RoundsStep",
    "SplitStep",
    "StatsSeries",
    "CostStats",
    "AgentCost",
]


class RoundStats(BaseModel):
    """Voting rounds per step."""

    median: float
    p99: float
    """The 99th percentile (nearest rank)."""
    max: int
    max_step: int
    """The first step that took ``max`` rounds (the run's first step when it has none)."""
    histogram: dict[str, int]
    """Steps by their number of rounds (the key, as text), fewest rounds first."""


class SampleStats(BaseModel):
    """Samples (model calls) drawn per step."""

    mean: float
    median: float
    p99: float
    """The 99th percentile (nearest rank)."""
    max: int
    histogram: dict[str, int]
    """Steps by their number of samples (the key, as text), fewest samples first."""


class RedFlagStats(BaseModel):
    """The red-flagged samples of the run's steps."""

    total: int
    rate: float
    """``total`` over the calls (0.0 without calls)."""
    by_reason: dict[str, int]
    """Red flags by reason, the most common first."""


class AgentStats(BaseModel):
    """One agent over the steps it decided."""

    agent: str
    """Its label: ``agent 1: SPEC``, ``drafter: SPEC``, ``verifier 1: SPEC``."""
    steps_decided: int
    votes: int
    """Valid (not red-flagged) votes in the tallies of the steps it decided."""
    p: float | None
    """Votes for the winning answer over ``votes``, a step known to be wrong counting none (None without votes)."""
    p_low: float
    """Low end of the 95% Wilson interval of ``p``."""
    p_high: float
    """High end of the 95% Wilson interval of ``p``."""


class WindowStats(BaseModel):
    """What drafting ahead of the chain (the speculative window) cost, from the run's recorded counters."""

    wasted_calls: int
    """Model calls made for steps drafted ahead on a state the chain never reached."""
    wasted_tokens: int
    wasted_calls_per_step: float
    """``wasted_calls`` per step counted here (0.0 without steps)."""
    wasted_by_agent: dict[str, int]
    """``wasted_calls`` by agent label; agents that wasted none are left out."""
    predictions_held: int
    predictions_missed: int
    rejected_drafts_waited_at: int
    """Times the window waited at a rejected draft for its vote."""
    rejected_drafts_passed: int
    """Times it drafted on past a rejected draft."""


class SpeculationStats(BaseModel):
    """Drafting and verifying, for a run with a drafter (steps with a speculation record)."""

    drafted: int
    """Steps the drafter answered; the others were routed to voting."""
    accepted: int
    """Drafts the verifiers accepted."""
    escalated: int
    """Steps escalated to voting after their draft was rejected."""
    acceptance_rate: float | None
    """``accepted`` over ``drafted`` (None when nothing was drafted)."""
    routed: dict[str, int]
    """Steps routed straight to voting, by route (``large_first``, ...)."""
    window: WindowStats | None = None
    """The speculative window's cost; left out of the dump (not null) when it wasted nothing and predicted nothing."""

    @model_serializer(mode="wrap")
    def _leave_out_no_window(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.window is None:
            out.pop("window", None)
        return out


class AgentCost(BaseModel):
    """What one agent was billed over the run's committed steps."""

    agent: str
    """Its label: ``agent 1: SPEC``, ``drafter: SPEC``, ``verifier 1: SPEC``."""
    role: str
    """``voting``, ``drafter`` or ``verifier``."""
    prompt_tokens: int
    """Prompt tokens, cached ones included."""
    cached_tokens: int
    completion_tokens: int
    price: list[float] | None
    """Dollars per million ``[input, cached input, output]`` tokens, as recorded with the run (None: unknown)."""
    cost: float | None
    """Dollars (None: the price is unknown)."""
    estimated: bool
    """Whether some of this usage is estimated (the server reported none), not as billed."""


class CostStats(BaseModel):
    """What the run cost: its committed steps' bills, by agent and role, and the speculative steps dropped."""

    total: float | None
    """Dollars, committed steps and dropped speculative ones (None: a billed agent's price is unknown, or the
    steps were recorded before usage was)."""
    committed: float | None
    """Dollars for the committed steps alone."""
    wasted: float | None
    """Dollars for speculative steps drafted ahead and dropped (from the run's counters)."""
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    estimated: bool
    """Whether some of the usage is estimated, not as billed."""
    steps_without_usage: int
    """Committed steps with no recorded usage (recorded by a maker before usage was kept)."""
    per_step: float | None
    """``committed`` per committed step."""
    by_agent: list[AgentCost]
    by_role: dict[str, float | None]
    """Dollars by role: ``voting``, ``drafter``, ``verifier`` (the roles the run has)."""


class TimeStats(BaseModel):
    """Wall time per step: each step's recorded duration."""

    total_s: int | float
    """Their sum, in seconds (the integer 0 for a run with no steps, as the JSON has always had it)."""
    mean_ms: float
    median_ms: float
    p99_ms: float
    """The 99th percentile (nearest rank)."""
    max_ms: float
    max_step: int
    """The first step that took ``max_ms`` (the run's first step when it has none)."""


class RoundsStep(BaseModel):
    """A step that took many rounds."""

    step: int
    rounds: int
    samples: int


class SplitStep(BaseModel):
    """A step whose valid votes split."""

    step: int
    disagreement: float
    """The share of valid votes against the winner."""
    valid_votes: int


class HardestSteps(BaseModel):
    """The hardest steps, hardest first (ten of each at most)."""

    most_rounds: list[RoundsStep]
    """By rounds, then samples, then the earlier step."""
    most_disagreement: list[SplitStep]
    """By disagreement, then valid votes, then the earlier step; steps without disagreement are left out."""


class StatsSeries(BaseModel):
    """The run in at most 400 points per plot, each point ``steps_per_point`` consecutive steps (the last fewer)."""

    steps_per_point: int
    step: list[int]
    """Each point's last step."""
    rounds_mean: list[float]
    rounds_max: list[int]
    red_flags: list[int]
    """Red-flagged samples in each point's steps."""
    calls_cum: list[int]
    """Calls up to each point's last step."""
    dur_mean_ms: list[float]
    cost_cum: list[float] | None = None
    """Dollars up to each point's last step; left out of the dump (not null) when the cost is unknown."""
    calls_theory_cum: list[float] | None = None
    """The calls theory expects up to each point's last step; left out of the dump (not null) without a theory."""

    @model_serializer(mode="wrap")
    def _leave_out_no_theory(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.calls_theory_cum is None:
            out.pop("calls_theory_cum", None)
        if self.cost_cum is None:
            out.pop("cost_cum", None)
        return out


class TraceStats(BaseModel):
    """Everything ``maker trace stats`` prints and the report shows, from one pass over a run's own steps.
    ``maker trace stats --json`` prints it without ``series``."""

    trace_format: int
    """The record format's version (:data:`TRACE_FORMAT`)."""
    run_id: str
    workflow: str
    status: str
    first_step: int
    """The run's first own step: 0, or the step a fork started from."""
    steps: int
    """Steps counted (the run's own committed steps)."""
    k: int | None
    """The run's ahead-by-k margin, or the k every microstep voted with (None when they differ)."""
    agents: list[str]
    """The run's agent labels, in the order step rows index them."""
    errors: int | None
    """Steps whose answer was wrong against the ground truth (None without any; candidate microsteps not counted)."""
    rounds: RoundStats
    samples_per_step: SampleStats
    calls: int
    calls_per_step: float
    calls_per_step_theory: float | None
    """What theory expects at the measured p, k and valid rate (None when one of them is unknown)."""
    p_measured: float | None
    """All agents' votes for the winning answer over their valid votes (see :attr:`AgentStats.p`)."""
    valid_rate: float | None
    """The share of calls not red-flagged (None without calls)."""
    tokens: int
    red_flags: RedFlagStats
    per_agent: list[AgentStats]
    """Every agent that decided a step, in roster order."""
    speculation: SpeculationStats | None
    """None when the run drafted nothing and routed nothing."""
    time: TimeStats
    hardest: HardestSteps
    cost: CostStats | None = None
    """What the run cost (left out of the dump, not null, for a run recorded before usage was kept)."""
    series: StatsSeries

    @model_serializer(mode="wrap")
    def _leave_out_no_cost(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.cost is None:
            out.pop("cost", None)
        return out


def _percentile(hist: Counter[int], q: float) -> float:
    """The q-quantile (nearest rank) of a histogram of whole numbers."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def _sorted_percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


class _Bins:
    """The plotted series: consecutive steps gathered ``width`` to a point."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.step: list[int] = []
        self.rounds_mean: list[float] = []
        self.rounds_max: list[int] = []
        self.red_flags: list[int] = []
        self.calls_cum: list[int] = []
        self.dur_mean_ms: list[float] = []
        self.cost_cum: list[float] = []
        self.cost = 0.0
        """Dollars up to the last step added (kept by the accumulator)."""
        self._n = self._rounds = self._max = self._flags = 0
        self._dur = 0.0

    def add(self, step: int, rounds: int, flags: int, dur: float, calls: int) -> None:
        """One more step; ``calls`` is the calls up to it."""
        self._n += 1
        self._rounds += rounds
        self._max = max(self._max, rounds)
        self._flags += flags
        self._dur += dur
        if self._n == self.width:
            self.close(step, calls)

    def close(self, step: int, calls: int) -> None:
        """End the point being gathered (if any step is in it) at ``step``."""
        n = self._n
        if not n:
            return
        self.step.append(step)
        self.rounds_mean.append(round(self._rounds / n, 4))
        self.rounds_max.append(self._max)
        self.red_flags.append(self._flags)
        self.calls_cum.append(calls)
        self.dur_mean_ms.append(round(1000 * self._dur / n, 4))
        self.cost_cum.append(round(self.cost, 6))
        self._n = self._rounds = self._max = self._flags = 0
        self._dur = 0.0

    def series(self, theory: float | None, first: int, priced: bool) -> StatsSeries:
        """The points, with the calls theory expects at ``theory`` calls per step from step ``first`` on (and the
        cost, when ``priced``)."""
        return StatsSeries(
            steps_per_point=self.width,
            step=self.step,
            rounds_mean=self.rounds_mean,
            rounds_max=self.rounds_max,
            red_flags=self.red_flags,
            calls_cum=self.calls_cum,
            dur_mean_ms=self.dur_mean_ms,
            cost_cum=self.cost_cum if priced else None,
            calls_theory_cum=None if theory is None else [round(theory * (s - first + 1), 1) for s in self.step],
        )


class _StatsAccumulator:
    """The counters behind :func:`trace_stats`: fed a run's steps in step order (:meth:`add`), then asked for the
    :class:`TraceStats` (:meth:`result`). It keeps counters, the hardest steps, a fixed number of points per plot
    and one float per step for the time percentiles."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.labels = agent_labels(record)
        self.first = record.first_step
        self.bins = _Bins(max(1, math.ceil((record.steps - self.first) / _POINTS)))
        self.candidates = set((record.stats or {}).get("candidates", []))  # their mismatches are not the run's errors
        self.seen = self.calls = self.flagged = self.tokens = 0
        self.errors = self.known = 0
        self.rounds_hist: Counter[int] = Counter()
        self.samples_hist: Counter[int] = Counter()
        self.flags_by_reason: Counter[str] = Counter()
        self.durs = array("d")
        self.agent_votes: dict[int, list[int]] = {}  # steps decided, votes for the right answer, valid votes
        self.routes: Counter[str] = Counter()
        self.drafted = self.accepted = self.escalated = 0
        self.max_rounds = (0, self.first)
        self.slow = (0.0, self.first)
        self.most_rounds: list[tuple[int, int, int]] = []  # (rounds, samples, -step) min-heap of the top ones
        self.most_split: list[tuple[float, int, int]] = []  # (disagreement, valid votes, -step)
        stats = record.stats or {}
        self.prices: list[Price | None] = [None if p is None else Price(*p) for p in stats.get("prices") or []]
        self.prices += [None] * (len(self.labels) - len(self.prices))
        self.usage: dict[int, list[int]] = {}  # agent -> prompt, cached, completion, estimated requests
        self.no_usage = 0

    def add(self, row: StepTally) -> None:
        """Count one step (the next in step order)."""
        step, votes_s, rounds, n, flags_s, agent, dur, correct, spec, tok, microstep, usage_s = row
        self.seen += 1
        if usage_s:
            self._bill(usage_s)
        else:
            self.no_usage += 1
        votes = json.loads(votes_s)
        self.rounds_hist[rounds] += 1
        self.samples_hist[n] += 1
        self.calls += n
        self.tokens += tok or 0
        self.durs.append(dur)
        if dur > self.slow[0]:
            self.slow = (dur, step)
        nflags = 0
        if flags_s:
            for reason, c in json.loads(flags_s).items():
                self.flags_by_reason[reason] += c
                nflags += c
        self.flagged += nflags
        if correct is not None and microstep not in self.candidates:
            self.known += 1
            self.errors += correct == 0
        valid = sum(votes)
        av = self.agent_votes.setdefault(agent, [0, 0, 0])
        av[0] += 1
        av[2] += valid
        if correct != 0:
            av[1] += votes[0] if votes else 0
        if rounds > self.max_rounds[0]:
            self.max_rounds = (rounds, step)
        _push(self.most_rounds, (rounds, n, -step))
        if valid:
            _push(self.most_split, (round(1 - votes[0] / valid, 4), valid, -step))
        if spec:
            self._add_speculation(json.loads(spec))
        self.bins.add(step, rounds, nflags, dur, self.calls)

    def _bill(self, usage_s: str) -> None:
        bins, prices, usage = self.bins, self.prices, self.usage
        for a, p, c, o, e in json.loads(usage_s):
            t = usage.get(a)
            if t is None:
                t = usage[a] = [0, 0, 0, 0]
            t[0] += p
            t[1] += c
            t[2] += o
            t[3] += e
            price = prices[a] if a < len(prices) else None
            if price is not None:
                bins.cost += cost_of(price, p, c, o) or 0.0

    def _cost(self) -> CostStats | None:
        """The run's cost from the usage its steps recorded and the prices recorded with it."""
        if not self.usage and self.no_usage:
            return None
        wasted_rec = (self.record.stats or {}).get("wasted") or {}
        by_agent: list[AgentCost] = []
        by_role: dict[str, float | None] = {}
        committed: float | None = 0.0
        n_voting = len((self.record.config or {}).get("agents") or []) or 1
        for a in sorted(self.usage):
            p, c, o, e = self.usage[a]
            price = self.prices[a] if a < len(self.prices) else None
            cost = cost_of(price, p, c, o)
            label = agent_label(self.labels, a)
            role = "voting" if a < n_voting else ("drafter" if a == n_voting else "verifier")
            by_agent.append(
                AgentCost(
                    agent=label,
                    role=role,
                    prompt_tokens=p,
                    cached_tokens=c,
                    completion_tokens=o,
                    price=None if price is None else price.as_list(),
                    cost=None if cost is None else round(cost, 6),
                    estimated=bool(e),
                )
            )
            if cost is None:
                committed = None
                by_role[role] = None
            else:
                if committed is not None:
                    committed += cost
                if role not in by_role:
                    by_role[role] = cost
                elif (so_far := by_role[role]) is not None:
                    by_role[role] = so_far + cost
        wasted = wasted_rec.get("cost")
        if wasted is None and not wasted_rec.get("calls"):
            wasted = 0.0
        total = None if committed is None or wasted is None else committed + wasted
        wasted_usage = wasted_rec.get("usage") or []
        tokens = [sum(r[i] for r in self.usage.values()) + sum(w[i] for w in wasted_usage) for i in range(3)]
        return CostStats(
            total=None if total is None else round(total, 6),
            committed=None if committed is None else round(committed, 6),
            wasted=None if wasted is None else round(wasted, 6),
            prompt_tokens=tokens[0],
            cached_tokens=tokens[1],
            completion_tokens=tokens[2],
            estimated=any(r[3] for r in self.usage.values()) or any(w[3] for w in wasted_usage),
            steps_without_usage=self.no_usage,
            per_step=None if committed is None or not self.seen else round(committed / self.seen, 8),
            by_agent=by_agent,
            by_role={r: None if v is None else round(v, 6) for r, v in by_role.items()},
        )

    def _add_speculation(self, info: dict[str, Any]) -> None:
        if info.get("route"):
            self.routes[info["route"]] += 1
        else:
            self.drafted += 1
        self.accepted += bool(info.get("accepted"))
        self.escalated += bool(info.get("escalated"))

    def result(self) -> TraceStats:
        """The statistics of the steps added so far."""
        record, seen, calls = self.record, self.seen, self.calls
        self.bins.close(self.first + seen - 1, calls)
        k = record.config.get("k") or _recorded_k(record)
        theory = self._theory(k)
        ds = sorted(self.durs)
        cost = self._cost()
        return TraceStats(
            trace_format=TRACE_FORMAT,
            run_id=record.run_id,
            workflow=record.workflow,
            status=record.status,
            first_step=self.first,
            steps=seen,
            k=k,
            agents=self.labels,
            errors=self.errors if self.known else None,
            rounds=RoundStats(
                median=_percentile(self.rounds_hist, 0.5),
                p99=_percentile(self.rounds_hist, 0.99),
                max=self.max_rounds[0],
                max_step=self.max_rounds[1],
                histogram={str(r): c for r, c in sorted(self.rounds_hist.items())},
            ),
            samples_per_step=SampleStats(
                mean=round(calls / seen, 4) if seen else 0.0,
                median=_percentile(self.samples_hist, 0.5),
                p99=_percentile(self.samples_hist, 0.99),
                max=max(self.samples_hist) if self.samples_hist else 0,
                histogram={str(s): c for s, c in sorted(self.samples_hist.items())},
            ),
            calls=calls,
            calls_per_step=round(calls / seen, 4) if seen else 0.0,
            calls_per_step_theory=None if theory is None else round(theory, 4),
            p_measured=None if (p := self._p()) is None else round(p, 4),
            valid_rate=None if (rate := self._valid_rate()) is None else round(rate, 4),
            tokens=self.tokens,
            red_flags=RedFlagStats(
                total=self.flagged,
                rate=round(self.flagged / calls, 5) if calls else 0.0,
                by_reason=dict(self.flags_by_reason.most_common()),
            ),
            per_agent=self._per_agent(),
            speculation=self._speculation(),
            time=TimeStats(
                total_s=round(sum(ds), 3),
                mean_ms=round(1000 * sum(ds) / len(ds), 4) if ds else 0.0,
                median_ms=round(1000 * _sorted_percentile(ds, 0.5), 4),
                p99_ms=round(1000 * _sorted_percentile(ds, 0.99), 4),
                max_ms=round(1000 * self.slow[0], 4),
                max_step=self.slow[1],
            ),
            hardest=HardestSteps(
                most_rounds=[
                    RoundsStep(step=-s, rounds=r, samples=n) for r, n, s in sorted(self.most_rounds, reverse=True)
                ],
                most_disagreement=[
                    SplitStep(step=-s, disagreement=d, valid_votes=v)
                    for d, v, s in sorted(self.most_split, reverse=True)
                    if d > 0
                ],
            ),
            series=self.bins.series(theory, self.first, priced=cost is not None and cost.committed is not None),
            cost=cost,
        )

    def _p(self) -> float | None:
        """Votes for the right answer over valid votes, all agents together."""
        valid_votes = sum(v[2] for v in self.agent_votes.values())
        return sum(v[1] for v in self.agent_votes.values()) / valid_votes if valid_votes else None

    def _valid_rate(self) -> float | None:
        return 1 - self.flagged / self.calls if self.calls else None

    def _theory(self, k: int | None) -> float | None:
        """The calls per step theory expects at the measured p and valid rate, or None when one is unknown."""
        p, valid_rate = self._p(), self._valid_rate()
        if p is not None and k and valid_rate and 0 < p <= 1 and valid_rate > 0:
            return expected_calls(p, k, valid_rate)
        return None

    def _per_agent(self) -> list[AgentStats]:
        agents = []
        for idx in sorted(self.agent_votes):
            n_steps, good, valid = self.agent_votes[idx]
            lo, hi = wilson_interval(good, valid)
            agents.append(
                AgentStats(
                    agent=agent_label(self.labels, idx),
                    steps_decided=n_steps,
                    votes=valid,
                    p=round(good / valid, 4) if valid else None,
                    p_low=round(lo, 4),
                    p_high=round(hi, 4),
                )
            )
        return agents

    def _speculation(self) -> SpeculationStats | None:
        drafted, routes = self.drafted, self.routes
        if not (drafted or routes):
            return None
        return SpeculationStats(
            drafted=drafted,
            accepted=self.accepted,
            escalated=self.escalated,
            acceptance_rate=round(self.accepted / drafted, 4) if drafted else None,
            routed=dict(routes),
            window=_window(self.record, self.labels, self.seen),
        )


def _window(record: RunRecord, labels: list[str], seen: int) -> WindowStats | None:
    """The speculative window's recorded cost, or None when it wasted nothing and predicted nothing."""
    wasted = (record.stats or {}).get("wasted") or {}
    if not (wasted.get("calls") or wasted.get("hits") or wasted.get("misses")):
        return None
    return WindowStats(
        wasted_calls=wasted.get("calls", 0),
        wasted_tokens=wasted.get("tokens", 0),
        wasted_calls_per_step=round(wasted.get("calls", 0) / seen, 4) if seen else 0.0,
        wasted_by_agent={agent_label(labels, i): n for i, n in enumerate(wasted.get("agent_calls", [])) if n},
        predictions_held=wasted.get("hits", 0),
        predictions_missed=wasted.get("misses", 0),
        rejected_drafts_waited_at=wasted.get("waited", 0),
        rejected_drafts_passed=wasted.get("went_on", 0),
    )


def trace_stats(st: Store, record: RunRecord) -> TraceStats:
    """Everything ``maker trace stats`` prints and the report plots, from one pass over the run's own steps."""
    acc = _StatsAccumulator(record)
    for row in st.step_tallies(record.id):
        acc.add(row)
    return acc.result()


def _recorded_k(record: RunRecord) -> int | None:
    """The k every microstep voted with, from the run's recorded policies (None when they differ)."""
    policies = (record.stats or {}).get("voting") or {}
    ks = {p.get("k") for p in policies.values()}
    return ks.pop() if len(ks) == 1 else None


def _push(heap: list[Any], item: Any) -> None:
    if len(heap) < _HARDEST:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
