"""The layer contract: the MLP is built once (model.MLP, by model.build_model) and trained as a
stack (stacked.StackedMLP); every activation in the registry must give the same numbers both ways.
Each entry goes through a solo run, a fused group, evaluation of the saved result, a checkpoint
round trip and a resume. Adding an activation is one registry entry, and this test then covers it.
"""

from __future__ import annotations

import pytest
import torch

import actexp
from actexp.components import ACTIVATIONS
from actexp.evaluation import evaluate_run, load_run
from actexp.runs import read_history
from actexp.training import train_group

from conftest import tiny_config


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


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_trains_the_same_solo_fused_evaluated_and_resumed(tmp_path, data_root, activation):
    config = layer_config(activation)
    solo = actexp.train(config, runs_dir=tmp_path / "solo")
    assert solo.status == "completed", solo.summary.get("error")

    # Fused beside a member of another seed (and activation, where the layer shapes allow): its run
    # is the solo run, bit for bit.
    other = layer_config(activation if activation == "maxout" else "tanh" if activation != "tanh" else "relu", seed=1)
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
