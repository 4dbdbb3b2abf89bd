"""Voted drafts (``--draft-k``): the drafter answers several times a call and the draft is the first answer
ahead by K; a split it cannot settle goes to voting; the window waits at a rejected draft only when rejected
drafts have mostly been overturned."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from maker.engine import DRAFT_CALLS
from maker.planning import draft_vote, speculation_estimate
from maker.runs import start_run
from maker.store import STEP_COLUMNS, Store
from tests._cli import run_maker

LARGE = "simulated:p=0.998,seed=1"


def _spec_rows(db: Path, run_id: str) -> list[tuple[int, int, dict]]:
    """(step, deciding agent, speculation record) of every step."""
    with Store.open(db) as st:
        rec = st.run(run_id)
        return [(r[0], r[7], json.loads(r[11])) for r in st.steps(rec.id)]


def test_voted_drafts_are_recorded_and_shown(tmp_path: Path) -> None:
    db = tmp_path / "d.sqlite"
    s = start_run(
        "hanoi",
        {"disks": 7},
        {
            "agents": [LARGE],
            "drafter": "simulated:p=0.8,seed=2,malformed=0.05",
            "draft_k": 2,
            "verifiers": ["simulated:seed=3,tpr=0.99,fpr=0.01"],
            "seed": 5,
        },
        store=db,
        run_id="dk",
    )
    assert s.errors == 0 and s.solved and s.drafted == s.steps
    drafter = next(n for label, n in s.agent_calls.items() if label.startswith("drafter"))
    assert drafter % 4 == 0 and drafter > 4 * s.steps, "four samples a call (2 x K); some steps took a second call"
    rows = _spec_rows(db, "dk")
    split_wins = 0
    for _step, _agent, info in rows:
        votes = json.loads(info["draft_votes"])
        assert votes == sorted(votes, reverse=True)
        lead = votes[0] - (votes[1] if len(votes) > 1 else 0)
        if info.get("route") == "draft_split":  # still split after the last call: voted by the large model
            assert lead < 2 and info["escalated"] and _agent == 0
            continue
        assert lead >= 2, "a draft is a vote won by K"
        split_wins += len(votes) > 1
    assert split_wins > 0, "the drafter's wrong samples lost votes"
    # a voted draft at p = 0.8 is right far more often than one sample: the verifier rejects few
    assert s.accepted / s.steps > 0.9
    step = next(step for step, _a, info in rows if len(json.loads(info["draft_votes"])) > 1 and "route" not in info)
    out = run_maker("trace", "show", "dk", "--store", db, "--step", str(step), tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"drafter's votes {rows[step][2]['draft_votes']}" in out.stdout


def test_a_split_the_drafter_cannot_settle_goes_to_voting(tmp_path: Path) -> None:
    db = tmp_path / "d.sqlite"
    s = start_run(
        "hanoi",
        {"disks": 6},
        {
            "agents": [LARGE],
            "drafter": "simulated:p=0.6,seed=2",
            "draft_k": 5,
            "draft_batch": 2,
            "verifiers": ["simulated:seed=3,tpr=0.99,fpr=0.01"],
            "seed": 6,
        },
        store=db,
        run_id="split",
    )
    assert s.errors == 0 and s.solved
    rows = _spec_rows(db, "split")
    split = [(agent, info) for _s, agent, info in rows if info.get("route") == "draft_split"]
    assert len(split) > s.steps / 2, "a lead of 5 in 8 samples at p = 0.6 is rare"
    for agent, info in split:
        assert agent == 0 and info["escalated"] and "verdicts" not in info or info["verdicts"] == []
        votes = json.loads(info["draft_votes"])
        assert sum(votes) <= 2 * DRAFT_CALLS and votes[0] - (votes[1] if len(votes) > 1 else 0) < 5
    assert all(info.get("accepted") or info.get("escalated") for _s, _a, info in rows)
    stats = run_maker("trace", "stats", "split", "--store", db, "--json", tmp=tmp_path)
    assert json.loads(stats.stdout)["speculation"]["routed"]["draft_split"] == len(split)


def test_a_drafter_whose_every_sample_is_red_flagged_escalates(tmp_path: Path) -> None:
    db = tmp_path / "d.sqlite"
    s = start_run(
        "hanoi",
        {"disks": 4},
        {
            "agents": [LARGE],
            "drafter": "simulated:p=0.9,seed=2,malformed=1.0",
            "draft_k": 2,
            "verifiers": ["simulated:seed=3,tpr=0.99,fpr=0.01"],
        },
        store=db,
        run_id="flags",
    )
    assert s.errors == 0 and s.accepted == 0 and s.escalated == s.steps
    for _s, agent, info in _spec_rows(db, "flags"):
        assert agent == 0 and info["draft_flag"] and "draft_votes" not in info
    assert s.red_flags == s.agent_calls["drafter: simulated:p=0.9,seed=2,malformed=1.0"] == 4 * DRAFT_CALLS * s.steps


def _brute(p: Fraction, valid: Fraction, k: int, batch: int, calls: int) -> tuple[Fraction, ...]:
    """Every sequence of sample outcomes, walked by the decider's rule (tally after each call)."""
    right = wrong = split = flagged = samples = Fraction(0)
    pr = {"R": valid * p, "W": valid * (1 - p), "F": 1 - valid}
    for seq in itertools.product("RWF", repeat=batch * calls):
        w = math.prod((pr[c] for c in seq), start=Fraction(1))
        r = wr = 0
        seen = False
        for c in range(calls):
            chunk = seq[c * batch : (c + 1) * batch]
            r += chunk.count("R")
            wr += chunk.count("W")
            seen = seen or r + wr > 0
            if abs(r - wr) >= k:
                right += w if r > wr else 0
                wrong += w if wr > r else 0
                samples += w * batch * (c + 1)
                break
        else:
            split += w if seen else 0
            flagged += 0 if seen else w
            samples += w * batch * calls
    return right, wrong, split, flagged, samples


@pytest.mark.parametrize(
    "p,valid,k,batch,calls",
    [
        (Fraction(7, 10), Fraction(1), 2, 2, 3),
        (Fraction(9, 10), Fraction(4, 5), 2, 3, 2),
        (Fraction(3, 5), Fraction(9, 10), 3, 2, 3),
        (Fraction(1, 2), Fraction(1), 1, 1, 4),
    ],
)
def test_draft_vote_equals_every_sample_sequence(p, valid, k, batch, calls) -> None:
    got = draft_vote(float(p), k, batch, valid=float(valid), calls=calls)
    want = _brute(p, valid, k, batch, calls)
    assert (got.right, got.wrong, got.split, got.flagged, got.samples) == pytest.approx([float(x) for x in want])
    assert got.right + got.wrong + got.split + got.flagged == pytest.approx(1.0)


def test_estimate_of_voted_drafts_matches_a_simulated_run(tmp_path: Path) -> None:
    """A lax verifier (FPR 0.2) lets wrong voted drafts through: the wrong steps committed fall in the
    estimate's 99.9% interval, and the drafter's samples per step match."""
    from tests.planning.test_speculation_math import _binomial_interval

    s = start_run(
        "addition",
        {"digits": 3000},
        {
            "agents": [LARGE],
            "drafter": "simulated:p=0.7,seed=12",
            "draft_k": 2,
            "verifiers": ["simulated:tpr=0.99,fpr=0.2,seed=13"],
            "seed": 3,
        },
        store=tmp_path / "s.sqlite",
    )
    e = speculation_estimate(steps=s.steps, drafter_p=0.7, draft_k=2, p=0.998, k=3, tpr=0.99, fpr=0.2)
    assert 30 <= e.expected_wrong <= 120
    lo, hi = _binomial_interval(s.steps, e.step_error)
    assert lo <= s.errors <= hi, f"{s.errors} wrong steps, estimate {e.expected_wrong:.1f} (99.9%: {lo}..{hi})"
    drafter = next(n for label, n in s.agent_calls.items() if label.startswith("drafter"))
    assert drafter / s.steps == pytest.approx(e.drafter_calls_per_step, rel=0.03)
    plain = speculation_estimate(steps=s.steps, drafter_p=0.7, p=0.998, k=3, tpr=0.99, fpr=0.2)
    assert plain.expected_wrong > 2 * e.expected_wrong, "one sample's draft is wrong far more often"


@pytest.mark.parametrize(
    "drafter,waits", [("simulated:p=1.0,seed=2,call_s=0.0005", False), ("simulated:p=0.6,seed=2,call_s=0.0005", True)]
)
def test_the_window_waits_at_a_rejected_draft_only_when_rejections_were_mostly_overturned(
    tmp_path: Path, drafter: str, waits: bool
) -> None:
    """A drafter that is never wrong, and a verifier that rejects one right draft in five: every rejection is
    upheld by the vote, so the window drafts on past rejected drafts. A poor drafter: most rejections are
    overturned, so it waits for the vote. Either way the trace is the one-step-at-a-time trace."""
    db = tmp_path / "w.sqlite"
    base = {
        "agents": ["simulated:p=0.998,seed=1,call_s=0.004"],
        "drafter": drafter,
        "k": 2,
        "seed": 7,
        "verifiers": ["simulated:seed=3,tpr=0.8,fpr=0.01,call_s=0.004"],
    }
    one = start_run("hanoi", {"disks": 7}, {**base, "window": 1}, store=db, run_id="one")
    ahead = start_run("hanoi", {"disks": 7}, {**base, "window": 16}, store=db, run_id="ahead")
    assert one.errors == ahead.errors and one.escalated == ahead.escalated > 10
    with Store.open(db) as st:
        keep = [i for i, c in enumerate(STEP_COLUMNS) if c not in ("t_start", "dur")]  # timings aside
        assert [tuple(r[i] for i in keep) for r in st.steps(st.run("one").id)] == [
            tuple(r[i] for i in keep) for r in st.steps(st.run("ahead").id)
        ]
        wasted = st.run("ahead").stats["wasted"]
    if waits:
        assert wasted["waited"] > 2 * wasted["went_on"]
    else:
        assert wasted["went_on"] > 2 * wasted["waited"] and wasted["went_on"] > 5
    text = run_maker("trace", "stats", "ahead", "--store", db, tmp=tmp_path).stdout
    assert f"waited for its vote {wasted['waited']:,} times, drafted on past it {wasted['went_on']:,} times" in text
