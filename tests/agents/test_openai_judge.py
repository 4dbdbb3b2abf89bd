"""Score verification (``judge``) and entropy routing (``first_token_entropy``) through the OpenAI-compatible backend,
against a real loopback server that answers every request with a scripted top-log-probability list."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from maker.agents import GenerateRequest, JudgeRequest, digit_score, judge_prompt
from maker.agents.openai_http import BackendHTTPError, OpenAIBackend
from tests.fixtures.loopback import LoopbackServer, QuietHandler, call, send_json

# A rating model's next-token candidates: " 7" and "7" are the same answer; 0, 1, 4 and 5 are not listed.
TOP = {"7": -1.0, " 7": -1.5, "8": -0.9, "9": -2.5, "6": -3.0, "2": -4.0, "3": -4.5, "Rating": -6.0, " ": -7.0}


class TopServer(LoopbackServer):
    """Answers every completion with one token and ``top`` as its top log-probabilities, in the format of the
    route asked (``logprobs.top_logprobs`` or ``logprobs.content[0].top_logprobs``), after ``delay_s``.
    ``fail`` is a list of HTTP statuses to answer the first requests with; ``bare`` leaves log-probs out."""

    def __init__(
        self, top: dict[str, float], *, delay_s: float = 0.0, fail: Sequence[int] = (), bare: bool = False
    ) -> None:
        self.top = top
        self.delay_s = delay_s
        self.fail = list(fail)
        self.bare = bare
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        lock = threading.Lock()
        outer = self

        class H(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.bodies.append(body)
                    outer.paths.append(self.path)
                    status = outer.fail.pop(0) if outer.fail else 200
                    outer.in_flight += 1
                    outer.peak_in_flight = max(outer.peak_in_flight, outer.in_flight)
                try:
                    time.sleep(outer.delay_s)
                    if status != 200:
                        send_json(self, status, {"error": {"message": "try again"}})
                    else:
                        send_json(self, 200, {"choices": [outer.choice(self.path.endswith("/chat/completions"))]})
                finally:
                    with lock:
                        outer.in_flight -= 1

        self._serve(H, "top-server")

    def choice(self, chat: bool) -> dict[str, Any]:
        best, lp = max(self.top.items(), key=lambda kv: kv[1])
        if chat:
            logprobs = (
                None
                if self.bare
                else {
                    "content": [
                        {
                            "token": best,
                            "logprob": lp,
                            "top_logprobs": [
                                {"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in self.top.items()
                            ],
                        }
                    ]
                }
            )
            return {
                "index": 0,
                "message": {"role": "assistant", "content": best},
                "logprobs": logprobs,
                "finish_reason": "length",
            }
        logprobs = {"tokens": [best], "token_logprobs": [lp], "top_logprobs": None if self.bare else [self.top]}
        return {"index": 0, "text": best, "logprobs": logprobs, "finish_reason": "length"}


def _expected_digits(top: dict[str, float]) -> list[float]:
    floor = min(top.values()) - 5.0
    seven = math.log(math.exp(top["7"]) + math.exp(top[" 7"]))
    return [seven if d == 7 else top.get(str(d), floor) for d in range(10)]


def _entropy(lps: Sequence[float]) -> float:
    z = sum(math.exp(v) for v in lps)
    return -sum(math.exp(v) / z * math.log(math.exp(v) / z) for v in lps)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_judge_reads_the_ten_digits_from_the_top_list(api: str) -> None:
    reqs = [JudgeRequest("Step: 2 + 2?\n", "answer = 4", seed=2**40 + 5), JudgeRequest("Step: 3 + 3?\n", "x", 9)]
    with TopServer(TOP) as srv:
        out = call(OpenAIBackend("v", srv.url, api=api, timeout=5), "judge", reqs)
    assert len(out) == 2 and all(len(row) == 10 for row in out)
    for row in out:
        assert row == pytest.approx(_expected_digits(TOP))
    assert digit_score(out[0], "greedy") == 7.0  # "7" and " 7" together outweigh "8"
    assert len(srv.bodies) == 2, "one request per draft"
    prompts = {judge_prompt(r.prompt, r.draft) for r in reqs}
    for body, path in zip(srv.bodies, srv.paths, strict=True):
        assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["model"] == "v"
        if api == "chat":
            assert path == "/v1/chat/completions"
            assert body["logprobs"] is True and body["top_logprobs"] == 20
            assert [m["role"] for m in body["messages"]] == ["user"] and body["messages"][0]["content"] in prompts
        else:
            assert path == "/v1/completions"
            assert body["logprobs"] == 20 and body["echo"] is False and body["prompt"] in prompts
    assert sorted(b["seed"] for b in srv.bodies) == sorted(r.seed % 2**31 for r in reqs)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_first_token_entropy_over_the_top_list(api: str) -> None:
    confident = {"move": -0.01, **{f"t{i}": -7.0 - i for i in range(19)}}
    with TopServer(TOP) as flat, TopServer(confident) as sure:
        reqs = [GenerateRequest("Previous move: None\n", [0.0], [3], 64)]
        (h_flat,) = call(OpenAIBackend("d", flat.url, api=api, timeout=5), "first_token_entropy", reqs)
        (h_sure,) = call(OpenAIBackend("d", sure.url, api=api, timeout=5), "first_token_entropy", reqs)
    assert h_flat == pytest.approx(_entropy(list(TOP.values())))
    assert h_sure == pytest.approx(_entropy(list(confident.values()))) and h_sure < 0.05 < 1.0 < h_flat
    body = sure.bodies[0]
    assert body["max_tokens"] == 1 and body["seed"] == 3
    assert (body["messages"][0]["content"] if api == "chat" else body["prompt"]) == "Previous move: None\n"


def test_no_digit_listed_gives_every_digit_the_floor() -> None:
    with TopServer({"The": -0.2, "I": -2.0}) as srv:
        (row,) = call(OpenAIBackend("v", srv.url, timeout=5), "judge", [JudgeRequest("p", "d", 1)])
    assert row == [-7.0] * 10
    assert digit_score(row) == pytest.approx(4.5)  # uniform: below any sensible threshold, the draft is rejected


def test_requests_go_out_together_under_the_concurrency_limit() -> None:
    reqs = [JudgeRequest(f"step {i}\n", "d", i) for i in range(6)]
    with TopServer(TOP, delay_s=0.3) as srv:
        out = call(OpenAIBackend("v", srv.url, concurrency=3, timeout=5), "judge", reqs)
    assert len(out) == 6 and len(srv.bodies) == 6
    assert srv.peak_in_flight == 3, "sent concurrently, never more than concurrency= at once"
    assert sorted(b["prompt"] for b in srv.bodies) == sorted(judge_prompt(r.prompt, r.draft) for r in reqs)


def test_transient_failures_are_retried() -> None:
    with TopServer(TOP, fail=[503, 429]) as srv:
        backend = OpenAIBackend("v", srv.url, timeout=5, retries=3, backoff=0.01)
        (row,) = call(backend, "judge", [JudgeRequest("p", "d", 1)])
    assert row == pytest.approx(_expected_digits(TOP)) and len(srv.bodies) == 3


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_server_without_top_logprobs_is_a_clear_error(api: str) -> None:
    with TopServer(TOP, bare=True) as srv:
        with pytest.raises(BackendHTTPError, match="no top log-probabilities") as info:
            call(
                OpenAIBackend("v", srv.url, api=api, timeout=5),
                "first_token_entropy",
                [GenerateRequest("p", [0.0], [1], 8)],
            )
    assert not info.value.retryable and len(srv.bodies) == 1
