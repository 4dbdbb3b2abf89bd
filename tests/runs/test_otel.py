"""OpenTelemetry traces of a run: the spans and their attributes in the application's own tracer provider (the SDK's
in-memory exporter), the sampling bound on a run of thousands of steps whose agent errs often enough to need
more rounds, the real command line sending OTLP over HTTP to a receiver on loopback, replay emitting nothing, a
clear error when a trace is asked for without OpenTelemetry installed, an evaluation as one trace over its problems'
runs, and a fork tracing its new steps only."""

from __future__ import annotations

import http.server
import json
import math
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.util._once import Once  # noqa: E402

from maker.engine import BudgetExceeded  # noqa: E402
from maker.errors import UserError  # noqa: E402
from maker.evaluation import evaluate  # noqa: E402
from maker.runs import RunOptions, fork_run, replay_run, resume_run, start_run  # noqa: E402
from maker.telemetry import ENDPOINT_VARIABLES, GROUPS_IN_FULL, STEPS_PER_GROUP, group_traced  # noqa: E402
from tests._cli import invoke, maker_env, ok, run_maker  # noqa: E402

AGENT = "simulated:gpt-4.1-mini,p=0.8"
"""A priced model that errs one sample in five: many steps need more than one round."""


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The application's tracer provider, set for this test alone, with an in-memory exporter."""
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The API lets a process set its provider once; a test sets its own and the fixture puts the old one back.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_run_traces_itself_into_the_applications_provider_sampled(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    options = {"agents": [AGENT], "k": 2, "seed": 5, "commit_every": 8, "commit_seconds": 3600}
    summary = start_run("hanoi", {"disks": 12}, options, store=tmp_path / "s.sqlite", run_id="otel-run")
    assert summary.status == "done" and summary.steps == 4095
    named = _by_name(spans)
    assert set(named) == {"maker.run", "maker.commit", "maker.step"}

    (run,) = named["maker.run"]
    r = _attrs(run)
    assert r["maker.run_id"] == "otel-run"
    assert r["maker.workflow"] == "hanoi"
    assert list(r["maker.agents"]) == [AGENT]
    assert r["maker.seed"] == 5 and r["maker.k"] == 2
    assert r["maker.steps"] == 4095 and r["maker.calls"] == summary.calls
    assert r["maker.errors"] == summary.errors and r["maker.status"] == "done"
    assert summary.cost is not None and r["maker.cost_usd"] == pytest.approx(summary.cost)
    assert r["gen_ai.system"] == "simulated" and r["gen_ai.request.model"] == "gpt-4.1-mini"

    # Every commit group is counted; the traced ones are exactly those the rule picks, under the run's span.
    groups = r["maker.commit_groups"]
    assert groups == math.ceil(4095 / 8)
    commits = sorted(named["maker.commit"], key=lambda s: _attrs(s)["maker.steps.first"])
    assert len(commits) == r["maker.commit_groups.traced"] == sum(group_traced(i) for i in range(groups))
    assert len(commits) <= GROUPS_IN_FULL + 128 * math.ceil(math.log2(groups / GROUPS_IN_FULL))
    assert len(commits) < groups  # the sampling left some out
    assert all(c.parent is not None and c.parent.span_id == run.context.span_id for c in commits)
    assert sum(_attrs(c)["maker.calls"] for c in commits) < summary.calls
    first = _attrs(commits[0])
    assert (first["maker.steps.first"], first["maker.steps.last"], first["maker.steps"]) == (0, 7, 8)
    assert first["maker.calls"] >= 16 and "maker.red_flags" in first and first["maker.cost_usd"] > 0

    # Notable steps: under a traced group, at most STEPS_PER_GROUP each, each one notable, with the GenAI attributes.
    by_group = {c.context.span_id: c for c in commits}
    steps = named["maker.step"]
    assert steps and len(steps) == r["maker.notable_steps.traced"] < r["maker.notable_steps"]
    per_group: dict[int, int] = {}
    for s in steps:
        a = _attrs(s)
        assert s.parent is not None and s.parent.span_id in by_group
        group = _attrs(by_group[s.parent.span_id])
        assert group["maker.steps.first"] <= a["maker.step"] <= group["maker.steps.last"]
        per_group[s.parent.span_id] = per_group.get(s.parent.span_id, 0) + 1
        assert a["maker.rounds"] > 1 or a["maker.escalated"] or a["maker.wrong"]
        assert a["maker.microstep"] and a["maker.votes"].startswith("[")
        assert a["maker.agent"] == AGENT and a["maker.calls"] >= 2
        assert a["gen_ai.system"] == "simulated" and a["gen_ai.request.model"] == "gpt-4.1-mini"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["maker.cost_usd"] > 0
    assert max(per_group.values()) <= STEPS_PER_GROUP
    assert STEPS_PER_GROUP in per_group.values()  # some group had more notable steps than it may trace


def test_the_sampling_rule_bounds_a_million_groups() -> None:
    traced = sum(group_traced(i) for i in range(1_000_000))
    assert traced <= 1_792
    assert all(group_traced(i) for i in range(GROUPS_IN_FULL))


def test_a_stopped_run_and_its_resume_each_trace_their_segment(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    options = {"agents": [AGENT], "token_budget": 20_000, "over_budget": True, "commit_every": 16}
    with pytest.raises(BudgetExceeded):
        start_run("hanoi", {"disks": 7}, options, store=db, run_id="b")
    (stopped,) = _by_name(spans)["maker.run"]
    first = _attrs(stopped)
    assert first["maker.status"] == "stopped" and first["maker.segment.first_step"] == 0
    assert 0 < first["maker.steps"] < 127
    spans.clear()
    summary = resume_run("b", store=db, overrides={"token_budget": 10**9})
    (resumed,) = _by_name(spans)["maker.run"]
    again = _attrs(resumed)
    assert again["maker.run_id"] == "b" and again["maker.status"] == "done"
    assert again["maker.segment.first_step"] == first["maker.steps"]
    assert again["maker.steps"] == summary.steps == 127
    assert again["maker.segment.steps"] == 127 - first["maker.steps"]
    commits = sorted(_by_name(spans)["maker.commit"], key=lambda s: _attrs(s)["maker.steps.first"])
    assert _attrs(commits[0])["maker.steps.first"] == first["maker.steps"]


def test_replay_emits_nothing(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 5}, {"agents": [AGENT]}, store=db, run_id="r")
    assert _by_name(spans)["maker.run"]
    spans.clear()
    replay_run("r", store=db)
    assert spans.get_finished_spans() == ()


def test_otel_false_emits_nothing(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    start_run("hanoi", {"disks": 4}, {"agents": [AGENT]}, store=tmp_path / "s.sqlite", otel=False)
    assert spans.get_finished_spans() == ()


def test_asking_without_opentelemetry_installed_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # an import of it now fails
    db = tmp_path / "s.sqlite"
    with pytest.raises(UserError, match=r"pip install 'maker\[otel\]'"):
        start_run("hanoi", {"disks": 3}, {"agents": [AGENT]}, store=db, otel=True)
    assert not db.exists()  # refused before anything was written
    # Not asked for: the run goes on without a trace.
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert start_run("hanoi", {"disks": 3}, {"agents": [AGENT]}, store=db).status == "done"


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posts.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP HTTP receiver on loopback that records what is posted to it."""
    posts: list[tuple[str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"posts": posts})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


def _spans_posted(posts: list[tuple[str, bytes]]) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for path, body in posts:
        assert path == "/v1/traces"
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                out.extend(ss.spans)
    return out


def test_the_command_line_sends_the_trace_to_an_otlp_endpoint(
    receiver: tuple[str, list[tuple[str, bytes]]], tmp_path: Path
) -> None:
    url, posts = receiver
    db = tmp_path / "s.sqlite"
    env = maker_env(tmp_path)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{url}/v1/traces"
    ok(run_maker("run", "hanoi", "--set", "disks=6", "--agent", AGENT, "--run-id", "otel-cli", "--store", db, env=env))
    assert posts and b"otel-cli" in b"".join(body for _, body in posts)
    got = _spans_posted(posts)
    names = [s.name for s in got]
    assert names.count("maker.run") == 1 and "maker.commit" in names
    (run,) = [s for s in got if s.name == "maker.run"]
    attrs = {kv.key: kv.value for kv in run.attributes}
    assert attrs["maker.run_id"].string_value == "otel-cli"
    assert attrs["maker.steps"].int_value == 63

    # Replay sends nothing, with the same variables set.
    posts.clear()
    ok(run_maker("replay", "otel-cli", "--store", db, env=env))
    assert posts == []


def test_otel_flag_is_on_the_commands_that_run_models_not_replay(tmp_path: Path) -> None:
    env = maker_env(tmp_path)
    for cmd, has in (
        ("run", True),
        ("resume", True),
        ("solve", True),
        ("eval", True),
        ("fork", True),
        ("replay", False),
    ):
        out = ok(run_maker(cmd, "--help", env=env)).stdout
        assert ("--otel" in out) is has, cmd


def _products(tmp: Path) -> Path:
    rows = [(12, 34), (56, 78), (1234, 5678), (9, 7), (4321, 8765), (21, 43)]
    path = tmp / "products.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": f"Multiply {a} by {b}", "answer": str(a * b)}) + "\n"
            for i, (a, b) in enumerate(rows)
        )
    )
    return path


def test_an_evaluation_is_one_trace_its_runs_under_its_span(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    data = _products(tmp_path)
    options = RunOptions(agents=["simulated:gpt-4.1-mini,p=0.7,seed=2"], k=1)
    db = tmp_path / "e.sqlite"
    s = evaluate(data, options, store=db, name="ev", concurrency=3)
    named = _by_name(spans)
    (ev,) = named["maker.eval"]
    e = _attrs(ev)
    assert e["maker.eval.name"] == "ev" and e["maker.eval.problems"] == 6 and e["maker.workflow"] == "solve"
    assert e["maker.eval.correct"] == s.correct and e["maker.eval.accuracy"] == pytest.approx(s.accuracy)
    assert e["maker.eval.ran"] == 6 and e["maker.cost_usd"] == pytest.approx(s.cost)
    assert ev.parent is None

    runs = named["maker.run"]
    assert len(runs) == 6
    rows = {r.id: r for r in s.rows}
    for run in runs:
        a = _attrs(run)
        assert run.parent is not None and run.parent.span_id == ev.context.span_id
        assert run.context.trace_id == ev.context.trace_id  # one trace for the evaluation
        row = rows[a["maker.eval.problem"]]
        assert a["maker.run_id"] == row.run_id == f"ev/{row.id}" and a["maker.eval.name"] == "ev"
        assert a["maker.eval.score"] == row.score and a["maker.eval.correct"] == row.correct
        assert a["maker.status"] == "done" and a["maker.calls"] == row.calls
    commits = named["maker.commit"]
    run_ids = {r.context.span_id for r in runs}
    assert commits and all(c.parent is not None and c.parent.span_id in run_ids for c in commits)
    assert 0 < s.correct < 6  # some wrong, some right: the scores on the spans tell them apart

    # Again under the same name: every problem is read back, nothing runs, no run span.
    spans.clear()
    evaluate(data, options, store=db, name="ev", concurrency=3)
    named = _by_name(spans)
    assert set(named) == {"maker.eval"}
    assert _attrs(named["maker.eval"][0])["maker.eval.reused"] == 6


def test_eval_and_fork_take_otel_on_the_command_line(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    data = _products(tmp_path)
    db = tmp_path / "e.sqlite"
    code, out = invoke("eval", str(data), "--agent", AGENT, "--name", "cli", "--store", str(db), "--otel")
    assert code == 0, out
    named = _by_name(spans)
    assert len(named["maker.eval"]) == 1 and len(named["maker.run"]) == 6

    spans.clear()
    start_run("hanoi", {"disks": 6}, {"agents": [AGENT]}, store=db, run_id="parent", otel=False)
    assert spans.get_finished_spans() == ()
    code, out = invoke("fork", "parent", "--from-step", "40", "--run-id", "child", "--store", str(db), "--otel")
    assert code == 0, out
    named = _by_name(spans)
    (run,) = named["maker.run"]
    r = _attrs(run)
    assert r["maker.run_id"] == "child" and r["maker.status"] == "done"
    assert r["maker.fork.parent_run_id"] == "parent" and r["maker.fork.from_step"] == 40
    assert r["maker.segment.first_step"] == 40 and r["maker.segment.steps"] == 63 - 40
    # Only the new steps: the prefix was re-applied without a model call and is not traced.
    assert min(_attrs(c)["maker.steps.first"] for c in named["maker.commit"]) == 40


def test_a_fork_without_a_provider_or_flag_emits_nothing(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 5}, {"agents": [AGENT]}, store=db, run_id="p", otel=False)
    fork_run("p", 10, store=db, new_id="c", otel=False)
    assert spans.get_finished_spans() == ()
