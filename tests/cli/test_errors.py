"""How the ``maker`` command line shows what it refuses: one line that starts ``error: ``, exit status 2 when the
command was misused (and then nothing ran and nothing was written), workflow parameters named the way a bad run
option is (``error: bad run option --k 0: ...``), whichever command took the ``--set``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, model_validator

from maker import DONE, Microstep, State, UserError, Workflow
from maker.runs import resolve_workflow
from tests._cli import run_maker

AGENT = "simulated:gpt-4.1-mini"
CLI = Path(__file__).resolve().parents[2] / "maker" / "cli"

BAD_SETS = {
    "disks=-1": "error: bad parameter disks=-1: must be greater than or equal to 1",
    "disks=abc": "error: bad parameter disks=abc: must be a valid integer, unable to parse string as an integer",
    "disk=3": "error: workflow 'hanoi' has no parameter 'disk'; its parameters are: disks, steps",
}


def _refused(proc: Any, line: str) -> None:
    """Exit status 2, nothing on stdout, and ``line`` alone on stderr (no pydantic report, no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [line], proc.stderr


def _nothing_written(tmp_path: Path, *keep: str) -> None:
    """No store (the one asked for, nor the default one $MAKER_STORE names) nor any other file was made."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.mark.parametrize("item", list(BAD_SETS))
def test_run_refuses_a_bad_parameter_in_one_line_and_writes_nothing(item: str, tmp_path: Path) -> None:
    proc = run_maker("run", "hanoi", "--set", item, "--agent", AGENT, "--store", tmp_path / "s.sqlite", tmp=tmp_path)
    _refused(proc, BAD_SETS[item])
    assert not (tmp_path / "s.sqlite").exists()
    _nothing_written(tmp_path)


@pytest.mark.parametrize("item", list(BAD_SETS))
def test_submit_refuses_a_bad_parameter_before_anything_is_sent(item: str, tmp_path: Path) -> None:
    # no job server is running: the parameter is refused before one is looked for
    proc = run_maker(
        "submit", "hanoi", "--set", item, "--agent", AGENT, "--address", "http://127.0.0.1:1", tmp=tmp_path
    )
    _refused(proc, BAD_SETS[item])
    _nothing_written(tmp_path)


def test_several_bad_parameters_are_one_line_joined_like_run_options(tmp_path: Path) -> None:
    sets = ["--set", "disks=0", "--set", "steps=x"]
    proc = run_maker("run", "hanoi", *sets, "--agent", AGENT, "--store", tmp_path / "s.sqlite", tmp=tmp_path)
    _refused(
        proc,
        "error: bad parameter disks=0: must be greater than or equal to 1; "
        "steps=x: must be a valid integer, unable to parse string as an integer",
    )
    _nothing_written(tmp_path)
    options = run_maker("run", "hanoi", "--k", "0", "--batch", "0", "--agent", AGENT, tmp=tmp_path)
    _refused(
        options,
        "error: bad run option --k 0: must be greater than or equal to 1; "
        "--batch 0: must be greater than or equal to 1",
    )


def test_a_json_parameter_that_is_not_json_reads_alike(tmp_path: Path) -> None:
    proc = run_maker("run", "solve", "--set", "task=t", "--set", "prompts=oops", "--agent", AGENT, tmp=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: bad parameter prompts=oops: must be JSON, as prompts is dict[str, str]")
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("item", "line"),
    [
        ("max_depth=-1", "error: bad parameter max_depth=-1: must be greater than or equal to 0"),
        ("max_depth=deep", "error: bad parameter max_depth=deep: must be a valid integer, unable to parse string as an"
         " integer"),
        ("max_dept=1", "error: workflow 'solve' has no parameter 'max_dept'; its parameters are: task, max_depth,"
         " max_children, vote, candidates, prompts"),
    ],
    ids=["range", "type", "unknown"],
)  # fmt: skip
def test_eval_refuses_a_bad_parameter_as_itself_not_as_a_problem_line(item: str, line: str, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"id": "a", "question": "Multiply 12 by 34", "answer": "408"}\n')
    proc = run_maker("eval", data, "--set", item, "--agent", AGENT, "--store", tmp_path / "e.sqlite", tmp=tmp_path)
    _refused(proc, line)
    _nothing_written(tmp_path, "data.jsonl")


def test_solve_and_calibrate_refuse_bad_parameters_alike(tmp_path: Path) -> None:
    proc = run_maker("solve", "a task", "--max-depth", "99", "--agent", AGENT, "--store", tmp_path / "s", tmp=tmp_path)
    _refused(proc, "error: bad parameter max_depth=99: must be less than or equal to 16")
    proc = run_maker("calibrate", "hanoi", "--set", "disks=-1", "--agent", AGENT, tmp=tmp_path)
    _refused(proc, BAD_SETS["disks=-1"])
    _nothing_written(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("finished")
    db = tmp / "runs.sqlite"
    proc = run_maker("run", "hanoi", "--set", "disks=2", "--agent", AGENT, "--run-id", "h", "--store", db, tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    return {"db": db, "tmp": tmp}


def _runs(db: Path, tmp: Path) -> Any:
    proc = run_maker("runs", "--json", "--store", db, tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("command", "item"),
    [(["resume", "h"], "disks=-1"), (["resume", "h"], "disk=3"), (["fork", "h", "--from-step", "1"], "disks=abc")],
    ids=["resume-range", "resume-unknown", "fork-type"],
)
def test_resume_and_fork_refuse_bad_parameters_and_change_nothing(
    command: list[str], item: str, finished_run: dict[str, Any], tmp_path: Path
) -> None:
    db, tmp = finished_run["db"], finished_run["tmp"]
    before = _runs(db, tmp)
    proc = run_maker(*command, "--set", item, "--store", db, tmp=tmp_path)
    _refused(proc, BAD_SETS[item])
    assert _runs(db, tmp) == before


def test_click_usage_errors_read_alike(tmp_path: Path) -> None:
    for args, usage in (
        (["run", "hanoi", "--bogus"], "maker run [OPTIONS] WORKFLOW; see maker run --help)"),
        (["run"], "maker run [OPTIONS] WORKFLOW; see maker run --help)"),
        (["nosuch"], "maker [OPTIONS] COMMAND [ARGS]...; see maker --help)"),
        (["trace", "show"], "maker trace show [OPTIONS] RUN_ID; see maker trace show --help)"),
    ):
        proc = run_maker(*args, tmp=tmp_path)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith("error: ") and line.endswith(f"(usage: {usage}"), line
    assert "bogus" in run_maker("run", "hanoi", "--bogus", tmp=tmp_path).stderr
    helped = run_maker("trace", tmp=tmp_path)  # a group given no command still shows its help
    assert "Commands:" in helped.stdout + helped.stderr
    _nothing_written(tmp_path)


def test_only_the_common_module_turns_errors_into_exits() -> None:
    """Every command raises; maker.cli._common prints the line and picks the exit status (fail, interrupted)."""
    ad_hoc = re.compile(r"sys\.exit\(|SystemExit|echo\(f?[\"']error:|ctx\.exit\([1-9]")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(CLI.glob("*.py"))
        if path.name != "_common.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ad_hoc.search(line)
    ]
    assert not found, found


# -- the library's message, which the command line prints after ``error: `` -----------------------------------


class _Ans(BaseModel):
    x: int


class _S(State):
    n: int = 0


class _Params(BaseModel):
    name: str
    sizes: list[int] = Field(default_factory=list)
    limit: int | str = 0
    low: int = 0
    high: int = 10

    @model_validator(mode="after")
    def _ordered(self) -> _Params:
        if self.low > self.high:
            raise ValueError("low must not be above high")
        return self


class _Shaped(Workflow, name="shaped"):
    Params = _Params
    State = _S
    microsteps = (Microstep("s", prompt="n = {n}", schema=_Ans),)

    def start(self, params: Any) -> _S:
        return _S()

    def next(self, state: Any) -> Any:
        return DONE

    def apply(self, state: Any, answer: Any) -> _S:
        return state  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": "a", "sizes": [1, "x"]},
         "bad parameter sizes[1]=x: must be a valid integer, unable to parse string as an integer"),
        ({"name": "a", "limit": [1]}, "bad parameter limit=[1]: must be a valid integer or must be a valid string"),
        ({"name": "a", "low": 5, "high": 1}, "bad parameter low must not be above high"),
        ({"sizes": "x"}, "bad parameter sizes=x: must be a valid list; missing parameter name"),
    ],
    ids=["list-item", "union", "model-rule", "missing"],
)  # fmt: skip
def test_parse_params_says_each_problem_on_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as caught:
        _Shaped.parse_params(values)
    assert str(caught.value) == message


def test_check_params_leaves_out_what_is_not_given() -> None:
    _Shaped.check_params({"sizes": [1, 2]})  # no name yet: an evaluation gives it later
    with pytest.raises(UserError, match=r"^bad parameter sizes\[0\]=y: must be a valid integer"):
        _Shaped.check_params({"sizes": ["y"]})
    _Shaped.check_params({"low": 5, "high": 1})  # nor the rules that tie parameters together
    with pytest.raises(UserError, match="^missing parameter name$"):
        _Shaped.parse_params({"sizes": [1]})
    hanoi = resolve_workflow("hanoi")
    with pytest.raises(UserError) as caught:
        hanoi.parse_params({"disks": -1})  # the Python API's words are the command line's
    assert f"error: {caught.value}" == BAD_SETS["disks=-1"]
