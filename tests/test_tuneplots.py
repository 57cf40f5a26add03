"""The figures of a tuned sweep, on made-up rows (no training): what is drawn is checked as data
(panels, points, stars, colours, legend order, notes), then that the figure draws it."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg  # a renderer, to draw what was laid out

from actexp.budget import Trial, TunedRow, budget_curve, leader_changes
from actexp.errors import ActexpError
from actexp.plots import line_styles
from actexp.tuneplots import (BUDGET_FILE, MAX_ROWS, SENSITIVITY_FILE, draw_budget, draw_sensitivity, layout_budget, layout_sensitivity,
                              plot_budget, write_tuning_figures)

LR = "optim.lr"
WD = "optim.weight_decay"
MOMENTUM = "optim.momentum"


def tuned(label: str, optimum: float, peak: float, trials: int = 12, seed: int = 0, keys=(LR,), higher_is_better: bool = True,
          failed_above: float = math.inf, prune_below: float = -math.inf, chosen=None) -> TunedRow:
    """A row whose figure peaks at lr = `optimum`: lr log-uniform in 1e-3..1, other keys in their
    ranges; trials above `failed_above` fail, completed ones below `prune_below` are pruned."""
    rng = np.random.default_rng(seed)
    ranges = {LR: (1e-3, 1.0, True), WD: (1e-6, 1e-2, True), MOMENTUM: (0.0, 0.99, False)}
    out = []
    for number in range(trials):
        params = {LR: float(10 ** rng.uniform(-3, 0))}
        if WD in keys:
            params[WD] = float(10 ** rng.uniform(-6, -2))
        if MOMENTUM in keys:
            params[MOMENTUM] = float(rng.uniform(0, 0.99))
        score = peak - 0.05 * (math.log10(params[LR]) - math.log10(optimum)) ** 2 + float(rng.normal(0, 0.002))
        state = "completed"
        if params[LR] > failed_above:
            state, score = "failed", math.nan
        elif score < prune_below:
            state = "pruned"
        out.append(Trial(number, params, score if higher_is_better or math.isnan(score) else 1 - score, state, 5 if state == "completed" else 2))
    done = [t for t in out if t.state == "completed"]
    best = max(done, key=lambda t: t.score if higher_is_better else -t.score)
    return TunedRow(label, tuple(out), chosen if chosen is not None else dict(best.params), {k: ranges[k] for k in keys}, higher_is_better)


@pytest.fixture
def rows() -> list[TunedRow]:
    return [tuned("act=relu", 0.3, 0.95, seed=1, prune_below=0.85), tuned("act=tanh", 0.05, 0.93, seed=2, failed_above=0.5),
            tuned("act=sigmoid", 3.0, 0.90, seed=4)]


# ----------------------------------------------------------------------------- sensitivity: what is drawn


def test_one_key_puts_every_row_on_one_axes_with_every_trial(rows):
    layout = layout_sensitivity(rows, "val_acc", title="activations")
    (panel,) = layout.panels
    assert panel.y is None and (panel.x.key, panel.x.label, panel.x.log, panel.x.low, panel.x.high) == (LR, "lr", True, 1e-3, 1.0)
    assert [m.label for m in panel.marks] == ["act=relu", "act=tanh", "act=sigmoid"]
    assert [(m.color, m.style) for m in panel.marks] == line_styles(3)
    for marks, row in zip(panel.marks, rows):
        assert [(p.x, p.state) for p in marks.points] == [(t.params[LR], t.state) for t in row.trials]
        assert all(p.y == t.score for p, t in zip(marks.points, row.trials) if t.state != "failed")
    relu, tanh, _ = panel.marks
    assert any(p.state == "pruned" for p in relu.points)
    failed = [p for p in tanh.points if p.state == "failed"]
    assert failed and all(math.isnan(p.y) and p.x > 0.5 for p in failed)
    assert layout.title == "activations: validation accuracy against lr, 12 trials per row"
    assert layout.score_label == "validation accuracy (higher is better)"


def test_the_star_is_the_chosen_trial_and_an_edge_is_named_with_its_fix(rows):
    layout = layout_sensitivity(rows)
    for marks, row in zip(layout.panels[0].marks, rows):
        best = max((t for t in row.trials if t.state == "completed"), key=lambda t: t.score)
        assert (marks.chosen.x, marks.chosen.y) == (best.params[LR], best.score)
    sigmoid = layout.panels[0].marks[2]
    assert sigmoid.chosen.x > 0.7 and sigmoid.edge == "lr high"  # its optimum is past the range's top
    assert layout.panels[0].marks[1].edge == ""
    assert layout.note == "Chosen on the edge of its range: act=sigmoid (lr high). The optimum may lie beyond the range: widen the range of lr and tune again."


def test_a_chosen_value_no_trial_holds_has_no_figure():
    row = tuned("a", 0.1, 0.9, chosen={LR: 0.02})
    (marks,) = layout_sensitivity([row]).panels[0].marks
    assert marks.chosen.x == 0.02 and math.isnan(marks.chosen.y)


def test_more_rows_than_one_axes_holds_get_a_panel_each():
    many = [tuned(f"act={i}", 0.1, 0.9, seed=i) for i in range(MAX_ROWS + 1)]
    layout = layout_sensitivity(many)
    assert [p.title for p in layout.panels] == [r.label for r in many]
    assert all(len(p.marks) == 1 for p in layout.panels)
    assert len({p.marks[0].color for p in layout.panels}) == MAX_ROWS + 1


def test_two_keys_map_the_figure_over_both_a_panel_per_row():
    rows = [tuned("relu", 0.3, 0.95, keys=(LR, WD), seed=1), tuned("tanh", 0.05, 0.93, keys=(LR, WD), seed=2)]
    layout = layout_sensitivity(rows)
    assert layout.coloured_by_score and [p.title for p in layout.panels] == ["relu", "tanh"]
    for panel, row in zip(layout.panels, rows):
        assert (panel.x.key, panel.y.key, panel.y.label, panel.y.log) == (LR, WD, "weight_decay", True)
        assert [(p.x, p.y, p.score) for p in panel.marks[0].points] == [(t.params[LR], t.params[WD], t.score) for t in row.trials]
        assert (panel.marks[0].chosen.x, panel.marks[0].chosen.y) == (row.chosen[LR], row.chosen[WD])
    assert "(colour) over lr and weight_decay" in layout.title


def test_more_keys_give_a_panel_per_key_each_a_marginal(rows):
    rows = [tuned("relu", 0.3, 0.95, keys=(LR, WD, MOMENTUM), seed=1), tuned("tanh", 0.05, 0.93, keys=(LR, WD, MOMENTUM), seed=2)]
    layout = layout_sensitivity(rows)
    assert [(p.x.key, p.x.log, p.title) for p in layout.panels] == [
        (LR, True, "lr (the other keys vary)"), (WD, True, "weight_decay (the other keys vary)"), (MOMENTUM, False, "momentum (the other keys vary)")]
    assert all([m.label for m in p.marks] == ["relu", "tanh"] and p.y is None for p in layout.panels)
    assert [p.y for p in layout.panels[2].marks[0].points] == [t.score for t in rows[0].trials]


def test_rows_that_cannot_be_drawn_are_refused(rows):
    with pytest.raises(ActexpError, match="no tuned row with trials"):
        layout_sensitivity([TunedRow("a", (), {}, {LR: (1e-3, 1.0, True)}, True)])
    with pytest.raises(ActexpError, match="no tuned key with a numeric range"):
        layout_sensitivity([TunedRow("a", rows[0].trials, {}, {"model.activation": ("relu", "tanh", False)}, True)])
    with pytest.raises(ValueError, match="direction"):
        layout_sensitivity([rows[0], tuned("loss", 0.1, 0.9, higher_is_better=False)])


def test_labels_from_files_are_drawn_as_text():
    row = tuned("act=$\\frac{$ \x1b[2J", 0.1, 0.9)
    layout = layout_sensitivity([row, tuned("plain", 0.2, 0.9)])
    assert layout.panels[0].marks[0].label == "act=\\$\\frac{\\$ \\x1b[2J"
    FigureCanvasAgg(draw_sensitivity(layout)).draw()  # broken mathtext would raise here
    budget = layout_budget([row, tuned("plain", 0.2, 0.9)])
    FigureCanvasAgg(draw_budget(budget)).draw()
    endless = layout_sensitivity([tuned("x" * 100_000, 0.1, 0.9)]).panels[0].marks[0].label
    assert endless == "x" * 79 + "…"


# ----------------------------------------------------------------------------- sensitivity: the figure


def test_the_sensitivity_figure_draws_its_description(rows, tmp_path):
    layout = layout_sensitivity(rows, title="activations")
    figure = draw_sensitivity(layout, tmp_path / "s.png")
    FigureCanvasAgg(figure).draw()
    (ax,) = figure.axes
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 1e-3 and ax.get_xlim()[1] > 1.0  # the edges stay in view
    assert ax.get_title() == layout.title and ax.get_ylabel() == layout.score_label and ax.get_xlabel() == "lr"
    edges = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in edges) == [1e-3, 1.0]
    joined = [line for line in ax.get_lines() if line.get_linestyle() != "--"]
    for line, marks in zip(joined, layout.panels[0].marks):
        completed = sorted((p.x, p.y) for p in marks.points if p.state == "completed")
        assert list(zip(line.get_xdata(), line.get_ydata())) == completed and line.get_color() == marks.color
    offsets = [tuple(map(tuple, c.get_offsets())) for c in ax.collections]
    for marks in layout.panels[0].marks:
        assert ((marks.chosen.x, marks.chosen.y),) in offsets  # the star
    failed = [p.x for p in layout.panels[0].marks[1].points if p.state == "failed"]
    assert tuple((x, 0.02) for x in failed) in offsets  # at the bottom of the axes: they have no figure
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["act=relu", "act=tanh", "act=sigmoid"] and "chosen, on its range's edge" in legend
    assert [lg.get_title().get_text().replace("\n", " ") for lg in figure.legends] == [layout.note]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_loss_draws_its_failed_trials_at_the_top_and_yellow_stays_best():
    rows = [tuned("a", 0.05, 0.9, higher_is_better=False, failed_above=0.5, keys=(LR, WD), seed=4)]
    layout = layout_sensitivity(rows)
    assert layout.score_label == "validation loss (lower is better)"
    figure = draw_sensitivity(layout)
    assert figure.axes[-1].get_ylabel() == layout.score_label  # the colour bar
    (panel,) = layout.panels
    scores = [p.score for p in panel.marks[0].points if p.state == "completed"]
    colours = {tuple(c) for c in figure.axes[0].collections[0].get_facecolors()}
    assert len(colours) == len(set(scores))  # one colour per figure
    one_key = layout_sensitivity([tuned("a", 0.05, 0.9, higher_is_better=False, failed_above=0.5, seed=4)])
    ax = draw_sensitivity(one_key).axes[0]
    failed = [p.x for p in one_key.panels[0].marks[0].points if p.state == "failed"]
    assert tuple((x, 0.98) for x in failed) in [tuple(map(tuple, c.get_offsets())) for c in ax.collections]


def test_small_multiples_share_the_figure_axis_and_label_the_outer_panels():
    many = [tuned(f"act={i}", 0.1, 0.9, seed=i) for i in range(MAX_ROWS + 2)]
    figure = draw_sensitivity(layout_sensitivity(many))
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len(axes) == MAX_ROWS + 2 and len({ax.get_ylim() for ax in axes}) == 1
    assert [ax.get_xlabel() for ax in axes] == [""] * 6 + ["lr"] * 4  # four columns: the lowest of each
    assert [ax.get_ylabel() != "" for ax in axes] == [True, False, False, False] * 2 + [True, False]


# ----------------------------------------------------------------------------- budget


def test_the_budget_layout_ranks_the_rows_and_marks_where_the_lead_changes(rows):
    layout = layout_budget(rows, "val_acc", title="activations")
    curves = {line.curve.label: line.curve for line in layout.lines}
    assert set(curves) == {r.label for r in rows}
    assert [line.curve.expected[-1] for line in layout.lines] == sorted((c.expected[-1] for c in curves.values()), reverse=True)
    assert layout.changes == leader_changes(rows) and layout.budget == 12 and layout.log_x and not layout.panels
    relu = next(line for line in layout.lines if line.curve.label == "act=relu")
    assert relu.label == f"act=relu (12 trials, {relu.curve.pruned} pruned)" and relu.curve.pruned > 0
    tanh = next(line for line in layout.lines if line.curve.label == "act=tanh")
    assert tanh.label.endswith(f"{tanh.curve.failed} failed)") and (tanh.color, tanh.style) == line_styles(3)[1]  # the row's colour in both figures
    assert layout.title == "activations: expected best validation accuracy of n trials (higher is better); band: 95%, ± t bootstrap standard errors"


def test_a_loss_budget_ranks_the_lowest_first():
    rows = [tuned("a", 0.1, 0.90, higher_is_better=False, seed=1), tuned("b", 0.1, 0.95, higher_is_better=False, seed=2)]
    layout = layout_budget(rows)
    assert [line.curve.label for line in layout.lines] == ["b", "a"] and "(lower is better)" in layout.title


def test_given_curves_are_used_and_must_be_the_rows():
    rows = [tuned("a", 0.1, 0.9, trials=8)]
    curve = budget_curve(rows[0], resamples=50)
    assert layout_budget(rows, curves=[curve]).lines[0].curve is curve and not layout_budget(rows, curves=[curve]).log_x
    with pytest.raises(ValueError, match="one per row"):
        layout_budget(rows, curves=[budget_curve(tuned("b", 0.1, 0.9), resamples=50)])


def test_the_budget_figure_draws_its_description(tmp_path):
    steady = TunedRow("steady", tuple(Trial(i, {LR: 0.01}, 0.8, "completed", 5) for i in range(20)), {LR: 0.01}, {LR: (1e-3, 1.0, True)}, True)
    risky = TunedRow("risky", tuple(Trial(i, {LR: 0.1}, (0.4, 0.95)[i % 2], "completed", 5) for i in range(20)), {LR: 0.1}, {LR: (1e-3, 1.0, True)}, True)
    layout = layout_budget([steady, risky])
    assert layout.changes == (2,)
    figure = draw_budget(layout, tmp_path / "b.png")
    (ax,) = figure.axes
    drawn = [(line.get_label(), tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines() if line.get_linestyle() != ":"]
    assert drawn == [(line.label, line.curve.budgets, line.curve.expected) for line in layout.lines]
    assert len(ax.collections) == 2  # a band per row
    (change,) = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert tuple(change.get_xdata()) == (2, 2)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [line.label for line in layout.lines] + ["leader changes (n = 2)"]
    assert ax.get_xscale() == "log" and ax.get_xlim() == (1, 20) and ax.get_ylabel() == "expected best validation accuracy"
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_many_rows_get_a_budget_panel_each_the_others_grey():
    many = [tuned(f"act={i}", 0.1, 0.9 + 0.001 * i, seed=i, trials=6) for i in range(MAX_ROWS + 1)]
    layout = layout_budget(many)
    assert layout.panels and not layout.log_x
    figure = draw_budget(layout)
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [line.label for line in layout.lines]
    for ax, line in zip(axes, layout.lines):
        colours = [l.get_color() for l in ax.get_lines() if l.get_linestyle() != ":"]
        assert colours.count("#c8c8c8") == MAX_ROWS and line.color in colours


# ----------------------------------------------------------------------------- files


def test_the_figures_are_written_and_their_paths_returned(rows, tmp_path):
    assert write_tuning_figures(rows, tmp_path / "sweep") == (tmp_path / "sweep" / SENSITIVITY_FILE, tmp_path / "sweep" / BUDGET_FILE)
    assert all((tmp_path / "sweep" / name).read_bytes()[:4] == b"\x89PNG" for name in (SENSITIVITY_FILE, BUDGET_FILE))
    assert plot_budget(rows, tmp_path / "b.pdf") == tmp_path / "b.pdf" and (tmp_path / "b.pdf").read_bytes()[:4] == b"%PDF"  # by its suffix


@pytest.mark.slow
def test_laying_out_imports_neither_matplotlib_nor_torch():
    code = (
        "import sys\n"
        "from actexp.budget import Trial, TunedRow\n"
        "from actexp.tuneplots import layout_budget, layout_sensitivity\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'numpy', 'scipy') if m in sys.modules))\n"
        "row = TunedRow('a', tuple(Trial(i, {'optim.lr': 0.01 * (i + 1)}, 0.5 + 0.01 * i, 'completed', 3) for i in range(5)), {'optim.lr': 0.05}, {'optim.lr': (0.001, 1.0, True)}, True)\n"
        "layout_sensitivity([row]); layout_budget([row])\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    # From the checkout's root: `python -c` imports the actexp beside it, not an installed copy.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]
