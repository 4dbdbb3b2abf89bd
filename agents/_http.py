"""How an HTTP model backend lives with a hosted provider for days: rate limits, overload, outages.

One :class:`Endpoint` per provider endpoint in the process (:func:`endpoint`), shared by every agent and every
event loop that calls it, decides when a request may go out:

* **The server's wait first.** A ``Retry-After`` (seconds or an HTTP date), ``retry-after-ms``, or, on a 429
  without them (or any answer saying ``x-ratelimit-remaining-*: 0``), the ``x-ratelimit-reset-*`` durations
  (``1s``, ``6m0s``, ``20ms``) pause the whole endpoint: until then no caller sends, so a burst of callers does not
  each eat a 429.
* **Adaptive concurrency (AIMD).** At most ``limit`` requests in flight; ``limit`` starts at the ``concurrency``
  the agents asked for, which is also its ceiling, grows by ``1/limit`` with each success (one slot per round of
  successes) and halves on a 429, at most once per round: the 429s of requests sent before the last cut do not
  cut again. Its floor is 1.
* **Client-side limits.** ``rpm`` and ``tpm`` are sliding windows: at most that many requests (tokens) in any
  60 seconds, so a user who knows the quota never meets a 429.
* **A circuit breaker.** ``circuit`` transient failures in a row with no success for ``circuit_minutes`` open the
  circuit: requests fail at once, resumably, instead of hammering a provider that is down; after
  :attr:`Endpoint.probe_after_s` one request goes out as a probe, and its success closes the circuit.

:class:`RetryingClient` sends one request through an endpoint, retrying what retrying can fix (429, 408/409/425,
5xx and 529, timeouts, dropped connections, a body that is not the JSON asked for) with exponential backoff and
full jitter, for as long as the request's deadline allows; a 4xx that retrying cannot fix fails at once with the
server's message. When it stops, its :class:`BackendHTTPError` names the provider, what it last answered, how long
it kept trying and how to go on (resume the run).

Waiting is visible: :func:`rate_limit_waits` lists the waits in progress now, and an endpoint that starts waiting
on the server for a second or more logs it once. The API key is never logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import structlog

from maker.errors import RunError

__all__ = [
    "BackendHTTPError",
    "Endpoint",
    "Limits",
    "Permit",
    "RateLimitWait",
    "RetryingClient",
    "SlidingWindow",
    "Unavailable",
    "endpoint",
    "forget_endpoints",
    "parse_duration",
    "rate_limit_waits",
    "retry_after",
    "server_wait",
]

log = structlog.get_logger("maker")

_RETRYABLE = frozenset({408, 409, 425, 429})
"""4xx answers a later attempt may get past (every 5xx is retried too, 529 "overloaded" included)."""
_RESUME = "committed steps are kept; `maker resume RUN_ID` continues"
_DEADLINE_HINT = "Raise deadline= (minutes) in the agent spec to keep trying longer"
_CIRCUIT_HINT = "Raise circuit= or circuit_minutes= in the agent spec to bear failures longer"


class BackendHTTPError(RunError):
    """The server kept failing, or refused the request for a reason retrying cannot fix."""


@dataclass(frozen=True, slots=True)
class RateLimitWait:
    """An endpoint holding its requests back now."""

    endpoint: str
    """``MODEL@BASE_URL``."""
    until: float
    """When the wait ends, as a ``time.time()`` epoch."""
    reason: str
    """``HTTP 429`` (the server said), ``rpm limit`` / ``tpm limit`` (the spec's own), ``backoff after HTTP 503``."""


# -- what the server says ---------------------------------------------------------------------------------------
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Seconds in an OpenAI-style duration (``1s``, ``6m0s``, ``20ms``, ``1m30.5s``; a bare number is seconds);
    None for anything else."""
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` in seconds or as an HTTP date
    (measured from ``now``, a ``time.time()`` epoch); None when it asked nothing readable."""
    h = _lower(headers)
    ms = h.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = -1.0
        if math.isfinite(value) and value >= 0:
            return value
    text = h.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return value if math.isfinite(value) and value >= 0 else None


def server_wait(status: int, headers: Mapping[str, str], now: float | None = None) -> tuple[float, str] | None:
    """How long the server asked every caller to hold off, and why; None if it asked nothing.

    ``Retry-After`` / ``retry-after-ms`` on any answer; otherwise the ``x-ratelimit-reset-requests`` and
    ``-tokens`` durations of the limits whose ``x-ratelimit-remaining-*`` is 0, or, on a 429 that names none as
    spent, the longest reset given."""
    after = retry_after(headers, now)
    if after is not None:
        return after, f"HTTP {status}"
    h = _lower(headers)
    resets: dict[str, float] = {}
    spent: list[str] = []
    for kind in ("requests", "tokens"):
        reset = parse_duration(h.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        resets[kind] = reset
        try:
            if float(h.get(f"x-ratelimit-remaining-{kind}", "nan")) <= 0:
                spent.append(kind)
        except ValueError:
            pass
    if spent:
        kind = max(spent, key=lambda k: resets[k])
        return resets[kind], "HTTP 429" if status == 429 else f"provider's {kind} limit"
    if status == 429 and resets:
        return max(resets.values()), "HTTP 429"
    return None


# -- the endpoint's shared state --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How an endpoint may be used. Agents that share an endpoint share one :class:`Endpoint`: it takes the
    largest ``concurrency`` any of them gives and the tightest of every other limit (:meth:`merged`)."""

    concurrency: int = 8
    """Requests in flight at most: where the adaptive limit starts, and its ceiling."""
    rpm: float | None = None
    """Requests in any 60 seconds at most (None: no client-side limit)."""
    tpm: float | None = None
    """Tokens in any 60 seconds at most, a request's counted before it is sent (None: no client-side limit)."""
    circuit: int = 20
    """Transient failures in a row that, with no success for ``circuit_minutes``, open the circuit (0: never)."""
    circuit_minutes: float = 5.0
    """Minutes without a success, counted from the first failure of the streak, before the circuit may open."""

    def merged(self, other: Limits) -> Limits:
        """The limits of an endpoint two agents share: the larger ceiling, every other limit the tighter (no limit,
        and ``circuit=0``, yield to any)."""

        def least(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        circuit = min((c for c in (self.circuit, other.circuit) if c), default=0)
        return Limits(
            concurrency=max(self.concurrency, other.concurrency),
            rpm=least(self.rpm, other.rpm),
            tpm=least(self.tpm, other.tpm),
            circuit=circuit,
            circuit_minutes=min(self.circuit_minutes, other.circuit_minutes),
        )


class _Sent:
    __slots__ = ("t", "amount", "live")

    def __init__(self, t: float, amount: float) -> None:
        self.t, self.amount, self.live = t, amount, True


class SlidingWindow:
    """At most ``limit`` units in any ``period`` seconds: a log of what went out, oldest first. Any fixed window a
    provider counts in is one of these windows, so a client within the limit is within the provider's."""

    def __init__(self, limit: float, period: float = 60.0) -> None:
        self.limit = limit
        self.period = period
        self._log: deque[_Sent] = deque()
        self._sum = 0.0

    def _expire(self, now: float) -> None:
        while self._log and self._log[0].t <= now - self.period:
            old = self._log.popleft()
            old.live = False
            self._sum -= old.amount

    def delay(self, now: float, amount: float) -> float:
        """Seconds until ``amount`` more may go out (0: now). More than the whole limit goes out alone."""
        self._expire(now)
        if not self._log or self._sum + amount <= self.limit:
            return 0.0
        need, freed = self._sum + amount - self.limit, 0.0
        for sent in self._log:
            freed += sent.amount
            if freed >= need:
                return max(0.0, sent.t + self.period - now)
        return max(0.0, self._log[-1].t + self.period - now)

    def take(self, now: float, amount: float) -> _Sent:
        sent = _Sent(now, amount)
        self._log.append(sent)
        self._sum += amount
        return sent

    def raise_to(self, sent: _Sent, amount: float) -> None:
        """Count ``sent`` as ``amount`` if that is more (a provider counts at least what it was told to expect)."""
        if sent.live and amount > sent.amount:
            self._sum += amount - sent.amount
            sent.amount = amount


@dataclass(eq=False, slots=True)
class _Ticket:
    """A caller queued for a slot, on its own event loop."""

    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[None] | None = None


@dataclass(slots=True)
class Permit:
    """A slot held by one request in flight."""

    t: float
    epoch: int
    probe: bool
    tokens: _Sent | None


class Unavailable(Exception):
    """The endpoint will not send this request: its circuit is open, or its wait outlasts the request's deadline."""

    def __init__(self, why: str, last: str, hint: str = _DEADLINE_HINT) -> None:
        super().__init__(why)
        self.why = why
        self.last = last
        self.hint = hint


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Endpoint:
    """One provider endpoint's shared state: its pause, its adaptive concurrency, its client-side limits and its
    circuit. Plain counters under a thread lock; a caller waits on a future of its own event loop, woken through
    that loop, so successive ``asyncio.run`` loops (and threads) share one endpoint safely."""

    probe_after_s = 30.0
    """How long an open circuit fails requests before it lets one through as a probe."""

    def __init__(self, label: str, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self.limit = float(limits.concurrency)
        """The adaptive concurrency: ``int(limit)`` requests may be in flight."""
        self.lowest = self.limit
        """The lowest ``limit`` has been (for tests and diagnostics)."""
        self.in_flight = 0
        self.epoch = 0
        """Cuts of ``limit`` so far; a 429 cuts only if its request went out after the last cut."""
        self.paused_until = 0.0
        self.pause_reason = ""
        self.failures = 0
        """Transient failures in a row (429s are not failures: the server is up, and said when to come back)."""
        self.failing_since: float | None = None
        self.last_failure = ""
        self.opened_at: float | None = None
        """When the circuit opened (None: closed)."""
        self._probing = False
        self._queue: deque[_Ticket] = deque()
        self._limit_wait: tuple[float, str] | None = None
        self._backoffs: dict[int, tuple[float, str]] = {}
        self._ids = itertools.count()
        self._rpm = SlidingWindow(limits.rpm) if limits.rpm else None
        self._tpm = SlidingWindow(limits.tpm) if limits.tpm else None

    # -- configuration ------------------------------------------------------------------------------------------
    def widen(self, limits: Limits) -> None:
        """Take another agent's limits on this endpoint (see :meth:`Limits.merged`)."""
        with self._lock:
            merged = self.limits.merged(limits)
            if merged == self.limits:
                return
            self.limits = merged
            for attr, value in (("_rpm", merged.rpm), ("_tpm", merged.tpm)):
                window = getattr(self, attr)
                if value is None:
                    continue
                if window is None:
                    setattr(self, attr, SlidingWindow(value))
                else:
                    window.limit = value
            self._wake_head()

    @property
    def slots(self) -> int:
        return max(1, int(self.limit))

    @property
    def is_open(self) -> bool:
        """Whether the circuit is open."""
        return self.opened_at is not None

    @property
    def queued(self) -> int:
        """Callers waiting for a slot (or looking whether they may take one)."""
        return len(self._queue)

    # -- taking and giving back a slot --------------------------------------------------------------------------
    async def acquire(self, cost: float = 0.0, give_up_at: float | None = None) -> Permit:
        """Wait for a slot, in arrival order, then return it. Raises :class:`Unavailable` when the circuit is open
        or when the wait would run past ``give_up_at`` (this endpoint's clock)."""
        ticket = _Ticket(asyncio.get_running_loop())
        with self._lock:
            self._queue.append(ticket)
        try:
            while True:
                with self._lock:
                    now = self.clock()
                    self._refuse_if_open(now)
                    wait, reason = self._blocked(ticket, cost, now)
                    if wait == 0.0:
                        return self._grant(cost, now)
                    if reason:
                        if now + wait > (give_up_at if give_up_at is not None else math.inf):
                            raise Unavailable(
                                f"the endpoint must wait {_span(wait)} more ({reason}), past the request's deadline",
                                self.last_failure or reason,
                            )
                        if reason in ("rpm limit", "tpm limit"):
                            self._limit_wait = (now + wait, reason)
                    fut: asyncio.Future[None] = ticket.loop.create_future()
                    ticket.fut = fut
                timeout = wait if wait != math.inf else None
                if give_up_at is not None:
                    timeout = max(0.0, min(math.inf if timeout is None else timeout, give_up_at - now))
                try:
                    # Not asyncio.wait_for: in 3.11 it swallows a cancellation that lands as the future is settled.
                    async with asyncio.timeout(timeout):
                        await fut
                except TimeoutError:
                    if give_up_at is not None and self.clock() >= give_up_at:
                        raise Unavailable(
                            "no slot on the endpoint before the request's deadline", self.last_failure
                        ) from None
        finally:
            with self._lock:
                ticket.fut = None
                if ticket in self._queue:
                    was_head = ticket is self._queue[0]
                    self._queue.remove(ticket)
                    if was_head:
                        self._limit_wait = None
                self._wake_head()

    def _refuse_if_open(self, now: float) -> None:
        if self.opened_at is None:
            return
        if self._probing or now < self.opened_at + self.probe_after_s:
            since = self.failing_since if self.failing_since is not None else self.opened_at
            raise Unavailable(
                f"the circuit is open: {self.failures} failures in a row over {_span(now - since)} with no success "
                f"(it lets a probe through {_span(max(0.0, self.opened_at + self.probe_after_s - now))} from now)",
                self.last_failure,
                _CIRCUIT_HINT,
            )

    def _blocked(self, ticket: _Ticket, cost: float, now: float) -> tuple[float, str]:
        """How long ``ticket`` must still wait (``inf``: until woken; 0: not at all), and the wait's reason when
        it is one a caller can see coming (a pause, a client-side limit)."""
        if self.paused_until > now:
            return self.paused_until - now, self.pause_reason
        if ticket is not self._queue[0] or self.in_flight >= self.slots:
            return math.inf, ""
        if self.opened_at is not None and self.in_flight:  # a probe goes alone
            return math.inf, ""
        wait, reason = 0.0, ""
        for window, amount, name in ((self._rpm, 1.0, "rpm limit"), (self._tpm, cost, "tpm limit")):
            if window is not None:
                d = window.delay(now, amount)
                if d > wait:
                    wait, reason = d, name
        return wait, reason

    def _grant(self, cost: float, now: float) -> Permit:
        self.in_flight += 1
        if self._rpm is not None:
            self._rpm.take(now, 1.0)
        tokens = self._tpm.take(now, cost) if self._tpm is not None else None
        probe = self.opened_at is not None
        if probe:
            self._probing = True
        return Permit(now, self.epoch, probe, tokens)

    def _wake_head(self) -> None:
        """Wake the first queued caller to look again (under the lock); callers behind it wait their turn."""
        while self._queue:
            head = self._queue[0]
            fut, head.fut = head.fut, None
            if fut is None:
                return  # not waiting: it is looking at the state now, or about to
            try:
                head.loop.call_soon_threadsafe(_settle, fut)
            except RuntimeError:  # its loop is closed: nobody is waiting there any more
                self._queue.popleft()
                continue
            return

    def release(
        self,
        permit: Permit,
        outcome: str,
        *,
        what: str = "",
        wait: tuple[float, str] | None = None,
        provider: str = "",
    ) -> None:
        """Give the slot back with what the request met: ``ok``, ``rate_limited`` (429), ``failed`` (transient),
        ``refused`` (a 4xx retrying cannot fix) or ``cancelled``; ``wait`` is the server's asked pause."""
        with self._lock:
            now = self.clock()
            self.in_flight -= 1
            if permit.probe:
                self._probing = False
            if outcome == "ok":
                self.limit = min(float(self.limits.concurrency), self.limit + 1.0 / self.limit)
                if self.opened_at is not None:
                    log.info("circuit closed: the probe succeeded", provider=provider, endpoint=self.label)
                self.failures, self.failing_since, self.opened_at = 0, None, None
            elif outcome == "rate_limited":  # the server is up and said when to come back: not a failure
                self.last_failure = what
                self.failures, self.failing_since, self.opened_at = 0, None, None
                if permit.epoch == self.epoch:
                    self.epoch += 1
                    self.limit = max(1.0, self.limit / 2)
                    self.lowest = min(self.lowest, self.limit)
            elif outcome == "failed":
                self._failed(now, what, permit.probe, provider)
            if wait is not None and wait[0] > 0:
                self._pause(now, wait[0], wait[1], provider)
            self._wake_head()

    def _failed(self, now: float, what: str, probe: bool, provider: str) -> None:
        self.failures += 1
        self.last_failure = what
        if self.failing_since is None:
            self.failing_since = now
        if probe:
            self.opened_at = now
        elif (
            self.opened_at is None
            and self.limits.circuit
            and self.failures >= self.limits.circuit
            and now - self.failing_since >= self.limits.circuit_minutes * 60
        ):
            self.opened_at = now
            log.warning(
                "circuit open; failing requests at once",
                provider=provider,
                endpoint=self.label,
                failures=self.failures,
                minutes=round((now - self.failing_since) / 60, 2),
                last=what,
            )

    def _pause(self, now: float, seconds: float, reason: str, provider: str) -> None:
        until = now + seconds
        if until <= self.paused_until:
            return
        if self.paused_until <= now and seconds >= 1.0:
            log.warning(
                "rate limited; waiting",
                provider=provider,
                endpoint=self.label,
                seconds=round(seconds, 1),
                status=reason,
            )
        self.paused_until, self.pause_reason = until, reason

    def recount(self, permit: Permit, tokens: float) -> None:
        """Count the request of ``permit`` as ``tokens`` in the ``tpm`` window if that is more than it was
        counted as: a provider counts at least what the request said it might take (``max_tokens``)."""
        if permit.tokens is not None and self._tpm is not None:
            with self._lock:
                self._tpm.raise_to(permit.tokens, tokens)

    # -- what callers see -----------------------------------------------------------------------------------
    def backing_off(self, seconds: float, reason: str) -> int:
        """Note a caller's backoff (until :meth:`backed_off`), so :func:`rate_limit_waits` shows it."""
        with self._lock:
            key = next(self._ids)
            self._backoffs[key] = (self.clock() + seconds, reason)
            return key

    def backed_off(self, key: int) -> None:
        with self._lock:
            self._backoffs.pop(key, None)

    def waiting(self) -> tuple[float, str] | None:
        """Seconds the endpoint's callers are still held back, and why; None when nobody waits on a clock."""
        with self._lock:
            now = self.clock()
            if self.paused_until > now:
                return self.paused_until - now, self.pause_reason
            if self._limit_wait is not None and self._limit_wait[0] > now:
                return self._limit_wait[0] - now, self._limit_wait[1]
            live = [b for b in self._backoffs.values() if b[0] > now]
            if live:
                until, reason = max(live)
                return until - now, reason
        return None


_ENDPOINTS: dict[tuple[str, str], Endpoint] = {}
_REGISTRY = threading.Lock()


def endpoint(base_url: str, model: str, limits: Limits) -> Endpoint:
    """The process's one :class:`Endpoint` for ``model`` at ``base_url``, made on first use.

    Keyed by base URL and model because providers count their limits per model (and per organisation): a 429 on
    one model must not hold back another with a budget of its own, while every agent and run in the process that
    calls the same model shares one pause, one concurrency and one circuit."""
    key = (base_url.rstrip("/"), model)
    with _REGISTRY:
        ep = _ENDPOINTS.get(key)
        if ep is None:
            ep = _ENDPOINTS[key] = Endpoint(f"{model}@{key[0]}", limits)
            return ep
    ep.widen(limits)
    return ep


def forget_endpoints() -> None:
    """Drop every endpoint's state (pauses, limits, circuits): for tests that must not inherit another's."""
    with _REGISTRY:
        _ENDPOINTS.clear()


def rate_limit_waits() -> list[RateLimitWait]:
    """The waits in progress now, one per endpoint that holds its requests back on a clock: the server's pause,
    a client-side ``rpm``/``tpm`` limit, or a backoff after a failure."""
    with _REGISTRY:
        eps = list(_ENDPOINTS.values())
    now = time.time()
    out = []
    for ep in eps:
        w = ep.waiting()
        if w is not None:
            out.append(RateLimitWait(ep.label, now + w[0], w[1]))
    return out


# -- one request, retried --------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Answer:
    outcome: str
    """``ok``, ``rate_limited``, ``failed`` or ``refused``."""
    what: str = ""
    """What the server answered, briefly (``HTTP 503: {...}``, ``ReadTimeout``)."""
    status: int | None = None
    text: str = ""
    wait: tuple[float, str] | None = None
    data: Any = None


class RetryingClient:
    """Posts JSON to one endpoint through its :class:`Endpoint`, retrying transient failures within a deadline.

    ``client`` is an ``httpx.AsyncClient``; ``refusal(status, body)`` words a 4xx that retrying cannot fix (the
    backend knows what 401 or 404 means for it). Jitter draws from ``rng``: it only spreads retries in time and
    never touches what a run decides."""

    def __init__(
        self,
        client: Any,
        endpoint: Endpoint,
        *,
        name: str,
        deadline_s: float,
        timeout_s: float,
        retries: int | None,
        backoff_s: float,
        backoff_cap_s: float = 60.0,
        rng: random.Random,
        refusal: Callable[[int, str], str],
    ) -> None:
        import httpx

        self._httpx = httpx
        self.client = client
        self.endpoint = endpoint
        self.name = name
        self.deadline_s = deadline_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.rng = rng
        self.refusal = refusal

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, backoff * 2**(attempt-1))]."""
        return self.rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_s * 2 ** min(attempt - 1, 60)))

    async def post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        cost: float = 0.0,
        check: Callable[[Any], str | None] = lambda data: None,
        used: Callable[[Any], float | None] = lambda data: None,
    ) -> Any:
        """The decoded JSON answer to ``body`` at ``path``. ``cost``: the request's tokens, counted before it goes
        (``used(data)`` may raise it after); ``check(data)``: why an answer is not what was asked, or None."""
        ep = self.endpoint
        started: float | None = None
        tries = 0
        last = ""
        while True:
            give_up_at = None if started is None else started + self.deadline_s
            try:
                permit = await ep.acquire(cost, give_up_at)
            except Unavailable as exc:
                raise self._stop(exc.why, last or exc.last or "nothing yet", started, tries, exc.hint) from None
            if started is None:
                started = permit.t
            tries += 1
            answer = _Answer("cancelled")
            try:
                answer = await self._attempt(path, body, check)
            finally:
                ep.release(permit, answer.outcome, what=answer.what, wait=answer.wait, provider=self.name)
            if answer.outcome == "ok":
                actual = used(answer.data)
                if actual is not None:
                    ep.recount(permit, actual)
                return answer.data
            if answer.outcome == "refused":
                raise BackendHTTPError(self.refusal(answer.status or 0, answer.text), retryable=False)
            last = answer.what
            if self.retries is not None and tries > self.retries:
                raise self._stop(
                    f"gave up after {tries} tries (retries={self.retries})",
                    last,
                    started,
                    tries,
                    "Drop retries= from the agent spec to let the deadline rule",
                )
            now = ep.clock()
            left = started + self.deadline_s - now
            if answer.wait is not None and answer.wait[0] > 0:
                if answer.wait[0] > left:
                    raise self._stop(
                        f"the server asked to wait {_span(answer.wait[0])}, past the request's "
                        f"{_span(self.deadline_s)} deadline",
                        last,
                        started,
                        tries,
                    )
                continue  # the endpoint is paused until then: acquire waits it out, with every other caller
            if left <= 0:
                raise self._stop(f"kept failing for the whole {_span(self.deadline_s)} deadline", last, started, tries)
            delay = min(self.backoff(tries), left)
            key = ep.backing_off(delay, f"backoff after {last.partition(':')[0]}")
            try:
                await asyncio.sleep(delay)
            finally:
                ep.backed_off(key)

    async def _attempt(self, path: str, body: dict[str, Any], check: Callable[[Any], str | None]) -> _Answer:
        httpx = self._httpx
        try:
            resp = await self.client.post(path, json=body, timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            return _Answer("failed", f"no answer within {self.timeout_s:g} s ({type(exc).__name__})")
        except httpx.RequestError as exc:  # a dropped connection, a body that does not decode
            return _Answer("failed", f"{type(exc).__name__}: {_brief(str(exc)) or 'connection lost'}")
        code, text = resp.status_code, resp.text
        what = f"HTTP {code}: {_brief(text)}" if text.strip() else f"HTTP {code}"
        wait = server_wait(code, resp.headers)
        if code == 429:
            if "insufficient_quota" in text:  # OpenAI's "you exceeded your current quota": no wait will help
                return _Answer("refused", what, code, text)
            return _Answer("rate_limited", what, code, text, wait)
        if code in _RETRYABLE or code >= 500:
            return _Answer("failed", what, code, text, wait)
        if code >= 400:
            return _Answer("refused", what, code, text)
        try:
            data = resp.json()
        except ValueError:
            return _Answer("failed", f"HTTP {code} with a body that is not JSON: {_brief(text)}", code, text, wait)
        problem = check(data)
        if problem is not None:
            return _Answer("failed", f"HTTP {code} with {problem}: {_brief(text)}", code, text, wait)
        return _Answer("ok", what, code, text, wait, data)

    def _stop(
        self, why: str, last: str, started: float | None, tries: int, hint: str = _DEADLINE_HINT
    ) -> BackendHTTPError:
        """The resumable error a request stops with: the provider, why, what it last answered, for how long this
        request tried, which spec option moves the limit, and how to go on."""
        spent = 0.0 if started is None else self.endpoint.clock() - started
        return BackendHTTPError(
            f"{self.name}: {why}; it last answered {last}; this request kept trying for {_span(spent)} "
            f"({tries} {'try' if tries == 1 else 'tries'}). {hint}; {_RESUME}",
            retryable=True,
        )


def _span(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``2.5 min``, ``30 min``, ``26.5 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _brief(text: str) -> str:
    return text.strip().replace("\n", " ")[:200]
