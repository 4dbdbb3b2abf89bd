"""Workflows from files (``maker run path/to/file.py:Class``), resumed, replayed and forked from another working
directory after a real SIGKILL; ``maker workflows`` describing one; ``--set`` read by the declared types; and the
Python API's errors naming option keys where the command line names flags."""

from __future__ import annotations

import enum
import json
import pathlib
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from maker import StepUndecidedError, UserError, start_run
from maker.cli import as_flags
from maker.cli._params import read_params, reading
from maker.runs import canonical_ref, is_file_ref, resolve_workflow, workflow_ref
from tests._cli import committed_steps, has_committed, kill_when, peek, run_maker

FLOW = '''"""A workflow in a file of its own: adds 1, 2, 3, ... to a running total, one voted step each."""

from pydantic import BaseModel, Field
from tally_prompt import PROMPT  # a neighbour of this file, found while it loads

from maker import DONE, Microstep, State, Voting, Workflow


class Params(BaseModel):
    steps: int = Field(20, ge=1, description="numbers to add")
    label: str = Field("run", description="a name carried to the result")
    start: list[int] = Field(default_factory=lambda: [0], description="numbers to begin from (their sum)")


class Tally(State):
    total: int
    done: int = 0
    steps: int
    label: str


class Add(BaseModel):
    total: int


add = Microstep("add", prompt=PROMPT, schema=Add, voting=Voting(k=2),
                mistakes=lambda right, i: Add(total=right.total + 1 + i))


class TallyFlow(Workflow, name="tally", version=VERSION):
    """Adds the step number to a running total."""

    Params = Params
    State = Tally
    microsteps = (add,)

    def start(self, p):
        return Tally(total=sum(p.start), steps=p.steps, label=p.label)

    def next(self, s):
        return DONE if s.done == s.steps else add.ask(total=s.total, n=s.done + 1)

    def apply(self, s, a):
        return s.model_copy(update={"total": a.total, "done": s.done + 1})

    def oracle(self, s):
        return Add(total=s.total + s.done + 1)

    def expected_steps(self, p):
        return p.steps

    def result(self, s):
        return {"label": s.label, "total": s.total}


if __name__ == "__main__":
    raise SystemExit("loaded as __main__")
'''

AGENT = "simulated:p=0.999,seed=3"
ROOT = Path(__file__).resolve().parents[2]


def _write_flow(folder: Path, version: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tally_prompt.py").write_text('PROMPT = "Add {n} to {total}. Answer: total = N"\n')
    path = folder / "tally.py"
    path.write_text(FLOW.replace("VERSION", str(version)))
    return path


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _ref(db: Path, run_id: str) -> str:
    rows = peek(db, "SELECT workflow_ref FROM runs WHERE run_id=?", (run_id,))
    assert rows, f"no run {run_id} in {db}"
    return rows[0][0]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_file_workflow_killed_then_resumed_replayed_and_forked_from_another_directory(
    tmp_path: Path, background: Any
) -> None:
    path = _write_flow(tmp_path / "flows")
    db = tmp_path / "runs.sqlite"
    steps = 400
    # A relative path, from the folder above the file; held at step 200 (tests/fixtures/held.py), so the run is
    # still going when it is killed, however fast the machine.
    run = background(
        "run",
        "flows/tally.py:TallyFlow",
        "--set",
        f"steps={steps}",
        "--set",
        "label=007",
        "--agent",
        AGENT,
        "--run-id",
        "R",
        "--store",
        db,
        "--commit-every",
        "5",
        cwd=tmp_path,
        hold=200,
    )
    kill_when(run.proc, lambda: run.held() and has_committed(db, "R", 40), "40 committed steps", run.stderr)
    killed_at = committed_steps(db, "R")
    assert killed_at is not None and 40 <= killed_at < steps
    assert _ref(db, "R") == f"{path}:TallyFlow"  # absolute, so another directory finds it

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _json(run_maker("resume", "R", "--store", db, "--agent", AGENT, "--json", tmp=tmp_path, cwd=elsewhere))
    assert done["status"] == "done" and done["steps"] == steps and done["errors"] == 0
    assert done["result"] == {"label": "007", "total": steps * (steps + 1) // 2}  # "007" stayed a string

    replayed = _json(run_maker("replay", "R", "--store", db, "--json", tmp=tmp_path, cwd=elsewhere))
    assert replayed["steps"] == steps and replayed["finished"] is True

    fork = _json(
        run_maker(
            "fork",
            "R",
            "--from-step",
            "100",
            "--set",
            "label=8",
            "--run-id",
            "F",
            "--store",
            db,
            "--json",
            tmp=tmp_path,
            cwd=elsewhere,
        )
    )
    assert fork["status"] == "done" and fork["steps"] == steps - 100
    assert fork["result"] == {"label": "8", "total": steps * (steps + 1) // 2}
    assert _ref(db, "F") == f"{path}:TallyFlow"
    assert _json(run_maker("replay", "F", "--store", db, "--json", tmp=tmp_path, cwd=tmp_path))["steps"] == steps


def test_a_missing_or_changed_file_is_an_error_naming_its_path(tmp_path: Path) -> None:
    path = _write_flow(tmp_path / "flows")
    db = tmp_path / "s.sqlite"
    _json(
        run_maker(
            "run",
            f"{path}:TallyFlow",
            "--set",
            "steps=5",
            "--agent",
            AGENT,
            "--run-id",
            "R",
            "--store",
            db,
            "--json",
            tmp=tmp_path,
        )
    )

    moved = path.rename(tmp_path / "moved.py")
    for args in (["replay", "R"], ["resume", "R"], ["fork", "R", "--from-step", "2"]):
        proc = run_maker(*args, "--store", db, tmp=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"run R was made by workflow {path}:TallyFlow" in proc.stderr
        assert f"workflow file {path} does not exist" in proc.stderr and "Traceback" not in proc.stderr

    moved.rename(path)
    _write_flow(path.parent, version=2)
    proc = run_maker("replay", "R", "--store", db, tmp=tmp_path)
    assert proc.returncode == 2
    assert f"made by {path}:TallyFlow version 1, but that workflow is now version 2" in proc.stderr

    path.write_text("raise RuntimeError('broken on purpose')\n")
    proc = run_maker("replay", "R", "--store", db, tmp=tmp_path)
    assert proc.returncode == 2
    assert f"workflow file {path} failed to load: RuntimeError: broken on purpose" in proc.stderr


def test_workflows_describes_a_file_or_module_workflow(tmp_path: Path) -> None:
    path = _write_flow(tmp_path / "flows")
    row = _json(run_maker("workflows", "flows/tally.py:TallyFlow", "--json", tmp=tmp_path, cwd=tmp_path))
    assert row["name"] == "tally" and row["version"] == 1 and row["ref"] == f"{path}:TallyFlow"
    assert row["description"] == "Adds the step number to a running total." and row["oracle"] is True
    assert row["params"] == {
        "steps": {"type": "int", "required": False, "default": 20, "help": "numbers to add", "set_reads": "scalar"},
        "label": {
            "type": "str",
            "required": False,
            "default": "run",
            "help": "a name carried to the result",
            "set_reads": "text",
        },
        "start": {
            "type": "list[int]",
            "required": False,
            "default": [0],
            "help": "numbers to begin from (their sum)",
            "set_reads": "json",
        },
    }
    (step,) = row["microsteps"]
    assert step["name"] == "add" and step["inputs"] == ["n", "total"] and step["answer"] == {"total": "int"}
    assert step["voting"]["k"] == 2 and step["red_flags"] == [] and step["max_tokens"] == 750

    human = run_maker("workflows", f"{path}:TallyFlow", tmp=tmp_path).stdout
    assert "--set label=...  str (text as given), default 'run'" in human
    assert "--set start=...  list[int] (JSON), default [0]" in human
    assert "add(n, total) -> total: int; k=2" in human

    module = _json(run_maker("workflows", "examples.countdown:Countdown", "--json", tmp=tmp_path, cwd=ROOT))
    assert module["name"] == "countdown" and module["ref"] == "examples.countdown:Countdown"
    assert module["params"]["start"]["default"] == 10

    proc = run_maker("workflows", "flows/tally.py:Nope", tmp=tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and "has no 'Nope'; its workflow classes: TallyFlow" in proc.stderr


def test_set_values_are_read_by_the_declared_type(tmp_path: Path) -> None:
    _write_flow(tmp_path / "flows")
    out = _json(
        run_maker(
            "run",
            "flows/tally.py:TallyFlow",
            "--set",
            "steps=3",
            "--set",
            "label=0042",
            "--set",
            "start=[1,2]",
            "--agent",
            AGENT,
            "--store",
            tmp_path / "s.sqlite",
            "--json",
            tmp=tmp_path,
            cwd=tmp_path,
        )
    )
    assert out["result"] == {"label": "0042", "total": 3 + 6}

    proc = run_maker(
        "run",
        "flows/tally.py:TallyFlow",
        "--set",
        "start=oops",
        "--agent",
        AGENT,
        "--store",
        tmp_path / "s.sqlite",
        tmp=tmp_path,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "error: bad parameter start=oops: must be JSON, as start is list[int]; e.g. start='[1, 2]'" in proc.stderr


class _Color(enum.Enum):
    RED = "red"


class _Level(enum.Enum):
    LOW = 1


@pytest.mark.parametrize(
    "annotation, how",
    [
        (str, "text"),
        (str | None, "text"),
        (int | str, "text"),
        (Literal["a", "b"], "text"),
        (pathlib.Path, "text"),
        (_Color, "text"),
        (Annotated[str, Field(min_length=1)], "text"),
        (int, "scalar"),
        (float, "scalar"),
        (bool, "scalar"),
        (int | None, "scalar"),
        (int | float, "scalar"),
        (list[int], "json"),
        (dict[str, int], "json"),
        (tuple[int, int], "json"),
        (Literal[1, 2], "json"),
        (_Level, "json"),
        (BaseModel, "json"),
        (list[int] | None, "json"),
        (Any, "any"),
    ],
)
def test_how_set_reads_each_type(annotation: Any, how: str) -> None:
    assert reading(annotation) == how


def test_read_params_gives_values_the_model_accepts() -> None:
    class P(BaseModel):
        name: str = "x"
        n: int | None = 1
        ratio: float = 0.5
        on: bool = False
        sizes: list[int] = []
        extra: Any = None

    texts = {
        "name": "12",
        "n": "null",
        "ratio": "1e-3",
        "on": "true",
        "sizes": "[3, 5]",
        "extra": "plain text",
        "unknown": "7",
    }
    values = read_params(P, texts)
    assert values == {
        "name": "12",
        "n": None,
        "ratio": "1e-3",
        "on": "true",
        "sizes": [3, 5],
        "extra": "plain text",
        "unknown": "7",
    }
    got = P.model_validate({k: v for k, v in values.items() if k != "unknown"})
    assert got == P(name="12", n=None, ratio=0.001, on=True, sizes=[3, 5], extra="plain text")
    with pytest.raises(UserError, match="^bad parameter sizes=3,5: must be JSON, as sizes is list\\[int\\]"):
        read_params(P, {"sizes": "3,5"})


def test_a_file_loads_once_as_its_own_module_and_leaves_sys_path_alone(tmp_path: Path) -> None:
    path = _write_flow(tmp_path / "flows")
    before = list(sys.path)
    wf = resolve_workflow(f"{path}:TallyFlow")
    assert sys.path == before  # its folder was on sys.path only while it loaded
    assert wf.__module__.startswith("maker_workflow_file_") and sys.modules[wf.__module__].__file__ == str(path)
    assert resolve_workflow(f"{path}:TallyFlow") is wf  # unchanged on disk: not run again
    assert workflow_ref(wf) == f"{path}:TallyFlow"
    assert is_file_ref("flows/tally.py:TallyFlow") and is_file_ref("tally.py:TallyFlow")
    assert not is_file_ref("examples.countdown:Countdown") and not is_file_ref("hanoi")
    assert canonical_ref("examples.countdown:Countdown") == "examples.countdown:Countdown"

    with pytest.raises(UserError, match="name the class after the colon"):
        resolve_workflow(f"{path}:")
    with pytest.raises(UserError, match="a file is given as x.py:ClassName"):
        resolve_workflow("x.py")


def test_a_run_from_python_records_the_files_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_flow(tmp_path / "flows")
    monkeypatch.chdir(tmp_path)
    summary = start_run(
        "flows/tally.py:TallyFlow", {"steps": 4}, {"agents": [AGENT]}, store=tmp_path / "s.sqlite", run_id="P"
    )
    assert summary.status == "done" and summary.result == {"label": "run", "total": 10}
    assert _ref(tmp_path / "s.sqlite", "P") == f"{path}:TallyFlow"


def test_the_python_api_names_option_keys_and_the_cli_names_flags(tmp_path: Path) -> None:
    opts = {"agents": [AGENT], "verifiers": [AGENT]}
    with pytest.raises(UserError) as exc:
        start_run("hanoi", {"disks": 3}, opts, store=tmp_path / "a.sqlite")
    assert str(exc.value) == "verifiers (`verifiers`) need a drafter (`drafter`) whose drafts they check"

    proc = run_maker(
        "run",
        "hanoi",
        "--set",
        "disks=3",
        "--agent",
        AGENT,
        "--verifier",
        AGENT,
        "--store",
        tmp_path / "b.sqlite",
        tmp=tmp_path,
    )
    assert proc.returncode == 2
    assert "error: verifiers (--verifier) need a drafter (--drafter) whose drafts they check" in proc.stderr

    coin = {"agents": ["simulated:p=0.5,spread=1"], "max_rounds": 1, "k": 5}
    with pytest.raises(StepUndecidedError) as undecided:
        start_run("hanoi", {"disks": 4}, coin, store=tmp_path / "c.sqlite", run_id="U")
    assert "a larger `max_rounds`, or another agent to escalate to (a stronger model, in `agents`)" in str(
        undecided.value
    )
    # options are named by their keys; the `maker ...` commands it suggests (calibrate, trace show) keep theirs
    assert "--" not in re.sub(r"`maker [^`]*`", "", str(undecided.value))

    assert (
        as_flags("give `agents`, `max_rounds` or `params`; `nothing` stays")
        == "give --agent, --max-rounds or --set; `nothing` stays"
    )
