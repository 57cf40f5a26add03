"""End-to-end: XOR, a tiny MNIST-format fixture through the CLI and the Python API, run folder
contents, checkpoints, early stopping, determinism, divergence, interruption and resume."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import actexp
from actexp.config import config_from_dict, config_hash, load_config
from actexp.errors import ConfigError
from actexp.data import load_data
from actexp.model import build_model, count_parameters
from actexp.runs import EPOCH_COLUMNS
from actexp.evaluation import evaluate
from conftest import REPO, cli, run_dirs, tiny_config, write_yaml


def _without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


# With train.diagnostics on (the default), metrics.jsonl starts with an epoch-0 record: the model
# before training, with no train_* keys. Run.history and metrics.csv hold the trained epochs only.
EPOCH_ZERO_KEYS = ("epoch", "val_loss", "val_acc", "layers")


def _records(folder):
    """Every record of a run's metrics.jsonl, the epoch-0 record included."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _evaluate_checkpoint(config, path, split="test"):
    """(loss, accuracy) of a checkpoint's weights on a split, rebuilt independently of the run."""
    data = load_data(config.data, "cpu")
    model = build_model(config.model, data.n_features, data.n_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
    return evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))


# ----------------------------------------------------------------------------- XOR


@pytest.mark.parametrize("activation,low,high", [("linear", 0.0, 0.80), ("relu", 0.95, 1.0), ("sigmoid", 0.95, 1.0)])
def test_xor(tmp_path, activation, low, high):
    path = REPO / "configs" / "xor" / f"{activation}.yaml"
    run = actexp.train(path, runs_dir=tmp_path / "runs")
    assert run.status == "completed"
    assert low <= run.summary["test_acc"] <= high
    assert run.dir.parent == tmp_path / "runs" / load_config(path).name


# ----------------------------------------------------------------------------- the run folder, through the CLI


def test_cli_run_writes_every_file(tmp_path, data_root):
    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(train={"epochs": 3, "checkpoint": "both"}))
    runs = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    for epoch in (1, 2, 3):
        assert f"epoch   {epoch}  train loss" in result.output
    assert "completed in" in result.output

    (run,) = run_dirs(runs)
    assert run.parent == runs / "tiny"
    config = load_config(path)
    assert [p.name for p in run.rglob(".*")] == [".lock"]  # no temp files left behind; the lock file stays

    # config.yaml: the resolved config, every key, reloadable to the same Config
    saved = load_config(run / "config.yaml")
    assert saved == config
    text = (run / "config.yaml").read_text()
    for key in ("val_size:", "bias_init:", "weight_decay:", "max_norm:", "early_stopping:", "betas:"):
        assert key in text

    # metrics.jsonl: the epoch-0 record (before training), then one object per epoch
    zero, *history = _records(run)
    assert tuple(zero) == EPOCH_ZERO_KEYS and zero["epoch"] == 0
    assert 0 <= zero["val_acc"] <= 1 and zero["val_loss"] > 0
    assert [row["layer"] for row in zero["layers"]] == [1, "output"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for record in history:
        assert tuple(record) == EPOCH_COLUMNS + ("layers",)
        assert [row["layer"] for row in record["layers"]] == [1, "output"]
        assert 0 <= record["train_acc"] <= 1 and 0 <= record["val_acc"] <= 1
        assert record["train_loss"] > 0 and record["val_loss"] > 0
        assert record["lr"] == 0.003 and record["seconds"] > 0
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[0]["val_loss"] < zero["val_loss"]  # epoch 0 is the untrained model
    assert (run / "diagnostics.csv").is_file()

    # metrics.csv: the same rows, trained epochs only, flat columns only
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [tuple(r) for r in rows] == [EPOCH_COLUMNS] * 3
    assert [{k: float(v) for k, v in r.items()} for r in rows] == [{k: float(r[k]) for k in EPOCH_COLUMNS} for r in history]

    # summary.json
    summary = json.loads((run / "summary.json").read_text())
    best = min(history, key=lambda r: r["val_loss"])
    assert summary["status"] == "completed"
    assert summary["name"] == "tiny" and summary["run_id"] == run.name
    assert summary["config_hash"] == config_hash(config)
    assert summary["monitor"] == "val_loss"
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_val_loss"] == best["val_loss"] and summary["best_val_acc"] == best["val_acc"]
    assert summary["epochs_completed"] == 3 and summary["selected_epoch"] == 3 and summary["stopped_early"] is False
    assert summary["test_acc"] >= 0.9 and 0 < summary["test_loss"] < 1
    assert summary["n_params"] == (784 * 32 + 32) + (32 * 10 + 10)
    assert summary["device"] == "cpu" and summary["threads"] == torch.get_num_threads()
    assert 0 < summary["wall_seconds"] < 60
    assert summary["data"] == {"dataset": "mnist", "n_train": 480, "n_val": 120, "n_test": 200}
    versions = summary["versions"]
    assert versions["torch"] == torch.__version__ and versions["actexp"] == actexp.__version__
    from importlib.metadata import version

    assert versions["torchvision"] == version("torchvision")  # (without importing torchvision: a run's start stays fast)

    # checkpoints: last.pt and best.pt hold model, optimizer, epoch and RNG states
    last = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 3
    assert {"model", "optimizer", "epoch", "rng"} <= set(last)
    assert set(last["rng"]) >= {"torch", "batch_order"}
    assert isinstance(last["rng"]["torch"], torch.ByteTensor) and isinstance(last["rng"]["batch_order"], torch.ByteTensor)
    assert last["optimizer"]["state"] and last["optimizer"]["param_groups"][0]["lr"] == 0.003
    # the selected (last) weights give the summary's test metrics
    test_loss, test_acc = _evaluate_checkpoint(config, run / "checkpoints" / "last.pt")
    assert test_loss == pytest.approx(summary["test_loss"], rel=1e-6) and test_acc == summary["test_acc"]
    best_state = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert best_state["epoch"] == summary["best_epoch"]
    assert _evaluate_checkpoint(config, run / "checkpoints" / "best.pt", "val")[0] == pytest.approx(summary["best_val_loss"], rel=1e-6)


@pytest.mark.parametrize("mode,files", [("last", {"last.pt"}), ("best", {"best.pt"}), ("both", {"last.pt", "best.pt"}), ("none", set())])
def test_checkpoint_modes(tmp_path, data_root, mode, files):
    run = actexp.train(tiny_config(train={"epochs": 2, "checkpoint": mode}), runs_dir=tmp_path / "runs")
    folder = run.dir / "checkpoints"
    assert {p.name for p in folder.iterdir()} == files if files else not folder.exists()


def test_python_api_takes_a_dict(tmp_path, data_root):
    run = actexp.train(tiny_config(train={"epochs": 1}), runs_dir=tmp_path / "runs")
    assert isinstance(run, actexp.Run) and run.status == "completed"
    assert run.dir.parent == tmp_path / "runs" / "tiny"
    assert run.summary == json.loads((run.dir / "summary.json").read_text())
    assert [r["epoch"] for r in run.history] == [1]
    unnamed = dict(tiny_config(train={"epochs": 1}))
    del unnamed["name"]
    assert actexp.train(unnamed, runs_dir=tmp_path / "runs").dir.parent.name == "experiment"


def test_two_runs_get_two_folders(tmp_path, data_root):
    a = actexp.train(tiny_config(train={"epochs": 1}), runs_dir=tmp_path / "runs")
    b = actexp.train(tiny_config(train={"epochs": 1}), runs_dir=tmp_path / "runs")
    assert a.dir != b.dir and a.dir.parent == b.dir.parent
    assert len(run_dirs(tmp_path / "runs")) == 2


@pytest.mark.parametrize(
    "dataset,model,epochs,min_acc",
    [
        ("fashion_mnist", {"hidden": [32]}, 3, 0.9),
        ("cifar100", {"hidden": [64]}, 5, 0.5),  # chance: 0.01
    ],
)
def test_image_sets_train(tmp_path, data_root, dataset, model, epochs, min_acc):
    run = actexp.train(tiny_config(data={"dataset": dataset}, model=model, train={"epochs": epochs}), runs_dir=tmp_path / "runs")
    assert run.status == "completed" and run.summary["test_acc"] >= min_acc
    n_in = 3072 if dataset == "cifar100" else 784
    n_out = 100 if dataset == "cifar100" else 10
    width = model["hidden"][0]
    assert run.summary["n_params"] == n_in * width + width + width * n_out + n_out


@pytest.mark.parametrize(
    "model",
    [
        {"hidden": [16, 16], "activation": {"name": "maxout", "k": 3}},
        {"hidden": [16], "batch_norm": True, "dropout": 0.3},
        {"depth": 2, "width": 16, "activation": "prelu", "init": "he_uniform", "bias_init": 0.01},
        {"hidden": [16], "activation": "swish", "init": "orthogonal", "bias_init": {"name": "normal", "std": 0.1}},
    ],
    ids=["maxout", "batchnorm-dropout", "prelu-depth", "swish-orthogonal"],
)
def test_model_variants_train(tmp_path, data_root, model):
    config = config_from_dict(tiny_config(model=model, train={"epochs": 2}))
    run = actexp.train(config, runs_dir=tmp_path / "runs")
    assert run.status == "completed" and run.summary["test_acc"] >= 0.8
    assert run.summary["n_params"] == count_parameters(build_model(config.model, 784, 10))


def test_schedule_shows_in_the_metrics(tmp_path, data_root):
    config = tiny_config(optim={"optimizer": {"name": "sgd", "momentum": 0.9}, "lr": 0.05, "schedule": {"name": "step", "step_size": 2, "gamma": 0.5}},
                         train={"epochs": 5})
    run = actexp.train(config, runs_dir=tmp_path / "runs")
    assert [r["lr"] for r in run.history] == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125])
    assert run.summary["test_acc"] >= 0.9


# ----------------------------------------------------------------------------- regularization


def _weights(run):
    return torch.load(run.dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]


def test_max_norm_caps_each_units_incoming_weights(tmp_path, data_root):
    run = actexp.train(tiny_config(regularization={"max_norm": 0.5}, train={"epochs": 2}), runs_dir=tmp_path / "runs")
    free = actexp.train(tiny_config(train={"epochs": 2}), runs_dir=tmp_path / "runs")
    for key in ("hidden.0.linear.weight", "output.weight"):
        assert _weights(run)[key].norm(dim=1).max().item() <= 0.5 + 1e-5
        assert _weights(free)[key].norm(dim=1).max().item() > 0.5


def test_weight_and_activity_penalties_shrink(tmp_path, data_root):
    base = actexp.train(tiny_config(train={"epochs": 2}), runs_dir=tmp_path / "runs")
    l2 = actexp.train(tiny_config(regularization={"l2": 0.01}, train={"epochs": 2}), runs_dir=tmp_path / "runs")
    l1 = actexp.train(tiny_config(regularization={"l1": 0.003}, train={"epochs": 2}), runs_dir=tmp_path / "runs")
    key = "hidden.0.linear.weight"
    assert _weights(l2)[key].square().sum() < 0.7 * _weights(base)[key].square().sum()
    assert _weights(l1)[key].abs().sum() < 0.7 * _weights(base)[key].abs().sum()

    def mean_activation(run):
        config = load_config(run.dir / "config.yaml")
        data = load_data(config.data, "cpu")
        model = build_model(config.model, data.n_features, data.n_classes)
        model.load_state_dict(_weights(run))
        with torch.no_grad():
            return model.forward_with_activations(data.x_test)[1][0].abs().mean().item()

    activity = actexp.train(tiny_config(regularization={"activity_l1": 0.05}, train={"epochs": 2}), runs_dir=tmp_path / "runs")
    assert mean_activation(activity) < 0.5 * mean_activation(base)
    assert activity.summary["test_acc"] >= 0.8


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path, data_root):
    # min_delta larger than any possible change: only epoch 1 ever counts as an improvement.
    config = tiny_config(train={"epochs": 10, "checkpoint": "both", "early_stopping": {"patience": 2, "min_delta": 100.0}})
    run = actexp.train(config, runs_dir=tmp_path / "runs")
    s = run.summary
    assert s["status"] == "completed" and s["stopped_early"] is True
    assert s["epochs_completed"] == 3 and [r["epoch"] for r in run.history] == [1, 2, 3]
    assert [r["epoch"] for r in _records(run.dir)] == [0, 1, 2, 3]
    assert s["best_epoch"] == 1 and s["selected_epoch"] == 1
    assert s["best_val_loss"] == run.history[0]["val_loss"]
    resolved = load_config(run.dir / "config.yaml")
    best = _evaluate_checkpoint(resolved, run.dir / "checkpoints" / "best.pt")
    last = _evaluate_checkpoint(resolved, run.dir / "checkpoints" / "last.pt")
    assert s["test_loss"] == pytest.approx(best[0], rel=1e-6) and s["test_acc"] == best[1]
    assert not math.isclose(best[0], last[0], rel_tol=1e-3)

    keep_last = actexp.train(
        tiny_config(train={"epochs": 10, "early_stopping": {"patience": 2, "min_delta": 100.0, "restore_best": False}}),
        runs_dir=tmp_path / "runs",
    )
    assert keep_last.summary["selected_epoch"] == 3 and keep_last.summary["best_epoch"] == 1
    assert keep_last.summary["test_loss"] == pytest.approx(last[0], rel=1e-6)


def test_without_early_stopping_the_best_val_loss_epoch_is_the_result(tmp_path, data_root, monkeypatch):
    """The selection rule: the best epoch by val_loss is the run's result; the test set is evaluated
    with its weights, and summary.json and the end-of-run line carry that epoch's figures."""
    import actexp.training as training

    real, calls = training.evaluate, {"val": 0}
    planted = [0.9, 0.2, 0.6, 0.7]  # validation losses of epochs 1..4: epoch 2 is the best

    def evaluate(model, x, y):
        loss, acc = real(model, x, y)
        if len(y) == 120:  # the fixture's validation split (test has 200)
            calls["val"] += 1
            return planted[calls["val"] - 1], acc
        return loss, acc

    monkeypatch.setattr(training, "evaluate", evaluate)
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 4, "checkpoint": "both", "diagnostics": False}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(tmp_path / "runs")
    s = json.loads((run / "summary.json").read_text())
    history = _records(run)
    assert s["selected_epoch"] == s["best_epoch"] == 2 and s["epochs_completed"] == 4
    assert {k: s[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")} == {k: history[1][k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")}
    resolved = load_config(run / "config.yaml")
    assert (s["test_loss"], s["test_acc"]) == pytest.approx(_evaluate_checkpoint(resolved, run / "checkpoints" / "best.pt"), rel=1e-6)
    words = f"epoch 2 (best val_loss): val acc {history[1]['val_acc']:.4f}, val loss 0.2000, test acc {s['test_acc']:.4f}"
    assert words in result.output
    # Every command reports the same epoch and figures: show, runs, runs --csv, compare.
    assert words in cli("show", run).output
    listed = cli("runs", tmp_path / "runs").output
    assert f"{history[1]['val_acc']:.4f}" in listed and f"{s['test_acc']:.4f}" in listed
    assert f"{history[3]['val_acc']:.4f}" not in listed or history[3]["val_acc"] == history[1]["val_acc"]
    (row,) = list(csv.DictReader(cli("runs", "--csv", tmp_path / "runs").stdout.splitlines()))
    assert (int(row["selected_epoch"]), float(row["val_acc"]), float(row["test_acc"])) == (2, history[1]["val_acc"], s["test_acc"])
    (compared,) = actexp.compare([run]).rows
    assert compared.metric.mean == history[1]["val_acc"] and compared.test_acc.mean == s["test_acc"]


def test_early_stopping_on_accuracy(tmp_path, data_root):
    # Validation accuracy reaches 1.0 in the first epochs of this easy set and cannot improve on it.
    run = actexp.train(tiny_config(train={"epochs": 20, "early_stopping": {"monitor": "val_acc", "patience": 1}}), runs_dir=tmp_path / "runs")
    s = run.summary
    accs = [r["val_acc"] for r in run.history]
    assert s["stopped_early"] is True and s["epochs_completed"] < 20
    assert s["monitor"] == "val_acc" and s["best_epoch"] == accs.index(max(accs)) + 1
    assert s["epochs_completed"] == s["best_epoch"] + 1
    assert s["selected_epoch"] == s["best_epoch"]


def test_no_early_stopping_runs_every_epoch(tmp_path, data_root):
    run = actexp.train(tiny_config(train={"epochs": 4}), runs_dir=tmp_path / "runs")
    assert run.summary["epochs_completed"] == 4 and run.summary["stopped_early"] is False


# ----------------------------------------------------------------------------- determinism


def test_same_config_and_seed_give_identical_metrics(tmp_path, data_root):
    config = tiny_config(model={"hidden": [32], "dropout": 0.2}, train={"epochs": 3})
    a = actexp.train(config, runs_dir=tmp_path / "runs")
    torch.manual_seed(1234)  # the caller's RNG state must not matter
    b = actexp.train(config, runs_dir=tmp_path / "runs")
    assert _without_seconds(a.history) == _without_seconds(b.history)
    assert a.summary["test_loss"] == b.summary["test_loss"] and a.summary["test_acc"] == b.summary["test_acc"]
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = actexp.train(tiny_config(model={"hidden": [32], "dropout": 0.2}, train={"epochs": 3, "seed": 1}), runs_dir=tmp_path / "runs")
    assert other.history[0]["train_loss"] != a.history[0]["train_loss"]


def test_training_leaves_the_callers_rng_alone(tmp_path, data_root):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    actexp.train(tiny_config(train={"epochs": 1}), runs_dir=tmp_path / "runs")
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- divergence


DIVERGING = {"optim": {"optimizer": "sgd", "lr": 1e6}}


def test_diverging_run(tmp_path, data_root):
    run = actexp.train(tiny_config(**DIVERGING), runs_dir=tmp_path / "runs")
    assert run.status == "diverged"
    message = run.summary["error"]
    assert "non-finite" in message and "epoch 1" in message and "lr 1e+06" in message and "optim.lr" in message
    assert json.loads((run.dir / "summary.json").read_text())["status"] == "diverged"
    assert "test_acc" not in run.summary


def test_diverging_run_through_the_cli(tmp_path, data_root):
    path = write_yaml(tmp_path / "diverge.yaml", tiny_config(**DIVERGING))
    runs = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", runs, "--quiet")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    (run,) = run_dirs(runs)
    assert lines[0].startswith("error: diverged: the training loss became non-finite") and str(run) in lines[0]
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    # Without --quiet the progress goes to stdout and the error is still one line on stderr.
    result = cli("train", path, "--runs-dir", runs)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1 and "diverged" in result.stderr


def test_later_divergence_keeps_finished_epochs(tmp_path, data_root, monkeypatch):
    # A run that is fine for two epochs, then its loss becomes non-finite.
    import actexp.training as training

    original = training.train_epoch

    def poisoned(stepper, epoch, progress, each_step=None):
        assert stepper.tracker is not None  # diagnostics are on by default
        losses, accs = original(stepper, epoch, progress, each_step)
        return ([math.inf] * len(losses), accs) if epoch == 3 else (losses, accs)

    monkeypatch.setattr(training, "train_epoch", poisoned)
    run = actexp.train(tiny_config(train={"epochs": 5}), runs_dir=tmp_path / "runs")
    assert run.status == "diverged" and "epoch 3" in run.summary["error"]
    assert [r["epoch"] for r in run.history] == [1, 2]
    assert [r["epoch"] for r in _records(run.dir)] == [0, 1, 2]
    assert run.summary["epochs_completed"] == 2 and run.summary["best_epoch"] in (1, 2)


# ----------------------------------------------------------------------------- interruption and resume


def _stop_after(epoch):
    def progress(event, info):
        if event == "epoch" and info["record"]["epoch"] == epoch:
            raise KeyboardInterrupt

    return progress


RESUMABLE = [
    tiny_config(model={"hidden": [32], "dropout": 0.2}, train={"epochs": 5},
                optim={"optimizer": "adam", "lr": 0.003, "schedule": {"name": "step", "step_size": 2, "gamma": 0.5}}),
    tiny_config(model={"hidden": [16], "batch_norm": True}, train={"epochs": 5, "checkpoint": "both"},
                optim={"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}, "lr": 0.02, "schedule": "cosine"}),
    tiny_config(train={"epochs": 6, "early_stopping": {"patience": 2, "min_delta": 100.0}},
                optim={"optimizer": "rmsprop", "lr": 0.001}),
]


@pytest.mark.parametrize("config", RESUMABLE, ids=["adam-dropout-step", "sgd-batchnorm-cosine", "rmsprop-early-stopping"])
def test_interrupt_and_resume_match_an_uninterrupted_run(tmp_path, data_root, config):
    full = actexp.train(config, runs_dir=tmp_path / "runs")

    folder = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(config, run_dir=folder, progress=_stop_after(2))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 2
    full_zero, *full_trained = _records(full.dir)
    assert tuple(full_zero) == EPOCH_ZERO_KEYS and full_zero["epoch"] == 0
    assert _without_seconds(full_trained) == _without_seconds(full.history)
    kept = _records(folder)
    assert kept[0] == full_zero
    assert _without_seconds(kept[1:]) == _without_seconds(full.history[:2])
    assert torch.load(folder / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 2

    resumed = actexp.train(config, resume=folder)
    assert resumed.dir == folder and resumed.status == "completed"
    assert _without_seconds(resumed.history) == _without_seconds(full.history)
    records = _records(folder)  # the epoch-0 record kept once, then every epoch
    assert records[0] == full_zero
    assert _without_seconds(records[1:]) == _without_seconds(full.history)
    for key in ("test_loss", "test_acc", "best_epoch", "best_val_loss", "selected_epoch", "epochs_completed", "stopped_early"):
        assert resumed.summary[key] == full.summary[key], key
    assert resumed.summary["started"] == summary["started"]
    assert all(torch.equal(a, b) for a, b in zip(_weights(resumed).values(), _weights(full).values()))


def test_interrupt_and_resume_through_the_cli(tmp_path, data_root, monkeypatch):
    from actexp.display import TrainingDisplay

    config = RESUMABLE[0]
    path = write_yaml(tmp_path / "c.yaml", config)
    full = actexp.train(config, runs_dir=tmp_path / "reference")

    original = TrainingDisplay.on_epoch

    def on_epoch(self, info):
        original(self, info)
        if info["record"]["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingDisplay, "on_epoch", on_epoch)
    runs = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", runs)
    assert result.exit_code == 130, result.output
    (run,) = run_dirs(runs)
    assert result.stderr.strip().splitlines() == [
        f"error: interrupted: {run} keeps every finished epoch; continue with `actexp train --resume {run}`"
    ]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(TrainingDisplay, "on_epoch", original)
    result = cli("train", "--resume", run)  # the command the message suggests
    assert result.exit_code == 0, result.output
    assert run_dirs(runs) == [run]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_loss"] == full.summary["test_loss"]
    zero, *history = _records(run)
    assert zero == _records(full.dir)[0] and tuple(zero) == EPOCH_ZERO_KEYS
    assert _without_seconds(history) == _without_seconds(full.history)


def test_resume_without_a_last_checkpoint_is_one_line(tmp_path, data_root):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 3, "checkpoint": "best"}))
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(load_config(path), run_dir=folder, progress=_stop_after(1))
    result = cli("train", "--resume", folder)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "last.pt" in result.output and "Traceback" not in result.output
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    missing = cli("train", "--resume", tmp_path / "nothing-here")
    assert missing.exit_code == 2 and "not a run folder" in missing.output and len(missing.output.strip().splitlines()) == 1
    bare = cli("train")
    assert bare.exit_code == 2 and "CONFIG" in bare.output and "Traceback" not in bare.output


@pytest.mark.parametrize("diagnostics", [True, False], ids=["in-epoch-0", "in-epoch-1"])
def test_failure_inside_training_sets_status_failed(tmp_path, data_root, monkeypatch, diagnostics):
    # With diagnostics on, the first evaluation is the epoch-0 record's; with them off, epoch 1's.
    import actexp.training as training

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(training, "evaluate", broken)
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 2, "diagnostics": diagnostics}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: RuntimeError: simulated failure (set ACTEXP_DEBUG=1 for the traceback)"]
    (run,) = run_dirs(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "simulated failure" in summary["error"]
    assert summary["epochs_completed"] == 0 and _records(run) == []


def test_batch_norm_with_a_lone_last_sample(tmp_path, data_root):
    # 401 training samples in batches of 100: the last sample must not form a batch of one,
    # which BatchNorm cannot normalize in training mode.
    events = []
    config = tiny_config(data={"dataset": "mnist", "subset": 401}, model={"hidden": [16], "batch_norm": True},
                         train={"epochs": 2, "batch_size": 100})
    run = actexp.train(config, runs_dir=tmp_path / "runs", progress=lambda event, info: events.append((event, info)))
    assert run.status == "completed" and run.summary["data"]["n_train"] == 401
    assert next(info for event, info in events if event == "start")["steps"] == 4
    assert max(info["step"] for event, info in events if event == "step") == 4
    for record in run.history:
        assert record["train_acc"] * 401 == pytest.approx(round(record["train_acc"] * 401))
    plain = actexp.train(tiny_config(data={"dataset": "mnist", "subset": 401}, train={"epochs": 1, "batch_size": 100}),
                         runs_dir=tmp_path / "runs", progress=lambda event, info: events.append((event, info)))
    assert plain.status == "completed" and events[-1][0] == "end"
    assert [info["steps"] for event, info in events if event == "start"][-1] == 5


def test_resume_keeps_the_runs_own_config_and_refuses_finished_or_unstarted_runs(tmp_path, data_root):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(load_config(path), run_dir=folder, progress=_stop_after(1))
    for extra in (["--set", "train.epochs=5"], [path]):
        result = cli("train", *extra, "--resume", folder)
        assert result.exit_code == 2 and "drop CONFIG and --set" in result.output, result.output
    with pytest.raises(ConfigError, match="differs from the run's config.yaml"):
        actexp.train(load_config(path, ["train.epochs=5"]), resume=folder)
    assert cli("train", "--resume", folder).exit_code == 0
    done = cli("train", "--resume", folder)
    assert done.exit_code == 1 and "already completed" in done.output and len(done.output.strip().splitlines()) == 1

    def stop_at_start(event, info):
        if event == "start":
            raise KeyboardInterrupt

    unstarted = tmp_path / "unstarted"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(load_config(path), run_dir=unstarted, progress=stop_at_start)
    result = cli("train", "--resume", unstarted)
    assert result.exit_code == 1 and "nothing to resume" in result.output


# ----------------------------------------------------------------------------- checkpoints by time


def test_last_pt_is_written_at_most_every_checkpoint_every_seconds(tmp_path):
    from actexp.checkpointing import CheckpointSchedule, CheckpointWriter

    now = [0.0]
    writer = CheckpointWriter()
    schedule = CheckpointSchedule(tmp_path, "both", 60.0, writer, clock=lambda: now[0])

    def written() -> dict:
        writer.flush()
        return {p.name: torch.load(p, weights_only=True)["epoch"] for p in sorted((tmp_path / "checkpoints").glob("*.pt"))}

    for epoch, seconds, improved in ((1, 20, True), (2, 40, False), (3, 61, False), (4, 90, True), (5, 100, False)):
        now[0] = seconds
        schedule.epoch({"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}}, improved)
        if epoch == 3:
            assert written() == {"best.pt": 1, "last.pt": 3}  # due at 61 s: the newest last, the best so far
    assert written() == {"best.pt": 1, "last.pt": 3}  # epochs 4 and 5 wait in memory
    schedule.save()  # the end of the run, or Ctrl-C/SIGTERM
    assert written() == {"best.pt": 4, "last.pt": 5}
    writer.close()


def test_a_checkpoint_that_cannot_be_written_is_a_warning_and_the_run_completes(tmp_path, data_root, monkeypatch):
    import actexp.checkpointing as checkpointing
    from actexp.runs import RunFolderWarning

    def full_disk(state, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing, "save_checkpoint", full_disk)
    with pytest.warns(RunFolderWarning, match="last.pt not written .*No space left on device.*training goes on"):
        run = actexp.train(tiny_config(train={"epochs": 2, "checkpoint_every": 0}), runs_dir=tmp_path)
    assert run.status == "completed" and run.summary["test_acc"] > 0 and not (run.dir / "checkpoints" / "last.pt").exists()


def test_ctrl_c_saves_the_last_finished_epoch_that_was_not_yet_due(tmp_path, data_root):
    """With the default interval nothing is written during a short run; Ctrl-C in the middle of an
    epoch writes the last finished one, and the resumed run equals an uninterrupted one."""
    config = tiny_config(train={"epochs": 4})
    full = actexp.train(config, runs_dir=tmp_path / "runs")
    folder = tmp_path / "interrupted"
    seen = []

    def stop_mid_epoch(event, info):
        if event == "epoch":
            assert not (folder / "checkpoints" / "last.pt").exists()  # not due: 60 s by default
            seen.append(info["record"]["epoch"])
        if event == "step" and len(seen) == 2 and info["step"] >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        actexp.train(config, run_dir=folder, progress=stop_mid_epoch)
    assert torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = actexp.train(config, resume=folder)
    assert _without_seconds(resumed.history) == _without_seconds(full.history)
    assert resumed.summary["test_loss"] == full.summary["test_loss"]
