"""Plain step rows (no red flags, speculation record, kept input or tag) are written with those four columns as
NULL literals; the store holds exactly what it holds for full rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from maker import Store
from maker.runs import start_run
from maker.store import STEP_COLUMNS, PlainStepRow, StepRow
from tests._cli import step_rows


def _full(i: int, flags: str | None) -> StepRow:
    return StepRow(
        i, f"d{i}", '{"x":1}', "[3]", 1, 3, flags, 0, 1.5 + i, 0.25, 1, None, 12, None, "m", None, "[[0,40,0,12,1]]"
    )


def test_mixed_rows_are_stored_as_the_same_rows_all_full(tmp_path: Path) -> None:
    rows = [_full(i, '{"format":1}' if i % 3 == 0 else None) for i in range(10)]
    mixed: list[StepRow | PlainStepRow] = [
        r if r.red_flags is not None else PlainStepRow(*(getattr(r, f) for f in PlainStepRow._fields)) for r in rows
    ]
    assert sum(type(r) is PlainStepRow for r in mixed) == 6
    stored = []
    for name, batch in (("full", rows), ("mixed", mixed)):
        store = Store.create(tmp_path / f"{name}.sqlite")
        rid = store.create_run(
            name, workflow="w", workflow_version=1, params={}, config={}, expected_steps=10, state_json="{}"
        )
        store.commit(rid, batch, (), (10, "{}"), {"steps": 10})
        stored.append(list(store.steps(rid)))
        store.close()
    assert stored[0] == stored[1] == rows
    assert all(type(r) is StepRow for r in stored[1])  # read back as full rows, the four columns None


def test_a_run_with_some_red_flagged_steps_stores_what_a_run_keeping_every_input_stores(tmp_path: Path) -> None:
    """A run that keeps inputs (detail ``samples``) writes every row full; the same run at detail ``summary``
    writes most rows plain. Apart from the kept inputs, the step tables are the same, red flags included."""
    db = tmp_path / "s.sqlite"
    options = {"agents": ["simulated:p=0.95,seed=3,malformed=0.06,overlong=0.02"], "k": 3, "seed": 5}
    start_run("hanoi", {"disks": 7}, options, store=db, run_id="summary")
    start_run("hanoi", {"disks": 7}, {**options, "detail": "samples"}, store=db, run_id="samples")
    plain, full = step_rows(db, "summary", ("input",)), step_rows(db, "samples", ("input",))
    assert plain == full
    at = [c for c in STEP_COLUMNS if c not in ("t_start", "dur", "input")].index("red_flags")  # as step_rows reads
    flagged = [json.loads(r[at]) for r in plain if r[at] is not None]
    assert 0 < len(flagged) < len(plain) == 127
    con = sqlite3.connect(db)
    try:
        total = con.execute("SELECT red_flags FROM runs WHERE run_id='summary'").fetchone()[0]
        inputs = con.execute(
            "SELECT count(input) FROM steps WHERE run=(SELECT id FROM runs WHERE run_id='summary')"
        ).fetchone()[0]
    finally:
        con.close()
    assert sum(sum(f.values()) for f in flagged) == total
    assert inputs == 0
