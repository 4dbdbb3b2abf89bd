"""The reference decompositions in :mod:`maker.workflows._reference`.

Ground truth comes from outside the module: the official data files' answers, Python's ``*`` and
``sorted``. The recursion (split until atomic, compose back up) must reproduce them, which shows that
``split`` and ``compose`` agree; every simulated mistake must be caught by ``check``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import maker.workflows._reference as reference
from maker.workflows._reference import Problem, Proposal, canonical_result, recognize, result_mistake, same_answer

DATA = Path(__file__).resolve().parents[2] / "data" / "maker-official"  # shipped with maker, see its NOTICE.md
FILES = {
    "bench_long_mul_5_5__200.jsonl": "multiply",
    "bench_long_mul_6_6__200.jsonl": "multiply",
    "bench_long_mul_10_10__200.jsonl": "multiply",
    "bench_sort_len_500__50.jsonl": "sort",
}
FAST = settings(max_examples=60, deadline=None)


def solve(problem: Problem, depth: int = 0) -> str:
    """The reference recursion: leaves by ``answer()``, inner nodes by ``compose(split().compose, ...)``."""
    assert depth < 40, f"recursion does not shrink {problem.task!r}"
    if problem.atomic():
        return problem.answer()
    proposal = problem.split()
    children = [recognize(text) for text in proposal.subtasks]
    assert all(c is not None and c.kind == problem.kind for c in children), proposal
    composed = problem.compose(proposal.compose, [solve(c, depth + 1) for c in children if c is not None])
    assert composed is not None, f"{proposal.compose!r} could not be applied"
    return composed


def multiply(a: int, b: int) -> Problem:
    problem = recognize(f"Multiply {a} by {b}")
    assert problem is not None
    return problem


def sort(values: list[int]) -> Problem:
    problem = recognize(f"Sort in ascending order: {json.dumps(values)}")
    assert problem is not None
    return problem


def load(name: str) -> list[dict[str, str]]:
    path = DATA / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_exports_are_pinned() -> None:
    assert sorted(reference.__all__) == [
        "ACCEPTED",
        "Problem",
        "Proposal",
        "canonical_result",
        "recognize",
        "result_mistake",
        "same_answer",
    ]


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_data_question_is_recognised_with_the_file_answer(name: str) -> None:
    for line in load(name):
        problem = recognize(line["question"])
        assert problem is not None, line["id"]
        assert problem.kind == FILES[name]
        assert same_answer(line["answer"], problem.answer()), line["id"]
        assert recognize(problem.task) == problem


@pytest.mark.parametrize("name", sorted(FILES))
def test_reference_recursion_reproduces_the_file_answers(name: str) -> None:
    for line in load(name)[:20]:
        problem = recognize(line["question"])
        assert problem is not None and not problem.atomic()
        assert same_answer(line["answer"], solve(problem)), line["id"]
        assert problem.check(problem.split())


def test_worked_multiplication_example() -> None:
    problem = recognize("Multiply the following numbers:\n46048 × 42098")
    assert problem is not None and problem.task == "Multiply 46048 by 42098"
    assert problem.split() == Proposal(("Multiply 46048 by 420", "Multiply 46048 by 98"), "R1 * 10^2 + R2")
    assert problem.answer() == "1938528704"
    assert problem.units() == 5.0
    assert problem.compose("R1 * 10^2 + R2", ["19340160", "4512704"]) == "1938528704"
    assert problem.compose("R1 * 10**2 + (R2)", ["19,340,160", " 4512704 "]) == "1938528704"
    assert problem.compose_units(problem.split()) == 1.0


def test_worked_sort_example() -> None:
    problem = sort(list(range(40, 0, -1)))
    first, rest = list(range(40, 20, -1)), list(range(20, 0, -1))
    assert problem.split() == Proposal(
        (f"Sort in ascending order: {json.dumps(first)}", f"Sort in ascending order: {json.dumps(rest)}"),
        "merge(R1, R2)",
    )
    assert problem.units() == 40 / 32 and problem.compose_units(problem.split()) == 1.0
    assert problem.compose("merge(R1, R2)", ["[1, 3, 5]", "[2, 4]"]) == "[1, 2, 3, 4, 5]"
    assert problem.compose("concatenate(R1, R2)", ["[1, 3, 5]", "[2, 4]"]) == "[1, 3, 5, 2, 4]"
    assert problem.compose("concat(R2, R1)", ["[1]", "[0]"]) == "[0, 1]"
    # A faithful merge: an unsorted child gives a wrong parent, as a model's merge would.
    assert problem.compose("merge(R1, R2)", ["[3, 1]", "[2]"]) == "[2, 3, 1]"
    assert problem.compose("merge(R1, R3)", ["[1]", "[2]"]) is None
    assert problem.compose("merge(R1, R2)", ["[1]", "two"]) is None


@pytest.mark.parametrize(
    "text, a, b",
    [
        ("Multiply 12 by 34", 12, 34),
        ("Multiply the following numbers:\n46048 × 42098", 46048, 42098),
        ("46048 × 42098", 46048, 42098),
        ("12 x 34", 12, 34),
        ("12 * 34", 12, 34),
        ("What is 12 times 34?", 12, 34),
        ("  multiply 007 by 3.  ", 7, 3),
    ],
)
def test_multiplication_phrasings(text: str, a: int, b: int) -> None:
    assert recognize(text) == multiply(a, b)


@pytest.mark.parametrize(
    "text",
    [
        "Add 12 and 34",
        "Multiply 3 by 4, then add 5",
        "Sort these: [1, 2] and [3]",
        "Sort the list",
        "Order [3, 1, 2]",
        "Sort in ascending order: [true, 2]",
        "Sort the result of sub-task 1 together with [3, 1]",
        "Multiply 46048 by 420 and add the result of sub-task 1",
        "",
    ],
)
def test_unsupported_texts_are_not_recognised(text: str) -> None:
    assert recognize(text) is None


def test_sort_phrasings() -> None:
    assert recognize("Please SORT [3, 1, 2]") == sort([3, 1, 2])
    assert recognize("Sort in ascending order:\n[3,1,2]").task == "Sort in ascending order: [3, 1, 2]"  # type: ignore[union-attr]
    assert recognize("sort []") == sort([])


@FAST
@given(st.integers(1, 10**12 - 1), st.integers(1, 10**12 - 1))
@example(10, 10)
@example(99, 4200)
@example(123456, 1000000)
def test_recursion_reproduces_products(a: int, b: int) -> None:
    problem = multiply(a, b)
    assert problem.task == f"Multiply {a} by {b}"
    assert solve(problem) == str(a * b)
    assert problem.units() > 0


@FAST
@given(st.lists(st.integers(-(10**6), 10**6), max_size=200))
def test_recursion_reproduces_sorted(values: list[int]) -> None:
    assert solve(sort(values)) == json.dumps(sorted(values))


def _digits_with_zeros(min_digits: int) -> st.SearchStrategy[int]:
    """Operands like 4200 or 10001: zero halves are where a wrong operator can look right."""
    digit = st.sampled_from("0000123456789")
    return st.tuples(st.integers(1, 9), st.lists(digit, min_size=min_digits - 1, max_size=11)).map(
        lambda t: int(str(t[0]) + "".join(t[1]))
    )


_SPLITTABLE = st.one_of(
    st.builds(multiply, _digits_with_zeros(2), _digits_with_zeros(2)),
    st.builds(sort, st.lists(st.integers(-5, 5), min_size=33, max_size=120)),
    st.builds(sort, st.lists(st.integers(-1000, 1000), min_size=33, max_size=120).map(sorted)),
    st.builds(sort, st.lists(st.just(7), min_size=33, max_size=40)),
)


@FAST
@given(_SPLITTABLE)
def test_reference_split_checks_and_every_mistake_fails(problem: Problem) -> None:
    right = problem.split()
    assert problem.check(right)
    assert problem.compose_units(right) >= 1.0
    for index in range(12):
        wrong = problem.split_mistake(index)
        assert wrong != right and not problem.check(wrong), (index, wrong)
        assert wrong == problem.split_mistake(index)


@pytest.mark.parametrize("problem", [multiply(46048, 42098), sort(list(range(100, 0, -3)))], ids=lambda p: p.kind)
def test_mistakes_cover_the_four_kinds(problem: Problem) -> None:
    right = problem.split()
    first_round = [problem.split_mistake(i) for i in range(4)]
    assert first_round[0].subtasks == right.subtasks or first_round[0].compose == right.compose  # split point
    assert len({m.subtasks for m in first_round}) > 1
    assert any("sub-task 1" in " ".join(m.subtasks) for m in first_round)
    assert any(m.subtasks == right.subtasks and m.compose != right.compose for m in first_round)
    assert {"R1 * 10^2 - R2", "concatenate(R1, R2)"} & {m.compose for m in first_round}


def test_check_refuses_lookups_loops_and_strangers() -> None:
    problem = multiply(46048, 42098)
    assert not problem.check(Proposal(("Multiply 2 by 3",), "R1 * 0 + 1938528704"))
    assert not problem.check(Proposal(("Multiply 42098 by 46048",), "R1"))  # a reworded copy would loop
    assert not problem.check(Proposal(("Multiply 46048 by 42098", "Multiply 1 by 0"), "R1 + R2"))
    assert not problem.check(Proposal(("Sort [1]", "Multiply 46048 by 98"), "R1 + R2"))
    assert not problem.check(Proposal((), "1938528704"))
    listed = sort(list(range(40)))
    assert not listed.check(Proposal((listed.task,), "merge(R1)"))


def test_atomic_problems_do_not_split() -> None:
    for problem in (multiply(46048, 7), multiply(3, 42098), sort(list(range(32)))):
        assert problem.atomic()
        assert solve(problem) == problem.answer()
        with pytest.raises(ValueError, match="atomic"):
            problem.split()


@pytest.mark.parametrize(
    "rule",
    [
        "__import__('os').system('touch {path}')",
        "open('{path}', 'w')",
        "R1.__class__",
        "R1.bit_length()",
        "X1 + R2",
        "R3 + R1",
        "R1 / R2",
        "R1 if R2 else 0",
        "[R1, R2]",
        "lambda: open('{path}', 'w')",
        "10^10^10",
        "(" * 240 + "R1" + ")" * 240,
        "R1 +",
        "",
    ],
)
def test_compose_refuses_anything_outside_the_rule_language(rule: str, tmp_path: Path) -> None:
    path = tmp_path / "pwned"
    assert multiply(46048, 42098).compose(rule.format(path=path), ["19340160", "4512704"]) is None
    assert sort(list(range(40))).compose(rule.format(path=path), ["[1]", "[2]"]) is None
    assert not path.exists()


def test_compose_refuses_unreadable_results() -> None:
    problem = multiply(46048, 42098)
    assert problem.compose("R1 + R2", ["12", "about 5"]) is None
    assert problem.compose("R1 + R2", ["12"]) is None
    assert problem.compose("R1 + -R2", ["12", "#### 5"]) == "7"


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("  1938528704 ", "1938528704"),
        ("1,234", "1234"),
        ("1 234 567", "1234567"),
        ("007", "7"),
        ("12.0", "12"),
        ("-0", "0"),
        ("-42", "-42"),
        ('"1234"', "1234"),
        ("#### 1234", "1234"),
        ("'#### 5'", "5"),
        ("[3,1,2]", "[3, 1, 2]"),
        ("#### [-1,  2]", "[-1, 2]"),
        ("[]", "[]"),
        ("[1, 2.5]", "[1, 2.5]"),
        ("  Hello\n  World ", "hello world"),
        ("12.5", "12.5"),
    ],
)
def test_canonical_result_examples(text: str, canonical: str) -> None:
    assert canonical_result(text) == canonical


@FAST
@given(st.integers(-(10**30), 10**30), st.integers(0, 40))
@example(0, 0)
@example(7, 2)
@example(111, 2)
@example(10, 0)
def test_integer_mistakes_are_readable_and_wrong(value: int, index: int) -> None:
    mistake = result_mistake(str(value), index)
    assert canonical_result(mistake) != str(value)
    assert canonical_result(mistake).lstrip("-").isdigit()
    assert mistake == canonical_result(mistake)  # written as a model would write it: no leading zeros
    assert mistake == result_mistake(str(value), index)


@FAST
@given(st.lists(st.integers(-50, 50), min_size=2, max_size=40).filter(lambda xs: len(set(xs)) >= 2), st.integers(0, 40))
def test_list_mistakes_are_readable_and_wrong(values: list[int], index: int) -> None:
    correct = json.dumps(sorted(values))
    mistake = result_mistake(correct, index)
    assert canonical_result(mistake) != canonical_result(correct)
    assert isinstance(json.loads(mistake), list)


def test_mistakes_of_other_answers() -> None:
    assert canonical_result(result_mistake("[]", 0)) != "[]"
    assert canonical_result(result_mistake("[5, 5]", 0)) != "[5, 5]"
    assert canonical_result(result_mistake("blue", 3)) != "blue"
    kinds = {result_mistake("1938528704", i) for i in range(3)}
    assert "938528704" in kinds and "1938528705" in kinds and "9138528704" in kinds


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="sortSORT[]-0123456789, x×*.byMultiply\n\"'#")))
def test_recognize_and_scoring_never_raise(text: str) -> None:
    problem = recognize(text)
    assert problem is None or recognize(problem.task) == problem
    canonical_result(text)
    assert same_answer(text, text)
    same_answer(text, "[" * 5000)


def test_same_answer() -> None:
    assert same_answer("1938528704", "The product is:\n#### 1,938,528,704")
    assert same_answer("[-3,1,2]", "reasoning... #### [-3, 1, 2]")
    assert same_answer("[-3,1,2]", "[-3, 1,\n 2]")
    assert not same_answer("[-3,1,2]", "#### [1, -3, 2]")
    assert not same_answer("12", "#### 13")
    assert same_answer("Paris", "  paris ")
    assert not same_answer("12", "1" * 5000 + "]")
