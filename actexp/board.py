"""TensorBoard event files for a run (`train.tensorboard: true`): each epoch's figures as scalars in
the run folder's tensorboard/, so that `tensorboard --logdir runs` shows every run, sweeps and fused
groups included, while they train. The events are written from the records that metrics.csv and
diagnostics.csv are written from, and hold the same values (as float32, TensorBoard's scalar type).

torch.utils.tensorboard (which needs the `tensorboard` package) is imported only here, on first use.
"""

from __future__ import annotations

import os
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
        raise ConfigError(f"train.tensorboard: true needs the tensorboard package ({e}); pip install 'actexp[tensorboard]', or set train.tensorboard: false") from e


def layer_tag(metric: str, layer) -> str:
    """`grad_norm/layer1`, ..., `grad_norm/output`: one section per diagnostic, one chart per layer."""
    return f"{metric}/{'output' if layer == OUTPUT_LAYER else f'layer{layer}'}"


class Board:
    """One run's event writer. Opening it hides whatever an earlier attempt wrote to the folder (a
    resumed or restarted run: TensorBoard's purge from step 0) and writes the records so far again,
    so a resumed run's events hold each epoch once, equal to its metrics files.

    The events are a view of files the run writes anyway: a board that cannot write (its folder is
    a file or a link, the disk is full) says so in one warning and stops, and the run goes on."""

    def __init__(self, run_dir: Path, records: list[dict]):
        self.writer = None
        folder = Path(run_dir) / BOARD
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            return self._give_up(f"{folder} is not a folder (a file or a link)")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder), purge_step=0)
        except Exception as e:
            return self._give_up(f"{folder}: {type(e).__name__}: {e}")
        for record in records:
            self.log(record, flush=False)
        if self.writer is not None:
            self._guarded(self.writer.flush)

    def log(self, record: dict, flush: bool = True) -> None:
        """One epoch record at step = its epoch. Epoch 0 (the model as initialized) gives only its
        per-layer figures, as metrics.csv starts at epoch 1 and diagnostics.csv at epoch 0."""
        if self.writer is None:
            return
        self._guarded(lambda: self._write(record, flush))

    def _write(self, record: dict, flush: bool) -> None:
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
        if self.writer is not None:
            self._guarded(self.writer.close)
            self.writer = None

    def _guarded(self, write) -> None:
        try:
            write()
        except Exception as e:
            self._give_up(f"{type(e).__name__}: {e}")

    def _give_up(self, why: str) -> None:
        import warnings

        from .runs import RunFolderWarning

        self.writer = None
        warnings.warn(f"TensorBoard events are no longer written ({why}); the run goes on, its metrics files have every figure", RunFolderWarning, stacklevel=3)


TUNE_BOARD = "tensorboard"  # a tuned sweep's trials for the hparams view, inside the sweep folder


def write_tune_hparams(sweep_dir: Path, rows: list, metric: str) -> Path | None:
    """A tuned sweep's trials in TensorBoard's hparams view: one entry per trial (its row, tuned values
    and state, and its validation figure), in SWEEP/tensorboard/. The folder is written afresh each
    time (a resumed tune, a second report: each trial once), into a temporary folder that then
    replaces it. A folder that is a file or a link is left alone with a warning: the events are a
    view of the trials' run folders, which hold every figure. Returns the folder, or None."""
    import shutil
    import warnings

    from .runs import RunFolderWarning

    folder = Path(sweep_dir) / TUNE_BOARD
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        warnings.warn(f"{folder} is not a folder (a file or a link); the tune's hparams are not written", RunFolderWarning, stacklevel=2)
        return None
    from torch.utils.tensorboard import SummaryWriter

    fresh = Path(sweep_dir) / f".{TUNE_BOARD}-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(fresh))
    try:
        trials = [(row, trial) for row in rows for trial in row.trials]
        for index, (row, trial) in enumerate(trials):
            values = {"row": row.label, **{k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in trial.params.items()},
                      "trial": trial.number, "state": trial.state, "epochs": trial.epochs}
            # Named by index, not by the row's label: a label read from a ledger is no folder name.
            writer.add_hparams(values, {f"hparam/{metric}": trial.score}, run_name=f"{index:05d}")
    finally:
        writer.close()
    shutil.rmtree(folder, ignore_errors=True)
    fresh.rename(folder)
    return folder
