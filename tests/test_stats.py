"""actexp.stats against independent computations: t and chi-square quantiles from printed tables,
Welch's and the paired t-test by their textbook formulas (the p-value from the regularized
incomplete beta function, not from scipy.stats, and quantiles by inverting it), Holm by its
definition, and sample sizes from published power tables. How often the verdict errs when the best
is picked from the data is tests/test_selection_error.py's."""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import sys

import pytest
from scipy.optimize import brentq
from scipy.special import betainc

from actexp.stats import (PAIR_FROM_SEEDS, PAIRED, WELCH, Sample, against_best, holm, pair_tests, paired, sd_interval, separation,
                          seeds_needed, summarize, t_test)

# Student's t, 0.975 quantile, from a printed table.
T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445}


def two_sided_p(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with df degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    return float(betainc(df / 2, 0.5, df / (df + t * t)))


def welch_textbook(a, b) -> tuple[float, float, float]:
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    return t, df, two_sided_p(t, df)


def test_the_interval_of_the_mean_uses_students_t():
    s = summarize([0.90, 0.95, 0.91, math.nan, None])
    sd = math.sqrt(((0.90 - 0.92) ** 2 + (0.95 - 0.92) ** 2 + (0.91 - 0.92) ** 2) / 2)
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(0.92), pytest.approx(sd))
    assert s.low == pytest.approx(0.92 - T975[2] * sd / math.sqrt(3), abs=1e-6)
    assert s.high == pytest.approx(0.92 + T975[2] * sd / math.sqrt(3), abs=1e-6)
    five = [0.9616, 0.9580, 0.9650, 0.9601, 0.9633]
    s = summarize(five)
    half = T975[4] * statistics.stdev(five) / math.sqrt(5)
    assert (s.low, s.high) == (pytest.approx(statistics.fmean(five) - half, abs=1e-7), pytest.approx(statistics.fmean(five) + half, abs=1e-7))
    assert summarize([0.8, 0.84]).high - summarize([0.8, 0.84]).low == pytest.approx(2 * T975[1] * 0.02, abs=1e-6)
    one = summarize([0.97])
    assert one.n == 1 and one.mean == 0.97 and all(math.isnan(x) for x in (one.sd, one.low, one.high))
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)
    assert s.std == s.sd  # the name scripts read before


def test_welch_when_the_seeds_differ():
    a = Sample((0.9616, 0.9580, 0.9650), (0, 1, 2))
    b = Sample((0.9592, 0.9604, 0.9581, 0.9577), (0, 1, 2, 3))
    t, df, p = welch_textbook(a.values, b.values)
    assert 2 < df < 3  # far from the pooled test's 5 degrees of freedom
    assert t_test(a, b) == (WELCH, pytest.approx(p, rel=1e-9))
    assert t_test(Sample(a.values), Sample(a.values[:2])) [0] == WELCH  # no seeds known: nothing to pair


# Twelve seeds of two rows that share them: the second row's seeds listed in another order.
SEEDS = tuple(range(12))
A12 = (0.9616, 0.9580, 0.9650, 0.9601, 0.9633, 0.9592, 0.9610, 0.9575, 0.9622, 0.9640, 0.9598, 0.9605)
B12 = (0.9601, 0.9571, 0.9630, 0.9590, 0.9611, 0.9588, 0.9593, 0.9570, 0.9614, 0.9621, 0.9580, 0.9597)


def test_paired_when_both_rows_ran_the_same_seeds():
    # Pairs are matched by seed, not by position.
    a, b = Sample(A12, SEEDS), Sample(B12[::-1], SEEDS[::-1])
    d = [x - y for x, y in zip(A12, B12)]
    t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(12))
    assert t_test(a, b) == (PAIRED, pytest.approx(two_sided_p(t, 11), rel=1e-9))
    # Welch's test on the same numbers ignores what the seeds share, and sees less here.
    assert t_test(a, b)[1] < t_test(Sample(a.values), Sample(b.values))[1]


def test_rows_with_few_shared_seeds_are_not_paired():
    # Below PAIR_FROM_SEEDS the paired test's n - 1 degrees of freedom cost more than pairing gains.
    a, b = Sample(A12[:3], (0, 1, 2)), Sample(B12[:3], (0, 1, 2))
    assert PAIR_FROM_SEEDS == 10 and not paired(a, b)
    t, df, p = welch_textbook(a.values, b.values)
    assert t_test(a, b) == (WELCH, pytest.approx(p, rel=1e-9))


def test_which_rows_pair():
    ten = tuple(range(10))
    assert paired(Sample(ten, ten), Sample(ten, ten[::-1]))
    assert not paired(Sample(ten[:9], ten[:9]), Sample(ten[:9], ten[:9]))  # too few seeds
    assert not paired(Sample(ten, ten), Sample(ten[:9], ten[:9]))  # a seed missing
    assert not paired(Sample(ten + (1,), ten + (1,)), Sample(ten + (1,), ten + (1,)))  # a seed twice (--group-by over inits)
    assert not paired(Sample(ten, ten[:9] + (None,)), Sample(ten, ten[:9] + (None,)))  # a hand-made run without a seed
    assert not paired(Sample(ten), Sample(ten))


def test_no_spread_at_all():
    assert t_test(Sample((0.9357, 0.9357)), Sample((0.9357, 0.9357))) == (WELCH, 1.0)
    assert t_test(Sample((0.94, 0.94)), Sample((0.93, 0.93))) == (WELCH, 0.0)
    # Equal per-seed differences (equal up to float rounding): the paired test has no spread either.
    ten = tuple(range(10))
    base = tuple(0.93 + 0.001 * i for i in ten)
    assert t_test(Sample(tuple(x + 0.0057 for x in base), ten), Sample(base, ten)) == (PAIRED, 0.0)
    assert t_test(Sample((0.1,) * 10, ten), Sample((1 - 0.9,) * 10, ten)) == (PAIRED, 1.0)


def holm_by_definition(p):
    """Holm's step-down procedure, as the definition reads: the adjusted p of the k-th smallest is
    the largest, over the j ≤ k smallest, of min(1, (m - j + 1) · p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    for k, i in enumerate(order, 1):
        adjusted[i] = max(min(1.0, (m - j + 1) * p[order[j - 1]]) for j in range(1, k + 1))
    return adjusted


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    for p in itertools.product([0.001, 0.01, 0.02, 0.3, 0.049], repeat=4):
        assert holm(p) == pytest.approx(holm_by_definition(p))


def t_quantile(q: float, df: float) -> float:
    """Student's t quantile for q > 0.5, by inverting the textbook two-sided p (not scipy.stats)."""
    return brentq(lambda t: two_sided_p(t, df) - 2 * (1 - q), 0, 1e6, xtol=1e-12, rtol=1e-12)


def test_every_pair_is_tested_once():
    rows = [Sample(A12[:3], (0, 1, 2)), Sample((0.95,), (0,)), Sample(B12[:4], (0, 1, 2, 3)), Sample(A12, SEEDS), Sample(B12, SEEDS)]
    tests = pair_tests(rows)
    # Rows with one value are in no pair; the others in every pair, each once.
    assert list(zip(tests.first, tests.second)) == [(0, 2), (0, 3), (0, 4), (2, 3), (2, 4), (3, 4)]
    for a, b, p, difference, is_paired in zip(tests.first, tests.second, tests.p, tests.difference, tests.paired):
        assert t_test(rows[a], rows[b]) == (PAIRED if is_paired else WELCH, pytest.approx(float(p), rel=1e-9))
        assert difference == pytest.approx(statistics.fmean(rows[a].values) - statistics.fmean(rows[b].values))
    assert list(tests.paired) == [False] * 5 + [True]  # only the two rows of 12 shared seeds


def test_against_the_best_row_in_the_family_of_all_pairs():
    best = Sample((0.960, 0.962, 0.958), (0, 1, 2))
    close = Sample((0.959, 0.961, 0.957), (0, 1, 2))
    far = Sample((0.900, 0.905, 0.903), (0, 1, 2))
    unequal = Sample((0.950, 0.951, 0.949, 0.952), (0, 1, 2, 3))
    single = Sample((0.99,), (0,))
    rows = [best, close, far, unequal, single]
    verdicts = against_best(rows)
    assert verdicts[0] is None and verdicts[4] is None  # the best itself; one run cannot be tested
    # Holm over all 6 pairs of the 4 rows with two runs or more, not over the 3 pairs with the best.
    family = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    raw = [t_test(rows[a], rows[b])[1] for a, b in family]
    adjusted = dict(zip(family, holm_by_definition(raw)))
    for i in (1, 2, 3):
        v, (a, b) = verdicts[i], (rows[0], rows[i])
        assert v.pairs == 6 and v.test == WELCH
        assert v.p == pytest.approx(raw[i - 1]) and v.p_adjusted == pytest.approx(adjusted[0, i]) and v.separated == (adjusted[0, i] < 0.05)
        # The interval: Bonferroni over the 6 pairs, Welch's standard error and degrees of freedom.
        t, df, _ = welch_textbook(b.values, a.values)
        difference = statistics.fmean(b.values) - statistics.fmean(a.values)
        half = t_quantile(1 - 0.05 / 12, df) * difference / t
        assert v.difference == pytest.approx(difference) and (v.low, v.high) == (pytest.approx(difference - half), pytest.approx(difference + half))
    assert not verdicts[1].separated and verdicts[2].separated
    assert against_best([single, close, far]) == [None, None, None]  # a best of one run: nothing to test against
    assert against_best([best, single]) == [None, None]
    assert against_best([]) == []


def test_the_interval_of_a_paired_difference():
    best, other = Sample(A12, SEEDS), Sample(B12, SEEDS)
    v = against_best([best, other])[1]
    d = [y - x for x, y in zip(A12, B12)]
    half = t_quantile(0.975, 11) * statistics.stdev(d) / math.sqrt(12)  # one pair: Bonferroni over 1
    assert v.test == PAIRED and v.pairs == 1
    assert (v.difference, v.low, v.high) == (pytest.approx(statistics.fmean(d)), pytest.approx(statistics.fmean(d) - half), pytest.approx(statistics.fmean(d) + half))
    # No spread: the interval is the difference itself, and the verdict is certain.
    flat = against_best([Sample((0.94, 0.94)), Sample((0.93, 0.93)), Sample((0.94, 0.94))])
    assert (flat[1].low, flat[1].high, flat[1].separated) == (pytest.approx(-0.01), pytest.approx(-0.01), True)
    assert (flat[2].difference, flat[2].low, flat[2].high, flat[2].separated) == (0.0, 0.0, 0.0, False)


@pytest.mark.parametrize("d, paired_, n", [
    # Two-sample t-test, 80% power, two-sided α = 0.05 (Cohen 1988, table 2.4.1; G*Power).
    (0.5, False, 64), (0.8, False, 26), (1.0, False, 17),
    # Paired (one-sample on the differences).
    (0.5, True, 34), (0.8, True, 15), (1.0, True, 10),
])
def test_seeds_needed_matches_power_tables(d, paired_, n):
    assert seeds_needed(d * 0.004, 0.004, paired=paired_) == n
    # The normal approximation n ≈ 2((z_.975 + z_.8)/d)² (n ≈ ((…)/d)² paired) is a little low at these sizes.
    approx = (2 if not paired_ else 1) * ((1.959964 + 0.841621) / d) ** 2
    assert approx < n < approx + 3


def test_seeds_needed_limits():
    assert seeds_needed(0.0, 0.01) is None  # equal means: no number of seeds separates them
    assert seeds_needed(1e-6, 0.01) is None  # more than MAX_SEEDS
    assert seeds_needed(0.001, 0.01, max_seeds=1000) is None  # d = 0.1 needs about 1571 per row
    assert 1565 < seeds_needed(0.001, 0.01, max_seeds=2000) < 1580
    assert seeds_needed(0.01, 0.0) == 2


def test_the_sd_interval_from_chi_square():
    # chi-square quantiles from a printed table: df 2: 0.0506, 7.3778; df 4: 0.4844, 11.1433.
    assert sd_interval(1.0, 2) == (pytest.approx(math.sqrt(2 / 7.3778), rel=1e-4), pytest.approx(math.sqrt(2 / 0.0506), rel=1e-3))
    low, high = sd_interval(0.004, 4)
    assert (low, high) == (pytest.approx(0.004 * math.sqrt(4 / 11.1433), rel=1e-4), pytest.approx(0.004 * math.sqrt(4 / 0.4844), rel=1e-4))


def test_seeds_needed_for_the_smallest_difference_that_matters():
    a, b = Sample(A12[:3], (0, 1, 2)), Sample(B12[:3], (0, 1, 2))
    s = separation(a, b, 0.005, pairs=153)
    # The pooled sd of the two rows (4 degrees of freedom) for Welch's test, and the sd of their
    # per-seed differences (2) for the paired test; each pair at 0.05/153.
    pooled = math.sqrt((statistics.variance(a.values) + statistics.variance(b.values)) / 2)
    d = statistics.stdev(x - y for x, y in zip(a.values, b.values))
    welch, by_pairs = s.spreads
    assert (welch.sd, welch.df, welch.paired) == (pytest.approx(pooled), 4, False) and (welch.low, welch.high) == tuple(map(pytest.approx, sd_interval(pooled, 4)))
    assert (by_pairs.sd, by_pairs.df, by_pairs.paired) == (pytest.approx(d), 2, True) and (by_pairs.low, by_pairs.high) == tuple(map(pytest.approx, sd_interval(d, 2)))
    assert s.delta == 0.005 and s.alpha == pytest.approx(0.05 / 153)  # the difference asked for, not the one observed

    # The seeds compare's own test would need: Welch's below PAIR_FROM_SEEDS, paired from there.
    def expected(end: str) -> int | None:
        w = seeds_needed(0.005, getattr(welch, end), False, 0.05 / 153)
        return w if w is not None and w < PAIR_FROM_SEEDS else max(PAIR_FROM_SEEDS, seeds_needed(0.005, getattr(by_pairs, end), True, 0.05 / 153))

    assert (s.n, s.n_low, s.n_high) == (expected("sd"), expected("low"), expected("high"))
    assert s.n_low <= s.n <= s.n_high
    # A large difference: Welch's test reaches it below 10 seeds, and that is the answer.
    big = separation(a, b, 0.02, pairs=153)
    assert big.n == seeds_needed(0.02, pooled, False, 0.05 / 153) < PAIR_FROM_SEEDS
    # Rows that ran other seeds: Welch's test only.
    other = separation(a, Sample(B12[:4], (0, 1, 2, 3)), 0.005)
    assert len(other.spreads) == 1 and other.n == seeds_needed(0.005, other.spreads[0].sd, False, 0.05)
    assert separation(a, Sample((0.95,), (0,)), 0.005) is None


@pytest.mark.slow
def test_importing_the_cli_and_the_reports_loads_neither_torch_nor_scipy():
    code = "import sys, actexp.cli, actexp.report, actexp.display, actexp.stats; print('torch' in sys.modules, 'scipy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
