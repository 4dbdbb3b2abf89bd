"""``maker trace stats`` and ``maker trace report`` for speculative runs: real runs with a drafter and two verifiers
through the CLI, their figures checked against counts made by hand from the store's step rows."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from maker.stats import expected_calls
from maker.store import Store
from maker.trace import trace_stats
from tests._cli import ok, run_maker

AGENT = "simulated:p=0.9,seed=1"
DRAFTER = "simulated:p=0.8,seed=6,malformed=0.05"
VERIFIERS = ["simulated:p=0.9,tpr=0.9,fpr=0.4", "simulated:p=0.9,tpr=0.95,fpr=0.3,seed=2"]
LARGE_FIRST = 5
RUNS = {"vk1": 1, "vk2": 2}  # verify_k 1: the second verifier is never asked; 2: it is asked after each accept


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("spec")
    db = tmp / "s.sqlite"
    for run_id, verify_k in RUNS.items():
        verifiers = [a for v in VERIFIERS for a in ("--verifier", v)]
        ok(
            run_maker(
                *("run", "hanoi", "--set", "disks=7", "--agent", AGENT, "--drafter", DRAFTER, *verifiers),
                *("--verify-k", str(verify_k), "--large-first", str(LARGE_FIRST)),
                *("--store", db, "--run-id", run_id),
                tmp=tmp,
            )
        )
    ok(run_maker("run", "hanoi", "--set", "disks=5", "--agent", AGENT, "--store", db, "--run-id", "plain", tmp=tmp))
    return db


def _by_hand(db: Path, run_id: str) -> dict[str, Any]:
    """The speculative figures, counted straight from the run's step rows."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT s.samples, s.red_flags, s.agent, s.votes, s.correct, s.spec FROM steps s JOIN runs r ON s.run = r.id"
            " WHERE r.run_id = ? ORDER BY s.step",
            (run_id,),
        ).fetchall()
    h: dict[str, Any] = dict.fromkeys(
        ["steps", "samples", "drafted", "flagged", "accepted", "right", "rejected_known", "vcalls", "vflags"], 0
    )
    h["good"] = h["votes"] = 0
    h["verifiers"] = {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}  # ratings, accepts, of right drafts, of wrong drafts
    for samples, flags_s, agent, votes_s, correct, spec_s in rows:
        spec = json.loads(spec_s)
        flags = sum(json.loads(flags_s).values()) if flags_s else 0
        votes = json.loads(votes_s)
        h["steps"] += 1
        h["samples"] += samples
        if agent == 0:  # the one voting agent
            h["votes"] += sum(votes)
            h["good"] += votes[0] if correct != 0 else 0
        routed, flagged, accepted = bool(spec.get("route")), bool(spec.get("draft_flag")), bool(spec.get("accepted"))
        if not routed:
            h["drafted"] += 1
            h["flagged"] += flagged
        if accepted:
            h["accepted"] += 1
            h["right"] += correct == 1
        else:
            h["vcalls"] += samples - (not routed)
            h["vflags"] += flags - flagged
            h["rejected_known"] += not routed and not flagged and correct is not None
        for v in spec.get("verdicts", []):
            t = h["verifiers"][v[0]]
            t[0] += 1
            t[1] += v[-1]
            if v[-1] and accepted:
                t[2 if correct else 3] += 1
    return h


def _stats_json(db: Path, run_id: str, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(ok(run_maker("trace", "stats", run_id, "--json", "--store", db, tmp=tmp)).stdout)
    return out


@pytest.mark.parametrize("run_id", list(RUNS))
def test_stats_measure_the_drafter_and_verifiers_and_compare_with_the_speculation_estimate(
    store: Path, run_id: str, tmp_path: Path
) -> None:
    h = _by_hand(store, run_id)
    s = _stats_json(store, run_id, tmp_path)
    spec = s["speculation"]
    assert (spec["drafted"], spec["accepted"], spec["routed"]) == (h["drafted"], h["accepted"], {"large_first": 5})
    assert (spec["mode"], spec["verify_k"], spec["draft_k"]) == ("score", RUNS[run_id], 1)

    d = spec["drafter"]
    valid = h["drafted"] - h["flagged"]
    known = h["accepted"] + h["rejected_known"]
    assert d["agent"] == f"drafter: {DRAFTER}"
    assert (d["drafts"], d["valid"], d["accepted_known"], d["accepted_right"]) == (
        h["drafted"],
        valid,
        h["accepted"],
        h["right"],
    )
    assert d["valid_rate"] == round(valid / h["drafted"], 4)
    assert d["accepted_accuracy"] == round(h["right"] / h["accepted"], 4)
    assert d["draft_accuracy_low"] == round(h["right"] / known, 4)
    assert d["draft_accuracy_high"] == round((h["right"] + h["rejected_known"]) / known, 4)
    assert 0 < h["right"] < h["accepted"], "the run should accept some wrong drafts, or nothing here is tested"

    # every verifier of the roster, asked or not, with what it did
    assert [v["agent"] for v in spec["verifiers"]] == [f"verifier {i + 1}: {v}" for i, v in enumerate(VERIFIERS)]
    for j, v in enumerate(spec["verifiers"]):
        ratings, accepts, right, wrong = h["verifiers"][j]
        assert (v["ratings"], v["accepts"], v["accepts_right"], v["accepts_wrong"]) == (ratings, accepts, right, wrong)
        assert v["acceptance_rate"] == (round(accepts / ratings, 4) if ratings else None)
    assert (spec["verifiers"][1]["ratings"] == 0) == (RUNS[run_id] == 1)
    assert spec["verifier_calls_per_step"] == round(sum(t[0] for t in h["verifiers"].values()) / h["steps"], 4)

    # the voting agent alone: its p, and its valid rate with the drafts set apart
    voting_p, voting_valid = h["good"] / h["votes"], 1 - h["vflags"] / h["vcalls"]
    assert spec["voting_p"] == round(voting_p, 4) and spec["voting_valid_rate"] == round(voting_valid, 4)

    # Calls per step against the speculation estimate. With per-verifier acceptance rates and verdicts independent,
    # a valid draft is accepted with the product of the rates of the verifiers a draft must pass, so the estimate
    # comes to: a draft per drafted step, and plain voting for every step not accepted.
    assert s["calls_per_step"] == round(h["samples"] / h["steps"], 4)
    assert s["theory"] == "speculation"
    by_hand = h["drafted"] / h["steps"] + (1 - h["accepted"] / h["steps"]) * expected_calls(voting_p, 3, voting_valid)
    assert s["calls_per_step_theory"] == pytest.approx(by_hand, abs=2e-3)
    assert s["calls_per_step_voting_theory"] == pytest.approx(expected_calls(voting_p, 3, voting_valid), abs=2e-3)
    # the plain voting figure is what this run would have cost without a drafter, far from what it took
    assert s["calls_per_step_voting_theory"] > 1.5 * s["calls_per_step"]


def test_stats_text_names_the_estimate_the_drafter_and_every_verifier(store: Path, tmp_path: Path) -> None:
    h = _by_hand(store, "vk1")
    out = ok(run_maker("trace", "stats", "vk1", "--store", store, tmp=tmp_path)).stdout
    assert "expected by the speculation estimate" in out and "plain voting would take" in out
    assert re.search(
        rf"drafter: .*: {h['drafted']} drafts, {h['drafted'] - h['flagged']} valid .*accepted drafts right "
        rf"{h['right']} of {h['accepted']} known",
        out,
    )
    assert f"verifier 1: {VERIFIERS[0]}: {h['verifiers'][0][0]} verdicts, {h['verifiers'][0][1]} accepts" in out
    assert f"verifier 2: {VERIFIERS[1]}: never asked" in out
    assert "drafter: " + DRAFTER + ": decided" not in out  # no per-sample "p" for the drafter's voted-away drafts


def test_without_a_speculation_theory_a_speculative_run_is_not_compared_with_plain_voting(store: Path) -> None:
    with Store.open(store) as st:
        spec = trace_stats(st, st.run("vk1"))
        plain = trace_stats(st, st.run("plain"))
    assert spec.theory is None and spec.calls_per_step_theory is None and spec.series.calls_theory_cum is None
    assert spec.calls_per_step_voting_theory is not None
    assert plain.theory == "voting" and plain.calls_per_step_theory == plain.calls_per_step_voting_theory
    assert plain.speculation is None


def _cells(page: str, head: str) -> list[list[str]]:
    """The rows of the table that follows ``<h3>{head}</h3>``, each cell's text."""
    section = page.split(f"<h3>{head}</h3>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)[1:]  # past the head
    return [[unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def test_report_shows_every_agent_and_the_speculation_estimate(store: Path, tmp_path: Path) -> None:
    h = _by_hand(store, "vk2")
    s = _stats_json(store, "vk2", tmp_path)
    out = tmp_path / "r.html"
    ok(run_maker("trace", "report", "vk2", "--store", store, "-o", out, tmp=tmp_path))
    page = out.read_text(encoding="utf-8")

    theory, voting = s["calls_per_step_theory"], s["calls_per_step_voting_theory"]
    assert f"{s['calls_per_step']:.4g} measured, {theory:.4g} theory (the speculation estimate" in page
    assert f"plain voting would take {voting:.4g}" in page
    caption = re.search(r'<figure id="plot-calls">.*?<figcaption>(.*?)</figcaption>', page, re.S)
    assert caption is not None
    assert f"the speculation estimate at the measured rates, {theory:.4g} per step" in caption[1]
    assert f"plain voting, {voting:.4g} per step" in caption[1]

    rows = {r[0]: r for r in _cells(page, "Agents")}
    roster = [f"agent 1: {AGENT}", f"drafter: {DRAFTER}", *(f"verifier {i + 1}: {v}" for i, v in enumerate(VERIFIERS))]
    assert list(rows) == roster == s["agents"]
    assert [rows[a][1] for a in roster] == ["voting", "drafter", "verifier", "verifier"]
    voting_row = rows[roster[0]]
    assert voting_row[3] == f"{h['votes']:,}" and voting_row[4] == f"{h['good'] / h['votes']:.4g}"
    drafter = rows[roster[1]]
    assert drafter[4] == "–", "a draft is one sample: the drafter has no per-sample p"
    assert f"{h['drafted']} drafts, {h['drafted'] - h['flagged']} valid" in drafter[6]
    assert f"accepted drafts right: {h['right']} of {h['accepted']}" in drafter[6]
    for j, name in enumerate(roster[2:]):
        ratings, accepts, right, wrong = h["verifiers"][j]
        assert f"{ratings} verdicts, {accepts} accepts" in rows[name][6]
        assert f"known right: {right}, known wrong: {wrong}" in rows[name][6]

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return  # the page's text is checked; tests/trace/test_report.py covers rendering where Chromium is
    png = tmp_path / "r.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}", out.resolve().as_uri()],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert png.is_file() and png.stat().st_size > 0
