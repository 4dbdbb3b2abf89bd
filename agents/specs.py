"""Agent spec strings: ``KIND:REST``.

* ``simulated:PRESET`` -- a MAKER Figure 6b model (``simulated:gpt-4.1-mini``);
* ``simulated:key=value,...`` -- simulated backend parameters (``simulated:p=0.99,seed=7``);
* ``simulated:PRESET,key=value`` -- a preset with overrides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from maker.agents._base import Agent
from maker.agents.prices import Price, known_price, parse_price
from maker.agents.simulated import PRESETS, SimulatedBackend, SimulatedConfig
from maker.errors import AgentSpecError, UserError

__all__ = ["parse_spec", "make_agent", "AGENT_KINDS", "spec_price", "spec_model"]


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """Split ``KIND:NAME,key=value,...`` into (kind, name or None, options)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise AgentSpecError(
            f"agent spec {spec!r} must look like KIND:MODEL, e.g. simulated:gpt-4.1-mini or simulated:p=0.99,seed=7"
        )
    kind, _, rest = spec.partition(":")
    name: str | None = None
    options: dict[str, Any] = {}
    for i, item in enumerate(p.strip() for p in rest.split(",")):
        if not item:
            continue
        if "=" in item:
            key, _, val = item.partition("=")
            key = key.strip()
            if not key.isidentifier():
                raise AgentSpecError(f"agent spec {spec!r}: bad option name {key!r}")
            options[key] = _value(val.strip())
        elif i == 0:
            name = item
        else:
            raise AgentSpecError(f"agent spec {spec!r}: {item!r} must be key=value (only the first item may be a name)")
    return kind.strip(), name, options


def _check_options(spec: str, kind: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise AgentSpecError(
            f"agent spec {spec!r}: unknown option(s) {sorted(unknown)}; {kind} takes {sorted(allowed)}"
        )


def _simulated(spec: str, name: str | None, options: dict[str, Any]) -> Agent:
    try:
        config = SimulatedConfig.from_options(name, options)
    except ValidationError as exc:
        keys = ", ".join(SimulatedConfig.model_fields)
        raise AgentSpecError(
            f"agent spec {spec!r}: {exc}\nsimulated keys: p, p_MICROSTEP, error_MICROSTEP, {keys}"
        ) from None
    except UserError as exc:
        raise AgentSpecError(f"agent spec {spec!r}: {exc}") from None
    return Agent(
        spec,
        SimulatedBackend(config, name=spec),
        info={"p": config.p, "valid": config.valid, "tpr": config.tpr, "fpr": config.fpr},
        model=name if name in PRESETS else None,
    )


_HF_OPTIONS = {"device", "threads", "max_batch", "prefix_cache", "chat"}
_HF_LOADED: dict[tuple[Any, ...], Any] = {}


def _hf(spec: str, name: str | None, options: dict[str, Any]) -> Agent:
    from maker.agents.hf import HFBackend

    if name is None:
        raise AgentSpecError(f"agent spec {spec!r}: name a model, e.g. hf:smollm2-135m or hf:/path/to/model")
    _check_options(spec, "hf", options, _HF_OPTIONS)
    # One loaded model serves every agent that names it (a drafter and a verifier may share weights).
    key = (name, *(options.get(k) for k in sorted(_HF_OPTIONS)))
    backend = _HF_LOADED.get(key)
    if backend is None:
        backend = _HF_LOADED[key] = HFBackend(
            name,
            device=options.get("device"),
            threads=options.get("threads"),
            max_batch=int(options.get("max_batch", 32)),
            prefix_cache=int(options.get("prefix_cache", 4)),
            chat=bool(options.get("chat", 0)),
        )
    return Agent(spec, backend)


_OPENAI_OPTIONS = {
    "api",
    "key_env",
    "concurrency",
    "timeout",
    "deadline",
    "retries",
    "backoff",
    "rpm",
    "tpm",
    "circuit",
    "circuit_minutes",
}
"""See :mod:`maker.agents.openai_http` (the grammar) and docs/providers.md."""


def _openai(spec: str, name: str | None, options: dict[str, Any]) -> Agent:
    from maker.agents.openai_http import OpenAIBackend

    if not name or "@" not in name:
        raise AgentSpecError(f"agent spec {spec!r}: write openai:MODEL@http://host:port/v1")
    model, _, url = name.partition("@")
    _check_options(spec, "openai", options, _OPENAI_OPTIONS)
    return Agent(spec, OpenAIBackend(model, url, name=spec, **options), model=model)


def _vllm(spec: str, name: str | None, options: dict[str, Any]) -> Agent:
    from maker.agents.vllm_backend import VLLMBackend

    if not name:
        raise AgentSpecError(f"agent spec {spec!r}: name a model, e.g. vllm:Qwen/Qwen2.5-7B-Instruct")
    _check_options(spec, "vllm", options, {"gpu_memory_utilization", "max_model_len", "dtype", "seed"})
    return Agent(spec, VLLMBackend(name, name=spec, **options))


AGENT_KINDS: dict[str, Callable[[str, str | None, dict[str, Any]], Agent]] = {
    "simulated": _simulated,
    "hf": _hf,
    "openai": _openai,
    "vllm": _vllm,
}


def make_agent(spec: str) -> Agent:
    """Build an agent from its spec string. Every kind takes ``price=IN/CACHED/OUT`` (dollars per million tokens;
    see :mod:`maker.agents.prices`) and ``p=`` (its measured per-sample correct rate, ``maker calibrate``'s p: what a
    weighted ensemble weighs its votes by; a simulated agent's p is its own)."""
    kind, name, options = parse_spec(spec)
    factory = AGENT_KINDS.get(kind)
    if factory is None:
        raise AgentSpecError(
            f"agent spec {spec!r}: unknown kind {kind!r}; available: {', '.join(sorted(AGENT_KINDS))} "
            f"(simulated presets: {', '.join(PRESETS)})"
        )
    price = None
    if "price" in options:
        try:
            price = parse_price(options.pop("price"), f"agent spec {spec!r}: price")
        except UserError as exc:
            raise AgentSpecError(str(exc)) from None
    p = None
    if kind in ("hf", "openai", "vllm") and "p" in options:  # a simulated agent's p is its own rate, read by it
        p = options.pop("p")
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise AgentSpecError(f"agent spec {spec!r}: p is the measured per-sample correct rate, in [0, 1]")
    agent = factory(spec, name, options)
    agent.price = price
    if p is not None:
        agent.info["p"] = float(p)
    return agent


def spec_model(spec: str) -> tuple[str | None, Price | None]:
    """What prices an agent built from ``spec`` read off the spec alone (no model is loaded): its model's name as
    prices know it (a simulated preset's, an OpenAI-compatible model's; None for a local model) and its own
    ``price=`` (None: not given)."""
    kind, name, options = parse_spec(spec)
    price = None
    if "price" in options:
        try:
            price = parse_price(options["price"], f"agent spec {spec!r}: price")
        except UserError as exc:
            raise AgentSpecError(str(exc)) from None
    model = None
    if kind == "simulated" and name in PRESETS:
        model = name
    elif kind == "openai" and name and "@" in name:
        model = name.partition("@")[0]
    return model, price


def spec_price(spec: str, prices: Any = None) -> Price | None:
    """The price an agent built from ``spec`` is charged at: its ``price=``, else its model's in ``prices`` (a
    user's table) or the known table; None when unknown."""
    model, price = spec_model(spec)
    return price or known_price(model, prices)
