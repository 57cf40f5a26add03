"""`actexp plot` on hand-made run folders: what is handed to matplotlib (panels, lines, colours,
legend order, labels) is checked as data, then that the figure draws it and the file is written."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg  # a renderer, to measure what is drawn
from typer.testing import CliRunner

import actexp
from actexp.cli import app
from actexp.errors import ActexpError, ConfigError
from actexp.plots import PALETTE, curve_series, describe_curves, draw_curves, layout_curves, line_styles, plot
from actexp.plots import write_report
from actexp.report import collect_runs, compare

# activation -> per seed: (val_acc per trained epoch, status)
RUNS = {
    "relu": {0: ([0.80, 0.90, 0.88], "completed"), 1: ([0.85, 0.92, 0.95], "completed"), 2: ([0.91, 0.89, 0.90], "completed")},
    "tanh": {0: ([0.70, 0.75, 0.80], "completed"), 1: ([0.60], "diverged"), 2: ([0.82, 0.84, 0.83], "completed")},
    "sigmoid": {0: ([0.95, 0.96, 0.97], "completed")},
}
UNTRAINED = 0.1  # val_acc of the untrained model, recorded at epoch 0 when diagnostics are on
SECONDS = itertools.count(1_700_000_000)  # runs found in a folder come oldest first: one second apart


def make_run(root: Path, name: str, config: dict, val_accs, status: str = "completed", epoch_zero: bool = True,
             run_id: str = "20240101-000000", lrs=None) -> Path:
    """A run folder as `actexp train` leaves it: config.yaml, summary.json, metrics.jsonl (with the
    untrained model's epoch-0 record, which holds validation metrics only)."""
    folder = root / name / run_id
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": name, **config}))
    summary = {"status": status, "name": name, "started": "2024-01-01T00:00:00"}
    if status == "completed":
        summary |= {"test_acc": val_accs[-1], "selected_epoch": len(val_accs)}
    (folder / "summary.json").write_text(json.dumps(summary))
    history = [{"epoch": e, "train_loss": 1.5 - a, "val_acc": a, "val_loss": 1 - a, "lr": (lrs or {}).get(e, 0.001)}
               for e, a in enumerate(val_accs, 1)]
    if epoch_zero:
        history.insert(0, {"epoch": 0, "val_acc": UNTRAINED, "val_loss": 1 - UNTRAINED})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    second = next(SECONDS)
    os.utime(folder / "summary.json", (second, second))
    return folder


def model(activation: str, init: str = "xavier_normal", seed: int = 0, **more) -> dict:
    return {"model": {"hidden": [8], "activation": activation, "init": init, **more}, "train": {"epochs": 3, "seed": seed}}


@pytest.fixture
def runs(tmp_path) -> Path:
    """activation × seed, one seed diverged."""
    root = tmp_path / "family"
    for activation, seeds in RUNS.items():
        for seed, (accs, status) in seeds.items():
            make_run(root, f"activation={activation},seed={seed}", model(activation, seed=seed), accs, status)
    return root


def grid(root: Path, activations, inits, seeds=(0,), score=None) -> Path:
    """activation × init × seed; a run's val_acc curve rises to score(activation, init)."""
    score = score or (lambda a, i: 0.5 + 0.05 * activations.index(a) + 0.01 * inits.index(i))
    for a in activations:
        for i in inits:
            for seed in seeds:
                top = score(a, i)
                make_run(root, f"activation={a},init={i},seed={seed}", model(a, i, seed), [top - 0.2, top - 0.1, top])
    return root


def panels(curves) -> list[tuple[str, list[str]]]:
    return [(p.title, [line.label for line in p.lines]) for p in curves.panels]


# ----------------------------------------------------------------------------- the data


def test_curve_series_average_the_seeds_with_a_one_sd_band_from_epoch_0(runs):
    keys, series = curve_series(collect_runs([runs]), "val_acc")
    assert keys == ["model.activation"]
    lines = {s.label: s for s in series}
    relu = lines["relu"]
    assert relu.epochs == (0, 1, 2, 3) and relu.n == 3  # the untrained model starts the line
    per_epoch = [[UNTRAINED] * 3, [0.80, 0.85, 0.91], [0.90, 0.92, 0.89], [0.88, 0.95, 0.90]]
    assert relu.mean == pytest.approx([statistics.mean(v) for v in per_epoch])
    assert relu.high == pytest.approx([statistics.mean(v) + statistics.stdev(v) for v in per_epoch])
    assert relu.low == pytest.approx([statistics.mean(v) - statistics.stdev(v) for v in per_epoch])
    assert lines["tanh"].n == 2 and lines["tanh"].mean[1] == pytest.approx(0.76)  # the diverged seed is left out
    sigmoid = lines["sigmoid"]  # one run: no band
    assert sigmoid.mean == pytest.approx([UNTRAINED, 0.95, 0.96, 0.97]) and sigmoid.low == sigmoid.mean == sigmoid.high
    assert relu.score.mean == pytest.approx(statistics.mean([0.88, 0.95, 0.90]))  # compare's value: the selected (here the last) epoch, mean over seeds
    # train_loss has no epoch-0 record: its line starts at epoch 1.
    assert all(s.epochs[0] == 1 for s in curve_series(collect_runs([runs]), "train_loss")[1])
    curves = describe_curves(collect_runs([runs]), "val_acc", title="family")
    assert curves.xlabel == "epoch" and curves.ylabel == "validation accuracy"
    assert curves.title == "family  (mean of 1/2/3 runs, band: ±1 sd)"
    # Epoch 0 is data, but not drawn: the panel says what it was.
    assert curves.panels[0].untrained == f"epoch 0: {UNTRAINED:.3g}"
    assert describe_curves(collect_runs([runs]), "train_loss").panels[0].untrained == ""


def test_legend_is_in_compare_rank_order(runs):
    for metric in ("val_acc", "val_loss"):
        curves = describe_curves(collect_runs([runs]), metric)
        ranked = [row.values[0] for row in compare([runs], metric).rows]
        assert panels(curves) == [("", ranked)] and ranked == ["sigmoid", "relu", "tanh"]
    # lr has no better: first-seen order (oldest run first in a folder, grid order in a sweep).
    assert panels(describe_curves(collect_runs([runs]), "lr")) == [("", ["relu", "tanh", "sigmoid"])]


def test_a_line_without_a_completed_run_ranks_last(tmp_path):
    make_run(tmp_path, "running", model("gelu"), [0.99, 0.99], status="running")
    make_run(tmp_path, "done", model("relu"), [0.5, 0.6])
    assert panels(describe_curves(collect_runs([tmp_path]))) == [("", ["relu", "gelu"])]


def test_colours_differ_within_a_panel_and_follow_the_line_across_panels(tmp_path):
    activations = ["sigmoid", "tanh", "relu", "prelu", "elu", "gelu"]
    curves = describe_curves(collect_runs([grid(tmp_path, activations, ["normal", "xavier_normal", "he_normal"])]))
    assert len(curves.panels) == 3
    for panel in curves.panels:
        colours = [line.color for line in panel.lines]
        assert len(set(colours)) == len(colours) == 6 and set(colours) <= set(PALETTE)
        assert {line.style for line in panel.lines} == {"-"}
    colour = {}
    for line in curves.lines:  # relu is one colour in every panel
        assert colour.setdefault(line.label, line.color) == line.color
    assert [colour[a] for a in activations] == list(PALETTE[:6])  # in config order
    assert colour["relu"] != colour["prelu"] and colour["elu"] != colour["gelu"]


def test_more_lines_than_colours_vary_the_line_style(tmp_path):
    activations = [f"act{i:02d}" for i in range(13)]
    curves = describe_curves(collect_runs([grid(tmp_path, activations, ["xavier_normal"])]))
    (panel,) = curves.panels
    drawn = [(line.color, line.style) for line in panel.lines]
    assert len(set(drawn)) == 13
    assert len({colour for colour, _ in drawn}) == 13  # a colour of its own for each line
    assert line_styles(13)[:10] == [(c, "-") for c in PALETTE[:10]] and line_styles(13)[10:] == [(c, "--") for c in PALETTE[10:13]]
    assert len(set(line_styles(40))) == 40 and line_styles(21)[20] == (PALETTE[0], ":")


def test_two_keys_give_a_panel_per_value_of_the_one_with_fewer(tmp_path):
    activations, inits = ["sigmoid", "tanh", "relu"], ["normal", "he_normal"]
    runs = collect_runs([grid(tmp_path, activations, inits, seeds=(0, 1))])
    curves = describe_curves(runs)
    assert [p.title for p in curves.panels] == ["init: normal", "init: he_normal"]
    assert all(sorted(labels) == sorted(activations) for _, labels in panels(curves))
    assert curves.legend_title == "activation" and all(line.series.n == 2 for line in curves.lines)
    # --panel-by turns it round; a dotted key works as well as its label.
    by_activation = describe_curves(runs, panel_by="model.activation")
    assert [p.title for p in by_activation.panels] == ["activation: sigmoid", "activation: tanh", "activation: relu"]
    assert by_activation.legend_title == "init" and all(len(p.lines) == 2 for p in by_activation.panels)
    # A key the lines are not grouped by (the seed) joins the grouping: a panel per seed.
    by_seed = describe_curves(runs, panel_by="seed")
    assert [p.title for p in by_seed.panels] == ["seed: 0", "seed: 1"]
    assert all(len(p.lines) == 6 and p.lines[0].label == "relu, he_normal" for p in by_seed.panels)
    assert by_seed.legend_title == "activation, init" and all(line.series.n == 1 for line in by_seed.lines)
    with pytest.raises(ConfigError, match="--panel-by colour: not a key that varies between these runs; keys that vary: activation, init, seed"):
        describe_curves(runs, panel_by="colour")


def test_a_grid_with_a_config_that_never_finished_keeps_its_panels(tmp_path):
    grid(tmp_path, ["relu", "tanh", "elu"], ["normal", "he_normal"])
    for folder in tmp_path.glob("activation=tanh,init=normal,*/*"):  # diverged on every seed: no curve
        (folder / "summary.json").write_text(json.dumps({"status": "diverged", "name": folder.parent.name}))
    curves = describe_curves(collect_runs([tmp_path]))
    assert [(p.title, len(p.lines)) for p in curves.panels] == [("init: normal", 2), ("init: he_normal", 3)]


def test_on_a_tie_the_first_key_gives_the_lines(tmp_path):
    curves = describe_curves(collect_runs([grid(tmp_path, ["relu", "tanh"], ["normal", "he_normal"])]))
    assert [p.title for p in curves.panels] == ["init: normal", "init: he_normal"]


def test_two_keys_that_are_not_a_grid_stay_in_one_panel(tmp_path):
    """Three runs trained separately: a panel of one line compares nothing."""
    make_run(tmp_path, "sigmoid_xavier", model("sigmoid", "xavier_normal"), [0.3, 0.5])
    make_run(tmp_path, "relu_he", model("relu", "he_normal"), [0.8, 0.9])
    make_run(tmp_path, "sigmoid_normal", model("sigmoid", "normal"), [0.2, 0.4])
    curves = describe_curves(collect_runs([tmp_path]))
    assert panels(curves) == [("", ["relu, he_normal", "sigmoid, xavier_normal", "sigmoid, normal"])]
    assert curves.legend_title == "activation, init"
    assert [p.title for p in describe_curves(collect_runs([tmp_path]), panel_by="init").panels] == ["init: xavier_normal", "init: he_normal", "init: normal"]


def test_one_key_one_panel(runs):
    curves = describe_curves(collect_runs([runs]))
    assert len(curves.panels) == 1 and curves.panels[0].title == "" and curves.legend_title == "activation"


def test_ad_hoc_runs_are_labelled_by_their_names(tmp_path):
    """Runs trained separately from different configs: the keys that differ between them would make
    `hidden, activation, init, lr` labels; their names read better."""
    make_run(tmp_path, "seed_vanishing_sigmoid_xavier", {**model("sigmoid", "xavier_normal", hidden=[64] * 9), "optim": {"lr": 0.1}}, [0.3, 0.5])
    make_run(tmp_path, "seed_vanishing_relu_he", {**model("relu", "he_normal", hidden=[64] * 9), "optim": {"lr": 0.1}}, [0.8, 0.9])
    make_run(tmp_path, "tiny", {**model("relu", "xavier_normal", hidden=[8]), "optim": {"lr": 0.01}}, [0.6, 0.7])
    # Trained twice from one name with different configs: told apart by run folder.
    make_run(tmp_path, "tiny", {**model("tanh", "xavier_normal", hidden=[8]), "optim": {"lr": 0.01}}, [0.5, 0.55], run_id="20240102-000000")
    curves = describe_curves(collect_runs([tmp_path]))
    assert panels(curves) == [("", ["seed_vanishing_relu_he", "tiny (20240101-000000)", "tiny (20240102-000000)", "seed_vanishing_sigmoid_xavier"])]
    assert curves.legend_title == "run"
    assert len({line.color for line in curves.lines}) == 4


def test_a_label_over_30_characters_gives_way_to_the_run_name(tmp_path):
    make_run(tmp_path, "wide", model("relu", hidden=[256] * 8), [0.5, 0.6])  # hidden: 256x256x...x256, 31 characters
    make_run(tmp_path, "narrow", model("relu", hidden=[8]), [0.7, 0.8])
    curves = describe_curves(collect_runs([tmp_path]))
    assert panels(curves) == [("", ["narrow", "wide"])] and curves.legend_title == "run"


def test_one_config_is_one_line_named_after_it(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, "relu_xavier", model("relu", seed=seed), [0.5 + seed / 10, 0.6], run_id=f"2024010{seed + 1}-000000")
    curves = describe_curves(collect_runs([tmp_path]))
    assert panels(curves) == [("", ["relu_xavier"])] and curves.lines[0].series.n == 2


def test_no_metric_recorded_is_an_error(tmp_path):
    make_run(tmp_path, "a", model("relu"), [], status="running", epoch_zero=False)
    with pytest.raises(ActexpError, match="no val_acc recorded"):
        describe_curves(collect_runs([tmp_path]))


def test_layout_is_a_pure_function_of_the_series(runs):
    keys, series = curve_series(collect_runs([runs]), "val_loss")
    curves = layout_curves(keys, series, "val_loss", title="t")
    assert curves == layout_curves(keys, series, "val_loss", title="t")
    assert [line.series for line in curves.lines] == [series[2], series[0], series[1]]  # sigmoid, relu, tanh


# ----------------------------------------------------------------------------- the figure


def test_the_figure_draws_the_description(tmp_path):
    activations, inits = ["sigmoid", "tanh", "relu", "elu"], ["normal", "xavier_normal", "he_normal"]
    curves = describe_curves(collect_runs([grid(tmp_path / "runs", activations, inits, seeds=(0, 1))]), title="grid")
    figure = draw_curves(curves, tmp_path / "curves.png")
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len(axes) == 3
    assert len({ax.get_ylim() for ax in axes}) == 1  # one y-axis: the panels compare
    for ax, panel in zip(axes, curves.panels):
        assert ax.get_title() == panel.title
        drawn = [(line.get_label(), line.get_color(), tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines()]
        assert drawn == [(line.label, line.color, line.series.epochs[1:], line.series.mean[1:]) for line in panel.lines]  # from epoch 1
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [line.label for line in panel.lines]
        assert ax.get_legend().get_title().get_text() == "activation"
        assert len(ax.collections) == 4  # a band per line (two seeds each)
        assert ax.get_xlim()[0] > 0.5 and [t.get_text() for t in ax.texts] == [panel.untrained]  # epoch 0: said, not drawn
    assert figure.get_suptitle() == "grid  (mean of 2 runs, band: ±1 sd)"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_single_panel_figure(runs, tmp_path):
    curves = describe_curves(collect_runs([runs]), "val_acc")
    figure = draw_curves(curves)
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.get_lines()] == ["sigmoid", "relu", "tanh"]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation accuracy"
    assert len(ax.collections) == 2  # bands where a line averages several runs (relu, tanh)


@pytest.mark.parametrize("suffix, magic", [(".pdf", (b"%PDF",)), (".svg", (b"<?xml", b"<svg"))])
def test_plot_writes_pdf_and_svg_by_suffix(runs, tmp_path, suffix, magic):
    out = tmp_path / f"curves{suffix}"
    result = CliRunner().invoke(app, ["plot", str(runs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)


def test_plot_cli(runs, tmp_path):
    out = tmp_path / "loss.png"
    result = CliRunner().invoke(app, ["plot", str(runs), "-o", str(out), "--metric", "val_loss"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000 and "(3 lines)" in result.output
    assert CliRunner().invoke(app, ["plot", str(runs), "-o", str(tmp_path / "noext")]).exit_code == 0
    assert (tmp_path / "noext.png").exists()
    by_seed = CliRunner().invoke(app, ["plot", str(runs), "-o", str(tmp_path / "s.png"), "--panel-by", "seed"])
    assert by_seed.exit_code == 0 and "(6 lines in 3 panels)" in by_seed.output, by_seed.output
    path, curves = plot([runs], tmp_path / "by_seed.png", "train_loss", ["seed"])
    assert [line.label for line in curves.lines] == ["1", "0", "2"] and path.exists()  # best train loss first
    bad = CliRunner().invoke(app, ["plot", str(runs), "--metric", "test_acc"])
    assert bad.exit_code == 2 and "choose one of" in bad.output
    txt = CliRunner().invoke(app, ["plot", str(runs), "-o", str(tmp_path / "x.txt")])
    assert txt.exit_code == 2 and ".pdf" in txt.output and ".svg" in txt.output
    panel = CliRunner().invoke(app, ["plot", str(runs), "--panel-by", "nothing"])
    assert panel.exit_code == 2 and "--panel-by nothing" in panel.output
    assert "-o x.pdf" in CliRunner().invoke(app, ["plot", "--help"], env={"COLUMNS": "200"}).output


def test_plot_is_part_of_the_package_and_a_sweep_report(runs):
    assert actexp.plot is plot
    comparison, curves = write_report(runs)
    assert curves == runs / "curves.png" and curves.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_plotting_imports_neither_torch_nor_matplotlib_before_drawing(runs, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from actexp.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
        "from actexp.plots import describe_curves\n"
        "from actexp.report import collect_runs\n"
        f"describe_curves(collect_runs([{str(runs)!r}]))\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
        f"assert CliRunner().invoke(app, ['plot', {str(runs)!r}, '-o', {str(tmp_path / 'c.png')!r}]).exit_code == 0\n"
        "print(sorted(m for m in ('torch',) if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[]", "[]", "[]"]


# ----------------------------------------------------------------------------- figures a person reads


def test_a_runs_curves_start_at_epoch_1_and_say_epoch_0():
    from actexp.plots import draw_run_curves

    records = [{"epoch": 0, "val_loss": 2.6, "val_acc": 0.10}]
    records += [{"epoch": e, "train_loss": 0.5 / e, "val_loss": 0.55 / e + 0.05, "train_acc": 1 - 0.1 / e, "val_acc": 0.95 - 0.1 / e} for e in range(1, 9)]
    loss, accuracy = draw_run_curves(records, selected=8).axes
    assert loss.get_lines()[1].get_xdata()[0] == 1 and loss.get_ylim()[1] < 1.0  # 2.6 does not stretch the axis
    assert accuracy.get_ylim()[0] > 0.5
    assert [t.get_text() for t in loss.texts] == ["epoch 0: val 2.6"] and [t.get_text() for t in accuracy.texts] == ["epoch 0: val 0.1"]
    assert all(text.get_position()[1] > 1 for ax in (loss, accuracy) for text in ax.texts)  # above the panel, off the curves
    only_zero = draw_run_curves(records[:1]).axes[0]  # nothing trained yet: epoch 0 is all there is to draw
    assert list(only_zero.get_lines()[0].get_xdata()) == [0]


def test_a_folders_plot_is_titled_with_its_name(runs, tmp_path):
    _, curves = plot([runs], tmp_path / "c.png")
    assert curves.title.startswith("family")


def test_diagnostic_log_axes_label_plain_numbers_and_the_legend_is_below(tmp_path):
    from actexp.diagplot import plot_diagnostics

    run = tmp_path / "a_long_run_name_that_reaches_the_edge_of_its_panel" / "20240101-000000"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"name": run.parent.name, "status": "completed"}))
    layers = lambda e: [{"layer": 1, "grad_norm": 0.9 / (e + 1)}, {"layer": 2, "grad_norm": 0.6 / (e + 1)}, {"layer": "output", "grad_norm": 0.5 / (e + 1)}]
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_acc": 0.5, "val_loss": 1.0, "layers": layers(e)}) + "\n" for e in range(3)))
    figure = plot_diagnostics([run, run], "grad_norm", tmp_path / "d.png")
    FigureCanvasAgg(figure).draw()
    for ax in figure.axes:
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and ax.get_ylim()[0] <= t.get_position()[1] <= ax.get_ylim()[1]]
        assert len(labels) >= 3 and all("10^" not in label and "times" not in label for label in labels), labels
    (legend,) = figure.legends
    renderer = figure.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 <= min(ax.get_tightbbox(renderer).y0 for ax in figure.axes) + 1  # below every panel


def test_the_boundary_legend_leaves_the_points_alone():
    import numpy as np

    from actexp.evaluation import DecisionGrid
    from actexp.plots import draw_boundary

    xs = ys = np.linspace(-2, 2, 20)
    classes = (np.add.outer(ys, xs) > 0).astype(int)
    points = np.array([[1.8, 1.8], [-1.8, -1.8], [1.5, 1.9]])
    figure = draw_boundary(DecisionGrid(xs, ys, classes, points, np.array([1, 0, 1]), 1.0))
    (ax,) = figure.axes
    assert ax.get_legend() is None and len(figure.legends) == 1
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    assert figure.legends[0].get_window_extent(renderer).y1 <= ax.get_tightbbox(renderer).y0 + 1


def test_a_one_epoch_run_has_one_whole_epoch_tick():
    from actexp.plots import draw_run_curves

    records = [{"epoch": 0, "val_loss": 2.3, "val_acc": 0.1}, {"epoch": 1, "train_loss": 0.5, "train_acc": 0.85, "val_loss": 0.3, "val_acc": 0.9}]
    figure = draw_run_curves(records, selected=1)
    assert all(list(ax.get_xticks()) == [1] for ax in figure.axes)
