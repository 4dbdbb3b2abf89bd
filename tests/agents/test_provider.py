"""The HTTP backend against a provider that behaves like a hosted one (tests/fixtures/provider.py): the server's
waits honoured, transient failures retried within the deadline, adaptive concurrency, client-side limits, the
circuit breaker, usage, and the waits made visible. No assertion depends on timing: conditions are made certain
by counts, by long waits a test never sits out, or by an endpoint's clock the test moves itself."""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog

from maker.agents import GenerateRequest, RateLimitWait, Sample, Usage, make_agent, rate_limit_waits
from maker.agents._http import (
    Endpoint,
    Limits,
    SlidingWindow,
    Unavailable,
    parse_duration,
    retry_after,
    server_wait,
)
from maker.agents.openai_http import BackendHTTPError, OpenAIBackend
from maker.errors import AgentSpecError
from tests.agents.test_hanoi_server import _chain
from tests.fixtures.loopback import call
from tests.fixtures.provider import Provider, duration

STEPS = _chain(4)


def _req(i: int = 0, n: int = 1, max_tokens: int = 64) -> GenerateRequest:
    return GenerateRequest(STEPS[i][0], [0.7] * n, [100 + 10 * i + j for j in range(n)], max_tokens)


def _texts(out: list[list[Sample]]) -> list[list[str]]:
    return [[s.text for s in samples] for samples in out]


async def _until(ready: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until ``ready()`` (a guard of 60 s against a hang, not a timing assertion)."""
    for _ in range(60_000):
        if ready():
            return
        await asyncio.sleep(0.001)
    pytest.fail(f"not {what}")


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and see them end: a cancellation lost on the way would leave one waiting out its minute (the
    30 s are a guard against that, not a timing assertion)."""
    for t in tasks:
        t.cancel()
    _, pending = await asyncio.wait(tasks, timeout=30)
    assert not pending, "a cancelled caller kept waiting"


def _waits(ep: Endpoint) -> list[RateLimitWait]:
    return [w for w in rate_limit_waits() if w.endpoint == ep.label]


# -- what the server says --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("1h2m3s", 3723.0),
        ("0.25", 0.25),
        ("850ms", 0.85),
        ("", None),
        ("soon", None),
        ("5 s", None),
        ("-1s", None),
        (None, None),
    ],
)
def test_openai_durations(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_the_fixtures_durations_read_back() -> None:
    for s in (0.02, 0.999, 1.5, 59.25, 360.0, 3723.5):
        assert parse_duration(duration(s)) == pytest.approx(s, abs=1e-3)


def test_retry_after_in_seconds_in_milliseconds_and_as_a_date() -> None:
    now = 1_700_000_000.0
    assert retry_after({"Retry-After": "7"}, now) == 7.0
    assert retry_after({"retry-after": "2.5"}, now) == 2.5
    assert retry_after({"retry-after-ms": "350", "Retry-After": "9"}, now) == 0.35, "the precise one wins"
    assert retry_after({"Retry-After": email.utils.formatdate(now + 42, usegmt=True)}, now) == 42.0
    assert retry_after({"Retry-After": email.utils.formatdate(now - 5, usegmt=True)}, now) == 0.0, "a past date"
    for bad in ({"Retry-After": "tomorrow"}, {"Retry-After": "-3"}, {"retry-after-ms": "x"}, {}):
        assert retry_after(bad, now) is None


@pytest.mark.parametrize(
    "status, headers, expected",
    [
        (429, {"Retry-After": "3", "x-ratelimit-reset-requests": "9s"}, (3.0, "HTTP 429")),
        (503, {"Retry-After": "4"}, (4.0, "HTTP 503")),
        (429, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30.5s"}, (90.5, "HTTP 429")),
        (
            429,
            {
                "x-ratelimit-remaining-requests": "12",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            (360.0, "HTTP 429"),
        ),
        (429, {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "2s"}, (2.0, "HTTP 429")),
        (
            200,
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"},
            (2.0, "provider's requests limit"),
        ),
        (200, {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "2s"}, None),
        (429, {}, None),
        (500, {"x-ratelimit-reset-requests": "2s"}, None),
    ],
)
def test_the_servers_wait(status: int, headers: dict[str, str], expected: tuple[float, str] | None) -> None:
    assert server_wait(status, headers) == expected


# -- failing at once, retrying the rest ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault, message",
    [
        ("400", 'HTTP 400: {"error": {"message": "scripted HTTP 400"'),
        ("422", "HTTP 422"),
        ("quota", "You exceeded your current quota"),
        ("401", "set the API key in $OPENAI_API_KEY"),
        ("404", "is model 'm' served"),
    ],
)
def test_a_4xx_that_retrying_cannot_fix_fails_at_once_with_the_servers_message(fault: str, message: str) -> None:
    with Provider(faults={1: fault}) as provider:
        with pytest.raises(BackendHTTPError) as info:
            call(OpenAIBackend("m", provider.url, backoff=0.01), "generate", [_req()])
    assert message in str(info.value) and not info.value.retryable
    assert provider.posts == 1, "no retry"


@pytest.mark.parametrize(
    "fault", ["429", "408", "409", "425", "500", "502", "503", "529", "drop", "garbage", "nochoices"]
)
def test_transient_failures_are_retried(fault: str) -> None:
    with Provider(faults={1: fault}) as provider:
        (samples,) = call(OpenAIBackend("m", provider.url, timeout=30, backoff=0.01), "generate", [_req()])
    assert [s.text for s in samples] == [provider.answer(STEPS[0][0], 100, 0).text]
    assert provider.events[fault if fault[0].isalpha() else fault] == 1 and provider.events["ok"] == 1
    assert provider.posts == 2


def test_a_slow_answer_times_out_and_is_retried() -> None:
    """The first answer comes after 60 s, the client waits 0.5 s per attempt: certain to time out."""
    with Provider(faults={1: "slow"}, slow_s=60) as provider:
        (samples,) = call(OpenAIBackend("m", provider.url, timeout=0.5, backoff=0.01), "generate", [_req()])
    assert [s.text for s in samples] == [provider.answer(STEPS[0][0], 100, 0).text]
    assert provider.events["slow"] == 1 and provider.events["ok"] >= 1


def test_the_deadline_stops_a_provider_that_keeps_failing_with_a_resumable_error() -> None:
    with Provider(fail_from=1, fail_with="503") as provider:
        backend = OpenAIBackend("m", provider.url, deadline=0.002, backoff=0.01, name="openai:m@prov")
        with pytest.raises(BackendHTTPError) as info:
            call(backend, "generate", [_req()])
    text = str(info.value)
    assert info.value.retryable
    assert text.startswith("openai:m@prov: kept failing for the whole")
    assert "it last answered HTTP 503: " in text and "overloaded" in text
    assert (
        "this request kept trying for " in text and "committed steps are kept; `maker resume RUN_ID` continues" in text
    )
    assert provider.posts >= 1


def test_a_wait_longer_than_the_deadline_stops_at_once() -> None:
    with Provider(faults={1: "429:3600"}) as provider:
        with pytest.raises(BackendHTTPError, match=r"asked to wait 1 h, past the request's 1 min deadline") as info:
            call(OpenAIBackend("m", provider.url, deadline=1), "generate", [_req()])
    assert info.value.retryable and provider.posts == 1
    assert "it last answered HTTP 429" in str(info.value)


def test_a_retries_cap_still_applies() -> None:
    with Provider(fail_from=1, fail_with="500") as provider:
        with pytest.raises(BackendHTTPError, match=r"gave up after 3 tries \(retries=2\)"):
            call(OpenAIBackend("m", provider.url, retries=2, backoff=0.01), "generate", [_req()])
    assert provider.posts == 3


# -- the server's wait, for every caller -----------------------------------------------------------------------
def test_while_the_server_says_wait_no_caller_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """One request meets a 429 saying wait a minute; a burst of five callers that arrives during the wait queues and
    sends nothing (the test does not sit the minute out). The wait shows, and is logged once, without the key."""
    monkeypatch.setenv("PROVIDER_KEY", "sk-very-secret")
    with Provider(faults={1: "429:60"}) as provider:

        async def go() -> None:
            backend = OpenAIBackend("m", provider.url, key_env="PROVIDER_KEY", name="openai:m@provider")
            ep = backend.endpoint
            first = asyncio.create_task(backend.generate([_req(1)]))
            await _until(lambda: bool(_waits(ep)), "the endpoint paused")
            burst = [asyncio.create_task(backend.generate([_req(i)])) for i in range(2, 7)]
            await _until(lambda: ep.queued == 6, "the burst queued")
            assert provider.posts == 1, "nobody sends while the server said wait"
            (wait,) = _waits(ep)
            assert wait.reason == "HTTP 429" and wait.endpoint == "m@" + provider.url
            assert wait.until > time.time() + 30
            await _cancel(first, *burst)
            assert ep.queued == 0 and ep.in_flight == 0
            await backend.aclose()

        with structlog.testing.capture_logs() as logs:
            asyncio.run(go())
    waited = [e for e in logs if e["event"] == "rate limited; waiting"]
    assert len(waited) == 1 and waited[0]["provider"] == "openai:m@provider" and waited[0]["status"] == "HTTP 429"
    assert waited[0]["log_level"] == "warning" and waited[0]["seconds"] == 60
    assert "sk-very-secret" not in repr(logs)


@pytest.mark.parametrize("header", ["seconds", "ms", "date", "reset"])
def test_each_way_of_saying_wait_is_honoured_then_every_caller_is_answered(header: str) -> None:
    """``Retry-After`` in seconds or as an HTTP date, ``retry-after-ms``, or only ``x-ratelimit-reset-requests``:
    the one 429 pauses the endpoint, and the burst that follows is answered with no other 429."""
    wait = 2 if header == "date" else 1  # a date counts whole seconds: 2 keeps the wait over a second
    with Provider(faults={1: f"429:{wait}"}, wait_header=header) as provider:

        async def go() -> list[list[Sample]]:
            backend = OpenAIBackend("m", provider.url)
            try:
                first = asyncio.create_task(backend.generate([_req(1)]))
                await _until(lambda: provider.rate_limited == 1, "the 429")
                burst = [asyncio.create_task(backend.generate([_req(i)])) for i in range(2, 7)]
                return [(await t)[0] for t in (first, *burst)]
            finally:
                await backend.aclose()

        with structlog.testing.capture_logs() as logs:
            out = asyncio.run(go())
    assert _texts(out) == [[provider.answer(STEPS[i][0], 100 + 10 * i, 0).text] for i in range(1, 7)]
    assert provider.rate_limited == 1 and provider.posts == 7
    (waited,) = [e for e in logs if e["event"] == "rate limited; waiting"]
    assert waited["status"] == "HTTP 429" and waited["seconds"] >= 1


# -- adaptive concurrency --------------------------------------------------------------------------------------
def test_aimd_halves_once_per_round_of_429s_and_climbs_back_one_slot_per_round() -> None:
    async def go() -> None:
        ep = Endpoint("m@test", Limits(concurrency=8), clock=lambda: 0.0)
        permits = [await ep.acquire() for _ in range(8)]
        assert ep.in_flight == 8 and ep.slots == 8
        for p in permits:  # eight 429s of one round: one cut
            ep.release(p, "rate_limited")
        assert ep.limit == 4 and ep.epoch == 1
        ep.release(await ep.acquire(), "rate_limited")  # sent after the cut: cuts again
        assert ep.limit == 2
        for _ in range(3):
            ep.release(await ep.acquire(), "rate_limited")
        assert ep.limit == 1 and ep.slots == 1 and ep.lowest == 1, "the floor is 1"
        successes = []
        while ep.limit < 8:
            before = ep.limit
            ep.release(await ep.acquire(), "ok")
            successes.append(ep.limit)
            assert ep.limit > before
        assert ep.limit == 8 and len(successes) == 31  # about one slot per round of `limit` successes: 1+...+7
        ep.release(await ep.acquire(), "ok")
        assert ep.limit == 8, "the ceiling is concurrency="

    asyncio.run(go())


def test_concurrency_drops_on_429s_and_recovers_against_the_provider() -> None:
    """Three scripted 429s among the first requests cut the endpoint's limit; a hundred answered requests later it
    is back at its ceiling."""
    with Provider(faults={1: "429", 2: "429", 3: "429"}, latency_s=0.01) as provider:
        backend = OpenAIBackend("m", provider.url, concurrency=8, backoff=0.01)
        ep = backend.endpoint
        reqs = [_req(i % len(STEPS)) for i in range(100)]
        out = call(backend, "generate", reqs)
    assert _texts(out) == [[provider.answer(r.prompt, r.seeds[0], 0).text] for r in reqs]
    assert provider.rate_limited == 3 and 1 <= ep.lowest <= 4
    assert ep.limit == 8 and ep.in_flight == 0


def test_two_event_loops_one_after_the_other_share_an_endpoint() -> None:
    """``maker eval`` runs one ``asyncio.run`` per problem: callers that queued on the endpoint in the first loop
    leave nothing behind that breaks the second, and the second inherits what the first learned."""
    with Provider(faults={1: "429", 2: "429"}) as provider:
        for _ in range(2):
            backend = OpenAIBackend("m", provider.url, concurrency=2, backoff=0.01)
            out = call(backend, "generate", [_req(i) for i in range(6)])
            assert _texts(out) == [[provider.answer(STEPS[i][0], 100 + 10 * i, 0).text] for i in range(6)]
            assert backend.endpoint.in_flight == 0 and backend.endpoint.queued == 0
        again = OpenAIBackend("m", provider.url + "/")
    assert again.endpoint is backend.endpoint and provider.posts == 14
    asyncio.run(again.aclose())


# -- client-side limits ----------------------------------------------------------------------------------------
def test_with_rpm_within_the_providers_window_no_429_is_ever_seen() -> None:
    """The provider allows 6 requests a minute. With rpm=5, five go out and the sixth waits on this side (a wait
    of about a minute, which the test does not sit out): no 429. Without rpm, seven at once meet one 429."""

    async def burst(provider: Provider, spec: str, n: int) -> tuple[OpenAIBackend, list[asyncio.Task[Any]]]:
        agent = make_agent(f"openai:m@{provider.url}{spec}")
        assert isinstance(agent.backend, OpenAIBackend)
        return agent.backend, [asyncio.create_task(agent.backend.generate([_req(i % 4)])) for i in range(n)]

    async def go() -> None:
        # both providers up at once: two ports, two endpoints (one that reused a closed one's port would share it)
        with (
            Provider(requests_per_window=6, window_s=60) as limited,
            Provider(requests_per_window=6, window_s=60) as bare,
        ):
            backend, tasks = await burst(limited, ",rpm=5", 6)
            await _until(lambda: sum(t.done() for t in tasks) == 5, "five answered")
            await _until(lambda: bool(_waits(backend.endpoint)), "the sixth waiting")
            assert [w.reason for w in _waits(backend.endpoint)] == ["rpm limit"]
            assert limited.posts == 5 and limited.rate_limited == 0
            await _cancel(*tasks)
            await backend.aclose()
            backend, tasks = await burst(bare, "", 7)  # all seven go out before any answer is read
            await _until(lambda: bare.rate_limited == 1 and bool(_waits(backend.endpoint)), "a 429 and the pause")
            assert bare.posts == 7
            await _cancel(*tasks)
            await backend.aclose()

    asyncio.run(go())


def test_with_tpm_within_the_providers_window_no_429_is_ever_seen() -> None:
    """A request counts ceil(prompt chars / 4) + max_tokens * n tokens on both sides; the provider allows three
    requests' worth a minute, and so does tpm=."""
    cost = -(-len(STEPS[0][0]) // 4) + 65 * 2
    with Provider(tokens_per_window=3 * cost + 10, window_s=60) as provider:

        async def go() -> None:
            backend = OpenAIBackend("m", provider.url, tpm=3 * cost + 10)
            tasks = [asyncio.create_task(backend.generate([_req(0, n=2)])) for _ in range(4)]
            await _until(lambda: sum(t.done() for t in tasks) == 3, "three answered")
            await _until(lambda: bool(_waits(backend.endpoint)), "the fourth waiting")
            assert [w.reason for w in _waits(backend.endpoint)] == ["tpm limit"]
            assert provider.posts == 3 and provider.rate_limited == 0 and provider.window_tokens == 3 * cost
            await _cancel(*tasks)
            await backend.aclose()

        asyncio.run(go())


def test_sliding_window_counts_any_sixty_seconds() -> None:
    w = SlidingWindow(10, 60)
    assert w.delay(0, 4) == 0
    a = w.take(0, 4)
    w.take(20, 6)
    assert w.delay(30, 1) == 30, "the first 4 leave at 60"
    assert w.delay(30, 5) == 50, "both must leave"
    w.raise_to(a, 7)  # the server counted more than estimated
    assert w.delay(30, 1) == 30 and w.delay(60, 1) == 0
    w.raise_to(a, 99)  # left the window already: changes nothing
    assert w.delay(60, 4) == 0 and w.delay(60, 5) == 20
    assert w.delay(100, 50) == 0, "more than the whole limit goes out alone"


# -- the circuit -----------------------------------------------------------------------------------------------
def test_the_circuit_opens_after_failures_over_minutes_fails_fast_and_closes_on_a_good_probe() -> None:
    now = [0.0]
    ep = Endpoint("m@test", Limits(concurrency=4, circuit=3, circuit_minutes=1), clock=lambda: now[0])

    async def go() -> None:
        for _ in range(5):  # five failures within a minute: not yet
            ep.release(await ep.acquire(), "failed", what="HTTP 500: down")
        assert not ep.is_open
        now[0] = 61.0
        ep.release(await ep.acquire(), "failed", what="HTTP 502: still down")
        assert ep.is_open
        with pytest.raises(Unavailable, match=r"the circuit is open: 6 failures in a row over 1\.02 min") as info:
            await ep.acquire()
        assert info.value.last == "HTTP 502: still down"
        now[0] += ep.probe_after_s
        probe = await ep.acquire()
        assert probe.probe
        with pytest.raises(Unavailable):  # one probe at a time
            await ep.acquire()
        ep.release(probe, "failed", what="ReadTimeout")
        with pytest.raises(Unavailable):  # the failed probe opened it again
            await ep.acquire()
        now[0] += ep.probe_after_s
        ep.release(await ep.acquire(), "ok")
        assert not ep.is_open and ep.failures == 0
        ep.release(await ep.acquire(), "ok")

    asyncio.run(go())


def test_an_open_circuit_fails_requests_at_once_until_a_probe_succeeds() -> None:
    with Provider(fail_from=1, fail_with="500") as provider:
        spec = f"openai:m@{provider.url},circuit=3,circuit_minutes=0,backoff=0.01"
        agent = make_agent(spec)
        with pytest.raises(BackendHTTPError) as info:
            call(agent.backend, "generate", [_req(i) for i in range(4)])
        text = str(info.value)
        assert (
            re.match(re.escape(spec) + r": the circuit is open: \d+ failures in a row", text) and info.value.retryable
        )
        assert "it last answered HTTP 500: " in text and "`maker resume RUN_ID` continues" in text
        posts = provider.posts
        later = make_agent(spec)
        with pytest.raises(BackendHTTPError, match="the circuit is open"):
            call(later.backend, "generate", [_req(0)])
        assert provider.posts == posts, "nothing sent while the circuit is open"
        provider.fail_from = None  # the provider recovers; the next request after the cool-down is a probe
        later.backend.endpoint.probe_after_s = 0.0
        healed = make_agent(spec)
        (samples,) = call(healed.backend, "generate", [_req(0)])
    assert [s.text for s in samples] == [provider.answer(STEPS[0][0], 100, 0).text]
    assert not healed.backend.endpoint.is_open and provider.posts == posts + 1


# -- usage and what is visible ---------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_usage_rides_on_the_first_sample_of_each_request(api: str) -> None:
    req = GenerateRequest(STEPS[3][0], [0.0, 0.7, 0.7, 0.7], [5, 6, 7, 8], 64)
    prompt = -(-len(STEPS[3][0]) // 4)
    with Provider(cache_share=0.25) as provider:
        (samples,) = call(OpenAIBackend("m", provider.url, api=api), "generate", [req])
    # one request at temperature 0 (n=1), one at 0.7 (n=3): each billed its prompt once
    assert [s.usage is not None for s in samples] == [True, True, False, False]
    first, second = samples[0].usage, samples[1].usage
    assert first == Usage(prompt=prompt, completion=samples[0].tokens, cached=prompt // 4)
    assert second == Usage(prompt=prompt, completion=sum(s.tokens for s in samples[1:]), cached=prompt // 4)


def test_a_server_that_ignores_n_bills_every_request() -> None:
    req = GenerateRequest(STEPS[3][0], [0.7] * 3, [5, 6, 7], 64)
    with Provider(ignore_n=True) as provider:
        backend = OpenAIBackend("m", provider.url)
        (samples,) = call(backend, "generate", [req])
    assert backend.honours_n is False and provider.posts == 3
    assert all(s.usage is not None and s.usage.completion == s.tokens for s in samples)


def test_a_backoff_is_visible_while_it_lasts() -> None:
    """After a 503 with no wait named, the request backs off; the jitter's generator is seeded so that the first
    backoff is long (over 30 s of at most 60), and the wait shows until the test cancels it."""
    seed = next(s for s in range(100) if random.Random(s).uniform(0, 60) > 30)
    with Provider(faults={1: "503"}) as provider:

        async def go() -> None:
            backend = OpenAIBackend("m", provider.url, backoff=60)
            backend._http.rng = random.Random(seed)
            task = asyncio.create_task(backend.generate([_req()]))
            await _until(lambda: bool(_waits(backend.endpoint)), "the backoff showing")
            (wait,) = _waits(backend.endpoint)
            assert wait.reason == "backoff after HTTP 503" and wait.until > time.time() + 20
            await _cancel(task)
            assert _waits(backend.endpoint) == [] and provider.posts == 1
            await backend.aclose()

        asyncio.run(go())


def test_rate_limit_waits_are_small_frozen_records() -> None:
    wait = RateLimitWait("m@http://x/v1", 1.0, "HTTP 429")
    with pytest.raises(AttributeError):
        wait.until = 2.0  # type: ignore[misc]
    assert rate_limit_waits() == []


# -- the spec --------------------------------------------------------------------------------------------------
def test_spec_options() -> None:
    agent = make_agent(
        "openai:m@http://127.0.0.1:9/v1,concurrency=4,timeout=5,deadline=0.5,retries=7,backoff=0.1,"
        "rpm=600,tpm=90000,circuit=5,circuit_minutes=2.5"
    )
    backend = agent.backend
    assert isinstance(backend, OpenAIBackend)
    assert backend.endpoint.limits == Limits(concurrency=4, rpm=600, tpm=90000, circuit=5, circuit_minutes=2.5)
    assert backend._http.deadline_s == 30 and backend._http.retries == 7 and backend._http.timeout_s == 5
    # a second agent on the endpoint: the largest ceiling, the tightest limits
    other = make_agent("openai:m@http://127.0.0.1:9/v1,concurrency=16,rpm=300").backend
    assert other.endpoint is backend.endpoint
    assert backend.endpoint.limits == Limits(concurrency=16, rpm=300, tpm=90000, circuit=5, circuit_minutes=2.5)
    closes: list[Awaitable[None]] = [backend.aclose(), other.aclose()]

    async def close() -> None:
        await asyncio.gather(*closes)

    asyncio.run(close())
    for bad, rule in [
        ("deadline=0", "deadline must be a number > 0"),
        ("concurrency=0", "concurrency must be a whole number >= 1"),
        ("rpm=-5", "rpm must be a number > 0"),
        ("circuit=1.5", "circuit must be a whole number >= 0"),
        ("timeout=soon", "timeout must be a number > 0"),
    ]:
        with pytest.raises(AgentSpecError, match=rule):
            make_agent(f"openai:m@http://127.0.0.1:9/v1,{bad}")
