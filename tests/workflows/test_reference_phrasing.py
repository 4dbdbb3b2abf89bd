"""Tasks phrased as other benchmarks phrase them: recognised by :mod:`maker.workflows._reference`, solved by the real
``maker solve`` with simulated agents, and refused with a message that says what would be accepted.

Ground truth comes from outside the module: Python's ``Fraction`` products and ``sorted``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from maker.evaluation import evaluate
from maker.runs import RunOptions
from maker.workflows._reference import recognize, same_answer
from tests._cli import invoke

AGENT = "simulated:p=0.9,seed=3"


@pytest.mark.parametrize(
    ("text", "a", "b"),
    [
        ("Solve the following multiplication: 123 * 456. Give only the result as your final answer.", "123", "456"),
        ("What is the product of 12 and 34? Answer with a number.", "12", "34"),
        ("Compute 1234 x 5678, then write the result alone.", "1234", "5678"),
        ("Please calculate 25 times 4.", "25", "4"),
        ("Solve the following multiplication: -123 * 456. Give only the result.", "-123", "456"),
        ("Multiply -1.5 by -2.25", "-1.5", "-2.25"),
        ("What is 0.125 × 80?", "0.125", "80"),
        ("Find the product of 3.50 and -2.", "3.5", "-2"),
    ],
)
def test_one_multiplication_however_phrased(text: str, a: str, b: str) -> None:
    problem = recognize(text)
    assert problem is not None and problem.kind == "multiply"
    truth = Fraction(a) * Fraction(b)
    assert Fraction(problem.answer()) == truth
    assert recognize(problem.task) == problem  # its canonical text states the same problem


@pytest.mark.parametrize(
    ("text", "values", "descending", "strings"),
    [
        ("Sort these numbers in ascending order: 5, -3, 12, 0", [5, -3, 12, 0], False, False),
        ("Sort in descending order: [3, 1, 2]", [3, 1, 2], True, False),
        ("Sort the list from largest to smallest: [4.5, -1.25, 3]", [4.5, -1.25, 3], True, False),
        ("Sort in ascending order: [1, 2.5, -0.5]", [1, 2.5, -0.5], False, False),
        (
            "Sort these numbers in descending order: -12.3, 45.1, 7\n"
            "Please follow the instruction below:\n"
            "## 1. Let all your answers be a list of numbers. Instead of reporting your answer as -69, -13, 1, 7, "
            "use ['-69', '-13', '1', '7'] instead\n"
            "## 2. Convert all numbers in the square brackets as strings in the answers.",
            [-12.3, 45.1, 7],
            True,
            True,
        ),
    ],
)
def test_one_list_to_sort_however_phrased(text: str, values: list[float], descending: bool, strings: bool) -> None:
    problem = recognize(text)
    assert problem is not None and problem.kind == "sort"
    got = json.loads(problem.answer())
    assert all(isinstance(x, str) for x in got) == strings
    assert [Fraction(str(x)) for x in got] == sorted((Fraction(str(v)) for v in values), reverse=descending)
    assert recognize(problem.task) == problem


def test_the_canonical_problems_keep_their_recursive_decomposition() -> None:
    problem = recognize("Solve the following multiplication: 123 * 456. Give only the result as your final answer.")
    assert problem == recognize("Multiply 123 by 456") and not problem.atomic()  # type: ignore[union-attr]
    assert recognize("Sort these numbers in ascending order: 3, 1, 2") == recognize("Sort [3, 1, 2]")


@pytest.mark.parametrize(
    "text",
    ["Write me a poem", "Multiply 3 by 4, then add 5", "What is 2 * 3 * 4?", "Sort these: [1, 2] and [3]"],
)
def test_other_tasks_are_not_recognised(text: str) -> None:
    assert recognize(text) is None


def test_solve_plays_a_benchmark_phrasing_with_simulated_agents(tmp_path: Path) -> None:
    task = "Solve the following multiplication: 123 * 456. Give only the result as your final answer."
    code, out = invoke("solve", task, "--agent", AGENT, "--k", "3", "--store", str(tmp_path / "s.sqlite"))
    assert code == 0, out
    assert f"answer: {123 * 456}" in out


@pytest.mark.parametrize(
    "command",
    [("solve", "Write me a poem"), ("run", "solve", "--set", "task=Write me a poem")],
    ids=["maker solve", "maker run solve"],
)
def test_solve_refuses_a_task_simulated_agents_cannot_play_and_says_what_to_do(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    code, out = invoke(*command, "--agent", AGENT, "--store", str(tmp_path / "s.sqlite"))
    assert code == 2, out
    assert "simulated agents play only the tasks the reference knows" in out
    assert "one multiplication" in out and "one list of numbers to sort" in out
    assert "--agent openai:MODEL@URL" in out and "hf:" in out
    assert "oracle(state)" not in out
    assert not (tmp_path / "s.sqlite").exists()


def test_eval_of_other_phrasings_with_simulated_agents(tmp_path: Path) -> None:
    rows = [
        ("m", "Solve the following multiplication: 123 * 456. Give only the result as your final answer.", "56088"),
        ("neg", "Solve the following multiplication: -12 * 3.5. Give only the result.", "-42"),
        ("desc", "Sort these numbers in descending order: 3, -1.5, 2", "[3, 2, -1.5]"),
        ("str", "Sort in ascending order: [2, 10, 1]. Give the answer as a list of strings.", ["1", "2", "10"]),
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in rows))
    s = evaluate(data, RunOptions(agents=[AGENT], k=3), store=tmp_path / "e.sqlite", name="p")
    assert [(r.id, r.correct) for r in s.rows] == [(i, True) for i, _, _ in rows], [r.error for r in s.rows]
    assert same_answer('["1", "2", "10"]', s.rows[3].got or "")
