"""The layer contract: the MLP is built once (model.MLP, by model.build_model) and trained as a
stack (stacked.StackedMLP); every activation in the registry, formula activations and plugin
activations must give the same numbers both ways. Each entry goes through a solo run, a fused group
(a plugin that is not elementwise trains solo instead), evaluation of the saved result, a
checkpoint round trip, a resume, and per-layer diagnostics. Adding an activation is one registry
entry, and this test then covers it.
"""

from __future__ import annotations

import pytest
import torch

import actexp
from actexp.components import ACTIVATIONS
from actexp.config import config_from_dict
from actexp.evaluation import evaluate_run, load_run
from actexp.planning import group_key
from actexp.runs import read_history
from actexp.training import train_group

from conftest import REPO, tiny_config

PLUGIN_FILE = REPO / "tests" / "plugin_files" / "snake.py"
# Formula activations: one that learns a parameter per layer, one with a comparison and a fixed parameter.
FORMULAS = {
    "formula-swish-learned": {"expr": "x * sigmoid(beta * x)", "beta": 1.0, "learn": ["beta"]},
    "formula-where": {"expr": "where(x > 0, x, alpha * (exp(x) - 1))", "alpha": 0.5},
}
PLUGINS = {"plugin-snake": {"name": "snake", "alpha": 0.8}, "plugin-centered_tanh": "centered_tanh"}
ENTRIES = {**{name: name for name in sorted(ACTIVATIONS)}, **FORMULAS, **PLUGINS}


def without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def layer_config(activation: str, seed: int = 0) -> dict:
    # Two hidden layers with dropout and batch norm: every per-layer path of the stacked model.
    return tiny_config(model={"hidden": [16, 12], "activation": activation, "dropout": 0.1, "batch_norm": True},
                       train={"epochs": 3, "batch_size": 50, "seed": seed, "device": "cpu"})


def stop_after(epoch: int):
    def progress(event, info):
        if event == "epoch" and info["record"]["epoch"] == epoch:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("entry", ENTRIES, ids=list(ENTRIES))
def test_every_activation_trains_the_same_solo_fused_evaluated_and_resumed(tmp_path, data_root, monkeypatch, entry):
    activation = ENTRIES[entry]
    if entry in PLUGINS:
        monkeypatch.setenv("ACTEXP_PLUGINS", str(PLUGIN_FILE))
    config = layer_config(activation)
    solo = actexp.train(config, runs_dir=tmp_path / "solo")
    assert solo.status == "completed", solo.summary.get("error")

    # Diagnostics: every hidden layer has its dead and saturated shares, from epoch 0 on.
    for record in solo.history[:1] + read_history(solo.dir)[:1]:
        hidden = [row for row in record["layers"] if row["layer"] != "output"]
        assert len(hidden) == 2 and all(row["dead_fraction"] is not None and row["saturated_fraction"] is not None for row in hidden)

    # Fused beside a member of another seed (and activation, where the layer shapes allow): its run
    # is the solo run, bit for bit. A plugin that is not elementwise never fuses.
    other = layer_config(activation if activation == "maxout" else "tanh" if activation != "tanh" else "relu", seed=1)
    if entry == "plugin-centered_tanh":
        assert group_key(config_from_dict(config)) != group_key(config_from_dict(other))
    else:
        member, _ = train_group([config, other], [tmp_path / "fused" / "a", tmp_path / "fused" / "b"])
        assert without_seconds(read_history(member.dir)) == without_seconds(read_history(solo.dir))
        for key in ("test_loss", "test_acc", "selected_epoch"):
            assert member.summary[key] == solo.summary[key], key

    # The saved result, loaded and evaluated, is the run's own figure.
    result = evaluate_run(load_run(solo.dir))
    assert (result["loss"], result["accuracy"]) == (solo.summary["test_loss"], solo.summary["test_acc"])

    # Interrupted after epoch 1, its checkpoint round-trips and the resumed run is the solo run.
    folder = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(config, run_dir=folder, progress=stop_after(1))
    assert torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = actexp.train(config, resume=folder)
    assert without_seconds(resumed.history) == without_seconds(solo.history)
    assert resumed.summary["test_loss"] == solo.summary["test_loss"]
