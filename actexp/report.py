"""Results of many runs: the comparison table (`actexp compare`), learning curves (`actexp plot`)
and the run listing (`actexp runs`).

Everything here reads run folders only (config.yaml, summary.json, metrics.jsonl), so it works on
any runs, swept or not, and on hand-made folders. Plotting is split in two: `curve_series` computes
what is drawn (testable as data) and `draw_curves` hands it to matplotlib, imported only there.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path


from . import stats
from .errors import ActexpError, ConfigError
from .runs import DamagedFile, RunFolderWarning, find_runs, read_config, read_history, read_ledger, read_summary, run_status, skip_damaged, write_text_atomic
from .terminal import printable
from .varying import SEED_KEY, UNNAMED_KEYS, describe, flatten, key_labels, value_labels, varying_keys

HISTORY_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
METRICS = HISTORY_METRICS + ("test_acc", "test_loss")
RESULT_FIGURES = ("val_loss", "val_acc", "train_loss", "train_acc", "test_loss", "test_acc")  # runs.csv's order
DEFAULT_METRIC = "val_acc"
PLOT_METRICS = HISTORY_METRICS + ("lr",)
METRIC_NAMES = {
    "val_acc": "validation accuracy",
    "val_loss": "validation loss",
    "train_acc": "training accuracy",
    "train_loss": "training loss",
    "test_acc": "test accuracy",
    "test_loss": "test loss",
    "lr": "learning rate",
}


@dataclass(frozen=True)
class RunData:
    """One run folder as read from disk, or a sweep's run that never had one (`ledger_only`: its
    config and status from the ledger, no figures)."""

    dir: Path
    config: dict  # the resolved config, as plain data
    summary: dict
    history: list[dict]
    ledger_only: bool = False

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def seed(self) -> int | None:
        """train.seed (None where a hand-made config does not say): what pairs runs across rows."""
        seed = flatten(self.config).get(SEED_KEY)
        return seed if type(seed) is int else None


def collect_runs(paths) -> list[RunData]:
    """The runs at each path: a sweep folder gives the runs its ledger lists (not failed attempts
    or runs dropped from the sweep), any other folder every run folder below it. A ledger's run with
    no run folder (it failed before it had one, or has not started) is a status-only RunData: its
    config and status from the ledger, no history, counted but not averaged."""
    folders, status_only = [], []
    for path in map(Path, paths):
        if not path.exists():
            raise ActexpError(f"{path}: no such folder")
        ledger = _ledger_or_nothing(path) if path.is_dir() else {}
        if ledger:
            for e in ledger["runs"]:
                if e.get("folder") and (path / e["folder"] / "summary.json").exists():
                    folders.append(path / e["folder"])
                elif isinstance(e.get("config"), dict):  # ledgers from before configs were kept in them: nothing to group it by
                    status_only.append(RunData(path / e["name"], e["config"], {"status": e["status"], "name": e["name"], "error": e.get("error")}, [], True))
        else:
            folders += find_runs(path)
    runs = skip_damaged(read_run, dict.fromkeys(folders)) + status_only
    if not runs:
        raise ActexpError(f"no runs found in {', '.join(map(str, paths))} (a run folder holds summary.json)")
    return runs


def _ledger_or_nothing(path: Path) -> dict:
    """A sweep folder's ledger; a damaged one is skipped with a warning, and the runs below the
    folder are read without it."""
    try:
        return read_ledger(path)
    except DamagedFile as e:
        warnings.warn(f"{e}; reading every run folder below {path} instead", RunFolderWarning, stacklevel=3)
        return {}


def read_run(folder: Path) -> RunData:
    """One run folder; DamagedFile if one of its files is."""
    summary = read_summary(folder)  # it checks that the result figures are numbers
    return RunData(folder, read_config(folder), {**summary, "status": run_status(folder, summary)}, read_history(folder))


# ----------------------------------------------------------------------------- a run's result


def run_result(run: RunData) -> dict | None:
    """A completed run's result: ONE epoch, its selected epoch (the one whose weights were evaluated
    on the test set), and that epoch's figures: {selected_epoch, val_loss, val_acc, train_loss,
    train_acc, test_loss, test_acc}, nan for a figure the run lacks. None for a run that did not
    complete (a diverged run's last finite epochs are not a result to rank).

    The figures are summary.json's; a run written before summary.json carried them (or made by hand)
    gets them from its metrics.jsonl record of the selected epoch, and one that does not name its
    selected epoch is taken at its last trained epoch. Never the best epoch over the run: the
    validation figure that ranks a run and the test figure beside it come from the same weights."""
    if run.status != "completed":
        return None
    trained = [r for r in run.history if r["epoch"] >= 1]  # epoch 0 is the untrained model
    epoch = run.summary.get("selected_epoch")
    if epoch is None and trained:
        epoch = max(r["epoch"] for r in trained)
    record = next((r for r in trained if r["epoch"] == epoch), {})
    result = {"selected_epoch": epoch}
    for key in METRICS:
        value = run.summary.get(key) if run.summary.get(key) is not None else record.get(key)
        result[key] = float(value) if _is_figure(value) else math.nan
    return result


def _is_figure(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


# ----------------------------------------------------------------------------- grouping


SWEEP_KEY = "sweep"  # a grouping key that is no config key: the folder a run's sweep lives in


def group_runs(runs: list[RunData], group_by: list[str] | None = None) -> tuple[list[str], list[tuple[tuple[str, ...], list[RunData]]]]:
    """Split runs into groups with equal values of the group keys (default: every key that varies
    except the seed and the bookkeeping keys, which say where or how a run was recorded, not what it
    trained (varying.UNNAMED_KEYS); so runs that differ only by seed form one group). Returns the
    keys and the groups as (value labels, runs), in first-seen order.

    Runs of different sweep folders are never one group: where the runs come from several, the
    folder is the first key, `sweep`. Runs on different datasets are no comparison at all: a
    ConfigError (check_one_dataset)."""
    check_one_dataset(runs)
    sweeps = [_sweep_folder(run).name for run in runs]
    several = len(set(sweeps)) > 1
    configs = [{**r.config, SWEEP_KEY: sweep} if several else r.config for r, sweep in zip(runs, sweeps)]
    keys = varying_keys(configs)
    if group_by:
        keys = _resolve_keys(group_by, keys, configs)
    else:
        keys = [k for k in keys if k not in (SEED_KEY, SWEEP_KEY, *UNNAMED_KEYS)]
    if several and SWEEP_KEY not in keys:
        keys = [SWEEP_KEY, *keys]
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run, labels in zip(runs, describe(configs, keys)):
        groups.setdefault(tuple(labels[k] for k in keys), []).append(run)
    return keys, list(groups.items())


def check_one_dataset(runs: list[RunData]) -> None:
    """A ConfigError, in one line, when the runs trained on different datasets (xor beside mnist):
    their figures do not compare, so they are never ranked, averaged or drawn together."""
    datasets: dict[str, list[RunData]] = {}
    for run in runs:
        dataset = _mapping(run.config.get("data")).get("dataset", "mnist")  # the config's default
        datasets.setdefault(str(dataset.get("name") if isinstance(dataset, dict) else dataset), []).append(run)
    if len(datasets) > 1:
        def where(members: list[RunData]) -> str:
            folders = list(dict.fromkeys(str(_sweep_folder(run)) for run in members))
            return f"{len(members)} run{'s' * (len(members) != 1)} in {', '.join(folders[:3])}{', …' if len(folders) > 3 else ''}"

        counts = "; ".join(f"{name}: {where(members)}" for name, members in datasets.items())
        raise ConfigError(f"these runs trained on different datasets ({counts}); their figures do not compare: give the folders of one dataset")


def _sweep_folder(run: RunData) -> Path:
    """The folder holding the run's folder of runs (a sweep's folder, or the runs root of a config
    trained by itself); a ledger's run without a folder sits in its sweep's folder by name."""
    return run.dir.parent if run.ledger_only else run.dir.parent.parent


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _resolve_keys(wanted: list[str], varying: list[str], configs: list[dict]) -> list[str]:
    """Accept dotted keys (model.activation) or their short labels (activation)."""
    known = list(dict.fromkeys(k for c in configs for k in flatten(c)))
    short = {label: key for key, label in key_labels(known).items()}
    resolved = []
    for name in wanted:
        key = name if name in known else short.get(name)
        if key is None:
            raise ConfigError(f"--group-by {name}: not a config key of these runs; keys that vary: {', '.join(varying) or 'none'}")
        resolved.append(key)
    return resolved


# ----------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Row:
    values: tuple[str, ...]  # one label per group key
    runs: tuple[Path, ...]
    statuses: dict  # status -> count
    metric: stats.Summary  # of the completed runs' selected-epoch figures
    sample: stats.Sample  # those figures and their runs' seeds, for the tests
    selected_epoch: stats.Summary
    test_acc: stats.Summary
    wall_seconds: stats.Summary
    verdict: stats.Verdict | None = None  # against the best row; None for it and for rows of n < 2
    repeats: int = 0  # completed runs left out: each repeats an earlier one's config and seed
    edges: tuple = ()  # a tuned sweep's (key, "low" | "high"): its value chosen on that edge of the key's range

    @property
    def name(self) -> str:
        return " + ".join(self.values) or "all runs"


@dataclass(frozen=True)
class Comparison:
    metric: str
    keys: tuple[str, ...]  # the dotted group keys
    labels: tuple[str, ...]  # their column labels
    rows: tuple[Row, ...]  # best first; rows without a completed run last
    seeds_needed: stats.SeedsNeeded | None = None  # seeds per row to separate min_diff at the spread of the best two rows
    alpha: float = stats.ALPHA
    min_diff: float | None = None  # the smallest difference that matters, in the metric's units (None: not given)
    pooled: tuple[str, ...] = ()  # the dotted keys that vary inside rows (--group-by): rows pool configs, not only seeds
    protocol: str | None = None  # how the rows' runs were chosen, said above the table (e.g. each row at its tuned lr)
    tuning: tuple[str, ...] = ()  # a tuned sweep's notes (tuning.tuned_report): values chosen on an edge, the budget


MIN_DIFF_ACCURACY = 0.005  # half a point: the default smallest difference that matters for an accuracy


def default_min_diff(metric: str) -> float | None:
    """The --min-diff a metric gets when none is given: half a point for an accuracy (a figure in
    [0, 1]); none for a loss, whose scale depends on the task, so the seeds-needed line asks for one."""
    return MIN_DIFF_ACCURACY if metric.endswith("_acc") else None


def compare(paths, metric: str = DEFAULT_METRIC, group_by: list[str] | None = None, out_dir: str | Path | None = None,
            min_diff: float | None = None, protocol: str | None = None) -> Comparison:
    """Rank the runs at `paths` by `metric` of each run's selected epoch, one row per group of runs
    that differ only by seed, each row tested against the best (stats.against_best). `min_diff`: the
    smallest difference that matters, in the metric's units (default: default_min_diff), for the
    seeds-needed line; `protocol`: a line saying how the runs were chosen, shown above the table.
    With `out_dir`, write the files `summary_files` names there."""
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric}: choose one of {', '.join(METRICS)}")
    if min_diff is not None and not (isinstance(min_diff, (int, float)) and math.isfinite(min_diff) and min_diff > 0):
        raise ConfigError(f"--min-diff {min_diff}: give the smallest difference that matters, a positive number in {metric}'s units (e.g. --min-diff 0.005: half a point of accuracy)")
    runs = collect_runs(paths)
    tuned = _tuned_report(paths)
    comparison = summarize(runs, metric, group_by, min_diff if min_diff is not None else default_min_diff(metric),
                           protocol if protocol is not None or tuned is None else tuned.protocol)
    if tuned is not None:
        comparison = _with_edges(comparison, tuned, Path(paths[0]))
    if out_dir is not None:
        table_csv, table_md, per_run = summary_files(out_dir, metric)
        write_text_atomic(table_csv, comparison_csv(comparison))
        write_text_atomic(table_md, comparison_markdown(comparison))
        write_text_atomic(per_run, runs_csv(runs, out_dir))
    return comparison


def _tuned_report(paths):
    """A tuned sweep folder's report (tuning.tuned_report) when `paths` is that one folder."""
    if len(paths) != 1 or not Path(paths[0]).is_dir():
        return None
    from .tuning import tuned_report

    ledger = _ledger_or_nothing(Path(paths[0])) if (Path(paths[0]) / "sweep.json").exists() else {}
    return tuned_report(Path(paths[0]), ledger) if ledger else None


def _with_edges(c: Comparison, tuned, sweep_dir: Path) -> Comparison:
    """The tuned report's notes, and each tuned value chosen on an edge marked in its cell."""
    rows = []
    for row in c.rows:
        folders = {Path(folder).relative_to(sweep_dir).as_posix() for folder in row.runs if Path(folder).is_relative_to(sweep_dir)}
        flags = next((tuned.edges[f] for f in sorted(folders) if f in tuned.edges), {})
        rows.append(replace(row, edges=tuple(flags.items())))
    return replace(c, rows=tuple(rows), tuning=tuned.notes)


def summary_files(out_dir: str | Path, metric: str = DEFAULT_METRIC) -> tuple[Path, Path, Path]:
    """What compare writes into `out_dir`: the table as CSV and markdown (summary.csv and summary.md
    for the default metric, summary_<metric>.* for another, so that ranking a sweep by test_acc does
    not overwrite its val_acc table), and runs.csv, one row per run (the same for every metric)."""
    stem = "summary" if metric == DEFAULT_METRIC else f"summary_{metric}"
    return Path(out_dir) / f"{stem}.csv", Path(out_dir) / f"{stem}.md", Path(out_dir) / "runs.csv"


def _identity(run: RunData) -> str:
    """What a run trained, its seed included: two runs with the same are one observation (training
    is deterministic), and counting both would halve a row's spread and fake its certainty."""
    import json

    if run.seed is None:  # a hand-made folder that does not say what it trained: a run of its own
        return str(run.dir)
    return json.dumps(flatten(run.config), sort_keys=True, default=str)


def summarize(runs: list[RunData], metric: str = DEFAULT_METRIC, group_by: list[str] | None = None, min_diff: float | None = None,
              protocol: str | None = None) -> Comparison:
    keys, groups = group_runs(runs, group_by)
    rows = []
    for values, members in groups:
        results = [(run, run_result(run)) for run in members]
        completed = [(run, result) for run, result in results if result is not None]
        distinct = list({_identity(run): (run, result) for run, result in reversed(completed)}.values())[::-1]
        repeats, completed = len(completed) - len(distinct), distinct
        scored = [(run, result[metric]) for run, result in completed if math.isfinite(result[metric])]
        rows.append(Row(
            values,
            tuple(r.dir for r in members),
            dict(Counter(r.status for r in members)),
            stats.summarize(value for _, value in scored),
            stats.Sample(tuple(value for _, value in scored), tuple(run.seed for run, _ in scored)),
            stats.summarize(result["selected_epoch"] for _, result in completed),
            stats.summarize(result["test_acc"] for _, result in completed),
            stats.summarize(run.summary.get("wall_seconds") for run, _ in completed),
            repeats=repeats,
        ))
    sign = 1 if metric.endswith("loss") else -1
    rows.sort(key=lambda row: (row.metric.n == 0, sign * row.metric.mean if row.metric.n else 0))
    verdicts = stats.against_best([row.sample for row in rows])
    rows = [replace(row, verdict=verdict) for row, verdict in zip(rows, verdicts)]
    pooled = tuple(_pooled_keys(runs, groups))
    runner_up = next((row for row in rows[1:] if row.verdict is not None), None)
    seeds = None
    if runner_up is not None and min_diff is not None and not pooled:  # more seeds do not shrink the differences between pooled configs
        seeds = stats.separation(rows[0].sample, runner_up.sample, min_diff, runner_up.verdict.pairs)
    labels = key_labels(keys)
    return Comparison(metric, tuple(keys), tuple(labels[k] for k in keys), tuple(rows), seeds, min_diff=min_diff, pooled=pooled, protocol=protocol)


def _pooled_keys(runs: list[RunData], groups: list[tuple[tuple[str, ...], list[RunData]]]) -> list[str]:
    """The config keys whose value varies inside a row (what --group-by left out), bookkeeping and
    the seed aside: where there are any, a row's runs are several configs, not one config's seeds."""
    candidates = [k for k in varying_keys([run.config for run in runs]) if k not in (SEED_KEY, SWEEP_KEY, *UNNAMED_KEYS)]
    labels = [describe([run.config for run in members], candidates) for _, members in groups]
    return [k for k in candidates if any(len({run_labels[k] for run_labels in group}) > 1 for group in labels)]


# ----------------------------------------------------------------------------- compare: text


def figure(x: float, digits: int = 4) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def mean_sd(s: stats.Summary, digits: int = 4) -> str:
    """mean ± sample sd (the spread of single runs); the mean alone for one run."""
    return f"{figure(s.mean, digits)} ± {s.sd:.{digits}f}" if s.n > 1 else figure(s.mean, digits)


def interval(s: stats.Summary, digits: int = 4) -> str:
    """[low, high], the confidence interval of the mean; empty for fewer than two runs."""
    return f"[{s.low:.{digits}f}, {s.high:.{digits}f}]" if s.n > 1 else ""


def p_value(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def comparison_title(c: Comparison) -> str:
    """The line above the table: what ranks the rows and what the figures are; where rows pool
    several configs (--group-by), that their intervals are not seed noise only; then the protocol."""
    title = f"ranked by {c.metric} (each run's selected epoch)"
    if c.pooled:
        title += f", each row pooling configs that differ in {', '.join(map(printable, key_labels(list(c.pooled)).values()))}"
    if any(row.metric.n > 1 for row in c.rows):
        title += ": mean ± sd, [95% CI of the mean" + (" over configs and seeds]" if c.pooled else "]")
        if any(row.verdict for row in c.rows):
            title += "; Δ to best [95% simultaneous]"
    return title + (f"\n{printable(c.protocol)}" if c.protocol else "")


def comparison_cells(c: Comparison, stacked: bool = False) -> tuple[list[str], list[list[str]]]:
    """The table as text cells (header, rows): what the terminal, summary.md and the README show.
    The metric is `mean ± sd [low, high]`: the sd is the spread of single runs, [low, high] the
    confidence interval of the mean. `vs best` is the verdict and its adjusted p; `Δ to best` the
    difference to the best row and its simultaneous interval (after `vs best`, so that a narrow
    terminal's second table, which repeats the labels, takes it). Intervals and p-values follow on
    the same line, or, `stacked` (for narrow terminals), on a second line of the cell, with shorter
    headers and a line per status in `runs`."""
    show_status = any(set(row.statuses) != {"completed"} for row in c.rows)
    show_verdicts = any(row.verdict for row in c.rows)  # none where no row has two runs
    header = ["#" if stacked else "rank", *map(printable, c.labels), "n", c.metric]
    header += (["vs\nbest", "Δ to\nbest"] if stacked else ["vs best", "Δ to best"]) if show_verdicts else []
    header += (["epoch", "test\nacc", "wall\ns"] if stacked else ["epoch", "test acc", "wall s"]) + (["runs"] if show_status else [])
    rows = []
    for rank, row in enumerate(c.rows, 1):
        edges = dict(row.edges)
        values = [f"{value} ({edges[key]} edge)" if key in edges else value for key, value in zip(c.keys, row.values)]
        cells = [str(rank), *map(printable, values), str(row.metric.n), _join(mean_sd(row.metric), interval(row.metric), stacked)]
        if show_verdicts:
            mark, p = _mark(c, rank - 1)
            v = row.verdict
            cells.append(_join(mark, p if stacked or not p else f"({p})", stacked))
            cells.append(_join(_signed(v.difference), f"[{_signed(v.low)}, {_signed(v.high)}]", stacked) if v else "")
        cells += [figure(row.selected_epoch.mean, 0 if row.selected_epoch.n == 1 else 1), figure(row.test_acc.mean), figure(row.wall_seconds.mean, 1)]
        if show_status:
            cells.append(("\n" if stacked else ", ").join(printable(f"{n} {status}") for status, n in row.statuses.items()))
        rows.append(cells)
    return header, rows


def _signed(x: float, digits: int = 4) -> str:
    return f"{x:+.{digits}f}"


WORSE, NOT_SEPARATED = "worse", "not separated"  # the verdict words: what was shown, and that nothing was


def _mark(c: Comparison, i: int) -> tuple[str, str]:
    """A row against the best: 'best', 'worse' (separated from the best) or 'not separated' (no
    difference shown, which is not no difference), and the adjusted p."""
    row = c.rows[i]
    if i == 0:
        return ("best" if row.metric.n else ""), ""
    if row.verdict is None:
        return "", ""
    return (WORSE if row.verdict.separated else NOT_SEPARATED), p_value(row.verdict.p_adjusted)


def _join(first: str, second: str, stacked: bool) -> str:
    return first + (("\n" if stacked else " ") + second if second else "")


def comparison_notes(c: Comparison) -> list[str]:
    """What the table means, in plain words, for under it (the protocol is the title's): what a row
    pools, which rows are separated from the best and which are not (and by which procedure), how
    many seeds would separate the smallest difference that matters, and what the intervals are not."""
    notes = list(c.tuning)
    ranked = [row for row in c.rows if row.metric.n]
    if c.pooled:
        notes.append(f"Each row pools configs that differ in {', '.join(c.pooled)} (--group-by): n counts runs, and the intervals and "
                     "tests mix the differences between those configs with seed noise; they are not seed noise only.")
    single = [row for row in ranked if row.metric.n == 1]
    if single:
        if len(single) == len(ranked):
            notes.append("One run per row: no interval, and no test can tell these differences from seed noise. "
                         "Train each config with several seeds (actexp sweep … --seeds 5) to compare them.")
        elif ranked[0].metric.n == 1:
            others = f", and {len(single) - 1} other {'row is' if len(single) == 2 else 'rows are'} one run too" if len(single) > 1 else ""
            notes.append(f"The best row ({ranked[0].name}) is one run: nothing can be tested against it{others}. Add seeds (--seeds N).")
        else:
            notes.append(f"{_count(len(single), 'row')} with one run: no interval, not tested. Add seeds (--seeds N).")
    tested = [row for row in c.rows if row.verdict is not None]
    if tested:
        best, pairs = c.rows[0], tested[0].verdict.pairs
        worse = [row.name for row in tested if row.verdict.separated]
        same = [row.name for row in tested if not row.verdict.separated]
        how = (f"{_test_words(c)}; the best was picked from these runs, so every pair of the {len(tested) + 1} rows tested is in the family "
               f"({_count(pairs, 'pair')}), Holm-corrected, family-wise α = {c.alpha:g}")
        if not worse:
            notes.append(f"None of the {_count(len(tested), 'row')} tested is separated from the best ({best.name}) ({how}).")
        elif not same:
            notes.append(f"All {_count(len(tested), 'row')} tested are worse than the best ({best.name}) ({how}).")
        else:
            notes.append(f"{len(worse)} of the {len(tested)} rows tested {'is' if len(worse) == 1 else 'are'} worse than the best ({best.name}): "
                         f"{_names(worse)}; the other {len(same)} {'is' if len(same) == 1 else 'are'} not separated from it: {_names(same)} ({how}).")
        notes.append(f"Δ to best: the row's mean minus the best's, with a {stats.CONFIDENCE:.0%} interval simultaneous over the "
                     f"{_count(pairs, 'pair')} (Bonferroni's, valid for every pair at once).")
        touching = [row.name for row in tested if row.verdict.separated and row.verdict.low <= 0 <= row.verdict.high]
        if touching:
            one = len(touching) == 1
            names = touching[0] if one else ", ".join(touching[:-1]) + " and " + touching[-1]
            notes.append(f"{names} {'is' if one else 'are'} separated although {'its interval touches' if one else 'their intervals touch'} 0: "
                         "after its first step, Holm's step-down tests at less strict levels than the Bonferroni interval uses.")
    notes += _seeds_notes(c)
    repeated = sum(row.repeats for row in c.rows)
    if repeated:
        notes.append(f"{_count(repeated, 'run')} repeated an earlier run's config and seed and {'was' if repeated == 1 else 'were'} "
                     "counted once: the same seed trains the same weights, so n counts distinct seeds (use --seeds for more).")
    if any(row.metric.n > 1 for row in c.rows):
        over = "over the row's runs (configs pooled: not seed noise only)" if c.pooled else "over seeds (seed noise only)"
        notes.append(f"[low, high]: {stats.CONFIDENCE:.0%} confidence interval of the mean {over}, not the spread of single runs (± sd); "
                     f"the best row's is optimistic, since that row was picked for its high mean from these same runs. "
                     f"Not separated: no difference was shown, which is not the same as no difference.")
    return notes


def _seeds_notes(c: Comparison) -> list[str]:
    """The seeds-needed line: seeds per row to separate the smallest difference that matters, as a
    range over the spread's own 95% interval."""
    if not any(row.verdict for row in c.rows):
        return []
    if c.pooled:
        return ["Seeds needed: not computed for rows that pool configs (more seeds do not shrink the differences between the configs pooled)."]
    if c.min_diff is None:
        return [f"Seeds needed: give --min-diff, the smallest difference in {c.metric} that matters to you (in its own units), "
                "and compare says how many seeds per row would separate it."]
    s = c.seeds_needed
    if s is None:
        return []
    runner_up = next(row for row in c.rows[1:] if row.verdict is not None)

    def seeds(n: int | None) -> str:
        return str(n) if n is not None else f"more than {s.max_seeds}"

    span = seeds(s.n_low) if s.n_low == s.n_high else f"{seeds(s.n_low)}–{seeds(s.n_high)}"
    spreads = []
    for spread in s.spreads:
        what = f"sd {_small(spread.sd)} of their per-seed differences" if spread.paired else f"pooled sd {_small(spread.sd)}"
        test = f"the paired test compare runs from {stats.PAIR_FROM_SEEDS} shared seeds" if spread.paired else "Welch's test"
        spreads.append(f"{what} from {_count(spread.df, 'degree')} of freedom (range {_small(spread.low)}–{_small(spread.high)}), for {test}")
    return [f"Seeds needed to separate a difference of {_small(s.delta)} (--min-diff): {span} per row over the 95% range of the spread "
            f"({seeds(s.n)} at the spread now); {stats.POWER:.0%} power, each pair at α = {c.alpha:g}/{s.pairs} (this table's pairs), "
            f"noncentral t. Spread of {c.rows[0].name} and {runner_up.name}: {'; '.join(spreads)}."]


def _names(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _test_words(c: Comparison) -> str:
    tested = [row for row in c.rows if row.verdict is not None]
    tests = {row.verdict.test for row in tested}
    if tests == {stats.PAIRED}:
        return f"{stats.PAIRED} on seeds {_seed_words(c.rows[0].sample.seeds)}"
    if tests == {stats.WELCH}:
        seed_sets = {frozenset(row.sample.seeds) for row in [c.rows[0], *tested]}
        if len(seed_sets) == 1 and None not in next(iter(seed_sets)):
            return f"{stats.WELCH} (the rows ran the same seeds, but pairing by seed pays only from {stats.PAIR_FROM_SEEDS} of them)"
        return stats.WELCH
    return f"{stats.PAIRED} where rows ran the same {stats.PAIR_FROM_SEEDS} seeds or more, {stats.WELCH} otherwise"


def _seed_words(seeds) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _small(x: float) -> str:
    """A difference or spread: four decimals like the table, unless that would print 0.0000."""
    return f"{x:.4f}" if x == 0 or abs(x) >= 5e-5 else f"{x:.1e}"


def comparison_markdown(c: Comparison) -> str:
    header, rows = comparison_cells(c)
    title = "".join(f"{line}\n\n" for line in comparison_title(c).splitlines())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, cells in enumerate(rows):
        if i == 0 and c.rows[0].metric.n:
            cells = [f"**{cell}**" if cell else cell for cell in cells]  # the best row
        lines.append("| " + " | ".join(cells) + " |")
    notes = comparison_notes(c)
    return title + "\n".join(lines) + "\n" + ("\n" + "".join(f"- {note}\n" for note in notes) if notes else "")


def comparison_csv(c: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    m = c.metric
    writer.writerow(["rank", *c.keys, "n", f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high",
                     "diff_vs_best", "diff_low", "diff_high", "p_vs_best", "p_adjusted", "separated_from_best", "test_vs_best",
                     "selected_epoch_mean", "test_acc_mean", "test_acc_std", "wall_seconds_mean", "statuses", "runs"])
    for rank, row in enumerate(c.rows, 1):
        v = row.verdict
        writer.writerow([
            rank, *row.values, row.metric.n, _number(row.metric.mean), _number(row.metric.sd), _number(row.metric.low), _number(row.metric.high),
            *((_number(v.difference), _number(v.low), _number(v.high), f"{v.p:.6g}", f"{v.p_adjusted:.6g}", str(v.separated).lower(), v.test) if v else [""] * 7),
            _number(row.selected_epoch.mean), _number(row.test_acc.mean), _number(row.test_acc.sd), _number(row.wall_seconds.mean),
            ";".join(f"{status}={n}" for status, n in row.statuses.items()), ";".join(map(str, row.runs)),
        ])
    return out.getvalue()


def _number(x: float) -> str:
    return "" if math.isnan(x) else repr(round(x, 6))


# ----------------------------------------------------------------------------- learning curves


# ----------------------------------------------------------------------------- runs


RUN_STATUSES = ("completed", "diverged", "pruned", "failed", "interrupted", "running", "pending")


def list_runs(root: str | Path = "runs", sweep: str | None = None, status: str | None = None, where: list[str] = ()) -> list[dict]:
    """Every run folder below `root` that passes the filters (read_runs), newest first: name, the
    sweep folder it belongs to (`sweep`, relative to `root`; "." for runs trained one by one),
    status, the selected epoch and its val acc and test acc (completed runs), start, overrides.
    Without `where` no config.yaml is read (a damaged one does not hide its run from the list)."""
    root = Path(root)
    rows = []
    for run in read_runs(root, sweep, status, where, configs=bool(where)):
        result = run_result(run) or {}
        rows.append({
            "name": run.summary.get("name", run.dir.parent.name),
            "sweep": sweep_of(run.dir, root),
            "status": run.status,
            "selected_epoch": result.get("selected_epoch"),
            "val_acc": result.get("val_acc", math.nan),
            "test_acc": result.get("test_acc", math.nan),
            "started": str(run.summary.get("started", "")),
            "overrides": run.summary.get("overrides", []),  # read_summary checked: KEY=VALUE strings
            "dir": run.dir,
            "folder": _relative(run.dir, root),
        })
    return rows


def read_runs(root: str | Path = "runs", sweep: str | None = None, status: str | None = None, where: list[str] = (),
              configs: bool = True) -> list[RunData]:
    """Every run folder below `root` with its config, newest first (damaged ones skipped), keeping
    only the runs of the sweep folder `sweep` (its path below `root` or its name), of `status`, and
    whose config matches every `KEY=VALUE` of `where` (a dotted key or its last part; the value as
    the tables label it: `tanh`, `0.001`, `256x256`). A filter that names nothing these runs have
    is a ConfigError saying what they have. `configs` False: each RunData without its config (none
    read; `where` needs them)."""
    root = Path(root)
    if status is not None and status not in RUN_STATUSES:
        raise ConfigError(f"--status {status}: choose one of {', '.join(RUN_STATUSES)}")
    conditions = [_condition(item) for item in where]
    runs = skip_damaged(read_run if configs or conditions else _read_run_without_config, find_runs(root))
    if sweep is not None:
        sweeps = list(dict.fromkeys(sweep_of(run.dir, root) for run in runs))
        wanted = sweep.strip("/")
        runs = [run for run in runs if sweep_of(run.dir, root) == wanted or Path(sweep_of(run.dir, root)).name == wanted]
        if not runs:
            named = ", ".join(s for s in sweeps if s != ".") or "none"
            raise ConfigError(f"--sweep {sweep}: no sweep folder of that name below {root}; sweeps there: {named}")
    for key, value in conditions:
        flats = [flatten(run.config) for run in runs]
        known = list(dict.fromkeys(k for flat in flats for k in flat))
        if runs and not any(_matching_keys(key, known)):
            from .config import _did_you_mean

            short = list(key_labels(known).values())
            raise ConfigError(f"--where {key}={value}: {key!r} is not a config key of these runs{_did_you_mean(key, known + short)}")
        runs = [run for run, flat in zip(runs, flats) if any(_matches(flat[k], value) for k in _matching_keys(key, flat))]
    if status is not None:
        runs = [run for run in runs if run.status == status]
    return sorted(runs, key=lambda run: str(run.summary.get("started", "")), reverse=True)


def _read_run_without_config(folder: Path) -> RunData:
    summary = read_summary(folder)
    return RunData(folder, {}, {**summary, "status": run_status(folder, summary)}, read_history(folder))


def sweep_of(folder: Path, root: str | Path) -> str:
    """The folder that holds a run's folder of runs, relative to `root`: a sweep's runs sit in
    SWEEP/NAME/RUN_ID, a config trained by itself in NAME/RUN_ID directly below the root (".")."""
    return _relative(Path(folder).parent.parent, root) if Path(folder).parent != Path(root) else "."


def _condition(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--where {item}: expected KEY=VALUE, e.g. --where activation=tanh")
    return key.strip(), value.strip()


def _matching_keys(key: str, keys) -> list[str]:
    return [k for k in keys if k == key or k.rsplit(".", 1)[-1] == key]


def _matches(value, wanted: str) -> bool:
    """A config value against --where's text: as the tables label it (`tanh`, `256x256`), or as the
    YAML it reads as (`1e-3` is 0.001)."""
    if value_labels([value])[0] == wanted:
        return True
    import yaml

    try:
        parsed = yaml.safe_load(wanted)
    except yaml.YAMLError:
        return False
    if isinstance(parsed, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            parsed = float(parsed)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            return False
    return parsed == value and type(parsed) is not bool or parsed is value


RUN_COLUMNS = ("status", "selected_epoch", *RESULT_FIGURES, "wall_seconds")


def runs_csv(runs: list[RunData], root: str | Path = ".") -> str:
    """One row per run, tidy (one column per variable, ready for pandas): its folder (relative to
    `root`), name, every config key that varies across these runs (dotted; value labels as in the
    tables), the seed, status, the selected epoch and its figures, wall time. Figures at full
    precision; empty where a run has none (it did not complete, or never had a folder). Text read
    from the runs' files has its control characters escaped (the CSV is printed by `runs --csv`)."""
    configs = [run.config for run in runs]
    keys = [k for k in varying_keys(configs) if k != SEED_KEY]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["folder", "name", *keys, "seed", *RUN_COLUMNS])
    for run, labels in zip(runs, describe(configs, keys)):
        result = run_result(run) or {}
        figures = [result.get(k, math.nan) for k in RESULT_FIGURES] + [run.summary.get("wall_seconds", math.nan)]
        writer.writerow([
            "" if run.ledger_only else printable(_relative(run.dir, root)), printable(run.summary.get("name") or run.config.get("name") or run.dir.parent.name),
            *(printable(labels[k]) for k in keys), "" if run.seed is None else run.seed, printable(run.status),
            "" if result.get("selected_epoch") is None else result["selected_epoch"],
            *("" if x is None or math.isnan(x) else repr(float(x)) for x in figures),
        ])
    return out.getvalue()


def _relative(folder: Path, root: str | Path) -> str:
    try:
        return Path(folder).relative_to(root).as_posix() or "."
    except ValueError:  # not below root (compare -o elsewhere): the path as given
        return str(folder)
