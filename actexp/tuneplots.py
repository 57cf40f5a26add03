"""The figures of a tuned sweep: sensitivity (the validation figure against the tuned value, every
trial a point) and budget (the expected best validation figure against the number of trials).

As in plots.py, each figure is described first as frozen data (`layout_sensitivity`,
`layout_budget`: panels, points, colours, labels, notes), which tests check without pixels, then
drawn (`draw_sensitivity`, `draw_budget`) by matplotlib, imported only there (no pyplot). A row has
the same colour in both figures (plots.line_styles, in row order).

Sensitivity, by the number of tuned keys:
- one key: the figure against the value (log axis where the range is log), one line and colour
  per row on one axes up to MAX_ROWS rows, a panel per row beyond; the line joins a row's completed
  trials in order of the value (pruned ones trained fewer epochs: they are points off the line),
  up to MAX_LINE_POINTS of them.
- two keys: a panel per row, x the first key, y the second, the colour the figure ("viridis",
  reversed where lower is better, so yellow is best in either case).
- more: a panel per key, the figure against that key's value (each a marginal: the other keys vary).
Every trial is a point: completed filled, pruned hollow (their figure is from fewer epochs), failed
(no figure) a cross at the bottom of the axes. The chosen value is a star; the range's edges are
dashed lines, and a chosen value on an edge (budget.on_edge) is named in the note under the figure
with the fix.

Budget: a line per row with its band (budget.budget_curve), log x beyond LOG_BUDGETS trials, the
legend best first at the largest budget every row reached; the budgets where the leading row changes
(budget.leader_changes) are dotted lines. Beyond MAX_ROWS rows, a panel per row, the other rows grey.

Labels come from run folders: they are made printable and their `$` escaped (mathtext), so no label
is drawn as anything but its text.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from .budget import (COMPLETED, FAILED, PRUNED, BudgetCurve, TunedRow, budget_curve, check_rows, has_score, is_number, leader_changes,
                     numeric_range, on_edge)
from .errors import ActexpError
from .plots import line_styles, save_figure
from .report import METRIC_NAMES
from .terminal import printable
from .varying import key_labels

MAX_ROWS = 8  # rows drawn on one axes; more get a panel each
LOG_BUDGETS = 10  # the budget axis is logarithmic beyond this many trials
PANELS_PER_ROW = 4
EDGE_COLOR = "#7f7f7f"
NOTE_COLOR = "#b22222"  # the edge note, and the outline of a star on an edge
NOTE_WIDTH = 120  # characters per line of the note under a figure
MAX_LINE_POINTS = 100  # a row's completed trials joined by a line up to this many; beyond, points alone (smaller) show the shape
FAILED_Y = 0.02  # where a failed trial's cross sits, in axes height from the bottom
MAX_LABEL = 80  # characters of a row's label drawn
SENSITIVITY_FILE, BUDGET_FILE = "sensitivity.png", "budget.png"


# ----------------------------------------------------------------------------- sensitivity: what is drawn


@dataclass(frozen=True)
class Point:
    x: float
    y: float  # the figure (y is the score), or the second key's value (two keys)
    score: float  # nan: the trial failed
    state: str  # completed, pruned, failed (a trial without a finite score counts as failed)


@dataclass(frozen=True)
class Marks:
    """One row's trials on one panel."""

    label: str
    color: str
    style: str  # of the line through its scored trials
    points: tuple[Point, ...]
    chosen: Point | None  # the star; its y is nan where no completed trial holds the chosen values
    edge: str  # where the chosen value is on an edge of this panel's key(s): "lr high"; "" inside


@dataclass(frozen=True)
class Axis:
    key: str  # dotted: optim.lr
    label: str  # short: lr
    log: bool
    low: float  # the range's edges (the widest over the rows)
    high: float


@dataclass(frozen=True)
class SensitivityPanel:
    title: str
    x: Axis
    y: Axis | None  # None: y is the figure; an Axis: the second key, the figure is the colour
    marks: tuple[Marks, ...]


@dataclass(frozen=True)
class Sensitivity:
    title: str
    score_label: str  # "validation accuracy (higher is better)"
    panels: tuple[SensitivityPanel, ...]
    higher_is_better: bool
    note: str  # the chosen values on an edge and the fix; "" when none

    @property
    def coloured_by_score(self) -> bool:
        return any(panel.y is not None for panel in self.panels)


def layout_sensitivity(rows: list[TunedRow], metric: str | None = None, title: str = "", groups: dict | None = None) -> Sensitivity:
    """What `draw_sensitivity` draws for `rows` (see the module's rules). `metric`: the validation
    figure's name (val_acc, val_loss, or free text); by default val_acc where higher is better, else
    val_loss. `groups` (one tuned key): row label -> (panel title, line label), a panel per title
    with a line per row, one colour per line label across panels (plots.sensitivity_groups: a panel
    per optimizer, a line per activation)."""
    rows = _checked(rows)
    higher = rows[0].higher_is_better
    axes = _axes(rows)
    if not axes:
        raise ActexpError("no tuned key with a numeric range in these rows: there is nothing to draw against")
    styles = dict(zip([r.label for r in rows], line_styles(len(rows))))
    score_label = f"{_metric_name(metric, higher)} ({'higher' if higher else 'lower'} is better)"
    edges = {r.label: on_edge(r) for r in rows}
    if len(axes) == 2:
        x, y = axes
        panels = tuple(SensitivityPanel(_text(r.label), x, y, (_marks(r, styles[r.label], x, y, edges[r.label]),)) for r in rows)
        what = f"{_metric_name(metric, higher)} (colour) over {x.label} and {y.label}"
    elif len(axes) == 1 and groups:
        (x,) = axes
        lines = list(dict.fromkeys(groups[r.label][1] for r in rows))
        styles = dict(zip(lines, line_styles(len(lines))))
        panels = tuple(SensitivityPanel(_text(panel), x, None, tuple(
            replace(_marks(r, styles[groups[r.label][1]], x, None, edges[r.label]), label=_text(groups[r.label][1]))
            for r in rows if groups[r.label][0] == panel)) for panel in dict.fromkeys(groups[r.label][0] for r in rows))
        what = f"{_metric_name(metric, higher)} against {x.label}"
    elif len(axes) == 1 and len(rows) > MAX_ROWS:
        (x,) = axes
        panels = tuple(SensitivityPanel(_text(r.label), x, None, (_marks(r, styles[r.label], x, None, edges[r.label]),)) for r in rows)
        what = f"{_metric_name(metric, higher)} against {x.label}"
    else:
        panels = tuple(SensitivityPanel("" if len(axes) == 1 else f"{x.label} (the other keys vary)", x, None,
                                        tuple(_marks(r, styles[r.label], x, None, edges[r.label]) for r in rows)) for x in axes)
        what = f"{_metric_name(metric, higher)} against {' and '.join(x.label for x in axes) if len(axes) == 1 else 'each tuned key'}"
    trials = sorted({len(r.trials) for r in rows})
    counts = f"{'/'.join(map(str, trials))} trials per row"
    heading = f"{_text(title)}: {what}, {counts}" if title else f"{what}, {counts}"
    return Sensitivity(heading, score_label, panels, higher, _edge_note(rows, edges, axes))


def _axes(rows: list[TunedRow]) -> list[Axis]:
    """The tuned keys with a numeric range, in the rows' order, each with the widest range."""
    spans: dict[str, list] = {}
    for row in rows:
        for key, spec in row.ranges.items():
            if numeric_range(spec) is None:
                continue
            low, high, log = numeric_range(spec)
            span = spans.setdefault(key, [low, high, log])
            span[0], span[1], span[2] = min(span[0], low), max(span[1], high), span[2] and log
    labels = key_labels(list(spans))
    return [Axis(key, _text(labels[key]), log, low, high) for key, (low, high, log) in spans.items()]


def _marks(row: TunedRow, style: tuple[str, str], x: Axis, y: Axis | None, edges: dict[str, str]) -> Marks:
    points = []
    for trial in sorted(row.trials, key=lambda t: t.number):
        px = _value(trial.params.get(x.key), x)
        py = _value(trial.params.get(y.key), y) if y else None
        if px is None or (y is not None and py is None):
            continue
        scored = has_score(trial)
        score = float(trial.score) if scored else math.nan
        state = (PRUNED if trial.state == PRUNED else COMPLETED) if scored else FAILED
        points.append(Point(px, py if y else score, score, state))
    chosen = None
    cx = _value(row.chosen.get(x.key), x)
    cy = _value(row.chosen.get(y.key), y) if y else None
    if cx is not None and (y is None or cy is not None):
        best = _chosen_trial(row)
        score = float(best.score) if best else math.nan
        chosen = Point(cx, cy if y else score, score, COMPLETED)
    edge = ", ".join(f"{a.label} {edges[a.key]}" for a in (x, y) if a and a.key in edges)
    return Marks(_text(row.label), *style, tuple(points), chosen, edge)


def _chosen_trial(row: TunedRow):
    """The best completed trial that holds every chosen value (None where none does)."""
    matching = [t for t in row.trials if t.state == COMPLETED and has_score(t)
                and all(_same(t.params.get(k), v) for k, v in row.chosen.items())]
    if not matching:
        return None
    return max(matching, key=lambda t: t.score if row.higher_is_better else -t.score)


def _same(a, b) -> bool:
    if is_number(a) and is_number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b
    return a == b


def _value(value, axis: Axis | None):
    """A tuned value as a coordinate; None where it cannot be one (not a finite number, or not
    positive on a log axis)."""
    if axis is None or not is_number(value) or not math.isfinite(value) or (axis.log and value <= 0):
        return None
    return float(value)


def _edge_note(rows: list[TunedRow], edges: dict[str, dict[str, str]], axes: list[Axis]) -> str:
    labels = {a.key: a.label for a in axes}
    flagged = [f"{_text(r.label)} ({', '.join(f'{labels.get(k, _text(k))} {side}' for k, side in edges[r.label].items())})"
               for r in rows if edges[r.label]]
    if not flagged:
        return ""
    keys = list(dict.fromkeys(labels.get(k, _text(k)) for r in rows for k in edges[r.label]))
    return (f"Chosen on the edge of its range: {'; '.join(flagged)}. The optimum may lie beyond the range: "
            f"widen the range of {', '.join(keys)} and tune again.")


# ----------------------------------------------------------------------------- budget: what is drawn


@dataclass(frozen=True)
class BudgetLine:
    label: str  # the row's label with its trial counts
    color: str
    style: str
    curve: BudgetCurve


@dataclass(frozen=True)
class Budget:
    title: str
    xlabel: str
    ylabel: str
    log_x: bool
    lines: tuple[BudgetLine, ...]  # legend order: best first at `budget`
    budget: int  # the largest budget every row reached
    changes: tuple[int, ...]  # budgets at which the leading row changes
    panels: bool  # a panel per row (more than MAX_ROWS rows)


def layout_budget(rows: list[TunedRow], metric: str | None = None, title: str = "", curves: list[BudgetCurve] | None = None) -> Budget:
    """What `draw_budget` draws for `rows`; `curves` (one per row, in order) where they were
    computed already (budget.budget_curve), else computed here with its defaults."""
    rows = _checked(rows)
    higher = rows[0].higher_is_better
    styles = line_styles(len(rows))
    curves = [budget_curve(r) for r in rows] if curves is None else list(curves)
    if [c.label for c in curves] != [r.label for r in rows]:
        raise ValueError("curves must be the rows' own, one per row in the same order")
    lines = [BudgetLine(_text(_counted(c)), *style, c) for c, style in zip(curves, styles)]
    budget = min(c.trials for c in curves)
    sign = -1.0 if higher else 1.0
    ranked = sorted(lines, key=lambda line: (not _finite_at(line.curve, budget), sign * _at(line.curve, budget)))
    name = _metric_name(metric, higher)
    confidence = curves[0].confidence
    what = f"expected best {name} of n trials ({'higher' if higher else 'lower'} is better); band: {confidence:.0%}, ± t bootstrap standard errors"
    return Budget(
        f"{_text(title)}: {what}" if title else what,
        "trials per row (n)",
        f"expected best {name}",
        max(c.trials for c in curves) > LOG_BUDGETS,
        tuple(ranked),
        budget,
        leader_changes(rows),
        len(rows) > MAX_ROWS,
    )


def _counted(curve: BudgetCurve) -> str:
    extra = [f"{count} {what}" for count, what in ((curve.pruned, "pruned"), (curve.failed, "failed")) if count]
    return f"{curve.label} ({curve.trials} trials{', ' if extra else ''}{', '.join(extra)})"


def _at(curve: BudgetCurve, n: int) -> float:
    """The curve's value at budget n (the nearest budget computed at or below it)."""
    below = [i for i, b in enumerate(curve.budgets) if b <= n]
    return curve.expected[below[-1]] if below else math.nan


def _finite_at(curve: BudgetCurve, n: int) -> bool:
    return math.isfinite(_at(curve, n))


# ----------------------------------------------------------------------------- drawing


def draw_sensitivity(layout: Sensitivity, out: str | Path | None = None):
    """Draw `layout`; saved to `out` (format by its suffix) when given. Returns the Figure."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state; works headless

    count = len(layout.panels)
    columns = min(count, PANELS_PER_ROW)
    rows = math.ceil(count / columns)
    single = count == 1
    crowded = any(len(panel.marks) > 1 for panel in layout.panels)  # a line per row in a panel: room for them
    panel_width, panel_height = (5.2, 4.4) if crowded else (3.6, 3.3)
    width = 9.5 if single else panel_width * columns + 2.2 * crowded + (1.2 if layout.coloured_by_score else 0)
    figure = Figure(figsize=(width, 5.2 if single else panel_height * rows + 0.9), dpi=100, layout="constrained")
    # Every panel's y is the figure, or (two keys) the same second key: one y-axis, so panels compare.
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True, sharex=len({p.x.key for p in layout.panels}) == 1).ravel()
    colour = _score_colours(layout) if layout.coloured_by_score else None
    failed_y = FAILED_Y if layout.higher_is_better else 1 - FAILED_Y  # at the worse end of the axis
    for i, (ax, panel) in enumerate(zip(axes, layout.panels)):
        for marks in panel.marks:
            _draw_marks(ax, marks, colour, panel.y is not None, failed_y)
        _range_edges(ax, panel.x, "x", wide=single)
        if panel.y is not None:
            _range_edges(ax, panel.y, "y", wide=single)
        ax.set_title(panel.title if not single else layout.title, fontsize="medium")
        ax.grid(alpha=0.3)
    _outer_labels(axes, count, columns, [p.x.label for p in layout.panels], layout.panels[0].y.label if layout.coloured_by_score else layout.score_label,
                  shared_x=len({p.x.key for p in layout.panels}) == 1)
    if colour is not None:
        figure.colorbar(colour["mappable"], ax=axes[:count].tolist(), shrink=0.85, label=layout.score_label)
    handles = _state_handles(colour is not None, layout.higher_is_better, bool(layout.note))
    if single:
        row_handles = [_row_handle(m) for m in layout.panels[0].marks] if len(layout.panels[0].marks) > 1 else []
        axes[0].legend(handles=row_handles + handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        lines = {m.label: m for panel in layout.panels if len(panel.marks) > 1 for m in panel.marks}  # a line per row in a panel: their legend
        figure.legend(handles=[_row_handle(m) for m in lines.values()] + handles, loc="outside right upper", fontsize="small", frameon=False)
        figure.suptitle(layout.title, fontsize="medium")
    if layout.note:
        # A legend of no entries, titled with the note: placed outside, the layout makes room for it.
        note = figure.legend(handles=[], loc="outside lower center", frameon=False, title="\n".join(textwrap.wrap(layout.note, NOTE_WIDTH)),
                             title_fontsize="small", alignment="left")
        note.get_title().set_color(NOTE_COLOR)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_figure(figure, out, bbox_inches="tight")
    return figure


def _draw_marks(ax, marks: Marks, colour, mapped: bool, failed_y: float) -> None:
    """A row's trials: the line through its scored ones (y is the figure), filled completed, hollow
    pruned, crosses for failed (at `failed_y` of the axes' height where y is the figure), the star."""
    from matplotlib.transforms import blended_transform_factory

    scored = [p for p in marks.points if p.state != FAILED]
    completed = [p for p in scored if p.state == COMPLETED]
    pruned = [p for p in scored if p.state == PRUNED]
    failed = [p for p in marks.points if p.state == FAILED]

    def fill(points):
        return [colour["of"](p.score) for p in points] if mapped else marks.color

    if not mapped and 1 < len(completed) <= MAX_LINE_POINTS:
        ordered = sorted(completed, key=lambda p: p.x)
        ax.plot([p.x for p in ordered], [p.y for p in ordered], color=marks.color, linestyle=marks.style, linewidth=1.1, alpha=0.55, zorder=2)
    size = 26 if len(marks.points) <= MAX_LINE_POINTS else 8
    if completed:
        ax.scatter([p.x for p in completed], [p.y for p in completed], s=size, c=fill(completed), edgecolors="white", linewidths=0.5, zorder=3)
    if pruned:
        ax.scatter([p.x for p in pruned], [p.y for p in pruned], s=size, facecolors="none", edgecolors=fill(pruned), linewidths=1.1, zorder=3)
    if failed:
        if mapped:
            ax.scatter([p.x for p in failed], [p.y for p in failed], s=30, marker="x", color="#555555", linewidths=1.1, zorder=3)
        else:
            ax.scatter([p.x for p in failed], [failed_y] * len(failed), s=30, marker="x", color=marks.color, linewidths=1.1, zorder=3,
                       transform=blended_transform_factory(ax.transData, ax.transAxes), clip_on=False)
    chosen = marks.chosen
    if chosen is not None:
        if math.isnan(chosen.y):
            ax.axvline(chosen.x, color=marks.color, linestyle=":", linewidth=1.2)
        else:
            edge = NOTE_COLOR if marks.edge else "black"
            ax.scatter([chosen.x], [chosen.y], s=190, marker="*", c="white" if mapped else marks.color, edgecolors=edge, linewidths=1.2, zorder=4)


def _range_edges(ax, axis: Axis, which: str, wide: bool) -> None:
    """The range's edges as dashed lines, the axis a little wider than the range so that points on
    an edge stay visible, plain numbers on a log scale."""
    line = ax.axvline if which == "x" else ax.axhline
    for edge in (axis.low, axis.high):
        line(edge, color=EDGE_COLOR, linestyle="--", linewidth=1, zorder=1)
    if axis.log:
        low, high = math.log10(axis.low), math.log10(axis.high)
        pad = 0.04 * (high - low)
        limits = (10 ** (low - pad), 10 ** (high + pad))
    else:
        pad = 0.04 * (axis.high - axis.low)
        limits = (axis.low - pad, axis.high + pad)
    if axis.log:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        _log_ticks(ax.xaxis if which == "x" else ax.yaxis, axis.low, axis.high, wide)
    (ax.set_xlim if which == "x" else ax.set_ylim)(*limits)


def _log_ticks(target, low: float, high: float, wide: bool) -> None:
    """Plain numbers on a log axis (0.001, 0.002, 0.005, ...): at 1, 2 and 5 of each decade up to
    three decades on a wide axis (one decade on a small panel's), at each power of ten beyond; no
    minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= (3 if wide else 1) else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _score_colours(layout: Sensitivity) -> dict:
    """One colour scale for every panel: yellow is best, whatever the direction."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scores = [p.score for panel in layout.panels for m in panel.marks for p in m.points if math.isfinite(p.score)]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    cmap = colormaps["viridis" if layout.higher_is_better else "viridis_r"]
    norm = Normalize(low, high)
    return {"mappable": ScalarMappable(norm, cmap), "of": lambda score: cmap(norm(score))}


def _outer_labels(axes, count: int, columns: int, xlabels: list[str], ylabel: str, shared_x: bool) -> None:
    """Hide the panels past `count`; y labels on the first column; where the panels share their x,
    x labels and tick labels on the lowest panel of each column only."""
    for ax in axes[count:]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[:count]):
        lowest = i + columns >= count
        if lowest or not shared_x:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(xlabels[i])
        if i % columns == 0:
            ax.set_ylabel(ylabel)


def _state_handles(mapped: bool, higher_is_better: bool, edge: bool) -> list:
    from matplotlib.lines import Line2D

    grey = "#555555"
    failed = "failed trial" if mapped else f"failed trial (no figure; drawn at the {'bottom' if higher_is_better else 'top'})"
    star = {"linestyle": "none", "marker": "*", "markersize": 12, "markerfacecolor": "white" if mapped else grey}
    return [
        Line2D([], [], linestyle="none", marker="o", color=grey, markeredgecolor="white", label="completed trial"),
        Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor=grey, label="pruned trial (fewer epochs)"),
        Line2D([], [], linestyle="none", marker="x", color=grey, label=failed),
        Line2D([], [], markeredgecolor="black", label="chosen", **star),
        *([Line2D([], [], markeredgecolor=NOTE_COLOR, label="chosen, on its range's edge", **star)] if edge else []),
        Line2D([], [], color=EDGE_COLOR, linestyle="--", linewidth=1, label="range edge"),
    ]


def _row_handle(marks: Marks):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=marks.color, linestyle=marks.style, marker="o", label=marks.label)


def draw_budget(layout: Budget, out: str | Path | None = None):
    """Draw `layout`; saved to `out` (format by its suffix) when given. Returns the Figure."""
    from matplotlib.figure import Figure

    if layout.panels:
        count = len(layout.lines)
        columns = min(count, PANELS_PER_ROW)
        rows = math.ceil(count / columns)
        figure = Figure(figsize=(3.6 * columns, 3.0 * rows + 0.6), dpi=100, layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True).ravel()
        for ax, line in zip(axes, layout.lines):
            for other in layout.lines:
                if other is not line:
                    ax.plot(other.curve.budgets, other.curve.expected, color="#c8c8c8", linewidth=0.8, zorder=1)
            _budget_line(ax, line)
            _budget_axes(ax, layout)
            ax.set_title(line.label, fontsize="small")
        _outer_labels(axes, count, columns, [layout.xlabel] * count, layout.ylabel, shared_x=True)
        dotted = f"; dotted: the leading row changes (n = {', '.join(map(str, layout.changes))})" if layout.changes else ""
        figure.suptitle(f"{layout.title}\npanels best first at {layout.budget} trials, grey: the other rows{dotted}", fontsize="medium")
    else:
        figure = Figure(figsize=(9.5, 5.2), dpi=100, layout="constrained")
        ax = figure.subplots()
        for line in layout.lines:
            _budget_line(ax, line)
        _budget_axes(ax, layout)
        ax.set_xlabel(layout.xlabel)
        ax.set_ylabel(layout.ylabel)
        ax.set_title(layout.title, fontsize="medium")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  title=f"best first at {layout.budget} trials", title_fontsize="small")
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_figure(figure, out, bbox_inches="tight")
    return figure


def _budget_line(ax, line: BudgetLine) -> None:
    curve = line.curve
    ax.plot(curve.budgets, curve.expected, color=line.color, linestyle=line.style, linewidth=1.7, label=line.label, zorder=3,
            marker="o" if len(curve.budgets) == 1 else None)
    ax.fill_between(curve.budgets, curve.low, curve.high, color=line.color, alpha=0.15, linewidth=0, zorder=2)


def _budget_axes(ax, layout: Budget) -> None:
    from matplotlib.ticker import MaxNLocator

    last = max(line.curve.trials for line in layout.lines)
    for i, n in enumerate(layout.changes):
        ax.axvline(n, color=EDGE_COLOR, linestyle=":", linewidth=1.1, zorder=1,
                   label=f"leader changes (n = {', '.join(map(str, layout.changes))})" if i == 0 else None)
    if layout.log_x:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, 1, last, wide=not layout.panels)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(1, last if last > 1 else 2)
    ax.grid(alpha=0.3)


# ----------------------------------------------------------------------------- files


def plot_sensitivity(rows: list[TunedRow], out: str | Path, metric: str | None = None, title: str = "", groups: dict | None = None) -> Path:
    """The sensitivity figure of `rows`, written to `out` (PNG, PDF, SVG, ... by its suffix)."""
    draw_sensitivity(layout_sensitivity(rows, metric, title, groups), out)
    return Path(out)


def plot_budget(rows: list[TunedRow], out: str | Path, metric: str | None = None, title: str = "") -> Path:
    """The budget figure of `rows`, written to `out` (PNG, PDF, SVG, ... by its suffix)."""
    draw_budget(layout_budget(rows, metric, title), out)
    return Path(out)


def write_tuning_figures(rows: list[TunedRow], folder: str | Path, metric: str | None = None, title: str = "") -> tuple[Path, Path]:
    """sensitivity.png and budget.png of a tuned sweep's rows, in `folder`; their paths."""
    folder = Path(folder)
    return (plot_sensitivity(rows, folder / SENSITIVITY_FILE, metric, title),
            plot_budget(rows, folder / BUDGET_FILE, metric, title))


# ----------------------------------------------------------------------------- helpers


def _checked(rows) -> list[TunedRow]:
    rows = [r for r in rows if r.trials]
    if not rows:
        raise ActexpError("no tuned row with trials: nothing to draw; run the tune first")
    check_rows(rows)
    return rows


def _metric_name(metric: str | None, higher_is_better: bool) -> str:
    metric = metric or ("val_acc" if higher_is_better else "val_loss")
    return METRIC_NAMES.get(metric, _text(metric))


def _text(text) -> str:
    """A label from a file as text matplotlib draws literally: printable, `$` not mathtext, and cut
    to MAX_LABEL characters (a label of any length would stretch a legend past any figure)."""
    text = printable(text)
    text = text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"
    return text.replace("$", r"\$")
