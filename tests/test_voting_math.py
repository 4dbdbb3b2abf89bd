"""Property tests of the error-correction mathematics in :mod:`maker.voting`.

Every closed form is checked against an independent computation: exact rational
arithmetic over the absorbing Markov chain of the vote lead, exact integration of the
Beta density, and (where installed) SciPy's regularized incomplete beta function.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from maker.stats import expected_calls, expected_samples, k_min, run_success, step_success, wilson_interval
from maker.voting import Voting, beta_confidence, is_decided, samples_needed

# p > 0.5 but far enough from 0.5 that k_min stays a number floats can step through.
P_GOOD = st.floats(min_value=0.5 + 1e-6, max_value=1.0, allow_nan=False)
TARGET = st.floats(min_value=1e-3, max_value=1.0 - 1e-9, allow_nan=False)
STEPS = st.integers(min_value=1, max_value=10**9)


# -- exact reference computations ------------------------------------------------------


def _lead_chain(p: float, k: int) -> tuple[Fraction, Fraction]:
    """(expected votes, chance the correct side wins) for first-to-ahead-by-k, exactly.

    The lead ``d`` of the correct answer over the wrong one is a random walk on -k..k,
    absorbed at both ends, stepping +1 with probability p. Both quantities solve a
    tridiagonal linear system ``x[d] = c + p x[d+1] + q x[d-1]``; it is solved with the
    Thomas algorithm in rational arithmetic, so the only rounding is the final float().
    """
    pf = Fraction(p)
    qf = 1 - pf
    n = 2 * k - 1  # interior states d = -k+1 .. k-1, index i = d + k - 1

    def solve(rhs: list[Fraction], right_edge: Fraction) -> list[Fraction]:
        # -q x[i-1] + x[i] - p x[i+1] = rhs[i]; x[-1] = 0 (lost), x[n] = right_edge (won).
        b = list(rhs)
        b[-1] += pf * right_edge
        c_prime: list[Fraction] = []
        d_prime: list[Fraction] = []
        for i in range(n):
            denom = 1 + qf * c_prime[i - 1] if i else Fraction(1)
            c_prime.append(-pf / denom)
            d_prime.append((b[i] + (qf * d_prime[i - 1] if i else 0)) / denom)
        x = [Fraction(0)] * n
        x[-1] = d_prime[-1]
        for i in range(n - 2, -1, -1):
            x[i] = d_prime[i] - c_prime[i] * x[i + 1]
        return x

    durations = solve([Fraction(1)] * n, Fraction(0))
    wins = solve([Fraction(0)] * n, Fraction(1))
    return durations[k - 1], wins[k - 1]


def _beta_tail_exact(leader: int, runner_up: int) -> Fraction:
    """P(X > 1/2) for X ~ Beta(leader+1, runner_up+1), by integrating the density exactly."""
    a, b = leader, runner_up
    integral = sum(
        Fraction((-1) ** j * math.comb(b, j)) * (1 - Fraction(1, 2 ** (a + j + 1))) / (a + j + 1) for j in range(b + 1)
    )
    beta_fn = Fraction(math.factorial(a) * math.factorial(b), math.factorial(a + b + 1))
    return integral / beta_fn


# -- step_success, run_success, k_min --------------------------------------------------


def test_k_min_reproduces_maker_paper() -> None:
    # MAKER: 1,048,575 Hanoi steps (20 disks) at 95% target.
    assert k_min(1_048_575, 1 - 0.0022, 0.95) == 3  # gpt-4.1-mini
    assert k_min(1_048_575, 1 - 0.3571, 0.95) == 29  # gpt-4.1-nano


@settings(max_examples=400, deadline=None)
@given(s=STEPS, p=P_GOOD, t=TARGET)
@example(s=1_048_575, p=1 - 0.0022, t=0.95)
@example(s=1, p=1.0, t=0.5)
@example(s=1, p=0.75, t=0.75)  # need == (1-p)/p exactly: k = 1
def test_k_min_is_the_smallest_sufficient_k(s: int, p: float, t: float) -> None:
    k = k_min(s, p, t)
    assert k >= 1
    assert run_success(p, k, s) >= t
    if k > 1:
        assert run_success(p, k - 1, s) < t


@settings(max_examples=300, deadline=None)
@given(s1=STEPS, s2=STEPS, p=P_GOOD, t=TARGET)
def test_k_min_non_decreasing_in_steps(s1: int, s2: int, p: float, t: float) -> None:
    lo, hi = sorted((s1, s2))
    assert k_min(lo, p, t) <= k_min(hi, p, t)


@settings(max_examples=200, deadline=None)
@given(s=STEPS, p=P_GOOD, t1=TARGET, t2=TARGET)
def test_k_min_non_decreasing_in_target(s: int, p: float, t1: float, t2: float) -> None:
    lo, hi = sorted((t1, t2))
    assert k_min(s, p, lo) <= k_min(s, p, hi)


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 0.9, 0.95), "steps"), ((10, 0.5, 0.95), "p > 0.5"), ((10, 0.9, 1.0), "target"), ((10, 0.9, 0.0), "target")],
)
def test_k_min_rejects_bad_arguments(args: tuple[int, float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        k_min(*args)


@settings(max_examples=300, deadline=None)
@given(p=st.floats(min_value=0.5, max_value=1.0), k=st.integers(min_value=1, max_value=1000))
def test_step_success_non_decreasing_in_k(p: float, k: int) -> None:
    a, b = step_success(p, k), step_success(p, k + 1)
    assert 0.5 <= a <= b <= 1.0
    if p == 0.5:
        assert a == b == 0.5


@settings(max_examples=200, deadline=None)
@given(p=st.floats(min_value=0.51, max_value=0.9), k=st.integers(min_value=1, max_value=10))
def test_step_success_strictly_increasing_in_k(p: float, k: int) -> None:
    assert step_success(p, k) < step_success(p, k + 1)


@settings(max_examples=200, deadline=None)
@given(p=P_GOOD, k=st.integers(min_value=1, max_value=1000), s=STEPS)
def test_run_success_is_step_success_to_the_power_of_steps(p: float, k: int, s: int) -> None:
    expected = math.exp(s * math.log(step_success(p, k)))
    assert run_success(p, k, s) == pytest.approx(expected, rel=1e-6, abs=1e-300)
    assert run_success(p, k, 1) == pytest.approx(step_success(p, k), rel=1e-12)


# -- expected_samples / expected_calls --------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(p=st.floats(min_value=0.01, max_value=1.0), k=st.integers(min_value=1, max_value=25))
@example(p=0.5, k=7)
@example(p=1.0, k=3)
@example(p=0.5 + 2**-40, k=25)
def test_expected_samples_and_step_success_match_markov_chain(p: float, k: int) -> None:
    duration, win = _lead_chain(p, k)
    assert expected_samples(p, k) == pytest.approx(float(duration), rel=1e-6)
    assert step_success(p, k) == pytest.approx(float(win), rel=1e-9, abs=1e-300)


@given(k=st.integers(min_value=1, max_value=1000))
def test_expected_samples_is_k_squared_at_half(k: int) -> None:
    assert expected_samples(0.5, k) == k * k


@given(k=st.integers(min_value=1, max_value=1000))
def test_expected_samples_is_k_when_always_right(k: int) -> None:
    assert expected_samples(1.0, k) == pytest.approx(k, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(p=P_GOOD, k=st.integers(min_value=1, max_value=200), valid=st.floats(min_value=1e-3, max_value=1.0))
def test_expected_calls_scales_by_valid_rate(p: float, k: int, valid: float) -> None:
    assert expected_calls(p, k, valid) == pytest.approx(expected_samples(p, k) / valid, rel=1e-12)
    assert k * (1 - 1e-9) <= expected_samples(p, k) <= k * k * (1 + 1e-9)


@pytest.mark.parametrize("valid", [0.0, -0.1, 1.5])
def test_expected_calls_rejects_bad_valid_rate(valid: float) -> None:
    with pytest.raises(ValueError, match="valid rate"):
        expected_calls(0.9, 3, valid)


def test_small_p_does_not_overflow() -> None:
    # p in (0, 0.5) is accepted by _ratio; the true values are tiny / finite.
    assert step_success(0.01, 200) == pytest.approx(0.0, abs=1e-300)
    assert run_success(0.01, 200, 10) == pytest.approx(0.0, abs=1e-300)
    assert expected_samples(1e-10, 50) == pytest.approx(50.0, rel=1e-6)


# -- is_decided / samples_needed -------------------------------------------------------


@st.composite
def ahead_tallies(draw: st.DrawFn) -> tuple[Voting, int, int]:
    k = draw(st.integers(min_value=1, max_value=60))
    second = draw(st.integers(min_value=0, max_value=500))
    top = second + draw(st.integers(min_value=0, max_value=k - 1))
    return Voting(rule="ahead_by_k", k=k), top, second


@st.composite
def adaptive_tallies(draw: st.DrawFn) -> tuple[Voting, int, int]:
    confidence = draw(st.floats(min_value=0.5001, max_value=0.999))
    k = draw(st.integers(min_value=1, max_value=10))
    second = draw(st.integers(min_value=0, max_value=60))
    top = second + draw(st.integers(min_value=0, max_value=60))
    return Voting(rule="adaptive", k=k, confidence=confidence), top, second


@settings(max_examples=300, deadline=None)
@given(tally=st.one_of(ahead_tallies(), adaptive_tallies()))
def test_samples_needed_is_exactly_enough(tally: tuple[Voting, int, int]) -> None:
    voting, top, second = tally
    n = samples_needed(voting, top, second)
    assert n >= 1
    assert is_decided(voting, top + n, second)
    if not is_decided(voting, top, second):
        assert not is_decided(voting, top + n - 1, second)


@settings(max_examples=100, deadline=None)
@given(k=st.integers(min_value=1, max_value=60), second=st.integers(0, 100), extra=st.integers(0, 100))
def test_ahead_by_k_decided_iff_margin_reaches_k(k: int, second: int, extra: int) -> None:
    voting = Voting(k=k)
    top = second + extra
    assert is_decided(voting, top, second) == (extra >= k)
    assert samples_needed(voting, top, second) == max(1, k - extra)


@settings(max_examples=200, deadline=None)
@given(
    voting=st.builds(
        Voting,
        rule=st.sampled_from(["ahead_by_k", "adaptive"]),
        k=st.integers(1, 20),
        confidence=st.floats(0.5001, 0.999),
    ),
    top=st.integers(0, 80),
    second=st.integers(0, 80),
)
def test_decided_tallies_still_ask_for_one(voting: Voting, top: int, second: int) -> None:
    assume(top >= second)
    assert samples_needed(voting, top, second) >= 1
    # A tie never decides, whatever the rule.
    assert not is_decided(voting, second, second)


@settings(max_examples=200, deadline=None)
@given(leader=st.integers(0, 60), runner_up=st.integers(0, 60))
def test_beta_confidence_is_the_exact_beta_tail(leader: int, runner_up: int) -> None:
    exact = _beta_tail_exact(leader, runner_up)
    # beta_confidence divides two integers, which Python rounds correctly: the float is exact.
    assert beta_confidence(leader, runner_up) == float(exact)


@settings(max_examples=200, deadline=None)
@given(leader=st.integers(0, 400), runner_up=st.integers(0, 400))
def test_beta_confidence_matches_scipy_betainc(leader: int, runner_up: int) -> None:
    special = pytest.importorskip("scipy.special")
    # P(X > 1/2), X ~ Beta(l+1, r+1)  ==  1 - I_{1/2}(l+1, r+1)  ==  I_{1/2}(r+1, l+1).
    want = float(special.betainc(runner_up + 1, leader + 1, 0.5))
    assert beta_confidence(leader, runner_up) == pytest.approx(want, rel=1e-9, abs=1e-13)
    assert beta_confidence(leader, runner_up) == pytest.approx(
        1 - float(special.betainc(leader + 1, runner_up + 1, 0.5)), rel=1e-9, abs=1e-13
    )


@settings(max_examples=200, deadline=None)
@given(leader=st.integers(0, 300), runner_up=st.integers(0, 300))
def test_beta_confidence_monotone(leader: int, runner_up: int) -> None:
    c = beta_confidence(leader, runner_up)
    assert 0.0 < c <= 1.0
    assert beta_confidence(leader + 1, runner_up) >= c
    assert beta_confidence(leader, runner_up + 1) <= c
    # Strict where float resolution allows.
    if 1e-12 < c < 1 - 1e-12:
        assert beta_confidence(leader + 1, runner_up) > c
        assert beta_confidence(leader, runner_up + 1) < c


@given(n=st.integers(0, 500))
def test_beta_confidence_of_a_tie_is_one_half(n: int) -> None:
    assert beta_confidence(n, n) == 0.5


# -- wilson_interval --------------------------------------------------------------------


@st.composite
def binomial_counts(draw: st.DrawFn, interior: bool) -> tuple[int, int]:
    n = draw(st.integers(min_value=2 if interior else 1, max_value=10**7))
    s = draw(st.integers(min_value=1, max_value=n - 1) if interior else st.integers(min_value=0, max_value=n))
    return s, n


@settings(max_examples=400, deadline=None)
@given(counts=binomial_counts(interior=True), z=st.floats(min_value=0.01, max_value=6.0))
def test_wilson_interval_contains_phat_and_lies_in_unit_interval(counts: tuple[int, int], z: float) -> None:
    s, n = counts
    lo, hi = wilson_interval(s, n, z)
    assert 0.0 <= lo <= s / n <= hi <= 1.0


@settings(max_examples=200, deadline=None)
@given(counts=binomial_counts(interior=False), z=st.floats(min_value=0.01, max_value=6.0))
def test_wilson_interval_in_unit_interval_and_widens_with_z(counts: tuple[int, int], z: float) -> None:
    s, n = counts
    lo, hi = wilson_interval(s, n, z)
    lo2, hi2 = wilson_interval(s, n, z * 1.5)
    assert 0.0 <= lo <= hi <= 1.0
    assert lo2 <= lo + 1e-15 and hi2 >= hi - 1e-15


def test_wilson_interval_of_nothing_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_contains_phat_at_the_boundaries() -> None:
    for n in range(1, 200):
        lo, _ = wilson_interval(0, n)
        _, hi = wilson_interval(n, n)
        assert lo == 0.0, n
        assert hi == 1.0, n
