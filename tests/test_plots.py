"""`actexp plot` on hand-made run folders, where every expected number is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from actexp.cli import app
from actexp.plots import curve_series, draw_curves, plot
from actexp.report import collect_runs

# activation -> per seed: (val_acc per epoch, status, test acc)
RUNS = {
    "relu": {0: ([0.80, 0.90, 0.88], "completed", 0.90), 1: ([0.85, 0.92, 0.95], "completed", 0.94), 2: ([0.91, 0.89, 0.90], "completed", 0.92)},
    "tanh": {0: ([0.70, 0.75, 0.80], "completed", 0.79), 1: ([0.60], "diverged", None), 2: ([0.82, 0.84, 0.83], "completed", 0.83)},
    "sigmoid": {0: ([0.95, 0.96, 0.97], "completed", 0.96)},
}


def make_run(root: Path, activation: str, seed: int, val_accs, status, test_acc, started: str) -> Path:
    folder = root / f"activation={activation},seed={seed}" / "20240101-000000"
    folder.mkdir(parents=True)
    config = {"name": folder.parent.name, "model": {"hidden": [8], "activation": activation, "init": "xavier_normal"},
              "train": {"epochs": 3, "seed": seed}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"status": status, "name": folder.parent.name, "started": started, "wall_seconds": 10.0 + seed}
    if test_acc is not None:
        summary |= {"test_acc": test_acc, "test_loss": 1 - test_acc, "selected_epoch": len(val_accs)}
    (folder / "summary.json").write_text(json.dumps(summary))
    history = [{"epoch": e, "train_loss": 1.5 - a, "val_acc": a, "val_loss": 1 - a} for e, a in enumerate(val_accs, 1)]
    # The epoch-0 record (the untrained model, as diagnostics writes it), with values that would win
    # every ranking and show in every curve if it were counted as a trained epoch.
    history.insert(0, {"epoch": 0, "train_loss": 0.0, "val_acc": 0.999, "val_loss": 0.0, "train_acc": 0.999})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "family"
    minute = 0
    for activation, seeds in RUNS.items():
        for seed, (accs, status, test_acc) in seeds.items():
            make_run(root, activation, seed, accs, status, test_acc, f"2024-01-01T00:{minute:02d}:00")
            minute += 1
    return root


def test_curve_series_match_the_runs_and_reach_matplotlib(runs, tmp_path):
    labels, series = curve_series(collect_runs([runs]), "val_acc")
    assert labels == ["activation"]
    lines = {s.label: s for s in series}
    relu = lines["relu"]
    assert relu.epochs == (1, 2, 3) and relu.n == 3
    assert relu.mean == pytest.approx([(0.80 + 0.85 + 0.91) / 3, (0.90 + 0.92 + 0.89) / 3, (0.88 + 0.95 + 0.90) / 3])
    assert relu.low == pytest.approx([0.80, 0.89, 0.88]) and relu.high == pytest.approx([0.91, 0.92, 0.95])
    assert lines["tanh"].n == 2 and lines["tanh"].mean[0] == pytest.approx(0.76)  # the diverged seed is left out
    assert lines["sigmoid"].mean == pytest.approx([0.95, 0.96, 0.97])
    assert all(s.epochs[0] == 1 for s in curve_series(collect_runs([runs]), "val_loss")[1])  # epoch 0 is not drawn

    out = tmp_path / "curves.png"
    figure = draw_curves(series, "val_acc", out, legend_title="activation")
    ax = figure.axes[0]
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert drawn == {s.label: (list(s.epochs), list(s.mean)) for s in series}
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation accuracy"
    assert ax.get_legend().get_title().get_text() == "activation"
    assert len(ax.collections) == 2  # min–max bands where a line averages several runs (relu, tanh)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_plot_cli_writes_a_png(runs, tmp_path):
    out = tmp_path / "loss.png"
    result = CliRunner().invoke(app, ["plot", str(runs), "-o", str(out), "--metric", "val_loss"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000 and "3 lines" in result.output
    path, series = plot([runs], tmp_path / "by_seed.png", "train_loss", ["seed"])
    assert [s.label for s in series] == ["0", "1", "2"] and path.exists()
    bad = CliRunner().invoke(app, ["plot", str(runs), "--metric", "test_acc"])
    assert bad.exit_code == 2 and "choose one of" in bad.output
