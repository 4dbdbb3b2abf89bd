"""Measured error correction of the real engine against the theory of first-to-ahead-by-k.

With ``spread=1`` every wrong sample gives the same wrong answer, so a step is the binary
gambler's ruin the formulas describe: the step errs with probability
``1 / (1 + (p / (1-p))^k)`` and takes ``expected_samples(p, k)`` samples on average.
Runs use fixed seeds, so each check is deterministic; every tolerance is a 99.9%
confidence interval, so a correct engine fails one of the ten checks for only ~1% of
seed choices, while an off-by-one in k moves the error rate by many interval widths.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from maker.agents import GenerateRequest, Oracle, make_agent
from maker.runs import start_run
from maker.stats import expected_calls, step_success, wilson_interval
from maker.workflows.counting import NextNumber, next_number
from tests._cli import stored_steps

Z999 = 3.2905267314919255  # two-sided 99.9% normal quantile

CONFIGS = [(0.7, 1), (0.7, 2), (0.75, 3), (0.8, 2), (0.65, 3)]
STEPS = 40_000
# Addition.solved() converts the whole sum with int(), which Python refuses past 4300
# digits (see test_addition_past_the_int_digit_limit); stay below it and chain runs.
CHUNK = 4_000


def _run(
    store: Path, run_id: str, p: float, k: int, *, digits: int, seed: int = 0, agent_seed: int = 1, **options: Any
) -> Any:
    return start_run(
        "addition",
        {"digits": digits, "seed": seed},
        {"agents": [f"simulated:p={p},spread=1,seed={agent_seed}"], "k": k, "seed": seed, **options},
        store=store,
        run_id=run_id,
    )


class Measured:
    def __init__(self, p: float, k: int, store: Path) -> None:
        self.p, self.k = p, k
        self.errors = 0
        self.calls = 0
        self.samples: list[int] = []
        self.wrong_rows = 0
        for chunk in range(math.ceil(STEPS / CHUNK)):
            digits = min(CHUNK, STEPS - chunk * CHUNK)
            # A distinct run seed per chunk: the same seed would replay the same draws.
            summary = _run(store, f"r{chunk}", p, k, digits=digits, seed=chunk)
            assert summary.status == "done"
            assert summary.steps == digits
            assert summary.k == k
            self.errors += summary.errors
            self.calls += summary.calls
            rows = stored_steps(store, f"r{chunk}")
            assert len(rows) == digits
            self.samples += [row[5] for row in rows]
            self.wrong_rows += sum(row[10] == 0 for row in rows)

    @property
    def steps(self) -> int:
        return len(self.samples)


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"p={c[0]},k={c[1]}")
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Measured:
    p, k = request.param
    return Measured(p, k, tmp_path_factory.mktemp(f"vote_p{p}_k{k}") / "runs.sqlite")


def test_step_error_matches_theory(measured: Measured) -> None:
    theory = 1 - step_success(measured.p, measured.k)
    assert theory == pytest.approx(1 / (1 + (measured.p / (1 - measured.p)) ** measured.k), rel=1e-12)
    lo, hi = wilson_interval(measured.errors, measured.steps, Z999)
    assert lo <= theory <= hi, (
        f"p={measured.p} k={measured.k}: measured {measured.errors}/{measured.steps} = "
        f"{measured.errors / measured.steps:.5f}, 99.9% CI [{lo:.5f}, {hi:.5f}], theory {theory:.5f}"
    )
    # The run's error counter is the count of steps the store marks incorrect.
    assert measured.errors == measured.wrong_rows


def test_calls_per_step_matches_theory(measured: Measured) -> None:
    n = measured.steps
    assert sum(measured.samples) == measured.calls  # no red flags: every call is a vote
    mean = measured.calls / n
    var = sum((x - mean) ** 2 for x in measured.samples) / (n - 1)
    half = Z999 * math.sqrt(var / n) + 1e-9  # CLT interval for the mean of i.i.d. step costs
    theory = expected_calls(measured.p, measured.k)
    assert abs(mean - theory) <= half, (
        f"p={measured.p} k={measured.k}: {mean:.4f} calls/step ± {half:.4f} (99.9%), theory {theory:.4f}"
    )
    # Ahead-by-k never decides in fewer than k samples, and with one wrong answer the
    # number of samples always has the parity of k.
    assert min(measured.samples) == measured.k
    assert all((x - measured.k) % 2 == 0 for x in measured.samples)


def _comparable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [row[:8] + row[10:] for row in rows]  # drop t_start and dur


def test_same_seed_same_steps_other_seed_other_steps(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    _run(store, "a", 0.7, 3, digits=400, seed=5, agent_seed=9)
    _run(store, "b", 0.7, 3, digits=400, seed=5, agent_seed=9)
    _run(store, "c", 0.7, 3, digits=400, seed=5, agent_seed=10)
    a, b, c = (_comparable(stored_steps(store, r)) for r in "abc")
    assert len(a) == len(b) == len(c) == 400
    assert a == b
    assert a != c
    # Same first input (the numbers come from the params seed), different draws.
    assert a[0][1] == c[0][1]
    assert [r[5] for r in a] != [r[5] for r in c]


def test_run_seed_changes_the_draws(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    # Fixed numbers (a, b), so only the run seed differs between the two runs.
    opts = {"agents": ["simulated:p=0.7,spread=1,seed=1"], "k": 3}
    params = {"a": "9" * 300, "b": "1" * 300}
    start_run("addition", params, {**opts, "seed": 1}, store=store, run_id="s1")
    start_run("addition", params, {**opts, "seed": 2}, store=store, run_id="s2")
    s1, s2 = stored_steps(store, "s1"), stored_steps(store, "s2")
    assert [r[5] for r in s1] != [r[5] for r in s2]


def test_addition_past_the_int_digit_limit(tmp_path: Path) -> None:
    summary = _run(tmp_path / "runs.sqlite", "long", 1.0, 1, digits=4_400)
    assert summary.status == "done"
    assert summary.solved is True


def test_mistakes_that_vote_like_the_right_answer_are_named_at_the_first_step(tmp_path: Path) -> None:
    """mistakes() that gives the right answer back would make every simulated error count as right (an error
    rate of 0 without a word): the agent says so once, at the microstep's first step."""
    import structlog

    from examples.countdown import Countdown, Next, decrement

    class Sloppy(Countdown, name="sloppy-countdown", version=1):
        pass

    honest = decrement.mistakes
    with structlog.testing.capture_logs() as logs:
        decrement.mistakes = lambda right, i: Next(value=right.value)  # votes like the right answer
        try:
            s = start_run(
                Sloppy, {"start": 6}, {"agents": ["simulated:p=0.5,seed=1"], "k": 2}, store=tmp_path / "s.sqlite"
            )
        finally:
            decrement.mistakes = honest
        clean = start_run(
            Sloppy, {"start": 6}, {"agents": ["simulated:p=0.5,seed=1"], "k": 2}, store=tmp_path / "s.sqlite"
        )
    warned = [e for e in logs if "votes like the right one" in e["event"]]
    assert len(warned) == 1 and warned[0]["microstep"] == "decrement" and "step 0" in warned[0]["event"]
    assert s.errors == 0 and s.calls == 2 * s.steps, "every 'error' voted with the right answer"
    assert clean.calls > s.calls, "honest mistakes cost votes at p = 0.5"


def test_a_simulated_responses_tokens_are_its_texts_unless_tokens_is_given(tmp_path: Path) -> None:
    """By default max_tokens means for a simulated agent what it means for a model: the text's length in tokens
    (about four characters a token); tokens=N draws a count around N instead, and the presets carry theirs."""
    import sqlite3

    from maker.agents._base import estimate_tokens

    db = tmp_path / "t.sqlite"
    start_run(
        "hanoi",
        {"disks": 4},
        {"agents": ["simulated:p=0.9,seed=1,malformed=0.1"], "k": 2, "detail": "samples"},
        store=db,
        run_id="text",
    )
    start_run(
        "hanoi",
        {"disks": 4},
        {"agents": ["simulated:p=0.9,seed=1,tokens=300"], "k": 2, "detail": "samples"},
        store=db,
        run_id="mean",
    )
    con = sqlite3.connect(db)
    try:
        rows = {
            rid: con.execute(
                "SELECT s.tokens, s.text FROM samples s JOIN runs r ON r.id = s.run WHERE r.run_id = ?", (rid,)
            ).fetchall()
            for rid in ("text", "mean")
        }
    finally:
        con.close()
    assert rows["text"] and all(tok == estimate_tokens(body) for tok, body in rows["text"])
    assert all(225 <= tok <= 375 for tok, _ in rows["mean"])
    # a limit below the texts' length flags every one as too long, as it would a real model's
    import asyncio

    from maker.agents import GenerateRequest, Oracle, make_agent
    from maker.engine import Decider
    from maker.workflows.hanoi import Hanoi, HanoiParams

    wf = Hanoi()
    state = wf.start(HanoiParams(disks=3))
    call = wf.next(state)
    req = GenerateRequest(
        call.prompt, [0.1] * 4, [1, 2, 3, 4], 5, (), False, Oracle(call.microstep, wf.oracle(state), 0, call.inputs)
    )
    (samples,) = asyncio.run(make_agent("simulated:p=0.99,seed=1").backend.generate([req]))
    assert all(s.tokens > 5 for s in samples)
    assert all(
        Decider.read(call.microstep, s.text, s.tokens, 5, call.inputs).flag.startswith("too_long") for s in samples
    )


@pytest.mark.parametrize("spread", [1, 2, 3])
def test_wrong_answers_spread_over_that_many_mistakes(spread: int) -> None:
    """A simulated agent's errors fall evenly on ``spread`` distinct wrong answers (the microstep's first
    ``spread`` mistakes), so with ``spread`` > 1 the wrong votes split and a vote is easier to win."""
    right = NextNumber(value=4)
    n = 3000
    req = GenerateRequest(
        "Counting: 1, 2, 3,",
        [0.1] * n,
        list(range(n)),
        next_number.max_tokens,
        [","],
        False,
        Oracle(next_number, right, 0, {}),
    )
    (samples,) = asyncio.run(make_agent(f"simulated:p=0,spread={spread},seed=4").backend.generate([req]))
    counts = Counter(s.text for s in samples)
    assert set(counts) == {next_number.render(next_number.mistake(right, j, {})) for j in range(spread)}
    share = 1 / spread
    for c in counts.values():  # a 99.9% binomial interval around n / spread
        assert abs(c - n * share) <= Z999 * math.sqrt(n * share * (1 - share)) + 1e-9, counts
