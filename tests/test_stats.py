"""actexp.stats against independent computations: t quantiles from a printed table, Welch's and the
paired t-test by their textbook formulas (the p-value from the regularized incomplete beta function,
not from scipy.stats), Holm by its definition, and sample sizes from published power tables."""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import sys

import pytest
from scipy.special import betainc

from actexp.stats import PAIRED, WELCH, Sample, against_best, holm, paired, separation, seeds_needed, summarize, t_test

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


def test_paired_when_both_rows_ran_the_same_seeds():
    # Seeds in another order: pairs are matched by seed, not by position.
    a = Sample((0.9616, 0.9580, 0.9650), (0, 1, 2))
    b = Sample((0.9601, 0.9590, 0.9571), (2, 0, 1))
    d = [0.9616 - 0.9590, 0.9580 - 0.9571, 0.9650 - 0.9601]
    t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(3))
    assert t_test(a, b) == (PAIRED, pytest.approx(two_sided_p(t, 2), rel=1e-9))
    # Welch on the same numbers ignores what the seeds share, and sees less.
    assert t_test(a, b)[1] < t_test(Sample(a.values), Sample(b.values))[1]


def test_which_rows_pair():
    assert paired(Sample((1, 2, 3), (0, 1, 2)), Sample((1, 2, 3), (2, 1, 0)))
    assert not paired(Sample((1, 2, 3), (0, 1, 2)), Sample((1, 2), (0, 1)))  # a seed missing
    assert not paired(Sample((1, 2, 3), (0, 0, 1)), Sample((1, 2, 3), (0, 0, 1)))  # a seed twice (--group-by over inits)
    assert not paired(Sample((1, 2), (0, None)), Sample((1, 2), (0, None)))  # a hand-made run without a seed
    assert not paired(Sample((1, 2)), Sample((1, 2)))


def test_no_spread_at_all():
    assert t_test(Sample((0.9357, 0.9357)), Sample((0.9357, 0.9357))) == (WELCH, 1.0)
    assert t_test(Sample((0.94, 0.94)), Sample((0.93, 0.93))) == (WELCH, 0.0)
    # Equal per-seed differences (equal up to float rounding): the paired test has no spread either.
    assert t_test(Sample((0.9357, 0.9401), (0, 1)), Sample((0.9300, 0.9344), (0, 1))) == (PAIRED, 0.0)
    assert t_test(Sample((0.1, 0.2), (0, 1)), Sample((1 - 0.9, 0.2), (0, 1))) == (PAIRED, 1.0)


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


def test_against_the_best_row():
    best = Sample((0.960, 0.962, 0.958), (0, 1, 2))
    close = Sample((0.959, 0.961, 0.959), (0, 1, 2))
    far = Sample((0.900, 0.905, 0.903), (0, 1, 2))
    unpaired = Sample((0.950, 0.951, 0.949, 0.952), (0, 1, 2, 3))
    single = Sample((0.99,), (0,))
    verdicts = against_best([best, close, far, unpaired, single])
    assert verdicts[0] is None and verdicts[4] is None  # the best itself; one run cannot be tested
    raw = [t_test(best, s)[1] for s in (close, far, unpaired)]
    for verdict, p, adjusted in zip(verdicts[1:4], raw, holm_by_definition(raw)):
        assert verdict.p == pytest.approx(p) and verdict.p_adjusted == pytest.approx(adjusted)
        assert verdict.distinguishable == (adjusted < 0.05)
    assert [v.test for v in verdicts[1:4]] == [PAIRED, PAIRED, WELCH]
    assert not verdicts[1].distinguishable and verdicts[2].distinguishable
    assert against_best([single, close, far]) == [None, None, None]  # a best of one run: nothing to test against
    assert against_best([]) == []


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


def test_separation_uses_the_spread_the_test_would():
    a = Sample((0.9616, 0.9580, 0.9650), (0, 1, 2))
    b = Sample((0.9601, 0.9590, 0.9571), (2, 0, 1))
    s = separation(a, b)
    d = [0.9616 - 0.9590, 0.9580 - 0.9571, 0.9650 - 0.9601]
    assert s.paired and s.delta == pytest.approx(abs(statistics.fmean(d))) and s.sd == pytest.approx(statistics.stdev(d))
    assert s.n == seeds_needed(s.delta, s.sd, paired=True)
    u = separation(Sample(a.values), Sample(b.values + (0.9580,)))
    pooled = math.sqrt((2 * statistics.variance(a.values) + 3 * statistics.variance(b.values + (0.9580,))) / 5)
    assert not u.paired and u.sd == pytest.approx(pooled) and u.n == seeds_needed(u.delta, pooled)
    assert separation(a, Sample((0.95,), (0,))) is None


@pytest.mark.slow
def test_importing_the_cli_and_the_reports_loads_neither_torch_nor_scipy():
    code = "import sys, actexp.cli, actexp.report, actexp.display, actexp.stats; print('torch' in sys.modules, 'scipy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
