"""OpenAI-compatible HTTP backend: a hosted API, ``vllm serve``, a llama.cpp server, or ``maker serve``.

Spec: ``openai:MODEL@http://host:port/v1[,api=chat|completions,key_env=OPENAI_API_KEY,concurrency=8,
timeout=60,retries=4]``. The key is read from the environment variable ``key_env`` names and is
never logged or recorded; a run's record keeps the spec, which holds only the variable's name.

Speculative drafting's verifier and router calls (``judge``, ``first_token_entropy``) are one ``max_tokens=1``
request each, reading the top 20 next-token log-probabilities back (``logprobs=20`` on the completions API,
``top_logprobs=20`` on the chat API), so the server must return them: vLLM does, and so does the OpenAI API
with ``api=chat`` (its completions endpoint caps logprobs at 5); against one that does not (``maker serve``,
for now) they fail with a clear, non-retryable error.

Samples that share a temperature go out as one request with ``n``. Some servers answer one choice whatever
``n`` asks; the first such answer is noticed, logged once, and from then on every sample is its own request
(seeded with its own seed), so the run goes on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import structlog

from maker.agents._base import GenerateRequest, Sample, estimate_tokens
from maker.agents._logprobs import TOP as _TOP
from maker.agents._logprobs import digit_logprobs, entropy
from maker.errors import AgentSpecError, RunError

__all__ = ["OpenAIBackend", "BackendHTTPError"]

_TRANSIENT = {408, 409, 425, 429, 500, 502, 503, 504}

log = structlog.get_logger("maker")


class BackendHTTPError(RunError):
    """The server kept failing, or refused the request for a reason retrying cannot fix."""


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api: str = "completions",
        key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        name: str | None = None,
    ) -> None:
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
        self.honours_n: bool | None = None
        """Whether the server returns ``n`` choices when asked for them (None: not asked yet)."""

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
        if len(idx) > 1 and self.honours_n is False:
            return await self._one_by_one(req, temperature, idx)
        samples = await self._ask(req, temperature, idx)
        if len(samples) != len(idx):
            # One choice where several were asked: a server that ignores n. Requests sent before that was known
            # (several may be in flight at once) fetch the rest one by one too; it is logged once.
            if len(samples) == 1 and self.honours_n is not True:
                if self.honours_n is None:
                    log.warning(
                        "the server returns one choice whatever n asks; sending one request per sample",
                        backend=self.name,
                        asked=len(idx),
                    )
                self.honours_n = False
                return samples + await self._one_by_one(req, temperature, idx[1:])
            raise BackendHTTPError(f"{self.name}: asked for {len(idx)} choices, got {len(samples)}", retryable=True)
        if len(idx) > 1 and self.honours_n is None:
            self.honours_n = True
        return samples

    async def _one_by_one(self, req: GenerateRequest, temperature: float, idx: list[int]) -> list[Sample]:
        """One request per sample, each with its own seed: for a server that ignores ``n``."""
        answers = await asyncio.gather(*(self._ask(req, temperature, [i]) for i in idx))
        for got in answers:
            if len(got) != 1:
                raise BackendHTTPError(f"{self.name}: asked for 1 choice, got {len(got)}", retryable=True)
        return [got[0] for got in answers]

    async def _ask(self, req: GenerateRequest, temperature: float, idx: list[int]) -> list[Sample]:
        """One request for the samples ``idx`` (``n = len(idx)``, seeded with the first one's seed)."""
        body: dict[str, Any] = {
            "model": self.model,
            "n": len(idx),
            "temperature": temperature,
            "max_tokens": req.max_tokens + 1,
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
            raise BackendHTTPError(
                f"{self.name}: response is not an OpenAI completion ({exc!r})", retryable=True
            ) from None
        if not samples or len(samples) > len(idx):
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
        tokens = len(logprobs) if logprobs else choice.get("completion_tokens") or estimate_tokens(text)
        return Sample(str(text), int(tokens), logprobs, choice.get("finish_reason") or "stop")

    async def judge(self, requests: Sequence[Any]) -> list[list[float]]:
        """Log-probabilities of the digits 0-9 as the next token after each SpecReason rating prompt: one
        ``max_tokens=1`` request per draft, sent together. A digit the server does not list gets a floor."""
        from maker.agents._base import judge_prompt

        tops = await asyncio.gather(*(self._top(judge_prompt(r.prompt, r.draft), r.seed) for r in requests))
        return [digit_logprobs(top) for top in tops]

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> list[float]:
        """Entropy (nats) of the first token after each prompt, over its top 20 log-probs renormalised."""
        tops = await asyncio.gather(*(self._top(r.prompt, r.seeds[0] if r.seeds else 0) for r in requests))
        return [entropy([lp for _, lp in top]) for top in tops]

    async def _top(self, prompt: str, seed: int) -> list[tuple[str, float]]:
        """The top next-token candidates after ``prompt`` and their log-probabilities (one greedy token)."""
        body: dict[str, Any] = {
            "model": self.model,
            "n": 1,
            "temperature": 0.0,
            "max_tokens": 1,
            "seed": int(seed % (2**31)),
        }
        if self.api == "chat":
            path = "/chat/completions"
            body.update(messages=[{"role": "user", "content": prompt}], logprobs=True, top_logprobs=_TOP)
        else:
            path = "/completions"
            body.update(prompt=prompt, logprobs=_TOP, echo=False)
        data = await self._post(path, body)
        try:
            top = _top_of(data["choices"][0], self.api == "chat")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BackendHTTPError(
                f"{self.name}: response has no readable top log-probabilities ({exc!r})", retryable=True
            ) from None
        if not top:
            raise BackendHTTPError(
                f"{self.name}: the server returned no top log-probabilities; rating drafts (`verify` score) and "
                f"routing by entropy (`entropy_threshold`) need a server that honours "
                f"{'top_logprobs' if self.api == 'chat' else 'logprobs'}={_TOP}",
                retryable=False,
            )
        return top

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
                    f"set the API key in ${self.key_env}",
                    retryable=False,
                )
            if resp.status_code == 404:
                raise BackendHTTPError(
                    f"{self.name}: not found (HTTP 404): is model {self.model!r} served at {self.base_url}? "
                    f"{_brief(resp.text)}",
                    retryable=False,
                )
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


def _top_of(choice: dict[str, Any], chat: bool) -> list[tuple[str, float]]:
    """The first generated token's top list: chat ``logprobs.content[0].top_logprobs`` (a list of
    ``{token, logprob}``), completions ``logprobs.top_logprobs[0]`` (a ``{token: logprob}`` map, or a list)."""
    lp = choice.get("logprobs") or {}
    if chat:
        content = lp.get("content") or []
        entries: Any = (content[0].get("top_logprobs") or []) if content else []
    else:
        tops = lp.get("top_logprobs") or []
        entries = (tops[0] or {}) if tops else {}
    if isinstance(entries, dict):
        return [(str(t), float(v)) for t, v in entries.items()]
    return [(str(e["token"]), float(e["logprob"])) for e in entries]


def _brief(text: str) -> str:
    return text.strip().replace("\n", " ")[:200]
