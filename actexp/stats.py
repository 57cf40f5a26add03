"""The statistics of `actexp compare`: how sure a ranking of a few seeds per row can be.

Per row (runs that differ only by seed): the mean and a 95% confidence interval of the mean by
Student's t. Against the best row: a t-test per other row (paired by seed when both rows ran exactly
the same seeds, Welch's otherwise), Holm-corrected over those comparisons, so that "distinguishable"
holds for the whole family at once, not one row at a time. For the top two rows: about how many seeds
per row would separate a difference of their size at their spread.

Everything here is plain numbers in, frozen dataclasses out. scipy is imported inside the functions
that need it, so listing runs or `actexp --help` never pays for it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05  # significance level of the comparisons against the best row
CONFIDENCE = 0.95  # of the interval of each row's mean
POWER = 0.8  # of the seeds-needed estimate
MAX_SEEDS = 1000  # the seeds-needed search stops here ("more than 1000")

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


# ----------------------------------------------------------------------------- tests against the best


@dataclass(frozen=True)
class Sample:
    """One row's results (one per completed run) and each run's train.seed (None where unknown)."""

    values: tuple[float, ...]
    seeds: tuple = ()

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Verdict:
    """A row against the best row."""

    test: str  # PAIRED or WELCH
    p: float  # two-sided
    p_adjusted: float  # Holm over all the comparisons against the best
    distinguishable: bool  # p_adjusted < alpha


def paired(a: Sample, b: Sample) -> bool:
    """Whether two rows ran exactly the same seeds, each once: then run i of one row and the run of the
    other with the same seed share the weights' draw order and the batch order, and their difference
    is the thing to test (pairing removes the seed-to-seed noise both rows share)."""
    def seed_set(s: Sample):
        seeds = [x for x in s.seeds if x is not None]
        return set(seeds) if len(seeds) == s.n and len(set(seeds)) == s.n else None

    seeds = seed_set(a)
    return seeds is not None and seeds == seed_set(b)


def t_test(a: Sample, b: Sample) -> tuple[str, float]:
    """The two-sided test of equal means and its p-value: paired by seed when the rows ran the same
    seeds, Welch's (unequal variances) otherwise. No spread at all (t is 0/0 or x/0: accuracies are
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
    # Equal differences can differ in the last bits of a float: that is no spread either.
    if spread <= 1e-12 * max(1.0, *map(abs, x + y)):
        return name, 1.0 if math.isclose(statistics.fmean(x), statistics.fmean(y), rel_tol=1e-12) else 0.0
    return name, float(test().pvalue)


def holm(p_values) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: the k-th smallest of m is multiplied
    by m - k + 1, and kept at least as large as the one before it (so the order of p is kept).
    Rejecting where the adjusted p < alpha keeps the chance of any false "distinguishable" in the
    family below alpha, with no assumption on how the tests depend on each other (they all share
    the best row)."""
    p_values = list(p_values)
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for k, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def against_best(samples: list[Sample], alpha: float = ALPHA) -> list[Verdict | None]:
    """A verdict for each sample after the first (the best row), None where a side has fewer than two
    values (one value has no spread to test against); the list is as long as `samples`, None first."""
    best = samples[0] if samples else Sample(())
    tested = [i for i, s in enumerate(samples[1:], 1) if best.n >= 2 and s.n >= 2]
    results = {i: t_test(best, samples[i]) for i in tested}
    adjusted = dict(zip(tested, holm(results[i][1] for i in tested)))
    return [None if i not in results else Verdict(results[i][0], results[i][1], adjusted[i], adjusted[i] < alpha) for i in range(len(samples))]


# ----------------------------------------------------------------------------- seeds needed


@dataclass(frozen=True)
class SeedsNeeded:
    """About how many seeds per row would separate two rows: a difference of `delta` at spread `sd`
    (of the per-seed differences when `paired`, the pooled sd of the two rows otherwise), with POWER
    at ALPHA two-sided. `n` is None when delta is 0 (no number of seeds separates equal means) or the
    search passed `max_seeds`."""

    delta: float
    sd: float
    paired: bool
    n: int | None
    max_seeds: int = MAX_SEEDS


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


def separation(a: Sample, b: Sample, alpha: float = ALPHA, power: float = POWER, max_seeds: int = MAX_SEEDS) -> SeedsNeeded | None:
    """Seeds per row to separate rows a and b at the difference and spread they show now, with the
    test t_test would use (paired when they ran the same seeds); None when either has fewer than two
    values. A rough guide: an sd from three seeds is itself uncertain by a factor of about two."""
    if a.n < 2 or b.n < 2:
        return None
    delta = abs(statistics.fmean(a.values) - statistics.fmean(b.values))
    if paired(a, b):
        by_seed = dict(zip(b.seeds, b.values))
        sd, is_paired = statistics.stdev(x - by_seed[s] for x, s in zip(a.values, a.seeds)), True
    else:
        pooled = ((a.n - 1) * statistics.variance(a.values) + (b.n - 1) * statistics.variance(b.values)) / (a.n + b.n - 2)
        sd, is_paired = math.sqrt(pooled), False
    return SeedsNeeded(delta, sd, is_paired, seeds_needed(delta, sd, is_paired, alpha, power, max_seeds), max_seeds)
