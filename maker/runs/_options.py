"""How to run: the options a run is started with, recorded with it, and changed on resume or fork."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maker.agents import Agent, make_agent
from maker.cluster.config import ClusterOptions
from maker.errors import UserError

__all__ = ["RunOptions", "VOTING_OVERRIDES", "DEFAULT_WINDOW", "DEFAULT_SNAPSHOTS", "options_error"]

DEFAULT_WINDOW = 64
"""The speculative window's cap when none is given (measured: see bench/bench_pipeline.py)."""

DEFAULT_SNAPSHOTS = "every:16384"
"""The state snapshots a run keeps when none is asked: a fork or replay re-applies at most about 16,384 + one
commit's steps (a fraction of a second), and a state that grows with the run no longer makes the store grow with
the square of its length (see bench/bench_snapshots.py)."""

VOTING_OVERRIDES = ("rule", "k", "confidence", "max_rounds", "first_temperature", "temperature", "batch")


class RunOptions(BaseModel):
    """How to run: agents, voting overrides, seed, what to record, how often to commit."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    agents: list[str] = Field(min_length=1)
    """Agent specs in escalation order: the first answers; the next takes over a step the previous could not decide."""
    seed: int = 0
    """Run seed; every sample's randomness derives from it, the step and the sample index."""
    rule: Literal["ahead_by_k", "adaptive"] | None = None
    """Override every microstep's voting rule."""
    k: int | None = Field(None, ge=1)
    """Override every microstep's k."""
    confidence: float | None = Field(None, gt=0.5, lt=1.0)
    """Override the adaptive rule's posterior threshold."""
    max_rounds: int | None = Field(None, ge=1)
    """Override the bound on sampling rounds per step and agent."""
    first_temperature: float | None = Field(None, ge=0.0)
    """Override the temperature of each step's first sample."""
    temperature: float | None = Field(None, ge=0.0)
    """Override the temperature of later samples."""
    batch: int | None = Field(None, ge=1, le=4096)
    """Override the samples asked of a backend per call (later rounds are filled up to it)."""
    ensemble: bool = False
    """Every agent votes on every step (a mixed ensemble), samples drawn round-robin (agent 1, 2, ..., 1, ...),
    instead of escalating; see docs/voting.md."""
    weights: Literal["p", "equal"] | None = None
    """With ``ensemble``: each vote weighs the log-odds of its agent's p, ``ln(p/(1-p))`` (``p``, the default),
    or one (``equal``). k is then a margin in units of the first agent's weight."""
    max_tokens: int | None = Field(None, ge=1)
    """Override the red-flag token limit of every microstep."""
    detail: Literal["summary", "samples"] = "summary"
    """``summary``: one row per step; ``samples``: also every sample's text, tokens and red-flag reason."""
    commit_every: int = Field(4096, ge=1)
    """Commit at least every this many steps."""
    commit_seconds: float = Field(0.5, gt=0)
    """... and at least this often, in seconds."""
    snapshots: str = DEFAULT_SNAPSHOTS
    """Which state snapshots the store keeps (one is taken at every commit): ``all``, or ``every:N``: the run's
    first and latest, and the first one taken in each stretch of N steps. Resume, replay and fork start from the
    nearest earlier snapshot and re-apply the recorded answers after it, so every step stays reachable."""
    drafter: str | None = None
    """Speculative drafting: the small model that drafts each step (then --agent is the large model)."""
    verifiers: list[str] = Field(default_factory=list)
    """Agents that confirm or reject each draft."""
    verify: Literal["score", "vote", "logprob"] = "score"
    """``score``: rate the draft 0-9 in one prefill pass (SpecReason); ``vote``: verifiers answer themselves;
    ``logprob``: the draft's own token log-probabilities pass ``logprob_threshold`` (SpecGuard; no verifier)."""
    logprob_stat: Literal["min", "mean"] = "min"
    """Logprob mode: check the minimum token log-probability of the draft (SpecGuard's) or their mean."""
    logprob_threshold: float = Field(-2.0, le=0.0)
    """Logprob mode: accept a draft whose statistic is at least this log-probability."""
    threshold: float = Field(7.0, ge=0.0, le=9.0)
    """Score at or above which a verifier accepts a draft."""
    score_by: Literal["expected", "greedy"] = "expected"
    """Expected digit or most likely digit."""
    verify_k: int = Field(1, ge=1)
    """Verdict margin that accepts (or rejects) a draft."""
    draft_k: int = Field(1, ge=1, le=64)
    """Drafts are voted among the drafter's own samples, first-to-ahead-by-this (1: the drafter's one sample)."""
    draft_batch: int | None = Field(None, ge=1, le=4096)
    """Samples asked of the drafter per call when ``draft_k`` > 1 (default ``2 * draft_k``: one call nearly
    always decides, so the drafter's vote costs one drafter latency)."""
    large_first: int = Field(0, ge=0)
    """The first N steps are always voted by the large model."""
    entropy_threshold: float | None = Field(None, ge=0.0)
    """GlimpRouter: steps whose drafter first-token entropy exceeds this go straight to the large model."""
    window: int | None = Field(None, ge=1, le=4096)
    """With a drafter: transitions drafted and decided ahead of the chain, at most (1: one step at a time; default
    64, or on a cluster whose one model serves every role, a replica running the chain ahead instead). The
    committed trace is the same for every window."""
    fixed_window: bool = False
    """Keep the window at ``window`` instead of adapting it to how often the drafts hold."""
    backtracks: int = Field(0, ge=0, le=10_000)
    """How many times the run may go back to the last state that passed the workflow's check, when a check fails or
    a step cannot be decided, and decide on from there as a new branch (0: never; see ``docs/backtracking.md``).
    Not with a window of drafts above 1: a speculative run that backtracks drafts one step at a time."""
    max_cost: float | None = Field(None, gt=0)
    """Stop at a commit once the run has spent this many dollars (at its agents' prices); resume with a larger
    one to go on."""
    token_budget: int | None = Field(None, ge=1)
    """Stop at a commit once the run has been billed this many tokens, prompt and completion."""
    over_budget: bool = Field(False, exclude=True)
    """Start even when the estimated cost is over the budget (otherwise such a run is refused before it starts)."""
    prices: dict[str, list[float]] = Field(default_factory=dict)
    """Prices by model name, dollars per million ``[input, cached input, output]`` tokens (``--prices FILE``),
    ahead of the known table; recorded with the run, so its cost reads the same later."""
    log_steps: bool = Field(False, exclude=True)
    """Log one debug line per committed step (``--log-level debug``); not part of the run's record."""
    cluster: ClusterOptions | None = Field(None, exclude=True)
    """Serve every agent's model from Ray replica actors (``--cluster``); where models run is not part of
    the run's record: the same seed gives the same trace in-process or on a cluster."""

    @model_validator(mode="after")
    def _backtracks_alone(self) -> RunOptions:
        if self.backtracks and self.window is not None and self.window > 1:
            raise ValueError(
                "a run that backtracks (`backtracks`) drafts one step at a time: leave out `window` or give 1"
            )
        return self

    @field_validator("snapshots")
    @classmethod
    def _snapshot_policy(cls, value: str) -> str:
        kind, _, n = value.partition(":")
        if value != "all" and not (kind == "every" and n.isdigit() and int(n) >= 1):
            raise ValueError(
                f"must be 'all' or 'every:N' with N a number of steps, 1 or more (default {DEFAULT_SNAPSHOTS})"
            )
        return value

    def snapshot_every(self) -> int | None:
        """N of ``every:N``; None keeps every snapshot."""
        return None if self.snapshots == "all" else int(self.snapshots.partition(":")[2])

    def agent_maker(self, stack: contextlib.ExitStack) -> Callable[[str], Agent]:
        """``make_agent``, or the cluster's, which starts replicas (stopped when ``stack`` closes)."""
        if self.cluster is None:
            return make_agent
        from maker.cluster import Cluster

        cluster = Cluster(self.cluster)
        stack.callback(cluster.close)
        return cluster.agent

    def speculation(self, make: Callable[[str], Agent] = make_agent) -> Any:
        from maker.engine import Speculation

        if self.drafter is None:
            if self.verifiers:
                raise UserError("verifiers (`verifiers`) need a drafter (`drafter`) whose drafts they check")
            return None
        drafter, verifiers = make(self.drafter), [make(v) for v in self.verifiers]
        _check_abilities(self, drafter, verifiers)
        return Speculation(
            drafter=drafter,
            verifiers=verifiers,
            mode=self.verify,
            threshold=self.threshold,
            score_by=self.score_by,
            logprob_stat=self.logprob_stat,
            logprob_threshold=self.logprob_threshold,
            verify_k=self.verify_k,
            large_first=self.large_first,
            entropy_threshold=self.entropy_threshold,
            draft_k=self.draft_k,
            draft_batch=self.draft_batch,
        )

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        from maker.agents.prices import Price

        for model, p in value.items():
            if len(p) != 3:
                raise ValueError(f"{model!r}: give [input, cached, output] dollars per million tokens")
            try:
                Price(*p)
            except UserError as exc:
                raise ValueError(f"{model!r}: {exc}") from None
        return value

    def price_table(self) -> dict[str, Any]:
        """``prices`` as :class:`~maker.agents.prices.Price` by model name."""
        from maker.agents.prices import Price

        return {m: Price(*p) for m, p in self.prices.items()}

    def check_priced(self) -> None:
        """Refuse a budget in money (``max_cost``) when an agent of the run has no price: its spending could not
        be counted. Read off the specs, no model is loaded."""
        if self.max_cost is None:
            return
        from maker.agents.specs import spec_price

        table = self.price_table()
        specs = [*self.agents, *([self.drafter] if self.drafter else []), *self.verifiers]
        unpriced = [s for s in dict.fromkeys(specs) if spec_price(s, table) is None]
        if unpriced:
            raise UserError(
                f"`max_cost` needs every agent's price, and {', '.join(unpriced)} has none: give "
                f"price=IN/CACHED/OUT in its spec (dollars per million tokens), or a prices file (`prices_file`) "
                f"naming its model; or limit tokens (`token_budget`) instead"
            )

    def budget(self) -> Any:
        """The run's :class:`~maker.engine.Budget` (None: no limit)."""
        if self.max_cost is None and self.token_budget is None:
            return None
        from maker.engine import Budget

        return Budget(self.max_cost, self.token_budget)

    def ensemble_weights(self, agents: list[Agent]) -> tuple[float, ...] | None:
        """The engine's vote weights (first agent's = 1), or None when the agents escalate. An agent of a
        p-weighted ensemble whose p is unknown is refused, with how to give it."""
        if not self.ensemble:
            if self.weights is not None:
                raise UserError("`weights` weighs the votes of an ensemble: give `ensemble` too (--ensemble)")
            return None
        if self.weights == "equal":
            return (1.0,) * len(agents)
        from maker.voting import log_odds, relative_weights

        raw = []
        for a in agents:
            p = a.info.get("p")
            if p is None:
                raise UserError(
                    f"agent {a.spec} has no known p, which a weighted ensemble weighs its votes by: measure it "
                    f"(`maker calibrate WORKFLOW --agent {a.spec}`) and give it in the spec (p=0.97, e.g. "
                    f"{a.spec},p=0.97), or vote with equal weights (`weights` equal, --weights equal)"
                )
            try:
                raw.append(log_odds(float(p)))
            except ValueError as exc:
                raise UserError(f"agent {a.spec}: {exc}") from None
        weights = relative_weights(raw)
        if self.rule == "adaptive" and len(set(weights)) > 1:
            raise UserError(
                "the adaptive rule counts votes, it cannot weigh them: vote by `rule` ahead_by_k, or with equal "
                "weights (--weights equal)"
            )
        return weights

    def voting(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in VOTING_OVERRIDES if getattr(self, k) is not None}


def _check_abilities(options: RunOptions, drafter: Agent, verifiers: list[Agent]) -> None:
    """Refuse, before anything is written, a speculative run whose agents lack what it will ask of them."""
    from maker.agents import EntropyProbing, Judging, returns_logprobs

    if options.verify == "logprob":
        if verifiers:
            raise UserError(
                "`verify` logprob checks the draft's own token log-probabilities and asks no verifier: leave out "
                "`verifiers`, or verify by score or vote"
            )
        if not returns_logprobs(drafter.backend):
            raise UserError(
                f"drafter {drafter.spec} cannot return its tokens' log-probabilities, which `verify` logprob "
                f"checks; use a drafter that does (simulated, hf, vllm, openai), or verify by score or vote"
            )
    if options.verify == "score":
        for v in verifiers:
            if not isinstance(v.backend, Judging):
                raise UserError(
                    f"verifier {v.spec} cannot rate drafts (its backend has no judge(): no next-token "
                    f"log-probabilities); set `verify` to vote (the verifiers answer the step themselves), or "
                    f"serve it from a backend that returns log-probabilities"
                )
    if options.entropy_threshold is not None and not isinstance(drafter.backend, EntropyProbing):
        raise UserError(
            f"drafter {drafter.spec} cannot measure its first token's entropy (its backend has no "
            f"first_token_entropy()); leave out `entropy_threshold`, or use a backend that returns "
            f"log-probabilities"
        )


def options_error(exc: ValidationError) -> UserError:
    """pydantic's report on bad run options as one line naming each option by its key: ``bad run option `k` 0:
    must be greater than or equal to 1`` (the command line shows it as ``--k 0``)."""
    parts, unknown = [], []
    for err in exc.errors():
        loc = err.get("loc") or ("?",)
        field = str(loc[0])
        if err.get("type") == "extra_forbidden":
            known = ", ".join(f for f in RunOptions.model_fields if not RunOptions.model_fields[f].exclude)
            unknown.append(f"unknown run option {field!r} (known: {known})")
            continue
        flag = f"`{field}`"
        if len(loc) > 1:
            flag += f" (item {loc[1]})" if isinstance(loc[1], int) else ""
        value = err.get("input")
        shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        msg = str(err.get("msg", "is not valid"))
        for said, says in (("Input should be", "must be"), ("List should have", "must have"), ("Value error, ", "")):
            if msg.startswith(said):
                msg = says + msg[len(said) :]
                break
        else:
            msg = msg[:1].lower() + msg[1:]
        parts.append(f"{flag} {str(shown)[:80]}: {msg}")
    return UserError("; ".join((["bad run option " + "; ".join(parts)] if parts else []) + unknown))
