"""The real Fashion-MNIST (Debian's dataset-fashion-mnist, whose re-gzipped files fail
torchvision's .gz checksums): `actexp data import`, then relu_xavier for one epoch on all of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, cli, run_dirs

FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(
    not FASHION.is_dir(),
    reason=f"{FASHION} not present (install Debian's dataset-fashion-mnist to run this test)",
)


@pytest.mark.slow
def test_relu_xavier_one_epoch_on_real_fashion_mnist(tmp_path):
    root = tmp_path / "data"
    result = cli("data", "import", "fashion_mnist", FASHION, "--root", root)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"imported fashion_mnist into {root / 'FashionMNIST' / 'raw'}"

    runs = tmp_path / "runs"
    result = cli(
        "train", REPO / "configs" / "relu_xavier.yaml", "--runs-dir", runs, "--quiet",
        "--set", "data.dataset=fashion_mnist", "--set", f"data.root={root}", "--set", "train.epochs=1",
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    assert summary["data"] == {"dataset": "fashion_mnist", "n_train": 55000, "n_val": 5000, "n_test": 10000}
    assert summary["n_params"] == (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert summary["test_acc"] >= 0.80, summary
