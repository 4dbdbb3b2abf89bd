"""The README's commands are true: the CLI examples run, and .ci/run calls the README's test command."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._cli import ok, run_maker

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _bash_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [ln.split("#")[0].strip() for block in blocks for ln in block.splitlines()]
    return [ln for ln in lines if ln]


def test_readme_opens_with_the_two_commands() -> None:
    first = _bash_lines()[:2]
    assert first[0].endswith(
        "maker run counting --set steps=30 --agent hf:smollm2-135m --k 4 --first-temperature 1.0 --temperature 1.0"
    )
    assert first[1].endswith("python -m pytest")
    assert first[1] in (ROOT / ".ci" / "run").read_text()


CLI_EXAMPLES = [
    ln for ln in _bash_lines()[2:] if ln.startswith("maker ") and "RUN_ID" not in ln and "hf:" not in ln
]  # real-model commands are exercised by tests/test_main_job.py


@pytest.mark.parametrize("line", CLI_EXAMPLES)
def test_readme_cli_examples_run(line: str, tmp_path) -> None:
    args = shlex.split(line)[1:]
    if args[0] == "run" and "disks=20" in args:
        pytest.skip("the full 20-disk run is the slow test and the benchmark")
    env = {**os.environ, "MAKER_STORE": str(tmp_path / "readme.sqlite")}
    if args[0] in ("runs", "ui"):  # needs something in the store
        ok(run_maker("run", "addition", "--set", "digits=5", "--agent", "simulated:p=0.99", env=env, cwd=ROOT))
    if args[0] == "ui":  # it serves until stopped: see that it does, then stop it
        _serves(args, env, tmp_path)
        return
    proc = ok(run_maker(*args, env=env, cwd=ROOT))
    if args[0] == "estimate":
        assert "k_min = " in proc.stdout
        if "1048575" in args and "0.0022" in args:  # MAKER's figure, as the README says
            assert "k_min = 3" in proc.stdout
        if "--drafter-p" in args:  # the speculative estimate beside the voting one
            assert "per-step error" in proc.stdout and "smallest ensemble" in proc.stdout


def _serves(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    import httpx

    if "--store" in args:  # the README's store name, here a copy of the one just made
        i = args.index("--store") + 1
        (tmp_path / args[i]).write_bytes((tmp_path / "readme.sqlite").read_bytes())
        args[i] = str(tmp_path / args[i])
    err = tmp_path / "ui.stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "maker", *args, "--port", "0"], stderr=f, env=env, cwd=ROOT)
    try:
        end = time.monotonic() + 60
        while not (m := re.search(r"maker ui: (\S+)", err.read_text())):
            assert proc.poll() is None and time.monotonic() < end, err.read_text()
            time.sleep(0.05)
        while True:
            try:
                page = httpx.get(m.group(1), timeout=10)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < end, err.read_text()
                time.sleep(0.05)
        assert page.status_code == 200 and "addition" in page.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_readme_dsl_example_is_the_shipped_example() -> None:
    code = re.search(r"```python\n(.*?)```", README, flags=re.S)
    assert code is not None
    example = (ROOT / "examples" / "countdown.py").read_text()
    for line in code.group(1).splitlines():
        stripped = line.split("#")[0].rstrip()
        if stripped:
            assert stripped.strip() in example, f"README line not in examples/countdown.py: {stripped!r}"


API_DOC = ROOT / "docs" / "python-api.md"


def test_the_python_api_example_runs(tmp_path: Path) -> None:
    """docs/python-api.md's complete example, as a user would paste it into a script."""
    code = re.search(r"```python\n(.*?)```", API_DOC.read_text(), flags=re.S)
    assert code is not None
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "MAKER_STORE": str(tmp_path / "unused.sqlite")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "63 steps" in proc.stdout and "stopped at step" in proc.stdout
    assert "['demo', 'weak', 'demo-k5']" in proc.stdout


def test_the_python_api_reference_names_every_option_and_summary_field() -> None:
    from maker import RunOptions, RunSummary

    doc = API_DOC.read_text()
    missing = [f for f in [*RunOptions.model_fields, *RunSummary.model_fields] if f"`{f}`" not in doc]
    assert not missing, f"docs/python-api.md does not describe {missing}"
    assert "docs/python-api.md" in README
