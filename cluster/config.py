"""Where a run's model replicas go: the cluster address, and replicas and resources per model."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maker.errors import UserError

__all__ = ["ClusterOptions", "Placement", "resolve_address"]


class Placement(BaseModel):
    """How one model is served: how many replica actors, and what each one reserves."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    replicas: int = Field(default=1, ge=1, le=1024)
    """Replica actors hosting this model; the router balances requests over them."""
    cpus: float = Field(default=1.0, ge=0.0)
    """CPUs each replica reserves."""
    gpus: float = Field(default=0.0, ge=0.0)
    """GPUs each replica reserves; a fraction lets models share one GPU (0.5 + 0.5)."""
    max_inflight: int = Field(default=4, ge=1, le=1024)
    """Actor calls in flight per replica; past this, requests wait and are batched (backpressure)."""


class ClusterOptions(BaseModel):
    """``--cluster`` and friends, or a TOML file of the same keys plus ``[models."SPEC"]`` tables."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    address: str = "local"
    """``local`` (start a private Ray instance on loopback), ``auto`` (``$RAY_ADDRESS``, else the cluster
    running on this machine), ``ray://host:port``, or a head node's ``host:port``."""
    default: Placement = Placement()
    """Placement of every model not named in ``models``."""
    models: dict[str, Placement] = Field(default_factory=dict)
    """Per agent spec placement, e.g. ``{"vllm:Qwen/Qwen2.5-7B-Instruct": {"replicas": 2, "gpus": 1}}``."""
    max_batch: int = Field(256, ge=1, le=65536)
    """Requests carried by one actor call at most."""
    retries: int = Field(5, ge=0, le=100)
    """How many times a request whose replica died is sent again."""
    start_timeout: float = Field(300.0, gt=0)
    """Seconds to wait for a model's replicas to be placed and loaded before giving up."""
    lookahead: int = Field(1024, ge=0, le=1_000_000)
    """Steps a replica runs ahead of the driver in one actor call, the model calls it made reused by the
    driver when they match exactly (0: every model call goes out on its own); see ``maker.cluster.lookahead``."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of a ``local`` instance (default: all of this machine's)."""

    def placement(self, spec: str) -> Placement:
        return self.models.get(spec, self.default)

    @classmethod
    def build(
        cls,
        address: str | None = None,
        config: str | os.PathLike[str] | None = None,
        *,
        replicas: int | None = None,
        cpus: float | None = None,
        gpus: float | None = None,
        **top: Any,
    ) -> ClusterOptions:
        """Options from a config file (if any), with the command line's address, placement and options on top."""
        values: dict[str, Any] = {}
        if config is not None:
            path = Path(config)
            try:
                values = tomllib.loads(path.read_text())
            except OSError as exc:
                raise UserError(f"cluster config {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise UserError(f"cluster config {path} is not valid TOML: {exc}") from None
        if address is not None:
            values["address"] = address
        values.update(top)
        given = {k: v for k, v in {"replicas": replicas, "cpus": cpus, "gpus": gpus}.items() if v is not None}
        if given:
            values["default"] = {**values.get("default", {}), **given}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise UserError(f"bad cluster options:\n{exc}") from None


def resolve_address(address: str) -> str:
    """The address to hand ``ray.init``: ``local`` starts a private instance; ``auto`` is ``$RAY_ADDRESS``
    when set (a Ray job's driver has it), else the cluster started on this machine with ``ray start``."""
    if address == "auto":
        return os.environ.get("RAY_ADDRESS") or "auto"
    return address
