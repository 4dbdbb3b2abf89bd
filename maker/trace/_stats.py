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
from typing import Any, Literal

from maker.agents import agent_label
from maker.agents.prices import Price, cost_of
from maker.stats import expected_calls, wilson_interval
from maker.store import RunRecord, StepTally, Store
from maker.trace._branches import branch_stats
from maker.trace._records import TRACE_FORMAT, agent_labels
from maker.trace._stats_model import (
    AgentCost,
    AgentStats,
    CostStats,
    DrafterStats,
    HardestSteps,
    RedFlagStats,
    RoundsStep,
    RoundStats,
    SampleStats,
    SpeculationStats,
    SpeculationTheory,
    SplitStep,
    StatsSeries,
    TimeStats,
    TraceStats,
    VerifierStats,
    WindowStats,
)

_POINTS = 400  # points per series in the statistics (and the report's plots)
_HARDEST = 10

__all__ = ["trace_stats"]


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
        self.n_voting = len((record.config or {}).get("agents") or []) or 1
        self.draft_flagged = self.accepted_known = self.accepted_right = self.rejected_known = 0
        self.verdicts: dict[int, list[int]] = {}  # verifier -> ratings, accepts, on drafts known right, known wrong
        self.voting_calls = self.voting_flags = 0  # the voting agents' samples and red flags, drafts set apart

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
        info = json.loads(spec) if spec else None
        if info is not None and info.keys() - {"weighted"}:  # a weighted vote's record alone is no speculation
            known = None if microstep in self.candidates else correct
            self._add_speculation(info, known, n, nflags)
        else:
            self.voting_calls += n
            self.voting_flags += nflags
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

    def _add_speculation(self, info: dict[str, Any], correct: int | None, n: int, nflags: int) -> None:
        """One step's speculation record; ``correct`` is None where ground truth is unknown."""
        accepted, flagged = bool(info.get("accepted")), bool(info.get("draft_flag"))
        if info.get("route"):
            self.routes[info["route"]] += 1
            self.voting_calls += n
            self.voting_flags += nflags
        else:
            self.drafted += 1
            self.draft_flagged += flagged
            if not accepted:  # the draft was one sample (and maybe a red flag) of the step; the rest were voted
                self.voting_calls += max(0, n - 1)
                self.voting_flags += max(0, nflags - flagged)
        self.accepted += accepted
        self.escalated += bool(info.get("escalated"))
        if correct is not None and not info.get("route") and not flagged:
            if accepted:
                self.accepted_known += 1
                self.accepted_right += correct == 1
            else:
                self.rejected_known += 1
        for v in info.get("verdicts") or []:  # [verifier, score, accept] (score mode) or [verifier, agrees] (vote)
            t = self.verdicts.setdefault(v[0], [0, 0, 0, 0])
            ok = bool(v[-1])
            t[0] += 1
            t[1] += ok
            if ok and accepted and correct is not None:
                t[2 if correct else 3] += 1

    def result(self, speculation_theory: SpeculationTheory | None = None) -> TraceStats:
        """The statistics of the steps added so far; a speculative run's calls are compared with
        ``speculation_theory`` (with none, with no theory)."""
        record, seen, calls = self.record, self.seen, self.calls
        self.bins.close(self.first + seen - 1, calls)
        k = record.config.get("k") or _recorded_k(record)
        spec = self._speculation()
        voting = self._theory(k) if spec is None else _voting_theory(spec.voting_p, k, spec.voting_valid_rate)
        if record.config.get("ensemble"):  # agents of different p voting together: one agent's formula does not hold
            voting = None  # (`maker estimate --agent-p ...` gives an ensemble's calls)
        theory = voting
        basis: Literal["voting", "speculation"] | None = None if voting is None else "voting"
        if spec is not None:
            theory = speculation_theory(spec, k, seen) if speculation_theory is not None and k and seen else None
            basis = None if theory is None else "speculation"
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
            theory=basis,
            calls_per_step_voting_theory=None if voting is None else round(voting, 4),
            p_measured=None if (p := self._p()) is None else round(p, 4),
            valid_rate=None if (rate := self._valid_rate()) is None else round(rate, 4),
            tokens=self.tokens,
            red_flags=RedFlagStats(
                total=self.flagged,
                rate=round(self.flagged / calls, 5) if calls else 0.0,
                by_reason=dict(self.flags_by_reason.most_common()),
            ),
            per_agent=self._per_agent(),
            speculation=spec,
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
        return _voting_theory(self._p(), k, self._valid_rate())

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
        config = self.record.config or {}
        base = self.n_voting + 1
        verifiers = []
        for j in range(max(len(config.get("verifiers") or []), max(self.verdicts, default=-1) + 1)):
            ratings, accepts, right, wrong = self.verdicts.get(j, [0, 0, 0, 0])
            verifiers.append(
                VerifierStats(
                    agent=agent_label(self.labels, base + j),
                    ratings=ratings,
                    accepts=accepts,
                    acceptance_rate=_ratio(accepts, ratings),
                    accepts_right=right,
                    accepts_wrong=wrong,
                )
            )
        valid = drafted - self.draft_flagged
        known = self.accepted_known + self.rejected_known
        good, valid_votes = 0, 0
        for idx, (_, g, v) in self.agent_votes.items():
            if idx < self.n_voting:
                good, valid_votes = good + g, valid_votes + v
        return SpeculationStats(
            drafted=drafted,
            accepted=self.accepted,
            escalated=self.escalated,
            acceptance_rate=round(self.accepted / drafted, 4) if drafted else None,
            routed=dict(routes),
            mode=config.get("verify") or "score",
            verify_k=config.get("verify_k") or 1,
            draft_k=config.get("draft_k") or 1,
            drafter=DrafterStats(
                agent=agent_label(self.labels, self.n_voting),
                drafts=drafted,
                valid=valid,
                valid_rate=_ratio(valid, drafted),
                accepted_known=self.accepted_known,
                accepted_right=self.accepted_right,
                accepted_accuracy=_ratio(self.accepted_right, self.accepted_known),
                draft_accuracy_low=_ratio(self.accepted_right, known),
                draft_accuracy_high=_ratio(self.accepted_right + self.rejected_known, known),
            ),
            verifiers=verifiers,
            voting_p=_ratio(good, valid_votes),
            voting_valid_rate=_ratio(self.voting_calls - self.voting_flags, self.voting_calls),
            verifier_calls_per_step=round(sum(v.ratings for v in verifiers) / self.seen, 4) if self.seen else 0.0,
            window=_window(self.record, self.labels, self.seen),
        )


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _voting_theory(p: float | None, k: int | None, valid_rate: float | None) -> float | None:
    """Plain voting's calls per step at p, k and the valid rate, or None when one is unknown."""
    if p is not None and k and valid_rate and 0 < p <= 1:
        return expected_calls(p, k, valid_rate)
    return None


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


def trace_stats(st: Store, record: RunRecord, *, speculation_theory: SpeculationTheory | None = None) -> TraceStats:
    """Everything ``maker trace stats`` prints and the report plots, from one pass over the run's own steps.

    A speculative run's calls are compared with ``speculation_theory`` (see :data:`SpeculationTheory`); without
    one they are compared with no theory (plain voting's is kept as ``calls_per_step_voting_theory``)."""
    acc = _StatsAccumulator(record)
    for row in st.step_tallies(record.id):
        acc.add(row)
    out = acc.result(speculation_theory)
    out.branches = branch_stats(st, record)
    return out


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
