"""Bounded stores: the snapshots a run keeps follow its ``snapshots`` option, and resume (after a real SIGKILL),
replay and fork at any step give what they give with every snapshot kept; ``maker runs`` shows the sizes; a
resumed run's summary tells its own segment's wall time from the run's total."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from maker import StepUndecidedError, Store
from maker.errors import NondeterminismError
from maker.runs import DEFAULT_SNAPSHOTS, RunOptions, fork_run, replay_run, resume_run, start_run
from tests._cli import committed_steps, has_committed, kill_when, run_maker, step_rows

AGENT = "simulated:p=0.99,seed=3"
# Commits by count only, so the steps a snapshot is taken at do not depend on the machine's speed.
BY_COUNT = {"agents": [AGENT], "k": 3, "seed": 2, "commit_every": 7, "commit_seconds": 1e9}


def _snapshots(db: Path, run_id: str) -> dict[int, str]:
    con = sqlite3.connect(db)
    try:
        return dict(
            con.execute("SELECT step, state FROM snapshots WHERE run=(SELECT id FROM runs WHERE run_id=?)", (run_id,))
        )
    finally:
        con.close()


def _policy(taken: list[int], every: int) -> set[int]:
    """What ``every:N`` keeps of the snapshots taken at ``taken``: the first, the latest, the first of each
    stretch of ``every`` steps."""
    kept = {taken[0], taken[-1]}
    for stretch in {s // every for s in taken}:
        kept.add(min(s for s in taken if s // every == stretch))
    return kept


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store, the same 255-step Hanoi run twice: ``all`` keeps every snapshot, ``bounded`` one per 50 steps."""
    db = tmp_path_factory.mktemp("bounds") / "s.sqlite"
    start_run("hanoi", {"disks": 8}, {**BY_COUNT, "snapshots": "all"}, store=db, run_id="all")
    start_run("hanoi", {"disks": 8}, {**BY_COUNT, "snapshots": "every:50"}, store=db, run_id="bounded")
    return db


def test_the_default_bounds_the_store_and_is_recorded_with_the_run(tmp_path: Path) -> None:
    assert RunOptions(agents=[AGENT]).snapshots == DEFAULT_SNAPSHOTS == "every:16384"
    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 6}, {"agents": [AGENT]}, store=db, run_id="d")
    with Store.open(db) as st:
        assert st.run("d").config["snapshots"] == DEFAULT_SNAPSHOTS


def test_snapshots_kept_follow_the_policy(pair: Path) -> None:
    taken = sorted(_snapshots(pair, "all"))
    assert taken == [*range(0, 255, 7), 255], "every commit's snapshot is kept with `all`"
    kept = _snapshots(pair, "bounded")
    assert sorted(kept) == sorted(_policy(taken, 50)) == [0, 56, 105, 154, 203, 252, 255]
    # the ones kept are the same states
    every = _snapshots(pair, "all")
    assert all(kept[s] == every[s] for s in kept)
    assert step_rows(pair, "bounded") == step_rows(pair, "all")


@pytest.mark.parametrize("bad", ["every:0", "every", "some", "every:-3", "every:1.5"])
def test_a_bad_policy_is_refused_naming_the_forms(bad: str, tmp_path: Path) -> None:
    proc = run_maker(
        "run",
        "hanoi",
        "--set",
        "disks=3",
        "--agent",
        AGENT,
        "--snapshots",
        bad,
        "--store",
        tmp_path / "s.sqlite",
        tmp=tmp_path,
    )
    assert proc.returncode == 2 and "'all' or 'every:N'" in proc.stderr, proc.stderr
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("step", [0, 1, 6, 7, 8, 55, 56, 57, 100, 104, 105, 106, 200, 254, 255])
def test_a_fork_at_any_step_starts_from_the_same_state(step: int, pair: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    db.write_bytes(pair.read_bytes())
    for parent in ("all", "bounded"):
        fork_run(parent, step, store=db, new_id=f"{parent}-at-{step}")
    # the fork's first snapshot is the state before `step`, re-applied from the nearest snapshot kept
    assert _snapshots(db, f"bounded-at-{step}")[step] == _snapshots(db, f"all-at-{step}")[step]
    if step in _snapshots(pair, "all"):
        assert _snapshots(db, f"all-at-{step}")[step] == _snapshots(pair, "all")[step]
    # and the same seed decides the same steps from there
    ours = step_rows(db, f"bounded-at-{step}")
    assert ours == step_rows(db, f"all-at-{step}") == step_rows(pair, "all")[step:]


def test_maker_fork_inherits_the_policy_or_takes_another(pair: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    db.write_bytes(pair.read_bytes())
    for new_id, more in (("same", ()), ("every", ("--snapshots", "all"))):
        proc = run_maker(
            "fork", "bounded", "--from-step", "100", "--run-id", new_id, *more, "--store", db, tmp=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
    taken = [100, *range(107, 255, 7), 255]
    assert sorted(_snapshots(db, "every")) == taken
    assert sorted(_snapshots(db, "same")) == sorted(_policy(taken, 50))
    with Store.open(db) as st:
        assert (st.run("same").config["snapshots"], st.run("every").config["snapshots"]) == ("every:50", "all")


def test_replay_of_a_bounded_run_checks_the_snapshots_kept(pair: Path) -> None:
    every, bounded = replay_run("all", store=pair), replay_run("bounded", store=pair)
    assert every.steps == bounded.steps == 255 and every.finished and bounded.finished
    assert (every.snapshots_checked, bounded.snapshots_checked) == (38, 7)


def test_replay_of_a_bounded_run_still_catches_an_impure_apply(tmp_path: Path) -> None:
    from tests.fixtures import drifting

    db = tmp_path / "s.sqlite"
    start_run(
        "tests.fixtures.drifting:Leaky",
        {"steps": 10},
        {"agents": ["simulated:p=0.95,seed=1"], "commit_every": 3, "commit_seconds": 1e9},
        store=db,
        run_id="leaky",
    )
    assert sorted(_snapshots(db, "leaky")) == [0, 10]
    drifting.BONUS = 1
    try:
        with pytest.raises(NondeterminismError, match="differs from the recorded snapshot") as err:
            replay_run("leaky", store=db)
    finally:
        drifting.BONUS = 0
    assert err.value.step == 9, "found at the latest snapshot, the first one kept after the hidden input"


def test_runs_shows_the_store_and_snapshot_sizes(pair: Path, tmp_path: Path) -> None:
    rows = {r["run_id"]: r for r in json.loads(run_maker("runs", "--store", pair, "--json", tmp=tmp_path).stdout)}
    for run_id in ("all", "bounded"):
        snaps = _snapshots(pair, run_id)
        assert rows[run_id]["snapshots"] == len(snaps)
        assert rows[run_id]["snapshot_bytes"] == sum(len(s.encode()) for s in snaps.values())
    assert rows["all"]["snapshot_bytes"] > 4 * rows["bounded"]["snapshot_bytes"]
    human = run_maker("runs", "--store", pair, tmp=tmp_path)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert re.match(rf"all .* snapshots 38 \({rows['all']['snapshot_bytes'] / 1e3:.1f} kB\)$", lines[0]), lines[0]
    assert re.match(rf"bounded .* snapshots 7 \({rows['bounded']['snapshot_bytes']} B\)$", lines[1]), lines[1]
    wal = pair.with_name(pair.name + "-wal")
    size = pair.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert 1e3 <= size < 1e6 and lines[2:] == [f"store {pair}: {size / 1e3:.1f} kB on disk"]


def test_a_resumed_summary_tells_the_segment_from_the_total(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with pytest.raises(StepUndecidedError):
        start_run("hanoi", {"disks": 8}, {**BY_COUNT, "max_rounds": 1}, store=db, run_id="r")
    with Store.open(db) as st:
        failed = st.run("r")
    assert 0 < failed.steps < 255 and failed.wall_s > 0
    summary = resume_run("r", store=db, overrides={"max_rounds": 100})
    assert summary.status == "done" and summary.steps == 255
    assert summary.segment_steps == 255 - failed.steps
    assert summary.wall_s == pytest.approx(failed.wall_s + summary.segment_wall_s, abs=2e-3)
    assert 0 < summary.segment_wall_s < summary.wall_s
    with Store.open(db) as st:
        assert st.run("r").wall_s == pytest.approx(summary.wall_s, abs=1e-3), "the record keeps the total"
    fresh = start_run("hanoi", {"disks": 5}, {"agents": [AGENT]}, store=db, run_id="fresh")
    assert (fresh.segment_steps, fresh.segment_wall_s) == (fresh.steps, fresh.wall_s)


DISKS = 11
TOTAL = 2**DISKS - 1
RUN = [
    "run",
    "hanoi",
    "--set",
    f"disks={DISKS}",
    "--agent",
    "simulated:gpt-4.1-mini,call_s=0.0003",
    "--k",
    "3",
    "--seed",
    "5",
    "--run-id",
    "K",
    "--commit-every",
    "16",
]


def test_sigkill_then_resume_of_a_bounded_run_matches_a_run_keeping_every_snapshot(
    tmp_path: Path, background: Any
) -> None:
    ref = tmp_path / "ref.sqlite"
    done = run_maker(*RUN, "--snapshots", "all", "--store", ref, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "in all" not in done.stdout.splitlines()[0], "a run never resumed shows one wall time"

    db = tmp_path / "s.sqlite"
    # Held at step 1,200 (tests/fixtures/held.py): still running when killed, however fast the machine.
    run = background(*RUN, "--snapshots", "every:100", "--store", db, hold=1200)
    kill_when(run.proc, lambda: run.held() and has_committed(db, "K", 700), "700 committed steps", run.stderr)
    killed_at = committed_steps(db, "K")
    assert killed_at is not None and 700 <= killed_at < TOTAL
    assert len(_snapshots(db, "K")) <= killed_at // 100 + 2

    resumed = run_maker("resume", "K", "--store", db, tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert step_rows(db, "K") == step_rows(ref, "K")
    kept = _snapshots(db, "K")
    assert kept[TOTAL] == _snapshots(ref, "K")[TOTAL]
    assert len(kept) <= TOTAL // 100 + 2 < len(_snapshots(ref, "K"))
    for step in (333, killed_at, 1999):
        fork_run("K", step, store=db, new_id=f"f{step}")
        assert step_rows(db, f"f{step}") == step_rows(ref, "K")[step:]
    assert replay_run("K", store=db).steps == TOTAL

    # both wall times, each named: the run's total and this resume's own
    line = resumed.stdout.splitlines()[0]
    m = re.fullmatch(
        rf"run K: done, {TOTAL:,} steps in ([\d.]+) s in all \(this resume: ([\d,]+) steps in "
        rf"([\d.]+) s, from step ([\d,]+)\)",
        line,
    )
    assert m, line
    assert int(m[2].replace(",", "")) == TOTAL - killed_at and int(m[4].replace(",", "")) == killed_at
    assert float(m[3]) <= float(m[1])
    finished = [json.loads(x) for x in resumed.stderr.splitlines() if '"run finished"' in x]
    assert finished and finished[0]["segment_steps"] == TOTAL - killed_at
    assert finished[0]["segment_wall_s"] < finished[0]["wall_s"]


def test_a_result_built_from_every_step_is_read_from_the_trace(tmp_path: Path) -> None:
    from examples.hanoi_moves import hanoi_moves
    from maker.workflows.hanoi import strategy_move

    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 6}, {"agents": [AGENT]}, store=db, run_id="h")
    moves = hanoi_moves(str(db), "h")
    pegs: list[list[int]] = [[6, 5, 4, 3, 2, 1], [], []]
    previous = None
    for move in moves:
        assert tuple(move) == strategy_move((tuple(pegs[0]), tuple(pegs[1]), tuple(pegs[2])), previous)
        disk, src, dst = move
        assert pegs[src].pop() == disk
        pegs[dst].append(disk)
        previous = tuple(move)
    assert len(moves) == 63 and pegs == [[], [], [6, 5, 4, 3, 2, 1]]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "examples.hanoi_moves", str(db), "h"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(m) for m in moves]
