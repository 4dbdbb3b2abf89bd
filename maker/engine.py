"""The engine: one run's decider, scheduler and ledger, put together.

Each job has one home:

* :class:`~maker._decider.Decider` decides one microstep call (sample, red-flag, vote,
  escalate; or draft, verify, escalate), a function of the step, the call and the seeds;
* :class:`~maker._scheduler.Scheduler` chooses what is in flight: the chain, a transition
  at a time, the calls of a fan-out decided together, or a rollout for the cluster's
  lookahead;
* :class:`~maker._ledger.Ledger` counts, keeps the rows and commits them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from maker._decider import Decider, flag_reason, too_long
from maker._ledger import Ledger, Progress, labels_of
from maker._scheduler import Scheduler
from maker._window import Window
from maker.agents import Agent
from maker.dsl import Workflow
from maker.errors import RunError
from maker.speculation import Speculation
from maker.store import Store
from maker.voting import Voting

__all__ = ["Engine", "Progress", "RunSummary", "flag_reason", "too_long"]


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
    result: dict[str, Any] | None = None
    error: str | None = None


class Engine:
    """Runs one workflow run against a store. Build it through :mod:`maker.runs`."""

    def __init__(
        self,
        *,
        workflow: Workflow[Any, Any],
        store: Store | None,
        rid: int,
        run_id: str,
        agents: Sequence[Agent],
        seed: int,
        voting: dict[str, Any],
        detail: str = "summary",
        max_tokens: int | None = None,
        commit_every: int = 4096,
        commit_seconds: float = 0.5,
        expected_steps: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_seconds: float = 0.25,
        log_steps: bool = False,
        speculation: Speculation | None = None,
        window: int = 1,
        adaptive_window: bool = True,
        snapshot_every: int | None = None,
    ) -> None:
        if not agents:
            raise RunError("no agent given: give at least one agent spec (`agents`)", run_id=run_id)
        self.wf = workflow
        self.store = store
        self.rid = rid
        self.run_id = run_id
        self.agents = list(agents)
        self.seed = seed
        self.spec = speculation
        # Agents by index as steps record them: voting agents, then the drafter, then the verifiers.
        self.all_agents = self.agents + ([speculation.drafter, *speculation.verifiers] if speculation else [])
        self.policies: dict[str, Voting] = {
            ms.name: ms.voting if (ms.voting.fixed or not voting) else ms.voting.model_copy(update=voting)
            for ms in workflow.microsteps
        }
        self._max_tokens = max_tokens
        self._voting = voting
        self.decider = Decider(
            agents=self.agents,
            speculation=speculation,
            seed=seed,
            policies=self.policies,
            max_tokens=max_tokens,
            run_id=run_id,
            workflow=workflow,
        )
        self.scheduler = Scheduler(workflow, self.decider, run_id=run_id)
        self.ledger = Ledger(
            store=store,
            rid=rid,
            run_id=run_id,
            labels=labels_of(self.agents, speculation),
            policies=self.policies,
            microsteps=workflow.microsteps,
            detail=detail,
            commit_every=commit_every,
            commit_seconds=commit_seconds,
            expected_steps=expected_steps,
            on_progress=on_progress,
            progress_seconds=progress_seconds,
            log_steps=log_steps,
            snapshot_every=snapshot_every,
        )
        self.window = window if speculation is not None else 1
        """Transitions a drafter runs ahead of the chain, at most (1: none; see :mod:`maker._window`)."""
        self.adaptive_window = adaptive_window
        self.ahead: Any = None
        """Set by a cluster run: told each step and state, it has a replica run the chain ahead (see
        :mod:`maker.cluster.lookahead`)."""

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
                adaptive=self.adaptive_window,
                keep_samples=self.ledger.samples is not None,
                oracle=sched.has_oracle,
                expected=sched._expected,
                crash=sched.crash,
                ledger=self.ledger,
            )
        return await self.scheduler.chain(state, self.ledger, self.ahead, window)

    # -- running ahead on a replica ---------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        """What :meth:`for_rollout` needs to rebuild this engine's decisions elsewhere (no store, no agents)."""
        spec = self.spec
        speculation = None
        if spec is not None:
            speculation = {
                f.name: getattr(spec, f.name)
                for f in dataclasses.fields(spec)
                if f.name not in ("drafter", "verifiers")
            }
            speculation["verifiers"] = len(spec.verifiers)
        return {
            "workflow": self.wf,
            "seed": self.seed,
            "voting": self._voting,
            "max_tokens": self._max_tokens,
            "agents": len(self.agents),
            "speculation": speculation,
        }

    @classmethod
    def for_rollout(cls, recipe: dict[str, Any], agent: Agent) -> Engine:
        """An engine that decides steps exactly as the recipe's did, with ``agent`` in every role."""
        speculation = None
        if recipe["speculation"] is not None:
            spec = dict(recipe["speculation"])
            speculation = Speculation(drafter=agent, verifiers=[agent] * spec.pop("verifiers"), **spec)
        return cls(
            workflow=recipe["workflow"],
            store=None,
            rid=0,
            run_id="rollout",
            agents=[agent] * recipe["agents"],
            seed=recipe["seed"],
            voting=recipe["voting"],
            max_tokens=recipe["max_tokens"],
            speculation=speculation,
        )

    async def rollout(self, state: Any, step: int, steps: int) -> tuple[Any, int, str, str | None]:
        """Decide and apply up to ``steps`` steps from ``state`` (at ``step``), committing nothing (see
        :meth:`maker._scheduler.Scheduler.rollout`)."""
        return await self.scheduler.rollout(state, step, steps)

    async def aclose(self) -> None:
        backends = {id(a.backend): a.backend for a in self.all_agents}
        await asyncio.gather(*(b.aclose() for b in backends.values()))
