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
    assert greedy == {"n": 1, "temperature": 0.0, "seed": 11, "max_tokens": 751, "stop": ["\n\n"], "logprobs": 1,
                      "structured_outputs": {"regex": r"move = \[.*\]"}}
    assert rest["n"] == 3 and rest["temperature"] == 0.1 and rest["seed"] == 12


def test_outputs_map_to_samples_with_logprobs() -> None:
    lp = lambda v: SimpleNamespace(logprob=v)  # noqa: E731
    outs = [
        SimpleNamespace(text="a = 1", token_ids=[5, 6], logprobs=[{5: lp(-0.1), 9: lp(-3.0)}, {6: lp(-0.2)}],
                        finish_reason="stop"),
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
