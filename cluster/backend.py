"""Connecting to Ray, starting the replicas of each model, and the Ray-backed backend the engine uses.

``Cluster(options).agent(spec)`` returns an :class:`~maker.agents.Agent` whose backend has
the same methods as an in-process one (``generate``, and ``judge`` and
``first_token_entropy`` where the model has them); the engine cannot tell the difference.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from maker.agents import Agent, GenerateRequest, Roster, Sample, parse_spec
from maker.agents.specs import spec_model
from maker.cluster.config import ClusterOptions, resolve_address
from maker.cluster.lookahead import Lookahead
from maker.cluster.replica import MicrostepRef, Replica
from maker.cluster.router import Router
from maker.engine import Recipe
from maker.errors import UserError

__all__ = ["Cluster", "RayBackend", "attach"]

log = structlog.get_logger("maker.cluster")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("running on a cluster needs Ray: pip install 'maker[ray]'") from None
    return ray


def _loopback_only() -> None:
    """Keep a private Ray instance on loopback, unless the user has set these variables otherwise.

    On Linux Ray swaps a node address of 127.0.0.1 for the machine's reachable one, and then its
    GCS, raylet, workers and agents listen on every interface. Ray's switch for single-machine
    instances (the one it uses on macOS and Windows) keeps the node on 127.0.0.1, and every Ray
    process then binds loopback only. Ray reads it when imported, so it is set for the processes
    Ray starts and for this one. (Ray's token authentication is on for such an instance by
    default from Ray 2.59.)
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    constants: Any = sys.modules.get("ray._private.ray_constants")  # a module: its attributes are not known here
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")


class RayBackend:
    """A model served by replica actors, reached through a :class:`Router`."""

    def __init__(self, cluster: Cluster, spec: str, actors: list[Any]) -> None:
        self.name = spec
        self.cluster = cluster
        self.actors = actors
        self._router: Router | None = None
        self._microsteps: dict[int, tuple[Any, MicrostepRef]] = {}
        self.ahead: Lookahead | None = None
        """Serves calls from a replica that runs the chain ahead, when the run has one (see :func:`attach`)."""

    @property
    def router(self) -> Router:
        if self._router is None:  # made inside the running event loop
            opts = self.cluster.options
            place = opts.placement(self.name)
            self._router = Router(
                self.name, self.actors, max_inflight=place.max_inflight, max_batch=opts.max_batch, retries=opts.retries
            )
        return self._router

    def _wire(self, payload: Any) -> Any:
        oracle = getattr(payload, "oracle", None)
        if oracle is None or isinstance(oracle.microstep, MicrostepRef):
            return payload
        ms = oracle.microstep
        held = self._microsteps.get(id(ms))
        if held is None or held[0] is not ms:
            held = self._microsteps[id(ms)] = (ms, MicrostepRef(self.cluster.ray.put(ms)))
        return dataclasses.replace(payload, oracle=dataclasses.replace(oracle, microstep=held[1]))

    async def _call(self, method: str, requests: Sequence[Any]) -> list[Any]:
        if self.ahead is not None:
            out = await self.ahead.take(method, requests)
            if out is not None:
                return out
        return await self.router.submit_many(method, [self._wire(r) for r in requests])

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        return await self._call("generate", requests)

    async def judge(self, requests: Sequence[Any]) -> list[list[float]]:
        return await self._call("judge", requests)

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> list[float]:
        return await self._call("first_token_entropy", requests)

    async def aclose(self) -> None:
        if self.ahead is not None:
            self.ahead.close()
            self.ahead = None
        if self._router is not None:
            await self._router.aclose()
            self._router = None


class Cluster:
    """A connection to Ray and the replicas this run started. Close it to stop them."""

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.ray = _ray()
        self._started_ray = False
        self._models: dict[str, tuple[list[Any], dict[str, Any]]] = {}
        self.tag = os.urandom(3).hex()  # replicas are named maker/TAG/SPEC/I (see `ray list actors`)

    def connect(self) -> Cluster:
        ray = self.ray
        if ray.is_initialized():
            return self
        address = resolve_address(self.options.address)
        kwargs: dict[str, Any] = {
            "address": address,
            "log_to_driver": True,
            "logging_level": "WARNING",
            "configure_logging": False,
        }
        if address == "local":
            _loopback_only()
            kwargs.update(
                include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=self.options.num_cpus or os.cpu_count()
            )
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise UserError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
        self._started_ray = True
        node_ip = ray.util.get_node_ip_address()
        log.info("connected to ray", address=address, node_ip=node_ip, resources=ray.cluster_resources())
        if address == "local" and node_ip not in ("127.0.0.1", "::1"):
            log.warning(
                "the local Ray instance took a network address, so its ports listen beyond loopback "
                "(Ray's token is still required on them)",
                node_ip=node_ip,
            )
        return self

    def agent(self, spec: str) -> Agent:
        """An agent whose backend runs in replica actors (started once per spec)."""
        parse_spec(spec)  # a bad spec fails here, not in a remote actor
        self.connect()
        if spec not in self._models:
            self._models[spec] = self._start(spec)
        actors, described = self._models[spec]
        model, price = spec_model(spec)
        return Agent(spec, RayBackend(self, spec, actors), info=described["info"], model=model, price=price)

    def _start(self, spec: str) -> tuple[list[Any], dict[str, Any]]:
        ray = self.ray
        place = self.options.placement(spec)
        cls = ray.remote(Replica)
        actors = [
            cls.options(
                name=f"maker/{self.tag}/{spec}/{i}",
                num_cpus=place.cpus,
                num_gpus=place.gpus,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=max(place.max_inflight * 2, 16),
            ).remote(spec)
            for i in range(place.replicas)
        ]
        total = ray.cluster_resources()
        if place.cpus > total.get("CPU", 0) or place.gpus > total.get("GPU", 0):
            log.warning(
                "a replica asks for more than any node has now; waiting for the cluster to grow",
                agent=spec,
                cpus=place.cpus,
                gpus=place.gpus,
                cluster_cpus=total.get("CPU", 0),
                cluster_gpus=total.get("GPU", 0),
            )
        try:
            described = ray.get([a.describe.remote() for a in actors], timeout=self.options.start_timeout)
        except ray.exceptions.GetTimeoutError:
            for a in actors:
                ray.kill(a, no_restart=True)
            free = ray.available_resources()
            raise UserError(
                f"{spec}: its {place.replicas} replica(s) were not running after {self.options.start_timeout:.0f} s; "
                f"each asks for {place.cpus} CPU and {place.gpus} GPU, and the cluster has "
                f"{free.get('CPU', 0):g} CPU and {free.get('GPU', 0):g} GPU free. Ask for fewer replicas or less per "
                f"replica (`replicas`, `cpus`, `gpus`) or add nodes."
            ) from None
        except Exception as exc:  # the backend could not start in the actor (missing model, bad option, ...)
            for a in actors:
                ray.kill(a, no_restart=True)
            cause = getattr(exc, "cause", None) or exc
            raise UserError(f"{spec}: its replicas could not start: {str(cause).strip().splitlines()[-1]}") from None
        log.info(
            "replicas ready",
            agent=spec,
            replicas=len(actors),
            cpus=place.cpus,
            gpus=place.gpus,
            nodes=sorted({d["node"][:12] for d in described}),
        )
        return actors, described[0]

    def replicas(self, spec: str) -> list[Any]:
        return self._models[spec][0]

    def close(self) -> None:
        ray = self.ray
        for actors, _ in self._models.values():
            for a in actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # already gone
                    pass
        self._models.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


def attach(roster: Roster, recipe: Recipe, steps: int) -> Lookahead | None:
    """Let a replica run a chain up to ``steps`` steps ahead, when one model serves all the ``roster``'s agents;
    the engine is then built with the lookahead returned (``ahead=``), which it tells each step."""
    backends = [b for a in roster.agents if isinstance(b := a.backend, RayBackend)]
    if steps <= 0 or len(backends) != len(roster.agents):
        return None
    if len({b.name for b in backends}) != 1:
        log.info("lookahead off: the run's agents use more than one model, so its calls go one by one")
        return None
    first = backends[0]
    try:
        ahead = Lookahead(first.cluster.ray, first.actors, recipe, max_steps=steps)
    except Exception as exc:  # the workflow cannot be sent to the replicas (it holds a lock, a socket, ...)
        log.warning("lookahead off: the workflow cannot be sent to the replicas", error=f"{type(exc).__name__}: {exc}")
        return None
    for b in backends:
        b.ahead = ahead
    return ahead
