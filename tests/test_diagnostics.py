"""Per-layer diagnostics: planted conditions each diagnostic must catch, no effect on training,
and the ways they are read back (run files, `actexp show`, the plot's series)."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

import actexp
from actexp.cli import app
from actexp.components import ACTIVATIONS
from actexp.config import config_from_dict
from actexp.diagnostics import METRICS, Tracker, diagnostic_warnings, probe_activations
from actexp.diagplot import diagnostic_panels, diagnostic_series, plot_diagnostics
from actexp.model import build_model
from actexp.runs import EPOCH_COLUMNS, read_history
from actexp.show import PROBLEM, layer_table


def xor_config(**model) -> dict:
    return {
        "name": "diag",
        "data": {"dataset": {"name": "xor", "n_train": 400, "n_test": 200}, "val_size": 100},
        "model": {"hidden": [8, 8], **model},
        "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
    }


def model_on_random_inputs(hidden, activation, init, n_features=100, n=512, seed=0):
    torch.manual_seed(seed)
    config = config_from_dict({"model": {"hidden": hidden, "activation": activation, "init": init}})
    model = build_model(config.model, n_features, 10)
    return model, torch.randn(n, n_features), torch.randint(0, 10, (n,))


def epoch_zero(model, x, y) -> dict:
    return {"epoch": 0, "layers": Tracker(model, x, y, seed=0, batch_size=100).epoch_zero()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two small XOR runs: a healthy one, and one whose every bias is -100 (all ReLUs dead)."""
    root = tmp_path_factory.mktemp("runs")
    healthy = actexp.train(xor_config(), runs_dir=root)
    dead = actexp.train({**xor_config(bias_init=-100), "name": "dead"}, runs_dir=root)
    return healthy, dead


# ----------------------------------------------------------------------------- planted conditions


def test_bias_minus_100_makes_a_layer_dead_and_warns():
    model, x, y = model_on_random_inputs([32, 32, 32], "relu", "he_normal")
    with torch.no_grad():
        model.hidden[1].linear.bias.fill_(-100.0)
    record = epoch_zero(model, x, y)
    dead = [row.get("dead_fraction") for row in record["layers"]]
    assert dead[:3] == [0.0, 1.0, 1.0]  # layer 3 gets only zeros in, so its ReLUs sit at 0 too
    assert record["layers"][1]["saturated_fraction"] == 1.0
    warnings = diagnostic_warnings([record], "relu", saturating=False)
    assert "layer 2: 100% of units dead from epoch 0" in warnings


def test_dead_run_reports_it_in_its_summary(runs):
    _, dead = runs
    assert all(row["dead_fraction"] == 1.0 for r in dead.history for row in r["layers"][:-1])
    assert "layer 1: 100% of units dead from epoch 0" in dead.summary["warnings"]


def test_train_prints_the_warnings(tmp_path):
    path = tmp_path / "dead.yaml"
    path.write_text(yaml.safe_dump(xor_config(bias_init=-100)))
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "warning: layer 1: 100% of units dead from epoch 0" in result.output


def test_train_shows_each_warning_live_once_as_soon_as_it_is_found(tmp_path):
    path = tmp_path / "dead.yaml"
    path.write_text(yaml.safe_dump({**xor_config(bias_init=-100), "train": {**xor_config()["train"], "epochs": 3}}))
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    warned = [f"warning: {w}" for w in summary["warnings"]]
    assert "warning: layer 1: 100% of units dead from epoch 0" in warned
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    completed = next(i for i, line in enumerate(lines) if line.startswith("completed in "))
    assert lines[epochs[0] + 1 : epochs[1]] == warned  # found at epoch 0: shown with the first epoch, before the second trains
    assert lines[epochs[1] + 1 : epochs[2]] == [] and lines[epochs[2] + 1 : completed] == []  # once each
    assert lines[completed + 1 :] == warned  # and the final summary keeps them


def test_the_vanishing_gradient_warning_comes_with_the_first_epoch(tmp_path):
    """The issue's case: a deep sigmoid stack's first-layer gradient vanishes from the start; the
    warning comes with epoch 1's event (found in the epoch-0 record), not after the run."""
    events = []
    run = actexp.train({**xor_config(hidden=[16] * 8, activation="sigmoid"), "name": "deep"}, runs_dir=tmp_path,
                       progress=lambda event, info: events.append(info) if event == "epoch" else None)
    first, *later = [info["warnings"] for info in events]
    vanishing = [w for w in run.summary["warnings"] if "(vanishing gradient)" in w]
    assert vanishing and "at epoch 0" in vanishing[0] and vanishing[0] in first
    assert not any("gradient" in w for warnings in later for w in warnings)  # once


def test_deep_sigmoid_gradient_vanishes_and_relu_he_does_not():
    sigmoid = epoch_zero(*model_on_random_inputs([256] * 10, "sigmoid", "xavier_normal"))
    relu = epoch_zero(*model_on_random_inputs([256] * 10, "relu", "he_normal"))
    assert sigmoid["layers"][0]["grad_ratio"] < 1e-4
    assert 0.02 <= relu["layers"][0]["grad_ratio"] <= 50
    # The ratio falls layer by layer towards the input.
    ratios = [row["grad_ratio"] for row in sigmoid["layers"][:-1]]
    assert ratios == sorted(ratios)
    assert any("(vanishing gradient)" in w for w in diagnostic_warnings([sigmoid], "sigmoid", saturating=True))
    assert not any("gradient" in w for w in diagnostic_warnings([relu], "relu", saturating=False))


def test_large_sigmoid_weights_saturate_instead_of_vanishing():
    record = epoch_zero(*model_on_random_inputs([256] * 10, "sigmoid", {"name": "normal", "std": 1.0}))
    assert 0.1 < record["layers"][0]["grad_ratio"] < 10
    assert record["layers"][0]["saturated_fraction"] > 0.5
    warnings = diagnostic_warnings([record], "sigmoid", saturating=True)
    assert any(w.startswith("layers 1–") and "of sigmoid outputs saturated (first at epoch 0)" in w for w in warnings)
    assert not any("gradient" in w for w in warnings)


def test_tanh_saturates_on_inputs_of_magnitude_10():
    model, _, _ = model_on_random_inputs([16], "tanh", "xavier_normal", n_features=16)
    with torch.no_grad():
        model.hidden[0].linear.weight.copy_(torch.eye(16))
        model.hidden[0].linear.bias.zero_()
    x = 10 * torch.randint(0, 2, (256, 16)).float().mul(2).sub(1)
    act_mean, act_std, saturated, dead = probe_activations(model, x)[0].tolist()
    assert saturated == pytest.approx(1.0) and dead == pytest.approx(1.0)
    assert act_std == pytest.approx(1.0, abs=0.05)  # the outputs sit at ±1


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_gets_fractions(name):
    model, x, _ = model_on_random_inputs([12, 12], name, "xavier_normal", n_features=6, n=64)
    act_mean, act_std, saturated, dead = probe_activations(model, x).T.tolist()
    assert all(0.0 <= v <= 1.0 for v in saturated + dead)
    if name == "maxout":  # a maxout unit always passes gradient through its selected piece
        assert saturated == [0.0, 0.0] and dead == [0.0, 0.0]
    if name == "relu":  # the flat side: about half the outputs
        assert 0.3 < saturated[0] < 0.7


def test_diagnostics_do_not_change_training(tmp_path):
    config = xor_config(dropout=0.2)  # dropout draws from the run's RNG: the probe must not
    on = actexp.train(config, runs_dir=tmp_path / "on")
    off = actexp.train({**config, "train": {**config["train"], "diagnostics": False}}, runs_dir=tmp_path / "off")
    weights_on = torch.load(on.dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    weights_off = torch.load(off.dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert weights_on.keys() == weights_off.keys()
    assert all(torch.equal(weights_on[k], weights_off[k]) for k in weights_on)
    assert [r["train_loss"] for r in on.history] == [r["train_loss"] for r in off.history]
    assert on.summary["test_acc"] == off.summary["test_acc"]
    # Off: the core's files only.
    assert not (off.dir / "diagnostics.csv").exists() and "warnings" not in off.summary
    assert all("layers" not in r for r in read_history(off.dir))


# ----------------------------------------------------------------------------- run files


def test_run_files_carry_the_diagnostics(runs):
    healthy, _ = runs
    records = read_history(healthy.dir)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [r["epoch"] for r in healthy.history] == [1, 2]
    assert set(records[0]) == {"epoch", "val_loss", "val_acc", "layers"}
    for record in records:
        assert [row["layer"] for row in record["layers"]] == [1, 2, "output"]
        assert set(record["layers"][0]) == {"layer", *METRICS}
    assert records[0]["layers"][0]["update_ratio"] is None and records[1]["layers"][0]["update_ratio"] > 0
    with open(healthy.dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == EPOCH_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    with open(healthy.dir / "diagnostics.csv") as f:
        long = list(csv.DictReader(f))
    assert tuple(long[0]) == ("epoch", "layer", "metric", "value")
    expected = {
        (str(r["epoch"]), str(row["layer"]), metric): value
        for r in records for row in r["layers"] for metric, value in row.items() if metric != "layer" and value is not None
    }
    assert {(r["epoch"], r["layer"], r["metric"]): float(r["value"]) for r in long} == expected
    assert healthy.summary["warnings"] == []
    assert json.loads((healthy.dir / "summary.json").read_text())["diagnostics"]["probe_samples"] == 300


# ----------------------------------------------------------------------------- reading them back


def test_show_prints_config_epochs_layers_and_warnings(runs):
    healthy, dead = runs
    result = CliRunner().invoke(app, ["show", str(dead.dir)])
    assert result.exit_code == 0, result.output
    for text in ("dead", "hidden 8-8", "bias -100", "layers at epoch 0", "layers at epoch 2", "100% of units dead from epoch 0"):
        assert text in result.output
    # A folder of runs shows the latest one.
    assert CliRunner().invoke(app, ["show", str(healthy.dir.parent)]).exit_code == 0
    missing = CliRunner().invoke(app, ["show", str(healthy.dir / "nowhere")])
    assert missing.exit_code == 1 and "no run folder" in missing.output


def test_show_highlights_problem_cells(runs):
    _, dead = runs
    table = layer_table(read_history(dead.dir)[-1], saturating=False)
    dead_column = next(c for c in table.columns if c.header == "dead")
    assert all(PROBLEM in str(cell) for cell in list(dead_column.cells)[:2])
    assert all(PROBLEM not in str(cell) for c in table.columns if c.header in ("grad", "weight") for cell in c.cells)


def test_plot_draws_one_line_per_layer_and_one_panel_per_run(runs, tmp_path):
    healthy, dead = runs
    series = diagnostic_series(healthy.dir, "grad_norm")
    assert list(series) == ["layer 1", "layer 2", "output"]
    records = read_history(healthy.dir)
    assert series["layer 2"] == ([0, 1, 2], [r["layers"][1]["grad_norm"] for r in records])
    assert list(diagnostic_series(healthy.dir, "dead_fraction")) == ["layer 1", "layer 2"]  # none for the output layer

    figure = plot_diagnostics([healthy.dir, dead.dir], "grad_norm", out=tmp_path / "diag.png")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert len(panels) == 2 and (tmp_path / "diag.png").stat().st_size > 0
    assert [line.get_label() for line in panels[0].lines] == list(series)
    assert list(panels[0].lines[1].get_ydata()) == series["layer 2"][1]
    assert panels[0].get_yscale() == "log"
    assert plot_diagnostics([healthy.dir], "act_std").axes[0].get_yscale() == "linear"
    with pytest.raises(actexp.errors.ActexpError, match="choose one of"):
        diagnostic_series(healthy.dir, "gradnorm")


def test_plot_sharey_puts_every_panel_on_one_scale(runs, tmp_path):
    """--sharey: the dead net's zero gradients and the healthy net's compare on one log axis; a layer
    is one colour in every panel, and the figure has one legend."""
    healthy, dead = runs
    panels = diagnostic_panels([healthy.dir, dead.dir], "grad_norm", sharey=True)
    assert [p.title for p in panels] == [f"diag ({healthy.dir.name})", f"dead ({dead.dir.name})"] and all(p.log for p in panels)
    colour = {}
    for panel in panels:
        assert len({line.color for line in panel.lines}) == len(panel.lines) == 3
        assert all(colour.setdefault(line.label, line.color) == line.color for line in panel.lines)
    assert panels[0].lines[1].values == tuple(diagnostic_series(healthy.dir, "grad_norm")["layer 2"][1])

    figure = plot_diagnostics([healthy.dir, dead.dir], "grad_norm", sharey=True)
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len({ax.get_ylim() for ax in axes}) == 1 and {ax.get_yscale() for ax in axes} == {"log"}
    assert [line.get_color() for line in axes[1].lines] == [line.color for line in panels[1].lines]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["layer 1", "layer 2", "output"]

    out = tmp_path / "grad.svg"
    result = CliRunner().invoke(app, ["plot", str(healthy.dir), str(dead.dir), "--diag", "grad_norm", "--sharey", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith((b"<?xml", b"<svg"))
    bad = CliRunner().invoke(app, ["plot", str(healthy.dir), "--diag", "grad_norm", "--panel-by", "init"])
    assert bad.exit_code == 2 and "--panel-by" in bad.output


def test_cli_plot_diag_draws_a_panel_per_run_found_under_the_paths(runs, tmp_path):
    healthy, dead = runs
    out = tmp_path / "dead.png"
    result = CliRunner().invoke(app, ["plot", str(healthy.dir.parent.parent), "--diag", "dead_fraction", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 panels of dead_fraction" in result.output and out.stat().st_size > 0
    bad = CliRunner().invoke(app, ["plot", str(healthy.dir), "--diag", "gradnorm", "-o", str(out)])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "choose one of" in bad.output


def test_the_epoch_table_marks_the_selected_epoch_in_one_format_per_column():
    from io import StringIO

    from rich.console import Console

    from actexp.show import SELECTED, epoch_table, format_column

    records = [{"epoch": 0, "val_loss": 2.6, "val_acc": 0.1, "layers": [{"layer": 1, "grad_ratio": 2.2}]}]
    records += [{"epoch": e, "train_loss": 1 / e, "train_acc": 1 - 0.1 / e, "val_loss": 1.2 / e, "val_acc": 1 - 0.12 / e,
                 "lr": 1e-3 * 0.5 ** e, "seconds": 3.25 + e, "layers": [{"layer": 1, "grad_ratio": 2.0 + e / 10}]} for e in range(1, 12)]
    console = Console(file=StringIO(), width=80)
    console.print(epoch_table(records, selected=7))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines) and "…" not in text  # no header cut
    for header in ("epoch", "train", "loss", "acc", "val", "lr", "wall", "g1/g_out"):
        assert header in text
    marked = [line for line in lines if SELECTED in line and "selected" not in line]
    assert len(marked) == 1 and marked[0].split()[1] == "7" and f"{1 - 0.12 / 7:.4f}" in marked[0]
    rows = [line.split() for line in lines if re.match(r"\s*(▶ )?\d+\s", line)]
    val_acc = [row[-4] for row in rows]  # train loss ... val acc, lr, wall s, g1/g_out
    assert val_acc[0] == "0.1000" and all(re.fullmatch(r"\d\.\d{4}", v) for v in val_acc)
    lr = [row[-3] for row in rows]
    assert lr[0] == "—" and all(re.fullmatch(r"\d\.\d\de-0\d", v) for v in lr[1:])  # 0.0005 … 4.9e-7: one scientific column
    assert format_column([0.001, 0.002, None], "auto") == ["0.00100", "0.00200", "—"]
    assert format_column([2.5, 1e6], "fixed4") == ["2.500e+00", "1.000e+06"]  # a diverging loss: the whole column scientific
    assert format_column([0.5, float("nan")], "fixed4") == ["0.5000", "nan"]
