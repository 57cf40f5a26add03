"""The expected best validation figure of a tune as a function of its budget (the number of trials),
per row of a tuned sweep, and where the row that leads changes with the budget.

Dodge et al. 2019 ("Show Your Work") report, for n = 1..N, the expected best validation figure of n
trials. Their estimator draws the n trials from the N observed ones with replacement (a V-statistic)
and is biased low: a draw that repeats a trial is a smaller sample. Tang et al. 2020 ("Showing Your
Work Doesn't Always Work") give the unbiased one, used here: the mean, over every n-subset of the N
trials, of the subset's best. With the scores sorted worst first, v(1) <= ... <= v(N),

    E[best of n] = sum over i = n..N of  C(i - 1, n - 1) / C(N, n) · v(i)

(v(i) is the best of a subset when the subset holds trial i and n - 1 of the i - 1 worse ones). The
weights are computed from log-beta functions, which keep them accurate for N in the thousands.
n = 1 gives the mean of the scores, n = N their best.

Which scores the estimator sees (`trial_scores`):
- completed trials: their score.
- pruned trials: their score as recorded, the figure they had reached when pruned. They stay in:
  leaving them out would keep only the trials the pruner judged good, and the curve would describe
  a search whose every trial is a survivor (too high, most at small budgets). Their figure is from
  fewer epochs and was judged behind others at the same epoch, so it rarely decides a best.
- failed trials (no finite score: failed, diverged): the row's worst finite score. A failure is
  worth nothing to a search, and the worst figure the row reached is the least a trial gives without
  inventing a number (chance level is not known here); a row whose every trial failed has no curve.

The band is the estimate ± t(N - 1) bootstrap standard errors: the trials resampled with
replacement (`RESAMPLES` resamples, from a generator seeded by `seed` and the row's label, so a
row's band is the same whatever rows stand beside it), the unbiased estimator applied to each
resample, the standard deviation of those estimates taken at each budget. Not the percentile band
that Tang et al. compute: near n = N the estimate is the observed best, which no resample exceeds,
so a percentile band ends there and misses a truth above it about half the time. Both bands cover
less than they claim near n = N (the bootstrap of a maximum is not consistent; the measured
coverage of both is in docs/tuning-figures.md): read the band's width at large budgets as a lower
bound on the uncertainty. A row of one trial has no band (nan).

The estimator treats the trials as exchangeable draws. An adaptive sampler (TPE) makes later trials
better than early ones, so the curve is the expected best of n trials drawn at random from the
study's trials, not the best of its first n trials.

Also here: the edge flag (`on_edge`), whether a row's chosen value lies at the edge of its range.

numpy and scipy are imported inside the functions that use them: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass

from .errors import ActexpError

COMPLETED, PRUNED, FAILED = "completed", "pruned", "failed"
STATES = (COMPLETED, PRUNED, FAILED)
CONFIDENCE = 0.95  # of the band and of the margins in `leadership`
RESAMPLES = 2000  # bootstrap resamples per band
SEED = 0
GRID_POINTS = 200  # a curve is computed at every budget up to this many trials, at this many budgets beyond
EDGE = 0.05  # the outermost share of a range, on each side, that counts as its edge
CHUNK = 1 << 20  # elements per block of weights or resamples: bounds the memory of large N


# ----------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Trial:
    number: int  # Optuna's trial number within its row's study (0, 1, ...): the order trials were asked
    params: dict  # tuned key -> value, e.g. {"optim.lr": 0.03}
    score: float  # the validation figure of the trial's selected epoch; nan when failed/diverged
    state: str  # "completed" | "pruned" | "failed"
    epochs: int  # epochs trained (pruned trials trained fewer)


@dataclass(frozen=True)
class TunedRow:
    label: str  # the row: e.g. "act=relu optim=sgd"
    trials: tuple[Trial, ...]
    chosen: dict  # the params the row's study chose (best completed trial)
    ranges: dict  # key -> (low, high, log: bool)
    higher_is_better: bool  # True for accuracy, False for loss


# ----------------------------------------------------------------------------- the estimator


def trial_scores(row: TunedRow) -> tuple[float, ...]:
    """The score each trial of `row` contributes (see the module's rules): its own where finite and
    the trial did not fail, the row's worst finite score otherwise; all nan when none is finite."""
    finite = [t.score for t in row.trials if has_score(t)]
    worst = (min(finite) if row.higher_is_better else max(finite)) if finite else math.nan
    return tuple(float(t.score) if has_score(t) else worst for t in row.trials)


def expected_best(scores, budgets=None, higher_is_better: bool = True) -> tuple[float, ...]:
    """Tang et al.'s unbiased estimate of the expected best of n trials, for each n in `budgets`
    (default 1..N), from N finite scores: the mean over all n-subsets of the subset's best."""
    values = _sorted_scores(scores, higher_is_better)
    budgets = _checked_budgets(budgets, len(values))
    sign = 1.0 if higher_is_better else -1.0
    return tuple(float(sign * v) for v in _weighted(values[None, :], budgets, _without_replacement)[0]) if len(budgets) else ()


def with_replacement_expected_best(scores, budgets=None, higher_is_better: bool = True) -> tuple[float, ...]:
    """Dodge et al.'s estimate (n draws with replacement from the N scores): biased towards the worse
    end, kept to show that bias (tests, docs), not used for the curves."""
    values = _sorted_scores(scores, higher_is_better)
    budgets = _checked_budgets(budgets, len(values))
    sign = 1.0 if higher_is_better else -1.0
    return tuple(float(sign * v) for v in _weighted(values[None, :], budgets, _with_replacement)[0]) if len(budgets) else ()


def bootstrap_expected_best(scores, budgets, higher_is_better: bool = True, resamples: int = RESAMPLES, seed=SEED):
    """The unbiased estimate on each of `resamples` resamples (with replacement) of the scores: an
    array of shape (resamples, len(budgets)). `seed`: an int or a sequence of ints for numpy's
    generator, so the same call gives the same draws."""
    import numpy as np

    values = _sorted_scores(scores, higher_is_better)
    budgets = _checked_budgets(budgets, len(values))
    rng = np.random.default_rng(seed)
    per_block = max(1, CHUNK // max(len(values), 1))
    draws = []
    for start in range(0, resamples, per_block):
        rows = min(per_block, resamples - start)
        sample = np.sort(values[rng.integers(0, len(values), size=(rows, len(values)))], axis=1)
        draws.append(_weighted(sample, budgets, _without_replacement))
    sign = 1.0 if higher_is_better else -1.0
    return sign * np.concatenate(draws) if draws else np.empty((0, len(budgets)))


def budget_grid(trials: int, points: int = GRID_POINTS) -> tuple[int, ...]:
    """The budgets a curve is computed at: every n from 1 to `trials` up to `points` trials, beyond
    that `points` budgets spaced evenly on a log scale, 1 and `trials` among them."""
    import numpy as np

    if trials <= points:
        return tuple(range(1, trials + 1))
    return tuple(int(n) for n in np.unique(np.rint(np.geomspace(1, trials, points)).astype(int)))


def _without_replacement(n, i, trials):
    """Weight of the i-th worst of `trials` scores in the mean best of an n-subset: C(i-1, n-1)/C(N, n),
    as exp(log(N + 1) + B(N - n + 1, n + 1) - log(i) - B(i - n + 1, n)) with B the log-beta function."""
    import numpy as np
    from scipy.special import betaln

    valid = i >= n
    k = np.where(valid, i, n)
    log_weight = math.log(trials + 1) + betaln(trials - n + 1, n + 1) - np.log(k) - betaln(k - n + 1, n)
    return np.where(valid, np.exp(log_weight), 0.0)


def _with_replacement(n, i, trials):
    """P(the best of n draws with replacement is the i-th worst): (i/N)^n - ((i-1)/N)^n."""
    return (i / trials) ** n - ((i - 1) / trials) ** n


def _weighted(samples, budgets, weights):
    """samples (R × N, each row sorted worst first) -> (R × len(budgets)) expected bests, the weights
    built a block of budgets at a time."""
    import numpy as np

    trials = samples.shape[1]
    i = np.arange(1, trials + 1, dtype=np.float64)[None, :]
    n_all = np.asarray(budgets, dtype=np.float64)
    per_block = max(1, CHUNK // trials)
    out = np.empty((samples.shape[0], len(n_all)))
    for start in range(0, len(n_all), per_block):
        n = n_all[start:start + per_block, None]
        block = weights(n, i, trials)
        # The weights of a budget sum to 1; dividing by their computed sum removes the rounding that
        # their shared log terms carry, so n = 1 is the mean and n = N the best to the last digits.
        out[:, start:start + per_block] = samples @ (block / block.sum(axis=1, keepdims=True)).T
    return out


def _sorted_scores(scores, higher_is_better: bool):
    """The scores as floats, worst first, negated where lower is better (so the best is the largest)."""
    import numpy as np

    values = np.asarray([float(s) for s in scores], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite: give failed trials a score first (trial_scores does)")
    return np.sort(values if higher_is_better else -values)


def _checked_budgets(budgets, trials: int) -> tuple[int, ...]:
    budgets = tuple(range(1, trials + 1)) if budgets is None else tuple(int(n) for n in budgets)
    if any(not 1 <= n <= trials for n in budgets):
        raise ValueError(f"budgets must lie in 1..{trials} (the number of scores)")
    return budgets


def has_score(trial: Trial) -> bool:
    """Whether a trial's own score enters the estimate (else it counts as the row's worst): it did
    not fail and its score is a finite number."""
    score = trial.score
    return trial.state != FAILED and is_number(score) and math.isfinite(score)


def numeric_range(spec) -> tuple[float, float, bool] | None:
    """A range as (low, high, log) where it is one a value can be placed in: two finite numbers,
    low < high, both positive where log; None otherwise (a categorical key's choices, say)."""
    if not isinstance(spec, (tuple, list)) or len(spec) != 3:
        return None
    low, high, log = spec
    if not (is_number(low) and is_number(high) and math.isfinite(low) and math.isfinite(high) and low < high):
        return None
    if log and low <= 0:
        return None
    return float(low), float(high), bool(log)


def is_number(value) -> bool:
    """A real number (numpy's included), not a bool: what a score or a tuned value can be."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- a row's curve


@dataclass(frozen=True)
class BudgetCurve:
    """A row's expected best validation figure of n trials at each budget n, with its band."""

    label: str
    budgets: tuple[int, ...]
    expected: tuple[float, ...]
    low: tuple[float, ...]  # the band's worse edge ... (the lower value, whatever the direction)
    high: tuple[float, ...]  # ... and its higher value
    trials: int  # N: every trial of the row
    pruned: int
    failed: int  # trials scored as the row's worst
    higher_is_better: bool
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES


def budget_curve(row: TunedRow, budgets=None, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> BudgetCurve:
    """`row`'s curve at `budgets` (default `budget_grid` of its trial count). The band is the
    bootstrap band of the module's rules; a row with no finite score gets nan throughout."""
    import numpy as np

    if not row.trials:
        raise ActexpError(f"row {row.label!r} has no trials: there is no budget curve to draw; tune it first")
    scores = trial_scores(row)
    budgets = budget_grid(len(scores)) if budgets is None else _checked_budgets(budgets, len(scores))
    pruned = sum(1 for t in row.trials if t.state == PRUNED and has_score(t))
    failed = sum(1 for t in row.trials if not has_score(t))
    if not all(map(math.isfinite, scores)):
        nan = (math.nan,) * len(budgets)
        return BudgetCurve(row.label, budgets, nan, nan, nan, len(scores), pruned, failed, row.higher_is_better, confidence, resamples)
    expected = expected_best(scores, budgets, row.higher_is_better)
    draws = bootstrap_expected_best(scores, budgets, row.higher_is_better, resamples, row_seed(row.label, seed))
    half = _t_quantile(confidence, len(scores) - 1) * draws.std(axis=0, ddof=1)
    return BudgetCurve(row.label, budgets, expected, tuple(map(float, np.asarray(expected) - half)), tuple(map(float, np.asarray(expected) + half)),
                       len(scores), pruned, failed, row.higher_is_better, confidence, resamples)


def _t_quantile(confidence: float, df: int) -> float:
    """Student's t quantile of a two-sided `confidence` interval; nan without degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(1 - (1 - confidence) / 2, df)) if df >= 1 else math.nan


def row_seed(label: str, seed: int = SEED) -> list[int]:
    """The bootstrap's seed for a row: `seed` and a hash of the label, so that two rows draw
    independent resamples and a row draws the same ones whichever rows stand beside it."""
    digest = hashlib.sha256(str(label).encode("utf-8", "surrogatepass")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


# ----------------------------------------------------------------------------- which row leads at which budget


@dataclass(frozen=True)
class Lead:
    """A run of budgets over which one row has the best expected best figure, and its margin over
    the runner-up at one budget of the run (`at`) with its interval (± t bootstrap standard errors)."""

    label: str
    first: int  # budgets first..last (trials per row)
    last: int
    at: int  # the last (or only) lead's margin is at its last budget, the first's at its first, others' in the middle (geometric)
    runner_up: str
    margin: float  # how much better than the runner-up at `at` (positive: better, in the metric's units)
    low: float
    high: float


@dataclass(frozen=True)
class Leadership:
    leads: tuple[Lead, ...]  # in budget order; one lead when the leader never changes
    budget: int  # the largest budget every row reached: the comparison covers 1..budget
    confidence: float = CONFIDENCE

    @property
    def changes(self) -> tuple[int, ...]:
        """The budgets at which a new row takes the lead."""
        return tuple(lead.first for lead in self.leads[1:])


def leaders(rows: list[TunedRow]) -> tuple[tuple[int, str], ...]:
    """(budget, label of the row that leads there) for each budget from 1 to the least trial count
    of the rows: the row with the best expected best figure. A tie keeps the row that led before (at
    budget 1, the first row in order). Rows without trials or without a finite score never lead."""
    import numpy as np

    direction = check_rows(rows)
    candidates = [r for r in rows if r.trials and any(map(math.isfinite, trial_scores(r)))]
    if not candidates:
        return ()
    budget = min(len(r.trials) for r in candidates)
    sign = 1.0 if direction else -1.0
    curves = np.array([expected_best(trial_scores(r), range(1, budget + 1), direction) for r in candidates]) * sign
    result, current = [], None
    for column, n in enumerate(range(1, budget + 1)):
        values = curves[:, column]
        best = values.max()
        tied = [j for j, v in enumerate(values) if v >= best - 1e-12 * max(1.0, abs(best))]
        current = current if current in tied else tied[0]
        result.append((n, candidates[current].label))
    return tuple(result)


def leader_changes(rows: list[TunedRow]) -> tuple[int, ...]:
    """The budgets (trials per row) at which the row with the best expected best figure changes;
    empty when one row leads at every budget both reached (or fewer than two rows have scores)."""
    led = leaders(rows)
    return tuple(n for (n, label), (_, before) in zip(led[1:], led) if label != before)


def leadership(rows: list[TunedRow], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> Leadership:
    """Which row leads over which budgets, each lead with its margin over the runner-up and that
    margin's interval: ± t standard errors of the difference of the two rows' bootstrap estimates
    (each row resampled on its own, as for its band), t with the smaller row's N - 1 degrees of
    freedom."""
    led = leaders(rows)
    if not led:
        return Leadership((), 0, confidence)
    by_label = {r.label: r for r in rows}
    budget = led[-1][0]
    segments = []
    for n, label in led:
        if segments and segments[-1][0] == label:
            segments[-1][2] = n
        else:
            segments.append([label, n, n])
    leads = []
    sign = 1.0 if check_rows(rows) else -1.0
    for index, (label, first, last) in enumerate(segments):
        at = last if index == len(segments) - 1 else first if index == 0 else round(math.sqrt(first * last))
        others = [r for r in rows if r.label != label and r.trials and any(map(math.isfinite, trial_scores(r)))]
        if not others:
            leads.append(Lead(label, first, last, at, "", math.nan, math.nan, math.nan))
            continue
        point = {r.label: expected_best(trial_scores(r), [at], r.higher_is_better)[0] * sign for r in [by_label[label], *others]}
        runner_up = max(others, key=lambda r: point[r.label])
        draws = [bootstrap_expected_best(trial_scores(r), [at], r.higher_is_better, resamples, row_seed(r.label, seed))[:, 0] * sign
                 for r in (by_label[label], runner_up)]
        margin = point[label] - point[runner_up.label]
        half = _t_quantile(confidence, min(len(by_label[label].trials), len(runner_up.trials)) - 1) * float((draws[0] - draws[1]).std(ddof=1))
        leads.append(Lead(label, first, last, at, runner_up.label, margin, margin - half, margin + half))
    return Leadership(tuple(leads), budget, confidence)


def budget_sentence(result: Leadership) -> str:
    """What the text under a tuned comparison says about the budget: that the row with the best
    expected best changes with it (who leads over which budgets), or that one row leads at every
    budget; each lead with its margin and interval, and, where no margin is separated from 0, that
    the ranking is not shown. Empty for fewer than two rows with scores. Labels are as given:
    escape them for the terminal where they are printed."""
    leads = [lead for lead in result.leads if lead.runner_up]
    if not leads:
        return ""
    level = f"{result.confidence:.0%}"

    def margin(lead: Lead) -> str:
        ahead = f"at {_trials(lead.at)} ahead of {lead.runner_up} by {_number(lead.margin)}"
        if math.isnan(lead.low):
            return f"{ahead}, no interval from one trial: not separated"
        separated = "" if lead.low > 0 else ": not separated"
        return f"{ahead}, {level} interval {_number(lead.low)} to {_number(lead.high)}{separated}"

    if len(leads) == 1:
        (lead,) = leads
        return (f"Expected best of n trials: {lead.label} leads at every budget from 1 to {_trials(result.budget)} "
                f"({margin(lead)}).")
    parts = []
    for index, lead in enumerate(leads):
        span = (f"up to {_trials(lead.last)}" if index == 0 else
                f"from {lead.first} to {_trials(lead.last)}")
        parts.append(f"{lead.label} leads {span} ({margin(lead)})")
    separated = sum(1 for lead in leads if lead.low > 0)
    # "The winner depends on the budget" is a claim: it needs two leads that each stand clear of their runner-up.
    opening = "The winner depends on the budget" if separated >= 2 else "The leading row changes with the budget"
    unshown = "" if separated else " No lead is separated from its runner-up: the budget moves the estimates, no ranking is shown."
    return f"{opening} (expected best of n trials per row): {'; '.join(parts)}.{unshown}"


def _trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def _number(x: float) -> str:
    return f"{x:+.4f}" if x == 0 or abs(x) >= 5e-5 else f"{x:+.1e}"


def check_rows(rows: list[TunedRow]) -> bool:
    """Rows compared or drawn together: one metric direction (returned; True where no rows) and a
    label each of their own (labels name the rows in sentences, legends and bootstrap seeds)."""
    directions = {r.higher_is_better for r in rows}
    if len(directions) > 1:
        raise ValueError("rows to compare must share their metric's direction (higher_is_better)")
    labels = [r.label for r in rows]
    if len(set(labels)) < len(labels):
        raise ValueError(f"rows to compare need distinct labels; repeated: {sorted({x for x in labels if labels.count(x) > 1})}")
    return directions.pop() if directions else True


# ----------------------------------------------------------------------------- the edge flag


def on_edge(row: TunedRow, share: float = EDGE) -> dict[str, str]:
    """The tuned keys whose chosen value lies at an edge of its range: "low" or "high". The edge is
    the outermost `share` (5%) of the range's width on each side, measured in log10 where the range
    is log: with lr in 1e-4..1, values above 0.63 are at the high edge. A best trial there says that
    the optimum may lie beyond the range (widen it); inside, the search bracketed it. Values outside
    the range count as on its edge; keys without a numeric chosen value or a numeric range
    (`numeric_range`) are left out."""
    flags = {}
    for key, spec in row.ranges.items():
        value, span = row.chosen.get(key), numeric_range(spec)
        if span is None or not is_number(value) or not math.isfinite(value) or (span[2] and value <= 0):
            continue
        low, high, log = span
        if log:
            low, high, value = math.log10(low), math.log10(high), math.log10(value)
        position = (value - low) / (high - low)
        if position <= share:
            flags[key] = "low"
        elif position >= 1 - share:
            flags[key] = "high"
    return flags
