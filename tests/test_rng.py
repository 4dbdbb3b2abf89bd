"""The C draws (maker/_rngc.c) are the Python draws, bit for bit: for any integers, and for whole runs' traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maker import _rng

_c = pytest.importorskip("maker._rngc", reason="the C accelerator is not built (no C compiler at install)")

ints = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64, 2**64 + 5, -1, -(2**64)]),
    st.integers(-(2**70), 2**70),
)


@settings(max_examples=2000, deadline=None)
@given(x=ints)
def test_mix64_is_the_python_one(x: int) -> None:
    assert _c.mix64(x) == _rng.mix64_py(x)


@settings(max_examples=1000, deadline=None)
@given(base=ints, lo=st.integers(0, 40), n=st.integers(-3, 40))
def test_mixes_are_the_python_ones(base: int, lo: int, n: int) -> None:
    assert _c.mixes(base, lo, lo + n) == _rng.mixes_py(base, lo, lo + n)


@settings(max_examples=2000, deadline=None)
@given(seed=ints, slot=st.one_of(st.integers(0, 10), ints))
def test_uniform_is_the_python_one(seed: int, slot: int) -> None:
    got, want = _c.uniform(seed, slot), _rng.uniform_py(seed, slot)
    assert got == want and 0.0 <= got < 1.0  # == on floats: the same double, not a close one


def test_uniform_rounds_like_python_at_the_top_of_the_range() -> None:
    """uint64 -> double keeps 53 bits, so large values round: C's conversion must round as Python's int -> float
    does. Compare every seed below 200,000 whose mix is in the top sixteenth of the range."""
    hits = 0
    for seed in range(200_000):
        if _rng.mix64_py(seed) >> 60 == 0xF:
            hits += 1
            assert _c.uniform(seed, 0) == _rng.uniform_py(seed, 0)
    assert hits > 1000


def test_bad_arguments_raise_type_errors() -> None:
    with pytest.raises(TypeError):
        _c.mix64("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _c.uniform(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _c.mixes(1, 0)  # type: ignore[call-arg]


_RUNS = """
import hashlib, json, sqlite3, sys
from maker import _rng
from maker.runs import start_run
sys.path.insert(0, sys.argv[1])
from tests.engine.test_trace_stability import CASES
out = {"accelerated": _rng.ACCELERATED}
for name, (workflow, params, options, _steps, _digest) in CASES.items():
    db = f"{sys.argv[2]}/{len(out)}.sqlite"
    start_run(workflow, params, options, store=db, run_id="g")
    con = sqlite3.connect(db)
    rows = con.execute("SELECT step, digest, answer, votes, samples, red_flags, correct, spec, tokens FROM steps ORDER BY step").fetchall()
    samples = con.execute("SELECT * FROM samples ORDER BY step, idx").fetchall()
    out[name] = hashlib.sha256(json.dumps([rows, samples]).encode()).hexdigest()
print(json.dumps(out))
"""


def _digests(tmp: Path, pure: bool) -> dict[str, object]:
    env = {**os.environ, "MAKER_PURE_PYTHON": "1" if pure else "0"}
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _RUNS, str(Path(__file__).resolve().parents[1]), str(tmp)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_runs_record_the_same_trace_with_either(tmp_path: Path) -> None:
    """Every decision path of the trace-stability cases (red flags, escalation, drafting, both verifier kinds),
    run once with the C draws and once with MAKER_PURE_PYTHON=1: the same rows and samples."""
    fast = _digests(tmp_path / "c", pure=False)
    slow = _digests(tmp_path / "py", pure=True)
    assert fast.pop("accelerated") is True
    assert slow.pop("accelerated") is False
    assert len(fast) == 4
    assert fast == slow
