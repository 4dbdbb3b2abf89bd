"""The DSL: definition-time errors, a user workflow end to end, and the public exports."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from maker import DONE, Microstep, RedFlag, State, Workflow, WorkflowDefinitionError
from maker.runs import start_run


class Ans(BaseModel):
    x: int


class S(State):
    n: int = 0


step = Microstep("s", prompt="n = {n}", schema=Ans)


def test_microstep_needs_a_pydantic_schema() -> None:
    with pytest.raises(WorkflowDefinitionError, match="schema must be a pydantic BaseModel"):
        Microstep("bad", prompt="x", schema=dict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "voting, fragment",
    [({"k": 0}, "k"), ({"rule": "majority"}, "rule"), ({"confidence": 0.3}, "confidence"), ({"kk": 3}, "kk")],
)
def test_bad_voting_policy_fails_at_definition(voting: dict, fragment: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=f"(?s)bad voting policy.*{fragment}"):
        Microstep("bad", prompt="x", schema=Ans, voting=voting)


def test_red_flags_must_be_rules() -> None:
    with pytest.raises(WorkflowDefinitionError, match="RedFlag"):
        Microstep("bad", prompt="x", schema=Ans, red_flags=[lambda a, i: None])  # type: ignore[list-item]
    with pytest.raises(WorkflowDefinitionError, match="lower_snake_case"):
        RedFlag("Bad Name", lambda a, i: None)


def test_prompt_placeholders_must_be_names() -> None:
    with pytest.raises(WorkflowDefinitionError, match="placeholders"):
        Microstep("bad", prompt="{0} and {}", schema=Ans)


def _define(**attrs):
    body = {
        "Params": BaseModel,
        "State": S,
        "microsteps": (step,),
        "start": lambda self, p: S(),
        "next": lambda self, s: DONE,
        "apply": lambda self, s, a: s,
    }
    body.update(attrs)
    kwargs = body.pop("_kwargs", {"name": "w"})
    return type("W", (Workflow,), body, **kwargs)


def test_a_correct_definition_passes() -> None:
    assert _define().name == "w"


@pytest.mark.parametrize(
    "attrs, fragment",
    [
        ({"microsteps": ("not a step",)}, "is not a Microstep"),
        ({"microsteps": ()}, "declare the microsteps"),
        ({"State": BaseModel}, "State must subclass maker.State"),
        ({"Params": dict}, "Params must be a pydantic"),
        ({"_kwargs": {}}, "give it a name"),
        ({"_kwargs": {"name": "Bad Name"}}, "lower-case"),
        ({"_kwargs": {"name": "w", "version": 0}}, "version"),
        ({"microsteps": (step, step)}, "unique"),
    ],
)
def test_bad_workflow_fails_at_definition(attrs: dict, fragment: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=fragment):
        _define(**attrs)


def test_missing_required_method() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"define apply\(\)"):

        class Incomplete(Workflow, name="incomplete"):
            Params = BaseModel
            State = S
            microsteps = (step,)

            def start(self, params):
                return S()

            def next(self, state):
                return DONE


def test_state_is_immutable() -> None:
    s = S(n=1)
    with pytest.raises(ValidationError, match="frozen"):
        s.n = 2  # type: ignore[misc]


def test_user_workflow_runs_from_python(tmp_path) -> None:
    from examples.countdown import Countdown

    summary = start_run(Countdown, {"start": 40}, {"agents": ["simulated:p=0.85,seed=3"]}, store=tmp_path / "s.sqlite")
    assert summary.status == "done"
    assert summary.steps == 40
    assert summary.errors == 0
    assert summary.solved is True
    assert summary.k == 3
    assert summary.calls >= 3 * 40


def test_user_workflow_runs_from_cli_by_module_path(tmp_path) -> None:
    from click.testing import CliRunner

    from maker.cli import main

    result = CliRunner().invoke(
        main,
        [
            "run",
            "examples.countdown:Countdown",
            "--set",
            "start=12",
            "--agent",
            "simulated:p=0.9",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"steps": 12' in result.output


def test_hanoi_strategy_solves_every_size() -> None:
    from maker.workflows.hanoi import Hanoi, HanoiParams

    wf = Hanoi()
    for disks in range(1, 9):
        state = wf.start(HanoiParams(disks=disks))
        steps = 0
        while (call := wf.next(state)) is not DONE:
            assert call.inputs["state"] == str([list(p) for p in state.pegs])
            state = wf.apply(state, wf.oracle(state))
            steps += 1
        assert steps == 2**disks - 1
        assert wf.solved(state)


def test_hanoi_prompt_uses_makers_labels() -> None:
    from maker.workflows.hanoi import Hanoi, HanoiParams

    wf = Hanoi()
    state = wf.start(HanoiParams(disks=3))
    prompt = wf.next(state).prompt
    assert "Previous move: None" in prompt
    assert "Current State: [[3, 2, 1], [], []]" in prompt
    state = wf.apply(state, wf.oracle(state))
    prompt = wf.next(state).prompt
    assert "Previous move: [1, 0, 1]" in prompt
    assert "Current State: [[3, 2], [1], []]" in prompt


def test_hanoi_mistakes_are_distinct_valid_wrong_answers() -> None:
    from maker.workflows.hanoi import Hanoi, HanoiParams, hanoi_move

    wf = Hanoi()
    state = wf.start(HanoiParams(disks=5))
    for _ in range(20):
        right = wf.oracle(state)
        call = wf.next(state)
        wrong = {hanoi_move.vote_key(hanoi_move.mistakes(right, j)) for j in range(3)}
        assert hanoi_move.vote_key(right) not in wrong
        assert len(wrong) >= 2
        for j in range(3):
            text = hanoi_move.render(hanoi_move.mistakes(right, j))
            assert hanoi_move.check_flags(hanoi_move.parse(text), call.inputs) is None
        state = wf.apply(state, right)


def test_hanoi_builds_states_and_answers_as_model_construct_does() -> None:
    from maker.workflows.hanoi import Hanoi, HanoiAnswer, HanoiParams, HanoiState

    wf = Hanoi()
    state = wf.start(HanoiParams(disks=4, steps=9))
    for _ in range(5):
        right = wf.oracle(state)
        new = wf.apply(state, right)
        for got, cls in ((right, HanoiAnswer), (new, HanoiState)):
            want = cls.model_construct(**dict(got))
            assert type(got) is cls and got == want and repr(got) == repr(want)
            assert got.model_fields_set == want.model_fields_set and got.model_dump_json() == want.model_dump_json()
            assert (got.__pydantic_extra__, got.__pydantic_private__) == (want.__pydantic_extra__, None)
        state = new
