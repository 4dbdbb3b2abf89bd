"""Lookahead: a replica runs the chain ahead of the driver, and the driver's model calls are served from it.

A chain is sequential, so a run that sends each step's samples to a replica pays one actor
round trip per step (about a millisecond here), which is far more than the engine's own
work when the model is fast. Instead, the driver hands a replica the state it has reached
and asks it to run the next N steps itself with the same engine (same seeds, same voting,
same red flags) and its local model, committing nothing and recording every model call it
made: the request and what came back. The driver then decides those steps as always, but a
model call that matches the next recorded request exactly is answered from the record
instead of going out. One actor call carries N steps.

Nothing is taken on trust: a recorded answer is used only for the identical request, and
a chunk that starts where the previous one ended is used only if the driver's own state
there equals the state the replica started from. So the trace is the one the driver would
have made on its own. Whatever differs (a backend or workflow that is not deterministic, a
replica that died, an error) drops what is left of the chunk and the driver goes on with
ordinary routed calls; three misses in a row turn lookahead off for the run.

Once the first call of a chunk matches, the replica is asked for the next one (from the
predicted end state), so it runs that while the driver works through this one. Chunks
start at 16 steps and double up to the limit (``--lookahead``), so the first steps are not
held back behind a long chunk.

Lookahead needs every agent of the run (voting, drafter, verifiers) to be served by the same
model, since one replica runs all of a step's calls; otherwise the run goes call by call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from maker.agents import Agent, GenerateRequest
from maker.engine import Engine, Recipe

__all__ = ["Lookahead", "Recorder", "request_key"]

log = structlog.get_logger("maker.cluster")

FIRST_STEPS = 16
MAX_MISSES = 3


def _one(method: str, r: Any) -> Any:
    if isinstance(r, GenerateRequest):
        oracle = r.oracle
        return (
            r.prompt,
            tuple(r.temperatures),
            tuple(r.seeds),
            r.max_tokens,
            tuple(r.stop),
            r.logprobs,
            r.pattern,
            None if oracle is None else oracle.step,
        )
    return (r.prompt, r.draft, r.seed, None if r.oracle is None else r.oracle.step)  # a JudgeRequest


def request_key(method: str, requests: Sequence[Any]) -> tuple[Any, ...]:
    """What must be equal for a recorded answer to stand for a new call: everything the model sees."""
    return (method, *(_one(method, r) for r in requests))


class Recorder:
    """Wraps a replica's backend for a rollout and keeps every call made through it, in order."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.name = backend.name
        self.log: list[tuple[tuple[Any, ...], Any]] = []

    async def _record(self, method: str, requests: Sequence[Any], answer: Any) -> Any:
        out = await answer
        self.log.append((request_key(method, requests), out))
        return out

    async def generate(self, requests: Sequence[GenerateRequest]) -> Any:
        return await self._record("generate", requests, self.inner.generate(requests))

    async def judge(self, requests: Sequence[Any]) -> Any:
        return await self._record("judge", requests, self.inner.judge(requests))

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> Any:
        return await self._record("first_token_entropy", requests, self.inner.first_token_entropy(requests))

    async def aclose(self) -> None:  # the replica's backend outlives a rollout
        pass


async def rollout(recipe: Recipe, agent: Agent, state: Any, step: int, steps: int) -> dict[str, Any]:
    """Run by a replica: ``steps`` steps from ``state`` with the recipe's engine, and the calls they made."""

    recorder = Recorder(agent.backend)
    engine = Engine.for_rollout(recipe, Agent(agent.spec, recorder, info=agent.info))
    state, end, stop, error = await engine.rollout(state, step, steps)
    return {"calls": recorder.log, "end": end, "state": state, "stop": stop, "error": error}


@dataclass(slots=True)
class _Chunk:
    start: int
    state: Any  # the state the replica started from
    ref: Any  # ray.ObjectRef of the rollout's result
    result: dict[str, Any] | None = None
    followed: bool = False  # the chunk after it has been started


class Lookahead:
    """The driver's side: starts rollouts on the model's replicas and answers calls from them."""

    def __init__(self, ray: Any, actors: list[Any], recipe: Recipe, *, max_steps: int) -> None:
        self.ray = ray
        self.actors = actors
        self.recipe = ray.put(recipe)
        self.max_steps = max_steps
        self.size = min(FIRST_STEPS, max_steps)
        self.current: _Chunk | None = None
        self.next: _Chunk | None = None
        self.calls: deque[tuple[tuple[Any, ...], list[Any]]] = deque()
        self.replica = 0
        self.misses = 0
        self.off = False
        # Figures: model calls answered from rollouts, and rollouts started.
        self.served = 0
        self.rollouts = 0

    # -- called by the engine at every step boundary --------------------------------------
    def at(self, step: int, state: Any) -> None:
        if self.off:
            return
        cur = self.current
        if cur is not None:
            if cur.result is None or self.calls:
                return  # inside the current chunk
            if cur.result["stop"] != "steps" and step == cur.result["end"]:
                return  # where the rollout finished or failed: the driver takes this step on its own
            if cur.result["stop"] == "steps":
                self.misses = 0  # every call of that chunk was the driver's own
        self.current = None
        nxt, self.next = self.next, None
        if nxt is not None and nxt.start == step and nxt.state == state:
            self.current = nxt
            return
        self._cancel(nxt)
        self.current = self._launch(step, state)

    # -- called by the Ray backend for every model call ------------------------------------
    async def take(self, method: str, requests: Sequence[Any]) -> list[Any] | None:
        """The recorded answer to this exact call, or None (and the call goes to the router)."""
        cur = self.current
        if cur is None:
            return None
        if cur.result is None and not await self._fetch(cur):
            return None
        if not self.calls:
            return None  # the rollout stopped before this call (an error the driver will meet too, or not)
        key, out = self.calls[0]
        if key != request_key(method, requests):
            self._miss("a model call differs from the replica's")
            return None
        self.calls.popleft()
        self.served += 1
        result = cur.result
        if not cur.followed and result is not None and result["stop"] == "steps":
            # The replica's run agrees with the driver's so far: have it go on from where it ended.
            cur.followed = True
            self.size = min(self.size * 2, self.max_steps)
            self._cancel(self.next)
            self.next = self._launch(result["end"], result["state"])
        return out

    def close(self) -> None:
        self._cancel(self.current)
        self._cancel(self.next)
        self.current = self.next = None
        self.calls.clear()
        if self.rollouts:
            log.info("lookahead", rollouts=self.rollouts, calls_served=self.served, off=self.off)

    # -- inside -----------------------------------------------------------------------------
    def _launch(self, step: int, state: Any) -> _Chunk:
        actor = self.actors[self.replica % len(self.actors)]
        self.rollouts += 1
        return _Chunk(step, state, actor.rollout.remote(self.recipe, state, step, self.size))

    async def _fetch(self, chunk: _Chunk) -> bool:
        import ray.exceptions as rex

        try:
            chunk.result = await chunk.ref
        except (rex.RayActorError, rex.ActorUnavailableError, rex.ObjectLostError) as exc:
            self.replica += 1  # the next rollout goes to another replica while Ray restarts this one
            log.warning("the replica running ahead was lost; going on call by call", error=type(exc).__name__)
            self._miss("the replica running ahead was lost")
            return False
        except rex.RayTaskError as exc:  # the rollout itself cannot run there (e.g. the workflow will not load)
            self._miss("a replica cannot run the chain ahead", error=str(getattr(exc, "cause", None) or exc)[:300])
            self._turn_off("the replicas cannot run the workflow")
            return False
        result = chunk.result
        self.calls = deque(result["calls"])
        if result["stop"] == "error":
            log.debug("a rollout stopped on an error", step=result["end"], error=result["error"])
        return True

    def _miss(self, why: str, **fields: Any) -> None:
        log.debug("lookahead missed; going call by call", why=why, **fields)
        self.current = None
        self.calls.clear()
        self._cancel(self.next)
        self.next = None
        self.size = min(FIRST_STEPS, self.max_steps)
        self.misses += 1
        if self.misses >= MAX_MISSES:
            self._turn_off(f"{why}, {self.misses} times in a row (is the backend or the workflow not deterministic?)")

    def _turn_off(self, why: str) -> None:
        if not self.off:
            self.off = True
            log.warning("lookahead off for this run; model calls go one by one", why=why)

    def _cancel(self, chunk: _Chunk | None) -> None:
        if chunk is not None and chunk.result is None:
            try:
                self.ray.cancel(chunk.ref)
            except Exception:  # already finished, or its replica is gone
                pass
