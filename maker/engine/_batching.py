"""Coalescing: the requests that concurrent decisions make in the same turn of the event loop go out as one call.

Several calls in flight at once (a fan-out, or several runs of one evaluation sharing a
model) each ask their backend for samples. One batched call to a model costs about as much
as one request (the GPU or the CPU's vector units are filled, a remote server gets one
round trip), so a front per backend gathers what is asked before the loop moves on and
sends it as one ``generate`` (or ``judge``, or ``first_token_entropy``) call. Each caller
gets back exactly its own answers, in its own order; the requests themselves, and so the
samples (whose seeds are in the requests), are unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["Coalescing"]

_MERGED = ("generate", "judge", "first_token_entropy")


class Coalescing:
    """A backend's front that merges requests made together. Anything else is the backend's own."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.name = backend.name
        self._waiting: dict[str, list[tuple[list[Any], asyncio.Future[Any]]]] = {}

    @classmethod
    def over(cls, backend: Any) -> Coalescing:
        """A front for ``backend`` (the backend itself when it already is one)."""
        return backend if isinstance(backend, Coalescing) else cls(backend)

    def __getattr__(self, name: str) -> Any:  # score, aclose and whatever a backend adds
        return getattr(self.inner, name)

    async def generate(self, requests: Sequence[Any]) -> list[Any]:
        return await self._submit("generate", requests)

    async def judge(self, requests: Sequence[Any]) -> list[Any]:
        return await self._submit("judge", requests)

    async def first_token_entropy(self, requests: Sequence[Any]) -> list[Any]:
        return await self._submit("first_token_entropy", requests)

    async def _submit(self, method: str, requests: Sequence[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        queue = self._waiting.get(method)
        if queue is None:
            queue = self._waiting[method] = []
            # Runs after every callback already scheduled: tasks woken by the same answer, or started together,
            # make their requests first.
            loop.call_soon(self._flush, method)
        queue.append((list(requests), fut))
        return await fut

    def _flush(self, method: str) -> None:
        queue = self._waiting.pop(method)
        merged = [r for requests, _ in queue for r in requests]
        task = asyncio.ensure_future(getattr(self.inner, method)(merged))
        task.add_done_callback(lambda t: _settle(t, queue))


def _settle(task: asyncio.Future[Any], queue: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
    if task.cancelled():
        for _, fut in queue:
            if not fut.done():
                fut.cancel()
        return
    exc = task.exception()
    if exc is not None:
        for _, fut in queue:
            if not fut.done():
                fut.set_exception(exc)
        return
    answers = task.result()
    i = 0
    for requests, fut in queue:
        n = len(requests)
        if not fut.done():  # a caller cancelled meanwhile (a sibling failed) takes nothing
            fut.set_result(answers[i : i + n])
        i += n
