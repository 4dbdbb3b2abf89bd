"""vLLM in-process on a GPU: ``vllm:MODEL[,gpu_memory_utilization=0.45,max_model_len=4096,dtype=auto]``.

Two models share one GPU by giving each a memory fraction (``gpu_memory_utilization``), e.g.
a drafter at 0.25 and a verifier at 0.6. Prefix caching is on, so the samples of one step
(and a verifier's prefill of a drafted step) reuse the prompt's KV cache. When a microstep
gives a ``pattern`` (a regex of a valid response), it travels on each request and is passed to
vLLM's structured outputs. Rating drafts (``judge``) and entropy routing (``first_token_entropy``)
generate one token with its top 20 log-probabilities.

vLLM is an optional extra: it needs a CUDA GPU and is not installed on CPU machines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from maker.agents._base import GenerateRequest, Sample
from maker.agents._logprobs import TOP, digit_logprobs, entropy
from maker.errors import AgentSpecError

__all__ = ["VLLMBackend", "sampling_groups", "to_samples", "first_top", "probe_params"]


def sampling_groups(req: GenerateRequest, pattern: str | None = None) -> list[tuple[list[int], dict[str, Any]]]:
    """Split a request's samples into SamplingParams keyword sets: one per temperature, seeded by its first sample.

    Returns ``(sample indices, SamplingParams kwargs)`` pairs. ``pattern`` defaults to the request's.
    """
    if pattern is None:
        pattern = req.pattern
    out = []
    for temperature, idx in req.by_temperature().items():
        kw: dict[str, Any] = {
            "n": len(idx),
            "temperature": temperature,
            "seed": int(req.seeds[idx[0]] % (2**63)),
            "max_tokens": req.max_tokens + 1,  # one past the red-flag limit shows a response ran on
        }
        if req.stop:
            kw["stop"] = list(req.stop)
        if req.logprobs:
            kw["logprobs"] = 1
        if pattern:
            kw["structured_outputs"] = {"regex": pattern}
        out.append((idx, kw))
    return out


def to_samples(completions: Sequence[Any]) -> list[Sample]:
    """vLLM CompletionOutput objects (``.text``, ``.token_ids``, ``.logprobs``, ``.finish_reason``) to Samples."""
    samples = []
    for c in completions:
        lps = None
        if getattr(c, "logprobs", None):
            lps = [float(step[tid].logprob) for step, tid in zip(c.logprobs, c.token_ids, strict=False)]
        samples.append(Sample(c.text, len(c.token_ids), lps, c.finish_reason or "stop"))
    return samples


def probe_params(seed: int) -> dict[str, Any]:
    """SamplingParams kwargs of a one-token probe that reads the top next-token log-probabilities."""
    return {"n": 1, "temperature": 0.0, "seed": int(seed % (2**63)), "max_tokens": 1, "logprobs": TOP}


def first_top(completion: Any) -> list[tuple[str, float]]:
    """The first generated position's top list from a vLLM CompletionOutput: ``.logprobs[0]`` maps token ids to
    ``Logprob`` objects (``.logprob``, ``.decoded_token``)."""
    steps = getattr(completion, "logprobs", None) or []
    if not steps:
        return []
    return [
        (str(lp.decoded_token if lp.decoded_token is not None else tid), float(lp.logprob))
        for tid, lp in steps[0].items()
    ]


class VLLMBackend:
    token_logprobs = True
    """Samples carry each generated token's log-probability when asked."""

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        gpu_memory_utilization: float = 0.45,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise AgentSpecError(
                "vllm:MODEL needs vLLM and a CUDA GPU: pip install 'maker[vllm]' on a GPU machine. "
                "On a CPU use hf:MODEL, or point openai:MODEL@URL at a `vllm serve` elsewhere."
            ) from None
        self._vllm = vllm
        self.name = name or f"vllm:{model}"
        kwargs: dict[str, Any] = {
            "model": model,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": True,
            "dtype": dtype,
            "seed": seed,
        }
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)
        self._lock = asyncio.Lock()

    def _params(self, kw: dict[str, Any]) -> Any:
        kw = dict(kw)
        so = kw.pop("structured_outputs", None)
        if so is not None:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(**so)
        return self._vllm.SamplingParams(**kw)

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        prompts: list[str] = []
        params: list[Any] = []
        where: list[tuple[int, list[int]]] = []
        for ri, req in enumerate(requests):
            for idx, kw in sampling_groups(req, req.pattern):
                prompts.append(req.prompt)
                params.append(self._params(kw))
                where.append((ri, idx))
        async with self._lock:  # one batched call: vLLM schedules all of them together
            outputs = await asyncio.to_thread(self.llm.generate, prompts, params, use_tqdm=False)
        result: list[list[Sample | None]] = [[None] * r.n for r in requests]
        for (ri, idx), out in zip(where, outputs, strict=True):
            for i, s in zip(idx, to_samples(out.outputs), strict=True):
                result[ri][i] = s
        return [[s for s in row if s is not None] for row in result]

    async def _tops(self, prompts: list[str], seeds: list[int]) -> list[list[tuple[str, float]]]:
        params = [self._params(probe_params(seed)) for seed in seeds]
        async with self._lock:
            outputs = await asyncio.to_thread(self.llm.generate, prompts, params, use_tqdm=False)
        return [first_top(out.outputs[0]) for out in outputs]

    async def judge(self, requests: Sequence[Any]) -> list[list[float]]:
        """Log-probabilities of the digits 0-9 after each SpecReason rating prompt (one batched call)."""
        from maker.agents._base import judge_prompt

        tops = await self._tops([judge_prompt(r.prompt, r.draft) for r in requests], [r.seed for r in requests])
        return [digit_logprobs(top) for top in tops]

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> list[float]:
        """Entropy (nats) of each prompt's first token over its top 20 log-probabilities."""
        tops = await self._tops([r.prompt for r in requests], [r.seeds[0] if r.seeds else 0 for r in requests])
        return [entropy([lp for _, lp in top]) for top in tops]

    async def aclose(self) -> None:
        return None
