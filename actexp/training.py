"""The training loop: one config in, one run folder out.

Speed by design: every split is one tensor on the device, batches are index slices of a per-epoch
permutation drawn on the device, and losses/accuracies accumulate on the device and are read once
per epoch (and every few steps only when someone watches the progress bar).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import __version__
from .components import OPTIMIZERS, SCHEDULES
from .config import Config, as_config, config_hash, config_to_yaml
from .data import Data, dataset_shape, load_data
from .diagnostics import Tracker, diagnostic_warnings
from .errors import ActexpError, ConfigError, sigterm_as_interrupt, signals_deferred
from .model import MLP, build_model, count_parameters
from .resources import available_bytes, check_fits, estimate_bytes
from .runs import (
    CHECKPOINTS,
    DamagedFile,
    load_checkpoint,
    locked,
    new_run_dir,
    read_history,
    read_summary,
    save_checkpoint,
    write_json_atomic,
    write_metrics,
    write_text_atomic,
)

# progress(event, info): events "start", "step", "epoch", "end"; the CLI draws them with rich.
Progress = Callable[[str, dict], None]
PROGRESS_UPDATES_PER_EPOCH = 20
EVAL_BATCH = 8192


class Diverged(ActexpError):
    pass


@dataclass(frozen=True)
class Run:
    """A finished (or stopped) run: its folder, its summary.json and its per-epoch records."""

    dir: Path
    summary: dict
    history: list[dict]

    @property
    def status(self) -> str:
        return self.summary["status"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: {name} was asked for but torch sees no CUDA GPU "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --set train.device=cpu"
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps is not available on this machine; use --set train.device=cpu")
    return torch.device(name)


def train(
    config: Config | dict | str | Path,
    *,
    runs_dir: str | Path = "runs",
    progress: Progress | None = None,
    resume: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> Run:
    """Train one config and write its run folder. `resume` continues a run folder from its
    last checkpoint; `run_dir` trains into a given (empty or new) folder instead of a fresh one.
    Raises ActexpError (bad config, missing data) before any folder is created."""
    config = as_config(config)
    device = resolve_device(config.train.device)
    # Refuse, in milliseconds and before anything is read or allocated, a run that cannot fit.
    check_fits(estimate_bytes(config, *dataset_shape(config.data.dataset)), available_bytes(str(device)), str(device))
    # The run seeds torch's global RNG (dropout draws from it); fork_rng gives the caller's back.
    devices = [device.index or 0] if device.type == "cuda" else []
    with contextlib.ExitStack() as held, sigterm_as_interrupt(), torch.random.fork_rng(devices=devices):
        if resume:
            folder = Path(resume)
            if not (folder / "summary.json").is_file():
                raise ActexpError(f"{folder}: not a run folder (no summary.json)")
            held.enter_context(locked(folder, "training"))  # before any check: a run still training is refused
            _check_resumable(folder, config)
        torch.manual_seed(config.train.seed)
        data = load_data(config.data, device)
        model = build_model(config.model, data.n_features, data.n_classes).to(device)
        optimizer, scheduler = build_optimizer(config, model)
        if not resume:
            folder = Path(run_dir) if run_dir else new_run_dir(runs_dir, config.name)
            folder.mkdir(parents=True, exist_ok=True)
            held.enter_context(locked(folder, "training"))
        return _fit(config, folder, device, data, model, optimizer, scheduler, progress, resume=bool(resume))


def _check_resumable(folder: Path, config: Config) -> None:
    previous = read_summary(folder)
    if not previous:
        raise ActexpError(f"{folder}: not a run folder (no summary.json)")
    if previous.get("status") == "completed":
        raise ActexpError(f"{folder}: this run already completed; train the config again for a new run")
    if previous.get("config_hash") != config_hash(config):
        raise ConfigError(f"{folder}: the config differs from the run's config.yaml; a resumed run keeps its config (start a new run to change it)")


def build_optimizer(config: Config, model: MLP):
    opt = config.optim
    try:
        optimizer = OPTIMIZERS[opt.optimizer.name](
            model.parameters(), opt.lr, opt.weight_decay, **_tuples(opt.optimizer.params)
        )
        scheduler = SCHEDULES[opt.schedule.name](optimizer, config.train.epochs, **opt.schedule.params)
    except ValueError as e:  # torch's own argument checks
        raise ConfigError(f"optim: {e}") from None
    return optimizer, scheduler


def _tuples(params) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


@dataclass
class _Best:
    """The monitored metric's best value so far and when it happened."""

    monitor: str
    minimize: bool
    min_delta: float
    value: float = math.nan
    epoch: int = 0
    waited: int = 0

    def update(self, record: dict) -> bool:
        value = record[self.monitor]
        if math.isnan(self.value):
            improved = True
        elif self.minimize:
            improved = value < self.value - self.min_delta
        else:
            improved = value > self.value + self.min_delta
        if improved:
            self.value, self.epoch, self.waited = value, record["epoch"], 0
        else:
            self.waited += 1
        return improved


def _fit(config, folder, device, data: Data, model, optimizer, scheduler, progress, resume: bool) -> Run:
    tc = config.train
    stopping = tc.early_stopping
    monitor = stopping.monitor if stopping else "val_loss"
    minimize = monitor.endswith("loss") if not stopping or stopping.mode == "auto" else stopping.mode == "min"
    best = _Best(monitor, minimize, stopping.min_delta if stopping else 0.0)
    # A run's result is one epoch, its selected epoch: the best by the monitor (val_loss unless early
    # stopping names another), or the last with early_stopping.restore_best false. Its weights are the
    # ones tested, and every command reports that epoch's figures, so a ranked validation figure and
    # the test figure beside it always come from the same weights.
    selects_best = not stopping or stopping.restore_best
    batch_order = torch.Generator(device=device).manual_seed(tc.seed)
    history, best_weights, start_epoch = [], None, 1
    # Diagnostics add an epoch-0 record (the model as initialized) and a `layers` list to each epoch.
    tracker = Tracker(model, data.x_train, data.y_train, tc.seed, tc.batch_size) if tc.diagnostics else None
    baseline = []
    started = time.time()
    summary = {
        "status": "running",
        "name": config.name,
        "run_id": folder.name,
        "config_hash": config_hash(config),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(device),
        # Matrix multiplies sum in a thread-count-dependent order: same seed + same threads = same metrics.
        "threads": torch.get_num_threads(),
        "n_params": count_parameters(model),
        "data": {"dataset": config.data.dataset.name, "n_train": len(data.y_train), "n_val": len(data.y_val), "n_test": len(data.y_test)},
        "versions": _versions(),
    }
    if tracker:
        summary["diagnostics"] = {"probe_samples": len(tracker.probe_y), "saturates_both_sides": tracker.saturates_both_sides()}
    if resume:
        # Read before anything is written: a checkpoint that cannot be loaded leaves the folder as it was.
        state = _resume_state(folder, tc, count_parameters(model))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            batch_order.set_state(state["rng"]["batch_order"])
            for key in ("value", "epoch", "waited"):
                setattr(best, key, state["best"][key])
            best_weights = state["best_model"] and {k: v.to(device) for k, v in state["best_model"].items()}
            start_epoch = int(state["epoch"]) + 1
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedFile(f"{folder / CHECKPOINTS / 'last.pt'}: does not fit this run's model and optimizer ({str(e).splitlines()[0][:120]})") from None
        records = read_history(folder)
        baseline = [r for r in records if r["epoch"] == 0]
        history = [r for r in records if 1 <= r["epoch"] <= state["epoch"]]
        previous = read_summary(folder)
        summary["started"] = state.get("started", summary["started"])
        started -= state.get("wall_seconds", 0.0)
        summary["notes"] = [n for n in previous.get("notes", []) if isinstance(n, str)] if isinstance(previous.get("notes"), list) else []
        if previous.get("threads") not in (None, summary["threads"]):
            summary["notes"].append(
                f"resumed at epoch {start_epoch} with {summary['threads']} torch threads where the run had {previous['threads']}: "
                f"from here on its metrics can differ in the last digits from an uninterrupted run (bit-identity needs equal thread counts)"
            )
    metrics_pending = False  # a metrics write that did not finish: finish() writes the files again

    def record_metrics() -> None:
        nonlocal metrics_pending
        metrics_pending = True
        write_metrics(folder, baseline + history)
        metrics_pending = False

    ended = None

    def finish(status: str, **extra) -> Run:
        nonlocal ended
        summary.update(status=status, wall_seconds=round(time.time() - started, 3), epochs_completed=len(history), **extra)
        summary.update(_best_fields(history, best))
        if tracker:
            activation = config.model.activation.name
            summary["warnings"] = diagnostic_warnings(baseline + history, activation, summary["diagnostics"]["saturates_both_sides"])
        if metrics_pending:
            record_metrics()
        write_json_atomic(folder / "summary.json", summary)
        ended = status
        if progress:
            progress("end", {"dir": folder, "summary": summary})
        return Run(folder, summary, history)

    try:
        if not resume:
            write_text_atomic(folder / "config.yaml", config_to_yaml(config))
        write_json_atomic(folder / "summary.json", summary)
        # The metrics files exist from the start (with their header), and a resumed run's drop the
        # epochs after its checkpoint; from here on each finished epoch rewrites them.
        record_metrics()
        steps_per_epoch = _steps(len(data.y_train), tc.batch_size, config.model.batch_norm)
        if progress:
            progress("start", {"dir": folder, "config": config, "summary": summary, "epochs": tc.epochs, "steps": steps_per_epoch, "first_epoch": start_epoch})
        # The epoch-0 record: after the "start" event, so the caller knows the run folder by then.
        if tracker and not resume:
            val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
            baseline = [{"epoch": 0, "val_loss": val_loss, "val_acc": val_acc, "layers": tracker.epoch_zero()}]
            record_metrics()
        for epoch in range(start_epoch, tc.epochs + 1):
            tick = time.time()
            lr = optimizer.param_groups[0]["lr"]
            if tracker:
                tracker.begin_epoch()
            train_loss, train_acc = train_epoch(model, optimizer, data, config, batch_order, epoch, progress, tracker)
            if not math.isfinite(train_loss):
                return finish("diverged", error=_diverged_message(config, epoch))
            val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
            layers = tracker.end_epoch() if tracker else None
            record = {
                "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": round(time.time() - tick, 4),
            }
            if layers is not None:
                record["layers"] = layers
            with signals_deferred():  # the epoch is on disk whole (record, metrics files, checkpoint) or not at all
                history.append(record)
                record_metrics()
                if scheduler is not None:
                    scheduler.step()
                improved = best.update(record)
                if improved and selects_best:
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                checkpoint = _checkpoint(model, optimizer, scheduler, batch_order, best, best_weights, epoch, summary, started)
                if tc.checkpoint in ("last", "both"):
                    save_checkpoint(checkpoint, folder / CHECKPOINTS / "last.pt")
                if improved and tc.checkpoint in ("best", "both"):
                    save_checkpoint(checkpoint, folder / CHECKPOINTS / "best.pt")
            if progress:
                progress("epoch", {"record": record, "improved": improved, "epochs": tc.epochs})
            if stopping and not improved and best.waited >= stopping.patience:
                summary["stopped_early"] = True
                break
        selected = len(history)
        if selects_best and best.epoch != selected and best_weights is not None:  # (None: a checkpoint from before this rule)
            model.load_state_dict(best_weights)
            selected = best.epoch
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        summary.setdefault("stopped_early", False)
        chosen = next(r for r in history if r["epoch"] == selected)
        result = {key: chosen[key] for key in ("train_loss", "train_acc", "val_loss", "val_acc")}
        return finish("completed", selected_epoch=selected, **result, test_loss=test_loss, test_acc=test_acc)
    except KeyboardInterrupt as e:
        if ended is None:
            _finish_anyway(finish, "interrupted", error=str(e) or "interrupted (Ctrl-C)")
        raise
    except Exception as e:
        if ended is None:
            _finish_anyway(finish, "failed", error=str(e) if isinstance(e, ActexpError) else f"{type(e).__name__}: {e}")
        raise


def _finish_anyway(finish, status: str, error: str) -> None:
    """Record how a run ended while an exception is on its way out; if even that cannot be written
    (the disk is full), the original exception is the one to report."""
    try:
        finish(status, error=error)
    except Exception:
        pass


def _resume_state(folder: Path, tc, n_params: int) -> dict:
    last = folder / CHECKPOINTS / "last.pt"
    if not last.is_file() and tc.checkpoint in ("last", "both"):
        raise ActexpError(f"{folder}: no epoch finished before the run stopped, so there is nothing to resume; train the config again")
    if not last.is_file():
        raise ActexpError(f"{folder}: no {CHECKPOINTS}/last.pt to resume from (the run kept train.checkpoint={tc.checkpoint}; resuming needs last or both)")
    # The model, up to three optimizer states and the best weights, in float32, plus RNG states.
    return load_checkpoint(last, max_bytes=4 * 6 * n_params + (64 << 20))


def train_epoch(model: MLP, optimizer, data: Data, config: Config, batch_order, epoch: int, progress, tracker=None) -> tuple[float, float]:
    """One pass over the training split; returns (mean cross-entropy, accuracy), or nan if the loss diverged.
    A diagnostics `tracker` sees the gradients after each backward (before clipping)."""
    reg, batch_size = config.regularization, config.train.batch_size
    x, y = data.x_train, data.y_train
    n = len(y)
    model.train()
    order = torch.randperm(n, device=x.device, generator=batch_order)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    weights = [linear.weight for linear in model.linears()]
    activity = reg.activity_l1 > 0 or reg.activity_l2 > 0
    steps = _steps(n, batch_size, config.model.batch_norm)
    report_every = max(1, steps // PROGRESS_UPDATES_PER_EPOCH)
    for step in range(steps):
        index = order[step * batch_size : (step + 1) * batch_size if step < steps - 1 else n]
        xb, yb = x[index], y[index]
        if activity:
            logits, activations = model.forward_with_activations(xb)
        else:
            logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        total = loss
        if reg.l1 > 0:
            total = total + reg.l1 * sum(w.abs().sum() for w in weights)
        if reg.l2 > 0:
            total = total + reg.l2 * sum(w.square().sum() for w in weights)
        if activity:
            # Keras divides a layer's activity penalty by the batch size: a per-sample penalty.
            if reg.activity_l1 > 0:
                total = total + reg.activity_l1 * sum(a.abs().sum() for a in activations) / len(yb)
            if reg.activity_l2 > 0:
                total = total + reg.activity_l2 * sum(a.square().sum() for a in activations) / len(yb)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if tracker is not None:
            tracker.after_backward()
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        if reg.max_norm:
            _apply_max_norm(weights, reg.max_norm)
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
        if progress and (step + 1) % report_every == 0:
            live = loss.item()
            progress("step", {"epoch": epoch, "step": step + 1, "steps": steps, "loss": live})
            if not math.isfinite(live):
                return math.nan, math.nan
    return loss_sum.item() / n, correct.item() / n


def _steps(n: int, batch_size: int, batch_norm: bool) -> int:
    """Batches per epoch; with batch norm a lone last sample joins the previous batch, since
    BatchNorm cannot normalize a batch of one."""
    steps = math.ceil(n / batch_size)
    return steps - 1 if batch_norm and n % batch_size == 1 and n > 1 else steps


@torch.no_grad()
def _apply_max_norm(weights, max_norm: float) -> None:
    # Each row of a Linear weight is one unit's incoming weights (Keras MaxNorm on a Dense kernel).
    for w in weights:
        norms = w.norm(dim=1, keepdim=True)
        w.mul_(norms.clamp(max=max_norm) / norms.clamp(min=1e-12))


@torch.inference_mode()
def evaluate(model: MLP, x, y) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y) in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(y), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        yb = y[start : start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return loss_sum.item() / len(y), correct.item() / len(y)


def _checkpoint(model, optimizer, scheduler, batch_order, best, best_weights, epoch, summary, started) -> dict:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(batch_order.device) if batch_order.device.type == "cuda" else None,
            "batch_order": batch_order.get_state(),
        },
        "best": {"value": best.value, "epoch": best.epoch, "waited": best.waited},
        "best_model": best_weights,
        "started": summary["started"],
        "wall_seconds": time.time() - started,
    }


def _best_fields(history: list[dict], best: _Best) -> dict:
    record = next((r for r in history if r["epoch"] == best.epoch), None)
    if record is None:
        return {}
    return {"monitor": best.monitor, "best_epoch": best.epoch, "best_val_loss": record["val_loss"], "best_val_acc": record["val_acc"]}


def _diverged_message(config: Config, epoch: int) -> str:
    return (
        f"the training loss became non-finite in epoch {epoch} (lr {config.optim.lr:g} with "
        f"{config.optim.optimizer.name}); lower optim.lr, or set optim.grad_clip"
    )


def _versions() -> dict:
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = None
    return {"actexp": __version__, "torch": torch.__version__, "torchvision": tv, "python": platform.python_version()}
