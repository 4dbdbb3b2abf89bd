"""The ``maker`` command line, end to end through real processes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests._cli import ok as _ok
from tests._cli import run_maker as _maker

AGENT = "simulated:gpt-4.1-mini"
SUMMARY_KEYS = {
    "run_id",
    "workflow",
    "steps",
    "errors",
    "solved",
    "calls",
    "calls_per_step",
    "red_flags",
    "max_rounds",
    "wall_s",
}


def _one_json(stdout: str) -> Any:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected exactly one line of JSON on stdout, got:\n{stdout}"
    return json.loads(lines[0])


def _log_lines(stderr: str) -> list[dict[str, Any]]:
    """stderr of a run: the ``run_id: ...`` banner, then only JSON lines (stderr is not a TTY here)."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("run_id: "):
            continue
        events.append(json.loads(line))
    return events


def test_workflows_lists_builtins(tmp_path: Path) -> None:
    human = _ok(_maker("workflows", tmp=tmp_path)).stdout
    assert re.search(r"^hanoi \(v\d+\): ", human, re.M), human
    assert re.search(r"^addition \(v\d+\): ", human, re.M), human
    assert "--set disks=..." in human and "--set digits=..." in human

    rows = json.loads(_ok(_maker("workflows", "--json", tmp=tmp_path)).stdout)
    by_name = {r["name"]: r for r in rows}
    assert {"hanoi", "addition"} <= set(by_name)
    assert "disks" in by_name["hanoi"]["params"]
    assert {"digits", "a", "b", "seed"} <= set(by_name["addition"]["params"])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A hanoi run with a generated id and an addition run with a given id, in one store."""
    tmp = tmp_path_factory.mktemp("cli")
    db = tmp / "x.sqlite"
    hanoi = _ok(
        _maker("run", "hanoi", "--set", "disks=5", "--agent", AGENT, "--k", "3", "--json", "--store", db, tmp=tmp)
    )
    addition = _ok(
        _maker(
            "run",
            "addition",
            "--set",
            "digits=30",
            "--set",
            "seed=7",
            "--agent",
            AGENT,
            "--k",
            "3",
            "--json",
            "--store",
            db,
            "--run-id",
            "my-addition",
            tmp=tmp,
        )
    )
    return {"db": db, "tmp": tmp, "hanoi": hanoi, "addition": addition}


def test_run_prints_one_json_summary(two_runs: dict[str, Any]) -> None:
    out = _one_json(two_runs["hanoi"].stdout)
    assert SUMMARY_KEYS <= set(out)
    assert out["workflow"] == "hanoi"
    assert out["steps"] == 31
    assert out["errors"] == 0
    assert out["solved"] is True
    assert out["calls"] >= 3 * 31
    assert out["calls_per_step"] == pytest.approx(out["calls"] / 31)
    assert isinstance(out["red_flags"], int) and out["red_flags"] >= 0
    assert out["max_rounds"] >= 1
    assert isinstance(out["wall_s"], int | float) and out["wall_s"] >= 0
    assert out["status"] == "done"
    assert out["result"] == {"pegs": [[], [5, 4, 3, 2, 1], []]}


def test_generated_run_id_is_printed_first_on_stderr(two_runs: dict[str, Any]) -> None:
    proc = two_runs["hanoi"]
    run_id = _one_json(proc.stdout)["run_id"]
    assert re.fullmatch(r"hanoi-\d{8}-\d{6}-[0-9a-f]{6}", run_id), run_id
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"run_id: {run_id} "), proc.stderr
    assert str(two_runs["db"]) in first


def test_run_id_option_is_honoured(two_runs: dict[str, Any]) -> None:
    proc = two_runs["addition"]
    assert _one_json(proc.stdout)["run_id"] == "my-addition"
    assert proc.stderr.splitlines()[0].startswith("run_id: my-addition ")


def test_addition_result_is_the_sum(two_runs: dict[str, Any]) -> None:
    out = _one_json(two_runs["addition"].stdout)
    assert out["workflow"] == "addition"
    assert out["steps"] == 30
    assert out["errors"] == 0 and out["solved"] is True
    res = out["result"]
    assert len(res["a"]) <= 30 and len(res["b"]) <= 30
    assert int(res["sum"]) == int(res["a"]) + int(res["b"])


def test_stderr_is_json_logs_when_not_a_tty(two_runs: dict[str, Any]) -> None:
    for name in ("hanoi", "addition"):
        proc = two_runs[name]
        run_id = _one_json(proc.stdout)["run_id"]
        events = _log_lines(proc.stderr)
        by_event = {e["event"]: e for e in events}
        assert {"run started", "run finished"} <= set(by_event), proc.stderr
        for e in events:
            assert e["run_id"] == run_id
            assert "level" in e and "timestamp" in e
        assert by_event["run started"]["workflow"] == name
        assert by_event["run finished"]["steps"] == _one_json(proc.stdout)["steps"]
        names = [e["event"] for e in events]
        assert names.index("run started") < names.index("run finished")


def test_runs_lists_both(two_runs: dict[str, Any]) -> None:
    db, tmp = two_runs["db"], two_runs["tmp"]
    hanoi_id = _one_json(two_runs["hanoi"].stdout)["run_id"]
    rows = json.loads(_ok(_maker("runs", "--store", db, "--json", tmp=tmp)).stdout)
    assert [r["run_id"] for r in rows] == [hanoi_id, "my-addition"]
    by_id = {r["run_id"]: r for r in rows}
    assert by_id[hanoi_id]["workflow"] == "hanoi" and by_id[hanoi_id]["params"] == {"disks": 5, "steps": None}
    assert by_id["my-addition"]["workflow"] == "addition"
    for r in rows:
        assert r["status"] == "done" and r["errors"] == 0 and r["solved"] is True
        assert r["agents"] == [AGENT]
        assert r["steps"] == r["expected_steps"]

    human = _ok(_maker("runs", "--store", db, tmp=tmp)).stdout
    assert hanoi_id in human and "my-addition" in human and "31/31 steps" in human


def test_estimate(tmp_path: Path) -> None:
    out = json.loads(_ok(_maker("estimate", "--steps", "1048575", "--error", "0.0022", "--json", tmp=tmp_path)).stdout)
    assert out["k_min"] == 3 and out["k"] == 3
    assert out["steps"] == 1048575
    assert out["p_full"] >= 0.95
    out = json.loads(_ok(_maker("estimate", "--steps", "1048575", "--error", "0.3571", "--json", tmp=tmp_path)).stdout)
    assert out["k_min"] == 29
    same = json.loads(_ok(_maker("estimate", "--steps", "1048575", "--p", "0.6429", "--json", tmp=tmp_path)).stdout)
    assert same["k_min"] == 29

    human = _ok(_maker("estimate", "--steps", "1048575", "--error", "0.0022", tmp=tmp_path)).stdout
    assert "k_min = 3" in human

    bad = _maker("estimate", "--steps", "10", tmp=tmp_path)
    assert bad.returncode == 2 and "exactly one of --p or --error" in bad.stderr


BAD_RUNS = {
    "unknown-agent-kind": (
        ["hanoi", "--agent", "nosuch:x"],
        ["agent spec 'nosuch:x'", "unknown kind 'nosuch'", "available: hf, openai, simulated, vllm"],
    ),
    "agent-p-out-of-range": (["hanoi", "--agent", "simulated:p=2"], ["agent spec 'simulated:p=2'"]),
    "no-agent": (["hanoi"], ["give at least one --agent"]),
    "bad-param-value": (
        ["hanoi", "--set", "disks=abc", "--agent", AGENT],
        ["error: bad parameter disks=abc: must be a valid integer"],
    ),
    "param-out-of-range": (["hanoi", "--set", "disks=0", "--agent", AGENT], ["disks", "greater than or equal to 1"]),
    "unknown-workflow": (["nosuch", "--agent", AGENT], ["unknown workflow 'nosuch'", "hanoi", "addition"]),
    "bad-voting-option": (
        ["hanoi", "--agent", AGENT, "--k", "0"],
        ["bad run option --k 0", "greater than or equal to 1"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_RUNS), ids=list(BAD_RUNS))
def test_bad_run_arguments_exit_2_and_create_nothing(case: str, tmp_path: Path, two_runs: dict[str, Any]) -> None:
    args, expected = BAD_RUNS[case]
    fresh = tmp_path / "fresh.sqlite"
    proc = _maker("run", *args, "--store", fresh, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert not fresh.exists(), "a refused run created a store"
    assert not (tmp_path / "default-store-must-not-be-used.sqlite").exists()

    # an existing store gets no new run either
    db, tmp = two_runs["db"], two_runs["tmp"]
    before = json.loads(_ok(_maker("runs", "--store", db, "--json", tmp=tmp)).stdout)
    proc = _maker("run", *args, "--store", db, "--run-id", f"bad-{case}", tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert json.loads(_ok(_maker("runs", "--store", db, "--json", tmp=tmp)).stdout) == before


def test_unknown_param_name_is_rejected(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.sqlite"
    proc = _maker("run", "hanoi", "--set", "disk=12", "--agent", AGENT, "--json", "--store", fresh, tmp=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert "no parameter 'disk'" in proc.stderr and "disks" in proc.stderr
    assert not fresh.exists()


def test_duplicate_run_id_is_refused(two_runs: dict[str, Any], tmp_path: Path) -> None:
    db, tmp = two_runs["db"], two_runs["tmp"]
    proc = _maker(
        "run", "addition", "--set", "digits=3", "--agent", AGENT, "--store", db, "--run-id", "my-addition", tmp=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "already exists" in proc.stderr and "maker resume my-addition" in proc.stderr
    rows = json.loads(_ok(_maker("runs", "--store", db, "--json", tmp=tmp)).stdout)
    assert [r["run_id"] for r in rows].count("my-addition") == 1


def test_default_store_from_env(tmp_path: Path) -> None:
    store = tmp_path / "nested" / "env-store.sqlite"
    env = dict(os.environ)
    env["MAKER_STORE"] = str(store)
    proc = _ok(
        _maker(
            "run", "hanoi", "--set", "disks=3", "--agent", AGENT, "--run-id", "via-env", "--json", tmp=tmp_path, env=env
        )
    )
    out = _one_json(proc.stdout)
    assert out["run_id"] == "via-env" and out["steps"] == 7
    assert Path(out["store"]) == store
    assert store.is_file()
    assert f"(store {store})" in proc.stderr.splitlines()[0]

    rows = json.loads(_ok(_maker("runs", "--json", tmp=tmp_path, env=env)).stdout)
    assert [(r["run_id"], r["status"]) for r in rows] == [("via-env", "done")]
    human = _ok(_maker("runs", tmp=tmp_path, env=env)).stdout
    assert "via-env" in human

    # an explicit --store wins over the environment
    other = tmp_path / "other.sqlite"
    _ok(
        _maker(
            "run",
            "hanoi",
            "--set",
            "disks=2",
            "--agent",
            AGENT,
            "--store",
            other,
            "--run-id",
            "explicit",
            tmp=tmp_path,
            env=env,
        )
    )
    assert [r["run_id"] for r in json.loads(_ok(_maker("runs", "--json", tmp=tmp_path, env=env)).stdout)] == ["via-env"]
    assert [r["run_id"] for r in json.loads(_ok(_maker("runs", "--store", other, "--json", tmp=tmp_path)).stdout)] == [
        "explicit"
    ]


def test_runs_on_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    proc = _maker("runs", "--store", missing, tmp=tmp_path)
    assert proc.returncode == 2
    assert "no store at" in proc.stderr
    assert not missing.exists()


def test_command_modules_import_the_shared_pieces_not_the_entry_point() -> None:
    """maker.cli only assembles the commands: no command module imports it back (no import cycle)."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[2] / "maker" / "cli"
    modules = sorted(p for p in pkg.glob("_*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(modules) >= 9
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "maker.cli", f"{path.name} imports maker.cli"
                assert not (node.module == "maker" and any(a.name == "cli" for a in node.names)), path.name
