"""The counts calibrations keep: :class:`VerdictTally` (``maker calibrate --verifier``) and :class:`SampleTally`
(``maker calibrate``), fed by hand and by real small calibrations on simulated agents."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from maker.planning import calibrate, calibrate_verifier
from maker.planning._calibrate import SampleTally, choose_steps
from maker.planning._calibrate_verifier import VerdictTally, _judge_all, _make_bench
from maker.runs import resolve_workflow
from maker.stats import wilson_interval


def test_verdict_tally_by_hand() -> None:
    t = VerdictTally()
    t.draft("format", False)  # red-flagged: counted apart, never judged
    t.draft("too_long", True)
    t.draft("format", True)
    for right, accepted in ((True, True), (True, True), (True, False), (False, True), (False, False), (True, None)):
        t.draft(None, right)
        t.answer(None if accepted is not None else "format", right)
        t.verdict(right, accepted)
    assert t.drafts_flagged == Counter({"format": 2, "too_long": 1})
    assert (t.drafts_valid, t.drafts_right) == (6, 4)
    # the verdict-less draft (its verifier answer red-flagged) is neither right nor wrong for TPR and FPR
    assert (t.right, t.accepted_right, t.wrong, t.accepted_wrong) == (3, 2, 2, 1)
    assert (t.verifier_answers, t.verifier_valid, t.verifier_correct) == (6, 5, 3)
    assert t.tpr == (2 / 3, *wilson_interval(2, 3))
    assert t.fpr == (1 / 2, *wilson_interval(1, 2))
    assert t.drafter_p == (4 / 6, *wilson_interval(4, 6))
    assert t.verifier_p == (3 / 5, *wilson_interval(3, 5))
    assert t.verifier_valid_rate == 5 / 6
    empty = VerdictTally()
    assert empty.tpr == empty.fpr == empty.drafter_p == (None, None, None) and empty.verifier_valid_rate is None


def _tally(
    workflow: str, params: dict[str, Any], verifier: str, drafter: str | None, mode: Any, samples: int
) -> VerdictTally:
    """A real calibration's tally, from the pipeline calibrate_verifier runs (seed 0, batches of 16)."""
    wf_cls = resolve_workflow(workflow)
    wf = wf_cls()
    picks, _ = choose_steps(wf, wf_cls.parse_params(params), samples, 0, 2_000_000)
    bench = _make_bench(wf, verifier, drafter, mode, 7.0, "expected", None, None, 0)
    return asyncio.run(_judge_all(bench, [state for _, state in picks], 16, None))


def test_verdict_tally_of_a_score_calibration() -> None:
    """No drafter: alternately the right answer and a plausible mistake, so half the drafts are right, none is
    flagged, and the verifier (TPR 0.9, FPR 0.15) accepts most right and few wrong ones."""
    verifier = "simulated:tpr=0.9,fpr=0.15,seed=5"
    t = _tally("hanoi", {"disks": 6}, verifier, None, "score", 40)
    assert not t.drafts_flagged and (t.drafts_valid, t.drafts_right) == (40, 20)
    assert (t.right, t.accepted_right, t.wrong, t.accepted_wrong) == (20, 17, 20, 4)
    assert t.verifier_answers == 0  # score mode: the verifier rates, it does not answer
    v = calibrate_verifier("hanoi", {"disks": 6}, verifier, samples=40, drafter_p=0.9)
    assert (v.right, v.accepted_right, v.wrong, v.accepted_wrong) == (20, 17, 20, 4)
    assert (v.tpr, v.tpr_low, v.tpr_high) == t.tpr and (v.fpr, v.fpr_low, v.fpr_high) == t.fpr
    assert v.drafts_flagged == {} and v.verifier_p is None and v.verifier_valid is None


def test_verdict_tally_of_a_vote_calibration() -> None:
    """A drafter with red-flagged drafts and a verifier with red-flagged answers: flagged drafts are not judged,
    and a draft whose verifier answer is flagged gets no verdict."""
    verifier, drafter = "simulated:p=0.9,seed=3,malformed=0.1", "simulated:p=0.8,malformed=0.1,seed=4"
    t = _tally("addition", {"digits": 100}, verifier, drafter, "vote", 120)
    assert t.drafts_flagged == Counter({"format": 13}) and (t.drafts_valid, t.drafts_right) == (107, 92)
    assert (t.verifier_answers, t.verifier_valid, t.verifier_correct) == (107, 98, 86)
    assert (t.right, t.accepted_right, t.wrong, t.accepted_wrong) == (84, 74, 14, 2)
    assert t.drafts_valid + sum(t.drafts_flagged.values()) == 120 and t.right + t.wrong == t.verifier_valid
    v = calibrate_verifier("addition", {"digits": 100}, verifier, drafter=drafter, mode="vote", samples=120)
    assert v.drafts_flagged == {"format": 13}
    assert (v.right, v.accepted_right, v.wrong, v.accepted_wrong) == (84, 74, 14, 2)
    assert (v.drafter_p, v.drafter_p_low, v.drafter_p_high) == t.drafter_p and v.drafter_valid == 107 / 120
    assert (v.verifier_p, v.verifier_p_low, v.verifier_p_high) == t.verifier_p and v.verifier_valid == 98 / 107


def test_sample_tally_by_hand_and_from_a_calibration() -> None:
    t = SampleTally()
    t.add("move", 10, None, True)
    t.add("move", 20, "format", True)  # red-flagged: whether it is right is not read
    t.add("check", 5, None, False)
    assert (t.samples, t.valid, t.correct, t.tokens) == (3, 2, 1, 35)
    assert t.red_flags == Counter({"format": 1}) and t.by_microstep == {"move": [2, 1, 1], "check": [1, 1, 0]}
    c = calibrate("hanoi", {"disks": 8}, "simulated:p=0.95,malformed=0.2,overlong=0.1,tokens=300", samples=400)
    assert (c.samples, c.valid, c.correct) == (400, 285, 270)
    assert c.red_flags == {"format": 77, "too_long": 38} and c.tokens_per_call == pytest.approx(375.675)
    assert c.by_microstep == {
        "hanoi_move": {"samples": 400, "valid": 285, "correct": 270, "valid_rate": 285 / 400, "p": 270 / 285}
    }
