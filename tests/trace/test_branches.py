"""The trace tools show a run's branches (``--backtracks``): ``trace stats``, ``trace show`` (its summary,
``--branches``, ``--branch N``, ``--tree``), the HTML report and the UI's run page, all against the store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from maker.cli import main
from maker.runs import start_run
from maker.store import Store
from maker.ui import UiSettings, create_app

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checked_addition.py"
WORKFLOW = f"{FIXTURE}:CheckedAddition"


def _maker(*args: str) -> tuple[str, str]:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout, r.stderr


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that went back 7 times (B), one that may backtrack but is never checked into it (P: no backtracks
    allowed, so its failed checks are let through), a plain run without checks (H) and a solve run (S)."""
    path = tmp_path_factory.mktemp("branches") / "bt.sqlite"
    common = {"agents": ["simulated:p=0.9,seed=3"], "k": 1, "detail": "samples"}
    start_run(WORKFLOW, {"digits": 60, "seed": 1}, {**common, "backtracks": 20}, store=path, run_id="B")
    start_run(WORKFLOW, {"digits": 60, "seed": 1}, {**common, "backtracks": 0}, store=path, run_id="P")
    _maker(
        "run", "hanoi", "--set", "disks=3", "--agent", "simulated:gpt-4.1-mini", "--store", str(path), "--run-id", "H"
    )
    _maker(
        "solve", "What is 48213 * 9071?", "--agent", "simulated:p=0.7,seed=5", "--k", "1", "--backtracks", "5",
        "--store", str(path), "--run-id", "S",
    )  # fmt: skip
    return path


def _truth(db: Path, run_id: str) -> tuple[list[tuple[int, int, int, str, str]], list[tuple[int, int, int]]]:
    """The branches as the store has them, and each one's (steps, calls, wrong) from its abandoned steps."""
    with Store.open(db) as st:
        rid = st.run(run_id).id
        branches = [(b.branch, b.from_step, b.to_step, b.kind, b.reason) for b in st.branches(rid)]
        spent = []
        for b in branches:
            rows = st.branch_steps(rid, b[0])
            spent.append((len(rows), sum(r.samples for r in rows), sum(r.correct == 0 for r in rows)))
    return branches, spent


def test_stats_count_the_branches_against_the_store(db: Path) -> None:
    branches, spent = _truth(db, "B")
    assert len(branches) >= 2
    out = json.loads(_maker("trace", "stats", "B", "--store", str(db), "--json")[0])["branches"]
    assert out["branches"] == len(branches) and out["limit"] == 20 and out["failed_checks"] == 0
    assert out["by_kind"] == {"check": len(branches)}
    assert out["steps_abandoned"] == sum(to - fr for _, fr, to, _, _ in branches) == sum(s[0] for s in spent)
    assert out["calls"] == sum(s[1] for s in spent)
    assert out["wrong"] == sum(s[2] for s in spent) > 0
    assert [(b["branch"], b["from_step"], b["to_step"]) for b in out["by_branch"]] == [b[:3] for b in branches]
    with Store.open(db) as st:  # the run's calls are its live steps' and its abandoned steps'
        rid = st.run("B").id
        assert st.run("B").calls == sum(r.samples for r in st.steps(rid)) + out["calls"]
    text = _maker("trace", "stats", "B", "--store", str(db))[0]
    assert f"branches          {len(branches)} (check {len(branches)}) of 20 allowed" in text
    assert f"{out['steps_abandoned']} steps abandoned, {out['calls']} calls" in text
    assert f"{out['wrong']} wrong answers among them caught" in text


def test_failed_checks_let_through_and_runs_without_branches(db: Path) -> None:
    p = json.loads(_maker("trace", "stats", "P", "--store", str(db), "--json")[0])["branches"]
    assert p["branches"] == 0 and p["limit"] == 0 and p["failed_checks"] > 0 and p["by_branch"] == []
    assert "failed check(s) let through" in _maker("trace", "stats", "P", "--store", str(db))[0]
    # a run that neither checks nor may backtrack has no branches section, in the JSON or the text
    assert "branches" not in json.loads(_maker("trace", "stats", "H", "--store", str(db), "--json")[0])
    assert "branches" not in _maker("trace", "stats", "H", "--store", str(db))[0]
    out, err = _maker("trace", "show", "H", "--store", str(db), "--branches")
    assert "never went back" in out
    assert "went back" not in _maker("trace", "show", "H", "--store", str(db))[1]


def test_show_lists_the_branches_and_their_abandoned_steps(db: Path) -> None:
    branches, spent = _truth(db, "B")
    out, err = _maker("trace", "show", "B", "--store", str(db))
    assert f"run B went back {len(branches)} time(s)" in err and "--branches" in err
    lines = _maker("trace", "show", "B", "--store", str(db), "--branches")[0].splitlines()
    assert len(lines) == len(branches)
    for line, (b, fr, to, kind, reason), (n, calls, wrong) in zip(lines, branches, spent, strict=True):
        assert line.startswith(f"branch {b} ") and f"went back from step {to} to {fr}" in line and kind in line
        assert f"{n} steps abandoned ({wrong} wrong), {calls} calls: {reason.splitlines()[0]}" in line
    recs = [
        json.loads(x) for x in _maker("trace", "show", "B", "--store", str(db), "--branches", "--json")[0].splitlines()
    ]
    assert [(r["branch"], r["from_step"], r["to_step"], r["reason"]) for r in recs] == [
        (b, fr, to, reason) for b, fr, to, _, reason in branches
    ]
    # --branch N: the abandoned steps as --steps shows live ones, samples and all
    b, fr, to = branches[0][:3]
    text = _maker("trace", "show", "B", "--store", str(db), "--branch", str(b))[0]
    assert text.startswith(f"branch {b}: went back from step {to} to {fr}")
    assert len(re.findall(rf"^step \d+ .* abandoned by branch {b}$", text, re.M)) == to - fr
    assert "  winner   " in text and "  #0   round 1" in text
    steps = [
        json.loads(x)
        for x in _maker("trace", "show", "B", "--store", str(db), "--branch", "1", "--json")[0].splitlines()
    ]
    assert [s["step"] for s in steps] == list(range(fr, to)) and all(s["abandoned_by"] == 1 for s in steps)
    assert sum(s["correct"] is False for s in steps) == spent[0][2] and all(s["sample_detail"] for s in steps)
    r = CliRunner().invoke(main, ["trace", "show", "B", "--store", str(db), "--branch", "99"])
    assert r.exit_code != 0 and "there is no branch 99" in r.output


def test_the_tree_marks_branches_abandoned_steps_and_dropped_nodes(db: Path) -> None:
    branches, _ = _truth(db, "S")
    assert branches
    text = _maker("trace", "show", "S", "--store", str(db), "--tree")[0]
    for b, fr, to, _, reason in branches:
        assert f"branch {b} (went back from step {to} to {fr}: {reason.splitlines()[0]})" in text
        assert f"abandoned by branch {b}" in text or fr == to
    assert "retry:" not in text  # only a reason's first line
    nodes = [
        json.loads(x) for x in _maker("trace", "show", "S", "--store", str(db), "--tree", "--json")[0].splitlines()
    ]
    assert sorted(b["branch"] for n in nodes for b in n["branches"]) == [b[0] for b in branches]
    with Store.open(db) as st:
        rid = st.run("S").id
        tagged = sum(r.tag is not None for b in branches for r in st.branch_steps(rid, b[0]))
        state = json.loads(st.latest_snapshot(rid)[1])
    assert sum(1 for n in nodes for s in n["steps"] if "abandoned_by" in s) == tagged
    live = {n["path"]: n for n in state["nodes"] if not n["dropped"]}
    by_path = {n["path"]: n for n in nodes}
    for path, n in live.items():  # the tree shows the live node at a path, not one a retry dropped
        assert by_path[path]["task"] == n["task"] and by_path[path]["result"] == n["result"]
        assert by_path[path]["dropped"] is False
    assert any(n["dropped_versions"] for n in nodes)


def test_the_report_has_a_branches_section(db: Path, tmp_path: Path) -> None:
    branches, spent = _truth(db, "B")
    out = tmp_path / "b.html"
    CliRunner().invoke(main, ["trace", "report", "B", "--store", str(db), "-o", str(out)])
    page = out.read_text()
    assert '<h2 id="branches">Branches</h2>' in page
    section = page[page.index('id="branches"') : page.index("</table>", page.index('id="branches"'))]
    assert section.count("<tr><td") == len(branches)
    assert f"<td>{branches[0][2]} &rarr; {branches[0][1]}</td>" in section
    assert f"{sum(s[0] for s in spent)} steps abandoned" in section
    out_h = tmp_path / "h.html"
    CliRunner().invoke(main, ["trace", "report", "H", "--store", str(db), "-o", str(out_h)])
    assert "Branches</h2>" not in out_h.read_text()


def test_the_run_page_shows_a_branches_table(db: Path) -> None:
    branches, spent = _truth(db, "B")
    client = TestClient(create_app(UiSettings(store=str(db))), base_url="http://127.0.0.1:8765")
    html = client.get("/run", params={"id": "B"}).text
    assert "<h2>Branches</h2>" in html and '<table id="branches">' in html
    table = html[html.index('<table id="branches">') : html.index("</table>", html.index('<table id="branches">'))]
    assert table.count("<tr><td") == len(branches)
    assert branches[0][4].splitlines()[0] in table
    facts = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert f"branches {len(branches)} / 20" in facts and "failed checks 0" in facts
    assert "<style" not in html.split("</head>")[-1] and "<script>" not in html  # CSP: nothing inline
    plain = client.get("/run", params={"id": "H"}).text
    assert "Branches</h2>" not in plain and "failed checks" not in plain
    tree = client.get("/tree", params={"run": "S"}).text
    assert "abandoned by branch 1" in tree
