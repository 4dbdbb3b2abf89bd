"""The cost section of the HTML trace report: real speculative runs with priced simulated agents in a real store,
its figures checked against ``maker trace stats --json`` and against the usage rows and prices read from the SQLite
file by hand; an older store's run has no cost section."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from maker.runs import start_run
from maker.store import Store
from maker.trace import render_report, trace_stats, write_report
from maker.trace.html import money
from tests._cli import invoke

FIXTURES = Path(__file__).parents[1] / "fixtures"
LARGE = "simulated:p=0.99,seed=1,call_s=0.002,price=2/0.5/8"
# A poor drafter ahead of a slower verifier: a fixed window of 16 drafts ahead on states the chain never reaches.
SPECULATIVE = {
    "agents": [LARGE],
    "drafter": "simulated:p=0.6,seed=2,price=0.1/0.025/0.4",
    "verifiers": ["simulated:seed=3,tpr=0.99,fpr=0.01,call_s=0.002,price=2/0.5/8"],
    "k": 2,
    "seed": 4,
    "window": 16,
    "fixed_window": True,
}


def _section(page: str) -> str:
    """The cost section: from its heading to the next one of its level."""
    start = page.index('<h2 id="cost">Cost</h2>')
    return page[start : page.index("<h2>", start + 1)]


def _row(section: str, label: str) -> str:
    """The value cell of a facts-table row."""
    m = re.search(rf"<tr><th>{re.escape(label)}</th><td>(.*?)</td></tr>", section)
    assert m, f"no row {label!r} in the cost section"
    return m.group(1)


def _dollars(cell: str) -> float:
    """The exact dollars a cell's first money value carries in its tooltip."""
    m = re.search(r'<span title="\$([0-9,.]+)">', cell)
    assert m, cell
    return float(m.group(1).replace(",", ""))


def _by_hand(db: Path, run_id: str) -> tuple[float, float, int]:
    """Dollars of the committed steps and of the speculative steps dropped, and the committed steps, from the
    ``steps.usage`` rows and the prices and dropped usage the run recorded, read with plain SQL."""
    con = sqlite3.connect(db)
    try:
        rid, stats = con.execute("SELECT id, stats FROM runs WHERE run_id=?", (run_id,)).fetchone()
        usage = [u for (u,) in con.execute("SELECT usage FROM steps WHERE run=? ORDER BY step", (rid,))]
    finally:
        con.close()
    recorded = json.loads(stats)
    prices = recorded["prices"]

    def bill(rows: list[list[int]]) -> float:
        return sum(((p - c) * prices[a][0] + c * prices[a][1] + o * prices[a][2]) / 1e6 for a, p, c, o, _ in rows)

    committed = sum(bill(json.loads(u)) for u in usage)
    wasted_rows = [[a, *r] for a, r in enumerate(recorded["wasted"]["usage"])]
    return committed, bill(wasted_rows), len(usage)


def test_cost_section_matches_trace_stats_and_the_recorded_usage(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 5}, SPECULATIVE, store=db, run_id="r")
    code, out = invoke("trace", "stats", "r", "--json", "--store", str(db))
    assert code == 0, out
    cost = json.loads(out.splitlines()[-1])["cost"]
    code, out = invoke("trace", "report", "r", "-o", str(tmp_path / "r.html"), "--store", str(db))
    assert code == 0, out
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    section = _section(page)

    # the total as trace stats has it, and as the rows and prices in the file make it
    committed, wasted, steps = _by_hand(db, "r")
    total = _row(section, "total")
    assert _dollars(total) == cost["total"]
    assert cost["total"] == pytest.approx(committed + wasted, abs=1e-6)
    assert money(cost["total"]) in total and "estimated usage" in total  # simulated agents: usage is counted
    commits = _row(section, "committed steps")
    assert _dollars(commits) == cost["committed"] == pytest.approx(committed, abs=1e-6)
    assert f"for {steps} steps, {money(cost['per_step'])} per step" in commits
    assert cost["per_step"] == pytest.approx(committed / steps, abs=1e-8)
    dropped = _row(section, "speculative steps dropped")
    assert cost["wasted"] == pytest.approx(wasted, abs=1e-6)
    assert money(cost["wasted"]) in dropped if cost["wasted"] else dropped == "none"

    # the cost over the steps, one more inline plot; it ends at the committed steps' cost
    assert re.search(r'<figure id="plot-cost"><svg\b.*?</svg>\s*<figcaption>', section, re.S)
    assert page.count("<svg") == 6
    assert f"{money(cost['committed'])} at the end" in section
    with Store.open(db) as st:
        series = trace_stats(st, st.run("r")).series
    assert series.cost_cum is not None and series.cost_cum[-1] == pytest.approx(committed, abs=1e-6)

    # by agent and role: tokens, price and cost of each
    roles = _row(section, "by role (committed)")
    for role, dollars in cost["by_role"].items():
        assert f"{role} {money(dollars)}" in roles
    rows = re.findall(r"<tr><td>(.*?)</td><td>(\w+)</td>(.*?)</tr>", section.split("<h3>By agent</h3>")[1])
    assert [(label, role) for label, role, _ in rows] == [(a["agent"], a["role"]) for a in cost["by_agent"]]
    assert {r for _, r, _ in rows} == {"voting", "drafter", "verifier"}
    for (_, _, cells), a in zip(rows, cost["by_agent"], strict=True):
        assert f'<td class="n">{a["prompt_tokens"]:,}</td>' in cells
        assert f'<td class="n">{a["completion_tokens"]:,}</td>' in cells
        assert " / ".join(f"${x:g}" for x in a["price"]) in cells
        assert money(a["cost"]) in cells
    assert sum(a["cost"] for a in cost["by_agent"]) == pytest.approx(committed, abs=1e-5)


def test_agent_labels_in_the_cost_section_are_escaped(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 3}, {"agents": [LARGE], "k": 2}, store=db, run_id="r")
    with Store.open(db) as st:
        stats = trace_stats(st, st.run("r"))
    assert stats.cost is not None
    marked = stats.cost.by_agent[0].model_copy(update={"agent": "<script>alert(1)</script>", "role": "<b>x</b>"})
    cost = stats.cost.model_copy(update={"by_agent": [marked], "by_role": {"<i>r</i>": 1.0, "voting": 2.0}})
    section = _section(render_report(stats.model_copy(update={"cost": cost}), []))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section and "<script" not in section
    assert "&lt;b&gt;x&lt;/b&gt;" in section and "&lt;i&gt;r&lt;/i&gt;" in section
    assert "<b>" not in section and "<i>" not in section


def test_an_unpriced_agent_makes_the_cost_unknown_not_zero(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 3}, {"agents": ["simulated:p=0.95,seed=5"], "k": 2}, store=db, run_id="r")
    section = _section(write_report(db, "r", tmp_path / "r.html").read_text(encoding="utf-8"))
    assert _row(section, "total").startswith("unknown (")
    assert "No price is known for agent 1: simulated:p=0.95,seed=5" in section
    assert "plot-cost" not in section and "No plot of the cost over the steps" in section


def test_an_older_store_has_no_cost_section(tmp_path: Path) -> None:
    db = tmp_path / "v1-hanoi.sqlite"
    shutil.copy(FIXTURES / "v1-hanoi.sqlite", db)  # opening it upgrades it in place
    code, out = invoke("trace", "stats", "v1-hanoi", "--json", "--store", str(db))
    assert code == 0, out
    assert "cost" not in json.loads(out.splitlines()[-1])  # the line before says the store was upgraded
    page = write_report(db, "v1-hanoi", tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="cost"' not in page and "plot-cost" not in page
    assert page.count("<svg") == 5 and "<h2>Hardest steps</h2>" in page
