"""The engine: one run's decider, scheduler and ledger, put together.

Each job has one home:

* :class:`~maker.engine._decider.Decider` decides one microstep call (sample, red-flag, vote,
  escalate; or draft, verify, escalate), a function of the step, the call and the seeds;
* :class:`~maker.engine._scheduler.Scheduler` chooses what is in flight: the chain, a transition
  at a time, the calls of a fan-out decided together, or a rollout for the cluster's
  lookahead;
* :class:`~maker.engine._ledger.Ledger` counts, keeps the rows and commits them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from maker.agents import Agent, Roster
from maker.agents.prices import Price, known_price
from maker.dsl import Workflow
from maker.engine._backtrack import Backtracker
from maker.engine._budget import Budget
from maker.engine._decider import Decider
from maker.engine._ledger import Ledger, Observer, Progress
from maker.engine._scheduler import Scheduler
from maker.engine._speculation import Speculation
from maker.engine._window import Window
from maker.errors import RunError, UserError
from maker.store import Store
from maker.voting import Voting

__all__ = ["Engine", "EngineConfig", "Recipe", "Ahead", "RunSummary", "roster_of", "price_of"]


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """How an engine decides and records a run's steps, built once from the run's options (see
    :mod:`maker.runs`). With the workflow and the number of agents in each role it is also what a cluster replica
    rebuilds the engine's decisions from (:class:`Recipe`)."""

    seed: int
    """The run's seed: every sample's seed derives from it, the step and the sample's index."""
    voting: Mapping[str, Any] = field(default_factory=dict)
    """Run-wide overrides of the microsteps' voting policies (``k``, ``rule``, temperatures, ...)."""
    max_tokens: int | None = None
    """Red-flag length limit for every microstep (None: each microstep's own)."""
    detail: Literal["summary", "samples", "full"] = "summary"
    """What the store keeps of each step: its decision, each sample too, or the prompts as well."""
    commit_every: int = 4096
    """Steps grouped into one commit, at most."""
    commit_seconds: float = 0.5
    """Seconds between commits, at most, when steps come slowly."""
    progress_seconds: float = 0.25
    """Seconds between progress reports."""
    log_steps: bool = False
    """One debug log line per committed step."""
    window: int = 1
    """Transitions a drafter runs ahead of the chain, at most (1: none; see :mod:`maker.engine._window`). Only a
    run that speculates has a window."""
    adaptive_window: bool = True
    """Fit the window to how often predictions hold; False keeps it at ``window``."""
    snapshot_every: int | None = None
    """Keep a state snapshot every this many steps (None: every commit's)."""
    workflow_ref: str | None = None
    """Where the run's workflow is found (as the run records it), for the commands that errors suggest."""
    prices: Mapping[str, Price] = field(default_factory=dict)
    """A user's prices by model name (``--prices FILE``), before the known table (see :mod:`maker.agents.prices`)."""
    backtracks: int = 0
    """How many times the run may go back to the last state that passed the workflow's check, as a new branch
    (see :mod:`maker.engine._backtrack`); 0: never (a failed check is counted and the run goes on)."""
    weights: tuple[float, ...] | None = None
    """A mixed ensemble (``--ensemble``): every voting agent votes on every step, round-robin, each vote weighing
    this, in units of the first agent's weight (see :mod:`maker.engine._ensemble`). None: the agents escalate."""


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What a replica needs to decide steps exactly as a run's engine does: no store, no backends. Plain data and
    the workflow, so it can be sent to another process."""

    workflow: Workflow[Any, Any]
    config: EngineConfig
    voting_agents: int
    """How many voting agents the run escalates through."""
    verifiers: int
    """How many verifiers check each draft (when the run speculates)."""
    speculation: dict[str, Any] | None
    """The run's :class:`~maker.engine.Speculation` settings, less its agents (None: the run does not speculate)."""

    @classmethod
    def of(cls, workflow: Workflow[Any, Any], config: EngineConfig, roster: Roster, spec: Speculation | None) -> Recipe:
        settings = None
        if spec is not None:
            settings = {
                f.name: getattr(spec, f.name)
                for f in dataclasses.fields(spec)
                if f.name not in ("drafter", "verifiers")
            }
        return cls(
            workflow=workflow,
            config=config,
            voting_agents=len(roster.voting),
            verifiers=len(roster.verifiers),
            speculation=settings,
        )


def roster_of(agents: Sequence[Agent], speculation: Speculation | None) -> Roster:
    """A run's agents in step-row order: the voting ``agents``, then the speculation's drafter and verifiers."""
    return Roster.of(agents, speculation.drafter, speculation.verifiers) if speculation else Roster.of(agents)


def price_of(agent: Agent, prices: Mapping[str, Price] | None = None) -> Price | None:
    """An agent's price: its spec's ``price=``, else its model's in ``prices`` (a user's file), else the known
    table's (None: unknown)."""
    return agent.price or known_price(agent.model, prices)


class Ahead(Protocol):
    """Something that goes ahead of the chain (a cluster replica running it, :mod:`maker.cluster.lookahead`): told
    each step and the state before it, it can have the model calls of the steps after it under way."""

    def at(self, step: int, state: Any) -> None: ...


class RunSummary(BaseModel):
    """What a finished (or stopped) run reports; ``maker run --json`` prints it."""

    run_id: str
    workflow: str
    status: str
    steps: int
    errors: int | None
    solved: bool | None
    calls: int
    calls_per_step: float
    red_flags: int
    red_flag_rate: float
    max_rounds: int
    tokens: int
    wall_s: float
    """The run's wall time in total: the start's and every resume's, each up to its last commit (time spent on
    steps a crash lost is not counted). ``segment_wall_s`` is this process's part alone."""
    k: int | None
    agents: list[str]
    store: str
    agent_calls: dict[str, int] = {}
    drafted: int = 0
    accepted: int = 0
    escalated: int = 0
    first_step: int = 0
    """A fork's first step: ``steps`` counts the run's own steps from there."""
    spare_samples: int = 0
    """Samples generated ahead for rounds a step turned out not to need (not voted, not in ``calls``)."""
    wasted_calls: int = 0
    """Model calls made for steps the speculative window drafted ahead on a state the chain never reached."""
    wasted_tokens: int = 0
    wasted_agent_calls: dict[str, int] = {}
    """``wasted_calls`` by agent (``agent 1: SPEC``, ``drafter: SPEC``, ``verifier 1: SPEC``)."""
    segment_steps: int = 0
    """Steps committed by this process: by this start, resume or fork alone (``steps`` counts the run's)."""
    segment_wall_s: float = 0.0
    """Wall time of this process's segment alone; equals ``wall_s`` unless the run was resumed."""
    prompt_tokens: int = 0
    """Prompt tokens billed (cached ones included), committed steps and dropped speculative ones."""
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    """Dollars the run cost at its agents' prices, dropped speculative calls included (None: a price is unknown)."""
    cost_estimated: bool = False
    """Whether some of the usage behind ``cost`` is estimated (a server that reported none, or a simulated or
    local model), not as billed."""
    agent_cost: dict[str, float | None] = {}
    """``cost`` by agent, committed steps' (None: the agent's price is unknown)."""
    wasted_cost: float | None = None
    """What the dropped speculative calls cost."""
    prices: dict[str, list[float] | None] = {}
    """The price each agent was charged at, dollars per million tokens: ``[input, cached input, output]``."""
    branches: int = 0
    """Times the run went back to a state that passed its workflow's check, as a new branch (``--backtracks``)."""
    failed_checks: int = 0
    """Checks of the workflow that failed with no backtrack left (the run went on from the state that failed)."""
    result: dict[str, Any] | None = None
    error: str | None = None


class Engine:
    """Runs one workflow run against a store. Build it through :mod:`maker.runs`; nothing is set on it after."""

    def __init__(
        self,
        *,
        workflow: Workflow[Any, Any],
        config: EngineConfig,
        agents: Sequence[Agent],
        speculation: Speculation | None = None,
        store: Store | None = None,
        rid: int = 0,
        run_id: str = "",
        expected_steps: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        ahead: Ahead | None = None,
        budget: Budget | None = None,
        observer: Observer | None = None,
    ) -> None:
        if not agents:
            raise RunError("no agent given: give at least one agent spec (`agents`)", run_id=run_id)
        self.wf = workflow
        self.config = config
        self.store = store
        self.rid = rid
        self.run_id = run_id
        self.spec = speculation
        self.roster = roster_of(agents, speculation)
        voting = dict(config.voting)
        self.policies: dict[str, Voting] = {
            ms.name: ms.voting if (ms.voting.fixed or not voting) else ms.voting.model_copy(update=voting)
            for ms in workflow.microsteps
        }
        if config.weights is not None and len(set(config.weights)) > 1:
            adaptive = [name for name, v in self.policies.items() if v.rule == "adaptive"]
            if adaptive:
                raise UserError(
                    f"microstep(s) {', '.join(adaptive)} vote by the adaptive rule, which counts votes and cannot "
                    f"weigh them: vote with equal weights (--weights equal), or override the rule (--rule ahead_by_k)"
                )
        self.decider = Decider(
            roster=self.roster,
            speculation=speculation,
            seed=config.seed,
            policies=self.policies,
            max_tokens=config.max_tokens,
            run_id=run_id,
            workflow=workflow,
            workflow_ref=config.workflow_ref,
            weights=config.weights,
        )
        backtracker = None
        if config.backtracks or workflow.has_check():
            backtracker = Backtracker(workflow, limit=config.backtracks)
        self.scheduler = Scheduler(workflow, self.decider, run_id=run_id, backtracker=backtracker)
        self.ledger = Ledger(
            store=store,
            rid=rid,
            run_id=run_id,
            labels=self.roster.labels,
            policies=self.policies,
            microsteps=workflow.microsteps,
            detail=config.detail,
            commit_every=config.commit_every,
            commit_seconds=config.commit_seconds,
            expected_steps=expected_steps,
            on_progress=on_progress,
            progress_seconds=config.progress_seconds,
            log_steps=config.log_steps,
            snapshot_every=config.snapshot_every,
            prices=[price_of(a, config.prices) for a in self.roster.agents],
            budget=budget,
            observer=observer,
            backtracker=backtracker,
        )
        self.window = config.window if speculation is not None else 1
        """Transitions a drafter runs ahead of the chain, at most (1: none)."""
        self.ahead = ahead

    @property
    def agents(self) -> tuple[Agent, ...]:
        """The voting agents, in escalation order."""
        return self.roster.voting

    async def run_chain(self, state: Any) -> Any:
        """Advance from ``state`` (after the ledger's committed steps) until done; returns the final state."""
        self.ledger.begin_segment()
        window = None
        if self.window > 1:
            sched = self.scheduler
            window = Window(
                self.wf,
                self.decider,
                cap=self.window,
                adaptive=self.config.adaptive_window,
                keep_samples=self.ledger.samples is not None,
                oracle=sched.has_oracle,
                expected=sched.expected,
                crash=sched.crash,
                ledger=self.ledger,
            )
        return await self.scheduler.chain(state, self.ledger, self.ahead, window)

    # -- running ahead on a replica ---------------------------------------------------
    def recipe(self) -> Recipe:
        """What :meth:`for_rollout` needs to rebuild this engine's decisions elsewhere (no store, no agents)."""
        return Recipe.of(self.wf, self.config, self.roster, self.spec)

    @classmethod
    def for_rollout(cls, recipe: Recipe, agent: Agent) -> Engine:
        """An engine that decides steps exactly as the recipe's did, with ``agent`` in every role."""
        speculation = None
        if recipe.speculation is not None:
            speculation = Speculation(drafter=agent, verifiers=[agent] * recipe.verifiers, **recipe.speculation)
        return cls(
            workflow=recipe.workflow,
            config=recipe.config,
            agents=[agent] * recipe.voting_agents,
            speculation=speculation,
            run_id="rollout",
        )

    async def rollout(self, state: Any, step: int, steps: int) -> tuple[Any, int, str, str | None]:
        """Decide and apply up to ``steps`` steps from ``state`` (at ``step``), committing nothing (see
        :meth:`maker.engine._scheduler.Scheduler.rollout`)."""
        return await self.scheduler.rollout(state, step, steps)

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self.roster.backends))
