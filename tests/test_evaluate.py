"""Using what a run trained: every completed run keeps its result weights (model.pt) and draws its
curves.png; load_run gives back the model, config and preprocessing that reproduce the run's own
test figures exactly; `actexp eval` measures a run class by class, `actexp plot --boundary` draws
a 2-D model's decision regions."""

from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml

import actexp
from actexp.config import config_from_dict
from actexp.errors import ActexpError, ConfigError
from actexp.evaluation import decision_grid, evaluate_run, load_run
from actexp.runs import RunFolderWarning, read_history, read_summary
from actexp.training import train, train_group

from conftest import cli, tiny_config

PNG = b"\x89PNG\r\n\x1a\n"
XOR = {
    "name": "xor",
    "data": {"dataset": {"name": "xor", "n_train": 600, "n_test": 200}, "val_size": 100},
    "model": {"hidden": [16], "activation": "relu"},
    "optim": {"optimizer": "adam", "lr": 0.02},
    "train": {"epochs": 15, "batch_size": 20, "device": "cpu", "diagnostics": False},
}
# The four cluster centres of xor and their classes (the XOR of the signs).
CORNERS = {(-1.0, -1.0): 0, (1.0, 1.0): 0, (-1.0, 1.0): 1, (1.0, -1.0): 1}


def accuracy_on_raw(run, images, labels) -> float:
    """What a user computes from load_run and the dataset's raw images."""
    predicted = run.predict(images).numpy()
    return int((predicted == np.asarray(labels)).sum()) / len(labels)


def xor_run(tmp_path, activation="relu", **train_settings):
    config = {**XOR, "name": f"xor_{activation}", "model": {**XOR["model"], "activation": activation}, "train": {**XOR["train"], **train_settings}}
    return train(config, runs_dir=tmp_path / "runs")


# ----------------------------------------------------------------------------- load_run reproduces the run


@pytest.mark.parametrize("train_settings", [
    {},
    {"checkpoint": "none"},
    # stops early, and restores the best epoch: the selected epoch is not the last one
    {"epochs": 12, "early_stopping": {"monitor": "val_acc", "patience": 2}, "checkpoint": "best"},
    # keeps the last epoch's weights where the best was another
    {"epochs": 6, "early_stopping": {"patience": 100, "restore_best": False}},
    # the run's own input scaling (data.normalize) travels with it
    {"normalize": "unit"},
    {"normalize": "none"},
], ids=["default", "checkpoint-none", "restore-best", "last-epoch", "unit-inputs", "raw-inputs"])
def test_load_run_reproduces_the_runs_test_figures_exactly(tmp_path, data_root, mnist_set, train_settings):
    settings = {k: v for k, v in train_settings.items() if k != "normalize"}
    config = tiny_config(train={**tiny_config()["train"], **settings}, data={"dataset": "mnist", "normalize": train_settings.get("normalize", "standardize")})
    trained = train(config, runs_dir=tmp_path / "runs")
    summary = trained.summary
    assert summary["status"] == "completed"
    run = load_run(trained.dir)
    assert run.epoch == summary["selected_epoch"] and not run.model.training
    assert accuracy_on_raw(run, mnist_set.x_test, mnist_set.y_test) == summary["test_acc"]
    result = evaluate_run(run)
    assert (result["loss"], result["accuracy"]) == (summary["test_loss"], summary["test_acc"])
    # the validation split is the one the run held out: the selected epoch's record, exactly
    val = evaluate_run(run, split="val")
    assert (val["loss"], val["accuracy"], val["n"]) == (summary["val_loss"], summary["val_acc"], summary["data"]["n_val"])


def test_a_stopped_early_runs_result_is_its_best_epoch_not_its_last(tmp_path, data_root):
    trained = train(tiny_config(train={**tiny_config()["train"], "epochs": 12, "early_stopping": {"monitor": "val_acc", "patience": 2}}),
                    runs_dir=tmp_path / "runs")
    history = read_history(trained.dir)
    selected = trained.summary["selected_epoch"]
    assert selected < trained.summary["epochs_completed"]  # else this test shows nothing
    val = evaluate_run(trained.dir, split="val")
    assert val["epoch"] == selected and val["accuracy"] == next(r["val_acc"] for r in history if r["epoch"] == selected)


def test_a_fused_group_member_reproduces_its_test_figures(tmp_path, data_root, mnist_set):
    configs = [config_from_dict({**tiny_config(train={**tiny_config()["train"], "seed": seed, "checkpoint": checkpoint}), "name": f"m{seed}"})
               for seed, checkpoint in ((0, "none"), (1, "last"), (2, "both"))]
    group = train_group(configs, runs_dir=tmp_path / "group")
    for member in group:
        assert member.summary["fused"] == {"members": 3}
        run = load_run(member.dir)
        assert accuracy_on_raw(run, mnist_set.x_test, mnist_set.y_test) == member.summary["test_acc"]
        assert evaluate_run(run)["loss"] == member.summary["test_loss"]
        # each member's own numbers, not the stack's storage
        size = (member.dir / "model.pt").stat().st_size
        assert size < 4 * member.summary["n_params"] + 8192


def test_model_pt_is_kept_whatever_train_checkpoint_says_and_is_small(tmp_path, data_root):
    trained = train(tiny_config(train={**tiny_config()["train"], "checkpoint": "none"}), runs_dir=tmp_path / "runs")
    assert not (trained.dir / "checkpoints").exists()
    state = torch.load(trained.dir / "model.pt", weights_only=True)
    assert set(state) == {"format", "epoch", "model"} and state["epoch"] == trained.summary["selected_epoch"]
    assert sum(t.numel() for t in state["model"].values()) == trained.summary["n_params"]
    assert (trained.dir / "model.pt").stat().st_size < 4 * trained.summary["n_params"] + 8192


def test_cifar_images_in_either_layout_and_preprocessing_checks_its_input(tmp_path, data_root, cifar_set):
    trained = train(tiny_config(data={"dataset": "cifar100"}, train={**tiny_config()["train"], "epochs": 1}), runs_dir=tmp_path / "runs")
    run = load_run(trained.dir)
    chw = cifar_set.x_test.reshape(-1, 3, 32, 32)
    hwc = chw.transpose(0, 2, 3, 1)  # as torchvision's CIFAR100.data and PIL hold them
    assert accuracy_on_raw(run, hwc, cifar_set.y_test) == accuracy_on_raw(run, chw, cifar_set.y_test) == trained.summary["test_acc"]
    assert torch.equal(run.preprocess(hwc[0]), run.preprocess(torch.from_numpy(chw[:1])))
    with pytest.raises(ActexpError, match=r"^preprocess: expected uint8 pixel values .* got torch.float32$"):
        run.preprocess(torch.from_numpy(hwc).float() / 255)
    with pytest.raises(ActexpError, match=r"\(N, 3, 32, 32\) or \(N, 32, 32, 3\); got \(5, 3072\)$"):
        run.preprocess(cifar_set.x_test[:5])


def test_mnist_preprocessing_takes_what_the_dataset_stores(tmp_path, data_root, mnist_set):
    run = load_run(train(tiny_config(train={**tiny_config()["train"], "epochs": 1}), runs_dir=tmp_path / "runs").dir)
    images = mnist_set.x_test[:7]
    expected = run.preprocess(images)
    assert expected.shape == (7, 784) and expected.dtype == torch.float32
    assert torch.equal(run.preprocess(torch.from_numpy(images)), expected)
    assert torch.equal(run.preprocess(images[:, None]), expected)  # (N, 1, 28, 28), as load_data holds them
    assert torch.equal(run.preprocess(images[3]), expected[3:4])  # one image
    assert abs(float(run.preprocess(mnist_set.x_train).mean())) < 0.5  # standardized (the set's own statistics)
    with pytest.raises(ActexpError, match=r"got \(7, 784\)$"):
        run.preprocess(images.reshape(7, 784))
    with pytest.raises(ActexpError, match=r"^preprocess: expected an array of images or features"):
        run.preprocess(["not", "images"])
    read_only = np.frombuffer(images.tobytes(), np.uint8).reshape(7, 28, 28)  # as IDX readers make them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(run.preprocess(read_only), expected)


def test_a_run_without_result_weights_says_why_in_one_line(tmp_path, data_root):
    diverged = train(tiny_config(optim={"optimizer": "sgd", "lr": 1e6}), runs_dir=tmp_path / "runs")
    assert diverged.status == "diverged" and not (diverged.dir / "model.pt").exists()
    with pytest.raises(ActexpError, match=r"the run is diverged; only a completed run has result weights$"):
        load_run(diverged.dir)
    with pytest.raises(ActexpError, match=r"not a run folder \(no summary.json\)$"):
        load_run(tmp_path)
    result = cli("eval", diverged.dir)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "the run is diverged" in result.output


def test_a_run_from_before_model_pt_falls_back_to_the_checkpoint_of_its_selected_epoch(tmp_path, data_root, mnist_set):
    settings = {**tiny_config()["train"], "epochs": 12, "early_stopping": {"monitor": "val_acc", "patience": 2}}
    for checkpoint in ("last", "best"):
        trained = train(tiny_config(train={**settings, "checkpoint": checkpoint}), runs_dir=tmp_path / checkpoint)
        (trained.dir / "model.pt").unlink()
        run = load_run(trained.dir)
        assert run.epoch == trained.summary["selected_epoch"]
        assert accuracy_on_raw(run, mnist_set.x_test, mnist_set.y_test) == trained.summary["test_acc"]
    none = train(tiny_config(train={**settings, "checkpoint": "none"}), runs_dir=tmp_path / "none")
    (none.dir / "model.pt").unlink()
    with pytest.raises(ActexpError, match=r"no model.pt .* no checkpoint holds its selected epoch \d+'s weights; train the config again$"):
        load_run(none.dir)


def test_load_run_is_part_of_the_python_api():
    assert actexp.load_run is load_run and actexp.evaluate_run is evaluate_run
    assert {"load_run", "evaluate_run"} <= set(actexp.__all__)


# ----------------------------------------------------------------------------- actexp eval


def test_eval_prints_figures_per_class_accuracy_and_the_confusion_matrix(tmp_path, data_root):
    trained = train(tiny_config(train={**tiny_config()["train"], "epochs": 2}), runs_dir=tmp_path / "runs")
    result = evaluate_run(trained.dir)
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == result["n"] == 200
    assert np.trace(confusion) / result["n"] == result["accuracy"]
    for row in result["per_class"]:
        counts = confusion[row["class"]]
        assert row["n"] == counts.sum() and row["accuracy"] == counts[row["class"]] / counts.sum()
    shown = cli("eval", tmp_path / "runs" / "tiny", "-o", tmp_path / "cm.png")  # a folder of runs: its latest
    assert shown.exit_code == 0, shown.output
    assert f"accuracy {result['accuracy']:.4f}" in shown.output and f"loss {result['loss']:.4f}" in shown.output
    assert "per class" in shown.output and "confusion matrix" in shown.output and "true \\ predicted" in shown.output
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG)


def test_eval_refuses_a_dataset_whose_classes_are_not_the_runs(tmp_path, data_root):
    """MNIST and Fashion-MNIST share their input shape and their number of classes, not what the
    classes are: an MNIST model's 3 is no Dress, and an accuracy pairing them would mean nothing."""
    trained = train(tiny_config(train={**tiny_config()["train"], "epochs": 1}), runs_dir=tmp_path / "runs")
    message = ("--dataset fashion_mnist: its classes (T-shirt/top, Trouser, Pullover, …, Ankle boot) are not the classes the run's "
               "model tells apart (mnist's: 0, 1, 2, …, 9): its accuracy would pair unrelated labels; "
               "no other dataset has mnist's inputs and classes")
    with pytest.raises(ConfigError) as refused:
        evaluate_run(trained.dir, dataset="fashion_mnist")
    assert str(refused.value) == message
    shown = cli("eval", trained.dir, "--dataset", "fashion_mnist")
    assert shown.exit_code == 2 and shown.output.strip().splitlines() == [f"error: {message}"]
    own = cli("eval", trained.dir, "--dataset", "mnist")  # its own dataset, named
    assert own.exit_code == 0 and "on mnist test" in own.output and "trained on" not in own.output


def test_eval_on_another_dataset_with_the_runs_inputs_and_classes(tmp_path, data_root, fashion_set, monkeypatch):
    """A dataset whose classes are the run's (here: Fashion-MNIST's files taken for digits) is
    measured with the run's own preprocessing."""
    from dataclasses import replace

    from actexp import data

    monkeypatch.setitem(data.IMAGE_SETS, "fashion_mnist", replace(data.IMAGE_SETS["fashion_mnist"], classes=data.IMAGE_SETS["mnist"].classes))
    trained = train(tiny_config(train={**tiny_config()["train"], "epochs": 1}), runs_dir=tmp_path / "runs")
    run = load_run(trained.dir)
    result = evaluate_run(run, dataset="fashion_mnist")
    assert result["dataset"] == "fashion_mnist" and result["trained_on"] == "mnist" and result["n"] == len(fashion_set.y_test)
    # the run's own preprocessing (MNIST's statistics) on Fashion-MNIST's raw images
    assert result["accuracy"] == accuracy_on_raw(run, fashion_set.x_test, fashion_set.y_test)
    assert result["classes"][0] == "0"
    shown = cli("eval", trained.dir, "--dataset", "fashion_mnist", "--split", "val")
    assert shown.exit_code == 0 and "fashion_mnist (trained on mnist) val" in shown.output


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar100"], r"--dataset cifar100: 3072 input features and 100 classes, but the run's model \(trained on mnist\) takes 784 and tells 10 classes apart; no other dataset has mnist's inputs and classes"),
    (["--dataset", "xor"], r"--dataset xor: 2 input features and 2 classes"),
    (["--dataset", "imagenet"], r"--dataset: unknown dataset 'imagenet'"),
    (["--split", "train"], r"--split train: choose test or val"),
    (["-o", "cm.txt"], r"-o cm.txt: matplotlib writes .*; the suffix picks the format"),
])
def test_eval_refuses_what_does_not_fit_in_one_line(tmp_path, data_root, args, message):
    trained = train(tiny_config(train={**tiny_config()["train"], "epochs": 1}), runs_dir=tmp_path / "runs")
    result = cli("eval", trained.dir, *args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(message, lines[0]), lines[0]


# ----------------------------------------------------------------------------- plot --boundary


def test_the_decision_grid_of_a_relu_xor_model_gets_all_four_corners_a_linear_one_cannot(tmp_path):
    relu = decision_grid(xor_run(tmp_path).dir, resolution=60)
    assert relu.classes.shape == (60, 60) and relu.xs.shape == relu.ys.shape == (60,)
    assert {corner: relu.class_at(*corner) for corner in CORNERS} == CORNERS
    assert relu.accuracy > 0.95 and len(relu.points) == len(relu.labels) == 200
    # the grid spans the points
    assert relu.xs[0] < relu.points[:, 0].min() and relu.xs[-1] > relu.points[:, 0].max()
    linear = decision_grid(xor_run(tmp_path, "linear").dir, resolution=60)
    assert sum(linear.class_at(*corner) == label for corner, label in CORNERS.items()) <= 3
    assert linear.accuracy < 0.8


def test_plot_boundary_draws_a_2d_run_and_refuses_others_in_one_line(tmp_path, data_root):
    xor = xor_run(tmp_path)
    drawn = cli("plot", "--boundary", xor.dir, "-o", tmp_path / "b.png")
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "b.png").read_bytes().startswith(PNG) and "decision regions" in drawn.output
    mnist = train(tiny_config(train={**tiny_config()["train"], "epochs": 1}), runs_dir=tmp_path / "runs")
    refused = cli("plot", "--boundary", mnist.dir)
    lines = refused.output.strip().splitlines()
    assert refused.exit_code == 2 and len(lines) == 1 and "draws a model of two input features (xor)" in lines[0] and "mnist, 784 features" in lines[0]
    with pytest.raises(ConfigError):
        decision_grid(mnist.dir)
    assert not (tmp_path / "boundary.png").exists()
    both = cli("plot", "--boundary", xor.dir, mnist.dir)
    assert both.exit_code == 2 and "give one run folder" in both.output


# ----------------------------------------------------------------------------- curves.png


def test_a_completed_run_draws_its_curves(tmp_path):
    run = xor_run(tmp_path)
    assert (run.dir / "curves.png").read_bytes().startswith(PNG)
    from actexp.plots import draw_run_curves

    figure = draw_run_curves(read_history(run.dir), selected=run.summary["selected_epoch"])
    loss, accuracy = figure.axes
    assert [line.get_label() for line in loss.get_lines()] == ["train", "val", "selected (epoch 15)"]
    train_line = loss.get_lines()[0]
    assert list(train_line.get_ydata()) == [r["train_loss"] for r in run.history]
    assert list(accuracy.get_lines()[1].get_ydata()) == [r["val_acc"] for r in run.history]


def test_without_matplotlib_a_run_completes_without_curves(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = xor_run(tmp_path)
    assert run.status == "completed" and (run.dir / "model.pt").exists() and not (run.dir / "curves.png").exists()


def test_a_plotting_failure_is_a_warning_and_loses_nothing(tmp_path, monkeypatch):
    import actexp.plots as plots

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "draw_run_curves", broken)
    with pytest.warns(RunFolderWarning, match=r"curves.png not drawn \(RuntimeError: no fonts\); the run itself is complete"):
        run = xor_run(tmp_path)
    assert run.status == "completed" and read_summary(run.dir)["status"] == "completed"
    assert not (run.dir / "curves.png").exists() and load_run(run.dir).epoch == run.summary["selected_epoch"]
    config = tmp_path / "xor.yaml"
    config.write_text(yaml.safe_dump(XOR))
    shown = cli("train", config, "--runs-dir", tmp_path / "cli", "--quiet")
    assert shown.exit_code == 0 and "warning: " in shown.output and "no fonts" in shown.output and "Traceback" not in shown.output


def test_ctrl_c_while_the_curves_are_drawn_leaves_a_resumable_run_never_a_completed_one_said_interrupted(tmp_path, monkeypatch):
    """Drawing (importing matplotlib: about a second) comes before the run says completed, so a
    Ctrl-C then is an interrupted run, which resumes straight to its result."""
    import actexp.plots as plots

    real = plots.draw_run_curves

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "draw_run_curves", interrupted)
    with pytest.raises(KeyboardInterrupt):
        xor_run(tmp_path)
    (folder,) = (tmp_path / "runs" / "xor_relu").iterdir()
    assert read_summary(folder)["status"] == "interrupted"
    monkeypatch.setattr(plots, "draw_run_curves", real)
    resumed = train(folder / "config.yaml", resume=folder)
    reference = xor_run(tmp_path / "reference")
    assert resumed.status == "completed" and resumed.summary["test_acc"] == reference.summary["test_acc"]
    assert (folder / "curves.png").exists() and load_run(folder).epoch == reference.summary["selected_epoch"]


def test_a_folder_of_runs_means_its_latest_completed_run(tmp_path, data_root):
    import json
    import shutil

    done = train(tiny_config(train={**tiny_config()["train"], "epochs": 2}), runs_dir=tmp_path / "runs")
    later = done.dir.parent / "29991231-235959"  # a later run that failed
    shutil.copytree(done.dir, later)
    summary = json.loads((later / "summary.json").read_text())
    (later / "summary.json").write_text(json.dumps({**summary, "status": "failed", "started": "2999-12-31T23:59:59", "error": "boom"}))
    (later / "model.pt").unlink()
    result = cli("eval", done.dir.parent)
    assert result.exit_code == 0 and str(done.dir) in result.output, result.output
    (done.dir / "summary.json").write_text(json.dumps({**done.summary, "status": "failed"}))
    none = cli("eval", done.dir.parent)
    assert none.exit_code == 1 and "no completed run" in none.output


def test_a_sweep_draws_its_members_curves_in_its_driver_not_its_workers(tmp_path, monkeypatch):
    """No matplotlib on a sweep member's path: the driver draws each completed run's curves.png
    once it ends, the same figure the run would have drawn, and a later run of the same command
    draws any an interrupted driver never reached."""
    import actexp.plots as plots
    from actexp.backends import execute
    from actexp.sweep import plan_tasks, plan_sweep, load_sweep, run_sweep
    from test_sweep import write_sweep, XOR_BASE

    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, base=XOR_BASE)
    drawn_in_workers = []
    real = plots.save_run_curves
    monkeypatch.setattr(plots, "save_run_curves", lambda folder, *a, **k: drawn_in_workers.append(folder))
    sweep = load_sweep(path)
    steps, _ = plan_sweep(sweep, tmp_path / "alone")
    (task,) = plan_tasks(steps, tmp_path / "alone")
    outcomes = execute(task, lambda *a: None)
    assert [o.status for o in outcomes] == ["completed"] * 2 and drawn_in_workers == []  # a worker draws nothing
    monkeypatch.setattr(plots, "save_run_curves", real)

    result = run_sweep(path, runs_dir=tmp_path / "runs", report=False)
    for entry in result.runs:
        folder = result.dir / entry["folder"]
        assert (folder / "curves.png").read_bytes().startswith(PNG)
        (folder / "curves.png").unlink()
    run_sweep(path, runs_dir=tmp_path / "runs", report=False)  # every run done: the missing figures are drawn
    assert all((result.dir / e["folder"] / "curves.png").exists() for e in result.runs)
