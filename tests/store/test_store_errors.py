"""Stores that cannot be trusted, and resumes that must be refused: clear messages, exit codes,
and not one byte of the store changed."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests._cli import has_committed, kill_when
from tests._cli import run_maker as _maker

DISKS = 11
TOTAL = 2**DISKS - 1

# R: a finished run. F: a run that failed part way (step 34 with this seed), resumable.
DONE_RUN = [
    "run",
    "hanoi",
    "--set",
    f"disks={DISKS}",
    "--agent",
    "simulated:gpt-4.1-mini",
    "--k",
    "3",
    "--seed",
    "5",
    "--run-id",
    "R",
]
FAILED_RUN = [
    "run",
    "hanoi",
    "--set",
    f"disks={DISKS}",
    "--agent",
    "simulated:p=0.99,spread=1",
    "--max-rounds",
    "1",
    "--k",
    "5",
    "--seed",
    "2",
    "--run-id",
    "F",
]


def _digest(db: Path) -> dict[str, str | None]:
    """Hashes of the store and its write-ahead log (which holds committed data after a crash)."""
    out: dict[str, str | None] = {}
    for suffix in ("", "-wal"):
        p = Path(f"{db}{suffix}")
        out[suffix or "db"] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() and p.stat().st_size else None
    return out


def _runs_json(db: Path, tmp: Path) -> list[dict[str, Any]]:
    proc = _maker("runs", "--store", db, "--json", tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("base")
    db = tmp / "base.sqlite"
    done = _maker(*DONE_RUN, "--store", db, tmp=tmp)
    assert done.returncode == 0, done.stderr
    failed = _maker(*FAILED_RUN, "--store", db, tmp=tmp)
    assert failed.returncode == 1, failed.stderr
    rows = {r["run_id"]: r for r in _runs_json(db, tmp)}
    assert rows["R"]["status"] == "done" and rows["R"]["steps"] == TOTAL
    assert rows["F"]["status"] == "failed" and 0 < rows["F"]["steps"] < TOTAL
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0, "store was not checkpointed"

    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        page_count = con.execute("PRAGMA page_count").fetchone()[0]
        try:
            leaves = [
                p
                for (p,) in con.execute(
                    "SELECT pageno FROM dbstat WHERE name='steps' AND pagetype='leaf' ORDER BY pageno"
                )
            ]
        except sqlite3.OperationalError:  # SQLite built without dbstat: hit several middle pages
            leaves = []
    finally:
        con.close()
    pages = [leaves[len(leaves) // 2]] if leaves else [page_count * f // 10 for f in (4, 5, 6)]
    assert all(1 < p <= page_count for p in pages)
    return {"db": db, "page_size": page_size, "pages": pages, "failed_at": rows["F"]["steps"]}


@pytest.fixture
def store(base: dict[str, Any], tmp_path: Path) -> Path:
    db = tmp_path / "store.sqlite"
    shutil.copyfile(base["db"], db)
    return db


def _damage(db: Path, how: str, base: dict[str, Any]) -> None:
    data = bytearray(db.read_bytes())
    ps = base["page_size"]
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "not-sqlite":
        data = bytearray(b"this is not a database\n" * 100)
    else:
        fill = bytes(ps) if how == "zeroed-page" else random.Random(1234).randbytes(ps)
        for page in base["pages"]:
            off = (page - 1) * ps
            data[off : off + ps] = fill
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["zeroed-page", "garbage-page", "truncated", "not-sqlite"])
def test_damaged_store_is_refused_untouched(how: str, store: Path, base: dict[str, Any], tmp_path: Path) -> None:
    _damage(store, how, base)
    before = _digest(store)
    commands: list[list[str | Path]] = [
        ["runs", "--store", store],
        ["runs", "--store", store, "--json"],
        ["resume", "F", "--store", store],
        ["resume", "F", "--store", store, "--json", "--agent", "simulated:p=0.999", "--max-rounds", "1000"],
        [*DONE_RUN[:-2], "--run-id", "NEW", "--store", store],
    ]
    for cmd in commands:
        proc = _maker(*cmd, tmp=tmp_path)
        assert proc.returncode == 2, (cmd, proc.returncode, proc.stderr)
        assert proc.stdout == "", cmd
        assert "damaged" in proc.stderr, (cmd, proc.stderr)
        assert "nothing was changed" in proc.stderr
        assert str(store) in proc.stderr
        _no_traceback(proc)
        assert _digest(store) == before, f"{cmd} changed the damaged store"


def test_resume_failed_run_with_other_params_is_refused(store: Path, base: dict[str, Any], tmp_path: Path) -> None:
    before = _digest(store)
    proc = _maker("resume", "F", "--store", store, "--set", f"disks={DISKS + 1}", tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    _no_traceback(proc)
    assert "different parameters" in proc.stderr
    assert f"disks: recorded {DISKS}, given {DISKS + 1}" in proc.stderr
    assert _digest(store) == before
    (f,) = [r for r in _runs_json(store, tmp_path) if r["run_id"] == "F"]
    assert f["status"] == "failed" and f["steps"] == base["failed_at"]
    assert _digest(store) == before

    # the same parameters are accepted (and the run goes on from its last commit)
    ok = _maker(
        "resume", "F", "--store", store, "--set", f"disks={DISKS}", "--max-rounds", "1000", "--json", tmp=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["steps"] == TOTAL


def test_resume_killed_run_with_other_params_is_refused(tmp_path: Path, background: Any) -> None:
    db = tmp_path / "killed.sqlite"
    args = [
        "run",
        "hanoi",
        "--set",
        f"disks={DISKS}",
        "--agent",
        "simulated:gpt-4.1-mini,call_s=0.0003",
        "--run-id",
        "K",
        "--commit-seconds",
        "0.05",
        "--commit-every",
        "32",
        "--store",
        str(db),
    ]
    # Held at step 300 (tests/fixtures/held.py), the run is still going when it is killed, however fast the machine.
    run = background(*args, hold=300)
    kill_when(run.proc, lambda: run.held() and has_committed(db, "K", 128), "128 committed steps", run.stderr)

    before = _digest(db)
    proc2 = _maker("resume", "K", "--store", db, "--set", f"disks={DISKS + 1}", tmp=tmp_path)
    assert proc2.returncode == 2, proc2.stderr
    _no_traceback(proc2)
    assert "different parameters" in proc2.stderr and "disks" in proc2.stderr
    assert _digest(db) == before, "a refused resume changed the store or its write-ahead log"
    (k,) = _runs_json(db, tmp_path)
    assert k["run_id"] == "K" and 128 <= k["steps"] < TOTAL


def test_resume_unknown_run(store: Path, tmp_path: Path) -> None:
    before = _digest(store)
    proc = _maker("resume", "nosuch", "--store", store, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    _no_traceback(proc)
    assert "no run 'nosuch'" in proc.stderr
    assert "recent runs: F, R" in proc.stderr
    assert _digest(store) == before

    missing = tmp_path / "missing.sqlite"
    proc = _maker("resume", "F", "--store", missing, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    _no_traceback(proc)
    assert "no store at" in proc.stderr
    assert not missing.exists()


def test_resume_finished_run(store: Path, tmp_path: Path) -> None:
    before = _digest(store)
    proc = _maker("resume", "R", "--store", store, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    _no_traceback(proc)
    assert "already finished" in proc.stderr and "R" in proc.stderr
    assert proc.stdout == ""
    assert _digest(store) == before


def test_undecided_step_fails_then_resumes_with_more_rounds(tmp_path: Path) -> None:
    db = tmp_path / "u.sqlite"
    proc = _maker(
        "run",
        "hanoi",
        "--set",
        f"disks={DISKS}",
        "--agent",
        "simulated:p=0.5,spread=1",
        "--max-rounds",
        "1",
        "--k",
        "5",
        "--run-id",
        "U",
        "--store",
        db,
        "--json",
        tmp=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    _no_traceback(proc)
    assert proc.stdout == ""
    assert "no answer won the vote within 1 rounds" in proc.stderr
    assert "maker resume U" in proc.stderr
    assert "--max-rounds" in proc.stderr

    (u,) = _runs_json(db, tmp_path)
    assert u["run_id"] == "U" and u["status"] == "failed"
    assert "no answer won the vote" in u["error"]
    failed_at = u["steps"]

    proc = _maker(
        "resume", "U", "--store", db, "--max-rounds", "1000", "--agent", "simulated:p=0.999", "--json", tmp=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "done" and summary["steps"] == TOTAL
    assert summary["agents"] == ["simulated:p=0.999"]
    assert summary["k"] == 5  # the recorded k stays; only the overrides change

    (u,) = _runs_json(db, tmp_path)
    assert u["status"] == "done" and u["steps"] == TOTAL and u["error"] is None
    assert u["agents"] == ["simulated:p=0.999"]

    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        events = [(k, json.loads(d)) for k, d in con.execute("SELECT kind, data FROM events ORDER BY rowid")]
        steps = [s for (s,) in con.execute("SELECT step FROM steps ORDER BY step")]
    finally:
        con.close()
    assert steps == list(range(TOTAL))
    (resume,) = [d for k, d in events if k == "resume"]
    assert resume["from_step"] == failed_at
    assert resume["overrides"] == {"max_rounds": 1000, "agents": ["simulated:p=0.999"]}
