"""The vLLM backend's request/response mapping (vLLM itself needs a GPU and is not installed here)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from maker.agents import GenerateRequest, make_agent
from maker.agents.vllm_backend import sampling_groups, to_samples
from maker.errors import AgentSpecError


def test_one_sampling_params_per_temperature_seeded_by_its_first_sample() -> None:
    req = GenerateRequest("p", [0.0, 0.1, 0.1, 0.1], [11, 12, 13, 14], max_tokens=750, stop=["\n\n"], logprobs=True)
    groups = sampling_groups(req, pattern=r"move = \[.*\]")
    assert [idx for idx, _ in groups] == [[0], [1, 2, 3]]
    greedy, rest = (kw for _, kw in groups)
    assert greedy == {
        "n": 1,
        "temperature": 0.0,
        "seed": 11,
        "max_tokens": 751,
        "stop": ["\n\n"],
        "logprobs": 1,
        "structured_outputs": {"regex": r"move = \[.*\]"},
    }
    assert rest["n"] == 3 and rest["temperature"] == 0.1 and rest["seed"] == 12


def test_outputs_map_to_samples_with_logprobs() -> None:
    lp = lambda v: SimpleNamespace(logprob=v)  # noqa: E731
    outs = [
        SimpleNamespace(
            text="a = 1", token_ids=[5, 6], logprobs=[{5: lp(-0.1), 9: lp(-3.0)}, {6: lp(-0.2)}], finish_reason="stop"
        ),
        SimpleNamespace(text="a = 2 and more", token_ids=[5, 7, 8], logprobs=None, finish_reason="length"),
    ]
    first, second = to_samples(outs)
    assert (first.text, first.tokens, first.logprobs, first.finish_reason) == ("a = 1", 2, [-0.1, -0.2], "stop")
    assert (second.tokens, second.logprobs, second.finish_reason) == (3, None, "length")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_is_a_clear_error() -> None:
    with pytest.raises(AgentSpecError, match="needs vLLM and a CUDA GPU"):
        make_agent("vllm:Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(AgentSpecError, match="unknown option"):
        make_agent("vllm:some-model,tensor_parallel=2")


def test_the_microsteps_pattern_travels_on_the_request_without_ground_truth() -> None:
    """Structured outputs need the pattern on every request, also in a real run (no oracle)."""
    import asyncio

    from pydantic import BaseModel

    from maker.agents import Agent, Roster, Sample
    from maker.dsl import Microstep, MicrostepCall
    from maker.engine import Decider
    from maker.voting import Voting

    class Count(BaseModel):
        n: int

    seen: list[GenerateRequest] = []

    class Recorder:
        name = "recorder"

        async def generate(self, requests):  # type: ignore[no-untyped-def]
            seen.extend(requests)
            return [[Sample("n = 3", 3) for _ in r.seeds] for r in requests]

        async def aclose(self) -> None:
            return None

    ms = Microstep("count", schema=Count, prompt="Count: {x}", pattern=r"n = [0-9]+")
    decider = Decider(
        roster=Roster.of([Agent("rec", Recorder())]),
        speculation=None,
        seed=1,  # type: ignore[arg-type]
        policies={"count": Voting(k=2)},
        max_tokens=None,
    )
    d = asyncio.run(decider.decide(0, MicrostepCall(ms, {"x": 1}), None, None))
    assert d.answer.n == 3
    assert seen and all(r.oracle is None and r.pattern == r"n = [0-9]+" for r in seen)


def test_probes_read_digits_and_entropy_from_the_first_positions_top_list() -> None:
    from maker.agents._logprobs import TOP, digit_logprobs, entropy
    from maker.agents.vllm_backend import first_top, probe_params

    assert probe_params(2**70 + 5) == {
        "n": 1,
        "temperature": 0.0,
        "seed": (2**70 + 5) % 2**63,
        "max_tokens": 1,
        "logprobs": TOP,
    }
    lp = lambda tok, v: SimpleNamespace(logprob=v, decoded_token=tok)  # noqa: E731
    out = SimpleNamespace(
        text="8",
        token_ids=[17],
        finish_reason="length",
        logprobs=[{17: lp("8", -0.2), 18: lp(" 8", -2.0), 19: lp("7", -1.9), 20: lp("x", -4.0)}],
    )
    top = first_top(out)
    assert top == [("8", -0.2), (" 8", -2.0), ("7", -1.9), ("x", -4.0)]
    digits = digit_logprobs(top)
    assert digits[8] > digits[7] > digits[0] and digits[0] == -4.0 - 5.0
    assert entropy([v for _, v in top]) > 0 and first_top(SimpleNamespace(logprobs=None)) == []
