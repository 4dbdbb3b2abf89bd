"""Deciding one microstep call: sample, red-flag, vote, escalate; or draft, verify and escalate.

A :class:`Decider` holds no run state: :meth:`Decider.decide` is a function of the step
index, the call, the ground truth (for simulated agents) and the backends' answers to
requests whose seeds derive from the run seed and the step. It returns a
:class:`Decision` that carries everything the step cost (calls per agent, tokens, red
flags, samples generated ahead and dropped), so several decisions can be in flight at
once and the :class:`~maker.engine._ledger.Ledger` adds each one when it is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from pydantic import ValidationError

from maker._rng import derive, mix64, mixes
from maker.agents import (
    EntropyProbing,
    GenerateRequest,
    JudgeRequest,
    Judging,
    Oracle,
    Roster,
    Sample,
    digit_score,
    judge_prompt,
)
from maker.dsl import Microstep, MicrostepCall
from maker.engine._batching import Coalescing
from maker.engine._ensemble import WeightedTally, ask_round, round_plan
from maker.engine._failures import EARLY_SAMPLES, Attempt, code_error, undecided_error, unknown_microstep
from maker.engine._speculation import DRAFT_CALLS, Speculation, logprob_stat
from maker.errors import StepUndecidedError, WorkflowCodeError
from maker.voting import Voting, is_decided, samples_needed

__all__ = ["Decider", "Decision", "Drafted", "Parsed", "flag_reason", "too_long", "TOO_LONG"]

TOO_LONG = "too_long"
_DRAFT_SALT = 0xD4AF7
_VERIFY_SALT = 0x5E1F1


class Parsed:
    """A parsed response, cached per distinct text within one step."""

    __slots__ = ("answer", "key", "flag")

    def __init__(self, answer: Any, key: Any, flag: str | None) -> None:
        self.answer = answer
        self.key = key
        self.flag = flag


class Decision:
    """One decided call and what deciding it cost."""

    __slots__ = (
        "answer",
        "key",
        "votes",
        "rounds",
        "samples",
        "flags",
        "agent",
        "spec",
        "tokens",
        "calls",
        "red_flags",
        "spare_samples",
        "spare_tokens",
        "drafted",
        "accepted",
        "escalated",
        "issued",
        "examples",
        "usage",
    )

    def __init__(self) -> None:
        self.answer: Any = None
        self.key: Any = None
        self.votes = ""
        """The tally, winner first: ``[3,1]``."""
        self.rounds = 0
        self.samples = 0
        self.flags: dict[str, int] | None = None
        """Red flags by reason."""
        self.agent = 0
        """Index of the deciding agent (voting agents, then the drafter, then the verifiers)."""
        self.spec: dict[str, Any] | None = None
        """The speculation record (route, verdicts, accepted or escalated), when the run drafts."""
        self.tokens = 0
        self.calls: dict[int, int] = {}
        """Model calls by agent index."""
        self.issued: dict[int, int] = {}
        """Samples and verdicts asked for, by agent index, counted when asked (spare and unanswered ones too):
        what a decision dropped half way (a speculative step off the chain's path) cost."""
        self.red_flags = 0
        self.spare_samples = 0
        self.spare_tokens = 0
        self.drafted = self.accepted = self.escalated = 0
        self.examples: dict[str, str] | None = None
        """The first red flag's text of each reason (what a failed step's error quotes)."""
        self.usage: dict[int, list[int]] | None = None
        """What the step was billed, by agent index: ``[prompt, cached, completion, estimated]`` tokens, spare
        samples included; ``estimated`` counts the requests whose server reported no usage (estimated here)."""

    def flag(self, reason: str, n: int = 1, text: str | None = None) -> None:
        flags = self.flags
        if flags is None:
            flags = self.flags = {}
        if reason not in flags and text is not None:
            if self.examples is None:
                self.examples = {}
            self.examples[reason] = text
        flags[reason] = flags.get(reason, 0) + n

    def called(self, agent: int, n: int = 1) -> None:
        self.calls[agent] = self.calls.get(agent, 0) + n

    def issue(self, agent: int, n: int = 1) -> None:
        self.issued[agent] = self.issued.get(agent, 0) + n

    def bill(self, agent: int, prompt: str, samples: Sequence[Sample]) -> None:
        """Add one request's bill: the usage its server reported (on the first sample of each HTTP request), or,
        where none was reported, an estimate: the prompt at four characters a token, and every sample's tokens."""
        p = c = o = 0
        est = 1
        for s in samples:
            u = s.usage
            if u is not None:
                p += u.prompt
                c += u.cached
                o += u.completion
                est = 0
        if est:
            p = len(prompt) // 4 + 1
            o = sum([s.tokens for s in samples])
        self.billed(agent, p, c, o, est)

    def billed(self, agent: int, prompt: int, cached: int, completion: int, estimated: int) -> None:
        usage = self.usage
        if usage is None:
            self.usage = {agent: [prompt, cached, completion, estimated]}
            return
        row = usage.get(agent)
        if row is None:
            usage[agent] = [prompt, cached, completion, estimated]
        else:
            row[0] += prompt
            row[1] += cached
            row[2] += completion
            row[3] += estimated

    def usage_json(self) -> str | None:
        """``usage`` as the step row keeps it: ``[[agent, prompt, cached, completion, estimated], ...]``."""
        usage = self.usage
        if usage is None:
            return None
        if len(usage) == 1:
            for a, r in usage.items():
                return f"[[{a},{r[0]},{r[1]},{r[2]},{r[3]}]]"
        return "[" + ",".join([f"[{a},{r[0]},{r[1]},{r[2]},{r[3]}]" for a, r in usage.items()]) + "]"


class Drafted:
    """A step's route and draft (:meth:`Decider.draft`): the decision so far, the draft's text (None when the
    step was routed straight to voting) and the draft read through the red flags."""

    __slots__ = ("decision", "text", "parsed", "on_reject", "logprobs")

    def __init__(
        self, decision: Decision, text: str | None, parsed: Parsed | None, logprobs: list[float] | None = None
    ) -> None:
        self.decision = decision
        self.text = text
        self.parsed = parsed
        self.logprobs = logprobs
        """The draft's token log-probabilities (asked for in ``logprob`` mode only; None where not returned)."""
        self.on_reject: Any = None
        """Called when the verifiers turn the draft down (before escalation): the speculative window drafts no
        further past it until its escalated vote is in."""

    @property
    def answer(self) -> Any:
        """The draft's answer, or None when there is no usable draft (routed, or red-flagged)."""
        p = self.parsed
        return p.answer if p is not None and p.flag is None else None

    @property
    def usable(self) -> bool:
        p = self.parsed
        return p is not None and p.flag is None


def flag_reason(flag: str) -> str:
    """The reason key of a red flag (``too_long``, ``format``, ``schema`` or a rule name)."""
    return flag.split(":", 1)[0]


def too_long(tokens: int, max_tokens: int) -> str:
    return f"{TOO_LONG}: {tokens} tokens > {max_tokens}"


def _lean_round(policy: Voting) -> tuple[int, tuple[float, ...], str] | tuple[()]:
    """What a policy's common case needs, made once: k, the temperatures of its first k samples, and the tally
    when they agree; or () where its first round is not k samples that decide when they agree."""
    if policy.rule != "ahead_by_k" or (policy.batch or 0) > policy.k:
        return ()
    k = policy.k
    return k, (policy.first_temperature,) + (policy.temperature,) * (k - 1), f"[{k}]"


_BRANCH_SALT = 0x6272616E6368  # "branch"


class Decider:
    """Decides calls for one run: its agents, speculation settings, seed and voting policies."""

    def __init__(
        self,
        *,
        roster: Roster,
        speculation: Speculation | None,
        seed: int,
        policies: dict[str, Voting],
        max_tokens: int | None,
        run_id: str = "",
        workflow: Any = None,
        workflow_ref: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.agents = list(roster.voting)
        self.run_id = run_id
        self.workflow = workflow
        """The workflow whose calls are decided (named in errors)."""
        self.workflow_ref = workflow_ref
        """Where the run's workflow is found, for the commands errors suggest."""
        self.weights = None if weights is None else tuple(weights)
        """A mixed ensemble: every voting agent votes on every step, each vote weighing this (reference-agent
        units; see :mod:`maker.engine._ensemble`). None: the agents escalate, one after another."""
        self.spec = speculation
        self.policies = policies
        self.max_tokens = max_tokens
        self._base_seed = seed
        self._seed = derive(seed)
        # Concurrent decisions (a fan-out) reach a backend through one coalescing front per backend, so the
        # requests they make in the same turn of the event loop go out as one batched call.
        fronts: dict[int, Coalescing] = {}
        self._fronts = [fronts.setdefault(id(a.backend), Coalescing.over(a.backend)) for a in roster.agents]
        self._lean: dict[int, tuple[int, tuple[float, ...], str] | tuple[()]] = {}
        """By policy (its id: the policies live as long as the decider), its :func:`_lean_round`, made once."""

    def on_branch(self, branch: int) -> None:
        """Decide the steps from now on as ``branch`` does: a run that backtracks decides its steps again on a new
        branch, with seeds derived from the run seed and the branch (branch 0's are the run's, as without
        backtracking)."""
        self._seed = derive(self._base_seed) if branch == 0 else derive(self._base_seed, _BRANCH_SALT, branch)

    async def decide(
        self,
        step: int,
        call: MicrostepCall,
        expected: Any,
        samples_out: list[tuple[Any, ...]] | None,
        together: bool = False,
        drafted: Drafted | None = None,
    ) -> Decision:
        """Decide one call: drafted and verified when the run speculates, else voted.

        ``together``: other calls are being decided at the same time, so requests go through the coalescing
        fronts. ``samples_out`` receives one sample row per voted sample (detail level ``samples``). ``drafted``:
        the :meth:`draft` of this very call, already made.
        """
        try:
            if self.spec is not None:
                return await self._speculate(step, call, expected, samples_out, together, drafted)
            return await self._vote(step, call, expected, samples_out, together)
        except WorkflowCodeError as exc:
            raise self._at(exc, step, call, samples_out) from exc.__cause__

    def _at(
        self, exc: WorkflowCodeError, step: int, call: MicrostepCall, samples_out: list[tuple[Any, ...]] | None = None
    ) -> BaseException:
        """A red-flag rule's crash (raised where no step is known) as the error of this step."""
        if exc.step is not None or exc.__cause__ is None:
            return exc
        return code_error(
            exc.__cause__,
            exc.method,
            workflow=self.workflow,
            step=step,
            run_id=self.run_id,
            kind="red_flag",
            attempt=Attempt("red_flag", [call], [], [samples_out]),
        )

    def _policy(self, ms: Microstep[Any], step: int) -> Voting:
        try:
            return self.policies[ms.name]
        except KeyError:
            raise unknown_microstep(ms, workflow=self.workflow, step=step, known=list(self.policies)) from None

    # -- voting -----------------------------------------------------------------------------------
    async def _vote(
        self,
        step: int,
        call: MicrostepCall,
        expected: Any,
        samples_out: list[tuple[Any, ...]] | None,
        together: bool,
        d: Decision | None = None,
    ) -> Decision:
        """Vote on ``call``: each agent in turn samples round after round until one answer leads by the policy's
        margin; an agent that runs out of rounds (or whose samples are nearly all red-flagged) hands the step to the
        next; when none is left the step is undecided."""
        ms: Microstep[Any] = call.microstep
        try:
            policy = self.policies[ms.name]
        except KeyError:
            policy = self._policy(ms, step)
        max_tokens = self.max_tokens or ms.max_tokens
        step_seed = mix64(self._seed ^ step)
        oracle = Oracle(ms, expected, step, call.inputs) if expected is not None else None
        cache: dict[str, Parsed] = {}
        if self.weights is not None:
            ctx = (step_seed, max_tokens, oracle)
            return await self._vote_together(step, call, policy, ctx, cache, samples_out, together, d or Decision())
        prefetched: list[Any] | None = None
        if d is None:
            d = Decision()
            lean = self._lean.get(id(policy))
            if lean is None:
                lean = self._lean[id(policy)] = _lean_round(policy)
            if samples_out is None and lean:
                prefetched = await self._first_round(d, lean, call, step_seed, max_tokens, oracle, cache, together)
                if prefetched is None:
                    return d
        idx = 0
        rounds = 0
        t_first = policy.first_temperature
        t_rest = policy.temperature
        calls = d.calls
        early = 0
        counts: dict[Any, int] = {}
        for agent_idx, agent in enumerate(self.agents):
            generate = (self._fronts[agent_idx] if together else agent.backend).generate
            counts = {}
            winners: dict[Any, Any] = {}
            top = second = 0
            need = policy.k if policy.rule == "ahead_by_k" else samples_needed(policy, 0, 0)
            fill = policy.batch or need
            spare: list[Any] = []  # samples already generated for the rounds to come, in index order
            agent_rounds = 0
            agent_first = idx
            early = 0
            while agent_rounds < policy.max_rounds:
                agent_rounds += 1
                if len(spare) < need:
                    if prefetched is not None:  # this very round's request, made above
                        more, prefetched = prefetched, None
                    else:
                        lo = idx + len(spare)
                        hi = idx + max(need, len(spare) + fill)
                        seeds = mixes(step_seed, lo, hi)
                        temps = [t_first if i == 0 else t_rest for i in range(lo, hi)]
                        req = GenerateRequest(call.prompt, temps, seeds, max_tokens, ms.stop, False, oracle, ms.pattern)
                        d.issue(agent_idx, hi - lo)
                        (more,) = await generate([req])
                        d.bill(agent_idx, call.prompt, more)
                    spare += more
                batch = spare[:need]
                del spare[:need]
                calls[agent_idx] = calls.get(agent_idx, 0) + need
                where = (step, rounds + agent_rounds - 1, agent_idx, t_first, t_rest)
                idx = self._count(d, call, batch, idx, max_tokens, cache, counts, winners, samples_out, where)
                if counts:
                    ranked = sorted(counts.values(), reverse=True)
                    top = ranked[0]
                    second = ranked[1] if len(ranked) > 1 else 0
                    if is_decided(policy, top, second):
                        self._drop(d, spare)
                        self._won(d, counts, winners)
                        d.rounds += rounds + agent_rounds
                        d.samples += idx
                        d.agent = agent_idx
                        return d
                asked = idx - agent_first
                if asked >= EARLY_SAMPLES and sum(counts.values()) * 20 <= asked:
                    early = asked  # nearly every sample red-flagged: more rounds of the same would not decide it
                    break
                need = samples_needed(policy, top, second)
            rounds += agent_rounds
            self._drop(d, spare)
        d.rounds += rounds
        d.samples += idx
        d.agent = len(self.agents) - 1
        d.votes = "[" + ",".join(map(str, sorted(counts.values(), reverse=True))) + "]"
        raise self._undecided(step, call, d, policy, max_tokens, samples_out, early)

    def _undecided(
        self,
        step: int,
        call: MicrostepCall,
        d: Decision,
        policy: Voting,
        max_tokens: int,
        samples_out: Any,
        early: int,
    ) -> StepUndecidedError:
        """The error of a step no agent decided (its tally in ``d.votes``), keeping the attempt for the trace."""
        return undecided_error(
            step=step,
            call=call,
            decision=d,
            votes=d.votes,
            agents=[a.spec for a in self.agents],
            policy=policy,
            max_tokens=max_tokens,
            run_id=self.run_id,
            workflow=self.workflow,
            workflow_ref=self.workflow_ref,
            attempt=Attempt("undecided", [call], [d], [samples_out]),
            early=early,
            kept=samples_out is not None,
            examples=d.examples or {},
        )

    async def _vote_together(
        self,
        step: int,
        call: MicrostepCall,
        policy: Voting,
        where: tuple[int, int, Oracle | None],
        cache: dict[str, Parsed],
        samples_out: list[tuple[Any, ...]] | None,
        together: bool,
        d: Decision,
    ) -> Decision:
        """Vote on ``call`` with every agent together, round-robin, weighted (:mod:`maker.engine._ensemble`)."""
        ms: Microstep[Any] = call.microstep
        step_seed, max_tokens, oracle = where
        weights = self.weights
        assert weights is not None
        n = len(self.agents)
        gens = [(self._fronts[a] if together else self.agents[a].backend).generate for a in range(n)]
        tally = WeightedTally(weights)
        idx = rounds = 0
        t_first, t_rest = policy.first_temperature, policy.temperature
        user_flags = bool(ms.red_flags)

        def request(temps: list[float], seeds: list[int]) -> GenerateRequest:
            return GenerateRequest(call.prompt, temps, seeds, max_tokens, ms.stop, False, oracle, ms.pattern)

        while rounds < policy.max_rounds:
            need = tally.needed(policy, idx)
            plan = round_plan(idx, idx + need, n)
            for a, which in plan.items():
                d.issue(a, len(which))
            got = await ask_round(gens, plan, step_seed, request, t_first, t_rest)
            at = {a: 0 for a in got}
            for a, samples in got.items():
                d.bill(a, call.prompt, samples)
                d.called(a, len(samples))
            for i in range(idx, idx + need):  # read in index order: the first answer read of a key is its winner
                a = i % n
                s = got[a][at[a]]
                at[a] += 1
                d.tokens += s.tokens
                got_parsed = cache.get(s.text) if s.tokens <= max_tokens else None
                if s.tokens > max_tokens:
                    parsed = Parsed(None, None, too_long(s.tokens, max_tokens))
                elif got_parsed is not None:
                    parsed = got_parsed
                else:
                    parsed = cache[s.text] = self.parse(ms, ms.parse, ms.vote_key, user_flags, s.text, call.inputs)
                if parsed.flag is not None:
                    d.flag(flag_reason(parsed.flag), 1, parsed.flag)
                    d.red_flags += 1
                else:
                    tally.add(a, parsed.key, parsed.answer)
                if samples_out is not None:
                    answer = None if parsed.flag is not None else ms.answer_json(tally.winners[parsed.key])
                    temp = t_first if i < n else t_rest
                    samples_out.append((step, i, rounds, a, temp, s.tokens, s.text, parsed.flag, answer))
            idx += need
            rounds += 1
            if tally.decided(policy):
                leader = tally.leader()
                d.answer, d.key, d.votes = tally.winners[leader], leader, tally.votes()
                info = d.spec if d.spec is not None else {}
                info["weighted"] = tally.record()
                d.spec = info
                d.rounds += rounds
                d.samples += idx
                d.agent = 0
                return d
            if idx >= EARLY_SAMPLES and sum(tally.counts.values()) * 20 <= idx:
                break  # nearly every sample red-flagged: more rounds of the same would not decide it
        d.rounds += rounds
        d.samples += idx
        d.votes = tally.votes()
        raise self._undecided(step, call, d, policy, max_tokens, samples_out, idx if rounds < policy.max_rounds else 0)

    async def _first_round(
        self,
        d: Decision,
        lean: tuple[int, tuple[float, ...], str],
        call: MicrostepCall,
        step_seed: int,
        max_tokens: int,
        oracle: Oracle | None,
        cache: dict[str, Parsed],
        together: bool,
    ) -> list[Any] | None:
        """The common case, kept lean: the first agent's first round, k samples of one valid text, decides the step
        (``d`` is filled, None returned). Otherwise the round's samples are returned, for the vote to go on with as
        that round's, asked for as it asks."""
        ms: Microstep[Any] = call.microstep
        k, first, unanimous = lean
        req = GenerateRequest(
            call.prompt, first, mixes(step_seed, 0, k), max_tokens, ms.stop, False, oracle, ms.pattern
        )
        d.issued[0] = k
        (prefetched,) = await (self._fronts[0] if together else self.agents[0].backend).generate([req])
        text = prefetched[0].text if prefetched else ""
        tokens = 0
        reported = False
        for s in prefetched:
            if s.text != text or s.tokens > max_tokens:
                d.bill(0, call.prompt, prefetched)
                return prefetched
            tokens += s.tokens
            if s.usage is not None:
                reported = True
        if reported or len(prefetched) != k:
            d.bill(0, call.prompt, prefetched)
            if len(prefetched) != k:
                return prefetched
        else:  # the common case: no usage reported (estimated), every sample's tokens already summed
            d.usage = {0: [len(call.prompt) // 4 + 1, 0, tokens, 1]}
        read = cache[text] = self.parse(ms, ms.parse, ms.vote_key, bool(ms.red_flags), text, call.inputs)
        if read.flag is not None:
            return prefetched
        d.calls[0] = k
        d.tokens = tokens
        d.answer, d.key, d.votes = read.answer, read.key, unanimous
        d.rounds = 1
        d.samples = k
        return None

    def _count(
        self,
        d: Decision,
        call: MicrostepCall,
        batch: list[Any],
        idx: int,
        max_tokens: int,
        cache: dict[str, Parsed],
        counts: dict[Any, int],
        winners: dict[Any, Any],
        samples_out: list[tuple[Any, ...]] | None,
        where: tuple[int, int, int, float, float],
    ) -> int:
        """Read one round's samples (from index ``idx``): red-flag them or add their votes to ``counts`` (the first
        answer read for each key to ``winners``), and keep a sample row for each when asked. Returns the next index."""
        ms: Microstep[Any] = call.microstep
        parse, vote_key, user_flags, inputs = ms.parse, ms.vote_key, bool(ms.red_flags), call.inputs
        step, round_, agent_idx, t_first, t_rest = where
        for s in batch:
            d.tokens += s.tokens
            flag: str | None
            key: Any = None
            if s.tokens > max_tokens:
                flag = too_long(s.tokens, max_tokens)
            else:
                parsed = cache.get(s.text)
                if parsed is None:
                    parsed = cache[s.text] = self.parse(ms, parse, vote_key, user_flags, s.text, inputs)
                flag = parsed.flag
                key = parsed.key
            if flag is not None:
                d.flag(flag_reason(flag), 1, flag)
                d.red_flags += 1
            else:
                counts[key] = counts.get(key, 0) + 1
                if key not in winners:
                    winners[key] = parsed.answer  # type: ignore[union-attr]  # no flag: parsed was read
            if samples_out is not None:
                answer = None if key is None else ms.answer_json(winners[key])
                temperature = t_first if idx == 0 else t_rest
                samples_out.append((step, idx, round_, agent_idx, temperature, s.tokens, s.text, flag, answer))
            idx += 1
        return idx

    @staticmethod
    def _won(d: Decision, counts: dict[Any, int], winners: dict[Any, Any]) -> None:
        """Fill ``d`` with the leader's answer and the tally, the leader's count first."""
        leader = max(counts, key=counts.__getitem__)
        others = sorted((v for k, v in counts.items() if k != leader), reverse=True)
        d.answer, d.key, d.votes = winners[leader], leader, "[" + ",".join(map(str, [counts[leader], *others])) + "]"

    @staticmethod
    def _drop(d: Decision, spare: list[Any]) -> None:
        """Samples generated ahead that the decision did not need: counted apart, never voted."""
        if spare:
            d.spare_samples += len(spare)
            d.spare_tokens += sum(s.tokens for s in spare)

    # -- drafting and verifying ---------------------------------------------------------------------
    async def draft(self, step: int, call: MicrostepCall, expected: Any, together: bool = False) -> Drafted:
        """The first part of a drafted step's decision: route it (the first steps, or an uncertain first token,
        go straight to voting) or have the drafter write it. The speculative window drafts steps ahead this way,
        and the step's decision goes on from what it found (:meth:`decide` with ``drafted``)."""
        try:
            return await self._draft(step, call, expected, together)
        except WorkflowCodeError as exc:
            raise self._at(exc, step, call) from exc.__cause__

    async def _draft(self, step: int, call: MicrostepCall, expected: Any, together: bool) -> Drafted:
        spec = self.spec
        assert spec is not None
        ms: Microstep[Any] = call.microstep
        max_tokens = self.max_tokens or ms.max_tokens
        oracle = Oracle(ms, expected, step, call.inputs) if expected is not None else None
        d_idx = len(self.agents)
        drafter = self._fronts[d_idx] if together else spec.drafter.backend
        d = Decision()
        info: dict[str, Any] = {}
        d.spec = info
        if step < spec.large_first:
            info["route"] = "large_first"
            return Drafted(d, None, None)
        if spec.entropy_threshold is not None:
            probe = GenerateRequest(call.prompt, [0.0], [0], max_tokens, ms.stop, False, oracle, ms.pattern)
            # The run's options admit a threshold only for an EntropyProbing drafter (checked before the run).
            (entropy,) = await cast(EntropyProbing, drafter).first_token_entropy([probe])
            d.billed(d_idx, len(call.prompt) // 4 + 1, 0, 1, 1)  # one greedy token; servers report no usage here
            info["entropy"] = round(float(entropy), 4)
            if entropy > spec.entropy_threshold:
                info["route"] = "entropy"
                return Drafted(d, None, None)
        seed = mix64(mix64(self._seed ^ step) ^ _DRAFT_SALT)
        policy = self._policy(ms, step)
        if spec.draft_k > 1:
            return await self._draft_vote(d, info, drafter, seed, policy, call, max_tokens, oracle)
        want_lp = spec.mode == "logprob"
        req = GenerateRequest(
            call.prompt, [policy.first_temperature], [seed], max_tokens, ms.stop, want_lp, oracle, ms.pattern
        )
        d.issue(d_idx)
        ((text,),) = await drafter.generate([req])
        d.bill(d_idx, call.prompt, (text,))
        d.called(d_idx)
        d.tokens += text.tokens
        d.drafted = 1
        parsed = self.read(ms, text.text, text.tokens, max_tokens, call.inputs)
        if parsed.flag is not None:
            info["draft_flag"] = parsed.flag[:120]
            d.flag(flag_reason(parsed.flag))
            d.red_flags += 1
        return Drafted(d, text.text, parsed, text.logprobs)

    async def _draft_vote(
        self,
        d: Decision,
        info: dict[str, Any],
        drafter: Any,
        seed: int,
        policy: Voting,
        call: MicrostepCall,
        max_tokens: int,
        oracle: Any,
    ) -> Drafted:
        """A voted draft: the drafter's samples, ``draft_batch`` a call, tallied first-to-ahead-by-``draft_k``
        (red-flagged ones set aside). The draft is the winner's first sample; a tally still split after
        :data:`DRAFT_CALLS` calls routes the step to voting."""
        spec = self.spec
        assert spec is not None
        ms: Microstep[Any] = call.microstep
        d_idx = len(self.agents)
        k = spec.draft_k
        batch = spec.draft_batch or 2 * k
        counts: dict[Any, int] = {}
        first: dict[Any, Sample] = {}  # each answer's first sample: the draft when it wins
        parsed_of: dict[Any, Parsed] = {}
        flagged: tuple[str, Parsed] | None = None
        want_lp = spec.mode == "logprob"  # the voted draft is SpecGuard's most consistent one: its log-probs are read
        idx = 0
        d.drafted = 1
        for _ in range(DRAFT_CALLS):
            seeds = [seed if i == 0 else mix64(seed + i) for i in range(idx, idx + batch)]
            temps = [policy.first_temperature if i == 0 else policy.temperature for i in range(idx, idx + batch)]
            d.issue(d_idx, batch)
            (texts,) = await drafter.generate(
                [GenerateRequest(call.prompt, temps, seeds, max_tokens, ms.stop, want_lp, oracle, ms.pattern)]
            )
            d.called(d_idx, batch)
            d.bill(d_idx, call.prompt, texts)
            idx += batch
            for s in texts:
                d.tokens += s.tokens
                parsed = self.read(ms, s.text, s.tokens, max_tokens, call.inputs)
                if parsed.flag is not None:
                    d.flag(flag_reason(parsed.flag))
                    d.red_flags += 1
                    if flagged is None:
                        flagged = (s.text, parsed)
                    continue
                counts[parsed.key] = counts.get(parsed.key, 0) + 1
                if parsed.key not in first:
                    first[parsed.key], parsed_of[parsed.key] = s, parsed
            if counts:
                ranked = sorted(counts.values(), reverse=True)
                if ranked[0] - (ranked[1] if len(ranked) > 1 else 0) >= k:
                    leader = max(counts, key=counts.__getitem__)
                    info["draft_votes"] = "[" + ",".join(map(str, ranked)) + "]"
                    won = first[leader]
                    return Drafted(d, won.text, parsed_of[leader], won.logprobs)
        if counts:
            info["draft_votes"] = "[" + ",".join(map(str, sorted(counts.values(), reverse=True))) + "]"
            info["route"] = "draft_split"
            return Drafted(d, None, None)
        assert flagged is not None
        info["draft_flag"] = (flagged[1].flag or "")[:120]
        return Drafted(d, flagged[0], flagged[1])

    async def _speculate(
        self,
        step: int,
        call: MicrostepCall,
        expected: Any,
        samples_out: list[tuple[Any, ...]] | None,
        together: bool,
        drafted: Drafted | None,
    ) -> Decision:
        """Draft (or take the draft made ahead), verify, and escalate to voting only when the draft is not
        confirmed."""
        if drafted is None:
            drafted = await self.draft(step, call, expected, together)
        d, parsed = drafted.decision, drafted.parsed
        info = d.spec
        assert info is not None
        if drafted.text is not None and parsed is not None and parsed.flag is None:
            oracle = Oracle(call.microstep, expected, step, call.inputs) if expected is not None else None
            if self.spec is not None and self.spec.mode == "logprob":
                ok = self._logprob_check(drafted, info)
            else:
                ok = await self._verify(d, mix64(self._seed ^ step), call, drafted.text, parsed, oracle, info, together)
            if ok:
                d.accepted = 1
                info["accepted"] = True
                d.answer, d.key, d.votes, d.rounds, d.samples = parsed.answer, parsed.key, "[1]", 1, 1
                d.agent = len(self.agents)
                return d
            if drafted.on_reject is not None:
                drafted.on_reject()
        d.escalated = 1
        info["escalated"] = True
        if drafted.text is not None:  # the draft counts as a round and a sample of the step; a routed step saw none
            d.rounds, d.samples = 1, 1
        return await self._vote(step, call, expected, samples_out, together, d)

    def _logprob_check(self, drafted: Drafted, info: dict[str, Any]) -> bool:
        """``logprob`` mode (SpecGuard): the draft is accepted when the minimum (or mean) of its token
        log-probabilities is at least the threshold; no verifier is asked. A draft that came back without
        log-probabilities (a server that ignores the ask) is escalated: nothing vouches for it."""
        spec = self.spec
        assert spec is not None
        if drafted.logprobs is None:
            info["logprob"] = None
            return False
        value = logprob_stat(drafted.logprobs, spec.logprob_stat)
        info["logprob"] = round(value, 4)
        return value >= spec.logprob_threshold

    async def _verify(
        self,
        d: Decision,
        step_seed: int,
        call: MicrostepCall,
        draft: str,
        parsed: Parsed,
        oracle: Any,
        info: dict[str, Any],
        together: bool,
    ) -> bool:
        spec = self.spec
        assert spec is not None
        base = len(self.agents) + 1
        verdicts: list[Any] = []
        info["verdicts"] = verdicts
        backends = [self._fronts[base + i] if together else v.backend for i, v in enumerate(spec.verifiers)]
        if spec.mode == "score":
            # Verifiers are asked in order and tallied in order, stopping as soon as the margin decides. The ones
            # that could still be needed go out together (as many as the accepts still wanted), so k verifiers
            # cost one latency; any asked past the decision are set apart as spare, never tallied.
            margin = i = 0
            n = len(backends)
            while i < n:
                ask = range(i, min(n, i + max(1, spec.verify_k - margin)))
                for j in ask:
                    d.issue(base + j)
                # Score mode: the run's options admit only Judging verifiers (checked before the run).
                answers = await asyncio.gather(
                    *(
                        cast(Judging, backends[j]).judge(
                            [JudgeRequest(call.prompt, draft, mix64(step_seed ^ _VERIFY_SALT ^ j), oracle)]
                        )
                        for j in ask
                    )
                )
                rating = len(judge_prompt(call.prompt, draft)) // 4 + 1
                for j, (digits,) in zip(ask, answers, strict=True):
                    d.called(base + j)
                    d.billed(base + j, rating, 0, 1, 1)  # one rating token; the usage is estimated
                    score = digit_score(digits, spec.score_by)
                    ok = score >= spec.threshold
                    verdicts.append([j, round(score, 3), ok])
                    margin += 1 if ok else -1
                    i = j + 1
                    if margin >= spec.verify_k or margin <= -spec.verify_k or margin + (n - i) < spec.verify_k:
                        d.spare_samples += ask.stop - i  # asked together, not needed: not tallied, not calls
                        return margin >= spec.verify_k  # else decided, or acceptance is out of reach
            return False
        # vote: the draft is one vote; verifiers answer the step themselves, round-robin.
        ms = call.microstep
        policy = self.policies[ms.name]
        max_tokens = self.max_tokens or ms.max_tokens
        counts = {parsed.key: 1}
        for j in range(policy.max_rounds * max(1, len(backends))):
            if not backends:
                break
            i = j % len(backends)
            seed = mix64(step_seed ^ _VERIFY_SALT ^ (j + 1))
            req = GenerateRequest(
                call.prompt, [policy.temperature], [seed], max_tokens, ms.stop, False, oracle, ms.pattern
            )
            d.issue(base + i)
            ((s,),) = await backends[i].generate([req])
            d.called(base + i)
            d.bill(base + i, call.prompt, (s,))
            d.tokens += s.tokens
            p = self.read(ms, s.text, s.tokens, max_tokens, call.inputs)
            verdicts.append([i, p.flag is None and p.key == parsed.key])
            if p.flag is not None:
                continue
            counts[p.key] = counts.get(p.key, 0) + 1
            ranked = sorted(counts.values(), reverse=True)
            if ranked[0] - (ranked[1] if len(ranked) > 1 else 0) >= spec.verify_k:
                # vote keys are whatever the microstep's vote_key returns (Any), so == is Any to mypy
                return max(counts, key=counts.__getitem__) == parsed.key  # type: ignore[no-any-return]
        return False

    # -- reading a response -------------------------------------------------------------------------
    @classmethod
    def read(cls, ms: Microstep[Any], text: str, tokens: int, max_tokens: int, inputs: Any) -> Parsed:
        """One response through the red-flag checks: too long, then parse, schema and the microstep's rules."""
        if tokens > max_tokens:
            return Parsed(None, None, too_long(tokens, max_tokens))
        return cls.parse(ms, ms.parse, ms.vote_key, bool(ms.red_flags), text, inputs)

    @staticmethod
    def parse(ms: Microstep[Any], parse: Any, vote_key: Any, user_flags: bool, text: str, inputs: Any) -> Parsed:
        try:
            answer = parse(text)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err.get("loc", ()))) or "answer"
            return Parsed(None, None, f"schema: {where}: {err.get('msg', 'invalid')}")
        except Exception as exc:  # anything a parser raises means the text is not an answer
            return Parsed(None, None, f"format: {exc}"[:300])
        if user_flags:
            flag = ms.check_flags(answer, inputs)
            if flag is not None:
                return Parsed(None, None, flag)
        return Parsed(answer, vote_key(answer), None)
