"""Learning curves (`actexp plot`): one line per config, the mean across its seeds with a band.

Plotting is split in two: `curve_series` computes what is drawn (testable as data) and
`draw_curves` hands it to matplotlib, imported only there.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from .errors import ActexpError, ConfigError
from .report import METRIC_NAMES, PLOT_METRICS, RunData, collect_runs, group_runs
from .runs import FAILURES
from .varying import key_labels


@dataclass(frozen=True)
class Series:
    """One line of the plot: a group's per-epoch mean, with the min and max over its runs."""

    label: str
    values: tuple[str, ...]
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int  # runs in the group that have the metric


def curve_series(runs: list[RunData], metric: str = "val_acc", group_by: list[str] | None = None) -> tuple[list[str], list[Series]]:
    """The lines to draw, and the column labels of the keys that name them. At each epoch a line is
    the mean over the group's runs that reached that epoch; runs that failed or diverged are left
    out (their last epochs before the failure are not a learning curve to average)."""
    if metric not in PLOT_METRICS:
        raise ConfigError(f"--metric {metric}: choose one of {', '.join(PLOT_METRICS)}")
    keys, groups = group_runs(runs, group_by)
    series = []
    for values, members in groups:
        by_epoch: dict[int, list[float]] = {}
        # Epoch 0 (the untrained model, recorded for diagnostics) is a reference point, not part of the curve.
        curves = [[r for r in run.history if r["epoch"] >= 1 and metric in r] for run in members if run.status not in FAILURES]
        for curve in curves:
            for record in curve:
                by_epoch.setdefault(record["epoch"], []).append(record[metric])
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        series.append(Series(
            ", ".join(values) or runs[0].config.get("name", "run"),
            values,
            tuple(epochs),
            tuple(statistics.fmean(by_epoch[e]) for e in epochs),
            tuple(min(by_epoch[e]) for e in epochs),
            tuple(max(by_epoch[e]) for e in epochs),
            sum(1 for c in curves if c),
        ))
    labels = key_labels(keys)
    return [labels[k] for k in keys], series


def draw_curves(series: list[Series], metric: str, out: str | Path, legend_title: str = "", title: str = ""):
    """Draw the lines (mean) with a shaded min–max band where a line averages several runs,
    save a PNG, and return the matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state; works headless
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 5), dpi=100)
    ax = figure.subplots()
    for s, (color, style) in zip(series, _styles(series)):
        ax.plot(s.epochs, s.mean, color=color, linestyle=style, linewidth=1.6, label=s.label)
        if s.n > 1:
            ax.fill_between(s.epochs, s.low, s.high, color=color, alpha=0.12, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(METRIC_NAMES[metric])
    ax.grid(alpha=0.3)
    runs_per_line = sorted({s.n for s in series})
    if runs_per_line and runs_per_line[-1] > 1:
        counts = "/".join(map(str, runs_per_line))
        title = f"{title}  (mean of {counts} runs, band: min–max)".strip()
    ax.set_title(title, fontsize="medium")
    if series:
        ax.legend(title=legend_title or None, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, bbox_inches="tight")
    return figure


def _styles(series: list[Series]) -> list[tuple]:
    """Color by the first key's value and line style by the second, when that stays readable;
    otherwise a color per line."""
    from matplotlib import colormaps

    dashes = ["-", "--", ":", "-."]
    first = list(dict.fromkeys(s.values[:1] for s in series))
    second = list(dict.fromkeys(s.values[1:2] for s in series))
    two_keys = all(len(s.values) <= 2 for s in series) and len(first) <= 10 and len(second) <= len(dashes)
    if two_keys:
        palette = colormaps["tab10"].colors
        return [(palette[first.index(s.values[:1])], dashes[second.index(s.values[1:2])]) for s in series]
    palette = colormaps["tab20"].colors
    return [(palette[i % len(palette)], "-") for i in range(len(series))]


def plot(paths, out: str | Path, metric: str = "val_acc", group_by: list[str] | None = None, title: str = "") -> tuple[Path, list[Series]]:
    """Learning curves of the runs at `paths`, one line per group, saved as a PNG at `out`."""
    labels, series = curve_series(collect_runs(paths), metric, group_by)
    if not series:
        raise ActexpError(f"no {metric} recorded in these runs yet")
    draw_curves(series, metric, out, ", ".join(labels), title)
    return Path(out), series
