"""``maker serve``: expose a backend through the OpenAI-compatible HTTP API (completions and chat).

Listens on 127.0.0.1 unless told otherwise. With ``--api-key-env VAR`` set, requests must carry
``Authorization: Bearer $VAR``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from maker.agents import Agent, GenerateRequest

__all__ = ["make_server", "serve_in_thread"]


def _prompt_from_messages(agent: Agent, messages: list[dict[str, Any]]) -> str:
    tok = getattr(agent.backend, "tokenizer", None)
    if tok is not None and getattr(tok, "chat_template", None):
        return str(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return "\n".join(str(m.get("content", "")) for m in messages) + "\n"


class _BadRequest(ValueError):
    """A request this server cannot answer (HTTP 400), with what is wrong in it."""


def _request(agent: Agent, route: str, body: dict[str, Any]) -> tuple[GenerateRequest, int]:
    """The generate request a completions or chat body asks for, and the client's hard cap on tokens."""
    try:
        n = int(body.get("n", 1))
        temperature = float(body.get("temperature", 1.0))
        max_tokens = int(body.get("max_tokens", 16))
        seed = int(body.get("seed", 0))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        if route == "/chat/completions":
            prompt = _prompt_from_messages(agent, list(body["messages"]))
        else:
            prompt = str(body["prompt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _BadRequest(f"bad request: {exc!r}") from None
    if not 1 <= n <= 64 or max_tokens < 1:
        raise _BadRequest("n must be 1..64 and max_tokens >= 1")
    # A GenerateRequest's max_tokens is a red-flag limit that backends may exceed by one token
    # (to show the response was too long); an API client's max_tokens is a hard cap.
    req = GenerateRequest(
        prompt,
        [temperature] * n,
        [seed + i for i in range(n)],
        max_tokens - 1,
        stop,
        bool(body.get("logprobs")),
    )
    return req, max_tokens


def _choice(route: str, index: int, sample: Any, max_tokens: int) -> dict[str, Any]:
    """One sample as a choice of a chat or a text completion."""
    finish = "length" if sample.tokens >= max_tokens else sample.finish_reason
    choice: dict[str, Any]
    if route == "/chat/completions":
        choice = {"index": index, "message": {"role": "assistant", "content": sample.text}, "finish_reason": finish}
        if sample.logprobs is not None:
            choice["logprobs"] = {"content": [{"token": "", "logprob": lp} for lp in sample.logprobs]}
    else:
        choice = {
            "index": index,
            "text": sample.text,
            "finish_reason": finish,
            "logprobs": {"token_logprobs": sample.logprobs} if sample.logprobs is not None else None,
        }
    choice["completion_tokens"] = sample.tokens
    return choice


def make_server(
    agent: Agent, model_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None
) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet; never echo headers
            return

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str) -> None:
            self._send(code, {"error": {"message": message, "type": kind, "code": code}})

        def _authorized(self) -> bool:
            if api_key is None:
                return True
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return True
            self._error(401, "invalid or missing API key", "authentication_error")
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(
                    200, {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "maker"}]}
                )
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self) -> None:
            if not self._authorized():
                return
            route = self.path.rstrip("/").removeprefix("/v1")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            except ValueError:
                self._error(400, "body is not JSON", "invalid_request_error")
                return
            if route not in ("/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}", "not_found")
                return
            if body.get("model") != model_name:
                self._error(404, f"model {body.get('model')!r} not found; this server has {model_name!r}", "not_found")
                return
            try:
                req, max_tokens = _request(agent, route, body)
            except _BadRequest as exc:
                self._error(400, str(exc), "invalid_request_error")
                return
            with lock:
                (samples,) = asyncio.run(agent.backend.generate([req]))
            choices = [_choice(route, i, smp, max_tokens) for i, smp in enumerate(samples)]
            self._send(
                200,
                {
                    "id": f"cmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion" if "chat" in route else "text_completion",
                    "created": int(time.time()),
                    "model": model_name,
                    "choices": choices,
                    "usage": {"completion_tokens": sum(s.tokens for s in samples)},
                },
            )

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(
    agent: Agent, model_name: str, host: str = "127.0.0.1", port: int = 0, api_key_env: str | None = None
) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a background thread; returns it and its base URL (``.../v1``)."""
    key = os.environ.get(api_key_env) if api_key_env else None
    server = make_server(agent, model_name, host, port, key)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    h, p = cast(tuple[str, int], server.server_address[:2])  # a TCP server's; typeshed allows any socket family's
    return server, f"http://{h}:{p}/v1"
