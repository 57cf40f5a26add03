"""Per-layer diagnostics over epochs, as a figure: one line per layer, one panel per run.

`diagnostic_series` reads what would be drawn (tests check it); `plot_diagnostics` draws it. The
figure is a bare matplotlib Figure rendered by Agg: no pyplot, so the caller's backend is left alone,
and matplotlib is imported only when a figure is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from .diagnostics import METRICS, OUTPUT_LAYER, layer_names, layer_values
from .config import _did_you_mean
from .errors import ActexpError, ConfigError
from .runs import read_history, read_summary

# Gradient figures span orders of magnitude (a vanishing gradient is 1e-7 of the output layer's).
LOG_METRICS = {"grad_norm", "grad_ratio", "update_ratio"}
PANELS_PER_ROW = 3


def diagnostic_series(run_dir: str | Path, metric: str) -> dict[str, tuple[list[int], list[float]]]:
    """{"layer 1": (epochs, values), ..., "output": ...} for one run; layers without the metric are left out."""
    if metric not in METRICS:
        raise ConfigError(f"--diag: unknown diagnostic {metric!r}{_did_you_mean(metric, METRICS)}; choose one of {', '.join(METRICS)}")
    records = read_history(run_dir)
    layers = layer_names(records)
    if not layers:
        raise ActexpError(f"{run_dir}: no per-layer diagnostics in this run (it was trained with train.diagnostics: false)")
    series = {}
    for layer in layers:
        points = layer_values(records, layer, metric)
        if points:
            label = OUTPUT_LAYER if layer == OUTPUT_LAYER else f"layer {layer}"
            series[label] = ([e for e, _ in points], [v for _, v in points])
    return series


def plot_diagnostics(run_dirs: Sequence[str | Path], metric: str = "grad_norm", out: str | Path | None = None):
    """One panel per run, one line per layer of `metric` over epochs (log scale for gradient
    figures); saved to `out` (format from its suffix) when given. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ActexpError("plot: no runs given")
    columns = min(len(run_dirs), PANELS_PER_ROW)
    rows = math.ceil(len(run_dirs) / columns)
    figure = Figure(figsize=(5 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, run in zip(axes, run_dirs):
        series = diagnostic_series(run, metric)
        for label, (epochs, values) in series.items():
            ax.plot(epochs, values, marker="o" if len(epochs) <= 20 else None, markersize=3, label=label)
        if metric in LOG_METRICS and any(v > 0 for _, values in series.values() for v in values):
            ax.set_yscale("log")  # (all-zero gradients, as in a dead net, stay on a linear axis)
        summary = read_summary(run)
        ax.set_title(f"{summary.get('name', run.parent.name)} ({run.name})", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0: before training)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    for ax in axes[len(run_dirs) :]:
        ax.set_visible(False)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=120)
    return figure
