"""``trace_stats`` as a typed model: what ``maker trace stats --json`` prints is the model's dump (without the plot
series), key for key and value for value, for a run, a fork and a fork with no steps of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maker.runs import fork_run, start_run
from maker.store import Store
from maker.trace import TraceStats, trace_stats
from maker.trace._stats_model import SpeculationStats, StatsSeries, WindowStats
from tests._cli import invoke

AGENT = "simulated:p=0.85,spread=2,malformed=0.03,seed=2"
KEYS = [
    "trace_format",
    "run_id",
    "workflow",
    "status",
    "first_step",
    "steps",
    "k",
    "agents",
    "errors",
    "rounds",
    "samples_per_step",
    "calls",
    "calls_per_step",
    "calls_per_step_theory",
    "theory",
    "calls_per_step_voting_theory",
    "p_measured",
    "valid_rate",
    "tokens",
    "red_flags",
    "per_agent",
    "speculation",
    "time",
    "hardest",
    "cost",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("stats") / "s.sqlite"
    start_run("hanoi", {"disks": 5}, {"agents": [AGENT], "k": 3}, store=db, run_id="h")
    fork_run("h", 10, store=db, new_id="f")
    fork_run("h", 31, store=db, new_id="empty")  # from past the last step: nothing of its own
    return db


def _stats(store: Path, run_id: str) -> TraceStats:
    with Store.open(store) as st:
        return trace_stats(st, st.run(run_id))


@pytest.mark.parametrize("run_id", ["h", "f", "empty"])
def test_json_is_the_models_dump_without_the_series(store: Path, run_id: str) -> None:
    s = _stats(store, run_id)
    code, out = invoke("trace", "stats", run_id, "--json", "--store", str(store))
    assert code == 0
    assert out.strip() == json.dumps(s.model_dump(exclude={"series"}))
    assert list(json.loads(out)) == KEYS
    assert list(s.model_dump()) == [*KEYS, "series"]


def test_a_runs_statistics_count_its_own_steps(store: Path) -> None:
    whole, fork = _stats(store, "h"), _stats(store, "f")
    assert (whole.first_step, whole.steps, fork.first_step, fork.steps) == (0, 31, 10, 21)
    for s in (whole, fork):
        assert s.series.step[-1] == s.first_step + s.steps - 1
        assert s.series.calls_cum[-1] == s.calls == sum(int(n) * c for n, c in s.samples_per_step.histogram.items())
        assert sum(s.rounds.histogram.values()) == s.steps
        assert s.first_step <= s.rounds.max_step < s.first_step + s.steps
        assert s.calls_per_step_theory is not None and s.series.calls_theory_cum is not None
        assert len(s.series.calls_theory_cum) == len(s.series.step)
        assert s.speculation is None  # no drafter
        assert isinstance(s.time.total_s, float)


def test_a_fork_with_no_steps_has_empty_statistics(store: Path) -> None:
    s = _stats(store, "empty")
    assert (s.first_step, s.steps, s.calls, s.errors, s.per_agent) == (31, 0, 0, None, [])
    assert s.calls_per_step_theory is None and s.p_measured is None and s.valid_rate is None
    assert (s.rounds.max, s.rounds.max_step, s.time.max_step) == (0, 31, 31)
    # the sum of no durations has always been printed as the integer 0
    assert s.time.total_s == 0 and type(s.time.total_s) is int
    assert '"time": {"total_s": 0, "mean_ms": 0.0,' in json.dumps(s.model_dump())
    series = s.model_dump()["series"]
    assert series == {
        "steps_per_point": 1,
        "step": [],
        "rounds_mean": [],
        "rounds_max": [],
        "red_flags": [],
        "calls_cum": [],
        "dur_mean_ms": [],
        "cost_cum": [],
    }  # no theoretical curve: the key is left out, not null


def test_absent_parts_are_left_out_of_the_dump_not_null() -> None:
    spec = SpeculationStats(drafted=2, accepted=1, escalated=1, acceptance_rate=0.5, routed={})
    assert spec.model_dump() == {
        "drafted": 2,
        "accepted": 1,
        "escalated": 1,
        "acceptance_rate": 0.5,
        "routed": {},
        "mode": "score",
        "verify_k": 1,
        "draft_k": 1,
        "verifiers": [],
        "voting_p": None,
        "voting_valid_rate": None,
        "verifier_calls_per_step": 0.0,
    }  # no drafter, no window: left out
    window = WindowStats(
        wasted_calls=3,
        wasted_tokens=30,
        wasted_calls_per_step=1.5,
        wasted_by_agent={"drafter: x": 3},
        predictions_held=1,
        predictions_missed=1,
        rejected_drafts_waited_at=0,
        rejected_drafts_passed=1,
    )
    with_window = spec.model_copy(update={"window": window}).model_dump()
    assert list(with_window)[-1] == "window" and with_window["window"]["wasted_calls"] == 3
    series = StatsSeries(
        steps_per_point=1, step=[0], rounds_mean=[1.0], rounds_max=[1], red_flags=[0], calls_cum=[3], dur_mean_ms=[0.1]
    )
    assert "calls_theory_cum" not in series.model_dump()
    assert series.model_copy(update={"calls_theory_cum": [3.1]}).model_dump()["calls_theory_cum"] == [3.1]
