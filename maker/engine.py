"""The engine: sample, red-flag, vote, escalate, commit, apply -- step after step.

The chain is sequential (step i+1 is built on step i's answer), but everything about one
step is expressed as one coroutine, :meth:`Engine._decide`, whose inputs are the step
index and the microstep call. Running several of them at once on guessed states is what
cross-step speculation will add; nothing here assumes only one is in flight except the
loop in :meth:`Engine._chain`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from maker._rng import derive, mix64
from maker.agents import Agent, GenerateRequest, Oracle
from maker.dsl import Done, Microstep, MicrostepCall, Workflow
from maker.errors import RunError, StepUndecidedError
from maker.speculation import JudgeRequest, Speculation, digit_score
from maker.store import StepRow, Store
from maker.voting import Voting, is_decided, samples_needed

__all__ = ["Engine", "Progress", "RunSummary", "DETAIL_LEVELS"]

DETAIL_LEVELS = ("summary", "samples")
TOO_LONG = "too_long"
_DRAFT_SALT = 0xD4AF7
_VERIFY_SALT = 0x5E1F1


class Progress(BaseModel):
    """A progress report, handed to the progress callback a few times a second."""

    run_id: str
    steps: int
    expected_steps: int | None
    calls: int
    red_flags: int
    errors: int
    max_rounds: int
    elapsed_s: float
    steps_per_s: float


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
    result: dict[str, Any] | None = None
    error: str | None = None


class _Parsed:
    """A parsed response, cached per distinct text within one step."""

    __slots__ = ("answer", "key", "flag")

    def __init__(self, answer: Any, key: Any, flag: str | None) -> None:
        self.answer = answer
        self.key = key
        self.flag = flag


def flag_reason(flag: str) -> str:
    """The reason key of a red flag (``too_long``, ``format``, ``schema`` or a rule name)."""
    return flag.split(":", 1)[0]


def too_long(tokens: int, max_tokens: int) -> str:
    return f"{TOO_LONG}: {tokens} tokens > {max_tokens}"


class Engine:
    """Runs one workflow run against a store. Build it through :mod:`maker.runs`."""

    def __init__(
        self,
        *,
        workflow: Workflow[Any, Any],
        store: Store,
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
    ) -> None:
        if not agents:
            raise RunError("no agent given: pass at least one --agent", run_id=run_id)
        self.wf = workflow
        self.store = store
        self.rid = rid
        self.run_id = run_id
        self.agents = list(agents)
        self.seed = seed
        self.detail = detail
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.expected_steps = expected_steps
        self.on_progress = on_progress
        self.progress_seconds = progress_seconds
        self.log_steps = log_steps
        self.spec = speculation
        # Agents by index as steps record them: voting agents, then the drafter, then the verifiers.
        self.all_agents = self.agents + ([speculation.drafter, *speculation.verifiers] if speculation else [])
        self.agent_calls = [0] * len(self.all_agents)
        self.drafted = self.accepted = self.escalated = 0
        self.spare_samples = self.spare_tokens = 0
        self._has_oracle = workflow.has_oracle()
        self._seed = derive(seed)
        self._policies: dict[str, Voting] = {}
        for ms in workflow.microsteps:
            self._policies[ms.name] = ms.voting.model_copy(update=voting) if voting else ms.voting
        self._max_tokens = max_tokens
        self._voting = voting
        self.ahead: Any = None
        """Set by a cluster run: told each step and state, it has a replica run the chain ahead (see
        :mod:`maker.cluster.lookahead`)."""
        # Counters; restored from the store on resume.
        self.first_step = 0  # a fork's first own step
        self.steps = 0
        self.calls = 0
        self.red_flags = 0
        self.errors = 0
        self.max_rounds = 0
        self.tokens = 0
        self.wall_s = 0.0

    def restore_counters(self, record: Any) -> None:
        self.first_step = record.first_step
        for name in ("steps", "calls", "red_flags", "errors", "max_rounds", "tokens", "wall_s"):
            setattr(self, name, getattr(record, name))
        stats = record.stats or {}
        calls = stats.get("agent_calls", [])
        self.agent_calls[: len(calls)] = calls[: len(self.agent_calls)]
        self.drafted = stats.get("drafted", 0)
        self.accepted = stats.get("accepted", 0)
        self.escalated = stats.get("escalated", 0)
        self.spare_samples = stats.get("spare_samples", 0)
        self.spare_tokens = stats.get("spare_tokens", 0)

    # -- one step -------------------------------------------------------------------
    async def _decide(
        self, step: int, call: MicrostepCall, expected: Any, samples_out: list[tuple[Any, ...]] | None
    ) -> tuple[Any, Any, str, int, int, dict[str, int] | None, int]:
        """Vote on one step. Returns (answer, key, votes, rounds, samples, red flags, agent index)."""
        ms: Microstep[Any] = call.microstep
        policy = self._policies[ms.name]
        max_tokens = self._max_tokens or ms.max_tokens
        prompt = call.prompt
        inputs = call.inputs
        step_seed = mix64(self._seed ^ step)
        oracle = Oracle(ms, expected, step) if expected is not None else None
        flags: dict[str, int] | None = None
        idx = 0
        rounds = 0
        cache: dict[str, _Parsed] = {}
        parse = ms.parse
        vote_key = ms.vote_key
        user_flags = bool(ms.red_flags)
        t_first = policy.first_temperature
        t_rest = policy.temperature
        for agent_idx, agent in enumerate(self.agents):
            counts: dict[Any, int] = {}
            winners: dict[Any, Any] = {}
            top = second = 0
            need = policy.k if policy.rule == "ahead_by_k" else samples_needed(policy, 0, 0)
            fill = policy.batch or need
            spare: list[Any] = []  # samples already generated for the rounds to come, in index order
            agent_rounds = 0
            while agent_rounds < policy.max_rounds:
                agent_rounds += 1
                if len(spare) < need:
                    lo = idx + len(spare)
                    hi = idx + max(need, len(spare) + fill)
                    seeds = [mix64(step_seed + i) for i in range(lo, hi)]
                    temps = [t_first if i == 0 else t_rest for i in range(lo, hi)]
                    req = GenerateRequest(prompt, temps, seeds, max_tokens, ms.stop, False, oracle)
                    (more,) = await agent.backend.generate([req])
                    spare += more
                batch = spare[:need]
                del spare[:need]
                self.calls += need
                self.agent_calls[agent_idx] += need
                for s in batch:
                    self.tokens += s.tokens
                    flag: str | None
                    key: Any = None
                    if s.tokens > max_tokens:
                        flag = too_long(s.tokens, max_tokens)
                    else:
                        parsed = cache.get(s.text)
                        if parsed is None:
                            parsed = cache[s.text] = self._parse(ms, parse, vote_key, user_flags, s.text, inputs)
                        flag = parsed.flag
                        key = parsed.key
                    if flag is not None:
                        reason = flag_reason(flag)
                        if flags is None:
                            flags = {}
                        flags[reason] = flags.get(reason, 0) + 1
                        self.red_flags += 1
                    else:
                        c = counts.get(key, 0) + 1
                        counts[key] = c
                        if key not in winners:
                            winners[key] = parsed.answer
                    if samples_out is not None:
                        samples_out.append(
                            (step, idx, rounds + agent_rounds - 1, agent_idx, t_first if idx == 0 else t_rest,
                             s.tokens, s.text, flag, None if key is None else ms.answer_json(winners[key]))
                        )
                    idx += 1
                if counts:
                    ranked = sorted(counts.values(), reverse=True)
                    top = ranked[0]
                    second = ranked[1] if len(ranked) > 1 else 0
                    if is_decided(policy, top, second):
                        leader = max(counts, key=counts.__getitem__)
                        votes = ",".join(map(str, [counts[leader]] + sorted(
                            (v for k2, v in counts.items() if k2 != leader), reverse=True)))
                        rounds += agent_rounds
                        self._drop(spare)
                        return winners[leader], leader, f"[{votes}]", rounds, idx, flags, agent_idx
                need = samples_needed(policy, top, second)
            rounds += agent_rounds
            self._drop(spare)
        raise StepUndecidedError(
            f"step {step}: no answer won the vote within {policy.max_rounds} rounds "
            f"(agents tried: {', '.join(a.spec for a in self.agents)}). Committed steps are saved; "
            f"resume with `maker resume {self.run_id}` and a larger --max-rounds or another --agent to escalate to.",
            run_id=self.run_id,
            step=step,
            agent=self.agents[-1].spec,
        )

    async def _step(self, step: int, call: MicrostepCall, expected: Any, samples_out: list[tuple[Any, ...]] | None
                    ) -> tuple[Any, Any, str, int, int, dict[str, int] | None, int, dict[str, Any] | None]:
        """One step decided: drafted and verified when the run speculates, else voted (no speculation record)."""
        if self.spec is not None:
            return await self._speculate(step, call, expected, samples_out)
        return (*await self._decide(step, call, expected, samples_out), None)

    def _drop(self, spare: list[Any]) -> None:
        """Samples generated ahead that the decision did not need: counted apart, never voted."""
        if spare:
            self.spare_samples += len(spare)
            self.spare_tokens += sum(s.tokens for s in spare)

    async def _speculate(
        self, step: int, call: MicrostepCall, expected: Any, samples_out: list[tuple[Any, ...]] | None
    ) -> tuple[Any, Any, str, int, int, dict[str, int] | None, int, dict[str, Any]]:
        """Draft, verify, and escalate to voting only when the draft is not confirmed."""
        spec = self.spec
        assert spec is not None
        ms: Microstep[Any] = call.microstep
        policy = self._policies[ms.name]
        max_tokens = self._max_tokens or ms.max_tokens
        prompt = call.prompt
        oracle = Oracle(ms, expected, step) if expected is not None else None
        step_seed = mix64(self._seed ^ step)
        d_idx = len(self.agents)
        info: dict[str, Any] = {}
        flags: dict[str, int] | None = None
        if step < spec.large_first:
            info["route"] = "large_first"
        else:
            go = True
            if spec.entropy_threshold is not None:
                probe = GenerateRequest(prompt, [0.0], [0], max_tokens, ms.stop, False, oracle)
                (entropy,) = await spec.drafter.backend.first_token_entropy([probe])
                info["entropy"] = round(float(entropy), 4)
                if entropy > spec.entropy_threshold:
                    go = False
                    info["route"] = "entropy"
            if go:
                req = GenerateRequest(prompt, [policy.first_temperature], [mix64(step_seed ^ _DRAFT_SALT)], max_tokens,
                                      ms.stop, False, oracle)
                ((draft,),) = await spec.drafter.backend.generate([req])
                self.calls += 1
                self.agent_calls[d_idx] += 1
                self.tokens += draft.tokens
                self.drafted += 1
                parsed = self.read(ms, draft.text, draft.tokens, max_tokens, call.inputs)
                if parsed.flag is not None:
                    info["draft_flag"] = parsed.flag[:120]
                    flags = {flag_reason(parsed.flag): 1}
                    self.red_flags += 1
                else:
                    accepted = await self._verify(step_seed, call, draft.text, parsed, oracle, info)
                    if accepted:
                        self.accepted += 1
                        info["accepted"] = True
                        return parsed.answer, parsed.key, "[1]", 1, 1, flags, d_idx, info
        self.escalated += 1
        info["escalated"] = True
        answer, key, votes, rounds, n, more, agent_idx = await self._decide(step, call, expected, samples_out)
        if more:
            flags = flags or {}
            for k, v in more.items():
                flags[k] = flags.get(k, 0) + v
        drafted = 1 if "route" not in info else 0  # a routed step never saw a draft
        return answer, key, votes, rounds + drafted, n + drafted, flags, agent_idx, info

    async def _verify(self, step_seed: int, call: MicrostepCall, draft: str, parsed: _Parsed, oracle: Any,
                      info: dict[str, Any]) -> bool:
        spec = self.spec
        assert spec is not None
        base = len(self.agents) + 1
        verdicts: list[Any] = []
        info["verdicts"] = verdicts
        if spec.mode == "score":
            margin = 0
            for i, verifier in enumerate(spec.verifiers):
                seed = mix64(step_seed ^ _VERIFY_SALT ^ i)
                (digits,) = await verifier.backend.judge([JudgeRequest(call.prompt, draft, seed, oracle)])
                self.calls += 1
                self.agent_calls[base + i] += 1
                score = digit_score(digits, spec.score_by)
                ok = score >= spec.threshold
                verdicts.append([i, round(score, 3), ok])
                margin += 1 if ok else -1
                left = len(spec.verifiers) - i - 1
                if margin >= spec.verify_k:
                    return True
                if margin <= -spec.verify_k or margin + left < spec.verify_k:
                    return False  # decided, or acceptance is out of reach: no more verifier calls
            return False
        # vote: the draft is one vote; verifiers answer the step themselves, round-robin.
        ms = call.microstep
        policy = self._policies[ms.name]
        counts = {parsed.key: 1}
        for j in range(policy.max_rounds * max(1, len(spec.verifiers))):
            if not spec.verifiers:
                break
            i = j % len(spec.verifiers)
            verifier = spec.verifiers[i]
            seed = mix64(step_seed ^ _VERIFY_SALT ^ (j + 1))
            req = GenerateRequest(call.prompt, [policy.temperature], [seed], self._max_tokens or ms.max_tokens,
                                  ms.stop, False, oracle)
            ((s,),) = await verifier.backend.generate([req])
            self.calls += 1
            self.agent_calls[base + i] += 1
            self.tokens += s.tokens
            p = self.read(ms, s.text, s.tokens, self._max_tokens or ms.max_tokens, call.inputs)
            verdicts.append([i, p.flag is None and p.key == parsed.key])
            if p.flag is not None:
                continue
            counts[p.key] = counts.get(p.key, 0) + 1
            ranked = sorted(counts.values(), reverse=True)
            if ranked[0] - (ranked[1] if len(ranked) > 1 else 0) >= spec.verify_k:
                return max(counts, key=counts.__getitem__) == parsed.key
        return False

    @classmethod
    def read(cls, ms: Microstep[Any], text: str, tokens: int, max_tokens: int, inputs: Any) -> _Parsed:
        """One response through the red-flag checks: too long, then parse, schema and the microstep's rules."""
        if tokens > max_tokens:
            return _Parsed(None, None, too_long(tokens, max_tokens))
        return cls._parse(ms, ms.parse, ms.vote_key, bool(ms.red_flags), text, inputs)

    @staticmethod
    def _parse(ms: Microstep[Any], parse: Any, vote_key: Any, user_flags: bool, text: str, inputs: Any) -> _Parsed:
        try:
            answer = parse(text)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err.get("loc", ()))) or "answer"
            return _Parsed(None, None, f"schema: {where}: {err.get('msg', 'invalid')}")
        except Exception as exc:  # anything a parser raises means the text is not an answer
            return _Parsed(None, None, f"format: {exc}"[:300])
        if user_flags:
            flag = ms.check_flags(answer, inputs)
            if flag is not None:
                return _Parsed(None, None, flag)
        return _Parsed(answer, vote_key(answer), None)

    # -- the chain ------------------------------------------------------------------
    async def run_chain(self, state: Any) -> Any:
        """Advance from ``state`` (after ``self.steps`` committed steps) until done; returns the final state."""
        wf = self.wf
        store = self.store
        rid = self.rid
        pending: list[StepRow] = []
        samples: list[tuple[Any, ...]] | None = [] if self.detail == "samples" else None
        keep_input = samples is not None
        has_oracle = self._has_oracle
        step = first = self.steps
        wall0 = self.wall_s
        t0 = time.perf_counter()
        last_commit = last_progress = time.monotonic()
        commit_every = self.commit_every
        commit_seconds = self.commit_seconds
        dump = type(state).model_dump_json

        step_log = structlog.get_logger("maker").bind(run_id=self.run_id) if self.log_steps else None

        def flush(state: Any) -> None:
            self.steps = step
            self.wall_s = wall0 + time.perf_counter() - t0
            store.commit(rid, pending, samples or (), (step, dump(state)), self.counters())
            if step_log is not None:
                for r in pending:
                    step_log.debug("step committed", step=r[0], votes=r[3], rounds=r[4], samples=r[5],
                                   red_flags=r[6], agent=self.agents[r[7]].spec, correct=r[10])
            pending.clear()
            if samples:
                samples.clear()

        kept = self._kept()
        ahead = self.ahead
        try:
            while True:
                if ahead is not None:
                    ahead.at(step, state)
                call = wf.next(state)
                if isinstance(call, Done):
                    break
                if not isinstance(call, MicrostepCall):
                    raise RunError(
                        f"{type(wf).__name__}.next() returned {call!r}; return microstep.ask(...) or DONE",
                        run_id=self.run_id, step=step,
                    )
                t_step = time.time()
                ts = time.perf_counter()
                tokens0 = self.tokens
                expected = wf.oracle(state) if has_oracle else None
                answer, key, votes, rounds, n, flags, agent_idx, info = await self._step(step, call, expected, samples)
                correct: int | None = None
                if expected is not None:
                    correct = int(call.microstep.vote_key(expected) == key)
                    if not correct:
                        self.errors += 1
                if rounds > self.max_rounds:
                    self.max_rounds = rounds
                row = (
                    step, call.digest(), call.microstep.answer_json(answer), votes, rounds, n,
                    None if flags is None else json.dumps(flags), agent_idx, t_step, time.perf_counter() - ts, correct,
                    None if info is None else json.dumps(info), self.tokens - tokens0, call.prompt if keep_input else None,
                )
                # Only a step whose answer applied cleanly is kept, so every commit's snapshot is the
                # state after exactly the steps it holds.
                state = wf.apply(state, answer)
                pending.append(row)
                step += 1
                kept = self._kept()
                if len(pending) >= commit_every or (step & 63 == 0 and time.monotonic() - last_commit >= commit_seconds):
                    flush(state)
                    last_commit = time.monotonic()
                if self.on_progress is not None and step & 255 == 0:
                    now = time.monotonic()
                    if now - last_progress >= self.progress_seconds:
                        last_progress = now
                        self.steps = step
                        self._report(time.perf_counter() - t0, step - first)
        except BaseException:
            # A step cut short is recomputed on resume; its samples must not be counted twice.
            self._restore(kept)
            raise
        finally:
            # Whatever stops the chain (done, a failure, Ctrl-C), what was decided is kept.
            if pending:
                flush(state)
            self.steps = step
            self.wall_s = wall0 + time.perf_counter() - t0
        return state

    # -- running ahead on a replica ---------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        """What :meth:`for_rollout` needs to rebuild this engine's decisions elsewhere (no store, no agents)."""
        spec = self.spec
        speculation = None
        if spec is not None:
            speculation = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
                           if f.name not in ("drafter", "verifiers")}
            speculation["verifiers"] = len(spec.verifiers)
        return {"workflow": self.wf, "seed": self.seed, "voting": self._voting, "max_tokens": self._max_tokens,
                "agents": len(self.agents), "speculation": speculation}

    @classmethod
    def for_rollout(cls, recipe: dict[str, Any], agent: Agent) -> Engine:
        """An engine that decides steps exactly as the recipe's did, with ``agent`` in every role."""
        speculation = None
        if recipe["speculation"] is not None:
            spec = dict(recipe["speculation"])
            speculation = Speculation(drafter=agent, verifiers=[agent] * spec.pop("verifiers"), **spec)
        return cls(workflow=recipe["workflow"], store=None, rid=0, run_id="rollout",  # type: ignore[arg-type]
                   agents=[agent] * recipe["agents"], seed=recipe["seed"], voting=recipe["voting"],
                   max_tokens=recipe["max_tokens"], speculation=speculation)

    async def rollout(self, state: Any, step: int, steps: int) -> tuple[Any, int, str, str | None]:
        """Decide and apply up to ``steps`` steps from ``state`` (at ``step``), committing nothing.

        Returns the state reached, its step, and why it stopped: ``steps`` (the budget ran out),
        ``done`` (the workflow finished) or ``error`` (with the error's text).
        """
        wf = self.wf
        has_oracle = self._has_oracle
        try:
            for _ in range(steps):
                call = wf.next(state)
                if isinstance(call, Done):
                    return state, step, "done", None
                if not isinstance(call, MicrostepCall):
                    return state, step, "error", f"next() returned {call!r}"
                expected = wf.oracle(state) if has_oracle else None
                answer = (await self._step(step, call, expected, None))[0]
                state = wf.apply(state, answer)
                step += 1
        except Exception as exc:  # the driver meets the same failure at this step and reports it
            return state, step, "error", f"{type(exc).__name__}: {exc}"[:500]
        return state, step, "steps", None

    def _kept(self) -> tuple[Any, ...]:
        return (self.calls, self.red_flags, self.errors, self.max_rounds, self.tokens, list(self.agent_calls),
                self.drafted, self.accepted, self.escalated, self.spare_samples, self.spare_tokens)

    def _restore(self, kept: tuple[Any, ...]) -> None:
        (self.calls, self.red_flags, self.errors, self.max_rounds, self.tokens, self.agent_calls,
         self.drafted, self.accepted, self.escalated, self.spare_samples, self.spare_tokens) = kept

    def counters(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "calls": self.calls,
            "red_flags": self.red_flags,
            "errors": self.errors,
            "max_rounds": self.max_rounds,
            "tokens": self.tokens,
            "wall_s": self.wall_s,
            "stats": json.dumps(self.stats()),
        }

    def agent_labels(self) -> list[str]:
        """``agent 1: SPEC`` (voting, in escalation order), ``drafter: SPEC``, ``verifier 1: SPEC``."""
        labels = [f"agent {i + 1}: {a.spec}" for i, a in enumerate(self.agents)]
        if self.spec is not None:
            labels.append(f"drafter: {self.spec.drafter.spec}")
            labels += [f"verifier {i + 1}: {v.spec}" for i, v in enumerate(self.spec.verifiers)]
        return labels

    def stats(self) -> dict[str, Any]:
        return {"agent_calls": list(self.agent_calls), "agents": self.agent_labels(),
                "drafted": self.drafted, "accepted": self.accepted, "escalated": self.escalated,
                "spare_samples": self.spare_samples, "spare_tokens": self.spare_tokens,
                "voting": {name: {"rule": p.rule, "k": p.k} for name, p in self._policies.items()}}

    def _report(self, elapsed: float, done_here: int) -> None:
        assert self.on_progress is not None
        self.on_progress(Progress(
            run_id=self.run_id, steps=self.steps, expected_steps=self.expected_steps, calls=self.calls,
            red_flags=self.red_flags, errors=self.errors, max_rounds=self.max_rounds,
            elapsed_s=elapsed, steps_per_s=done_here / elapsed if elapsed > 0 else 0.0,
        ))

    async def aclose(self) -> None:
        backends = {id(a.backend): a.backend for a in self.all_agents}
        await asyncio.gather(*(b.aclose() for b in backends.values()))
