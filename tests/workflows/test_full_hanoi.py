"""The MAKER task at full size: 20 disks, 1,048,575 steps, zero errors (slow; CI runs it)."""

from __future__ import annotations

import pytest

from maker.runs import start_run
from maker.stats import expected_calls
from maker.store import Store


@pytest.mark.slow
def test_twenty_disks_zero_errors(tmp_path) -> None:
    store = tmp_path / "hanoi20.sqlite"
    summary = start_run("hanoi", {"disks": 20}, {"agents": ["simulated:gpt-4.1-mini"], "k": 3}, store=store)
    assert summary.steps == 2**20 - 1
    assert summary.errors == 0
    assert summary.solved is True
    theory = expected_calls(1 - 0.0022, 3, valid=0.998)
    assert abs(summary.calls_per_step / theory - 1) < 0.05
    with Store.open(store) as st:
        rid = st.run(summary.run_id).id
        assert st.head(rid) == (2**20 - 1, 2**20 - 1)
