"""Learning curves (`actexp plot`): one line per config, the mean across its seeds with a ±1 sd band.

Plotting is split in two. `curve_series` averages the runs' per-epoch records into lines, and
`layout_curves` decides everything else that is drawn (panels, labels, colours, legend order,
titles) as frozen data that tests check without pixels; `draw_curves` hands that to matplotlib,
imported only there (no pyplot: no GUI backend, no global state; works headless).

The rules:
- Lines: one per group of runs that differ only by seed (or per value of the --group-by keys).
- Panels: with two grouping keys, one panel per value of one of them and a line per value of the
  other; the key with more values gives the lines (on a tie, the first in config order), and
  `panel_by` names the panel key instead. Otherwise, or when a panel would hold a single line (runs
  that are not a grid), one panel. Panels share their y-axis.
- Colours: twenty hues (tab10's solid, then ten more, dashed), given to the lines' labels in
  first-seen order, so `relu` has one colour in every panel; past twenty labels the hues come
  round again dotted, then dash-dotted.
- Legend: best first, ranked as `actexp compare --metric METRIC` ranks (the mean over seeds of each
  run's best epoch); lines without a completed run last; lr has no better, it keeps config order.
- Labels: the values of the line keys (`relu`), or, when those are unreadable (more than two keys
  or a label over 30 characters, as for runs trained separately from different configs), the
  runs' name.
- Epoch 0, the untrained model (recorded with diagnostics, for val_loss and val_acc), is not drawn:
  its chance-level figure would stretch the y-axis until the trained epochs are a few pixels
  apart. The axes start at epoch 1, and each panel says what epoch 0 was (`Panel.untrained`).
- Title: the sweep's name (the folder's, where one folder is plotted) and what the lines average.

The other pictures of one run are here too: its curves.png, its confusion matrix (`actexp eval -o`)
and its decision regions (`actexp plot --boundary`). Every figure is written atomically (save_figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import ActexpError, ConfigError
from . import stats
from .report import METRIC_NAMES, PLOT_METRICS, Comparison, RunData, collect_runs, compare, group_runs, run_result
from .runs import FAILURES, read_history, read_summary
from .varying import key_labels, varying_keys

# matplotlib's tab10 (its default colour cycle), then ten more hues, the most distinct from tab10
# and from each other first: a sweep of 13 activations gets 13 colours, none repeated. The extra
# ten are drawn dashed too (DASHES[1]), so that a gold line is not taken for tab10's olive.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#000000", "#000080", "#ff00ff", "#008080", "#800000", "#e6b800", "#556b2f", "#fa8072", "#00c957", "#7b68ee")
BASE_HUES = 10
DASHES = ("-", "--", ":", "-.")
MAX_LABEL = 30  # a longer line label gives way to the run name
PANELS_PER_ROW = 3
BAND = "±1 sd"
# The epoch-0 note sits above a panel's top right corner, outside the data: no corner inside is
# free of curves for every run (a chance-level accuracy wanders through all of them).
UNTRAINED_NOTE = {"x": 1.0, "y": 1.01, "ha": "right", "va": "bottom", "fontsize": "x-small", "color": "#555555"}


@dataclass(frozen=True)
class Series:
    """One group's curve: at each epoch the mean over its runs, and a band of ±1 sample standard
    deviation (no width where only one run reached the epoch)."""

    label: str  # the group's values, joined
    values: tuple[str, ...]  # one label per grouping key
    name: str  # its runs' name
    runs: tuple[Path, ...]
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int  # runs in the group that have the metric
    score: stats.Summary  # the group's `compare` value of the metric (n = 0: none to rank by)


@dataclass(frozen=True)
class Line:
    label: str
    color: str
    style: str  # a matplotlib line style: "-", "--", ":", "-."
    series: Series


@dataclass(frozen=True)
class Panel:
    title: str  # "init: he_normal"; "" for the only panel
    lines: tuple[Line, ...]  # legend order: best first
    untrained: str = ""  # what epoch 0 (not drawn) was: "epoch 0: 0.05–0.11"


@dataclass(frozen=True)
class Curves:
    """Everything `draw_curves` draws."""

    metric: str
    title: str
    xlabel: str
    ylabel: str
    legend_title: str
    panels: tuple[Panel, ...]  # sharing one y-axis

    @property
    def lines(self) -> list[Line]:
        return [line for panel in self.panels for line in panel.lines]


def curve_series(runs: list[RunData], metric: str = "val_acc", group_by: list[str] | None = None) -> tuple[list[str], list[Series]]:
    """The lines' data, and the dotted keys that name them (each Series' values line up with them).
    At each epoch a line is the mean over the group's runs that reached that epoch; runs that failed
    or diverged are left out (their last epochs before the failure are not a learning curve to
    average). Epoch 0 is part of the line where the runs recorded the metric for it."""
    if metric not in PLOT_METRICS:
        raise ConfigError(f"--metric {metric}: choose one of {', '.join(PLOT_METRICS)}")
    keys, groups = group_runs(runs, group_by)
    series = []
    for values, members in groups:
        curves = [[r for r in run.history if _finite(r.get(metric))] for run in members if run.status not in FAILURES]
        by_epoch: dict[int, list[float]] = {}
        for curve in curves:
            for record in curve:
                by_epoch.setdefault(record["epoch"], []).append(record[metric])
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        per_epoch = [stats.summarize(by_epoch[e]) for e in epochs]
        spread = [0.0 if math.isnan(s.sd) else s.sd for s in per_epoch]
        names = list(dict.fromkeys(map(_run_name, members)))
        series.append(Series(
            ", ".join(values) or names[0],
            values,
            names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}",
            tuple(r.dir for r in members),
            tuple(epochs),
            tuple(s.mean for s in per_epoch),
            tuple(s.mean - d for s, d in zip(per_epoch, spread)),
            tuple(s.mean + d for s, d in zip(per_epoch, spread)),
            sum(1 for c in curves if c),
            stats.summarize([] if metric == "lr" else [result[metric] for result in map(run_result, members) if result]),
        ))
    return keys, series


def layout_curves(keys: list[str], series: list[Series], metric: str, panel_by: str | None = None, title: str = "") -> Curves:
    """Panels, labels, colours and legend order for `series` (see the module's rules); `panel_by`
    is one of the dotted `keys`."""
    labels = key_labels(keys)
    panel = keys.index(panel_by) if panel_by else _panel_key(series) if len(keys) == 2 else None
    line_keys = [i for i in range(len(keys)) if i != panel]
    names = [", ".join(s.values[i] for i in line_keys) for s in series]
    by_name = not line_keys or len(line_keys) > 2 or any(len(name) > MAX_LABEL for name in names)
    if by_name:
        names = _unique_names(series)
    identities = list(dict.fromkeys(names))
    styles = dict(zip(identities, line_styles(len(identities))))
    lines = [Line(name, *styles[name], s) for name, s in zip(names, series)]
    panel_values = list(dict.fromkeys(s.values[panel] for s in series)) if panel is not None else [None]
    panels = []
    for value in panel_values:
        members = [line for line in lines if value is None or line.series.values[panel] == value]
        panels.append(Panel("" if value is None else f"{labels[keys[panel]]}: {value}", _ranked(members, metric), _untrained(members)))
    panels = tuple(panels)
    runs_per_line = sorted({s.n for s in series})
    if runs_per_line and runs_per_line[-1] > 1:
        title = f"{title}  (mean of {'/'.join(map(str, runs_per_line))} runs, band: {BAND})".strip()
    return Curves(
        metric,
        title,
        "epoch",
        METRIC_NAMES[metric],
        "run" if by_name else ", ".join(labels[keys[i]] for i in line_keys),
        panels,
    )


def _untrained(lines: list[Line]) -> str:
    """What the lines were at epoch 0, in words: one figure, or the range over the lines."""
    values = [line.series.mean[0] for line in lines if line.series.epochs[0] == 0 and len(line.series.epochs) > 1]
    if not values:
        return ""
    low, high = min(values), max(values)
    return f"epoch 0: {low:.3g}" + (f"–{high:.3g}" if f"{low:.3g}" != f"{high:.3g}" else "")


def trained_part(epochs, *columns) -> tuple[tuple, ...]:
    """epochs and the columns beside them from epoch 1 on (all of them where nothing else was
    recorded): what a learning-curve figure draws."""
    start = 1 if epochs and epochs[0] == 0 and len(epochs) > 1 else 0
    return tuple(tuple(c[start:]) for c in (epochs, *columns))


def line_styles(n: int) -> list[tuple[str, str]]:
    """(colour, line style) for n lines, all different: tab10's hues solid, the ten more dashed;
    past twenty the hues come round again, dotted, then dash-dotted, ..."""
    return [(PALETTE[i % len(PALETTE)], DASHES[(i // BASE_HUES) % len(DASHES)]) for i in range(n)]


def _panel_key(series: list[Series]) -> int | None:
    """Of two keys, the one with fewer values makes the panels (the other the lines); on a tie the
    second (the first in config order gives the lines). None when a panel would get one line."""
    first, second = (len({s.values[i] for s in series}) for i in (0, 1))
    panel = 0 if first < second else 1
    per_panel = [sum(1 for s in series if s.values[panel] == value) for value in {s.values[panel] for s in series}]
    return panel if min(per_panel) > 1 else None


def _ranked(lines: list[Line], metric: str) -> tuple[Line, ...]:
    """Best first, as `compare` ranks; lines with nothing to rank by (no completed run) last. The
    learning rate has no better: config order."""
    if metric == "lr":
        return tuple(lines)
    sign = 1 if metric.endswith("loss") else -1
    return tuple(sorted(lines, key=lambda line: (line.series.score.n == 0, sign * line.series.score.mean if line.series.score.n else 0)))


def _unique_names(series: list[Series]) -> list[str]:
    """The groups' run names; two groups of one name (runs trained from different configs under
    one name) are told apart by their first run folder."""
    names = [s.name for s in series]
    return [f"{s.name} ({s.runs[0].name})" if names.count(s.name) > 1 else s.name for s in series]


def _run_name(run: RunData) -> str:
    return str(run.summary.get("name") or run.config.get("name") or run.dir.parent.name)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def describe_curves(runs: list[RunData], metric: str = "val_acc", group_by: list[str] | None = None,
                    panel_by: str | None = None, title: str = "") -> Curves:
    """What `plot` draws for `runs`. `panel_by` (a dotted key or its short label) must vary between
    the runs; a key the lines are not grouped by (seed, say) is added to the grouping."""
    keys, series = curve_series(runs, metric, group_by)
    panel_key = None
    if panel_by:
        configs = [r.config for r in runs]
        candidates = keys + [k for k in varying_keys(configs) if k not in keys]
        short = {label: key for key, label in key_labels(candidates).items()}
        panel_key = panel_by if panel_by in candidates else short.get(panel_by)
        if panel_key is None:
            choices = ", ".join(key_labels(candidates).values()) or "none"
            raise ConfigError(f"--panel-by {panel_by}: not a key that varies between these runs; keys that vary: {choices}")
        if panel_key not in keys:
            keys, series = curve_series(runs, metric, [*keys, panel_key])
    if not series:
        raise ActexpError(f"no {metric} recorded in these runs yet")
    return layout_curves(keys, series, metric, panel_key, title)


def draw_curves(curves: Curves, out: str | Path | None = None):
    """Draw `curves`: a panel per Panel on one y-axis, each line its group's mean with a shaded band
    where it averages several runs. Saved to `out` when given (the format follows the suffix: .png,
    .pdf, .svg, ...). Returns the matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state; works headless

    columns = min(len(curves.panels), PANELS_PER_ROW)
    rows = math.ceil(len(curves.panels) / columns)
    single = len(curves.panels) == 1
    figure = Figure(figsize=(9, 5) if single else (4.8 * columns, 3.9 * rows), dpi=100, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for i, (ax, panel) in enumerate(zip(axes, curves.panels)):
        for line in panel.lines:
            s = line.series
            epochs, mean, low, high = trained_part(s.epochs, s.mean, s.low, s.high)
            ax.plot(epochs, mean, color=line.color, linestyle=line.style, linewidth=1.6, label=line.label,
                    marker="o" if len(epochs) == 1 else None, markersize=4)
            if s.n > 1:
                ax.fill_between(epochs, low, high, color=line.color, alpha=0.15, linewidth=0)
        if panel.untrained:
            ax.text(s=panel.untrained, transform=ax.transAxes, **UNTRAINED_NOTE)
        ax.set_title(panel.title if not single else curves.title, fontsize="medium")
        ax.set_xlabel(curves.xlabel)
        epoch_ticks(ax, [e for line in panel.lines for e in trained_part(line.series.epochs)[0]])
        if i % columns == 0:
            ax.set_ylabel(curves.ylabel)
        ax.grid(alpha=0.3)
        if single:
            ax.legend(title=curves.legend_title or None, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        else:
            ax.legend(title=curves.legend_title or None, fontsize="x-small", title_fontsize="small", loc="best", framealpha=0.8)
    for ax in axes[len(curves.panels):]:
        ax.set_visible(False)
    if not single and curves.title:
        figure.suptitle(curves.title, fontsize="medium")
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_figure(figure, out, bbox_inches="tight")
    return figure


def plot(paths, out: str | Path, metric: str = "val_acc", group_by: list[str] | None = None, title: str = "",
         panel_by: str | None = None) -> tuple[Path, Curves]:
    """Learning curves of the runs at `paths`, saved at `out` (PNG, PDF, SVG, ... by its suffix),
    titled `title` (default: the folder's name, where one folder is given: the sweep's).
    Returns the path and what was drawn."""
    paths = list(paths)
    if not title and len(paths) == 1:
        title = Path(paths[0]).resolve().name
    curves = describe_curves(collect_runs(paths), metric, group_by, panel_by, title)
    draw_curves(curves, out)
    return Path(out), curves


# ----------------------------------------------------------------------------- one run's curves.png

RUN_PANELS = (("loss", "train_loss", "val_loss"), ("accuracy", "train_acc", "val_acc"))


def epoch_ticks(ax, epochs, nbins: int | str = "auto") -> None:
    """Whole epochs on the x axis; a lone epoch gets its own tick (an integer locator finds no
    integer in the margin around one point, and falls back to fractions)."""
    from matplotlib.ticker import MaxNLocator

    distinct = sorted(set(epochs))
    if len(distinct) == 1:
        ax.set_xticks(distinct)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=True))


def draw_run_curves(records: list[dict], out: str | Path | None = None, title: str = "", selected: int | None = None):
    """One run's curves.png (as Ultralytics' results.png): loss and accuracy, train and val, over
    its trained epochs (from 1), the selected epoch marked; the epoch-0 record (the untrained model,
    val only) is written above each panel's top right corner. Written atomically to `out` (PNG) when given;
    returns the matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state; works headless
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 3.4), dpi=100)
    axes = figure.subplots(1, 2)
    trained = [r for r in records if r["epoch"] >= 1] or records
    untrained = next((r for r in records if r["epoch"] == 0), None) if trained is not records else None
    for ax, (name, *keys) in zip(axes, RUN_PANELS):
        for key, color in zip(keys, PALETTE):
            points = [(r["epoch"], r[key]) for r in trained if _finite(r.get(key))]
            if points:
                ax.plot(*zip(*points), color=color, linewidth=1.6, label=key.split("_")[0], marker="o" if len(points) == 1 else None)
        if selected is not None:
            ax.axvline(selected, color="#7f7f7f", linestyle=":", linewidth=1, label=f"selected (epoch {selected})")
        # Epoch 0 (chance level) is said, not drawn: drawn, it stretches the axis until the
        # train/val gap of the trained epochs is a few pixels.
        said = [f"{key.split('_')[0]} {untrained[key]:.3g}" for key in keys if untrained is not None and _finite(untrained.get(key))]
        if said:
            ax.text(s=f"epoch 0: {', '.join(said)}", transform=ax.transAxes, **UNTRAINED_NOTE)
        # A fixed title height, few ticks and one legend (the panels share their colours): placing
        # titles, making ticks and legends are most of a draw.
        ax.set_title(name, fontsize="medium", y=1.0)
        ax.set_xlabel("epoch")
        epoch_ticks(ax, [r["epoch"] for r in trained], nbins=6)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", frameon=False)
    if title:
        figure.suptitle(title, fontsize="medium")
    # Fixed margins: tight_layout would render the figure once more to measure it (~0.1 s a run).
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.84, wspace=0.2)
    if out is not None:
        save_figure(figure, out)
    return figure


def save_run_curves(folder: Path, records: list[dict], title: str = "", selected: int | None = None) -> Path | None:
    """Draw a finished run's curves.png; never fails the run: without matplotlib nothing is drawn,
    and any failure to draw is one warning (the run's own files are already written)."""
    import warnings

    from .runs import RunFolderWarning

    try:
        import matplotlib  # noqa: F401  (optional: pip install 'actexp[plot]')
    except ImportError:
        return None
    out = Path(folder) / "curves.png"
    try:
        draw_run_curves(records, out, title, selected)
    except Exception as e:
        warnings.warn(f"{out} not drawn ({type(e).__name__}: {e}); the run itself is complete", RunFolderWarning, stacklevel=2)
        return None
    return out


def draw_folder_curves(folder: Path) -> Path | None:
    """A completed run folder's curves.png from its own files, as its run would have drawn it (a
    sweep's driver draws its members' once they end, off the workers' path); None where the folder
    holds no completed run or nothing could be drawn."""
    folder = Path(folder)
    summary = read_summary(folder)
    if summary.get("status") != "completed":
        return None
    return save_run_curves(folder, read_history(folder), run_title(str(summary.get("name", "")), folder), summary.get("selected_epoch"))


def run_title(name: str, folder: Path) -> str:
    return f"{name} ({Path(folder).name})"


# ----------------------------------------------------------------------------- a run in use (actexp eval, plot --boundary)


def draw_confusion(result: dict, out: str | Path | None = None):
    """The confusion matrix of an `evaluate_run` result as a picture: each row coloured by its share
    of the true class (so rare and common classes read alike), counts written in the cells when
    there are at most 20 classes. Saved to `out` (format by its suffix) when given; returns the
    matplotlib Figure."""
    import numpy as np
    from matplotlib.figure import Figure

    from .evaluation import MAX_TABLE_CLASSES

    confusion = np.asarray(result["confusion"], dtype=np.float64)
    k = len(confusion)
    shares = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    size = min(4 + 0.45 * k, 16)
    figure = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    if k <= MAX_TABLE_CLASSES:
        labels = result["classes"]
        ax.set_xticks(range(k), labels, rotation=45 if max(map(len, labels)) > 2 else 0, ha="right" if max(map(len, labels)) > 2 else "center")
        ax.set_yticks(range(k), labels)
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, f"{int(confusion[i, j])}", ha="center", va="center", fontsize="small",
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{result['name']}: {result['dataset']} {result['split']} ({result['n']} samples), accuracy {result['accuracy']:.4f}", fontsize="medium")
    if out is not None:
        save_figure(figure, out)
    return figure


def draw_boundary(grid: DecisionGrid, out: str | Path | None = None, title: str = ""):
    """The decision regions (each class's area in a light shade of its colour) with the samples on
    top (their true class's colour): where a point sits in another colour, the model misclassifies
    it. Saved to `out` (format by its suffix) when given; returns the matplotlib Figure."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    k = max(int(grid.classes.max()), int(grid.labels.max())) + 1
    colors = [PALETTE[c % len(PALETTE)] for c in range(k)]
    figure = Figure(figsize=(6, 5.4), dpi=100, layout="constrained")
    ax = figure.subplots()
    ax.pcolormesh(grid.xs, grid.ys, grid.classes, cmap=ListedColormap(colors), vmin=-0.5, vmax=k - 0.5, alpha=0.25, shading="nearest")
    for c in range(k):
        chosen = grid.labels == c
        ax.scatter(grid.points[chosen, 0], grid.points[chosen, 1], s=9, color=colors[c], edgecolors="white", linewidths=0.3, label=f"class {c}")
    ax.set_xlim(grid.xs[0], grid.xs[-1])
    ax.set_ylim(grid.ys[0], grid.ys[-1])
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(f"{title}  (accuracy {grid.accuracy:.4f})".strip(), fontsize="medium")
    # Below the axes: inside, the legend hides the points of whichever class lies under it.
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(k, 6), fontsize="small", frameon=False,
                  title="points: true class; shade: predicted class", title_fontsize="x-small")
    if out is not None:
        save_figure(figure, out)
    return figure


def save_figure(figure, out: str | Path, **savefig) -> None:
    """Write a figure atomically (a temp file renamed over `out`), in the format its suffix names."""
    from .runs import write_atomic

    out = Path(out)
    write_atomic(out, lambda file: figure.savefig(file, format=out.suffix[1:].lower() or "png", **savefig))


# ----------------------------------------------------------------------------- a finished sweep


def write_report(sweep_dir: Path) -> tuple[Comparison, Path | None]:
    """What a finished sweep leaves next to its ledger: summary.csv, summary.md, curves.png, and for
    a tuned sweep sensitivity.png and budget.png (write_tuning_figures)."""
    comparison = compare([sweep_dir], out_dir=sweep_dir)
    try:
        curves, _ = plot([sweep_dir], sweep_dir / "curves.png", title=sweep_dir.name)
        write_tuning_figures(sweep_dir, sweep_dir)
    except (ImportError, ActexpError):  # matplotlib is optional (`pip install actexp[plot]`); no curves yet
        curves = None
    return comparison, curves


def write_tuning_figures(sweep_dir: Path, folder: Path, suffix: str = ".png") -> list[Path]:
    """A tuned sweep's sensitivity and budget figures (tuneplots.py) in `folder`; [] for a sweep
    that is not tuned."""
    from .runs import DamagedFile, read_ledger
    from .tuneplots import BUDGET_FILE, SENSITIVITY_FILE, plot_budget, plot_sensitivity
    from .tuning import tuned_rows

    try:
        ledger = read_ledger(sweep_dir)
    except DamagedFile:  # compare has said so, and read the run folders instead
        return []
    rows = [row for row in tuned_rows(sweep_dir, ledger) if row.trials]
    if not rows:
        return []
    groups = sensitivity_groups([row.label for row in rows])
    short, keys = _value_labels(rows)
    groups = groups and {row.label: groups[old.label] for old, row in zip(rows, short)}
    title = f"{sweep_dir.name} ({', '.join(keys)})" if keys else sweep_dir.name
    return [plot_sensitivity(short, folder / Path(SENSITIVITY_FILE).with_suffix(suffix), title=title, groups=groups),
            plot_budget(short, folder / Path(BUDGET_FILE).with_suffix(suffix), title=title)]


def sensitivity_groups(labels: list[str], most: int = 8) -> dict | None:
    """More rows than one panel holds (`most`), labelled by the same keys ("activation=relu,optimizer=sgd"):
    a panel per value of the key with the fewest values ("optimizer=sgd"), a line per row in it
    ("relu"), when that makes at most 4 panels of at most `most` lines; label -> (panel, line). Else None."""
    parsed = [[part.partition("=") for part in label.split(",")] for label in labels]
    keys = [key for key, _, _ in parsed[0]]
    if len(labels) <= most or len(keys) < 2 or any([key for key, sep, _ in p] != keys or not all(sep for _, sep, _ in p) for p in parsed):
        return None
    counts = [len({p[i][2] for p in parsed}) for i in range(len(keys))]
    panel = min((i for i in range(len(keys)) if counts[i] > 1), key=lambda i: counts[i], default=None)
    if panel is None or counts[panel] > 4 or len(labels) / counts[panel] > most:  # a row of at most 4 panels, each a few lines
        return None
    return {label: (f"{keys[panel]}={p[panel][2]}", ", ".join(v for i, (_, _, v) in enumerate(p) if i != panel)) for label, p in zip(labels, parsed)}


def _value_labels(rows: list) -> tuple[list, list[str]]:
    """Rows labelled by their values alone ("relu, sgd") when every label names the same keys in the
    same order ("activation=relu,optimizer=sgd"), and those keys, for the title; else as they are.
    Panel titles then fit their panels."""
    from dataclasses import replace

    parsed = [[part.partition("=") for part in row.label.split(",")] for row in rows]
    keys = [key for key, _, _ in parsed[0]]
    if not all(sep for labels in parsed for _, sep, _ in labels) or any([key for key, _, _ in labels] != keys for labels in parsed):
        return rows, []
    short = [", ".join(value for _, _, value in labels) for labels in parsed]
    if len(set(short)) != len(short):
        return rows, []
    return [replace(row, label=label) for row, label in zip(rows, short)], keys
