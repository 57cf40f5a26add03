"""The classic experiments shipped in configs/seeds/: all valid; the CIFAR-100 ones (not measurable
here) trained for real on a small file set in CIFAR-100's own pickle layout."""

from __future__ import annotations

from pathlib import Path

import pytest

import actexp
from actexp.config import config_from_dict, load_config
from actexp.errors import ConfigError
from actexp.model import build_model

SEEDS = sorted((Path(__file__).parents[1] / "configs" / "seeds").glob("*.yaml"))


def test_seed_configs_are_valid():
    assert len(SEEDS) >= 13
    for path in SEEDS:
        assert load_config(path).name == "seed_" + path.stem


@pytest.mark.parametrize("name", ["cifar100_dropout", "cifar100_early_stopping"])
def test_cifar100_seeds_train_on_the_format_fixture(name, data_root, tmp_path):
    overrides = ["data.val_size=50", "train.epochs=3", "train.device=cpu"]
    config = load_config(Path(__file__).parents[1] / "configs" / "seeds" / f"{name}.yaml", overrides)
    run = actexp.train(config, runs_dir=tmp_path)
    assert run.status == "completed"
    assert run.summary["data"] == {"dataset": "cifar100", "n_train": 950, "n_val": 50, "n_test": 300}
    assert len(run.history[-1]["layers"]) == 3


def test_dropout_per_layer():
    model = build_model(config_from_dict({"model": {"hidden": [140, 128], "dropout": [0.1, 0.0]}}).model, 3072, 100)
    assert [getattr(layer.dropout, "p", 0.0) for layer in model.hidden] == [0.1, 0.0]
    with pytest.raises(ConfigError, match="model.dropout: 1 rates for 2 hidden layers"):
        config_from_dict({"model": {"hidden": [140, 128], "dropout": [0.1]}})
    with pytest.raises(ConfigError, match=r"model.dropout\[1\]: 1.5 is out of range"):
        config_from_dict({"model": {"hidden": [140, 128], "dropout": [0.1, 1.5]}})


def test_the_keras_regularizers_seed_is_the_recipe(data_root, tmp_path):
    """Dense(64) linear, x/255, L2(0.01) on the hidden kernel only, L1(0.01) on its activity, softmax
    output, Adam, batch 30, one epoch, Fashion-MNIST; it trains (on the fixture) with its output
    matrix unpenalized."""
    config = load_config(Path(__file__).parents[1] / "configs" / "seeds" / "fashion_l2_activity.yaml")
    assert (config.data.dataset.name, config.data.normalize) == ("fashion_mnist", "unit")
    assert (config.model.hidden, config.model.activation.name, config.model.dropout, config.model.batch_norm) == ((64,), "linear", 0.0, False)
    reg = config.regularization
    assert (reg.l2, reg.l1, reg.activity_l1, reg.activity_l2, reg.max_norm) == ((0.01, 0.0), 0.0, (0.01,), 0.0, None)
    assert (config.optim.optimizer.name, config.optim.lr, config.optim.weight_decay) == ("adam", 1e-3, 0.0)
    assert (config.train.epochs, config.train.batch_size) == (1, 30)
    run = actexp.train(load_config(Path(__file__).parents[1] / "configs" / "seeds" / "fashion_l2_activity.yaml",
                                   ["train.device=cpu", "data.val_size=100"]), runs_dir=tmp_path)
    assert run.status == "completed" and run.summary["data"]["dataset"] == "fashion_mnist"
