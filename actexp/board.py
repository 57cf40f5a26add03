"""TensorBoard event files for a run (`train.tensorboard: true`): each epoch's figures as scalars in
the run folder's tensorboard/, so that `tensorboard --logdir runs` shows every run, sweeps and fused
groups included, while they train. The events are written from the records that metrics.csv and
diagnostics.csv are written from, and hold the same values (as float32, TensorBoard's scalar type).

torch.utils.tensorboard (which needs the `tensorboard` package) is imported only here, on first use.
"""

from __future__ import annotations

from pathlib import Path

from .diagnostics import METRICS, OUTPUT_LAYER
from .errors import ConfigError

BOARD = "tensorboard"  # the event folder inside a run folder
# metrics.csv's columns -> tags; "loss/..." and "acc/..." put train and val side by side.
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "acc/train", "val_acc": "acc/val", "lr": "lr", "seconds": "seconds/epoch"}


def require_tensorboard() -> None:
    """ConfigError naming the fix when the writer cannot be imported (checked before a run starts)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"train.tensorboard: true needs the tensorboard package ({e}); pip install 'actexp[tensorboard]', or set train.tensorboard: false") from None


def layer_tag(metric: str, layer) -> str:
    """`grad_norm/layer1`, ..., `grad_norm/output`: one section per diagnostic, one chart per layer."""
    return f"{metric}/{'output' if layer == OUTPUT_LAYER else f'layer{layer}'}"


class Board:
    """One run's event writer. Opening it hides whatever an earlier attempt wrote to the folder (a
    resumed or restarted run: TensorBoard's purge from step 0) and writes the records so far again,
    so a resumed run's events hold each epoch once, equal to its metrics files."""

    def __init__(self, run_dir: Path, records: list[dict]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / BOARD), purge_step=0)
        for record in records:
            self.log(record, flush=False)
        self.writer.flush()

    def log(self, record: dict, flush: bool = True) -> None:
        """One epoch record at step = its epoch. Epoch 0 (the model as initialized) gives only its
        per-layer figures, as metrics.csv starts at epoch 1 and diagnostics.csv at epoch 0."""
        step = record["epoch"]
        if step >= 1:
            for key, tag in TAGS.items():
                if record.get(key) is not None:
                    self.writer.add_scalar(tag, record[key], step)
        for row in record.get("layers", ()):
            for metric in METRICS:
                if row.get(metric) is not None:
                    self.writer.add_scalar(layer_tag(metric, row["layer"]), row[metric], step)
        if flush:  # live: each epoch is on disk when it ends, not after the writer's 2 minutes
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
