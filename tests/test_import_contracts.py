"""The import contracts of ``.importlinter`` (layers, and private names kept at home) on a copy of the source: kept
as the code is, broken by a planted upward import and by a planted import of another package's private module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The package's source, the contracts and their tools, copied where a test may change them."""
    for folder in ("maker", "agents", "workflows", "cluster", "tools"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in (".importlinter", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "tools/lint_imports.sh"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PY": sys.executable, "HOME": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _plant(path: Path, line: str) -> None:
    """Add a function holding ``line`` at the end of ``path``: a lazy import, which the contracts see too."""
    path.write_text(path.read_text() + f"\n\ndef _planted() -> None:\n    {line}\n")


def test_the_contracts_are_kept_as_the_code_is(tree: Path) -> None:
    proc = _lint(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tree: Path) -> None:
    _plant(tree / "maker" / "store" / "_store.py", "from maker.engine import Engine  # noqa: F401")
    proc = _lint(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 kept, 1 broken" in proc.stdout
    assert "maker.store is not allowed to import maker.engine" in proc.stdout


def test_a_side_import_between_independent_layers_breaks_them(tree: Path) -> None:
    _plant(tree / "maker" / "trace" / "_tree.py", "from maker.runs import start_run  # noqa: F401")
    proc = _lint(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "maker.trace is not allowed to import maker.runs" in proc.stdout


def test_importing_another_packages_private_module_or_name_breaks_the_private_contract(tree: Path) -> None:
    _plant(tree / "maker" / "trace" / "_tree.py", "from maker.engine._decider import too_long  # noqa: F401")
    _plant(tree / "maker" / "runs" / "_replay.py", "from maker.store import _store  # noqa: F401")
    _plant(tree / "maker" / "cli" / "_solve.py", "from maker.planning._calibrate import _one_sample  # noqa: F401")
    proc = _lint(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 kept, 1 broken" in proc.stdout
    out = " ".join(proc.stdout.split())  # the report folds long lines
    assert "maker.trace._tree" in out and "imports maker.engine._decider, private to maker.engine" in out
    assert "maker.runs._replay" in out and "imports maker.store._store, private to maker.store" in out
    assert "maker.cli._solve" in out and "private to maker.planning" in out
