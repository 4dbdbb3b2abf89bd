"""The store's named reads, on real runs in real stores: each answers its question exactly as the committed step rows
(:meth:`Store.steps`) and the kept snapshots say, on a store opened read-only, and nothing outside the store holds
SQL of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from maker.runs import fork_run, start_run
from maker.store import Answer, Durability, Snapshot, StepTally, Store

AGENT = "simulated:p=0.85,spread=2,malformed=0.03,seed=2"
MAKER = Path(__file__).parents[2] / "maker"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hanoi run keeping its inputs and every snapshot, the same run keeping neither, a fork of the first, and a
    tree workflow's run (its steps tagged with node paths)."""
    db = tmp_path_factory.mktemp("reads") / "s.sqlite"
    options = {"agents": [AGENT], "k": 2, "commit_every": 4, "snapshots": "all"}
    start_run("hanoi", {"disks": 4}, {**options, "detail": "samples"}, store=db, run_id="h")
    start_run("hanoi", {"disks": 4}, {"agents": [AGENT], "k": 2, "commit_every": 4}, store=db, run_id="lean")
    fork_run("h", 8, store=db, new_id="f")
    tree = {"agents": ["simulated:p=0.8,seed=3,spread=3"], "k": 3}
    start_run("solve", {"task": "Multiply 46048 by 98", "vote": "judge"}, tree, store=db, run_id="t")
    return db


def test_answers_are_the_step_rows_answers_and_digests(store: Path) -> None:
    with Store.open(store) as st:
        for run_id in ("h", "f", "t"):
            rec = st.run(run_id)
            rows = list(st.steps(rec.id))
            answers = list(st.answers(rec.id))
            assert answers == [(r.step, r.digest, r.answer) for r in rows]
            assert all(type(a) is Answer for a in answers)
            assert [a.step for a in answers] == list(range(rec.first_step, rec.steps))
            assert list(st.answers(rec.id, rec.first_step + 2, rec.first_step + 5)) == answers[2:5]
            assert list(st.answers(rec.id, rec.steps)) == []
        fork = st.run("f")
        assert fork.first_step == 8 and next(st.answers(fork.id)).step == 8  # a fork's own steps only
        moves = [json.loads(a.answer)["move"] for a in st.answers(st.run("h").id)]
    assert len(moves) == 15 and all(len(m) == 3 for m in moves)


def test_step_tallies_are_the_step_rows_columns_for_statistics(store: Path) -> None:
    with Store.open(store) as st:
        for run_id in ("h", "lean", "f", "t"):
            rid = st.run(run_id).id
            tallies = list(st.step_tallies(rid))
            assert all(type(t) is StepTally for t in tallies)
            assert tallies == [tuple(getattr(r, f) for f in StepTally._fields) for r in st.steps(rid)]


def test_tagged_steps_are_a_tree_runs_steps_and_no_others(store: Path) -> None:
    with Store.open(store) as st:
        tree = st.run("t").id
        tagged = list(st.tagged_steps(tree))
        assert tagged and tagged == [r for r in st.steps(tree) if r.tag is not None]
        assert {r.tag for r in tagged} >= {"0"} and all(re.fullmatch(r"\d+(\.\d+)*", r.tag or "") for r in tagged)
        assert list(st.tagged_steps(st.run("h").id)) == []


def test_step_input_is_the_kept_prompt_or_none(store: Path) -> None:
    with Store.open(store) as st:
        kept, lean = st.run("h"), st.run("lean")
        for row in st.steps(kept.id):
            assert row.input is not None and st.step_input(kept.id, row.step) == row.input
        assert "Towers of Hanoi" in (st.step_input(kept.id, 3) or "")
        assert st.step_input(lean.id, 3) is None  # detail summary keeps no inputs
        assert st.step_input(kept.id, kept.steps) is None  # no such step
        assert st.step_input(lean.id, -1) is None


def test_snapshots_are_the_kept_states_in_step_order(store: Path) -> None:
    with Store.open(store) as st:
        rec, fork = st.run("h"), st.run("f")
        snaps = list(st.snapshots(rec.id))
        assert all(type(s) is Snapshot for s in snaps)
        steps = [s.step for s in snaps]
        assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == rec.steps
        assert set(steps) >= {0, 4, 8, 12, 15}  # every commit's, with snapshots "all"
        assert snaps[-1] == st.latest_snapshot(rec.id)
        assert all(s == st.latest_snapshot(rec.id, s.step) for s in snaps)
        assert list(st.snapshots(rec.id, stop=8)) == [s for s in snaps if s.step < 8]
        assert list(st.snapshots(rec.id, 4, 12)) == [s for s in snaps if 4 <= s.step < 12]
        # a fork's first snapshot is the parent's state before the fork step
        first = next(st.snapshots(fork.id))
        assert first.step == 8 and json.loads(first.state) == json.loads(st.latest_snapshot(rec.id, 8)[1])


def test_a_store_opened_for_writing_waits_for_the_disk(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with Store.create(db) as st:
        assert st.durability() == Durability("wal", 2)  # 2: FULL
    with Store.open(db, write=True) as st:
        assert st.durability().synchronous == 2
    with Store.open(db) as st:
        assert st.durability().journal_mode == "wal"


def test_the_store_owns_its_sql() -> None:
    """No raw query is handed out, and no module outside maker/store speaks SQL or opens SQLite itself."""
    assert not hasattr(Store, "query")
    sql = re.compile(r"\bimport sqlite3\b|\bSELECT\b[^\n]*\bFROM\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bPRAGMA\b")
    offending = [
        str(path.relative_to(MAKER.parent))
        for path in sorted(MAKER.rglob("*.py"))
        if "store" not in path.relative_to(MAKER).parts[:1] and sql.search(path.read_text(encoding="utf-8"))
    ]
    assert offending == []
