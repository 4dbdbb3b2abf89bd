"""The recursive solver: every role's red flags, the two ways decompositions are voted, the depth limit,
prompts as data, the tree in the trace tools, and the MAKER 5x5 set solved end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maker import UserError
from maker.agents import Agent, Roster, Sample
from maker.engine import Decider
from maker.runs import start_run
from maker.store import Store
from maker.trace import tree_html
from maker.voting import Voting
from maker.workflows import _solve_steps as steps
from maker.workflows._reference import recognize
from tests._cli import ok, run_maker, stored_steps

ROOT = Path(__file__).resolve().parents[2]
TASK = "Multiply 46048 by 42098"
DECOMPOSE_INPUTS = {"template": steps.PROMPTS["decompose"], "task": TASK, "max_children": 2}


def _flag(ms: Any, text: str, inputs: dict[str, Any], tokens: int = 10) -> str | None:
    return Decider.read(ms, text, tokens, ms.max_tokens, inputs).flag


# -- red flags, every role -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, reason",
    [
        ('subtasks = ["Multiply 46048 by 420", "Multiply 46048 by 98"]\ncompose = "R1 * 10^2 + R2"', None),
        ('subtasks = []\ncompose = ""', None),  # the task is too small to split: allowed, it makes the node atomic
        ("I would split this into two multiplications.", "format"),
        ('subtasks = ["Multiply 46048 by 420", "Multiply 46048 by 98"\ncompose = "R1 + R2"', "format"),
        ('subtasks = "Multiply 46048 by 420"\ncompose = "R1"', "schema"),
        (
            'subtasks = ["Multiply 4 by 2", "Multiply 4 by 1", "Multiply 4 by 0"]\ncompose = "R1 + R2 + R3"',
            "too_many_children",
        ),
        ('subtasks = ["Multiply 46048 by 42098"]\ncompose = "R1"', "one_child"),
        (
            'subtasks = ["multiply the following numbers: 46048 × 42098", "Multiply 1 by 1"]\ncompose = "R1 * R2"',
            "same_as_parent",
        ),
        ('subtasks = ["Multiply 46048 by 420", ""]\ncompose = "R1 + R2"', "same_as_parent"),
        (
            'subtasks = ["Multiply 46048 by 420", "Add 98 times 46048 to the result of sub-task 1"]\ncompose = "R2"',
            "dependent",
        ),
        ('subtasks = ["Multiply 46048 by 420", "Multiply 46048 by 98"]\ncompose = "add them up"', "dependent"),
    ],
)
def test_decomposition_red_flags(text: str, reason: str | None) -> None:
    for ms in (steps.decompose, steps.propose):
        flag = _flag(ms, text, DECOMPOSE_INPUTS)
        assert (flag.split(":")[0] if flag else None) == reason, flag


def test_over_long_answers_are_red_flagged_in_every_role() -> None:
    for ms in (steps.classify, steps.decompose, steps.propose, steps.judge, steps.solve, steps.compose):
        assert _flag(ms, "anything", {"task": TASK}, tokens=ms.max_tokens + 1).startswith("too_long")


@pytest.mark.parametrize(
    "text, count, reason",
    [
        ("choice = 2", 3, None),
        ("I think the second one.\nchoice = 3", 3, None),
        ("choice = 4", 3, "choice_range"),
        ("choice = 0", 3, "choice_range"),
        ("choice: 2", 3, "format"),
        ('choice = "two"', 3, "schema"),
    ],
)
def test_judge_red_flags(text: str, count: int, reason: str | None) -> None:
    flag = _flag(steps.judge, text, {"task": TASK, "count": count})
    assert (flag.split(":")[0] if flag else None) == reason, flag


@pytest.mark.parametrize(
    "task, text, reason",
    [
        (TASK, "result = 1938528704", None),
        (TASK, "Working it out: 46048 x 42098.\nresult = 1,938,528,704", None),
        (TASK, 'result = "1938528704"', None),
        (TASK, "result = about two billion", "answer_format"),
        (TASK, "result =", "format"),
        (TASK, "The answer is 1938528704.", "format"),
        ("Sort in ascending order: [3, 1, 2]", "result = [1, 2, 3]", None),
        ("Sort in ascending order: [3, 1, 2]", "result = 1, 2, 3", "answer_format"),
        ("Name the capital of France.", "result = Paris", None),  # a task the reference does not know: any text
    ],
)
def test_result_red_flags(task: str, text: str, reason: str | None) -> None:
    for ms in (steps.solve, steps.compose):
        flag = _flag(ms, text, {"task": task})
        assert (flag.split(":")[0] if flag else None) == reason, flag


# -- voting on decompositions ---------------------------------------------------------------------------------
class Scripted:
    """A backend that answers with the next texts of a list, in the order samples are asked for."""

    name = "scripted"

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.used = 0

    async def generate(self, requests: Any) -> list[list[Sample]]:
        out = []
        for req in requests:
            batch = []
            for _ in req.seeds:
                text = self.texts[self.used] if self.used < len(self.texts) else "nothing left"
                self.used += 1
                batch.append(Sample(text, 5))
            out.append(batch)
        return out

    async def aclose(self) -> None:
        return None


def _decide(ms: Any, inputs: dict[str, Any], texts: Sequence[str], k: int, max_rounds: int = 100) -> Any:
    backend = Scripted(texts)
    policy = Voting(k=k, max_rounds=max_rounds)
    decider = Decider(
        roster=Roster.of([Agent("scripted", backend)]),
        speculation=None,
        seed=0,
        policies={ms.name: policy},
        max_tokens=None,
    )
    return asyncio.run(decider.decide(0, ms.ask(**inputs), None, None)), backend


def test_canonical_key_counts_differently_written_proposals_as_one_vote() -> None:
    same = [
        'subtasks = ["Multiply 46048 by 420", "Multiply 46048 by 98"]\ncompose = "R1 * 10^2 + R2"',
        'Split on the second factor.\nsubtasks = ["multiply 46048 by 420", "46048 × 98"]\ncompose = "R1*10^2 + R2"',
        'subtasks = ["What is 46048 times 420?", "Multiply the following numbers: 46048 x 98"]\n'
        'compose = "r1 * 10^2 + r2"',
    ]
    d, backend = _decide(steps.decompose, DECOMPOSE_INPUTS, same, k=3)
    assert (d.votes, d.rounds, d.samples, backend.used) == ("[3]", 1, 3, 3)
    assert d.answer.subtasks == ["Multiply 46048 by 420", "Multiply 46048 by 98"]  # the first of the vote's texts
    other = 'subtasks = ["Multiply 46048 by 42", "Multiply 46048 by 98"]\ncompose = "R1 * 10^3 + R2"'
    d, _ = _decide(steps.decompose, DECOMPOSE_INPUTS, [same[0], other, same[1], same[2], same[0], same[1]], k=3)
    assert d.votes == "[4,1]" and d.samples == 5  # 2 to 1 after the first round, then two more for the lead of 3


PICKS = st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(picks=PICKS, k=st.integers(min_value=1, max_value=4), count=st.integers(min_value=2, max_value=4))
def test_judge_picks_are_tallied_first_to_ahead_by_k(picks: list[int], k: int, count: int) -> None:
    """The judges' picks decide exactly as one-at-a-time first-to-ahead-by-k over the valid picks would:
    the same winner, the same tally, and not one pick more; picks out of range are red flags, never votes."""
    inputs = {"template": steps.PROMPTS["judge"], "task": TASK, "candidates": "1. ...", "count": count}
    counts: dict[int, int] = {}
    decided_at = None
    for i, p in enumerate(picks):  # the reference: one pick at a time
        if 1 <= p <= count:
            counts[p] = counts.get(p, 0) + 1
            ranked = sorted(counts.values(), reverse=True)
            if ranked[0] - (ranked[1] if len(ranked) > 1 else 0) >= k:
                decided_at = i
                break
    texts = [f"choice = {p}" for p in picks]
    if decided_at is None:
        with pytest.raises(Exception, match="no answer won the vote"):
            _decide(steps.judge, inputs, texts + ["choice = 0"] * 500, k=k, max_rounds=len(picks) + 1)
        return
    d, backend = _decide(steps.judge, inputs, texts, k=k)
    winner = max(counts, key=counts.__getitem__)
    assert d.answer.choice == winner
    assert json.loads(d.votes) == [counts[winner]] + sorted((v for c, v in counts.items() if c != winner), reverse=True)
    assert d.samples == decided_at + 1  # the votes counted stop where one-at-a-time voting stops ...
    assert d.samples + d.spare_samples == backend.used  # ... and what later rounds were filled with is set apart
    invalid = sum(1 for p in picks[: decided_at + 1] if not 1 <= p <= count)
    assert d.red_flags == invalid and (d.flags or {}).get("choice_range", 0) == invalid


# -- the tree's shape ----------------------------------------------------------------------------------------------
def _nodes(db: Path, run_id: str) -> list[dict[str, Any]]:
    with Store.open(db) as s:
        return json.loads(s.latest_snapshot(s.run(run_id).id)[1])["nodes"]


def _microsteps(db: Path, run_id: str) -> list[tuple[str, str]]:
    return [(r.microstep, r.tag) for r in stored_steps(db, run_id)]


def test_depth_limit_and_one_shot(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    agent = {"agents": ["simulated:p=1.0"], "k": 1}
    s = start_run("solve", {"task": TASK, "max_depth": 1}, agent, store=db, run_id="d1")
    nodes = _nodes(db, "d1")
    assert s.solved and [n["depth"] for n in nodes] == [0, 1, 1]
    assert all(n["atomic"] and n["how"] == "depth limit" for n in nodes[1:])
    assert ("classify", "0.0") not in _microsteps(db, "d1")  # past the limit: solved without a vote on it
    one = start_run("solve", {"task": TASK, "max_depth": 0}, agent, store=db, run_id="d0")
    assert one.steps == 1 and _microsteps(db, "d0") == [("solve", "0")] and one.solved


def test_unanimous_candidates_need_no_judge_and_no_split_makes_a_node_atomic(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    s = start_run(
        "solve", {"task": TASK, "vote": "judge"}, {"agents": ["simulated:p=1.0"], "k": 2}, store=db, run_id="u"
    )
    used = {m for m, _ in _microsteps(db, "u")}
    assert s.solved and "judge" not in used and "propose" in used
    assert {n["how"] for n in _nodes(db, "u") if n["decomposition"] and n["decomposition"]["subtasks"]} == {"unanimous"}
    # A decomposer that declines to split (no sub-tasks) makes the node atomic: the root is solved directly.
    no = start_run(
        "solve", {"task": TASK}, {"agents": ["simulated:p=1.0,p_classify=0.0"], "k": 1}, store=db, run_id="n"
    )
    root = _nodes(db, "n")[0]
    assert no.status == "done" and root["atomic"] and root["how"] == "vote"  # every classify said atomic


def test_prompts_are_data(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    mine = "SOLVE THIS CAREFULLY: {task}\nresult = ..."
    s = start_run(
        "solve",
        {"task": TASK, "max_depth": 0, "prompts": {"solve": mine}},
        {"agents": ["simulated:p=1.0"], "detail": "samples"},
        store=db,
        run_id="p",
    )
    with Store.open(db) as st_:
        (row,) = list(st_.steps(st_.run("p").id))
    assert s.solved and row[13] == mine.format(task=TASK)
    for bad, why in [
        ({"solve": "no task here"}, "must use {task}"),
        ({"solve": "{task} {nope}"}, "may use"),
        ({"nosuch": "{task}"}, "the roles are"),
        ({"solve": "{task"}, "not a format string"),
    ]:
        with pytest.raises(UserError, match=why):
            start_run(
                "solve", {"task": TASK, "prompts": bad}, {"agents": ["simulated:p=1.0"]}, store=tmp_path / "bad.sqlite"
            )
    assert not (tmp_path / "bad.sqlite").exists()


# -- the tree in the trace tools ------------------------------------------------------------------------------------
def test_trace_show_tree_and_report(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    s = start_run(
        "solve",
        {"task": TASK, "vote": "judge"},
        {"agents": ["simulated:p=0.8,seed=3,spread=3"], "k": 3},
        store=db,
        run_id="t",
    )
    assert s.status == "done"

    def maker(*args: str) -> str:
        return ok(run_maker(*args, "--store", db, tmp=tmp_path)).stdout

    text = maker("trace", "show", "t", "--tree")
    assert text.startswith(f"node 0  {TASK}  => ")
    assert "  node 0.1  Multiply 46048 by 98" in text and "split into 2 by judge" in text
    assert "judge      votes [" in text and "compose    votes [" in text
    nodes = [json.loads(line) for line in maker("trace", "show", "t", "--tree", "--json").splitlines()]
    assert [n["path"] for n in nodes][:3] == ["0", "0.0", "0.0.0"]
    root = nodes[0]
    assert root["result"] == s.result["answer"] and root["decomposition"]["compose"] == "R1 * 10^2 + R2"
    assert {x["microstep"] for x in root["steps"]} >= {"classify", "propose", "compose"}
    assert sum(len(n["steps"]) for n in nodes) == s.steps  # every step belongs to one node
    maker("trace", "report", "t", "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Task tree</h2>" in page and "Multiply 46048 by 98" in page
    # a model's text in the tree is escaped, never markup
    html = tree_html(
        [
            {
                "path": "0",
                "depth": 0,
                "task": "<script>alert(1)</script>",
                "result": "<b>",
                "how": None,
                "atomic": True,
                "decomposition": None,
                "candidates": None,
                "steps": [
                    {"step": 0, "microstep": "solve", "votes": [1], "answer": {"result": "<i>"}, "correct": None}
                ],
            }
        ]
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "<i>" not in html

    start_run("hanoi", {"disks": 3}, {"agents": ["simulated:p=1.0"]}, store=db, run_id="h")
    out = run_maker("trace", "show", "h", "--tree", "--store", db, tmp=tmp_path)
    assert out.returncode == 2 and "has no task tree" in out.stderr


# -- the MAKER 5x5 set, end to end ---------------------------------------------------------------------------------
def test_all_200_5x5_problems_exact_with_simulated_roles(tmp_path: Path) -> None:
    """Decomposer p=0.85, judge 0.9, solver and composer 0.95, classifier 0.95, every error the worst kind (all
    wrong samples agree). `maker estimate --steps 4400 --p 0.85` gives k_min 7 for the 200 problems' ~22 voted
    steps each, at 95%; that is the documented k."""
    lines = [
        json.loads(x) for x in (ROOT / "data/maker-official/bench_long_mul_5_5__200.jsonl").read_text().splitlines()
    ]
    agent = "simulated:p=0.95,p_decompose=0.85,p_propose=0.85,p_judge=0.9,seed=11"
    db = tmp_path / "s.sqlite"
    wrong = []
    for line in lines:
        s = start_run("solve", {"task": line["question"]}, {"agents": [agent], "k": 7}, store=db, run_id=line["id"])
        if s.result["answer"] != line["answer"] or s.errors:
            wrong.append((line["id"], s.result["answer"], line["answer"], s.errors))
    assert len(lines) == 200 and wrong == []
    assert recognize(lines[0]["question"]) is not None


def test_maker_solve_shortcut(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    prompts = tmp_path / "prompts.toml"
    prompts.write_text('solve = """Work this out: {task}\nEnd with: result = N"""\n')
    out = ok(
        run_maker(
            "solve",
            TASK,
            "--agent",
            "simulated:p=0.95,seed=2",
            "--vote",
            "judge",
            "--max-depth",
            "2",
            "--prompts",
            prompts,
            "--detail",
            "samples",
            "--run-id",
            "S",
            "--store",
            db,
            tmp=tmp_path,
        )
    )
    assert out.stdout.rstrip().endswith("answer: 1938528704")
    with Store.open(db) as st_:
        record = st_.run("S")
        inputs = [r[13] for r in st_.steps(record.id) if r[14] == "solve"]
    assert record.params["vote"] == "judge" and record.params["max_depth"] == 2
    assert inputs and all(i.startswith("Work this out: Multiply") for i in inputs)
    prompts.write_text('solve = "no placeholder"\n')
    bad = run_maker(
        "solve",
        TASK,
        "--agent",
        "simulated:p=1",
        "--prompts",
        prompts,
        "--store",
        tmp_path / "bad.sqlite",
        tmp=tmp_path,
    )
    assert bad.returncode == 2 and "must use {task}" in bad.stderr and not (tmp_path / "bad.sqlite").exists()


@pytest.mark.parametrize(
    "name", ["bench_long_mul_6_6__200.jsonl", "bench_long_mul_10_10__200.jsonl", "bench_sort_len_500__50.jsonl"]
)
def test_the_other_maker_sets_exact_through_eval(name: str, tmp_path: Path) -> None:
    """The same roles and k on the 6x6, 10x10 and sorting sets, through `maker eval`'s Python API."""
    from maker.evaluation import evaluate

    agent = "simulated:p=0.95,p_decompose=0.85,p_propose=0.85,p_judge=0.9,seed=11"
    s = evaluate(
        ROOT / "data/maker-official" / name, {"agents": [agent], "k": 7}, store=tmp_path / "e.sqlite", concurrency=16
    )
    assert s.problems == (50 if "sort" in name else 200)
    assert s.correct == s.problems, [(r.id, r.got, r.error) for r in s.failures][:3]
