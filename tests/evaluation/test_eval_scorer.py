"""``maker eval --scorer``: a benchmark's own scoring function, loaded from a real file and a real module, over real
runs in a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maker.errors import UserError
from maker.evaluation import evaluate, load_scorer
from maker.runs import RunOptions
from tests._cli import invoke

AGENT = "simulated:p=1,seed=1"

SCORER = '''
def score(answer, expected, problem):
    """Full marks for the right product; the problems' own rules for the rest."""
    rule = problem.record.get("rule")
    if rule == "half":
        return 0.5
    if rule == "raise":
        raise ValueError("no such rule")
    if rule == "too much":
        return 2
    if rule == "text":
        return "yes"
    return answer == expected
'''


def _data(tmp: Path) -> Path:
    rows = [
        {"id": "right", "question": "Multiply 12 by 34", "answer": "408"},
        {"id": "half", "question": "Multiply 21 by 43", "answer": "903", "rule": "half"},
        {"id": "raise", "question": "Multiply 11 by 22", "answer": "242", "rule": "raise"},
        {"id": "too-much", "question": "Multiply 13 by 31", "answer": "403", "rule": "too much"},
        {"id": "text", "question": "Multiply 14 by 41", "answer": "574", "rule": "text"},
        {"id": "wrong", "question": "Multiply 15 by 51", "answer": "1"},
    ]
    path = tmp / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "bench_scorer.py").write_text(SCORER)
    return path


def test_scores_are_the_scorers_and_a_failing_scorer_fails_only_its_problem(tmp_path: Path) -> None:
    data = _data(tmp_path)
    scorer = f"{tmp_path / 'bench_scorer.py'}:score"
    s = evaluate(data, RunOptions(agents=[AGENT], k=1), store=tmp_path / "e.sqlite", scorer=scorer, name="s")
    rows = {r.id: r for r in s.rows}
    assert {k: r.score for k, r in rows.items()} == {
        "right": 1.0,
        "half": 0.5,
        "raise": None,
        "too-much": None,
        "text": None,
        "wrong": 0.0,
    }
    assert all(r.status == "done" for r in s.rows)  # the runs finished; only the scoring of three failed
    assert "scorer" in rows["raise"].error and "raised ValueError: no such rule" in rows["raise"].error
    assert "returned 2; a scorer returns a number from 0 to 1" in rows["too-much"].error
    assert "returned 'yes'" in rows["text"].error
    assert [r.id for r in s.rows if r.scoring_failed] == ["raise", "too-much", "text"]
    assert (s.correct, s.wrong, s.failed) == (1, 2, 3)
    assert s.accuracy == pytest.approx(1.5 / 6)
    assert s.accuracy_low <= s.accuracy <= s.accuracy_high
    assert s.settings.scorer == f"{tmp_path / 'bench_scorer.py'}:score"


def test_the_command_names_the_scorer_in_its_table_json_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path)
    monkeypatch.chdir(tmp_path)  # module:function finds modules in the working directory
    code, out = invoke(
        "eval",
        str(data),
        "--agent",
        AGENT,
        "--k",
        "1",
        "--scorer",
        "bench_scorer:score",
        "--summary",
        "s.json",
        "--report",
        "r.html",
        "--store",
        str(tmp_path / "e.sqlite"),
    )
    assert code == 0, out
    assert "scorer          bench_scorer:score" in out
    assert "accuracy        25.0%" in out
    assert "got      903  (score 0.5)" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["settings"]["scorer"] == "bench_scorer:score"
    assert [r["score"] for r in summary["rows"]] == [1.0, 0.5, None, None, None, 0.0]
    html = (tmp_path / "r.html").read_text()
    assert "scored by bench_scorer:score" in html and "raised ValueError: no such rule" in html


def test_without_a_scorer_answers_are_compared_as_before(tmp_path: Path) -> None:
    data = _data(tmp_path)
    s = evaluate(data, RunOptions(agents=[AGENT], k=1), store=tmp_path / "e.sqlite", name="b")
    assert [r.score for r in s.rows] == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert s.settings.scorer.startswith("built in")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("score", "give module:function or path/to/file.py:function"),
        ("no_such_module_here:score", "cannot load scorer"),
        ("json:no_such_function", "json has no 'no_such_function'"),
        ("json.decoder:NaN", "not a function(answer, expected, problem)"),
        ("missing/bench.py:score", "no file"),
    ],
)
def test_a_bad_scorer_is_refused_before_anything_runs(tmp_path: Path, ref: str, message: str) -> None:
    with pytest.raises(UserError, match="scorer") as info:
        load_scorer(ref)
    assert message in str(info.value)
    data = _data(tmp_path)
    with pytest.raises(UserError):
        evaluate(data, RunOptions(agents=[AGENT]), store=tmp_path / "e.sqlite", scorer=ref)
    assert not (tmp_path / "e.sqlite").exists()
