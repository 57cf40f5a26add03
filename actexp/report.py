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
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


from .errors import ActexpError, ConfigError
from .runs import DamagedFile, RunFolderWarning, find_runs, read_config, read_history, read_ledger, read_summary, run_status, skip_damaged, write_text_atomic
from .varying import SEED_KEY, describe, flatten, key_labels, varying_keys

HISTORY_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")
METRICS = HISTORY_METRICS + ("test_acc", "test_loss")
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
    """One run folder as read from disk."""

    dir: Path
    config: dict  # the resolved config, as plain data
    summary: dict
    history: list[dict]

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")


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
                    status_only.append(RunData(path / e["name"], e["config"], {"status": e["status"], "name": e["name"], "error": e.get("error")}, []))
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
    summary = read_summary(folder)
    return RunData(folder, read_config(folder), {**summary, "status": run_status(folder, summary)}, read_history(folder))


def best_epoch_value(history: list[dict], metric: str) -> tuple[float, int | None]:
    """The best value of a per-epoch metric (lowest loss, highest accuracy) and its epoch, over
    trained epochs (epoch 0, the untrained model, is a reference point, not a result)."""
    records = [r for r in history if r["epoch"] >= 1 and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not records:
        return math.nan, None
    pick = min if metric.endswith("loss") else max
    best = pick(records, key=lambda r: r[metric])
    return best[metric], best["epoch"]


def run_metric(run: RunData, metric: str) -> tuple[float, int | None]:
    """A completed run's value of `metric` and the epoch it comes from; nan for other runs
    (a diverged run's last finite epochs are not a result to rank)."""
    if run.status != "completed":
        return math.nan, None
    if metric in HISTORY_METRICS:
        return best_epoch_value(run.history, metric)
    return run.summary.get(metric, math.nan), run.summary.get("selected_epoch")


# ----------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation (n - 1); nan when n < 2
    n: int


def mean_std(values) -> Stat:
    """Mean and sample std of the finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return Stat(math.nan, math.nan, 0)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Stat(statistics.fmean(values), std, len(values))


def group_runs(runs: list[RunData], group_by: list[str] | None = None) -> tuple[list[str], list[tuple[tuple[str, ...], list[RunData]]]]:
    """Split runs into groups with equal values of the group keys (default: every key that varies
    except the seed, so runs that differ only by seed form one group). Returns the keys and the
    groups as (value labels, runs), in first-seen order."""
    configs = [r.config for r in runs]
    keys = varying_keys(configs)
    keys = _resolve_keys(group_by, keys, configs) if group_by else [k for k in keys if k != SEED_KEY]
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run, labels in zip(runs, describe(configs, keys)):
        groups.setdefault(tuple(labels[k] for k in keys), []).append(run)
    return keys, list(groups.items())


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
    metric: Stat
    best_epoch: Stat
    test_acc: Stat
    wall_seconds: Stat


@dataclass(frozen=True)
class Comparison:
    metric: str
    keys: tuple[str, ...]  # the dotted group keys
    labels: tuple[str, ...]  # their column labels
    rows: tuple[Row, ...]  # best first; rows without a completed run last


def compare(paths, metric: str = "val_acc", group_by: list[str] | None = None, out_dir: str | Path | None = None) -> Comparison:
    """Rank the runs at `paths` by `metric` (best over epochs for val_/train_ metrics, of the
    selected weights for test_ ones), one row per group of runs that differ only by seed.
    With `out_dir`, write summary.csv and summary.md there."""
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric}: choose one of {', '.join(METRICS)}")
    comparison = summarize(collect_runs(paths), metric, group_by)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(out_dir) / "summary.csv", comparison_csv(comparison))
        write_text_atomic(Path(out_dir) / "summary.md", comparison_markdown(comparison))
    return comparison


def summarize(runs: list[RunData], metric: str = "val_acc", group_by: list[str] | None = None) -> Comparison:
    keys, groups = group_runs(runs, group_by)
    rows = []
    for values, members in groups:
        scored = [run_metric(r, metric) for r in members]
        completed = [r for r in members if r.status == "completed"]
        rows.append(Row(
            values,
            tuple(r.dir for r in members),
            dict(Counter(r.status for r in members)),
            mean_std(v for v, _ in scored),
            mean_std(e for _, e in scored if e is not None),
            mean_std(r.summary.get("test_acc") for r in completed),
            mean_std(r.summary.get("wall_seconds") for r in completed),
        ))
    sign = 1 if metric.endswith("loss") else -1
    rows.sort(key=lambda row: (row.metric.n == 0, sign * row.metric.mean if row.metric.n else 0))
    labels = key_labels(keys)
    return Comparison(metric, tuple(keys), tuple(labels[k] for k in keys), tuple(rows))


def format_stat(stat: Stat, digits: int = 4) -> str:
    if stat.n == 0:
        return "–"
    if stat.n == 1:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _mean(stat: Stat, digits: int) -> str:
    return f"{stat.mean:.{digits}f}" if stat.n else "–"


def comparison_cells(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """The table as text cells (header, rows): what the terminal, summary.md and the README show."""
    show_status = any(set(row.statuses) != {"completed"} for row in c.rows)
    header = ["rank", *c.labels, "n", c.metric, "best epoch", "test acc", "wall s"] + (["runs"] if show_status else [])
    rows = []
    for rank, row in enumerate(c.rows, 1):
        cells = [str(rank), *row.values, str(row.metric.n), format_stat(row.metric),
                 _mean(row.best_epoch, 0 if row.best_epoch.n == 1 else 1), format_stat(row.test_acc), _mean(row.wall_seconds, 1)]
        if show_status:
            cells.append(", ".join(f"{n} {status}" for status, n in row.statuses.items()))
        rows.append(cells)
    return header, rows


def comparison_markdown(c: Comparison) -> str:
    header, rows = comparison_cells(c)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, cells in enumerate(rows):
        if i == 0 and c.rows[0].metric.n:
            cells = [f"**{cell}**" for cell in cells]  # the best row
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_csv(c: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", *c.keys, "n", f"{c.metric}_mean", f"{c.metric}_std", "best_epoch_mean",
                     "test_acc_mean", "test_acc_std", "wall_seconds_mean", "statuses", "runs"])
    for rank, row in enumerate(c.rows, 1):
        writer.writerow([
            rank, *row.values, row.metric.n, _number(row.metric.mean), _number(row.metric.std), _number(row.best_epoch.mean),
            _number(row.test_acc.mean), _number(row.test_acc.std), _number(row.wall_seconds.mean),
            ";".join(f"{status}={n}" for status, n in row.statuses.items()), ";".join(map(str, row.runs)),
        ])
    return out.getvalue()


def _number(x: float) -> str:
    return "" if math.isnan(x) else repr(round(x, 6))


# ----------------------------------------------------------------------------- learning curves


def write_report(sweep_dir: Path) -> tuple[Comparison, Path | None]:
    """What a finished sweep leaves next to its ledger: summary.csv, summary.md, curves.png."""
    comparison = compare([sweep_dir], out_dir=sweep_dir)
    try:
        from .plots import plot  # plots reads runs through this module

        curves, _ = plot([sweep_dir], sweep_dir / "curves.png", title=sweep_dir.name)
    except (ImportError, ActexpError):  # matplotlib is optional (`pip install actexp[plot]`); no curves yet
        curves = None
    return comparison, curves


# ----------------------------------------------------------------------------- runs


def list_runs(root: str | Path = "runs") -> list[dict]:
    """Every run folder below `root`, newest first: name, status, best val acc, test acc, start."""
    root = Path(root)

    def row(folder: Path) -> dict:
        summary = read_summary(folder)
        return {
            "name": summary.get("name", folder.parent.name),
            "status": run_status(folder, summary),
            "best_val_acc": best_epoch_value(read_history(folder), "val_acc")[0],
            "test_acc": summary.get("test_acc", math.nan),
            "started": str(summary.get("started", "")),
            "dir": folder,
            "folder": folder.relative_to(root).as_posix() if folder != Path(root) else ".",
        }

    return sorted(skip_damaged(row, find_runs(root)), key=lambda r: r["started"], reverse=True)
