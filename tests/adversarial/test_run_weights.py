"""A run folder's result weights (model.pt) and config.yaml as load_run, `actexp eval` and `actexp
plot --boundary` read them, damaged or hostile: each case is one line naming the file, nothing a
file asks to run runs, nothing is read past the size the config's model can hold, and no small file
makes the program allocate what its config claims before the weights are checked."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import torch

from actexp.errors import ActexpError
from actexp.evaluation import load_run
from actexp.training import train

from conftest import cli
from data_files import RunsCommand

XOR = {
    "name": "xor",
    "data": {"dataset": {"name": "xor", "n_train": 300, "n_test": 100}, "val_size": 50},
    "model": {"hidden": [8], "activation": "relu"},
    "train": {"epochs": 2, "batch_size": 50, "device": "cpu", "diagnostics": False, "checkpoint": "none"},
}


def _legacy_pickle(folder: Path, marker: Path) -> None:
    (folder / "model.pt").write_bytes(pickle.dumps({"epoch": 2, "model": RunsCommand(f"touch {marker}")}))


def _zip_with_payload(folder: Path, marker: Path) -> None:
    state = torch.load(folder / "model.pt", weights_only=True)
    state["model"]["output.bias"] = RunsCommand(f"touch {marker}")
    torch.save(state, folder / "model.pt")


def _not_a_checkpoint(folder: Path, marker: Path) -> None:
    (folder / "model.pt").write_bytes(b"\x00" * 1000)


def _empty(folder: Path, marker: Path) -> None:
    (folder / "model.pt").write_bytes(b"")


def _other_keys(folder: Path, marker: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, folder / "model.pt")


def _edit(change):
    def damage(folder: Path, marker: Path) -> None:
        state = torch.load(folder / "model.pt", weights_only=True)
        change(state)
        torch.save(state, folder / "model.pt")

    damage.__name__ = change.__name__
    return damage


def _wrong_shape(state):
    state["model"]["hidden.0.linear.weight"] = torch.zeros(8, 3)


def _missing_tensor(state):
    del state["model"]["output.bias"]


def _extra_tensor(state):
    state["model"]["hidden.9.linear.weight"] = torch.zeros(2)


def _other_dtype(state):
    state["model"]["output.weight"] = state["model"]["output.weight"].double()


def _not_a_tensor(state):
    state["model"]["output.bias"] = [0.0, 0.0]


def _other_epoch(state):
    state["epoch"] = 1


def _epoch_not_a_number(state):
    state["epoch"] = "2"


def _huge(folder: Path, marker: Path) -> None:
    with open(folder / "model.pt", "r+b") as f:
        f.truncate(512 << 20)  # sparse: costs no disk


def _fifo(folder: Path, marker: Path) -> None:
    (folder / "model.pt").unlink()
    os.mkfifo(folder / "model.pt")


def _link_to_a_device(folder: Path, marker: Path) -> None:
    (folder / "model.pt").unlink()
    (folder / "model.pt").symlink_to("/dev/zero")


def _dangling_link(folder: Path, marker: Path) -> None:
    (folder / "model.pt").unlink()
    (folder / "model.pt").symlink_to(folder / "nowhere.pt")


def _a_folder(folder: Path, marker: Path) -> None:
    (folder / "model.pt").unlink()
    (folder / "model.pt").mkdir()


def _config_claims_a_huge_model(folder: Path, marker: Path) -> None:
    """The weights are the small model's; config.yaml now says 1,000 layers of a million units
    (4 TB of weights): checked against the file before any of it is allocated."""
    text = (folder / "config.yaml").read_text()
    assert "hidden: [8]" in text
    (folder / "config.yaml").write_text(text.replace("hidden: [8]", "depth: 1000\n  width: 1000000"))


def _config_runs_code(folder: Path, marker: Path) -> None:
    (folder / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")


def _config_invalid(folder: Path, marker: Path) -> None:
    text = (folder / "config.yaml").read_text()
    assert "activation: relu" in text
    (folder / "config.yaml").write_text(text.replace("activation: relu", "activation: not_an_activation"))


DAMAGE = [
    (_legacy_pickle, "model.pt"), (_zip_with_payload, "model.pt"), (_not_a_checkpoint, "model.pt"), (_empty, "model.pt"),
    (_other_keys, "model.pt"), (_edit(_wrong_shape), "model.pt"), (_edit(_missing_tensor), "model.pt"),
    (_edit(_extra_tensor), "model.pt"), (_edit(_other_dtype), "model.pt"), (_edit(_not_a_tensor), "model.pt"),
    (_edit(_other_epoch), "model.pt"), (_edit(_epoch_not_a_number), "model.pt"), (_huge, "model.pt"), (_fifo, "model.pt"),
    (_link_to_a_device, "model.pt"), (_dangling_link, "model.pt"), (_a_folder, "model.pt"),
    (_config_claims_a_huge_model, "model.pt"), (_config_runs_code, "config.yaml"), (_config_invalid, "config.yaml"),
]


@pytest.mark.parametrize("damage, file", DAMAGE, ids=[d.__name__.strip("_") for d, _ in DAMAGE])
def test_damaged_or_hostile_result_weights_are_one_line_and_run_nothing(tmp_path, damage, file):
    run = train(XOR, runs_dir=tmp_path / "runs")
    marker = tmp_path / "pwned"
    damage(run.dir, marker)
    started = time.time()
    with pytest.raises(ActexpError) as refused:
        load_run(run.dir)
    assert str(run.dir / file) in str(refused.value) and "\n" not in str(refused.value)
    for command in (["eval", run.dir], ["plot", "--boundary", run.dir, "-o", tmp_path / "b.png"]):
        result = cli(*command)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and str(run.dir / file) in lines[0], result.output
    assert time.time() - started < 20
    assert not marker.exists() and not (tmp_path / "b.png").exists()
