"""The log-probability verifier (``--verify logprob``, SpecGuard): simulated log-probabilities of a stated strength,
runs whose errors match the estimate, and drafters that cannot return log-probabilities refused before a run."""

from __future__ import annotations

import asyncio
import math
from statistics import NormalDist

import pytest

from maker.agents import Agent, GenerateRequest, Oracle, SimulatedBackend, SimulatedConfig
from maker.engine import logprob_stat
from maker.errors import UserError
from maker.planning import preflight, speculation_estimate
from maker.planning._calibrate_logprob import auc
from maker.runs import RunOptions, resolve_workflow, start_run

LARGE = "simulated:p=0.99,seed=1"


def _draws(cfg: SimulatedConfig, n: int, logprobs: bool = True) -> list:
    """``n`` samples of one Hanoi step's prompt, one request each (seeds 0..n-1)."""
    wf_cls = resolve_workflow("hanoi")
    wf = wf_cls()
    state = wf.start(wf_cls.parse_params({"disks": 6}))
    call = wf.next(state)
    oracle = Oracle(call.microstep, wf.oracle(state), 0, call.inputs)
    reqs = [GenerateRequest(call.prompt, [0.0], [s], 750, (), logprobs, oracle) for s in range(n)]
    out = asyncio.run(SimulatedBackend(cfg).generate(reqs))
    right = call.microstep.render(wf.oracle(state))
    return [(s.text == right, s) for (s,) in out]


@pytest.mark.parametrize("sep", [0.0, 1.0, 2.0])
def test_simulated_logprobs_separate_right_from_wrong_at_the_stated_auc(sep: float) -> None:
    cfg = SimulatedConfig.from_options(None, {"p": 0.5, "lp_sep": sep, "seed": 3})
    draws = _draws(cfg, 4000)
    right = [logprob_stat(s.logprobs, "min") for ok, s in draws if ok]
    wrong = [logprob_stat(s.logprobs, "min") for ok, s in draws if not ok]
    stated = NormalDist().cdf(sep / math.sqrt(2))
    assert cfg.lp_auc == pytest.approx(stated)
    measured = auc(right, wrong)
    assert measured is not None
    # Hanley-McNeil standard error of an AUC; four of them either side
    a, n1, n2 = stated, len(right), len(wrong)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2))
    assert abs(measured - stated) < 4 * se, (measured, stated, se)
    # every token log-probability is <= 0 and one per token
    assert all(all(x <= 0 for x in s.logprobs) and len(s.logprobs) == s.tokens for _, s in draws[:50])


def test_simulated_logprobs_are_seeded_and_leave_the_texts_alone() -> None:
    cfg = SimulatedConfig.from_options(None, {"p": 0.7, "seed": 5})
    a, b, plain = _draws(cfg, 200), _draws(cfg, 200), _draws(cfg, 200, logprobs=False)
    assert [s.logprobs for _, s in a] == [s.logprobs for _, s in b]
    assert [s.text for _, s in a] == [s.text for _, s in plain]
    assert all(s.logprobs is None for _, s in plain)


def test_min_logprob_rates_match_the_draws() -> None:
    cfg = SimulatedConfig.from_options(None, {"p": 0.5, "lp_sep": 2.0, "seed": 7})
    tpr, fpr = cfg.min_logprob_rates(-2.0)
    draws = _draws(cfg, 4000)
    r = [ok for ok, _ in draws]
    acc = [logprob_stat(s.logprobs, "min") >= -2.0 for _, s in draws]
    m_tpr = sum(a for a, ok in zip(acc, r, strict=True) if ok) / sum(r)
    m_fpr = sum(a for a, ok in zip(acc, r, strict=True) if not ok) / (len(r) - sum(r))
    assert abs(m_tpr - tpr) < 4 * math.sqrt(tpr * (1 - tpr) / sum(r))
    assert abs(m_fpr - fpr) < 4 * math.sqrt(fpr * (1 - fpr) / (len(r) - sum(r)))


@pytest.mark.parametrize("draft_k", [1, 2])
def test_logprob_run_errs_as_the_estimate_says(tmp_path, draft_k: int) -> None:
    """4,095 Hanoi steps drafted by a p = 0.8 drafter, checked at min log-probability >= -2: the wrong steps and
    the accepted drafts land within four standard deviations of the estimate."""
    drafter = "simulated:p=0.8,seed=2,lp_sep=2.0"
    opts = {
        "agents": ["simulated:p=0.99,seed=1"],
        "k": 2,
        "drafter": drafter,
        "verify": "logprob",
        "logprob_threshold": -2.0,
        "draft_k": draft_k,
    }
    s = start_run("hanoi", {"disks": 12}, opts, store=tmp_path / "s.sqlite", run_id="lp")
    tpr, fpr = SimulatedConfig.from_options(None, {"lp_sep": 2.0}).min_logprob_rates(-2.0)
    est = speculation_estimate(
        drafter_p=0.8, p=0.99, k=2, steps=s.steps, mode="logprob", tpr=tpr, fpr=fpr, draft_k=draft_k
    )
    sd = math.sqrt(s.steps * est.step_error * (1 - est.step_error))
    assert abs(s.errors - est.expected_wrong) < 4 * sd + 1, (s.errors, est.expected_wrong)
    acc_sd = math.sqrt(s.steps * est.accept_rate * (1 - est.accept_rate))
    assert abs(s.accepted - s.steps * est.accept_rate) < 4 * acc_sd, (s.accepted, est.accept_rate)
    assert len(s.agent_calls) == 2, "no verifier: the large model and the drafter only"
    if draft_k == 1:
        assert est.expected_wrong > 30, "the setting is lax enough for the comparison to mean something"


def test_logprob_run_records_the_statistic(tmp_path) -> None:
    import json

    from maker.store import Store

    store = tmp_path / "s.sqlite"
    opts = {"agents": [LARGE], "drafter": "simulated:p=0.9,seed=2", "verify": "logprob", "logprob_threshold": -1.0}
    start_run("hanoi", {"disks": 6}, opts, store=store, run_id="r")
    with Store.open(store) as st:
        rows = [json.loads(r[11]) for r in st.steps(st.run("r").id)]
    for info in rows:
        assert info["accepted" if info["logprob"] >= -1.0 else "escalated"]
    # and the trace tools show it: `maker trace show --step N`
    from tests._cli import invoke

    code, out = invoke("trace", "show", "r", "--step", "5", "--store", str(store))
    assert code == 0, out
    assert f"log-probability {rows[5]['logprob']:.4g}" in out


class _NoLogprobs:
    name = "plain"

    async def generate(self, requests):  # pragma: no cover - never called
        raise AssertionError

    async def aclose(self) -> None:
        return None


def test_a_drafter_without_logprobs_is_refused_before_the_run(tmp_path) -> None:
    opts = RunOptions(agents=[LARGE], drafter="plain", verify="logprob")

    def make(spec: str) -> Agent:
        return Agent(spec, _NoLogprobs())

    with pytest.raises(UserError, match="cannot return its tokens' log-probabilities"):
        opts.speculation(make)
    with pytest.raises(UserError, match="asks no verifier"):
        RunOptions(agents=[LARGE], drafter=LARGE, verifiers=[LARGE], verify="logprob").speculation()
    # and the command line: nothing is written
    store = tmp_path / "s.sqlite"
    from tests._cli import run_maker

    r = run_maker(
        "run", "hanoi", "--set", "disks=3", "--agent", LARGE, "--drafter", LARGE, "--verifier", LARGE,
        "--verify", "logprob", "--store", str(store), tmp=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "asks no verifier" in r.stderr
    assert not store.exists() or store.stat().st_size == 0 or "run started" not in r.stderr


def test_preflight_names_a_safe_threshold() -> None:
    opts = RunOptions(
        agents=[LARGE], drafter="simulated:p=0.8,seed=2,lp_sep=2.0", verify="logprob", logprob_threshold=-2.0
    )
    text, wrong = preflight(opts, None, 1023, workflow="hanoi")
    assert wrong is not None and wrong > 0.5
    assert "TPR 0.7559" in text and "warning:" in text and "--logprob-threshold" in text
    text, _ = preflight(opts.model_copy(update={"logprob_stat": "mean"}), None, 1023, workflow="hanoi")
    assert "calibrate hanoi --verifier logprob" in text


def test_estimate_in_logprob_mode_is_the_closed_form() -> None:
    est = speculation_estimate(drafter_p=0.9, p=0.99, k=3, steps=100, mode="logprob", tpr=0.8, fpr=0.1)
    accept = 0.9 * 0.8 + 0.1 * 0.1
    assert est.accept_rate == pytest.approx(accept)
    assert est.wrong_draft_error == pytest.approx(0.1 * 0.1)
    assert est.verifier_calls_per_step == 0 and est.verifiers == 0
    assert est.large_calls_per_step == pytest.approx((1 - accept) * est.voting_calls_per_step)
    with pytest.raises(ValueError, match="TPR and FPR"):
        speculation_estimate(drafter_p=0.9, p=0.99, k=3, steps=100, mode="logprob")
