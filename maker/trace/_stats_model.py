"""What a run's statistics are made of (``maker trace stats --json``, the report): the typed :class:`TraceStats`
and its parts. :mod:`maker.trace._stats` builds them in one pass over a run's steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

__all__ = [
    "TraceStats",
    "RoundStats",
    "SampleStats",
    "RedFlagStats",
    "AgentStats",
    "SpeculationStats",
    "DrafterStats",
    "VerifierStats",
    "SpeculationTheory",
    "WindowStats",
    "TimeStats",
    "HardestSteps",
    "RoundsStep",
    "SplitStep",
    "StatsSeries",
    "CostStats",
    "AgentCost",
    "BranchRow",
    "BranchStats",
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


class DrafterStats(BaseModel):
    """What the drafter did, from the steps' speculation records.

    A rejected draft's answer is not recorded (only its verdicts), so whether it was right is unknown: the share
    of drafts that were right is measured exactly only over accepted ones, and bounded over all valid ones."""

    agent: str
    drafts: int
    """Drafts made (steps drafted; steps routed straight to voting drew none)."""
    valid: int
    """Drafts not red-flagged."""
    valid_rate: float | None
    """``valid`` over ``drafts`` (None without drafts)."""
    accepted_known: int
    """Accepted drafts whose step has ground truth."""
    accepted_right: int
    """Of those, the drafts that were right."""
    accepted_accuracy: float | None
    """``accepted_right`` over ``accepted_known``: how often an accepted draft was right (None: none known)."""
    draft_accuracy_low: float | None
    """Right drafts over the valid drafts of steps with ground truth, every rejected draft counted wrong."""
    draft_accuracy_high: float | None
    """The same, every rejected draft counted right (the truth is between the two)."""


class VerifierStats(BaseModel):
    """What one verifier did, from the verdicts in the steps' speculation records."""

    agent: str
    ratings: int
    """Verdicts it gave (a verifier past the decision is not asked)."""
    accepts: int
    acceptance_rate: float | None
    """``accepts`` over ``ratings`` (None when never asked)."""
    accepts_right: int
    """Accept verdicts on drafts known right (accepted drafts of steps whose answer was right)."""
    accepts_wrong: int
    """Accept verdicts on drafts known wrong: false accepts, each one a wrong step committed unless a later
    verifier rejected it."""


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
    mode: Literal["score", "vote"] = "score"
    """How drafts were verified (the run's ``verify`` option)."""
    verify_k: int = 1
    """The verdict margin."""
    draft_k: int = 1
    """The drafter's own voting margin (1: one sample is the draft)."""
    drafter: DrafterStats | None = None
    """What the drafter did (left out of the dump, not null, when not given: the statistics always give it)."""
    verifiers: list[VerifierStats] = []
    """Every verifier of the roster, in order, asked or not."""
    voting_p: float | None = None
    """The voting agents' votes for the winning answer over their valid votes (escalated and routed steps)."""
    voting_valid_rate: float | None = None
    """The share of the voting agents' samples not red-flagged (a step's draft set apart)."""
    verifier_calls_per_step: float = 0.0
    """Verdicts per step counted here (a verifier call is not a sample of its step)."""
    window: WindowStats | None = None
    """The speculative window's cost; left out of the dump (not null) when it wasted nothing and predicted nothing."""

    @model_serializer(mode="wrap")
    def _leave_out_no_window(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.window is None:
            out.pop("window", None)
        if self.drafter is None:
            out.pop("drafter", None)
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


class BranchRow(BaseModel):
    """One time the run went back (``--backtracks``): a branch and the steps it abandoned."""

    branch: int
    """The branch's number (1, 2, ...; the run began on branch 0)."""
    from_step: int
    """The step it went back to (the last state that passed the workflow's check)."""
    to_step: int
    """Where the branch it left had got to: its steps ``[from_step, to_step)`` were abandoned."""
    kind: str
    """``check`` (the workflow's check failed) or ``undecided`` (no agent decided step ``to_step``)."""
    reason: str
    """Why, as the check said it (all of it; the text output shows its first line)."""
    steps: int
    """Steps abandoned (kept in ``branch_steps``)."""
    wrong: int
    """Of those, the steps whose answer was wrong against the ground truth: wrong answers the check caught."""
    calls: int
    """The abandoned steps' calls (samples)."""
    tokens: int


class BranchStats(BaseModel):
    """Backtracking: the branches a run made, what their abandoned steps spent, and the checks let through."""

    limit: int | None
    """Backtracks the run could make (``--backtracks``; None: not recorded)."""
    branches: int
    by_kind: dict[str, int]
    """Branches by kind (``check``, ``undecided``)."""
    steps_abandoned: int
    """Steps the branches abandoned, over all branches (the sum of ``to_step - from_step``)."""
    calls: int
    """The abandoned steps' calls: spent on the run (its counters hold them), not on its live chain."""
    tokens: int
    wrong: int
    """Abandoned steps whose answer was wrong against the ground truth: wrong answers caught."""
    failed_checks: int
    """Checks that failed with no backtrack left: the run went on from a state that failed."""
    by_branch: list[BranchRow]


SpeculationTheory = Callable[[SpeculationStats, int, int], float | None]
"""The calls per step a speculative run is expected to take, given its measured :class:`SpeculationStats`, its k and
its steps counted (None when it cannot say). The theory of drafting and verifying lives above this layer
(``maker.planning.speculation_estimate``), so whoever reads a speculative run passes it in; a sample here is a
draft or a voting agent's sample, a verifier's verdict is not one."""


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
    """What theory expects: :attr:`theory` names which (None when a figure it needs is unknown)."""
    theory: Literal["voting", "speculation"] | None = None
    """``voting``: first-to-ahead-by-k at the measured p, k and valid rate; ``speculation``: drafting and
    verifying at the measured rates (:class:`SpeculationTheory`). None without a theory: a speculative run
    read without a speculation theory is not compared with plain voting's."""
    calls_per_step_voting_theory: float | None = None
    """What plain voting at the measured p, k and valid rate would take per step (for a speculative run, the
    voting agents' p and valid rate)."""
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
    branches: BranchStats | None = None
    """Backtracking (left out of the dump, not null, for a run that neither checks states nor may backtrack)."""
    series: StatsSeries

    @model_serializer(mode="wrap")
    def _leave_out_no_cost(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.cost is None:
            out.pop("cost", None)
        if self.branches is None:
            out.pop("branches", None)
        return out
