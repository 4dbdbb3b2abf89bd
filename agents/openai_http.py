"""OpenAI-compatible HTTP backend: a hosted API, ``vllm serve``, a llama.cpp server, or ``maker serve``.

Spec: ``openai:MODEL@http://host:port/v1[,api=chat|completions,key_env=OPENAI_API_KEY,concurrency=8,
timeout=60,retries=4]``. The key is read from the environment variable ``key_env`` names and is
never logged or recorded; a run's record keeps the spec, which holds only the variable's name.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from maker.agents._base import GenerateRequest, Sample
from maker.errors import AgentSpecError, RunError

__all__ = ["OpenAIBackend", "BackendHTTPError"]

_TRANSIENT = {408, 409, 425, 429, 500, 502, 503, 504}


class BackendHTTPError(RunError):
    """The server kept failing, or refused the request for a reason retrying cannot fix."""


class OpenAIBackend:
    def __init__(self, model: str, base_url: str, *, api: str = "completions", key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 60.0, retries: int = 4, backoff: float = 0.5,
                 name: str | None = None) -> None:
        try:
            import httpx
        except ImportError:
            raise AgentSpecError("the openai backend needs httpx: pip install httpx") from None
        if api not in ("chat", "completions"):
            raise AgentSpecError(f"openai backend: api must be 'chat' or 'completions', got {api!r}")
        if not base_url.startswith(("http://", "https://")):
            raise AgentSpecError(f"openai backend: base URL must start with http:// or https://, got {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api = api
        self.key_env = key_env
        self.retries = retries
        self.backoff = backoff
        self.name = name or f"openai:{model}@{self.base_url}"
        key = os.environ.get(key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)
        self._sem = asyncio.Semaphore(concurrency)
        self._httpx = httpx

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, req: GenerateRequest) -> list[Sample]:
        # Samples that share a temperature go in one call with n; the first seed of the group seeds it.
        groups = req.by_temperature()
        out: list[Sample | None] = [None] * req.n
        results = await asyncio.gather(*(self._call(req, t, idx) for t, idx in groups.items()))
        for idx, samples in zip(groups.values(), results, strict=True):
            for i, s in zip(idx, samples, strict=True):
                out[i] = s
        return [s for s in out if s is not None]

    async def _call(self, req: GenerateRequest, temperature: float, idx: list[int]) -> list[Sample]:
        body: dict[str, Any] = {
            "model": self.model, "n": len(idx), "temperature": temperature, "max_tokens": req.max_tokens + 1,
            "seed": int(req.seeds[idx[0]] % (2**31)),
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if self.api == "chat":
            path = "/chat/completions"
            body["messages"] = [{"role": "user", "content": req.prompt}]
            if req.logprobs:
                body["logprobs"] = True
        else:
            path = "/completions"
            body["prompt"] = req.prompt
            if req.logprobs:
                body["logprobs"] = 1
        data = await self._post(path, body)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            samples = [self._sample(c, data) for c in choices]
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendHTTPError(f"{self.name}: response is not an OpenAI completion ({exc!r})", retryable=True) from None
        if len(samples) != len(idx):
            raise BackendHTTPError(f"{self.name}: asked for {len(idx)} choices, got {len(samples)}", retryable=True)
        return samples

    def _sample(self, choice: dict[str, Any], data: dict[str, Any]) -> Sample:
        if self.api == "chat":
            text = choice["message"]["content"] or ""
            lp = choice.get("logprobs") or {}
            logprobs = [t["logprob"] for t in lp.get("content") or []] or None
        else:
            text = choice["text"]
            lp = choice.get("logprobs") or {}
            logprobs = list(lp.get("token_logprobs") or []) or None
        tokens = len(logprobs) if logprobs else choice.get("completion_tokens") or _estimate_tokens(text)
        return Sample(str(text), int(tokens), logprobs, choice.get("finish_reason") or "stop")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        httpx = self._httpx
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with self._sem:
                    resp = await self._client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}"
                continue
            if resp.status_code in (401, 403):
                raise BackendHTTPError(
                    f"{self.name}: the server refused the credentials (HTTP {resp.status_code}); "
                    f"set the API key in ${self.key_env}", retryable=False)
            if resp.status_code == 404:
                raise BackendHTTPError(
                    f"{self.name}: not found (HTTP 404): is model {self.model!r} served at {self.base_url}? "
                    f"{_brief(resp.text)}", retryable=False)
            if resp.status_code in _TRANSIENT:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise BackendHTTPError(f"{self.name}: HTTP {resp.status_code}: {_brief(resp.text)}", retryable=False)
            try:
                data = resp.json()
            except ValueError:
                last = "a response that is not JSON"
                continue
            if not isinstance(data, dict) or "choices" not in data:
                last = "JSON without choices"
                continue
            return data
        raise BackendHTTPError(f"{self.name}: gave up after {self.retries + 1} tries (last: {last})", retryable=True)


def _brief(text: str) -> str:
    return text.strip().replace("\n", " ")[:200]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)
