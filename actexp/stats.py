"""The statistics of `actexp compare`: how sure a ranking of a few seeds per row can be.

Per row (runs that differ only by seed): the mean and a 95% confidence interval of the mean by
Student's t. Against the best row: the best row is chosen from the same runs that are then tested,
so testing only the k - 1 comparisons with it (as if the best had been named in advance) calls rows
"worse" more often than α (`docs/sweeps.md` gives the measured rates). Instead every pair of rows is
one hypothesis of a family fixed before the data are seen (all k(k - 1)/2 pairs), each tested by a
t-test (Welch's; paired by seed when both rows ran the same 10 seeds or more), Holm-corrected over
the whole family; whichever row turns out best, its comparisons are in the family. Each row's
difference to the best comes with a Bonferroni interval over the same family, simultaneous for
every pair. Seeds needed: how many seeds per row would separate the smallest difference the user
cares about, at the level of the family's first step, over the range the spread's own uncertainty
allows.

Everything here is plain numbers in, frozen dataclasses out. numpy and scipy are imported inside
the functions that need them, so listing runs or `actexp --help` never pays for them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05  # family-wise significance level of the comparisons between rows
CONFIDENCE = 0.95  # of the interval of each row's mean, and of the simultaneous intervals
POWER = 0.8  # of the seeds-needed estimate
MAX_SEEDS = 1000  # the seeds-needed search stops here ("more than 1000")

PAIR_FROM_SEEDS = 10  # rows that ran the same seeds are compared by their per-seed differences from this many seeds (paired)

PAIRED = "paired t-test"
WELCH = "Welch's t-test"


@dataclass(frozen=True)
class Summary:
    """The values of one row: mean, sample sd (n - 1) and the confidence interval of the mean.
    n = 1 has no sd and no interval (nan); n = 0 has no mean either."""

    mean: float
    sd: float
    n: int
    low: float
    high: float

    @property
    def std(self) -> float:  # the name report.Stat used; kept for scripts that read it
        return self.sd


def summarize(values, confidence: float = CONFIDENCE) -> Summary:
    """Mean, sd and the Student's t interval of the mean (mean ± t(1 - (1 - c)/2, n - 1) · sd/√n) of
    the finite values; None and nan are left out."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n == 1:
        return Summary(mean, math.nan, 1, math.nan, math.nan)
    from scipy import stats

    sd = statistics.stdev(values)
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(mean, sd, n, mean - half, mean + half)


# ----------------------------------------------------------------------------- one pair of rows


@dataclass(frozen=True)
class Sample:
    """One row's results (one per completed run) and each run's train.seed (None where unknown)."""

    values: tuple[float, ...]
    seeds: tuple = ()

    @property
    def n(self) -> int:
        return len(self.values)


def _seed_set(s: Sample) -> frozenset | None:
    """The row's seeds when each of its runs has one and no seed repeats (else None: nothing to pair by)."""
    seeds = [x for x in s.seeds if x is not None]
    return frozenset(seeds) if len(seeds) == s.n and len(set(seeds)) == s.n else None


def paired(a: Sample, b: Sample) -> bool:
    """Whether two rows are tested by their per-seed differences: they ran exactly the same seeds,
    each once, and at least PAIR_FROM_SEEDS of them. Runs with the same seed share the weights' draw
    order and the batch order, and pairing removes the noise that shares; but the paired test has
    n - 1 degrees of freedom where Welch's has up to 2n - 2, and at the strict levels of a family of
    all pairs that costs more than pairing gains until about 10 seeds (measured: docs/sweeps.md)."""
    seeds = _seed_set(a)
    return seeds is not None and len(seeds) >= PAIR_FROM_SEEDS and seeds == _seed_set(b)


def _no_spread(spread: float, values) -> bool:
    # Equal differences can differ in the last bits of a float: that is no spread either.
    return spread <= 1e-12 * max(1.0, *map(abs, values))


def t_test(a: Sample, b: Sample) -> tuple[str, float]:
    """The two-sided test of equal means and its p-value: paired by seed where `paired` says so,
    Welch's (unequal variances) otherwise. No spread at all (t is 0/0 or x/0: accuracies are
    counts, so two seeds can score exactly alike) gives p = 1 for equal means, p = 0 for different."""
    from scipy import stats

    x = list(a.values)
    if paired(a, b):
        by_seed = dict(zip(b.seeds, b.values))
        y = [by_seed[s] for s in a.seeds]
        name, test = PAIRED, lambda: stats.ttest_rel(x, y)
        spread = statistics.pstdev(u - v for u, v in zip(x, y))
    else:
        y = list(b.values)
        name, test = WELCH, lambda: stats.ttest_ind(x, y, equal_var=False)
        spread = statistics.pstdev(x) + statistics.pstdev(y)
    if _no_spread(spread, x + y):
        return name, 1.0 if math.isclose(statistics.fmean(x), statistics.fmean(y), rel_tol=1e-12) else 0.0
    return name, float(test().pvalue)


def holm(p_values) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: the k-th smallest of m is multiplied
    by m - k + 1, and kept at least as large as the one before it (so the order of p is kept).
    Rejecting where the adjusted p < alpha keeps the chance of any false rejection in the family
    below alpha, with no assumption on how the tests depend on each other (pairs share rows)."""
    p_values = list(p_values)
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for k, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ----------------------------------------------------------------------------- every pair of rows


@dataclass(frozen=True)
class PairTests:
    """The t-test of every pair (first[i], second[i]) of rows, as arrays: the difference of means
    (first - second; paired: the mean per-seed difference, the same number), its standard error,
    degrees of freedom, whether the pair was paired by seed, and the two-sided p."""

    first: tuple[int, ...]
    second: tuple[int, ...]
    difference: object  # numpy arrays of floats, one entry per pair
    se: object
    df: object
    paired: object
    p: object


def pair_tests(samples: list[Sample]) -> PairTests:
    """t_test for every pair of the samples with n ≥ 2, computed at once (a sweep of 18 rows has 153
    pairs, and the simulations in the tests call this thousands of times); the same numbers as
    t_test pair by pair."""
    import numpy as np
    from scipy import stats

    rows = [i for i, s in enumerate(samples) if s.n >= 2]
    pairs = [(a, b) for k, a in enumerate(rows) for b in rows[k + 1:]]
    first, second = np.array([a for a, _ in pairs], dtype=int), np.array([b for _, b in pairs], dtype=int)
    means = np.array([statistics.fmean(s.values) if s.n else math.nan for s in samples])
    var = np.array([math.fsum((x - m) ** 2 for x in s.values) / (s.n - 1) if s.n >= 2 else math.nan for s, m in zip(samples, means)])
    n = np.array([s.n for s in samples], dtype=float)
    scale = np.array([max(map(abs, s.values), default=0.0) for s in samples])
    # Welch's test for every pair; the pairs that `paired` pairs are replaced below.
    vi, vj = var[first] / n[first], var[second] / n[second]
    difference, se2 = means[first] - means[second], vi + vj
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2**2 / (vi**2 / (n[first] - 1) + vj**2 / (n[second] - 1))
    spread = np.sqrt(var[first]) + np.sqrt(var[second])
    is_paired = np.zeros(len(first), dtype=bool)
    seed_sets = [_seed_set(s) if s.n >= 2 else None for s in samples]
    for seeds in set(filter(None, seed_sets)):
        members = [i for i in rows if seed_sets[i] == seeds]
        if len(members) < 2 or len(seeds) < PAIR_FROM_SEEDS:
            continue
        order = sorted(seeds)
        aligned = np.full((len(samples), len(order)), np.nan)
        for i in members:
            by_seed = dict(zip(samples[i].seeds, samples[i].values))
            aligned[i] = [by_seed[s] for s in order]
        member = np.zeros(len(samples), dtype=bool)
        member[members] = True
        where = member[first] & member[second]
        d = aligned[first[where]] - aligned[second[where]]
        difference[where], is_paired[where] = d.mean(axis=1), True
        se2[where], df[where] = d.var(axis=1, ddof=1) / len(order), len(order) - 1
        spread[where] = d.std(axis=1)
    se = np.sqrt(se2)
    flat = ~(spread > 1e-12 * np.maximum(1.0, np.maximum(scale[first], scale[second])))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(difference) / se, df)
    equal = np.isclose(means[first], means[second], rtol=1e-12, atol=0)
    p = np.where(flat, np.where(equal, 1.0, 0.0), p)
    se = np.where(flat, 0.0, se)
    df = np.where(flat, n[first] + n[second] - 2, df)
    return PairTests(tuple(first.tolist()), tuple(second.tolist()), difference, se, df, is_paired, p)


@dataclass(frozen=True)
class Verdict:
    """A row against the best row, one pair of the all-pairs family."""

    test: str  # PAIRED or WELCH
    difference: float  # this row's mean minus the best row's
    low: float  # the simultaneous interval of the difference (Bonferroni over the family's pairs)
    high: float
    p: float  # two-sided, this pair alone
    p_adjusted: float  # Holm over every pair of rows with n ≥ 2
    separated: bool  # p_adjusted < alpha
    pairs: int  # the size of the family


def against_best(samples: list[Sample], alpha: float = ALPHA, confidence: float = CONFIDENCE) -> list[Verdict | None]:
    """A verdict for each sample after the first (the best row, however it was chosen), None where a
    side has fewer than two values (one value has no spread to test against); the list is as long as
    `samples`, None first.

    The family is every pair of rows with n ≥ 2, not only the pairs with the best: a best picked
    from the data is then one of the family's rows whatever the data, and Holm keeps the chance of
    any false "separated" below alpha. The interval of a difference is Bonferroni's over the same
    pairs (t at 1 - (1 - confidence)/(2m)), simultaneous for all of them; Holm's step-down rejects
    at least where it does, so a separated row's interval can still touch 0."""
    if not samples or samples[0].n < 2:
        return [None] * len(samples)
    from scipy import stats

    tests = pair_tests(samples)
    m = len(tests.p)
    if m == 0:  # no other row has two values
        return [None] * len(samples)
    adjusted = holm(tests.p.tolist())
    with_best = [k for k, a in enumerate(tests.first) if a == 0]  # pairs (best, row): the best is sample 0, so it is always first
    critical = stats.t.ppf(1 - (1 - confidence) / (2 * m), tests.df[with_best])
    verdicts: list[Verdict | None] = [None] * len(samples)
    for k, t in zip(with_best, critical):
        half = float(t * tests.se[k]) if tests.se[k] > 0 else 0.0
        difference = -float(tests.difference[k])  # the row minus the best
        verdicts[tests.second[k]] = Verdict(PAIRED if tests.paired[k] else WELCH, difference, difference - half, difference + half,
                                            float(tests.p[k]), adjusted[k], adjusted[k] < alpha, m)
    return verdicts


# ----------------------------------------------------------------------------- seeds needed


def seeds_needed(delta: float, sd: float, paired: bool = False, alpha: float = ALPHA, power: float = POWER, max_seeds: int = MAX_SEEDS) -> int | None:
    """The smallest n (≥ 2) whose two-sided t-test at `alpha` reaches `power` for a true difference
    `delta` at spread `sd`: the exact power from the noncentral t, tried for every n up to `max_seeds`
    (one vectorized call), not the normal approximation. Paired: one-sample t on n differences
    (df n - 1, noncentrality delta/(sd/√n)); unpaired: two samples of n (df 2n - 2, noncentrality
    delta/(sd·√(2/n))). None past `max_seeds` or for delta = 0."""
    delta = abs(delta)
    if delta == 0 or not math.isfinite(delta) or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2  # no spread at all: any difference shows with the fewest seeds a test can use
    import numpy as np
    from scipy import stats

    n = np.arange(2, max_seeds + 1)
    df, ncp = (n - 1, delta / (sd / np.sqrt(n))) if paired else (2 * n - 2, delta / (sd * np.sqrt(2 / n)))
    critical = stats.t.ppf(1 - alpha / 2, df)
    reached = stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp) >= power
    return int(n[reached.argmax()]) if reached.any() else None


@dataclass(frozen=True)
class Spread:
    """A spread two rows show now, for one of the tests: `sd` from `df` degrees of freedom, and its
    95% chi-square interval [low, high]. Paired: the sd of their per-seed differences; otherwise
    their pooled sd."""

    sd: float
    df: int
    low: float
    high: float
    paired: bool


@dataclass(frozen=True)
class SeedsNeeded:
    """How many seeds per row would separate two rows whose means differ by `delta` (the smallest
    difference the user cares about), at the spreads the best two rows show now, each pair tested
    at `alpha` (the family's α over its `pairs` pairs: the first step of Holm) with POWER. The test
    is the one compare would run at that many seeds: Welch's below PAIR_FROM_SEEDS, paired from
    there when the rows share their seeds. `spreads`: the pooled one, then the paired one where the
    rows share their seeds. `n`: the seeds at the spreads now; `n_low`, `n_high`: at the low and the
    high ends of their intervals (None: more than `max_seeds`)."""

    delta: float
    alpha: float
    pairs: int
    spreads: tuple[Spread, ...]
    n: int | None
    n_low: int | None
    n_high: int | None
    max_seeds: int = MAX_SEEDS


def sd_interval(sd: float, df: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The confidence interval of a normal population's sd from a sample sd on df degrees of freedom:
    sd·√(df/χ²(1 - (1 - c)/2, df)) to sd·√(df/χ²((1 - c)/2, df)). With 2 df it spans a factor of
    about 12: an sd from three seeds says little about the next three."""
    from scipy import stats

    tail = (1 - confidence) / 2
    return sd * math.sqrt(df / stats.chi2.ppf(1 - tail, df)), sd * math.sqrt(df / stats.chi2.ppf(tail, df))


def separation(a: Sample, b: Sample, delta: float, pairs: int = 1, alpha: float = ALPHA, power: float = POWER,
               max_seeds: int = MAX_SEEDS) -> SeedsNeeded | None:
    """Seeds per row to separate a true difference `delta` between rows like a and b, at
    alpha/pairs (a family of `pairs` pairs), with the test compare would run at that many seeds;
    None when either row has fewer than two values. The spreads are theirs now, with their
    chi-square ranges: the answer is a range, not a number."""
    if a.n < 2 or b.n < 2:
        return None
    df = a.n + b.n - 2
    pooled = math.sqrt(((a.n - 1) * statistics.variance(a.values) + (b.n - 1) * statistics.variance(b.values)) / df)
    spreads = [Spread(pooled, df, *sd_interval(pooled, df), False)]
    seeds = _seed_set(a)
    if seeds is not None and seeds == _seed_set(b):  # they share their seeds: paired from PAIR_FROM_SEEDS of them
        by_seed = dict(zip(b.seeds, b.values))
        sd = statistics.stdev(x - by_seed[s] for x, s in zip(a.values, a.seeds))
        spreads.append(Spread(sd, a.n - 1, *sd_interval(sd, a.n - 1), True))
    level = alpha / pairs

    def needed(end: str) -> int | None:
        welch = seeds_needed(delta, getattr(spreads[0], end), False, level, power, max_seeds)
        if len(spreads) == 1 or (welch is not None and welch < PAIR_FROM_SEEDS):
            return welch
        by_pairs = seeds_needed(delta, getattr(spreads[1], end), True, level, power, max_seeds)
        return None if by_pairs is None else max(PAIR_FROM_SEEDS, by_pairs)

    return SeedsNeeded(abs(delta), level, pairs, tuple(spreads), needed("sd"), needed("low"), needed("high"), max_seeds)
