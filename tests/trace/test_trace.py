"""The trace tools on real stores: show, stats, export, replay, fork, and the recorded fixtures."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from maker.errors import NondeterminismError, StoreError, UserError
from maker.runs import fork_run, replay_run, start_run
from maker.store import SCHEMA_VERSION, Store
from maker.trace import step_records, trace_stats
from tests._cli import invoke as _cli

FIXTURES = Path(__file__).parents[1] / "fixtures"
AGENT = "simulated:p=0.85,spread=2,malformed=0.03,seed=2"
COMPARED = ("digest", "answer", "votes", "rounds", "samples", "tokens", "red_flags", "agent", "correct", "speculation")


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copy(FIXTURES / name, dst)
    return dst


@pytest.fixture(scope="module")
def hanoi(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("trace") / "s.sqlite"
    # Every snapshot kept: replay checks the state at each of the seven commits.
    options = {"agents": [AGENT], "k": 3, "detail": "samples", "commit_every": 9, "snapshots": "all"}
    start_run("hanoi", {"disks": 6}, options, store=store, run_id="h")
    return store


def test_show_gives_every_detail_of_a_step(hanoi) -> None:
    with Store.open(hanoi) as st:
        rec = st.run("h")
        (step,) = step_records(st, rec, 7, 8, samples=True)
    assert step["step"] == 7 and "Towers of Hanoi" in step["input"]
    assert sum(step["votes"]) + sum(step["red_flags"].values()) == step["samples"] == len(step["sample_detail"])
    winners = [s for s in step["sample_detail"] if s["vote"] == step["answer"]]
    assert len(winners) == step["votes"][0]
    assert step["tokens"] == sum(s["tokens"] for s in step["sample_detail"])
    code, out = _cli("trace", "show", "h", "--step", "7", "--store", str(hanoi))
    assert code == 0 and "step 7" in out and "winner" in out and f"votes    {step['votes']}" in out
    code, out = _cli("trace", "show", "h", "--steps", "3:6", "--json", "--store", str(hanoi))
    assert [json.loads(line)["step"] for line in out.splitlines()] == [3, 4, 5]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "x:y"], "expected A:B"),
        (["--step", "999"], "past its end"),
        (["--step", "1", "--steps", "1:2"], "not both"),
    ],
)
def test_show_rejects_bad_ranges_clearly(hanoi, args, message) -> None:
    code, out = _cli("trace", "show", "h", *args, "--store", str(hanoi))
    assert code == 2 and message in out


def test_stats_match_a_recount_of_the_rows(hanoi) -> None:
    with Store.open(hanoi) as st:
        rec = st.run("h")
        s = trace_stats(st, rec)
        rows = list(step_records(st, rec))
    assert s.steps == len(rows) == 63
    assert s.calls == sum(r["samples"] for r in rows) == rec.calls
    assert s.rounds.max == max(r["rounds"] for r in rows) == rec.max_rounds
    assert rows[s.rounds.max_step]["rounds"] == s.rounds.max
    assert s.red_flags.total == rec.red_flags
    assert s.errors == rec.errors
    valid = sum(sum(r["votes"]) for r in rows)
    assert s.per_agent[0].votes == valid
    assert s.p_measured is not None and s.per_agent[0].p_low < s.p_measured < s.per_agent[0].p_high
    # the measured calls per step are near the gambler's-ruin expectation at the measured p
    assert s.calls_per_step_theory is not None and 0.7 < s.calls_per_step / s.calls_per_step_theory < 1.3
    top = s.hardest.most_rounds[0]
    assert top.rounds == s.rounds.max
    assert s.series.calls_cum[-1] == s.calls
    code, out = _cli("trace", "stats", "h", "--store", str(hanoi))
    assert code == 0 and "calls per step" in out and "hardest steps" in out
    code, out = _cli("trace", "stats", "h", "--json", "--store", str(hanoi))
    assert json.loads(out) == s.model_dump(exclude={"series"})


def test_export_jsonl_is_one_documented_record_per_step(hanoi, tmp_path) -> None:
    out = tmp_path / "h.jsonl"
    code, _ = _cli("trace", "export", "h", "--format", "jsonl", "-o", str(out), "--store", str(hanoi))
    assert code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 63
    doc = (Path(__file__).parents[2] / "docs" / "trace-format.md").read_text()
    for line in lines:
        rec = json.loads(line)
        for key in rec:
            assert f"`{key}`" in doc, f"field {key} is documented"
    assert [json.loads(x)["step"] for x in lines] == list(range(63))


def test_export_parquet(hanoi, tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "h.parquet"
    code, msg = _cli("trace", "export", "h", "--format", "parquet", "-o", str(out), "--store", str(hanoi))
    assert code == 0, msg
    table = pq.read_table(out)
    assert table.num_rows == 63 and table.column("step").to_pylist() == list(range(63))
    assert json.loads(table.column("answer")[0].as_py())["move"] == [1, 0, 1]


def test_replay_checks_every_step_of_a_faithful_run(hanoi) -> None:
    result = replay_run("h", store=hanoi)
    assert result.steps == 63 and result.finished is True and result.snapshots_checked >= 7
    code, out = _cli("replay", "h", "--store", str(hanoi))
    assert code == 0 and "63 steps replayed" in out


def test_replay_catches_a_nondeterministic_workflow_from_a_recorded_trace(tmp_path) -> None:
    store = _copy("drifting.sqlite", tmp_path)
    with pytest.raises(NondeterminismError) as err:
        replay_run("drifting", store=store)
    e = err.value
    assert e.step == 5 and e.expected != e.actual
    assert "-It is" in e.detail and "+It is" in e.detail, "the recorded and replayed prompts are shown"
    code, out = _cli("replay", "drifting", "--store", str(store))
    assert code == 2 and "step 5" in out and e.expected in out


def test_replay_catches_an_apply_that_reads_hidden_state(tmp_path) -> None:
    from tests.fixtures import drifting

    store = tmp_path / "s.sqlite"
    options = {"agents": ["simulated:p=0.95,seed=1"], "commit_every": 3, "snapshots": "all"}
    start_run("tests.fixtures.drifting:Leaky", {"steps": 10}, options, store=store, run_id="leaky")
    assert replay_run("leaky", store=store).steps == 10
    drifting.BONUS = 1
    try:
        with pytest.raises(NondeterminismError, match="differs from the recorded snapshot") as err:
            replay_run("leaky", store=store)
    finally:
        drifting.BONUS = 0
    assert err.value.step == 2 and "extra: recorded 0, replayed" in err.value.detail


def test_a_fork_with_the_same_settings_reproduces_the_parent(hanoi, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    shutil.copy(hanoi, store)
    summary = fork_run("h", 25, store=store, new_id="f")
    assert summary.first_step == 25 and summary.steps == 63 - 25
    with Store.open(store) as st:
        parent, child = st.run("h"), st.run("f")
        theirs = list(step_records(st, parent, 25))
        ours = list(step_records(st, child, 25))
    assert [[r[k] for k in COMPARED] for r in ours] == [[r[k] for k in COMPARED] for r in theirs]
    assert (child.parent_run_id, child.parent_step) == ("h", 25)
    assert replay_run("f", store=store).steps == 63
    code, out = _cli("runs", "--store", str(store))
    assert "forked from h at step 25" in out


def test_a_fork_with_new_settings_is_linked_and_replayable(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    start_run(
        "counting",
        {"steps": 30, "window": 5},
        {"agents": ["simulated:p=0.8,spread=2,tokens=5,seed=3"], "k": 2},
        store=store,
        run_id="c",
    )
    code, out = _cli(
        "fork",
        "c",
        "--from-step",
        "12",
        "--k",
        "4",
        "--set",
        "window=3",
        "--run-id",
        "c2",
        "--store",
        str(store),
        "--json",
    )
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == 18 and summary["first_step"] == 12 and summary["k"] == 4
    with Store.open(store) as st:
        parent, child = st.run("c"), st.run("c2")
        (mine,) = step_records(st, child, 12, 13)
        (theirs,) = step_records(st, parent, 12, 13)
    assert child.params["window"] == 3 and child.config["k"] == 4
    assert mine["digest"] != theirs["digest"], "the fork's prompts show 3 numbers, the parent's 5"
    assert mine["answer"] == theirs["answer"], "both continue the same chain"
    assert replay_run("c2", store=store).steps == 30
    code, out = _cli("trace", "show", "c2", "--step", "3", "--store", str(store))
    assert code == 2 and "forked from c" in out
    code, out = _cli("fork", "c", "--from-step", "99", "--store", str(store))
    assert code == 2 and "fork it from a step in 0..30" in out


def test_an_older_store_is_upgraded_in_place_and_readable(tmp_path) -> None:
    store = _copy("v1-hanoi.sqlite", tmp_path)
    with sqlite3.connect(store) as c:
        assert c.execute("SELECT value FROM meta").fetchone() == ("1",)
    code, out = _cli("trace", "show", "v1-hanoi", "--step", "2", "--store", str(store))
    assert code == 0 and "step 2" in out
    with sqlite3.connect(store) as c:
        assert c.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    with Store.open(store) as st:
        rec = st.run("v1-hanoi")
        assert rec.workflow_ref == "hanoi"
        rows = list(step_records(st, rec))
    assert len(rows) == 15 and rows[0]["tokens"] is None and rows[0]["input"] is None
    assert rows[0]["microstep"] is None and rows[0]["tag"] is None  # the columns versions 2 and 3 added
    assert replay_run("v1-hanoi", store=store).finished is True


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_an_older_store_that_cannot_be_written_is_refused_untouched(tmp_path) -> None:
    store = _copy("v1-hanoi.sqlite", tmp_path)
    before = store.read_bytes()
    store.chmod(0o444)
    with pytest.raises(StoreError, match="needs upgrading"):
        Store.open(store)
    assert store.read_bytes() == before


def test_an_older_store_in_a_read_only_folder_is_refused_untouched(tmp_path, monkeypatch) -> None:
    store = _copy("v1-hanoi.sqlite", tmp_path)
    before = store.read_bytes()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real(p, mode))
    with pytest.raises(StoreError, match="open it once with write access"):
        Store.open(store)
    assert store.read_bytes() == before


def test_a_newer_store_is_refused_untouched(tmp_path) -> None:
    store = _copy("v1-hanoi.sqlite", tmp_path)
    with sqlite3.connect(store) as c:
        c.execute("UPDATE meta SET value='99'")
    before = store.read_bytes()
    code, out = _cli("trace", "stats", "v1-hanoi", "--store", str(store))
    assert code == 2 and "schema version 99" in out
    assert store.read_bytes() == before


def test_reading_a_trace_never_runs_code_from_it(hanoi, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    shutil.copy(hanoi, store)
    with sqlite3.connect(store) as c:
        c.execute("UPDATE runs SET workflow_ref='os:system', workflow='os'")
    code, out = _cli("trace", "stats", "h", "--store", str(store))
    assert code == 0  # stats read rows only; the workflow named in the store is never imported
    with pytest.raises(UserError, match="not a maker Workflow"):
        replay_run("h", store=store)


def test_a_fork_that_fails_resumes_from_its_own_commits(tmp_path) -> None:
    from maker import StepUndecidedError
    from maker.runs import resume_run

    store = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 5}, {"agents": [AGENT], "k": 2}, store=store, run_id="p")
    # a coin-flipping agent with one round per step cannot decide a step: the fork fails, resumably
    with pytest.raises(StepUndecidedError):
        fork_run(
            "p",
            10,
            store=store,
            new_id="f",
            overrides={"agents": ["simulated:p=0.5,spread=1,seed=9"], "max_rounds": 1, "k": 3},
        )
    with Store.open(store) as st:
        failed = st.run("f")
    assert failed.status == "failed" and failed.first_step == 10 and failed.steps >= 10
    summary = resume_run("f", store=store, overrides={"agents": [AGENT], "max_rounds": 100})
    assert summary.status == "done" and summary.first_step == 10 and summary.steps == 31 - 10
    assert replay_run("f", store=store).steps == 31


def test_show_and_stats_name_the_drafter_verifiers_and_their_verdicts(tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    summary = start_run(
        "hanoi",
        {"disks": 7},
        {
            "agents": ["simulated:p=0.998,seed=1"],
            "k": 3,
            "drafter": "simulated:p=0.8,seed=2",
            "verifiers": ["simulated:tpr=0.99,fpr=0.05,seed=3", "simulated:tpr=0.99,fpr=0.05,seed=4"],
            "verify_k": 2,
            "large_first": 3,
        },
        store=store,
        run_id="s",
    )
    with Store.open(store) as st:
        rec = st.run("s")
        rows = list(step_records(st, rec))
        stats = trace_stats(st, rec)
    assert all(r["speculation"]["route"] == "large_first" for r in rows[:3])
    drafted = [r for r in rows[3:] if r["speculation"].get("drafter")]
    assert drafted and all(r["speculation"]["drafter"] == "drafter: simulated:p=0.8,seed=2" for r in drafted)
    accepted = [r for r in drafted if r["speculation"].get("accepted")]
    assert accepted and all(r["agent"].startswith("drafter: ") for r in accepted)
    for r in accepted:
        assert [v["verifier"] for v in r["speculation"]["verdicts"]] == [
            "verifier 1: simulated:tpr=0.99,fpr=0.05,seed=3",
            "verifier 2: simulated:tpr=0.99,fpr=0.05,seed=4",
        ]
        assert all(v["accept"] and 0 <= v["score"] <= 9 for v in r["speculation"]["verdicts"])
    spec = stats.speculation
    assert spec is not None
    assert (spec.drafted, spec.accepted, spec.escalated) == (
        summary.drafted,
        summary.accepted,
        summary.escalated,
    )
    assert spec.routed == {"large_first": 3}
    code, out = _cli("trace", "show", "s", "--step", str(accepted[0]["step"]), "--store", str(store))
    assert "drafted by drafter: simulated:p=0.8,seed=2" in out and "accepted" in out and "score" in out
