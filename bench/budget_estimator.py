"""How good the budget curve is: the estimators' bias, the bootstrap band's coverage, and its cost.

    python bench/budget_estimator.py [--replicates R]

Scores are drawn from a known distribution, Beta(8, 2) (mean 0.8, skewed towards 1 like validation
accuracies), so the true expected best of n trials is known: the integral of 1 - F(x)^n over 0..1.
For N trials per row, over R replicated rows:
- bias: the mean of the unbiased estimate (Tang et al.) and of Dodge et al.'s (with replacement)
  minus the truth, with the Monte-Carlo standard error;
- coverage: how often a 95% band holds the truth: budget.budget_curve's (the estimate ± t(N - 1)
  bootstrap standard errors) and the percentile bootstrap band (Tang et al.'s), from the same
  resamples;
- cost: the seconds of one budget_curve (the estimate and a band of budget.RESAMPLES resamples).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy import integrate, stats  # noqa: E402

from actexp.budget import (RESAMPLES, Trial, TunedRow, bootstrap_expected_best, budget_curve, expected_best, row_seed,  # noqa: E402
                           with_replacement_expected_best)

DISTRIBUTION = stats.beta(8, 2)


def truth(n: int) -> float:
    return integrate.quad(lambda x: 1 - DISTRIBUTION.cdf(x) ** n, 0, 1)[0]


def as_row(scores) -> TunedRow:
    return TunedRow("row", tuple(Trial(i, {}, float(s), "completed", 1) for i, s in enumerate(scores)), {}, {}, True)


def bias(trials: int, budgets: list[int], replicates: int, rng) -> None:
    samples = DISTRIBUTION.rvs(size=(replicates, trials), random_state=rng)
    unbiased = np.array([expected_best(s, budgets) for s in samples])
    dodge = np.array([with_replacement_expected_best(s, budgets) for s in samples])
    print(f"\nbias, N = {trials} trials, {replicates} replicates (estimate - truth, ± Monte-Carlo se)")
    print(f"{'n':>5} {'truth':>8} {'unbiased':>20} {'Dodge (with repl.)':>22}")
    for j, n in enumerate(budgets):
        t = truth(n)
        cells = [f"{(e[:, j].mean() - t):+.5f} ± {e[:, j].std(ddof=1) / math.sqrt(replicates):.5f}" for e in (unbiased, dodge)]
        print(f"{n:>5} {t:>8.4f} {cells[0]:>20} {cells[1]:>22}")


def coverage(trials: int, budgets: list[int], replicates: int, rng, resamples: int) -> None:
    truths = np.array([truth(n) for n in budgets])
    held = {"t": np.zeros(len(budgets)), "percentile": np.zeros(len(budgets))}
    for replicate in range(replicates):
        scores = DISTRIBUTION.rvs(size=trials, random_state=rng)
        curve = budget_curve(as_row(scores), budgets, resamples=resamples, seed=replicate)
        held["t"] += (np.array(curve.low) <= truths) & (truths <= np.array(curve.high))
        draws = bootstrap_expected_best(scores, budgets, True, resamples, row_seed("row", replicate))  # budget_curve's resamples
        low, high = np.quantile(draws, [0.025, 0.975], axis=0)
        held["percentile"] += (low <= truths) & (truths <= high)
    print(f"\ncoverage of 95% bands, N = {trials} trials, {replicates} replicates, {resamples} resamples each (± Monte-Carlo se)")
    print(f"{'n':>6} {'± t bootstrap se':>18} {'percentile':>16}")
    for j, n in enumerate(budgets):
        cells = [f"{p:.3f} ± {math.sqrt(p * (1 - p) / replicates):.3f}" for p in (held["t"][j] / replicates, held["percentile"][j] / replicates)]
        print(f"{n:>6} {cells[0]:>18} {cells[1]:>16}")


def cost(trials: int, rng) -> None:
    row = as_row(DISTRIBUTION.rvs(size=trials, random_state=rng))
    start = time.perf_counter()
    curve = budget_curve(row)
    print(f"  N = {trials:>5}: {time.perf_counter() - start:.3f} s ({len(curve.budgets)} budgets, {RESAMPLES} resamples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(2020)
    bias(20, [1, 2, 5, 10, 20], 20 * args.replicates, rng)
    for trials in (20, 50):
        coverage(trials, sorted({1, 2, 5, trials // 2, trials}), args.replicates, rng, resamples=1000)
    print("\ncost of one budget_curve")
    for trials in (40, 400, 3000):
        cost(trials, rng)


if __name__ == "__main__":
    main()
