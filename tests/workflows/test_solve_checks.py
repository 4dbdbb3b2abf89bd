"""The solver's backtracking: cheap checks of composed results, Solve.check on hand-built trees, and Solve.retry
rejecting a failed decomposition so the node is decomposed again with the next-best proposal."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from maker.runs import start_run
from maker.workflows import _solve_steps as steps
from maker.workflows._checks import result_check
from maker.workflows._reference import Proposal, recognize
from maker.workflows._solve_steps import Decomposition, decomposition_key
from maker.workflows.solve import MAX_REJECTED, Node, Solve, SolveParams, TreeState

TASK = "Multiply 1234 by 5678"  # 7006652
RIGHT = Decomposition(subtasks=["Multiply 1234 by 56", "Multiply 1234 by 78"], compose="R1 * 10^2 + R2")
SORT = "Sort in ascending order: [5, 3, 9, 1, 3]"


# -- the cheap checks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "task, result, fails",
    [
        (TASK, "7006652", None),
        (TASK, "7,006,652", None),
        (TASK, "7006653", "casting out nines"),  # off by one in the last digit
        (TASK, "7016652", "casting out nines"),  # a carry dropped
        (TASK, "700652", "digits"),  # a digit dropped
        (TASK, "7060652", "casting out elevens"),  # adjacent digits exchanged: nines cannot see it
        (TASK, "-7006652", "sign"),
        (TASK, "about seven million", "not a number"),
        ("Multiply 1.5 by -2", "-3", None),
        ("Multiply 1.5 by -2", "3", "sign"),
        ("Multiply 1.5 by 2.5", "3.755", "decimal places"),
        ("Multiply 0 by 77", "0", None),
        (SORT, "[1, 3, 3, 5, 9]", None),
        (SORT, "[1, 3, 5, 9]", "4 numbers, not 5"),  # an element missing
        (SORT, "[1, 3, 4, 5, 9]", "not a permutation"),
        (SORT, "[1, 3, 5, 3, 9]", "not in ascending order"),
        (SORT, "1 3 3 5 9", "not a list"),
        ("Sort in descending order: [2, -1.5, 7]", "[7, 2, -1.5]", None),
        ("Sort in descending order: [2, -1.5, 7]", "[-1.5, 2, 7]", "not in descending order"),
        ("Sort in ascending order: [2, 10]. Give the answer as a list of strings.", '["2", "10"]', None),
        ("Write a haiku about sorting", "anything", None),  # not a task the reference knows: not checked
    ],
)
def test_result_check(task: str, result: str, fails: str | None) -> None:
    why = result_check(task, result)
    if fails is None:
        assert why is None
    else:
        assert why is not None and fails in why


def test_casting_out_nines_and_elevens_blind_spot() -> None:
    """Two digits exchanged an even number of places apart keep the digit sum and the alternating one: it passes
    (so does any result off by a multiple of 99). A check says when a result surely is wrong, never that it is
    right."""
    assert result_check(TASK, "7600652") is None  # 7006652 with its 2nd and 4th digits exchanged
    assert result_check(TASK, str(7006652 + 99)) is None


def test_the_checks_never_fail_a_right_answer() -> None:
    for a in (7, 12, 99, 1234, 46048, 987654321):
        for b in (3, 10, 42098, 5678, 1000001):
            assert result_check(f"Multiply {a} by {b}", str(a * b)) is None
    values = [9, -4, 0, 17, 3, 3, 120, -55]
    assert result_check(f"Sort in ascending order: {json.dumps(values)}", json.dumps(sorted(values))) is None


# -- Solve.check ---------------------------------------------------------------------------------------------------
def _state(nodes: list[Node], **kw: Any) -> TreeState:
    start = Solve().start(SolveParams(task=nodes[0].task, **kw))
    return start.model_copy(update={"nodes": tuple(nodes)})


def _tree(root_result: str | None, child_results: tuple[str | None, str | None], d: Decomposition = RIGHT) -> TreeState:
    root = Node(id=0, path="0", task=TASK, atomic=False, how="key", decomposition=d, children=(1, 2))
    root = root.model_copy(update={"result": root_result})
    kids = [
        Node(id=1 + j, path=f"0.{j}", parent=0, depth=1, task=t, atomic=True, how="vote", result=r)
        for j, (t, r) in enumerate(zip(d.subtasks, child_results, strict=True))
    ]
    return _state([root, *kids])


def test_check_none_before_any_result_true_when_all_pass() -> None:
    assert Solve().check(Solve().start(SolveParams(task=TASK))) is None
    assert Solve().check(_tree(None, (None, None))) is None
    assert Solve().check(_tree(None, ("69104", "96252"))) is True  # the leaves' results are checked too
    assert Solve().check(_tree("7006652", ("69104", "96252"))) is True


def test_a_wrong_leaf_is_named_without_a_split_to_reject() -> None:
    reason = Solve().check(_tree(None, ("69104", "96253")))
    assert reason == "0.1: 1234 * 78 = 96253 fails casting out nines (7 vs 6)"
    # retry leaves the state as it is: the new branch solves the leaf again with its own seeds
    state = _tree(None, ("69104", None))
    assert Solve().retry(state, reason) == state


def test_check_names_the_failed_node_and_what_retry_needs() -> None:
    reason = Solve().check(_tree("7006653", ("69104", "96253")))
    assert isinstance(reason, str)
    first, _, last = reason.partition("\n")
    assert first == "0: 1234 * 5678 = 7006653 fails casting out nines (0 vs 8)"
    assert json.loads(last.removeprefix("retry: ")) == {"task": TASK, "decomposition": RIGHT.model_dump()}


def test_check_skips_dropped_and_settled_nodes() -> None:
    state = _tree("7006653", ("69104", "96253"))
    dropped = state.model_copy(update={"nodes": tuple(n.model_copy(update={"dropped": True}) for n in state.nodes)})
    assert Solve().check(dropped) is None
    # 0.0 composed wrong, but its parent went on and composed from it (no backtrack was left): not reported again
    inner = Decomposition(subtasks=["Multiply 1234 by 5", "Multiply 1234 by 6"], compose="R1 * 10^1 + R2")
    nodes = list(_tree("7006652", ("69105", "96252")).nodes)
    nodes[1] = nodes[1].model_copy(update={"atomic": False, "decomposition": inner, "children": (3, 4)})
    nodes += [Node(id=3, path="0.0.0", parent=1, depth=2, task="Multiply 1234 by 5", atomic=True, result="6170")]
    nodes += [Node(id=4, path="0.0.1", parent=1, depth=2, task="Multiply 1234 by 6", atomic=True, result="7404")]
    assert Solve().check(_state(nodes)) is True
    nodes[0] = nodes[0].model_copy(update={"result": None})
    reason = Solve().check(_state(nodes))
    assert isinstance(reason, str) and reason.startswith("0.0: 1234 * 56 = 69105 fails")


# -- Solve.retry ---------------------------------------------------------------------------------------------------
def _failed() -> tuple[TreeState, str]:
    """A tree whose root composed a wrong result (a child was wrong), and the state before that compose."""
    failed = _tree("7006653", ("69104", "96253"))
    reason = Solve().check(failed)
    assert isinstance(reason, str)
    return _tree(None, ("69104", "96253")), reason


def test_retry_rejects_the_split_and_drops_the_subtree() -> None:
    wf = Solve()
    good, reason = _failed()
    state = wf.retry(good, reason)
    root = state.nodes[0]
    assert root.decomposition is None and root.children == () and root.atomic is False and root.result is None
    assert [n.dropped for n in state.nodes] == [False, True, True]
    assert [(r.path, r.task, r.decomposition) for r in state.rejected] == [("0", TASK, RIGHT)]
    assert (
        wf.result(state.model_copy(update={"nodes": (root.model_copy(update={"result": "1"}), *state.nodes[1:])}))[
            "dropped"
        ]
        == 2
    )
    # the node is decomposed again, with the rejected split red-flagged and listed in the prompt
    (call,) = wf.next(state)  # type: ignore[misc]
    assert call.microstep is steps.decompose and call.tag == "0"
    assert call.inputs["rejected"] == [RIGHT.model_dump()]
    assert "tried" in call.prompt and "Multiply 1234 by 56" in call.prompt
    assert steps.decompose.check_flags(RIGHT, call.inputs) is not None
    other = Decomposition(subtasks=["Multiply 12 by 5678", "Multiply 34 by 5678"], compose="R1 * 10^2 + R2")
    assert steps.decompose.check_flags(other, call.inputs) is None
    # the ground truth for simulated agents is the next-best correct split, not the rejected one
    (truth,) = wf.oracle(state)
    assert decomposition_key(truth) != decomposition_key(RIGHT)
    problem = recognize(TASK)
    assert problem is not None and problem.check(Proposal(tuple(truth.subtasks), truth.compose))
    # and a new split makes new children, at the same paths
    after = wf.apply(state, (truth,))
    assert [(n.path, n.dropped) for n in after.nodes] == [("0", False), ("0.0", True), ("0.1", True)] + [
        ("0.0", False),
        ("0.1", False),
    ]


def test_retry_from_the_start_state_applies_when_the_node_is_made() -> None:
    wf = Solve()
    _, reason = _failed()
    start = wf.start(SolveParams(task=TASK))
    state = wf.retry(start, reason)
    assert state.nodes == start.nodes and len(state.rejected) == 1
    state = wf.apply(state, (steps.Classify(atomic=False),))
    (call,) = wf.next(state)  # type: ignore[misc]
    assert call.inputs["rejected"] == [RIGHT.model_dump()]
    # calls of nodes with nothing rejected are as they always were: same inputs, same prompt digest
    (plain,) = wf.next(wf.apply(start, (steps.Classify(atomic=False),)))  # type: ignore[misc]
    assert "rejected" not in plain.inputs and plain.digest() != call.digest()


def test_retry_judge_candidates_leave_rejected_splits_out() -> None:
    wf = Solve()
    _, reason = _failed()
    start = wf.start(SolveParams(task=TASK, vote="judge", candidates=3))
    state = wf.apply(wf.retry(start, reason), (steps.Classify(atomic=False),))
    other = Decomposition(subtasks=["Multiply 12 by 5678", "Multiply 34 by 5678"], compose="R1 * 10^2 + R2")
    third = Decomposition(subtasks=["Multiply 1234 by 567", "Multiply 1234 by 8"], compose="R1 * 10^1 + R2")
    after = wf.apply(state, (RIGHT, other, third))
    assert after.nodes[0].candidates == (other, third)
    after = wf.apply(state, (RIGHT, other, other))  # one left: it wins
    assert after.nodes[0].decomposition == other and after.nodes[0].how == "unanimous"
    after = wf.apply(state, (RIGHT, RIGHT, RIGHT))  # nothing else proposed: the rejected split it is
    assert after.nodes[0].decomposition == RIGHT


def test_retry_past_max_rejected_keeps_the_split_with_new_children() -> None:
    wf = Solve()
    good, reason = _failed()
    state = good
    for i in range(MAX_REJECTED):
        d = Decomposition(subtasks=[f"Multiply 1234 by {5 + i}", "Multiply 1234 by 78"], compose="R1 * 10^2 + R2")
        state = state.model_copy(
            update={
                "rejected": (
                    *state.rejected,
                    *wf.retry(good, reason.replace('"Multiply 1234 by 56"', f'"Multiply 1234 by {5 + i}"')).rejected,
                )
            }
        )
        assert state.rejected[-1].decomposition == d
    again = wf.retry(state, reason)
    assert again.rejected == state.rejected
    root = again.nodes[0]
    assert root.decomposition == RIGHT and root.children == (3, 4)
    assert [(n.path, n.dropped, n.result) for n in again.nodes[1:]] == [
        ("0.0", True, "69104"),
        ("0.1", True, "96253"),
        ("0.0", False, None),
        ("0.1", False, None),
    ]


def test_retry_is_pure_and_ignores_other_reasons() -> None:
    wf = Solve()
    good, reason = _failed()
    assert wf.retry(good, reason) == wf.retry(good, reason)
    assert wf.retry(good, reason).model_dump_json() == wf.retry(good, reason).model_dump_json()
    for other in ("check failed", "undecided: step 7", "0: something\nretry: not json", ""):
        assert wf.retry(good, other) is good


def test_old_snapshots_load() -> None:
    """Snapshots written before backtracking have no ``dropped`` nor ``rejected``: they load as before."""
    data = json.loads(_tree("7006652", ("69104", "96252")).model_dump_json())
    del data["rejected"]
    for n in data["nodes"]:
        del n["dropped"]
    state = TreeState.model_validate_json(json.dumps(data))
    assert state.rejected == () and not any(n.dropped for n in state.nodes)
    assert Solve().check(state) is True


def test_every_split_the_reference_knows_is_correct_and_distinct() -> None:
    for task in (TASK, "Multiply 12 by 34", f"Sort in ascending order: {json.dumps(list(range(40, 0, -1)))}"):
        problem = recognize(task)
        assert problem is not None
        found = list(problem.splits())
        assert found[0] == problem.split() and all(problem.check(p) for p in found)
        assert (
            len({decomposition_key(Decomposition(subtasks=list(p.subtasks), compose=p.compose)) for p in found})
            == len(found)
            > MAX_REJECTED
        )


def test_a_simulated_run_that_backtracks_ends_with_the_right_answer(tmp_path: Path) -> None:
    """Seed 1 fails two checks on the way (a wrong child result composed): the run goes back, decomposes again with
    the next-best split, and the answer it ends with is the product."""
    s = start_run(
        "solve",
        {"task": "Multiply 46048 by 42098", "max_depth": 3},
        {"agents": ["simulated:p=0.85,seed=1"], "k": 2, "backtracks": 20},
        store=tmp_path / "bt.sqlite",
        run_id="bt",
    )
    assert s.status == "done" and s.result["answer"] == str(46048 * 42098)
    with sqlite3.connect(tmp_path / "bt.sqlite") as db:
        reasons = [r for (r,) in db.execute("select reason from branches")]
    assert len(reasons) == 2 and all(" fails casting out " in r for r in reasons)
