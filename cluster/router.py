"""The router: load balancing, micro-batching and retries over the replica actors of one model.

Every request gets an id. Requests wait in one queue; whenever a replica has a free slot
(fewer than ``max_inflight`` calls in flight), everything waiting, up to ``max_batch``
requests of one method, goes to it in a single actor call. So a lone request is sent at
once, and when the replicas are busy the requests that pile up ride together: one actor
call (about a millisecond) carries hundreds of samples. When every replica is saturated
and ``max_pending`` requests wait, callers wait too (backpressure).

A replica that dies is restarted by Ray (``max_restarts``); the requests it held go back
to the front of the queue with the same ids and are sent again. A request's result is
taken once: a late answer to a retried request is dropped, so no sample, and no vote,
is counted twice.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from maker.errors import MakerError, RunError

__all__ = ["Router", "ReplicaLostError"]

log = structlog.get_logger("maker.cluster")


class ReplicaLostError(RunError):
    """A request failed on every try because its replicas kept dying."""


@dataclass(slots=True)
class _Item:
    rid: int
    method: str
    payload: Any
    future: asyncio.Future[Any]
    tries: int = 0


@dataclass(slots=True)
class _Slot:
    actor: Any
    index: int
    inflight: int = 0
    down_until: float = 0.0
    failures: int = 0


class Router:
    """Balances one model's requests over its replicas; ``await router.submit(method, payload)``."""

    def __init__(
        self,
        name: str,
        actors: list[Any],
        *,
        max_inflight: int = 4,
        max_batch: int = 256,
        retries: int = 5,
        max_pending: int = 65536,
        backoff_s: float = 0.05,
    ) -> None:
        if not actors:
            raise ValueError("a router needs at least one replica")
        self.name = name
        self.slots = [_Slot(a, i) for i, a in enumerate(actors)]
        self.max_inflight = max_inflight
        self.max_batch = max_batch
        self.retries = retries
        self.backoff_s = backoff_s
        self._ids = itertools.count()
        self._queue: deque[_Item] = deque()
        self._room = asyncio.Semaphore(max_pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Figures for the benchmark: actor calls made and requests they carried.
        self.calls = 0
        self.items_sent = 0

    async def submit(self, method: str, payload: Any) -> Any:
        if self._closed:
            raise RunError(f"{self.name}: the router is closed")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._dispatch(), name=f"router {self.name}")
        await self._room.acquire()
        try:
            item = _Item(next(self._ids), method, payload, loop.create_future())
            self._queue.append(item)
            self._wake.set()
            return await item.future
        finally:
            self._room.release()

    async def submit_many(self, method: str, payloads: list[Any]) -> list[Any]:
        if len(payloads) == 1:
            return [await self.submit(method, payloads[0])]
        return list(await asyncio.gather(*(self.submit(method, p) for p in payloads)))

    # -- dispatching ----------------------------------------------------------------
    def _free_slot(self) -> _Slot | None:
        now = time.monotonic()
        best = None
        for s in self.slots:
            if s.inflight < self.max_inflight and s.down_until <= now and (best is None or s.inflight < best.inflight):
                best = s
        return best

    async def _dispatch(self) -> None:
        while not self._closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            slot = self._free_slot()
            if slot is None:  # saturated (or every replica backing off): wait for a call to end
                self._wake.clear()
                down = [s.down_until for s in self.slots if s.inflight < self.max_inflight]
                timeout = max(0.0, min(down) - time.monotonic()) if down else None
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            method = self._queue[0].method
            batch: list[_Item] = []
            rest: list[_Item] = []
            while self._queue and len(batch) < self.max_batch:
                item = self._queue.popleft()
                if item.future.done():  # its caller went away
                    continue
                (batch if item.method == method else rest).append(item)
            self._queue.extendleft(reversed(rest))
            if batch:
                slot.inflight += 1
                asyncio.get_running_loop().create_task(self._send(slot, method, batch))

    async def _send(self, slot: _Slot, method: str, batch: list[_Item]) -> None:
        import ray.exceptions as rex

        self.calls += 1
        self.items_sent += len(batch)
        for item in batch:
            item.tries += 1
        try:
            results = await slot.actor.call.remote(method, [(i.rid, i.payload) for i in batch])
        except (rex.RayActorError, rex.ActorUnavailableError, rex.ObjectLostError) as exc:
            slot.failures += 1
            slot.down_until = time.monotonic() + self.backoff_s * min(2**slot.failures, 40)
            self._requeue(slot, batch, exc)
            return
        except rex.RayTaskError as exc:  # the backend raised: hand its own error to the callers
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(cause if isinstance(cause, MakerError) else exc)
            return
        except BaseException as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            raise
        finally:
            slot.inflight -= 1
            self._wake.set()
        slot.failures = 0
        by_id = {item.rid: item for item in batch}
        for rid, result in results:
            answered = by_id.get(rid)
            if answered is None or answered.future.done():  # answered already (a retry's twin): taken once
                continue
            answered.future.set_result(result)

    def _requeue(self, slot: _Slot, batch: list[_Item], exc: BaseException) -> None:
        again = []
        for item in batch:
            if item.future.done():
                continue
            if item.tries > self.retries:
                item.future.set_exception(
                    ReplicaLostError(
                        f"{self.name}: request {item.rid} failed on {item.tries} tries; the last replica error: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    )
                )
            else:
                again.append(item)
        if again:
            log.warning(
                "replica lost; sending its requests again",
                model=self.name,
                replica=slot.index,
                requests=len(again),
                error=type(exc).__name__,
            )
            self._queue.extendleft(reversed(again))

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(RunError(f"{self.name}: the router closed before this request was sent"))
