"""Failures leave a trace and say what to do: a step no vote decides is recorded apart from the committed steps and
its error names the red flags and the likeliest fix; workflow code that raises names the method, the workflow and
the step and shows the user's frame; bad options are one line; the counters stay the sums over committed steps."""

from __future__ import annotations

import json
import shutil
import sqlite3
import textwrap
import traceback
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from examples.countdown import Count, Countdown, Next, decrement
from maker import (
    DONE,
    Microstep,
    RedFlag,
    StepUndecidedError,
    UserError,
    WorkflowCodeError,
    WorkflowDefinitionError,
)
from maker.runs import replay_run, resume_run, start_run
from maker.store import Store
from tests._cli import run_maker

FIXTURES = Path(__file__).parents[1] / "fixtures"

# Fails at step 34 with this seed: one round of five samples decides a step only when all five agree.
SPLIT = {"agents": ["simulated:p=0.99,spread=1"], "k": 5, "max_rounds": 1, "seed": 2}
GARBLED = "simulated:malformed=1"  # every response out of format


def _sums(db: Path, run_id: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(calls, tokens, red flags) as the run row records them, and as the sums over its committed step rows."""
    con = sqlite3.connect(db)
    try:
        (rid, calls, tokens, flags) = con.execute(
            "SELECT id, calls, tokens, red_flags FROM runs WHERE run_id=?", (run_id,)
        ).fetchone()
        rows = con.execute("SELECT samples, tokens, red_flags FROM steps WHERE run=?", (rid,)).fetchall()
    finally:
        con.close()
    summed = (
        sum(r[0] for r in rows),
        sum(r[1] for r in rows),
        sum(sum(json.loads(r[2]).values()) for r in rows if r[2]),
    )
    return (calls, tokens, flags), summed


# -- a step no vote decides ---------------------------------------------------------------------


def test_undecided_step_is_recorded_apart_and_the_run_resumes_past_it(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with pytest.raises(StepUndecidedError) as info:
        start_run("hanoi", {"disks": 6}, {**SPLIT, "detail": "samples"}, store=db, run_id="u")
    err = info.value
    assert err.step == 34 and err.samples == 5 and err.votes == "[4,1]" and err.flags == {}
    text = str(err)
    assert text.startswith(
        "step 34: no answer won the vote within 1 rounds (microstep 'hanoi_move'; agents tried: "
        "simulated:p=0.99,spread=1)."
    )
    assert "The votes never got 5 ahead" in text and "larger `max_rounds`" in text and "in `agents`" in text
    assert "maker calibrate hanoi --agent simulated:p=0.99,spread=1" in text
    assert "`maker trace show u --step 34` shows this attempt, its samples included" in text
    assert "maker resume u" in text

    with Store.open(db) as st:
        rec = st.run("u")
        assert rec.status == "failed" and rec.steps == 34
        assert st.head(rec.id) == (34, 34), "the failed step is not among the committed ones"
        (f,) = st.failures(rec.id)
        assert (f["step"], f["kind"], f["microstep"], f["votes"], f["samples"], f["calls"]) == (
            34,
            "undecided",
            "hanoi_move",
            "[4,1]",
            5,
            5,
        )
        assert f["answer"] is None and f["error"] == text
        detail = json.loads(f["sample_detail"])
        assert [s[0] for s in detail] == list(range(5)) and all(s[6] is None for s in detail)
        assert len({json.dumps(s[7]) for s in detail}) == 2, "two answers split the vote"
    assert _sums(db, "u")[0] == _sums(db, "u")[1]
    assert replay_run("u", store=db).steps == 34  # replay sees the committed steps only

    summary = resume_run("u", store=db, overrides={"agents": ["simulated:p=0.999"], "max_rounds": 100})
    assert summary.status == "done" and summary.steps == 63 and summary.solved
    recorded, summed = _sums(db, "u")
    assert recorded == summed, "after the resume the counters are still the sums over the committed steps"
    assert recorded[0] > 0 and summed[0] > _sums_after(db, 34), "the resume kept the counters of the steps before"
    with Store.open(db) as st:
        rec = st.run("u")
        assert len(st.failures(rec.id)) == 1 and st.head(rec.id) == (63, 63)
    assert replay_run("u", store=db).steps == 63


def _sums_after(db: Path, step: int) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT sum(samples) FROM steps WHERE step>=?", (step,)).fetchone()[0]
    finally:
        con.close()


def test_nearly_all_red_flagged_stops_early_naming_the_reason_and_fix(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with pytest.raises(StepUndecidedError) as info:
        start_run("hanoi", {"disks": 4}, {"agents": [GARBLED], "seed": 3}, store=db, run_id="g")
    err = info.value
    text = str(err)
    # ten rounds of three, not the hundred rounds the round limit allows
    assert err.step == 0 and err.samples == 30 and err.flags == {"format": 30} and err.votes == "[]"
    assert text.startswith(
        "step 0: no answer won the vote: nearly every sample was red-flagged, so the last agent "
        "stopped after 30 samples instead of spending up to 100 rounds (microstep 'hanoi_move'; agents "
        f"tried: {GARBLED})."
    )
    assert "30 samples, 30 red-flagged: format 30; tally [], first-to-ahead-by-3." in text
    assert (
        "Every sample was red-flagged as format: check that the prompt asks for the fields `move`, "
        "`next_state`, one `name = value` line each" in text
    )
    assert f"maker calibrate hanoi --agent {GARBLED}" in text
    assert "run with `detail` = samples to keep its samples too" in text
    with Store.open(db) as st:
        (f,) = st.failures(st.run("g").id)
        assert f["samples"] == err.samples and json.loads(f["red_flags"]) == {"format": err.samples}
        assert f["sample_detail"] is None and f["input"] and "next_state" in f["input"]


def test_an_agent_that_red_flags_nearly_everything_escalates_after_a_few_samples(tmp_path: Path) -> None:
    summary = start_run(
        "hanoi",
        {"disks": 3},
        {"agents": [GARBLED, "simulated:p=0.999"], "max_rounds": 100},
        store=tmp_path / "s.sqlite",
        run_id="e",
    )
    assert summary.status == "done" and summary.solved
    assert summary.agent_calls[f"agent 1: {GARBLED}"] < 40 * 7, "each step left the garbling agent early"
    recorded, summed = _sums(tmp_path / "s.sqlite", "e")
    assert recorded == summed


def _never_13(answer: Next, inputs: Any) -> str | None:
    return "13 is unlucky" if inputs["value"] == 13 else None


def _crashes_at_5(answer: Next, inputs: Any) -> str | None:
    if Unlucky.crash and inputs["value"] == 5:
        return {}["no such key"]  # the bug the error must point at
    return None


_picky = Microstep(
    "decrement",
    prompt="Subtract one from {value}. Answer with one line: value = N",
    schema=Next,
    vote_key=lambda a: a.value,
    mistakes=decrement.mistakes,
    red_flags=[RedFlag("lucky", _never_13), RedFlag("careful", _crashes_at_5)],
)


class Unlucky(Countdown, name="unlucky"):
    """Its microstep's rule rejects every answer at 13 (a rule that cannot be met); its other rule crashes at 5
    when ``crash`` is set."""

    microsteps = (_picky,)
    crash: ClassVar[bool] = False

    def next(self, state: Count) -> Any:
        return DONE if state.value == 0 else _picky.ask(value=state.value)


def test_a_rule_that_rejects_everything_is_named_in_the_diagnosis(tmp_path: Path) -> None:
    with pytest.raises(StepUndecidedError) as info:
        start_run(Unlucky, {"start": 20}, {"agents": ["simulated:p=0.99"]}, store=tmp_path / "s.sqlite", run_id="l")
    err = info.value
    assert err.step == 7 and set(err.flags) == {"lucky"}
    assert (
        "Every sample was red-flagged as lucky: microstep 'decrement''s rule 'lucky' rejected them "
        "(e.g. 'lucky: 13 is unlucky')" in str(err)
    )


# -- workflow code that raises -------------------------------------------------------------------


class Brittle(Countdown, name="brittle"):
    """Countdown with a bug in each method, switched on by ``broken``."""

    broken: ClassVar[str | None] = None

    def next(self, state: Count) -> Any:
        if self.broken == "next" and state.steps == 7:
            raise KeyError("bug in next")
        return super().next(state)

    def apply(self, state: Count, answer: Next) -> Any:
        if self.broken == "apply" and state.steps == 7:
            raise ZeroDivisionError("bug in apply")
        if self.broken == "state" and state.steps == 7:
            return {"value": answer.value}
        return super().apply(state, answer)

    def oracle(self, state: Count) -> Any:
        if self.broken == "oracle" and state.steps == 7:
            raise ValueError("bug in oracle")
        return super().oracle(state)


RAISED = {
    "next": "KeyError: 'bug in next'",
    "apply": "ZeroDivisionError: bug in apply",
    "oracle": "ValueError: bug in oracle",
}


@pytest.fixture
def brittle() -> Any:
    yield Brittle
    Brittle.broken = None


@pytest.mark.parametrize("method", list(RAISED))
def test_a_crash_in_workflow_code_names_method_workflow_and_step_and_shows_the_users_frame(
    method: str, brittle: Any, tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    brittle.broken = method
    with pytest.raises(WorkflowCodeError) as info:
        start_run(brittle, {"start": 20}, {"agents": ["simulated:p=0.99"], "detail": "samples"}, store=db, run_id="b")
    err = info.value
    text = str(err)
    assert err.step == 7 and err.run_id == "b" and err.method == f"Brittle.{method}" and err.workflow == "brittle"
    assert text.startswith(f"Brittle.{method} raised {RAISED[method]} at step 7")
    assert "of workflow 'brittle'" in text
    assert f'{__file__}", line' in text and f", in {method}\n" in text and f"bug in {method}" in text
    assert not any(f"{name}.py" in text for name in ("_scheduler", "_decider", "runs", "engine", "dsl"))
    assert "Committed steps are kept; fix the code, then `maker resume b` goes on from step 7." in text
    # the original exception's traceback starts in the user's code, not in the engine
    cause = err.__cause__
    assert type(cause).__name__ == RAISED[method].split(":")[0]
    frames = traceback.extract_tb(cause.__traceback__)
    assert frames[0].filename == __file__ and frames[0].name == method

    with Store.open(db) as st:
        rec = st.run("b")
        assert rec.status == "failed" and rec.error == text and st.head(rec.id) == (7, 7)
        assert Count.model_validate_json(st.latest_snapshot(rec.id)[1]).value == 13
        (f,) = st.failures(rec.id)
        assert (f["step"], f["kind"]) == (7, method)
        if method == "apply":  # the step was decided: its answer and samples are in the record
            assert json.loads(f["answer"]) == {"value": 12} and f["samples"] == len(json.loads(f["sample_detail"]))
        if method == "next":
            assert f["microstep"] is None
    recorded, summed = _sums(db, "b")
    assert recorded == summed and recorded[0] > 0

    brittle.broken = None  # the fix; resume goes on from the failed step
    summary = resume_run("b", store=db)
    assert summary.status == "done" and summary.solved and summary.steps == 20
    recorded, summed = _sums(db, "b")
    assert recorded == summed and summed[0] > _sums_after(db, 7), "the counters of steps 0-6 were restored"


def test_apply_returning_no_state_is_an_error_at_that_step(brittle: Any, tmp_path: Path) -> None:
    brittle.broken = "state"
    with pytest.raises(WorkflowCodeError) as info:
        start_run(brittle, {"start": 20}, {"agents": ["simulated:p=0.99"]}, store=tmp_path / "s.sqlite", run_id="t")
    text = str(info.value)
    assert info.value.step == 7
    assert text.startswith(
        "Brittle.apply returned dict {'value': 12} at step 7 of workflow 'brittle'; it must return a Count"
    )
    assert f'{__file__}", line' in text and "maker resume t" in text
    with Store.open(tmp_path / "s.sqlite") as st:
        rec = st.run("t")
        assert st.head(rec.id) == (7, 7) and st.latest_snapshot(rec.id)[0] == 7


def test_a_crashing_red_flag_rule_stops_the_run_at_its_step(tmp_path: Path) -> None:
    Unlucky.crash = True
    try:
        with pytest.raises(WorkflowCodeError) as info:
            start_run(Unlucky, {"start": 12}, {"agents": ["simulated:p=0.99"]}, store=tmp_path / "s.sqlite", run_id="r")
    finally:
        Unlucky.crash = False
    err = info.value
    text = str(err)
    assert err.step == 7 and err.method == "red-flag rule 'careful' of microstep 'decrement'"
    assert text.startswith(
        "red-flag rule 'careful' of microstep 'decrement' raised KeyError: 'no such key' at "
        "step 7 of workflow 'unlucky'"
    )
    assert f'{__file__}", line' in text and "in _crashes_at_5" in text and "dsl.py" not in text
    with Store.open(tmp_path / "s.sqlite") as st:
        (f,) = st.failures(st.run("r").id)
        assert f["kind"] == "red_flag" and f["digest"]


def test_a_crash_while_drafting_ahead_is_reported_at_its_step(brittle: Any, tmp_path: Path) -> None:
    brittle.broken = "apply"
    opts = {"agents": ["simulated:p=0.99"], "drafter": "simulated:p=0.9,seed=5", "window": 8}
    with pytest.raises(WorkflowCodeError) as info:
        start_run(brittle, {"start": 20}, opts, store=tmp_path / "s.sqlite", run_id="w")
    assert info.value.step == 7 and str(info.value).startswith("Brittle.apply raised ZeroDivisionError")
    recorded, summed = _sums(tmp_path / "s.sqlite", "w")
    assert recorded[1:] == summed[1:]  # drafted steps' calls are counted apart from samples; tokens and flags sum


def test_next_asking_an_undeclared_microstep_is_a_definition_error(tmp_path: Path) -> None:
    class Other(BaseModel):
        value: int

    stray = Microstep("stray", prompt="{value}", schema=Other)

    class Strays(Countdown, name="strays"):
        def next(self, state: Count) -> Any:
            return stray.ask(value=state.value) if state.steps == 3 else super().next(state)

    with pytest.raises(WorkflowDefinitionError) as info:
        start_run(Strays, {"start": 10}, {"agents": ["simulated:p=0.99"]}, store=tmp_path / "s.sqlite", run_id="d")
    assert str(info.value) == (
        "Strays.next asked microstep 'stray' at step 3, but it is not in Strays's microsteps "
        "(decrement); declare it: microsteps = (decrement, stray)"
    )


# -- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "bad run option `k` 0: must be greater than or equal to 1"),
        (
            {"max_rounds": -2, "temperature": -1},
            "bad run option `max_rounds` -2: must be greater than or equal to 1; "
            "`temperature` -1: must be greater than or equal to 0",
        ),
        ({"rule": "majority"}, "bad run option `rule` 'majority': must be 'ahead_by_k' or 'adaptive'"),
        ({"agents": []}, "bad run option `agents` []: must have at least 1 item after validation, not 0"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(options: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        start_run("hanoi", {"disks": 3}, {"agents": ["simulated"], **options}, store=tmp_path / "s.sqlite")
    assert str(info.value) == message
    assert not (tmp_path / "s.sqlite").exists()


def test_an_unknown_option_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        start_run("hanoi", {"disks": 3}, {"agents": ["simulated"], "rounds": 3}, store=tmp_path / "s.sqlite")
    assert str(info.value).startswith("unknown run option 'rounds' (known: agents, seed, rule, k, confidence,")


# -- stores ---------------------------------------------------------------------------------------


def test_a_store_from_before_failures_were_kept_reads_and_gets_the_table_when_written(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "v1-hanoi.sqlite", db)
    with Store.open(db) as st:  # upgraded, then read-only: no failures table, none to show
        (rec,) = st.runs()
        assert st.failures(rec.id) == []
    con = sqlite3.connect(db)
    assert con.execute("SELECT 1 FROM sqlite_master WHERE name='failures'").fetchone() is None
    con.close()
    with Store.open(db, write=True) as st:
        assert st.failures(rec.id) == []
    con = sqlite3.connect(db)
    assert con.execute("SELECT 1 FROM sqlite_master WHERE name='failures'").fetchone() is not None
    con.close()


# -- the real command line ---------------------------------------------------------------------------


def test_cli_undecided_step_diagnosis_and_trace_show(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    proc = run_maker(
        "run",
        "hanoi",
        "--set",
        "disks=3",
        "--agent",
        GARBLED,
        "--detail",
        "samples",
        "--run-id",
        "F",
        "--store",
        db,
        tmp=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "error: step 0: no answer won the vote: nearly every sample was red-flagged" in proc.stderr
    assert (
        "Every sample was red-flagged as format: check that the prompt asks for the fields `move`, "
        "`next_state`" in proc.stderr
    )
    assert f"maker calibrate hanoi --agent {GARBLED}" in proc.stderr
    assert "`maker trace show F --step 0` shows this attempt, its samples included" in proc.stderr

    shown = run_maker("trace", "show", "F", "--step", "0", "--store", db, tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("step 0  FAILED (undecided), not committed  last agent agent 1: " + GARBLED)
    assert "RED FLAG format" in shown.stdout and "red flags format 30" in shown.stdout
    assert "error    step 0: no answer won the vote" in shown.stdout

    as_json = run_maker("trace", "show", "F", "--step", "0", "--json", "--store", db, tmp=tmp_path)
    (rec,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rec["failed"] is True and rec["kind"] == "undecided" and rec["step"] == 0
    assert rec["red_flags"] == {"format": 30} and len(rec["sample_detail"]) == 30
    assert all(s["red_flag"].startswith("format:") and s["vote"] is None for s in rec["sample_detail"])

    listing = run_maker("trace", "show", "F", "--store", db, tmp=tmp_path)
    assert listing.returncode == 0 and "step 0 failed (undecided); `maker trace show F --step 0`" in listing.stderr


BRITTLE = """
from pydantic import BaseModel

from maker import DONE, Microstep, State, Workflow


class Params(BaseModel):
    start: int = 10


class Count(State):
    value: int
    steps: int = 0


class Next(BaseModel):
    value: int


decrement = Microstep("decrement", prompt="Subtract one from {value}. Answer with one line: value = N", schema=Next,
                      mistakes=lambda right, i: Next(value=right.value + 1 + i))


class Brittle(Workflow, name="brittle"):
    Params = Params
    State = Count
    microsteps = (decrement,)

    def apply(self, state, answer):
        if state.steps == 7:
            raise ZeroDivisionError("bug in apply")
        return state.model_copy(update={"value": answer.value, "steps": state.steps + 1})

    def start(self, params):
        return Count(value=params.start)

    def next(self, state):
        return DONE if state.value == 0 else decrement.ask(value=state.value)

    def oracle(self, state):
        return Next(value=state.value - 1)
"""


def test_cli_crash_in_apply_then_fix_and_resume(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    code = tmp_path / "brittle_wf.py"
    code.write_text(textwrap.dedent(BRITTLE))
    proc = run_maker(
        "run",
        "brittle_wf:Brittle",
        "--set",
        "start=20",
        "--agent",
        "simulated:p=0.99",
        "--run-id",
        "B",
        "--store",
        db,
        tmp=tmp_path,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        "error: Brittle.apply raised ZeroDivisionError: bug in apply at step 7 (microstep 'decrement') of "
        "workflow 'brittle'" in proc.stderr
    )
    assert f'File "{code}", line 31, in apply\n    raise ZeroDivisionError("bug in apply")' in proc.stderr
    assert "_scheduler.py" not in proc.stderr
    assert "fix the code, then `maker resume B` goes on from step 7" in proc.stderr

    shown = run_maker("trace", "show", "B", "--step", "7", "--store", db, tmp=tmp_path, cwd=tmp_path)
    assert shown.stdout.startswith("step 7  FAILED (apply), not committed") and 'answer   {"value": 12}' in shown.stdout

    code.write_text(textwrap.dedent(BRITTLE).replace("if state.steps == 7:", "if False:"))
    resumed = run_maker("resume", "B", "--store", db, "--json", tmp=tmp_path, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "done"
    # the committed step 7 and the earlier failed attempt at it, both shown
    shown = run_maker("trace", "show", "B", "--step", "7", "--store", db, tmp=tmp_path, cwd=tmp_path)
    assert shown.stdout.startswith("step 7  agent 1") and "step 7  FAILED (apply)" in shown.stdout
    recorded, summed = _sums(db, "B")
    assert recorded == summed


def test_cli_bad_option_is_one_line(tmp_path: Path) -> None:
    proc = run_maker(
        "run", "hanoi", "--agent", "simulated", "--max-rounds", "0", "--store", tmp_path / "s.sqlite", tmp=tmp_path
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "error: bad run option --max-rounds 0: must be greater than or equal to 1"
    )
    assert "validation error" not in proc.stderr and "pydantic" not in proc.stderr


@pytest.mark.parametrize("method", ["next", "apply"])
def test_code_that_no_longer_accepts_a_recorded_answer_is_named_when_replay_or_fork_re_apply_it(
    method: str, brittle: Any, tmp_path: Path
) -> None:
    """A run recorded by working code, re-applied by code that now raises at step 7: replay and fork (and resume,
    which re-applies the same way from its snapshot) say which method failed on which recorded step of which run,
    with the user's frame, and change nothing."""
    from maker import fork_run

    db = tmp_path / "s.sqlite"
    start_run(brittle, {"start": 20}, {"agents": ["simulated:p=0.99"], "snapshots": "all"}, store=db, run_id="r")
    with Store.open(db) as st:
        before = list(st.steps(st.run("r").id))
    brittle.broken = method
    for attempt in (
        lambda: replay_run("r", store=db),
        lambda: fork_run("r", 12, store=db, overrides={"snapshots": "every:100"}),
    ):
        with pytest.raises(WorkflowCodeError) as info:
            attempt()
        err = info.value
        assert err.step == 7 and err.run_id == "r" and err.method == f"Brittle.{method}"
        text = str(err)
        assert text.startswith(f"Brittle.{method} raised {RAISED[method]} while re-applying recorded step 7 of run r")
        assert f'{__file__}", line' in text and f"bug in {method}" in text
        assert type(err.__cause__).__name__ == RAISED[method].split(":")[0]
    with Store.open(db) as st:
        assert list(st.steps(st.run("r").id)) == before and [r.run_id for r in st.runs()] == ["r"]
    brittle.broken = None
    assert replay_run("r", store=db).steps == 20
