"""The Hanoi workflow against a calibrated model over real HTTP (tests/fixtures/hanoi_server.py): plain voting and
speculative drafting through the `maker` CLI and the OpenAI backend, and the fixture's own calibration."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from maker.agents import GenerateRequest, JudgeRequest, digit_score
from maker.agents.openai_http import OpenAIBackend
from maker.dsl import Done
from maker.stats import wilson_interval
from maker.workflows.hanoi import Hanoi, HanoiParams, hanoi_move
from tests._cli import ok, run_maker, shown_steps
from tests.fixtures.hanoi_server import HanoiServer
from tests.fixtures.loopback import call

Z999 = 3.2905267314919255  # two-sided 99.9% normal quantile
VOLATILE = {"run_id", "t_start", "dur_s"}


def _chain(disks: int) -> list[tuple[str, Any]]:
    """Every step of the solution: its prompt and the strategy's answer."""
    wf = Hanoi()
    state = wf.start(HanoiParams(disks=disks))
    out = []
    while not isinstance(call := wf.next(state), Done):
        answer = wf.oracle(state)
        out.append((call.prompt, answer))
        state = wf.apply(state, answer)
    return out


def _kind(text: str, correct: Any) -> str:
    try:
        answer = hanoi_move.parse(text)
    except ValueError:
        return "malformed"
    return "right" if hanoi_move.vote_key(answer) == hanoi_move.vote_key(correct) else "wrong"


def _run(tmp: Path, run_id: str, *args: str) -> dict[str, Any]:
    proc = run_maker(
        "run",
        "hanoi",
        "--set",
        "disks=6",
        *args,
        "--seed",
        "7",
        "--run-id",
        run_id,
        "--store",
        tmp / "runs.sqlite",
        "--json",
        tmp=tmp,
    )
    return json.loads(ok(proc).stdout)


def _trace(tmp: Path, run_id: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k not in VOLATILE} for s in shown_steps(tmp / "runs.sqlite", run_id, tmp)]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_voted_run_through_http_solves_six_disks(tmp_path: Path, api: str) -> None:
    with HanoiServer(error=0.01) as server:
        agent = f"openai:m@{server.url}" + (",api=chat" if api == "chat" else "")
        summary = _run(tmp_path, "plain", "--agent", agent, "--k", "3")
    assert summary["status"] == "done" and summary["solved"] is True and summary["errors"] == 0
    assert summary["steps"] == 63 and summary["result"] == {"pegs": [[], [], [6, 5, 4, 3, 2, 1]]}
    assert server.kinds == {"step": server.requests} and server.choices >= 3 * 63


def test_a_server_that_ignores_n_gets_one_request_per_sample_and_the_run_goes_on(tmp_path: Path) -> None:
    """Some servers answer one choice whatever n asks: the first short answer is noticed and logged once, every
    later sample is its own request, and the run completes as through a server that honours n."""
    with HanoiServer(error=0.01, latency_s=0.0, ignore_n=True) as server:
        proc = run_maker(
            "run",
            "hanoi",
            "--set",
            "disks=5",
            "--agent",
            f"openai:m@{server.url}",
            "--k",
            "3",
            "--seed",
            "7",
            "--run-id",
            "one",
            "--store",
            tmp_path / "runs.sqlite",
            "--json",
            tmp=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "done" and summary["solved"] is True and summary["steps"] == 31
    warnings = [line for line in proc.stderr.splitlines() if "one choice whatever n asks" in line]
    assert len(warnings) == 1, proc.stderr[-2000:]
    # after the first request that asked for several (and got one), one request per sample drawn
    assert server.choices == server.requests == summary["calls"] + summary["spare_samples"]

    async def ask() -> list[list[Any]]:
        backend = OpenAIBackend("m", server2.url)
        try:
            req = GenerateRequest(_chain(3)[0][0], [0.5] * 4, [11, 12, 13, 14], 64)
            # two requests in flight before the first answer shows the server ignores n: both go on one by one
            first, twin = await backend.generate([req, req])
            assert backend.honours_n is False
            (again,) = await backend.generate([req])
            return [first, twin, again]
        finally:
            await backend.aclose()

    import structlog

    with HanoiServer(error=0.3, latency_s=0.05, ignore_n=True) as server2, structlog.testing.capture_logs() as logs:
        first, twin, again = asyncio.run(ask())
    assert len(first) == len(again) == 4 and first == twin == again, "the same seeds give the same samples, in order"
    assert len([e for e in logs if "one choice whatever n asks" in e["event"]]) == 1
    assert [s.text for s in first] == [server2.answer(_chain(3)[0][0], seed, 0).text for seed in (11, 12, 13, 14)]


def test_a_speculative_run_drafts_verifies_escalates_and_replays_the_same(tmp_path: Path) -> None:
    summaries, traces = [], []
    # The verifier's server is also the large model the rejected drafts escalate to. The servers keep no state
    # between requests, so both runs may use them (and the agents' names, which hold their URLs, are the same).
    with (
        HanoiServer(error=0.1, latency_s=0.01) as drafter,
        HanoiServer(judge_tpr=0.99, judge_fpr=0.05, latency_s=0.01) as verifier,
    ):
        for run_id in ("spec-a", "spec-b"):
            summaries.append(
                _run(
                    tmp_path,
                    run_id,
                    "--agent",
                    f"openai:v@{verifier.url}",
                    "--k",
                    "3",
                    "--drafter",
                    f"openai:d@{drafter.url}",
                    "--verifier",
                    f"openai:v@{verifier.url}",
                    "--entropy-threshold",
                    "1.0",
                )
            )
            traces.append(_trace(tmp_path, run_id))
    # At least one entropy probe per step before its draft (a speculative window may probe predicted steps too).
    assert drafter.kinds["probe"] >= 2 * 63 and drafter.kinds["step"] >= 2 * 63 and drafter.kinds["judge"] == 0
    assert verifier.kinds["judge"] >= 2 * 63, "every draft is rated, accepted or not"
    a, b = summaries
    assert a["status"] == "done" and a["steps"] == 63 and a["drafted"] == 63
    assert a["accepted"] > 0 and a["escalated"] > 0 and a["accepted"] + a["escalated"] == 63
    assert a["errors"] == sum(1 for r in traces[0] if not r["correct"])
    assert traces[0] == traces[1], "the same seed takes the same steps"
    assert {k: a[k] for k in ("errors", "accepted", "escalated", "calls", "tokens")} == {
        k: b[k] for k in ("errors", "accepted", "escalated", "calls", "tokens")
    }
    for record in traces[0]:
        spec = record["speculation"]
        assert 0 <= spec["entropy"] < 0.1, "the drafter is confident: no step is routed by entropy"
        (verdict,) = spec["verdicts"]
        assert verdict["accept"] == (verdict["score"] >= 7) and spec.get("accepted", False) == verdict["accept"]


def test_error_and_malformed_rates_bracket_the_configured_ones() -> None:
    steps = _chain(8)  # 255 distinct states, two choices each
    reqs = [
        GenerateRequest(prompt, [0.0, 0.7, 0.7], [11 * i, 11 * i + 1, 11 * i + 2], 750)
        for i, (prompt, _) in enumerate(steps)
    ]
    with HanoiServer(error=0.05, malformed=0.02, latency_s=0.0) as server:
        out = call(OpenAIBackend("m", server.url, concurrency=16, timeout=10), "generate", reqs)
    kinds = [_kind(s.text, correct) for samples, (_, correct) in zip(out, steps, strict=True) for s in samples]
    n = len(kinds)
    assert n == 3 * 255 == server.choices and server.requests == 2 * 255  # one request per temperature
    for kind, rate in (("wrong", 0.05), ("malformed", 0.02)):
        low, high = wilson_interval(kinds.count(kind), n, Z999)
        assert low <= rate <= high, f"{kind}: {kinds.count(kind)}/{n}, 99.9% interval [{low:.4f}, {high:.4f}]"


@pytest.mark.parametrize("route", ["completions", "chat/completions"])
def test_n_choices_are_each_their_own_draw_and_repeat_exactly(route: str) -> None:
    prompt, correct = _chain(5)[10]
    body: dict[str, Any] = {"model": "m", "n": 12, "seed": 5, "max_tokens": 750, "temperature": 0.7}
    body.update({"messages": [{"role": "user", "content": prompt}]} if route.startswith("chat") else {"prompt": prompt})
    with HanoiServer(error=0.5, malformed=0.1) as server:
        first, again = (httpx.post(f"{server.url}/{route}", json=body, timeout=10).json() for _ in range(2))
        other_seed = httpx.post(f"{server.url}/{route}", json={**body, "seed": 6}, timeout=10).json()

    def texts(data: dict[str, Any]) -> list[str]:
        return [c["message"]["content"] if "message" in c else c["text"] for c in data["choices"]]

    assert [c["index"] for c in first["choices"]] == list(range(12))
    assert texts(first) == texts(again), "the same request gives the same texts"
    assert texts(first) != texts(other_seed)
    kinds = {_kind(t, correct) for t in texts(first)}
    assert kinds == {"right", "wrong", "malformed"} or len(set(texts(first))) > 2, "each choice is its own draw"
    assert server.requests == 3 and server.choices == 36


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_verification_and_entropy_through_the_backend(api: str) -> None:
    prompt, correct = _chain(4)[6]
    right = hanoi_move.render(correct)
    wrong = hanoi_move.render(hanoi_move.mistake(correct, 0, {}))
    reqs = [JudgeRequest(prompt, right, 1), JudgeRequest(prompt, wrong, 2), JudgeRequest(prompt, "move: ?", 3)]
    with HanoiServer(judge_tpr=1.0, judge_fpr=0.0, latency_s=0.0) as server:
        scores = [digit_score(row) for row in call(OpenAIBackend("v", server.url, api=api, timeout=5), "judge", reqs)]
        (entropy,) = call(
            OpenAIBackend("d", server.url, api=api, timeout=5),
            "first_token_entropy",
            [GenerateRequest(prompt, [0.0], [4], 750)],
        )
    assert scores[0] > 8.5 and scores[1] < 2.5 and scores[2] < 2.5
    assert 0 < entropy < 0.1
    assert server.kinds == {"judge": 3, "probe": 1}


def test_requests_in_flight_are_served_together() -> None:
    steps = _chain(3)[:4]
    reqs = [GenerateRequest(prompt, [0.0], [i], 750) for i, (prompt, _) in enumerate(steps)]
    with HanoiServer(error=0.0, latency_s=1.0) as server:
        out = call(OpenAIBackend("m", server.url, concurrency=8, timeout=10), "generate", reqs)
    assert [s.text for (s,) in out] == [hanoi_move.render(c) for _, c in steps]
    assert server.requests == 4 and server.peak_in_flight == 4, "four requests in flight at once, one latency"


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="error \\+ malformed <= 1"):
        HanoiServer(error=0.8, malformed=0.3)
