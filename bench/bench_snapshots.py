"""Benchmark: the store of a run whose state grows, every snapshot kept against the bounded default.

A 16-disk Hanoi (65,535 steps) whose state also carries every move made so far, as a workflow
that builds its result in the state would. One snapshot is taken per commit, each the size of
the list so far, so keeping them all makes the store grow with the square of the run's
length; the default, ``--snapshots every:16384``, keeps the first, the latest and one per
16,384 steps. Each policy runs twice: with the default commits (every 4,096 steps or 0.5 s)
and with a commit every 64 steps, as a slower model's runs commit (every 0.5 s, a few steps
each). Reported per run: wall time, store size, snapshots kept and their size, and a replay's
wall time (replay re-applies every step and checks the states kept).

    python bench/bench_snapshots.py [--disks 16] [--agent simulated:gpt-4.1-mini] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

from maker.runs import DEFAULT_SNAPSHOTS, replay_run, start_run
from maker.store import Store
from maker.workflows.hanoi import Hanoi, HanoiAnswer, HanoiState


class MovesState(HanoiState):
    moves: tuple[tuple[int, int, int], ...] = ()
    """Every move so far: the state grows by one move per step."""


class HanoiMoveList(Hanoi, name="hanoi-moves", version=1):
    """Hanoi whose state also keeps its move list (the README shows how to read it from the trace instead)."""

    State = MovesState

    def start(self, params: Any) -> MovesState:
        return MovesState(**super().start(params).model_dump())

    def apply(self, state: MovesState, answer: HanoiAnswer) -> MovesState:  # type: ignore[override]
        return MovesState.model_construct(
            disks=state.disks,
            limit=state.limit,
            pegs=tuple(tuple(p) for p in answer.next_state),
            previous_move=tuple(answer.move),
            step=state.step + 1,
            moves=(*state.moves, tuple(answer.move)),
        )


def one(disks: int, agent: str, snapshots: str, commit_every: int, tmp: Path) -> dict[str, Any]:
    store = tmp / f"{snapshots.replace(':', '-')}-{commit_every}.sqlite"
    options = {"agents": [agent], "k": 3, "seed": 0, "snapshots": snapshots, "commit_every": commit_every}
    summary = start_run(HanoiMoveList, {"disks": disks}, options, store=store, run_id="g")
    t0 = time.perf_counter()
    replay_run("g", store=store)
    replay_s = time.perf_counter() - t0
    with Store.open(store) as st:
        size = st.disk_bytes()
        ((n, snap_bytes),) = st.snapshot_sizes().values()
    return {
        "snapshots": snapshots,
        "commit_every": commit_every,
        "steps": summary.steps,
        "solved": summary.solved,
        "wall_s": round(summary.wall_s, 2),
        "store_mb": round(size / 1e6, 1),
        "snapshots_kept": n,
        "snapshot_mb": round(snap_bytes / 1e6, 1),
        "replay_s": round(replay_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disks", type=int, default=16)
    ap.add_argument("--agent", default="simulated:gpt-4.1-mini")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for commit_every in (4096, 64):
            for policy in ("all", DEFAULT_SNAPSHOTS):
                rows.append(one(args.disks, args.agent, policy, commit_every, Path(tmp)))
    if args.json:
        emit({"disks": args.disks, "agent": args.agent, "runs": rows}, True)
    else:
        print(f"{args.disks}-disk Hanoi whose state carries its move list, {args.agent}, k = 3")
        print(
            f"{'snapshots':>12} {'commit every':>12} {'steps':>7} {'wall s':>7} {'store MB':>9} "
            f"{'kept':>5} {'snap MB':>8} {'replay s':>8}"
        )
        for r in rows:
            print(
                f"{r['snapshots']:>12} {r['commit_every']:>12} {r['steps']:>7} {r['wall_s']:>7} "
                f"{r['store_mb']:>9} {r['snapshots_kept']:>5} {r['snapshot_mb']:>8} {r['replay_s']:>8}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
