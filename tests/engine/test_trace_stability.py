"""Traces do not drift: runs of every decision path give, row for row and sample for sample, the record the
engine gave before it was split into decider, scheduler and ledger (pinned digests, measured on that engine).

A change that alters any of these digests changes what existing runs would record on resume or fork; it must
be deliberate, with a new workflow version or a note on what changed and why. (The simulated agents here say
``tokens=500``: that was their default before a simulated response's tokens became its text's length.)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from maker.runs import start_run

CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any], int, str]] = {
    "voting with red flags": (
        "hanoi",
        {"disks": 8},
        {
            "agents": ["simulated:p=0.9,seed=3,spread=2,malformed=0.05,overlong=0.03,tokens=500"],
            "k": 3,
            "seed": 7,
            "detail": "samples",
        },
        255,
        "69b44b9f5f67699a",
    ),
    "escalation": (
        "addition",
        {"digits": 60, "seed": 2},
        {
            "agents": ["simulated:p=0.6,seed=1,tokens=500", "simulated:p=0.95,seed=2,tokens=500"],
            "k": 2,
            "max_rounds": 3,
            "seed": 1,
            "detail": "samples",
        },
        60,
        "e9c4e534368f4647",
    ),
    "drafting, score verifiers, entropy routing": (
        "hanoi",
        {"disks": 7},
        {
            "agents": ["simulated:p=0.995,seed=9,hard_fraction=0.1,tokens=500"],
            "k": 2,
            "seed": 4,
            "drafter": "simulated:p=0.8,seed=5,tokens=500",
            "verifiers": [
                "simulated:seed=6,tpr=0.95,fpr=0.1,tokens=500",
                "simulated:seed=8,tpr=0.9,fpr=0.2,tokens=500",
            ],
            "verify_k": 2,
            "entropy_threshold": 1.0,
        },
        127,
        "8576734d1d5aae05",
    ),
    "drafting, voting verifiers": (
        "hanoi",
        {"disks": 6},
        {
            "agents": ["simulated:p=0.99,seed=9,tokens=500"],
            "k": 3,
            "seed": 4,
            "drafter": "simulated:p=0.8,seed=5,tokens=500",
            "verifiers": ["simulated:p=0.9,seed=6,tokens=500"],
            "verify": "vote",
            "detail": "samples",
        },
        63,
        "04c55e3994eeed16",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trace_is_the_one_recorded_before(case: str, tmp_path: Path) -> None:
    workflow, params, options, steps, digest = CASES[case]
    db = tmp_path / "g.sqlite"
    start_run(workflow, params, options, store=db, run_id="g")
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT step, digest, answer, votes, rounds, samples, red_flags, agent, correct, spec, "
            "tokens, input FROM steps ORDER BY step"
        ).fetchall()
        samples = con.execute("SELECT * FROM samples ORDER BY step, idx").fetchall()
        run = con.execute("SELECT calls, red_flags, errors, max_rounds, tokens FROM runs").fetchone()
    finally:
        con.close()
    assert len(rows) == steps
    assert hashlib.sha256(json.dumps([rows, samples, run]).encode()).hexdigest()[:16] == digest
