"""The replica actor: one backend (simulated, transformers, vLLM or an OpenAI-compatible client) in a Ray actor.

A replica keeps nothing but its loaded model, so Ray can restart one that died and the
router sends it the requests it lost. Requests come in batches of ``(request id, payload)``
and go back with the same ids.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["Replica", "MicrostepRef", "METHODS"]

# Backend methods a replica serves.
METHODS = ("generate", "judge", "first_token_entropy")


@dataclasses.dataclass(frozen=True, slots=True)
class MicrostepRef:
    """Stands for a workflow's microstep on the wire: the microstep (with its parse and render
    functions) is put in the object store once per run, not pickled into every request."""

    ref: Any  # ray.ObjectRef


class Replica:
    """Hosts one agent's backend. Decorated with ``ray.remote`` by the cluster when it starts replicas."""

    def __init__(self, spec: str) -> None:
        from maker.agents import make_agent

        self.spec = spec
        self.agent = make_agent(spec)
        self._microsteps: dict[Any, Any] = {}

    def describe(self) -> dict[str, Any]:
        import ray

        return {
            "spec": self.spec,
            "info": dict(self.agent.info),
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }

    async def call(self, method: str, items: Sequence[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """Run one batch of requests through the backend's ``method``; results keep their request ids."""
        if method not in METHODS:
            raise ValueError(f"replica method {method!r} is not one of {METHODS}")
        backend = self.agent.backend
        fn = getattr(backend, method, None)
        if fn is None:
            from maker.errors import UserError

            raise UserError(f"{self.spec}: this backend has no {method}")
        payloads = [await self._inflate(p) for _, p in items]
        results = await fn(payloads)
        return [(rid, r) for (rid, _), r in zip(items, results, strict=True)]

    async def rollout(self, recipe: Any, state: Any, step: int, steps: int) -> dict[str, Any]:
        """Run the chain ahead of the driver (see :mod:`maker.cluster.lookahead`)."""
        from maker.cluster.lookahead import rollout

        return await rollout(recipe, self.agent, state, step, steps)

    async def _inflate(self, payload: Any) -> Any:
        oracle = getattr(payload, "oracle", None)
        if oracle is None or not isinstance(oracle.microstep, MicrostepRef):
            return payload
        ref = oracle.microstep.ref
        ms = self._microsteps.get(ref)
        if ms is None:
            ms = self._microsteps[ref] = await ref
        return dataclasses.replace(payload, oracle=dataclasses.replace(oracle, microstep=ms))
