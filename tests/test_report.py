"""compare, plot and runs on hand-made run folders, where every expected number is known."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from actexp.cli import app
from actexp.errors import ConfigError
from actexp.plots import curve_series
from actexp.report import collect_runs, compare, comparison_markdown, list_runs, mean_std

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


def test_mean_std_is_the_sample_statistic():
    stat = mean_std([0.90, 0.95, 0.91, math.nan, None])
    assert stat.n == 3 and stat.mean == pytest.approx(0.92) and stat.std == pytest.approx(math.sqrt(0.0007))
    assert mean_std([0.5]).n == 1 and math.isnan(mean_std([0.5]).std)
    assert mean_std([]).n == 0


def test_seed_aggregation_and_ranking(runs):
    comparison = compare([runs], "val_acc")
    assert comparison.keys == ("model.activation",) and comparison.labels == ("activation",)
    rows = {row.values[0]: row for row in comparison.rows}
    assert [row.values[0] for row in comparison.rows] == ["sigmoid", "relu", "tanh"]
    relu = rows["relu"]  # best val acc per seed: 0.90 (epoch 2), 0.95 (epoch 3), 0.91 (epoch 1)
    assert relu.metric.n == 3
    assert relu.metric.mean == pytest.approx(statistics.mean([0.90, 0.95, 0.91]))
    assert relu.metric.std == pytest.approx(statistics.stdev([0.90, 0.95, 0.91]))
    assert relu.best_epoch.mean == pytest.approx(2.0)
    assert relu.test_acc.mean == pytest.approx(0.92) and relu.test_acc.std == pytest.approx(0.02)
    assert relu.wall_seconds.mean == pytest.approx(11.0)
    tanh = rows["tanh"]  # the diverged seed is counted, not averaged
    assert tanh.statuses == {"completed": 2, "diverged": 1} and tanh.metric.n == 2
    assert tanh.metric.mean == pytest.approx(0.82) and tanh.metric.std == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert rows["sigmoid"].metric.n == 1 and math.isnan(rows["sigmoid"].metric.std)

    by_loss = compare([runs], "val_loss")  # lower is better
    assert [row.values[0] for row in by_loss.rows] == ["sigmoid", "relu", "tanh"]
    assert by_loss.rows[1].metric.mean == pytest.approx(1 - 0.92)
    by_seed = compare([runs], "val_acc", ["seed"])
    # seed 1: relu 0.95 alone (tanh diverged); seed 0: (0.90 + 0.80 + 0.97) / 3; seed 2: (0.91 + 0.84) / 2
    assert [(row.values, row.metric.n) for row in by_seed.rows] == [(("1",), 1), (("0",), 3), (("2",), 2)]
    with pytest.raises(ConfigError, match="--group-by colour: not a config key"):
        compare([runs], group_by=["colour"])
    with pytest.raises(ConfigError, match="--metric accuracy"):
        compare([runs], "accuracy")


def test_compare_cli_prints_the_table_and_writes_summary_files(runs):
    result = CliRunner().invoke(app, ["compare", str(runs)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "0.9200 ± 0.0265" in result.output and "0.8200 ± 0.0283" in result.output and "0.9700" in result.output
    assert "2 completed, 1 diverged" in result.output
    assert result.output.index("sigmoid") < result.output.index("relu") < result.output.index("tanh")

    with open(runs / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model.activation"] for r in rows] == ["sigmoid", "relu", "tanh"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    relu = rows[1]
    assert relu["n"] == "3" and float(relu["val_acc_mean"]) == pytest.approx(0.92)
    assert float(relu["val_acc_std"]) == pytest.approx(0.026458, abs=1e-6)
    assert float(relu["test_acc_mean"]) == pytest.approx(0.92) and float(relu["best_epoch_mean"]) == 2.0
    assert rows[0]["val_acc_std"] == "" and rows[2]["statuses"] == "completed=2;diverged=1"
    assert len(relu["runs"].split(";")) == 3

    markdown = (runs / "summary.md").read_text().splitlines()
    assert markdown[0].startswith("| rank | activation | n | val_acc |")
    assert markdown[2].startswith("| **1** | **sigmoid** |")  # the best row stands out
    assert "| 2 | relu | 3 | 0.9200 ± 0.0265 | 2.0 |" in markdown[3]


def test_a_sweep_folder_means_the_runs_its_ledger_lists(runs):
    listed = sorted(p.parent.relative_to(runs).as_posix() for p in runs.glob("activation=relu*/*/summary.json"))
    (runs / "sweep.json").write_text(json.dumps({"runs": [{"name": "x", "folder": f, "status": "completed"} for f in listed]}))
    assert {r.config["model"]["activation"] for r in collect_runs([runs])} == {"relu"}


def test_a_sweep_folder_counts_runs_that_never_had_a_folder(runs):
    """A run that failed before its folder existed (or has not started) is in the ledger only:
    compare counts it, from the config the ledger keeps, without averaging it."""
    listed = sorted(p.parent.relative_to(runs).as_posix() for p in runs.glob("activation=*/*/summary.json"))
    entries = [{"name": f.split("/")[0], "folder": f, "status": "completed"} for f in listed]
    config = {"name": "activation=relu,seed=3", "model": {"hidden": [8], "activation": "relu", "init": "xavier_normal"}, "train": {"epochs": 3, "seed": 3}}
    entries.append({"name": config["name"], "folder": None, "status": "failed", "error": "ValueError: val_size", "config": config})
    entries.append({"name": "activation=elu,seed=0", "folder": None, "status": "pending", "error": None,
                    "config": {**config, "name": "activation=elu,seed=0", "model": {**config["model"], "activation": "elu"}, "train": {"epochs": 3, "seed": 0}}})
    entries.append({"name": "old", "folder": None, "status": "failed"})  # a ledger entry from before configs were kept: skipped
    (runs / "sweep.json").write_text(json.dumps({"runs": entries}))
    comparison = compare([runs], out_dir=runs)
    rows = {row.values[0]: row for row in comparison.rows}
    assert rows["relu"].statuses == {"completed": 3, "failed": 1} and rows["relu"].metric.n == 3
    assert rows["relu"].metric.mean == pytest.approx(0.92)
    assert rows["elu"].statuses == {"pending": 1} and rows["elu"].metric.n == 0 and comparison.rows[-1] is rows["elu"]
    assert "1 failed" in "".join(comparison_markdown(comparison)) and "completed=3;failed=1" in (runs / "summary.csv").read_text()
    labels, series = curve_series(collect_runs([runs]), "val_acc")
    assert {s.label: s.n for s in series} == {"relu": 3, "tanh": 2, "sigmoid": 1}  # nothing to draw for them


def test_runs_lists_newest_first(runs):
    rows = list_runs(runs)
    assert rows[0]["name"] == "activation=sigmoid,seed=0" and rows[-1]["name"] == "activation=relu,seed=0"
    assert rows[0]["best_val_acc"] == pytest.approx(0.97) and rows[0]["test_acc"] == pytest.approx(0.96)
    result = CliRunner().invoke(app, ["runs", str(runs)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.index("activation=sigmoid,seed=0") < result.output.index("activation=relu,seed=0")
    assert "diverged" in result.output
    empty = CliRunner().invoke(app, ["runs", str(runs / "nothing")])
    assert empty.exit_code == 1 and "no runs" in empty.output


def test_best_epoch_value_ignores_the_untrained_epoch_zero():
    from actexp.report import best_epoch_value

    history = [{"epoch": 0, "val_acc": 0.9, "val_loss": 0.1}, {"epoch": 1, "val_acc": 0.5, "val_loss": 0.7}, {"epoch": 2, "val_acc": 0.6, "val_loss": 0.9}]
    assert best_epoch_value(history, "val_acc") == (0.6, 2)
    assert best_epoch_value(history, "val_loss") == (0.7, 1)
