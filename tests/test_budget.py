"""The expected best figure of n trials (Tang et al.'s unbiased estimator), its band, which row leads
at which budget, and the edge flag: checked against brute force over subsets, against Dodge et al.'s
estimator's known bias, and on rows made up for the purpose (no training)."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from actexp.budget import (CONFIDENCE, Trial, TunedRow, budget_curve, budget_grid, budget_sentence, bootstrap_expected_best,
                           expected_best, leader_changes, leaders, leadership, on_edge, trial_scores, with_replacement_expected_best)
from actexp.errors import ActexpError


def row(label: str, scores, states=None, higher_is_better: bool = True, chosen=None, ranges=None) -> TunedRow:
    states = states or ["completed"] * len(scores)
    trials = tuple(Trial(i, {"optim.lr": 0.01 * (i + 1)}, s, state, 5 if state == "completed" else 2)
                   for i, (s, state) in enumerate(zip(scores, states)))
    return TunedRow(label, trials, chosen or {}, ranges or {"optim.lr": (1e-4, 1.0, True)}, higher_is_better)


def brute_force(scores, n, higher_is_better=True) -> float:
    best = max if higher_is_better else min
    return statistics.fmean(best(subset) for subset in itertools.combinations(scores, n))


# ----------------------------------------------------------------------------- the estimator


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_the_estimate_is_the_mean_best_over_every_subset(seed, higher_is_better):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 9))
    scores = list(rng.choice([0.1, 0.2, 0.5, 0.7], size) if seed % 2 else rng.normal(0.8, 0.1, size))  # ties and none
    estimate = expected_best(scores, higher_is_better=higher_is_better)
    assert estimate == pytest.approx([brute_force(scores, n, higher_is_better) for n in range(1, size + 1)], rel=1e-12, abs=1e-15)


def test_one_trial_is_the_mean_and_every_trial_the_best():
    scores = [0.91, 0.42, 0.77, 0.88, 0.93, 0.15, 0.6]
    for higher, best in ((True, max), (False, min)):
        estimate = expected_best(scores, higher_is_better=higher)
        assert estimate[0] == pytest.approx(statistics.fmean(scores), abs=1e-15)
        assert estimate[-1] == pytest.approx(best(scores), abs=1e-15)


def test_the_estimate_improves_with_the_budget():
    scores = list(np.random.default_rng(3).normal(0.9, 0.05, 60))
    higher = np.diff(expected_best(scores))
    lower = np.diff(expected_best(scores, higher_is_better=False))
    assert np.all(higher > 0) and np.all(lower < 0)


def test_the_estimate_stays_accurate_for_thousands_of_trials():
    scores = np.random.default_rng(0).random(3000)
    budgets = [1, 2, 10, 100, 1000, 2999, 3000]
    estimate = expected_best(scores, budgets)
    assert estimate[0] == pytest.approx(scores.mean(), abs=1e-14)
    assert estimate[-1] == pytest.approx(scores.max(), abs=1e-14)
    assert np.all(np.isfinite(estimate)) and np.all(np.diff(estimate) > 0)
    # n = 2 in closed form: sum over i of (i - 1) / C(N, 2) times the i-th smallest.
    ordered = np.sort(scores)
    pairs = np.dot(np.arange(3000), ordered) / (3000 * 2999 / 2)
    assert estimate[1] == pytest.approx(pairs, rel=1e-13)
    # n = N - 1: a subset's best is the best unless the subset is the one that leaves it out.
    assert estimate[-2] == pytest.approx(ordered[-1] * (2999 / 3000) + ordered[-2] / 3000, rel=1e-13)


def test_dodges_estimate_draws_with_replacement():
    scores = [0.3, 0.9, 0.5, 0.7, 0.1]
    for n in range(1, 6):
        draws = statistics.fmean(max(d) for d in itertools.product(scores, repeat=n))
        assert with_replacement_expected_best(scores, [n])[0] == pytest.approx(draws, rel=1e-12)


def test_dodges_estimate_is_biased_low_and_the_unbiased_one_is_not():
    """Uniform scores: the expected best of n draws is n / (n + 1). Over many samples of N = 10
    scores the unbiased estimate averages to it (within Monte-Carlo error), Dodge's falls short."""
    rng = np.random.default_rng(7)
    trials, samples, budgets = 10, 4000, [1, 3, 5, 10]
    unbiased = np.array([expected_best(rng.random(trials), budgets) for _ in range(samples)])
    truth = np.array([n / (n + 1) for n in budgets])
    error = unbiased.std(axis=0, ddof=1) / math.sqrt(samples)
    assert np.all(np.abs(unbiased.mean(axis=0) - truth) < 4 * error)
    rng = np.random.default_rng(7)
    dodge = np.array([with_replacement_expected_best(rng.random(trials), budgets) for _ in range(samples)])
    assert np.all((truth - dodge.mean(axis=0))[1:] > 10 * error[1:])
    assert dodge.mean(axis=0)[0] == pytest.approx(unbiased.mean(axis=0)[0])  # n = 1: both the mean


def test_dodges_estimate_never_exceeds_the_unbiased_one():
    """Drawing with replacement repeats trials, so its best is stochastically smaller: (i/N)^n is at
    least C(i, n)/C(N, n) for every i."""
    for seed in range(20):
        scores = np.random.default_rng(seed).normal(size=12)
        unbiased, dodge = expected_best(scores), with_replacement_expected_best(scores)
        assert dodge[0] == pytest.approx(unbiased[0])
        assert all(d < u for d, u in zip(dodge[1:], unbiased[1:]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        expected_best([0.5, math.nan])
    with pytest.raises(ValueError, match="1..3"):
        expected_best([0.5, 0.6, 0.7], [4])
    with pytest.raises(ValueError, match="1..3"):
        expected_best([0.5, 0.6, 0.7], [0])


def test_budget_grid_is_every_budget_then_log_spaced():
    assert budget_grid(7) == tuple(range(1, 8))
    assert budget_grid(200) == tuple(range(1, 201))
    grid = budget_grid(5000)
    assert grid[0] == 1 and grid[-1] == 5000 and len(grid) <= 200 and list(grid) == sorted(set(grid))


# ----------------------------------------------------------------------------- which scores count


def test_failed_trials_count_as_the_rows_worst_and_pruned_keep_their_figure():
    r = row("a", [0.8, math.nan, 0.6, 0.7, math.inf, 0.9], ["completed", "failed", "pruned", "completed", "completed", "failed"])
    assert trial_scores(r) == (0.8, 0.6, 0.6, 0.7, 0.6, 0.6)  # a diverged (inf) trial and a failed one with a figure too
    loss = row("b", [0.3, math.nan, 0.5], ["completed", "failed", "pruned"], higher_is_better=False)
    assert trial_scores(loss) == (0.3, 0.5, 0.5)
    assert all(math.isnan(s) for s in trial_scores(row("c", [math.nan, math.nan], ["failed", "failed"])))


def test_numpy_scores_count_as_scores():
    r = row("a", [np.float32(0.5), np.float64(0.7)])
    assert trial_scores(r) == pytest.approx((0.5, 0.7))


# ----------------------------------------------------------------------------- a row's curve and band


def test_a_rows_curve_is_the_estimate_with_a_reproducible_band():
    scores = list(np.random.default_rng(1).normal(0.9, 0.03, 30))
    r = row("relu", scores)
    curve = budget_curve(r, resamples=500)
    assert curve.budgets == tuple(range(1, 31)) and curve.expected == expected_best(scores)
    assert curve == budget_curve(r, resamples=500)  # fixed seed: the same band every time
    assert curve.high == pytest.approx([2 * e - lo for e, lo in zip(curve.expected, curve.low)])  # ± t standard errors
    assert all(lo < e < hi for lo, e, hi in zip(curve.low, curve.expected, curve.high))
    assert curve.high[-1] > max(scores)  # the truth may lie above the best seen: the band does not end there
    assert (curve.trials, curve.pruned, curve.failed, curve.confidence) == (30, 0, 0, CONFIDENCE)
    # n = 1 is the mean: its band is the t interval of the mean, with the bootstrap's standard error
    # of the mean, sd · sqrt((N - 1) / N) / sqrt(N), up to resampling noise.
    t_half = 2.045 * statistics.stdev(scores) * math.sqrt(29 / 30) / math.sqrt(30)
    assert (curve.high[0] - curve.low[0]) / 2 == pytest.approx(t_half, rel=0.1)


def test_two_rows_draw_independent_resamples():
    scores = [0.5, 0.6, 0.7, 0.8, 0.9]
    a, b = (bootstrap_expected_best(scores, [1], True, 200, seed=[0, k]) for k in (1, 2))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, bootstrap_expected_best(scores, [1], True, 200, seed=[0, 1]))
    assert budget_curve(row("relu", scores), resamples=200) != budget_curve(row("tanh", scores), resamples=200)


def test_a_loss_curve_falls_and_its_band_holds_it():
    scores = list(np.random.default_rng(2).normal(0.3, 0.05, 25))
    curve = budget_curve(row("a", scores, higher_is_better=False), resamples=400)
    assert curve.expected[-1] == pytest.approx(min(scores)) and curve.low[-1] < min(scores)
    assert all(lo < e < hi for lo, e, hi in zip(curve.low, curve.expected, curve.high))
    assert np.all(np.diff(curve.expected) < 0)


def test_a_curve_counts_its_pruned_and_failed_trials():
    r = row("a", [0.8, math.nan, 0.6, 0.7], ["completed", "failed", "pruned", "pruned"])
    curve = budget_curve(r, resamples=100)
    assert (curve.trials, curve.pruned, curve.failed) == (4, 2, 1)
    assert curve.expected[0] == pytest.approx(statistics.fmean([0.8, 0.6, 0.6, 0.7]))


def test_one_trial_has_no_band():
    curve = budget_curve(row("a", [0.9]), resamples=50)
    assert curve.expected == (0.9,) and math.isnan(curve.low[0]) and math.isnan(curve.high[0])
    sentence = budget_sentence(leadership([row("a", [0.9]), row("b", [0.8, 0.7])], resamples=50))
    assert sentence.endswith("(at 1 trial ahead of b by +0.1500, no interval from one trial: not separated).")


def test_a_row_without_scores_has_a_nan_curve_and_one_without_trials_is_an_error():
    curve = budget_curve(row("a", [math.nan, math.nan], ["failed", "failed"]))
    assert curve.budgets == (1, 2) and all(math.isnan(v) for v in curve.expected + curve.low + curve.high)
    with pytest.raises(ActexpError, match="'empty' has no trials"):
        budget_curve(TunedRow("empty", (), {}, {}, True))


# ----------------------------------------------------------------------------- which row leads


def steady_and_risky(higher_is_better=True):
    """steady: every trial 0.80; risky: half 0.60, half 0.90. One trial: steady leads (0.80 against
    0.75). Two: risky's best is 0.90 unless both are 0.60 (10 of 45 pairs): 0.833, and it leads."""
    sign = 1 if higher_is_better else -1
    steady = row("steady", [sign * 0.8] * 10, higher_is_better=higher_is_better)
    risky = row("risky", [sign * v for v in [0.6, 0.9] * 5], higher_is_better=higher_is_better)
    return steady, risky


def test_the_leader_changes_where_the_curves_cross():
    steady, risky = steady_and_risky()
    assert expected_best(trial_scores(risky), [1, 2]) == pytest.approx((0.75, 0.9 - 0.3 * 10 / 45))
    assert leader_changes([steady, risky]) == (2,)
    assert leaders([steady, risky])[:3] == ((1, "steady"), (2, "risky"), (3, "risky"))
    assert leader_changes(list(steady_and_risky(higher_is_better=False))) == (2,)  # losses: the lower leads


def test_no_change_when_one_row_leads_everywhere():
    good = row("good", [0.9, 0.95, 0.92])
    bad = row("bad", [0.5, 0.6, 0.7, 0.65])
    assert leader_changes([good, bad]) == () and leader_changes([bad, good]) == ()
    assert leaders([good, bad])[-1] == (3, "good")  # up to the budget both reached


def test_a_tie_keeps_the_leader():
    a, b = row("a", [0.7, 0.9]), row("b", [0.9, 0.7])
    assert leader_changes([a, b]) == () and leaders([b, a])[0] == (1, "b")


def test_rows_without_scores_never_lead_and_directions_must_agree():
    dead = row("dead", [math.nan] * 3, ["failed"] * 3)
    alive = row("alive", [0.1, 0.2])
    assert leaders([dead, alive]) == ((1, "alive"), (2, "alive"))
    assert leaders([dead]) == () and leader_changes([]) == ()
    with pytest.raises(ValueError, match="direction"):
        leaders([alive, row("loss", [0.3], higher_is_better=False)])
    with pytest.raises(ValueError, match=r"distinct labels; repeated: \['alive'\]"):
        leaders([alive, row("alive", [0.3])])


def test_leadership_gives_each_lead_its_margin_with_an_interval():
    steady, risky = steady_and_risky()
    result = leadership([steady, risky], resamples=500)
    first, second = result.leads
    assert (first.label, first.first, first.last, first.at, first.runner_up) == ("steady", 1, 1, 1, "risky")
    assert first.margin == pytest.approx(0.05) and first.low - 1e-12 <= first.margin <= first.high + 1e-12
    assert (second.label, second.first, second.last, second.at, second.runner_up) == ("risky", 2, 10, 10, "steady")
    assert second.margin == pytest.approx(0.1) and second.low - 1e-12 <= second.margin <= second.high + 1e-12
    assert result.changes == (2,) and result.budget == 10
    assert leadership([steady, risky], resamples=500) == result
    sentence = budget_sentence(result)
    assert sentence.startswith("The leading row changes with the budget")  # steady's lead is not separated
    assert "steady leads up to 1 trial (at 1 trial ahead of risky by +0.0500, 95% interval" in sentence
    assert "risky leads from 2 to 10 trials (at 10 trials ahead of steady by +0.1000" in sentence


def test_the_winner_depends_on_the_budget_only_where_two_leads_are_separated():
    steady = row("steady", [0.80] * 40)
    risky = row("risky", [0.40, 0.95] * 20)
    result = leadership([steady, risky], resamples=500)
    assert [lead.label for lead in result.leads] == ["steady", "risky"] and all(lead.low > 0 for lead in result.leads)
    assert budget_sentence(result).startswith("The winner depends on the budget (expected best of n trials per row): steady leads up to 1 trial")
    tied = leadership([row("a", [0.80, 0.81, 0.79]), row("b", [0.70, 0.95, 0.72])], resamples=300)
    assert tied.changes and budget_sentence(tied).endswith("No lead is separated from its runner-up: the budget moves the estimates, no ranking is shown.")


def test_one_leader_is_said_with_its_margin_at_the_full_budget():
    good, bad = row("good", [0.90, 0.95, 0.92, 0.91]), row("bad", [0.89, 0.93, 0.90, 0.92])
    sentence = budget_sentence(leadership([good, bad], resamples=300))
    assert sentence.startswith("Expected best of n trials: good leads at every budget from 1 to 4 trials (at 4 trials ahead of bad by +0.0200")
    assert "not separated" in sentence  # four trials each: the interval holds 0, and the words say so
    assert budget_sentence(leadership([good], resamples=50)) == ""


# ----------------------------------------------------------------------------- the edge flag


@pytest.mark.parametrize("value, flag", [
    (1.0, "high"), (0.7, "high"), (0.6, None), (0.5, None), (1e-2, None),
    (1.5e-4, "low"), (1e-4, "low"), (2e-4, None), (3.0, "high"), (1e-6, "low"),
])
def test_the_edge_is_the_outer_5_percent_of_a_log_range(value, flag):
    # 1e-4..1 is 4 decades: the edges are 0.2 decades wide, above 10^-0.2 = 0.631 and below 10^-3.8 = 1.58e-4.
    r = row("a", [0.9], chosen={"optim.lr": value}, ranges={"optim.lr": (1e-4, 1.0, True)})
    assert on_edge(r) == ({"optim.lr": flag} if flag else {})


def test_the_edge_of_a_linear_range_and_keys_without_one():
    ranges = {"optim.momentum": (0.0, 1.0, False), "model.activation": ("relu", "tanh", False), "train.batch": (64, 64, False),
              "optim.lr": (0.0, 1.0, True), "model.hidden": "256x256"}
    for value, flag in ((0.96, "high"), (0.95, "high"), (0.94, None), (0.5, None), (0.05, "low"), (0.06, None)):
        r = row("a", [0.9], chosen={"optim.momentum": value, "model.activation": "relu", "train.batch": 64, "optim.lr": 1.0, "model.hidden": 3},
                ranges=ranges)
        assert on_edge(r) == ({"optim.momentum": flag} if flag else {})
    assert on_edge(row("a", [0.9], chosen={}, ranges=ranges)) == {}


def test_the_issues_example_is_flagged():
    """lr tuned over 0.003..0.3: relu, gelu and tanh chose 0.3 (flagged), selu 0.1 (inside)."""
    ranges = {"optim.lr": (0.003, 0.3, True)}
    assert on_edge(row("relu", [0.948], chosen={"optim.lr": 0.3}, ranges=ranges)) == {"optim.lr": "high"}
    assert on_edge(row("selu", [0.928], chosen={"optim.lr": 0.1}, ranges=ranges)) == {}
