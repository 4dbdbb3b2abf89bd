"""The run's points (a point of cumulative counters per commit, kept in its stats for live views)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as hs

from maker.engine._points import LIMIT, POINT_FIELDS, Points
from maker.store import Store
from tests._cli import ok, run_maker

AGENT = "simulated:gpt-4.1-mini"


def _feed(n: int, seed: int) -> tuple[Points, list[dict[str, int]]]:
    rng = random.Random(seed)
    p = Points()
    truth = []
    step = calls = rounds = 0
    for _ in range(n):
        k = rng.randint(1, 50)
        tops = [rng.randint(1, 9) for _ in range(k)]
        step += k
        rounds += sum(tops)
        calls += 3 * k
        values = {f: 0 for f in POINT_FIELDS} | {
            "step": step,
            "rounds": rounds,
            "calls": calls,
            "max_rounds": max(tops),
        }
        p.add(values, {"too_long": step // 7})
        truth.append(values)
    return p, truth


@settings(max_examples=30, deadline=None)
@given(n=hs.integers(1, 3000), seed=hs.integers(0, 2**16))
def test_thinning_keeps_every_point_left_exact(n: int, seed: int) -> None:
    p, truth = _feed(n, seed)
    assert len(p) <= LIMIT
    assert p.cols["step"][-1] == truth[-1]["step"]  # the latest point is always kept
    by_step = {t["step"]: t for t in truth}
    prev = 0
    for i, s in enumerate(p.cols["step"]):
        t = by_step[s]
        assert (p.cols["rounds"][i], p.cols["calls"][i]) == (t["rounds"], t["calls"])
        assert p.flags[i] == {"too_long": s // 7}
        # a kept point's most rounds covers every step since the point kept before it
        assert p.cols["max_rounds"][i] == max(x["max_rounds"] for x in truth if prev < x["step"] <= s)
        prev = s


def test_a_runs_points_match_its_steps_across_a_resume(tmp_path: Path) -> None:
    """Points written at every commit of a run interrupted and resumed add up to what its steps table holds."""
    db = tmp_path / "s.sqlite"
    common = ("--agent", AGENT, "--store", db, "--commit-every", "37")
    stopped = run_maker(
        "run",
        "hanoi",
        "--set",
        "disks=11",
        *common,
        "--run-id",
        "p",
        "--max-cost",
        "0.5",
        "--over-budget",
        tmp=tmp_path,
    )
    assert stopped.returncode == 3, stopped.stderr  # the budget stopped it part way
    with Store.open(db) as st:
        first = st.run("p")
    assert first.status == "stopped" and 0 < first.steps < 2047  # the budget stopped it part way
    ok(run_maker("resume", "p", "--store", db, "--max-cost", "1000", tmp=tmp_path))
    with Store.open(db) as st:
        record = st.run("p")
    pts = record.stats["points"]
    con = sqlite3.connect(db)
    (rounds, calls) = con.execute("SELECT sum(rounds), sum(samples) FROM steps WHERE run=?", (record.id,)).fetchone()
    assert pts["step"][-1] == record.steps == 2047
    assert pts["calls"][-1] == record.calls == calls
    assert pts["rounds"][-1] == rounds
    assert pts["red_flags"][-1] == record.red_flags == sum(sum(f.values()) for f in [pts["flags"][-1]])
    assert pts["cost"][-1] is not None and abs(pts["cost"][-1] - record.stats["cost"]) < 1e-6
    assert first.steps in pts["step"]  # the stopping commit is a point
    # each point's most rounds is the most of the steps between it and the point before
    prev = 0
    for s, top in zip(pts["step"], pts["max_rounds"], strict=True):
        (most,) = con.execute(
            "SELECT max(rounds) FROM steps WHERE run=? AND step>=? AND step<?", (record.id, prev, s)
        ).fetchone()
        assert top == most
        prev = s
    con.close()


def test_points_start_at_the_resume_of_a_run_recorded_without_them(tmp_path: Path) -> None:
    """A run recorded before points were kept gets a first point when it resumes, marking what came before as
    unknown (no most rounds); the points after it count from there."""
    db = tmp_path / "s.sqlite"
    common = ("--agent", AGENT, "--store", db, "--commit-every", "50")
    stopped = run_maker(
        "run", "hanoi", "--set", "disks=8", *common, "--run-id", "o", "--max-cost", "0.1", "--over-budget", tmp=tmp_path
    )
    assert stopped.returncode == 3, stopped.stderr  # the budget stopped it part way
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET stats = json_remove(stats, '$.points') WHERE run_id='o'")
    con.commit()
    with Store.open(db) as st:
        before = st.run("o")
    assert "points" not in before.stats and before.status == "stopped"
    ok(run_maker("resume", "o", "--store", db, "--max-cost", "1000", tmp=tmp_path))
    with Store.open(db) as st:
        pts = st.run("o").stats["points"]
    assert pts["step"][0] == before.steps and pts["max_rounds"][0] is None and pts["rounds"][0] == 0
    (rounds,) = con.execute(
        "SELECT sum(rounds) FROM steps WHERE run=(SELECT id FROM runs WHERE run_id='o') AND step>=?", (before.steps,)
    ).fetchone()
    assert pts["rounds"][-1] == rounds and pts["step"][-1] == 255
    con.close()
