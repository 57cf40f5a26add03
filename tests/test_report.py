"""compare, plot and runs on hand-made run folders, where every expected number is known."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from actexp.cli import app
from actexp.display import comparison_table
from actexp.errors import ConfigError
from actexp.plots import curve_series
from actexp.report import RunData, collect_runs, compare, comparison_markdown, comparison_notes, comparison_title, list_runs, run_result
from actexp.stats import PAIRED, WELCH

# activation -> per seed: (val_acc per epoch, status, test acc, selected epoch, flat figures in summary.json)
RUNS = {
    "relu": {
        0: ([0.80, 0.90, 0.88], "completed", 0.90, 2, True),  # the best epoch selected (early stopping's restore_best)
        1: ([0.85, 0.92, 0.95], "completed", 0.94, 3, False),  # a run from before summary.json carried the figures
        2: ([0.91, 0.89, 0.90], "completed", 0.92, 3, True),  # its best val epoch (1, 0.91) is not its selected epoch (3, 0.90)
    },
    "tanh": {
        0: ([0.70, 0.75, 0.80], "completed", 0.79, 3, False),
        1: ([0.60], "diverged", None, None, False),
        2: ([0.82, 0.84, 0.83], "completed", 0.83, 2, True),
    },
    "sigmoid": {0: ([0.95, 0.96, 0.97], "completed", 0.96, None, False)},  # hand-made: no selected epoch, so its last
}
# What each completed run's result is: the val acc of its selected epoch.
RELU = [0.90, 0.95, 0.90]
TANH = [0.80, 0.84]


def make_run(root: Path, activation: str, seed: int, val_accs, status, test_acc, selected, flat, started: str) -> Path:
    folder = root / f"activation={activation},seed={seed}" / "20240101-000000"
    folder.mkdir(parents=True)
    config = {"name": folder.parent.name, "model": {"hidden": [8], "activation": activation, "init": "xavier_normal"},
              "train": {"epochs": 3, "seed": seed}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    history = [{"epoch": e, "train_loss": 1.5 - a, "train_acc": a + 0.05, "val_acc": a, "val_loss": 1 - a} for e, a in enumerate(val_accs, 1)]
    summary = {"status": status, "name": folder.parent.name, "started": started, "wall_seconds": 10.0 + seed}
    if test_acc is not None:
        summary |= {"test_acc": test_acc, "test_loss": 1 - test_acc}
    if selected is not None:
        summary["selected_epoch"] = selected
    if flat:
        summary |= {k: v for k, v in history[selected - 1].items() if k != "epoch"}
    (folder / "summary.json").write_text(json.dumps(summary))
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
        for seed, (accs, status, test_acc, selected, flat) in seeds.items():
            make_run(root, activation, seed, accs, status, test_acc, selected, flat, f"2024-01-01T00:{minute:02d}:00")
            minute += 1
    return root


def test_a_runs_result_is_its_selected_epoch():
    history = [{"epoch": 0, "val_acc": 0.99}, {"epoch": 1, "val_acc": 0.91, "val_loss": 0.3, "train_acc": 0.92, "train_loss": 0.25},
               {"epoch": 2, "val_acc": 0.90, "val_loss": 0.2, "train_acc": 0.95, "train_loss": 0.1}]
    summary = {"status": "completed", "test_acc": 0.89, "test_loss": 0.31}
    # summary.json's flat figures first (here unlike the record, to tell which was read) ...
    flat = run_result(RunData(Path("r"), {}, {**summary, "selected_epoch": 2, "val_acc": 0.5, "val_loss": 0.6}, history))
    assert flat == {"selected_epoch": 2, "val_acc": 0.5, "val_loss": 0.6, "train_acc": 0.95, "train_loss": 0.1, "test_acc": 0.89, "test_loss": 0.31}
    # ... else the record of the selected epoch, never the best one (epoch 1 has the best val acc) ...
    assert run_result(RunData(Path("r"), {}, {**summary, "selected_epoch": 2}, history))["val_acc"] == 0.90
    assert run_result(RunData(Path("r"), {}, {**summary, "selected_epoch": 1}, history))["val_loss"] == 0.3
    # ... else the last trained epoch.
    assert run_result(RunData(Path("r"), {}, summary, history))["selected_epoch"] == 2
    assert math.isnan(run_result(RunData(Path("r"), {}, {"status": "completed"}, []))["val_acc"])
    assert run_result(RunData(Path("r"), {}, {**summary, "status": "diverged"}, history)) is None  # only completed runs have a result


def test_seed_aggregation_and_ranking(runs):
    comparison = compare([runs], "val_acc")
    assert comparison.keys == ("model.activation",) and comparison.labels == ("activation",)
    rows = {row.values[0]: row for row in comparison.rows}
    assert [row.values[0] for row in comparison.rows] == ["sigmoid", "relu", "tanh"]
    relu = rows["relu"]  # the selected epochs' val acc: 0.90 (epoch 2), 0.95 (epoch 3), 0.90 (epoch 3, not the 0.91 of epoch 1)
    assert relu.metric.n == 3 and relu.sample.values == pytest.approx(RELU) and relu.sample.seeds == (0, 1, 2)
    assert relu.metric.mean == pytest.approx(statistics.mean(RELU))
    assert relu.metric.sd == pytest.approx(statistics.stdev(RELU))
    half = 4.302653 * statistics.stdev(RELU) / math.sqrt(3)  # t(0.975, 2) from a table
    assert (relu.metric.low, relu.metric.high) == (pytest.approx(statistics.mean(RELU) - half, abs=1e-6), pytest.approx(statistics.mean(RELU) + half, abs=1e-6))
    assert relu.selected_epoch.mean == pytest.approx(8 / 3)
    assert relu.test_acc.mean == pytest.approx(0.92) and relu.test_acc.sd == pytest.approx(0.02)
    assert relu.wall_seconds.mean == pytest.approx(11.0)
    tanh = rows["tanh"]  # the diverged seed is counted, not averaged
    assert tanh.statuses == {"completed": 2, "diverged": 1} and tanh.metric.n == 2
    assert tanh.metric.mean == pytest.approx(0.82) and tanh.metric.sd == pytest.approx(statistics.stdev(TANH))
    sigmoid = rows["sigmoid"]  # no selected epoch recorded: its last epoch
    assert sigmoid.metric.n == 1 and sigmoid.metric.mean == pytest.approx(0.97) and math.isnan(sigmoid.metric.sd) and math.isnan(sigmoid.metric.low)
    assert all(row.verdict is None for row in comparison.rows) and comparison.seeds_needed is None  # the best has one run

    by_loss = compare([runs], "val_loss")  # lower is better
    assert [row.values[0] for row in by_loss.rows] == ["sigmoid", "relu", "tanh"]
    assert by_loss.rows[1].metric.mean == pytest.approx(1 - statistics.mean(RELU))
    by_train = compare([runs], "train_acc")  # flat train_acc where summary.json has it, the record's otherwise
    assert {row.values[0]: row.metric.mean for row in by_train.rows}["relu"] == pytest.approx(statistics.mean(RELU) + 0.05)
    by_seed = compare([runs], "val_acc", ["seed"])
    # seed 1: relu 0.95 alone (tanh diverged); seed 0: (0.90 + 0.80 + 0.97) / 3; seed 2: (0.90 + 0.84) / 2
    assert [(row.values, row.metric.n) for row in by_seed.rows] == [(("1",), 1), (("0",), 3), (("2",), 2)]
    assert by_seed.rows[1].metric.mean == pytest.approx((0.90 + 0.80 + 0.97) / 3)
    with pytest.raises(ConfigError, match="--group-by colour: not a config key"):
        compare([runs], group_by=["colour"])
    with pytest.raises(ConfigError, match="--metric accuracy"):
        compare([runs], "accuracy")


def test_compare_cli_prints_the_table_and_writes_summary_files(runs):
    result = CliRunner().invoke(app, ["compare", str(runs)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "0.9167 ± 0.0289 [0.8450, 0.9884]" in result.output  # mean ± sd [95% CI of the mean]
    assert "0.8200 ± 0.0283 [0.5659, 1.0741]" in result.output and "0.9700" in result.output
    assert "2 completed, 1 diverged" in result.output
    assert result.output.index("sigmoid") < result.output.index("relu") < result.output.index("tanh")
    assert "The best row (sigmoid) is one run: nothing can be tested against it. Add seeds (--seeds N)." in " ".join(result.output.split())
    assert f"written: {runs / 'summary.csv'}, {runs / 'summary.md'}, {runs / 'runs.csv'}" in result.output

    with open(runs / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model.activation"] for r in rows] == ["sigmoid", "relu", "tanh"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    relu = rows[1]
    assert relu["n"] == "3" and float(relu["val_acc_mean"]) == pytest.approx(0.916667, abs=1e-6)
    assert float(relu["val_acc_std"]) == pytest.approx(0.028868, abs=1e-6)
    assert (float(relu["val_acc_ci_low"]), float(relu["val_acc_ci_high"])) == (pytest.approx(0.844955, abs=2e-6), pytest.approx(0.988378, abs=2e-6))
    assert float(relu["test_acc_mean"]) == pytest.approx(0.92) and float(relu["selected_epoch_mean"]) == pytest.approx(2.666667)
    assert rows[0]["val_acc_std"] == rows[0]["val_acc_ci_low"] == "" and rows[2]["statuses"] == "completed=2;diverged=1"
    assert all(r["diff_vs_best"] == r["p_vs_best"] == r["p_adjusted"] == r["separated_from_best"] == "" for r in rows)  # the best has n = 1
    assert len(relu["runs"].split(";")) == 3

    markdown = (runs / "summary.md").read_text().splitlines()
    assert markdown[0] == "ranked by val_acc (each run's selected epoch): mean ± sd, [95% CI of the mean]" and markdown[1] == ""
    assert markdown[2].startswith("| rank | activation | n | val_acc | epoch |")  # no "vs best": nothing could be tested
    assert markdown[4].startswith("| **1** | **sigmoid** |")  # the best row stands out
    assert "| 2 | relu | 3 | 0.9167 ± 0.0289 [0.8450, 0.9884] | 2.7 | 0.9200 |" in markdown[5]
    assert "- The best row (sigmoid) is one run: nothing can be tested against it. Add seeds (--seeds N)." in markdown

    with open(runs / "runs.csv") as f:
        per_run = list(csv.DictReader(f))
    assert len(per_run) == 7 and list(per_run[0])[:4] == ["folder", "name", "model.activation", "seed"]
    relu2 = next(r for r in per_run if r["name"] == "activation=relu,seed=2")
    assert relu2["folder"] == "activation=relu,seed=2/20240101-000000" and relu2["status"] == "completed"
    assert (relu2["selected_epoch"], float(relu2["val_acc"]), float(relu2["test_acc"]), relu2["wall_seconds"]) == ("3", 0.90, 0.92, "12.0")
    diverged = next(r for r in per_run if r["status"] == "diverged")
    assert diverged["selected_epoch"] == diverged["val_acc"] == diverged["test_acc"] == "" and diverged["seed"] == "1"


def test_another_metric_does_not_overwrite_the_default_tables(runs):
    CliRunner().invoke(app, ["compare", str(runs)])
    before = (runs / "summary.csv").read_text()
    result = CliRunner().invoke(app, ["compare", str(runs), "--metric", "test_acc"])
    assert result.exit_code == 0, result.output
    assert f"written: {runs / 'summary_test_acc.csv'}, {runs / 'summary_test_acc.md'}, {runs / 'runs.csv'}" in result.output
    assert (runs / "summary.csv").read_text() == before
    with open(runs / "summary_test_acc.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model.activation"] for r in rows] == ["sigmoid", "relu", "tanh"] and "test_acc_ci_low" in rows[0]
    assert float(rows[1]["test_acc_mean"]) == pytest.approx(0.92)


def test_a_summary_figure_that_is_not_a_number_skips_the_run(runs):
    folder = next(runs.glob("activation=relu,seed=0/*"))
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "val_acc": "high"}))
    result = CliRunner().invoke(app, ["compare", str(runs)])
    assert result.exit_code == 0 and f"warning: skipped {folder}: {folder / 'summary.json'}: val_acc is not a number" in result.output
    assert "0.9250 ± 0.0354" in result.output  # relu: seeds 1 and 2 only


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
    assert rows["relu"].metric.mean == pytest.approx(statistics.mean(RELU))
    assert rows["elu"].statuses == {"pending": 1} and rows["elu"].metric.n == 0 and comparison.rows[-1] is rows["elu"]
    assert "1 failed" in "".join(comparison_markdown(comparison)) and "completed=3;failed=1" in (runs / "summary.csv").read_text()
    with open(runs / "runs.csv") as f:
        per_run = {r["name"]: r for r in csv.DictReader(f)}
    assert len(per_run) == 9 and "old" not in per_run  # the 7 run folders and the 2 runs that never had one
    never = per_run["activation=relu,seed=3"]
    assert (never["folder"], never["status"], never["seed"], never["model.activation"], never["val_acc"]) == ("", "failed", "3", "relu", "")
    labels, series = curve_series(collect_runs([runs]), "val_acc")
    assert {s.label: s.n for s in series} == {"relu": 3, "tanh": 2, "sigmoid": 1}  # nothing to draw for them


def test_runs_lists_newest_first(runs):
    rows = list_runs(runs)
    assert rows[0]["name"] == "activation=sigmoid,seed=0" and rows[-1]["name"] == "activation=relu,seed=0"
    assert rows[0]["val_acc"] == pytest.approx(0.97) and rows[0]["test_acc"] == pytest.approx(0.96) and rows[0]["selected_epoch"] == 3
    relu2 = next(r for r in rows if r["name"] == "activation=relu,seed=2")
    assert (relu2["selected_epoch"], relu2["val_acc"]) == (3, pytest.approx(0.90))  # the selected epoch's, not the best 0.91
    result = CliRunner().invoke(app, ["runs", str(runs)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.index("activation=sigmoid,seed=0") < result.output.index("activation=relu,seed=0")
    assert "diverged" in result.output and "val acc" in result.output and "epoch" in result.output
    assert "0.9100" not in result.output  # relu seed 2's best epoch is not its result
    empty = CliRunner().invoke(app, ["runs", str(runs / "nothing")])
    assert empty.exit_code == 1 and "no runs" in empty.output


def test_runs_csv_is_one_tidy_row_per_run(runs):
    result = CliRunner().invoke(app, ["runs", "--csv", str(runs)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["folder", "name", "model.activation", "seed", "status", "selected_epoch", "val_loss", "val_acc",
                             "train_loss", "train_acc", "test_loss", "test_acc", "wall_seconds"]
    assert [r["name"] for r in rows][0] == "activation=sigmoid,seed=0" and len(rows) == 7  # newest first, like `runs`
    by_name = {r["name"]: r for r in rows}
    relu1 = by_name["activation=relu,seed=1"]  # figures from its metrics.jsonl record of epoch 3
    assert (relu1["model.activation"], relu1["seed"], relu1["selected_epoch"]) == ("relu", "1", "3")
    assert float(relu1["val_acc"]) == 0.95 and float(relu1["val_loss"]) == pytest.approx(0.05) and float(relu1["train_acc"]) == pytest.approx(1.0)
    assert float(relu1["test_loss"]) == pytest.approx(0.06) and float(relu1["wall_seconds"]) == 11.0
    assert by_name["activation=tanh,seed=1"]["status"] == "diverged" and by_name["activation=tanh,seed=1"]["val_acc"] == ""
    assert CliRunner().invoke(app, ["runs", "--csv", str(runs / "nothing")]).exit_code == 1


# ----------------------------------------------------------------------------- a realistic sweep, 80 columns

# The shipped activation × init sweep as the README reports it (mean val acc, its sd, mean test acc).
SWEEP = """gelu xavier_normal 0.9616 0.0039 0.9618
relu xavier_normal 0.9592 0.0012 0.9589
gelu he_normal 0.9586 0.0028 0.9600
leaky_relu xavier_normal 0.9569 0.0017 0.9587
relu he_normal 0.9557 0.0028 0.9587
leaky_relu he_normal 0.9547 0.0026 0.9596
elu xavier_normal 0.9547 0.0033 0.9569
elu he_normal 0.9545 0.0030 0.9562
tanh xavier_normal 0.9469 0.0021 0.9531
tanh he_normal 0.9453 0.0037 0.9504
sigmoid xavier_normal 0.9357 0.0018 0.9400
sigmoid he_normal 0.9357 0.0012 0.9409
elu normal 0.8508 0.0077 0.8467
leaky_relu normal 0.8484 0.0094 0.8487
relu normal 0.8463 0.0082 0.8484
gelu normal 0.8463 0.0117 0.8482
sigmoid normal 0.7276 0.0047 0.7367
tanh normal 0.6092 0.0136 0.6260"""
# Seed s scores mean + SHIFT[s] * sd: every row's seeds move alike, as seeds shared by rows do (the first
# three average 0, so that 3 seeds give the table's means).
SHIFT = (-1.0, 0.3, 0.7, -0.4, 1.1, -0.8, 0.2, -0.1, 0.9, -0.9, 0.5)


def make_sweep(root: Path, seeds=(0, 1, 2)) -> dict:
    """54 run folders (18 configs × 3 seeds) shaped like the sweep's, the init `normal` a component
    {name: normal, std: 1.0} as in the sweep file; returns {(activation, init): [(seed, val, test, epoch, wall)]}."""
    truth = {}
    for line in SWEEP.splitlines():
        activation, init, mean, sd, test = line.split()
        for seed in seeds:
            val = round((float(mean) + SHIFT[seed] * float(sd)) * 1700) / 1700  # 1,700 validation images
            test_acc = round((float(test) + 0.002 * SHIFT[seed]) * 1500) / 1500
            epoch, wall = 11 + seed + len(activation) % 3, 6.0 + len(init) / 4 + seed
            name = f"activation={activation},init={init},seed={seed}"
            folder = root / name / "20240101-000000"
            folder.mkdir(parents=True)
            config = {"name": name, "model": {"hidden": [256, 256], "activation": activation,
                                              "init": {"name": "normal", "std": 1.0} if init == "normal" else init},
                      "train": {"epochs": 15, "seed": seed}}
            (folder / "config.yaml").write_text(yaml.safe_dump(config))
            (folder / "summary.json").write_text(json.dumps({
                "status": "completed", "name": name, "started": "2024-01-01T00:00:00", "wall_seconds": wall, "selected_epoch": epoch,
                "val_acc": val, "val_loss": 1 - val, "train_acc": val, "train_loss": 1 - val, "test_acc": test_acc, "test_loss": 1 - test_acc}))
            (folder / "metrics.jsonl").write_text(json.dumps({"epoch": epoch, "val_acc": val}) + "\n")
            truth.setdefault((activation, init), []).append((seed, val, test_acc, epoch, wall))
    return truth


def expected_figures(truth: dict) -> list[str]:
    """Every figure the comparison must show, formatted here from the runs' own numbers (t(0.975, 2)
    from a table): mean ± sd, [low, high], selected epoch, test acc, wall seconds."""
    figures = []
    for runs in truth.values():
        vals = [v for _, v, _, _, _ in runs]
        mean = statistics.fmean(vals)
        figures.append(f"{statistics.fmean(t for _, _, t, _, _ in runs):.4f}")
        figures.append(f"{statistics.fmean(e for _, _, _, e, _ in runs):.{1 if len(runs) > 1 else 0}f}")
        figures.append(f"{statistics.fmean(w for _, _, _, _, w in runs):.1f}")
        if len(runs) == 1:
            figures.append(f"{mean:.4f}")
            continue
        half = 4.302653 * statistics.stdev(vals) / math.sqrt(3)
        figures += [f"{mean:.4f} ± {statistics.stdev(vals):.4f}", f"[{mean - half:.4f}, {mean + half:.4f}]"]
    return figures


def check_whole(text: str, comparison, truth: dict, width: int) -> None:
    lines = text.splitlines()
    assert all(cell_len(line.rstrip()) <= width for line in lines), max(lines, key=cell_len)
    cells = {cell for line in lines for cell in re.split(r"\s{2,}", line.strip())}
    verdicts = [row.verdict for row in comparison.rows if row.verdict]
    differences = [f"{v.difference:+.4f}" for v in verdicts] + [f"[{v.low:+.4f}, {v.high:+.4f}]" for v in verdicts]
    for figure in expected_figures(truth) + differences + [f"p={v.p_adjusted:.3f}" for v in verdicts if v.p_adjusted >= 0.001]:
        assert figure in text, figure
        assert any(figure in cell for cell in cells), figure  # whole, not split between two lines of a cell
    assert "…" not in text.replace("actexp sweep …", "")  # nothing elided


@pytest.mark.parametrize("width, failed", [(80, False), (80, True), (72, False), (60, True)])
def test_every_figure_stays_whole_in_a_narrow_terminal(tmp_path, width, failed):
    truth = make_sweep(tmp_path / "activation_x_init")
    if failed:  # a fourth seed of tanh + normal diverged: a `runs` column joins the table
        folder = tmp_path / "activation_x_init" / "activation=tanh,init=normal,seed=3" / "1"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"hidden": [256, 256], "activation": "tanh", "init": {"name": "normal", "std": 1.0}},
                                                            "train": {"epochs": 15, "seed": 3}}))
        (folder / "summary.json").write_text(json.dumps({"status": "diverged", "wall_seconds": 1.5}))
    comparison = compare([tmp_path / "activation_x_init"])
    assert len(comparison.rows) == 18 and comparison.labels == ("activation", "init")
    assert {row.values[1] for row in comparison.rows} == {"xavier_normal", "he_normal", "normal"}  # {name: normal, std: 1.0}, shortened
    console = Console(width=width, file=StringIO(), highlight=False)
    console.print(comparison_table(comparison))
    text = console.file.getvalue()
    check_whole(text, comparison, truth, width)
    assert "not separated from it: " in " ".join(text.split()) and "worse than the best (gelu + xavier_normal)" in " ".join(text.split())
    if width >= 72:  # a line each in a narrow terminal; at 60 columns the labels fold (figures never do)
        assert ("1 diverged" in text and "3 completed" in text) == failed


def test_compare_cli_at_80_columns(tmp_path):
    truth = make_sweep(tmp_path / "activation_x_init")
    comparison = compare([tmp_path / "activation_x_init"])
    # TTY_COMPATIBLE: rich takes the output for a terminal of COLUMNS columns, as an 80-column terminal is.
    for env in ({"COLUMNS": "80", "TTY_COMPATIBLE": "1"}, {"COLUMNS": "80"}):
        result = CliRunner().invoke(app, ["compare", str(tmp_path / "activation_x_init")], env=env)
        assert result.exit_code == 0, result.output
        table = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.split("written:")[0])
        # A terminal gets at most its 80 columns; a pipe the table's full width, one line per row.
        check_whole(table, comparison, truth, 80 if "TTY_COMPATIBLE" in env else 200)
        assert ("Welch's t-test (the rows ran the same seeds, but pairing by seed pays only from 10 of them); the best was picked from "
                "these runs, so every pair of the 18 rows tested is in the family (153 pairs), Holm-corrected, family-wise α = 0.05") in " ".join(table.split())


def test_the_notes_say_what_the_statistics_say(tmp_path):
    make_sweep(tmp_path / "sweep")
    comparison = compare([tmp_path / "sweep"], out_dir=tmp_path / "sweep")
    notes = " ".join(comparison_notes(comparison))
    worse = [row for row in comparison.rows[1:] if row.verdict.separated]
    same = [row for row in comparison.rows[1:] if not row.verdict.separated]
    assert worse and same and all(row.verdict.test == WELCH and row.verdict.pairs == 153 for row in comparison.rows[1:])
    assert f"{len(worse)} of the 17 rows tested are worse than the best (gelu + xavier_normal): " in notes
    assert f"the other {len(same)} are not separated from it: {', '.join(row.name for row in same[:8])}" in notes
    assert "Δ to best: the row's mean minus the best's, with a 95% interval simultaneous over the 153 pairs (Bonferroni's" in notes
    assert "the best row's is optimistic" in notes and "Not separated: no difference was shown, which is not the same as no difference." in notes
    assert "indistinguishable" not in notes and "≈" not in notes
    # Seeds needed: for the default smallest difference (half a point), with the sd's range.
    s = comparison.seeds_needed
    welch, by_pairs = s.spreads
    assert comparison.min_diff == 0.005 and s.delta == 0.005 and s.pairs == 153 and (welch.df, by_pairs.df) == (4, 2)
    assert s.n_low <= s.n <= s.n_high
    assert (f"Seeds needed to separate a difference of 0.0050 (--min-diff): {s.n_low}–{s.n_high} per row over the 95% range of the spread "
            f"({s.n} at the spread now); 80% power, each pair at α = 0.05/153 (this table's pairs), noncentral t. Spread of gelu + xavier_normal "
            f"and relu + xavier_normal: pooled sd {welch.sd:.4f} from 4 degrees of freedom (range {welch.low:.4f}–{welch.high:.4f}), for Welch's "
            f"test; sd {by_pairs.sd:.4f} of their per-seed differences from 2 degrees of freedom") in notes
    markdown = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| 2 | relu | xavier_normal | 3 |" in markdown and "not separated (p=" in markdown and "worse (p" in markdown
    relu = comparison.rows[1].verdict
    assert f"| {relu.difference:+.4f} [{relu.low:+.4f}, {relu.high:+.4f}] |" in markdown
    with open(tmp_path / "sweep" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["separated_from_best"] == "" and rows[-1]["separated_from_best"] == "true"
    assert [r["separated_from_best"] == "false" for r in rows[1:]] == [not row.verdict.separated for row in comparison.rows[1:]]
    assert float(rows[1]["p_adjusted"]) == pytest.approx(relu.p_adjusted, rel=1e-5)
    assert [float(rows[1][k]) for k in ("diff_vs_best", "diff_low", "diff_high")] == [pytest.approx(x, abs=1e-6) for x in (relu.difference, relu.low, relu.high)]
    assert rows[1]["test_vs_best"] == WELCH

    one = tmp_path / "one_seed"
    make_sweep(one, seeds=(0,))
    single = compare([one])
    assert all(row.verdict is None for row in single.rows) and single.seeds_needed is None
    assert comparison_notes(single) == ["One run per row: no interval, and no test can tell these differences from seed noise. "
                                        "Train each config with several seeds (actexp sweep … --seeds 5) to compare them."]


def test_min_diff_is_the_difference_the_seeds_needed_are_for(tmp_path):
    make_sweep(tmp_path / "sweep")
    wider = compare([tmp_path / "sweep"], min_diff=0.02)
    assert wider.min_diff == 0.02 and wider.seeds_needed.delta == 0.02 and wider.seeds_needed.n < compare([tmp_path / "sweep"]).seeds_needed.n
    loss = compare([tmp_path / "sweep"], "val_loss")  # a loss has no default: its units are the task's
    assert loss.min_diff is None and loss.seeds_needed is None
    assert "Seeds needed: give --min-diff, the smallest difference in val_loss that matters to you" in " ".join(comparison_notes(loss))
    assert compare([tmp_path / "sweep"], "val_loss", min_diff=0.01).seeds_needed.delta == 0.01
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "sweep"), "--min-diff", "0.02"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "separate a difference of 0.0200 (--min-diff)" in " ".join(result.output.split())
    for bad in ("0", "-0.01", "nan", "inf"):
        result = CliRunner().invoke(app, ["compare", str(tmp_path / "sweep"), "--min-diff", bad])
        assert result.exit_code == 2 and "--min-diff" in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_pooled_rows_are_labelled_as_such(tmp_path):
    make_sweep(tmp_path / "sweep")
    pooled = compare([tmp_path / "sweep"], group_by=["activation"])
    assert pooled.pooled == ("model.init",) and pooled.seeds_needed is None
    notes = " ".join(comparison_notes(pooled))
    assert "Each row pools configs that differ in model.init (--group-by): n counts runs" in notes and "not seed noise only" in notes
    assert "Seeds needed: not computed for rows that pool configs" in notes and "(seed noise only)" not in notes
    title = comparison_title(pooled)
    assert "each row pooling configs that differ in init" in title and "[95% CI of the mean over configs and seeds]" in title
    # Grouping by every key that varies pools nothing.
    assert compare([tmp_path / "sweep"], group_by=["activation", "init"]).pooled == ()
    assert "pool" not in comparison_title(compare([tmp_path / "sweep"]))


def test_the_protocol_is_said_above_the_table(tmp_path):
    make_sweep(tmp_path / "sweep")
    protocol = "each row at its tuned optim.lr (20 trials, range 1e-4–1e-1) [red]"
    comparison = compare([tmp_path / "sweep"], protocol=protocol, out_dir=tmp_path / "sweep")
    assert comparison.protocol == protocol and comparison_title(comparison).endswith("\n" + protocol)
    assert (tmp_path / "sweep" / "summary.md").read_text().splitlines()[2] == protocol
    console = Console(width=200, file=StringIO(), highlight=False)
    console.print(comparison_table(comparison))
    assert protocol in console.file.getvalue()  # as text: "[red]" is no markup


def test_a_row_of_one_run_is_not_tested(tmp_path):
    make_sweep(tmp_path / "sweep")
    for seed in (1, 2):
        for folder in (tmp_path / "sweep").glob(f"activation=tanh,init=normal,seed={seed}"):
            (folder / "20240101-000000" / "summary.json").write_text(json.dumps({"status": "diverged"}))
    comparison = compare([tmp_path / "sweep"])
    tanh = comparison.rows[-1]
    assert tanh.values == ("tanh", "normal") and tanh.metric.n == 1 and tanh.verdict is None
    notes = comparison_notes(comparison)
    assert notes[0] == "1 row with one run: no interval, not tested. Add seeds (--seeds N)."
    assert "every pair of the 17 rows tested is in the family (136 pairs)" in notes[1]


def test_rows_that_ran_the_same_ten_seeds_are_paired(tmp_path):
    make_sweep(tmp_path / "sweep", seeds=range(10))
    comparison = compare([tmp_path / "sweep"])
    assert all(row.verdict.test == PAIRED for row in comparison.rows[1:])
    assert "paired t-test on seeds 0–9; the best was picked" in " ".join(comparison_notes(comparison))
    assert comparison.seeds_needed.spreads[1].paired and comparison.seeds_needed.spreads[1].df == 9
    # One row ran seeds 1–10 instead: its pairs are Welch's, the others stay paired.
    moved = tmp_path / "sweep" / "activation=relu,init=xavier_normal,seed=10" / "20240101-000000"
    moved.parent.parent.joinpath("activation=relu,init=xavier_normal,seed=0").rename(moved.parent)
    (moved / "config.yaml").write_text((moved / "config.yaml").read_text().replace("seed: 0", "seed: 10"))
    comparison = compare([tmp_path / "sweep"])
    relu = next(row for row in comparison.rows if row.values == ("relu", "xavier_normal"))
    assert relu.verdict.test == WELCH and sorted(relu.sample.seeds) == list(range(1, 11))
    assert {row.verdict.test for row in comparison.rows[1:] if row is not relu} == {PAIRED}
    assert "paired t-test where rows ran the same 10 seeds or more, Welch's t-test otherwise" in " ".join(comparison_notes(comparison))


# ----------------------------------------------------------------------------- runs: by sweep, filters, wide


def test_runs_are_grouped_by_sweep_and_filtered(runs):
    root = runs.parent
    make_run(root, "elu", 0, [0.5, 0.6, 0.7], "completed", 0.71, 3, True, "2024-01-02T00:00:00")
    rows = list_runs(root)
    assert [(r["name"], r["sweep"]) for r in rows][0] == ("activation=elu,seed=0", ".")  # a config trained by itself, below the root
    assert {r["sweep"] for r in rows[1:]} == {"family"}
    assert [r["sweep"] for r in list_runs(runs)] == ["."] * 7
    assert {r["name"] for r in list_runs(root, sweep="family", status="diverged")} == {"activation=tanh,seed=1"}
    assert len(list_runs(root, where=["activation=relu"])) == 3 and len(list_runs(root, sweep="family", where=["model.activation=relu"])) == 3
    assert {r["name"] for r in list_runs(root, where=["seed=2", "activation=tanh"])} == {"activation=tanh,seed=2"}
    assert len(list_runs(root, where=["hidden=8", "train.epochs=3e0"])) == 8  # as the tables label it, or as YAML reads it
    with pytest.raises(ConfigError, match=r"'activaton' is not a config key.*did you mean 'activation'"):
        list_runs(root, where=["activaton=relu"])
    with pytest.raises(ConfigError, match="sweeps there: family"):
        list_runs(root, sweep="nope")
    with pytest.raises(ConfigError, match="choose one of completed"):
        list_runs(root, status="done")


@pytest.mark.parametrize("columns", [80, 120])
def test_runs_fits_a_terminal_with_every_figure_whole(runs, columns):
    # TTY_COMPATIBLE: rich takes the output for a terminal of COLUMNS columns (a pipe gets every column whole).
    result = CliRunner().invoke(app, ["runs", str(runs.parent)], env={"COLUMNS": str(columns), "TTY_COMPATIBLE": "1"})
    assert result.exit_code == 0, result.output
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    lines = output.splitlines()
    assert all(cell_len(line.rstrip()) <= columns for line in lines), output
    assert f"{runs.parent}/family: 7 runs (6 completed, 1 diverged)" in _unfolded(output)
    for row in list_runs(runs):
        if not math.isnan(row["val_acc"]):
            assert f"  {row['val_acc']:.4f}  " in output and f"  {row['test_acc']:.4f}  " in output
    assert "…" not in output and "folder" not in output and "overrides" not in output
    filtered = CliRunner().invoke(app, ["runs", str(runs.parent), "--where", "activation=sigmoid"], env={"COLUMNS": str(columns)})
    assert filtered.exit_code == 0 and "sigmoid" in filtered.output and "relu" not in filtered.output
    nothing = CliRunner().invoke(app, ["runs", str(runs.parent), "--status", "failed"])
    assert nothing.exit_code == 1 and "match these filters" in nothing.output
    wide = CliRunner().invoke(app, ["runs", str(runs.parent), "--wide"], env={"COLUMNS": "200"})
    assert wide.exit_code == 0 and "folder" in wide.output and "family/activation=relu,seed=0/20240101-000000" in wide.output
    csv_rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(app, ["runs", str(runs.parent), "--csv", "--status", "diverged"]).stdout)))
    assert [r["name"] for r in csv_rows] == ["activation=tanh,seed=1"]


def _unfolded(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines())


# ----------------------------------------------------------------------------- what is one row


def _edit_config(folder: Path, **sections) -> None:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def test_bookkeeping_keys_do_not_split_rows(tmp_path):
    for seed, tensorboard in ((0, True), (1, False)):
        for activation in ("relu", "tanh"):
            folder = make_run(tmp_path / "s", activation, seed, [0.8, 0.9], "completed", 0.9, 2, True, f"2024-01-01T00:0{seed}:00")
            _edit_config(folder, train={"tensorboard": tensorboard, "device": "cpu" if seed else "cuda"})
    comparison = compare([tmp_path / "s"])
    assert comparison.keys == ("model.activation",) and [row.metric.n for row in comparison.rows] == [2, 2]
    assert compare([tmp_path / "s"], group_by=["tensorboard"]).keys == ("train.tensorboard",)  # asked for by name: still a key


def test_runs_on_different_datasets_are_never_ranked_or_drawn_together(tmp_path):
    make_run(tmp_path / "mnist_sweep", "relu", 0, [0.9], "completed", 0.9, 1, True, "2024-01-01T00:00:00")
    xor = make_run(tmp_path / "xor_sweep", "relu", 0, [0.99], "completed", 0.99, 1, True, "2024-01-01T00:01:00")
    _edit_config(xor, data={"dataset": {"name": "xor", "n_train": 300}})
    message = r"different datasets \(mnist: 1 run in .*mnist_sweep; xor: 1 run in .*xor_sweep\)"
    with pytest.raises(ConfigError, match=message):
        compare([tmp_path])
    with pytest.raises(ConfigError, match=message):
        curve_series(collect_runs([tmp_path]), "val_acc")
    for command in (["compare", str(tmp_path)], ["plot", str(tmp_path), "-o", str(tmp_path / "c.png")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "different datasets" in result.output
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "c.png").exists()


def test_runs_of_two_sweeps_are_two_rows_and_two_lines(runs, tmp_path):
    again = tmp_path / "family_again"
    for seed in (0, 1):
        make_run(again, "relu", seed, [0.6, 0.7, 0.7], "completed", 0.7, 3, True, f"2024-01-02T00:0{seed}:00")
    comparison = compare([runs, again])
    assert comparison.keys == ("sweep", "model.activation")
    relu = {row.values: row.metric.n for row in comparison.rows if row.values[1] == "relu"}
    assert relu == {("family", "relu"): 3, ("family_again", "relu"): 2}  # never averaged across sweeps
    keys, series = curve_series(collect_runs([runs, again]), "val_acc")
    assert keys == ["sweep", "model.activation"]
    assert {s.values: s.n for s in series if s.values[1] == "relu"} == {("family", "relu"): 3, ("family_again", "relu"): 2}
    assert compare([runs]).keys == ("model.activation",)  # one sweep: no sweep column


def test_show_and_eval_pick_a_sweeps_best_run_or_the_latest(runs):
    from actexp.show import choose_run, resolve_run

    best, why = choose_run(runs)
    assert best.parent.name == "activation=sigmoid,seed=0" and "the best of 7 runs" in why and "0.9700" in why
    newest = max((r for r in runs.rglob("summary.json")), key=lambda p: p.stat().st_mtime).parent
    assert resolve_run(runs, pick="latest") == newest
    relu0 = runs / "activation=relu,seed=0"
    assert choose_run(relu0) == (relu0 / "20240101-000000", "")  # one config's folder, one run: nothing to choose
    shown = CliRunner().invoke(app, ["show", str(runs)])
    assert shown.exit_code == 0 and "the best of 7 runs" in shown.output and "activation=sigmoid,seed=0 ·" in shown.output
    both = CliRunner().invoke(app, ["show", str(runs), "--best", "--latest"])
    assert both.exit_code == 2 and "give one" in both.output
