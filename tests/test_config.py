"""Config validation through the CLI (`actexp validate` and `actexp train`): every bad config
exits 2 with one line naming the file and the dotted key, no traceback, no run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from actexp.config import Config, config_from_dict, config_to_yaml, load_config
from actexp.errors import ConfigError
from conftest import REPO, cli, run_dirs, tiny_config, write_yaml


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# (id, YAML text, fragments the one line must hold: the dotted key path and what is allowed)
BAD_CONFIGS = [
    ("unknown key", "model:\n  activaton: relu\n", ["model.activaton", "unknown key", "did you mean 'activation'", "allowed: hidden"]),
    ("unknown section", "trian:\n  epochs: 3\n", ["trian", "unknown key", "did you mean 'train'"]),
    ("unknown nested key", "train:\n  early_stopping:\n    patince: 3\n", ["train.early_stopping.patince", "did you mean 'patience'"]),
    ("wrong type: list expected", "model:\n  hidden: 256\n", ["model.hidden", "expected a list"]),
    ("wrong type: bool expected", "model:\n  batch_norm: 3\n", ["model.batch_norm", "expected true or false"]),
    ("wrong type: string expected", "train:\n  device: 0\n", ["train.device", "expected a string"]),
    ("bool for a float", "optim:\n  lr: true\n", ["optim.lr", "expected a number", "boolean"]),
    ("bool for an int", "train:\n  epochs: yes\n", ["train.epochs", "expected an integer", "boolean"]),
    ("float for an int", "train:\n  batch_size: 2.5\n", ["train.batch_size", "expected an integer", "2.5"]),
    ("non-numeric string", "optim:\n  lr: fast\n", ["optim.lr", "expected a number", "fast"]),
    ("non-numeric string for an int", "train:\n  epochs: ten\n", ["train.epochs", "expected an integer"]),
    ("hidden element type", "model:\n  hidden: [64, 32.5]\n", ["model.hidden[1]", "expected an integer"]),
    ("out of range: dropout", "model:\n  dropout: 1.5\n", ["model.dropout", "out of range", "[0, 1)"]),
    ("out of range: lr", "optim:\n  lr: 0\n", ["optim.lr", "out of range", "(0, inf)"]),
    ("out of range: epochs", "train:\n  epochs: 0\n", ["train.epochs", "out of range"]),
    ("out of range: hidden width", "model:\n  hidden: [64, 0]\n", ["model.hidden[1]", "out of range"]),
    ("out of range: component parameter", "model:\n  activation: {name: leaky_relu, negative_slope: -1}\n",
     ["model.activation.negative_slope", "out of range"]),
    ("literal choice", "train:\n  checkpoint: always\n", ["train.checkpoint", "choose one of none, best, last, both"]),
    ("literal choice misspelled", "train:\n  early_stopping: {monitor: val_los}\n",
     ["train.early_stopping.monitor", "did you mean 'val_loss'"]),
    ("unknown activation", "model:\n  activation: rleu\n", ["model.activation", "unknown activation 'rleu'", "did you mean 'relu'", "choose one of"]),
    ("unknown activation in a mapping", "model:\n  activation: {name: tanhh}\n", ["model.activation", "did you mean 'tanh'"]),
    ("unknown init", "model:\n  init: xavier_norml\n", ["model.init", "unknown initializer", "did you mean 'xavier_normal'"]),
    ("unknown bias init", "model:\n  bias_init: zeros\n", ["model.bias_init", "unknown initializer 'zeros'"]),
    ("unknown optimizer", "optim:\n  optimizer: adamm\n", ["optim.optimizer", "unknown optimizer 'adamm'", "did you mean 'adam'"]),
    ("unknown schedule", "optim:\n  schedule: cosin\n", ["optim.schedule", "unknown schedule", "did you mean 'cosine'"]),
    ("unknown dataset", "data:\n  dataset: mnsit\n", ["data.dataset", "unknown dataset 'mnsit'", "did you mean 'mnist'"]),
    ("unknown component parameter", "model:\n  activation: {name: leaky_relu, negative_slop: 0.2}\n",
     ["model.activation.negative_slop", "did you mean 'negative_slope'", "parameters: negative_slope"]),
    ("component parameter type", "model:\n  activation: {name: maxout, k: 2.5}\n", ["model.activation.k", "expected an integer"]),
    ("component mapping without name", "model:\n  activation: {negative_slope: 0.2}\n", ["model.activation", "needs a name"]),
    ("component as a list", "model:\n  activation: [relu]\n", ["model.activation", "expected an activation name", "got a list"]),
    ("component name not a string", "optim:\n  optimizer: {name: 3}\n", ["optim.optimizer.name", "expected an optimizer name"]),
    ("list where a mapping belongs", "model: [256, 256]\n", ["model", "expected a mapping", "got a list"]),
    ("nested list where a mapping belongs", "train:\n  early_stopping: [1, 2]\n", ["train.early_stopping", "expected a mapping, got a list"]),
    ("whole file a list", "- name: x\n- data: y\n", ["expected a mapping of sections"]),
    ("yaml syntax error", "model:\n  hidden: [256, 256\ntrain:\n  epochs: 3\n", ["YAML syntax error", "line"]),
    ("yaml bad indentation", "model:\n  hidden: [1]\n    activation: relu\n", ["YAML syntax error", "line 3"]),
    ("empty file", "", ["empty"]),
    ("comments only", "# nothing here\n", ["empty"]),
    ("depth and hidden", "model:\n  hidden: [8]\n  depth: 2\n", ["model", "either hidden", "depth and width"]),
    ("depth out of range", "model:\n  depth: 0\n  width: 8\n", ["model.depth", "out of range"]),
    ("nesterov without momentum", "optim:\n  optimizer: {name: sgd, nesterov: true}\n", ["optim.optimizer", "nesterov needs momentum"]),
    ("uniform low above high", "model:\n  init: {name: uniform, low: 0.1, high: -0.1}\n", ["model.init.low", "low <= high"]),
    ("orthogonal bias", "model:\n  bias_init: orthogonal\n", ["model.bias_init", "needs a matrix"]),
    ("bad name", "name: a/b\n", ["name", "not a usable folder name"]),
    ("bad device", "train:\n  device: gpu\n", ["train.device", "not a device"]),
    ("max mode on a loss", "train:\n  early_stopping: {monitor: val_loss, mode: max}\n", ["train.early_stopping.mode"]),
    ("nan", "optim:\n  lr: .nan\n", ["optim.lr"]),
    ("infinite", "optim:\n  lr: .inf\n", ["optim.lr"]),
    ("betas length", "optim:\n  optimizer: {name: adam, betas: [0.9]}\n", ["optim.optimizer.betas", "expected a list of 2 numbers"]),
    ("l2 list too short", "model:\n  hidden: [16, 8]\nregularization:\n  l2: [0.1, 0.0]\n",
     ["regularization.l2", "2 values for 3 weight matrices (2 hidden layers, then the output layer)", "give a list of 3, or one number"]),
    ("l1 list with depth and width", "model:\n  depth: 3\n  width: 8\nregularization:\n  l1: [0.1, 0.0]\n",
     ["regularization.l1", "2 values for 4 weight matrices (3 hidden layers, then the output layer)"]),
    ("activity list too long", "model:\n  hidden: [16]\nregularization:\n  activity_l1: [0.1, 0.0]\n",
     ["regularization.activity_l1", "2 values for 1 hidden layer", "give a list of 1"]),
    ("activity_l2 list of the matrices", "model:\n  hidden: [16, 8]\nregularization:\n  activity_l2: [0.1, 0.0, 0.0]\n",
     ["regularization.activity_l2", "3 values for 2 hidden layers"]),
    ("negative value in a penalty list", "model:\n  hidden: [16]\nregularization:\n  l1: [0.0, -0.1]\n", ["regularization.l1[1]", "out of range", "[0, inf)"]),
    ("normalize choice", "data:\n  normalize: minmax\n", ["data.normalize", "choose one of standardize, unit, none"]),
]


@pytest.mark.parametrize("text,fragments", [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_validate_and_train(tmp_path, text, fragments):
    path = write_yaml(tmp_path / "bad_config.yaml", text)
    _assert_one_line_error(cli("validate", path), str(path), *fragments)
    runs = tmp_path / "runs"
    _assert_one_line_error(cli("train", path, "--runs-dir", runs), str(path), *fragments)
    assert not runs.exists()
    assert not (tmp_path / "runs").exists()


# (id, overrides, fragments)
BAD_OVERRIDES = [
    ("unknown key", ["optim.lrr=0.1"], ["optim.lrr", "did you mean 'lr'"]),
    ("wrong type", ["train.epochs=many"], ["train.epochs", "expected an integer"]),
    ("bool for a number", ["optim.lr=true"], ["optim.lr", "boolean"]),
    ("no equals sign", ["optim.lr"], ["--set 'optim.lr'", "KEY=VALUE"]),
    ("unknown activation", ["model.activation=rellu"], ["model.activation", "did you mean 'relu'"]),
    ("parameter of a parameterless activation", ["model.activation.negative_slope=0.2"], ["model.activation.negative_slope", "relu has no parameter"]),
]


@pytest.mark.parametrize("overrides,fragments", [c[1:] for c in BAD_OVERRIDES], ids=[c[0] for c in BAD_OVERRIDES])
def test_bad_override(tmp_path, overrides, fragments):
    """The error names the override, not the file (the file is fine)."""
    path = write_yaml(tmp_path / "ok.yaml", tiny_config())
    sets = [arg for o in overrides for arg in ("--set", o)]
    blamed = f"--set '{overrides[0]}'" if "=" not in overrides[0] else f"override '{overrides[0]}'"
    for result in (cli("validate", path, *sets), cli("train", path, "--runs-dir", tmp_path / "runs", *sets)):
        line = _assert_one_line_error(result, *fragments)
        assert line.startswith(f"error: {blamed} (applied to {path}): "), line
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path):
    _assert_one_line_error(cli("validate", tmp_path / "nope.yaml"), "nope.yaml", "no such file")
    _assert_one_line_error(cli("train", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs"), "nope.yaml", "no such file")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_unreadable_config(tmp_path, kind):
    path = tmp_path / "config.yaml"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe\x00\x81 not text")
    _assert_one_line_error(cli("validate", path), str(path))
    _assert_one_line_error(cli("train", path, "--runs-dir", tmp_path / "runs"), str(path))
    assert not (tmp_path / "runs").exists()


def test_validate_reports_each_bad_file_and_passes_good_ones(tmp_path):
    good = write_yaml(tmp_path / "good.yaml", tiny_config())
    bad1 = write_yaml(tmp_path / "bad1.yaml", "optim:\n  lr: -1\n")
    bad2 = write_yaml(tmp_path / "bad2.yaml", "model:\n  activation: foo\n")
    result = cli("validate", good, bad1, bad2)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in result.output
    assert f"ok: {good}" in result.output
    assert any(str(bad1) in line and "optim.lr" in line for line in lines)
    assert any(str(bad2) in line and "model.activation" in line for line in lines)
    ok = cli("validate", good)
    assert ok.exit_code == 0 and ok.output.strip() == f"ok: {good} (tiny)"


def test_shipped_configs_validate():
    paths = sorted((REPO / "configs").rglob("*.yaml"))
    assert paths
    result = cli("validate", *paths)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok: ") == len(paths)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_clear_line(tmp_path, device):
    path = write_yaml(tmp_path / "gpu.yaml", tiny_config(train={"device": device}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    line = _assert_one_line_error(result, f"train.device: {device}", "no CUDA", "train.device=cpu")
    assert line
    assert not (tmp_path / "runs").exists()
    assert cli("validate", path).exit_code == 0  # a valid config; the machine lacks the device


# ----------------------------------------------------------------------------- good configs


def test_exponent_notation_is_a_number(tmp_path):
    text = (
        "optim:\n  lr: 1e-3\n  weight_decay: 5E-4\n  optimizer: {name: adam, eps: 1e-7, betas: [0.9, 9.99e-1]}\n"
        "regularization:\n  l2: 1.5e-5\n  max_norm: 3e0\n"
    )
    config = load_config(write_yaml(tmp_path / "exp.yaml", text))
    assert config.optim.lr == 0.001 and type(config.optim.lr) is float
    assert config.optim.weight_decay == 0.0005
    assert config.optim.optimizer.params["eps"] == 1e-7
    assert config.optim.optimizer.params["betas"] == (0.9, 0.999)
    assert config.regularization.l2 == 1.5e-5 and config.regularization.max_norm == 3.0
    assert load_config(tmp_path / "exp.yaml", ["optim.lr=2e-2"]).optim.lr == 0.02


def test_integers_are_accepted_where_floats_belong():
    config = config_from_dict({"optim": {"lr": 1}, "model": {"bias_init": 1}})
    assert config.optim.lr == 1.0 and type(config.optim.lr) is float
    assert config.model.bias_init.params["value"] == 1.0


def test_defaults_and_name_from_the_file_stem(tmp_path):
    config = load_config(write_yaml(tmp_path / "my_experiment.yaml", "train:\n  epochs: 2\n"))
    assert config.name == "my_experiment" and config.train.epochs == 2
    default = Config()
    assert dataclasses.replace(config, name=default.name, train=default.train) == config_from_dict({})
    assert config.model.hidden == (256, 256) and config.model.activation.name == "relu"
    assert config.optim.optimizer.name == "adam" and config.optim.lr == 0.001
    # Default components carry their parameters, like explicit ones.
    assert config.optim.optimizer == config_from_dict({"optim": {"optimizer": {"name": "adam"}}}).optim.optimizer
    assert dict(config.optim.optimizer.params) == {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}


def test_component_forms(tmp_path):
    bare = config_from_dict({"model": {"activation": "leaky_relu"}}).model.activation
    mapped = config_from_dict({"model": {"activation": {"name": "leaky_relu", "negative_slope": 0.2}}}).model.activation
    assert bare.name == mapped.name == "leaky_relu"
    assert bare.params["negative_slope"] == 0.01 and mapped.params["negative_slope"] == 0.2
    init = config_from_dict({"model": {"init": {"name": "normal", "std": 1.0}}}).model.init
    assert dict(init.params) == {"mean": 0.0, "std": 1.0}


def test_set_overrides(tmp_path):
    path = write_yaml(tmp_path / "base.yaml", tiny_config(model={"hidden": [32], "activation": "leaky_relu"}))
    config = load_config(path, ["model.activation.negative_slope=0.2", "optim.lr=0.01", "train.epochs=7", "model.hidden=[8, 4]"])
    assert config.model.activation == config_from_dict({"model": {"activation": {"name": "leaky_relu", "negative_slope": 0.2}}}).model.activation
    assert config.optim.lr == 0.01 and config.train.epochs == 7 and config.model.hidden == (8, 4)
    config = load_config(path, ["model.activation=tanh", "train.early_stopping.patience=2", "data.subset=100"])
    assert config.model.activation.name == "tanh"
    assert config.train.early_stopping.patience == 2 and config.data.subset == 100
    mapped = write_yaml(tmp_path / "mapped.yaml", tiny_config(model={"activation": {"name": "elu", "alpha": 0.5}}))
    assert load_config(mapped, ["model.activation.alpha=2"]).model.activation.params["alpha"] == 2.0
    result = cli("validate", path, "--set", "model.activation.negative_slope=0.2", "-s", "optim.lr=1e-2")
    assert result.exit_code == 0 and "ok:" in result.output


def test_set_overrides_reach_the_saved_config(tmp_path, data_root):
    path = write_yaml(tmp_path / "base.yaml", tiny_config(train={"epochs": 1}))
    runs = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", runs, "--quiet", "--set", "model.activation=tanh", "--set", "optim.lr=0.01",
                 "--set", "model.activation=leaky_relu", "--set", "model.activation.negative_slope=0.2")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    saved = load_config(run / "config.yaml")
    assert saved.model.activation.name == "leaky_relu" and saved.model.activation.params["negative_slope"] == 0.2
    assert saved.optim.lr == 0.01
    assert saved == load_config(path, ["model.activation=leaky_relu", "model.activation.negative_slope=0.2", "optim.lr=0.01"])


def test_depth_and_width():
    assert config_from_dict({"model": {"depth": 3, "width": 64}}).model.hidden == (64, 64, 64)
    assert config_from_dict({"model": {"depth": 1}}).model.hidden == (256,)
    assert config_from_dict({"model": {"width": 10}}).model.hidden == (10, 10)
    assert config_from_dict({"model": {"hidden": [5, 6, 7]}}).model.hidden == (5, 6, 7)
    with pytest.raises(ConfigError, match="model.width"):
        config_from_dict({"model": {"depth": 2, "width": "wide"}})


def test_penalties_as_numbers_or_lists():
    config = config_from_dict({"model": {"hidden": [16, 8]}, "regularization": {"l1": [0, 1e-3, "1e-2"], "l2": 0.01, "activity_l1": [0.01, 0]}})
    reg = config.regularization
    assert reg.l1 == (0.0, 1e-3, 1e-2) and reg.l2 == 0.01 and reg.activity_l1 == (0.01, 0.0) and reg.activity_l2 == 0.0
    assert config_from_dict({"model": {"depth": 3}, "regularization": {"l2": [0.1] * 4}}).regularization.l2 == (0.1,) * 4
    with pytest.raises(ConfigError, match=r"regularization.l2: 1 value for 2 weight matrices \(1 hidden layer, then the output layer\)"):
        config_from_dict({"model": {"hidden": [16]}, "regularization": {"l2": [0.1]}})
    with pytest.raises(ConfigError, match=r"regularization.activity_l1: expected a non-empty list"):
        config_from_dict({"regularization": {"activity_l1": []}})


def test_early_stopping_forms():
    assert config_from_dict({}).train.early_stopping is None
    assert config_from_dict({"train": {"early_stopping": False}}).train.early_stopping is None
    on = config_from_dict({"train": {"early_stopping": True}}).train.early_stopping
    assert on.patience == 5 and on.monitor == "val_loss" and on.restore_best is True
    assert config_from_dict({"train": {"early_stopping": {"patience": 1}}}).train.early_stopping.patience == 1


def test_resolved_yaml_round_trips(tmp_path):
    config = config_from_dict({
        "name": "round_trip",
        "data": {"normalize": "unit"},
        "model": {"depth": 2, "width": 8, "activation": {"name": "gelu", "approximate": "tanh"}, "init": "glorot_uniform",
                  "bias_init": 0.01, "dropout": 0.1, "batch_norm": True},
        "optim": {"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}, "lr": "1e-2",
                  "schedule": {"name": "step", "step_size": 3}},
        "regularization": {"l1": 1e-6, "l2": [0.0, 0.1, 0.01], "activity_l1": [0.01, 0.0], "max_norm": 2},
        "train": {"early_stopping": True, "checkpoint": "both"},
    })
    path = write_yaml(tmp_path / "resolved.yaml", config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.slow
@pytest.mark.parametrize("model", [{"activation": {"name": "maxout", "k": 3}, "init": "orthogonal"},
                                   {"activation": {"expr": "x * sigmoid(beta * x)", "beta": 1.702, "learn": ["beta"]}}], ids=["registry", "formula"])
def test_validate_does_not_import_torch(tmp_path, model):
    # Registries import torch lazily, so `actexp validate` and `--help` answer instantly.
    import subprocess
    import sys

    path = write_yaml(tmp_path / "c.yaml", tiny_config(model=model))
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from actexp.cli import app\n"
        f"result = CliRunner().invoke(app, ['validate', {str(path)!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    # From the checkout's root: `python -c` imports the actexp beside it, not an installed copy.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_set_depth_on_a_config_with_equal_hidden_widths_deepens_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hidden: [64, 64]\n")
    assert load_config(path, ["model.depth=5"]).model.hidden == (64,) * 5
    assert load_config(path, ["model.width=32"]).model.hidden == (32, 32)
    path.write_text("model:\n  hidden: [64, 32]\n")
    with pytest.raises(ConfigError, match="either hidden"):
        load_config(path, ["model.depth=5"])


def test_the_reference_documents_every_config_key():
    from actexp.config import config_fields

    readme = (REPO / "docs" / "reference.md").read_text()  # the config reference, linked from README.md
    missing = [key for key, *_ in config_fields() if f"`{key}`" not in readme]
    assert not missing, f"docs/reference.md lacks {missing}"


def test_seeds_beyond_what_torch_accepts_are_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  seed: 99999999999999999999\n")
    result = cli("validate", path)
    assert result.exit_code == 2 and "train.seed" in result.output and "out of range" in result.output


def test_a_short_key_is_the_one_key_that_ends_so(tmp_path):
    from actexp.config import OverrideError, config_keys, resolve_overrides

    assert resolve_overrides(["epochs=3", "lr=0.01", "patience=2", "model.activation=tanh", "name=x"]) == [
        "train.epochs=3", "optim.lr=0.01", "train.early_stopping.patience=2", "model.activation=tanh", "name=x"]
    short = [k.rsplit(".", 1)[-1] for k in config_keys()]
    assert len(short) == len(set(short))  # every last part names one key today
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ntrain: {epochs: 5}\n")
    config = load_config(path, ["epochs=3"])
    assert config.train.epochs == 3 and config.name == load_config(path, ["train.epochs=3"]).name == "c,epochs=3"
    with pytest.raises(OverrideError, match=r"override 'epoch=3' \(applied to .*c.yaml\): no config key 'epoch' \(did you mean train.epochs\?\)"):
        load_config(path, ["epoch=3"])


def test_an_override_that_is_wrong_is_blamed_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nmodel: {activation: relu}\ntrain: {epochs: 5}\n")
    for override, words in [("train.epoch=3", "train.epoch: unknown key (did you mean 'epochs'?)"), ("train.epochs=0", "train.epochs: 0 is out of range"),
                            ("model.activation=tanhh", "unknown activation 'tanhh'"), ("model.activation.negative_slop=1", "relu has no parameter")]:
        with pytest.raises(ConfigError) as caught:
            load_config(path, [override])
        assert str(caught.value).startswith(f"override '{override}' (applied to {path}): ") and words in str(caught.value)
    path.write_text("name: c\ntrain: {epoch: 5}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.epoch: unknown key"):  # the file's own typo names the file
        load_config(path, ["optim.lr=0.1"])
