"""Per-layer diagnostics over epochs, as a figure: one line per layer, one panel per run.

`diagnostic_series` reads one run's lines and `diagnostic_panels` lays the panels out (what would be
drawn, as data: tests check it); `plot_diagnostics` draws it. A layer has one colour in every panel
and the figure one legend. The figure is a bare matplotlib Figure rendered by Agg: no pyplot, so the
caller's backend is left alone, and matplotlib is imported only when a figure is asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .diagnostics import METRICS, OUTPUT_LAYER, layer_names, layer_values
from .config import _did_you_mean
from .errors import ActexpError, ConfigError
from .plots import epoch_ticks, line_styles, save_figure
from .runs import read_history, read_summary

# Gradient figures span orders of magnitude (a vanishing gradient is 1e-7 of the output layer's).
LOG_METRICS = {"grad_norm", "grad_ratio", "update_ratio"}
PANELS_PER_ROW = 3


@dataclass(frozen=True)
class DiagLine:
    label: str  # "layer 1", ..., "output"
    color: str
    style: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class DiagPanel:
    title: str  # the run's name and folder
    lines: tuple[DiagLine, ...]
    log: bool  # a log y-axis


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


def diagnostic_panels(run_dirs: Sequence[str | Path], metric: str = "grad_norm", sharey: bool = False) -> list[DiagPanel]:
    """A panel per run, a line per layer; colours follow the layer, the same in every panel. Gradient
    figures get a log axis where some value is positive (all-zero gradients, as in a dead net, stay
    linear); with `sharey` every panel gets the same scale, so that they compare."""
    if not run_dirs:
        raise ActexpError("plot: no runs given")
    runs = [(Path(run), diagnostic_series(run, metric)) for run in run_dirs]
    layers = list(dict.fromkeys(label for _, series in runs for label in series))
    styles = dict(zip(layers, line_styles(len(layers))))

    def positive(series) -> bool:
        return any(v > 0 for _, values in series.values() for v in values)

    any_positive = any(positive(series) for _, series in runs)
    panels = []
    for run, series in runs:
        summary = read_summary(run)
        lines = tuple(DiagLine(label, *styles[label], tuple(epochs), tuple(values)) for label, (epochs, values) in series.items())
        log = metric in LOG_METRICS and (any_positive if sharey else positive(series))
        panels.append(DiagPanel(f"{summary.get('name', run.parent.name)} ({run.name})", lines, log))
    return panels


def _log_ticks(ax, values) -> None:
    """Tick labels a person reads on a log axis, as plain numbers (0.5, 1, 2; 1e-05 where that is
    shorter): at every digit where the values span less than a decade (matplotlib labels one or two
    ticks there, as 6×10⁻¹), at 1, 2 and 5 up to three decades, at each power of ten beyond."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    positive = [v for v in values if v > 0 and math.isfinite(v)]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    subs = tuple(range(1, 10)) if decades < 1 else (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12) if decades > 3 else NullLocator())
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_diagnostics(run_dirs: Sequence[str | Path], metric: str = "grad_norm", out: str | Path | None = None, sharey: bool = False):
    """One panel per run, one line per layer of `metric` over epochs (log scale for gradient
    figures); with `sharey` one y scale for all panels. Saved to `out` (format from its suffix:
    .png, .pdf, .svg) when given. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    panels = diagnostic_panels(run_dirs, metric, sharey)
    columns = min(len(panels), PANELS_PER_ROW)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5 * columns + 1, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel()
    legend = {}
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        for line in panel.lines:
            drawn, = ax.plot(line.epochs, line.values, color=line.color, linestyle=line.style,
                             marker="o" if len(line.epochs) <= 20 else None, markersize=3, label=line.label)
            legend.setdefault(line.label, drawn)
        if panel.log:
            ax.set_yscale("log")
            _log_ticks(ax, [v for line in panel.lines for v in line.values])
        ax.set_title(panel.title, fontsize=10)
        epoch_ticks(ax, [e for line in panel.lines for e in line.epochs])
        ax.set_xlabel("epoch (0: before training)")
        if i % columns == 0 or not sharey:
            ax.set_ylabel(metric)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    # Below the panels: beside them, a long run name in a panel's title would run under the legend.
    figure.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(len(legend), 10), fontsize=8, frameon=False)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_figure(figure, out, dpi=120)
    return figure
