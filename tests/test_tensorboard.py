"""train.tensorboard: event files in each run folder, read back with TensorBoard's own reader, hold
the values of metrics.csv and diagnostics.csv (a resumed run: each epoch once; a fused group: each
member its own); without the package, one line naming the fix before anything is written."""

from __future__ import annotations

import csv
import importlib.util
import sys

import numpy as np
import pytest

import actexp
from actexp.board import BOARD, TAGS, layer_tag
from conftest import cli, run_dirs, tiny_config, write_yaml

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard package is not installed (pip install 'actexp[tensorboard]')")


def events(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's events: [(step, value)], as TensorBoard itself reads them
    (purged steps left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir / BOARD), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def from_files(run_dir) -> dict[str, list[tuple[int, float]]]:
    """The same tags made from metrics.csv and diagnostics.csv, as float32 (TensorBoard's scalars)."""
    expected: dict[str, list] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for column, tag in TAGS.items():
                expected.setdefault(tag, []).append((int(row["epoch"]), float(np.float32(row[column]))))
    if (run_dir / "diagnostics.csv").exists():
        with open(run_dir / "diagnostics.csv") as f:
            for row in csv.DictReader(f):
                layer = int(row["layer"]) if row["layer"].isdigit() else row["layer"]
                expected.setdefault(layer_tag(row["metric"], layer), []).append((int(row["epoch"]), float(np.float32(row["value"]))))
    return expected


SMALL = tiny_config(model={"hidden": [16, 16]}, train={"epochs": 4, "batch_size": 50, "seed": 0, "device": "cpu", "tensorboard": True})


@needs_tensorboard
def test_events_hold_the_values_of_the_metrics_files(tmp_path, data_root):
    run = actexp.train(SMALL, runs_dir=tmp_path / "runs")
    board = events(run.dir)
    assert board == from_files(run.dir)
    assert board["loss/val"][-1][0] == 4 and [step for step, _ in board["grad_norm/layer1"]] == [0, 1, 2, 3, 4]
    assert {"loss/train", "acc/val", "lr", "dead_fraction/layer2", "grad_norm/output"} <= set(board)
    assert len(list((run.dir / BOARD).glob("events.out.tfevents.*"))) == 1

    plain = actexp.train({**SMALL, "train": {**SMALL["train"], "diagnostics": False}}, runs_dir=tmp_path / "plain")
    assert set(events(plain.dir)) == set(TAGS.values()) and events(plain.dir) == from_files(plain.dir)


@needs_tensorboard
def test_a_resumed_run_has_each_epoch_once(tmp_path, data_root):
    def stop_after_2(event, info):
        if event == "epoch" and info["record"]["epoch"] == 2:
            raise KeyboardInterrupt

    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(SMALL, run_dir=folder, progress=stop_after_2)
    assert [step for step, _ in events(folder)["loss/val"]] == [1, 2]
    resumed = actexp.train(SMALL, resume=folder)
    assert resumed.status == "completed"
    board = events(folder)
    assert [step for step, _ in board["loss/val"]] == [1, 2, 3, 4] and board == from_files(folder)


@needs_tensorboard
def test_every_member_of_a_fused_group_writes_its_own_events(tmp_path, data_root):
    configs = [{**SMALL, "train": {**SMALL["train"], "seed": seed}} for seed in (0, 1)]
    members = actexp.train_group(configs, runs_dir=tmp_path / "runs")
    assert all(m.status == "completed" for m in members)
    first, second = (events(m.dir) for m in members)
    assert first == from_files(members[0].dir) and second == from_files(members[1].dir) and first != second


def test_without_the_package_one_line_names_the_fix_before_anything_is_written(tmp_path, data_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    path = write_yaml(tmp_path / "c.yaml", SMALL)
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output
    assert "train.tensorboard" in lines[0] and "pip install 'actexp[tensorboard]'" in lines[0]
    assert not (tmp_path / "runs").exists()
    off = cli("train", path, "train.tensorboard=false", "--runs-dir", tmp_path / "runs", "-q")
    assert off.exit_code == 0 and not any((run / BOARD).exists() for run in run_dirs(tmp_path / "runs"))
    # a sweep says it once, before its folder exists, rather than failing every run
    sweep = cli("sweep", path, "--seeds", "2", "--runs-dir", tmp_path / "swept")
    assert sweep.exit_code == 2 and len(sweep.output.strip().splitlines()) == 1 and "pip install 'actexp[tensorboard]'" in sweep.output
    assert not (tmp_path / "swept").exists()


@needs_tensorboard
def test_a_board_that_cannot_write_warns_once_and_the_run_goes_on(tmp_path, data_root, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    from actexp.board import Board
    from actexp.runs import RunFolderWarning

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(SummaryWriter, "add_scalar", disk_full)
        with pytest.warns(RunFolderWarning, match="No space left") as heard:
            run = actexp.train(SMALL, runs_dir=tmp_path / "runs")
    assert run.status == "completed" and len(heard) == 1
    # a tensorboard/ that is a file or a link (a damaged or hostile folder): nothing written through it
    for kind in ("file", "link"):
        folder = tmp_path / kind
        folder.mkdir()
        if kind == "file":
            (folder / BOARD).write_text("not a folder")
        else:
            (tmp_path / "elsewhere").mkdir(exist_ok=True)
            (folder / BOARD).symlink_to(tmp_path / "elsewhere")
        with pytest.warns(RunFolderWarning, match="is not a folder"):
            board = Board(folder, [{"epoch": 1, "train_loss": 1.0}])
        board.log({"epoch": 2, "train_loss": 0.5})
        board.close()
    assert not any((tmp_path / "elsewhere").iterdir())
