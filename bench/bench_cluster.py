"""Benchmark: runs through Ray replica actors against the same runs in-process, side by side.

On one local Ray instance (started here, on loopback):

1. overhead per step: a Hanoi run with an instant simulated agent (gpt-4.1-mini, k=3),
   in-process and through one replica running the chain ahead (lookahead, the default);
   wall time, microseconds per step, the ratio, and whether the two traces agree (errors
   and calls); then the same through the router call by call (``lookahead 0``), on at most
   ``--call-disks`` disks since it pays a round trip per step;
2. latency: the same agent with a simulated call latency of 50 ms, in-process against
   4 replicas;
3. micro-batching: ``--burst`` generate requests in flight at once through the router to
   2 replicas: actor calls made, requests per call, requests per second, against one
   actor call per request.

    python bench/bench_cluster.py [--disks 14] [--call-disks 14] [--latency-disks 6] [--burst 20000] [--json]

``--disks 20`` runs the full 1,048,575-step task through Ray (about 80 us per step here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.agents import GenerateRequest, Oracle
from maker.cluster import Cluster, ClusterOptions
from maker.runs import RunOptions, start_run
from maker.workflows import Hanoi

AGENT = "simulated:gpt-4.1-mini"


def _run(tmp: Path, name: str, disks: int, agent: str, cluster: ClusterOptions | None) -> Any:
    opts = RunOptions(agents=[agent], k=3, cluster=cluster)
    t0 = time.perf_counter()
    s = start_run("hanoi", {"disks": disks}, opts, store=tmp / f"{name}.sqlite", run_id=name)
    return s, time.perf_counter() - t0


def _burst(n: int) -> dict[str, Any]:
    """n generate requests in flight at once through the router, then one actor call each."""
    cluster = Cluster(ClusterOptions.build("auto", replicas=2, cpus=0.5))
    agent = cluster.agent(AGENT)
    wf = Hanoi()
    state = wf.start(Hanoi.parse_params({"disks": 10}))
    call = wf.next(state)
    oracle = Oracle(call.microstep, wf.oracle(state), 0)
    reqs = [GenerateRequest(call.prompt, [0.0], [i], 750, (), False, oracle) for i in range(n)]

    async def batched() -> tuple[float, Any]:
        t0 = time.perf_counter()
        out = await agent.backend.generate(reqs)
        dt = time.perf_counter() - t0
        router = agent.backend.router
        assert len(out) == n
        figures = (router.calls, router.items_sent)
        await agent.backend.aclose()
        return dt, figures

    async def one_by_one(m: int) -> float:
        actor = cluster.replicas(AGENT)[0]
        wire = [agent.backend._wire(r) for r in reqs[:m]]
        t0 = time.perf_counter()
        for i, w in enumerate(wire):
            await actor.call.remote("generate", [(i, w)])
        return (time.perf_counter() - t0) / m

    dt, (calls, items) = asyncio.run(batched())
    per_call = asyncio.run(one_by_one(min(n, 2000)))
    cluster.close()
    return {
        "burst_requests": n,
        "burst_actor_calls": calls,
        "burst_requests_per_call": round(items / calls, 1),
        "burst_requests_per_s": round(n / dt),
        "one_call_per_request_per_s": round(1 / per_call),
        "batching_speedup": round(dt and (n / dt) * per_call, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disks", type=int, default=14)
    ap.add_argument("--call-disks", type=int, default=14)
    ap.add_argument("--latency-disks", type=int, default=6)
    ap.add_argument("--burst", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="ERROR",
        log_to_driver=False,
    )
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one = ClusterOptions.build("auto", cpus=0.5)
        here, here_s = _run(tmp, "here", args.disks, AGENT, None)
        there, there_s = _run(tmp, "there", args.disks, AGENT, one)
        out.update(
            {
                "steps": here.steps,
                "in_process_s": round(here.wall_s, 2),
                "ray_s": round(there.wall_s, 2),
                "ray_over_in_process": round(there.wall_s / here.wall_s, 1),
                "in_process_us_per_step": round(here.wall_s / here.steps * 1e6, 1),
                "ray_us_per_step": round(there.wall_s / there.steps * 1e6, 1),
                "ray_overhead_us_per_step": round((there.wall_s - here.wall_s) / there.steps * 1e6, 1),
                "ray_start_s": round(there_s - there.wall_s, 2),
                "errors_in_process_ray": [here.errors, there.errors],
                "same_calls": here.calls == there.calls,
                "target_ratio": 2.0,
            }
        )
        call_disks = min(args.call_disks, args.disks)
        if call_disks != args.disks:
            here, _ = _run(tmp, "here_c", call_disks, AGENT, None)
        by_call, _ = _run(tmp, "by_call", call_disks, AGENT, ClusterOptions.build("auto", cpus=0.5, lookahead=0))
        out.update(
            {
                "call_by_call_steps": by_call.steps,
                "call_by_call_s": round(by_call.wall_s, 2),
                "call_by_call_over_in_process": round(by_call.wall_s / here.wall_s, 1),
                "call_by_call_same_calls": here.calls == by_call.calls,
            }
        )
        slow = AGENT + ",call_s=0.05"
        here, _ = _run(tmp, "here50", args.latency_disks, slow, None)
        there, _ = _run(tmp, "there50", args.latency_disks, slow, ClusterOptions.build("auto", replicas=4, cpus=0.25))
        out.update(
            {
                "latency_steps": here.steps,
                "latency_in_process_steps_per_s": round(here.steps / here.wall_s, 2),
                "latency_4_replicas_steps_per_s": round(there.steps / there.wall_s, 2),
                "latency_ratio": round(here.wall_s / there.wall_s, 3),
            }
        )
    out.update(_burst(args.burst))
    ray.shutdown()
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
