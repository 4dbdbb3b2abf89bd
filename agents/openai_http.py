"""OpenAI-compatible HTTP backend: a hosted API, ``vllm serve``, a llama.cpp server, or ``maker serve``.

Spec::

    openai:MODEL@http://host:port/v1[,api=chat|completions][,key_env=OPENAI_API_KEY][,concurrency=8]
        [,timeout=60][,deadline=30][,retries=N][,backoff=0.5][,rpm=N][,tpm=N][,circuit=20][,circuit_minutes=5]

* ``api`` -- ``completions`` (default) or ``chat``.
* ``key_env`` -- the environment variable holding the API key. The key is read from it, sent as a bearer token,
  and never logged or recorded; a run's record keeps the spec, which holds only the variable's name.
* ``concurrency`` -- requests in flight at most (default 8): where the adaptive limit starts and its ceiling. It
  halves on 429s and climbs back with successes.
* ``timeout`` -- seconds one attempt may take (default 60).
* ``deadline`` -- minutes a request may keep retrying (default 30; fractions allowed). Past it, or when the server
  asks for a longer wait, the run stops with a resumable error.
* ``retries`` -- retries at most, whatever the deadline (default: no cap).
* ``backoff`` -- seconds of the first backoff after a failure the server gave no wait for (default 0.5); it
  doubles each time, jittered, up to 60 s.
* ``rpm``, ``tpm`` -- requests and tokens in any 60 seconds at most, kept on this side so a known quota is never
  exceeded (default: none). A request counts ``ceil(prompt chars / 4) + max_tokens * n`` tokens.
* ``circuit``, ``circuit_minutes`` -- this many transient failures in a row with no success for this many minutes
  (defaults 20 and 5) open the circuit: requests fail at once, resumably (``circuit=0``: never).

Every agent in the process that names the same model at the same base URL shares one endpoint: one pause when
the server says to wait, one adaptive concurrency, one pair of ``rpm``/``tpm`` windows, one circuit (see
:mod:`maker.agents._http` and docs/providers.md).

Speculative drafting's verifier and router calls (``judge``, ``first_token_entropy``) are one ``max_tokens=1``
request each, reading the top 20 next-token log-probabilities back (``logprobs=20`` on the completions API,
``top_logprobs=20`` on the chat API), so the server must return them: vLLM does, and so does the OpenAI API
with ``api=chat`` (its completions endpoint caps logprobs at 5); against one that does not (``maker serve``,
for now) they fail with a clear, non-retryable error.

Samples that share a temperature go out as one request with ``n``. Some servers answer one choice whatever
``n`` asks; the first such answer is noticed, logged once, and from then on every sample is its own request
(seeded with its own seed), so the run goes on. What a request was billed (its ``usage``) rides on its first
sample.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import zlib
from collections.abc import Sequence
from typing import Any

import structlog

from maker.agents._base import GenerateRequest, Sample, Usage, estimate_tokens
from maker.agents._http import BackendHTTPError, Limits, RetryingClient, endpoint
from maker.agents._logprobs import TOP as _TOP
from maker.agents._logprobs import digit_logprobs, entropy
from maker.errors import AgentSpecError

__all__ = ["OpenAIBackend", "BackendHTTPError"]

log = structlog.get_logger("maker")


class OpenAIBackend:
    """A model behind an OpenAI-compatible API (the spec's options are the keywords; see the module's docstring).
    ``jitter_seed`` seeds the backoff's jitter, which spreads retries in time and never changes what a run decides."""

    token_logprobs = True
    """Asks for token log-probabilities when a request wants them; a server that ignores the ask returns none,
    and a ``--verify logprob`` run escalates such a draft."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api: str = "completions",
        key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        deadline: float = 30.0,
        retries: int | None = None,
        backoff: float = 0.5,
        rpm: float | None = None,
        tpm: float | None = None,
        circuit: int = 20,
        circuit_minutes: float = 5.0,
        jitter_seed: int = 0,
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
        _check_numbers(
            concurrency=(concurrency, "int>=1"),
            timeout=(timeout, ">0"),
            deadline=(deadline, ">0"),
            retries=(retries, "int>=0"),
            backoff=(backoff, ">=0"),
            rpm=(rpm, ">0"),
            tpm=(tpm, ">0"),
            circuit=(circuit, "int>=0"),
            circuit_minutes=(circuit_minutes, ">=0"),
        )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api = api
        self.key_env = key_env
        self.name = name or f"openai:{model}@{self.base_url}"
        key = os.environ.get(key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # The endpoint bounds what is in flight; the pool must not queue behind it (a pool wait reads as a timeout).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(int(concurrency), 20))
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, limits=limits)
        self.endpoint = endpoint(
            self.base_url,
            model,
            Limits(
                concurrency=int(concurrency),
                rpm=rpm,
                tpm=tpm,
                circuit=int(circuit),
                circuit_minutes=circuit_minutes,
            ),
        )
        """The endpoint's shared state (pause, adaptive concurrency, limits, circuit): see :mod:`maker.agents._http`."""
        self._http = RetryingClient(
            self._client,
            self.endpoint,
            name=self.name,
            deadline_s=deadline * 60,
            timeout_s=timeout,
            retries=None if retries is None else int(retries),
            backoff_s=backoff,
            rng=random.Random(zlib.crc32(f"{jitter_seed}\0{self.name}".encode())),
            refusal=self._refusal,
        )
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
        cost = estimate_tokens(req.prompt) + body["max_tokens"] * len(idx)
        data = await self._post(path, body, cost)
        usage = _usage(data)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            reported = _completion_tokens(data) if len(choices) == 1 else None
            samples = [self._sample(c, reported) for c in choices]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackendHTTPError(
                f"{self.name}: response is not an OpenAI completion ({exc!r})", retryable=True
            ) from None
        if not samples or len(samples) > len(idx):
            raise BackendHTTPError(f"{self.name}: asked for {len(idx)} choices, got {len(samples)}", retryable=True)
        samples[0].usage = usage  # the request's bill, once: its prompt, and every choice's completion
        return samples

    def _sample(self, choice: dict[str, Any], reported: int | None) -> Sample:
        """One choice as a sample; its tokens are its log-probs' count, else the count the server gave it (its own
        ``completion_tokens``, or the request's ``usage`` when it is the only choice), else an estimate."""
        if self.api == "chat":
            text = choice["message"]["content"] or ""
            lp = choice.get("logprobs") or {}
            logprobs = [t["logprob"] for t in lp.get("content") or []] or None
        else:
            text = choice["text"]
            lp = choice.get("logprobs") or {}
            logprobs = list(lp.get("token_logprobs") or []) or None
        tokens = len(logprobs) if logprobs else choice.get("completion_tokens") or reported or estimate_tokens(text)
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
        data = await self._post(path, body, estimate_tokens(prompt) + 1)
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

    async def _post(self, path: str, body: dict[str, Any], cost: int) -> dict[str, Any]:
        """The server's answer to ``body``: retried through the endpoint (see :mod:`maker.agents._http`) until it is
        JSON with choices, or the request's deadline or the endpoint's circuit stops it."""
        data: dict[str, Any] = await self._http.post(path, body, cost=cost, check=_no_choices, used=_used)
        return data

    def _refusal(self, status: int, text: str) -> str:
        """What a 4xx that retrying cannot fix means here."""
        if status in (401, 403):
            return (
                f"{self.name}: the server refused the credentials (HTTP {status}); set the API key in ${self.key_env}"
            )
        if status == 404:
            return (
                f"{self.name}: not found (HTTP 404): is model {self.model!r} served at {self.base_url}? {_brief(text)}"
            )
        return f"{self.name}: HTTP {status}: {_brief(text)}"


def _no_choices(data: Any) -> str | None:
    return None if isinstance(data, dict) and isinstance(data.get("choices"), list) else "JSON without choices"


def _usage(data: dict[str, Any]) -> Usage | None:
    """The request's bill as the server reported it (``usage``), or None when it reported no prompt and
    completion counts."""
    u = data.get("usage")
    if not isinstance(u, dict):
        return None
    prompt, completion = u.get("prompt_tokens"), u.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt=prompt, completion=completion, cached=cached if isinstance(cached, int) else 0)


def _completion_tokens(data: dict[str, Any]) -> int | None:
    u = data.get("usage")
    n = u.get("completion_tokens") if isinstance(u, dict) else None
    return n if isinstance(n, int) and n > 0 else None


def _used(data: Any) -> int | None:
    """Tokens the server reported for the request, prompt and completion (None: it reported none)."""
    u = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(u, dict):
        return None
    total, prompt, completion = u.get("total_tokens"), u.get("prompt_tokens"), u.get("completion_tokens")
    if isinstance(total, int):
        return total
    return prompt + completion if isinstance(prompt, int) and isinstance(completion, int) else None


def _check_numbers(**values: tuple[Any, str]) -> None:
    """Each number given (not None) keeps its rule: ``>0``, ``>=0``, or ``int>=N`` (a whole number)."""
    for key, (value, rule) in values.items():
        if value is None:
            continue
        whole = rule.startswith("int")
        bound = float(rule.lstrip("int>="))
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (float(value).is_integer() if whole else True) and (value > bound if rule == ">0" else value >= bound)
        if not ok:
            want = {">0": "a number > 0", ">=0": "a number >= 0"}.get(rule, f"a whole number >= {bound:g}")
            raise AgentSpecError(f"openai backend: {key} must be {want}, got {value!r}")


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
