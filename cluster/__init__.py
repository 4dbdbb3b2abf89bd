"""Running on Ray (installed as ``maker.cluster``): replica actors, a batching router, and Ray Jobs.

``maker run ... --cluster local|auto|ray://HOST:PORT`` puts every agent's model in replica
actors; the engine, the store and the trace stay with the driver.
"""

from maker.cluster.backend import Cluster, RayBackend, attach
from maker.cluster.config import ClusterOptions, Placement, resolve_address
from maker.cluster.router import ReplicaLostError, Router

__all__ = [
    "attach",
    "Cluster",
    "ClusterOptions",
    "Placement",
    "RayBackend",
    "ReplicaLostError",
    "Router",
    "resolve_address",
]
