"""The training loop: configs in, run folders out. A run is a Recorder (its folder: config.yaml,
summary.json, metrics files, checkpoints, best epoch and early stopping, how it ended); the
arithmetic is a stepper.Stepper of K >= 1 members. `train` is K = 1; `train_group` trains a fused
group, K recorders around one stepper, in the same loop.

Speed by design: every split is one tensor on the device, batches are index slices of per-epoch
permutations drawn on the device, and losses/accuracies accumulate on the device and are read once
per epoch (and every few steps only when someone watches the progress bar).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__, events
from .config import Config, as_config, config_hash, config_to_dict, config_to_yaml, config_with_overrides, load_config
from .data import Data, dataset_shape, load_data
from .evaluation import evaluate
from .diagnostics import Tracker, choose_probe, diagnostic_findings, diagnostic_warnings
from .checkpointing import CheckpointSchedule, CheckpointWriter, cpu_copy
from .errors import ActexpError, ConfigError, sigterm_as_interrupt, signals_deferred
from .planning import group_bytes, group_key, member_order
from .plugins import record as record_plugins
from .registry import activation_label
from .stepper import Member, Stepper, optimizer_for, steps_per_epoch
from .model import MLP, build_model, count_parameters
from .resources import available_bytes, check_fits, estimate_bytes
from .runs import (
    CHECKPOINTS,
    MODEL,
    DamagedFile,
    load_checkpoint,
    locked,
    new_run_dir,
    read_history,
    read_summary,
    save_weights,
    write_json_atomic,
    write_metrics,
    write_text_atomic,
)
from .threads import describe as describe_threads, thread_policy

# progress(kind, info): "start", "step", "epoch", "end" (events.py says what each carries); the CLI
# draws them with rich.
Progress = events.Progress
PROGRESS_UPDATES_PER_EPOCH = 20


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
    overrides: list[str] = (),
    curves: bool = True,
    trial=None,
) -> Run:
    """Train one config and write its run folder. `resume` continues a run folder from its
    last checkpoint; `run_dir` trains into a given (empty or new) folder instead of a fresh one.
    `overrides` (`KEY=VALUE`, as --set) change the config, name the run after them (load_config)
    and are recorded in summary.json. With `curves`, a completed run draws its curves.png (a sweep
    leaves that to its driver: plots.draw_folder_curves). `trial` (a tuning.TrialLink) makes the run a
    tuning trial: it reports each epoch to its study, stops as `pruned` when the study says so, and
    never loads the test split. Raises ActexpError (bad config, missing data) before any folder is
    created."""
    config = with_overrides(config, overrides)
    device = resolve_device(config.train.device)
    _require_extras([config])
    # Refuse, in milliseconds and before anything is read or allocated, a run that cannot fit.
    check_fits(estimate_bytes(config, *dataset_shape(config.data.dataset)), available_bytes(str(device)), str(device))
    with contextlib.ExitStack() as held, sigterm_as_interrupt(), _own_rng(device), thread_policy(config.train.threads, device) as threads:
        if resume:
            _claim_for_resume(Path(resume), config, held)
        data = load_data(config.data, device, test=trial is None)
        member, recorder = _prepare(config, device, data, held, progress, runs_dir=runs_dir,
                                    folder=Path(resume or run_dir) if (resume or run_dir) else None, resume=bool(resume), curves=curves,
                                    trial=trial)
        recorder.summary["overrides"] = list(overrides) or recorder.summary["overrides"]
        (run,) = _fit([member], [recorder], data, threads)
        return run


def train_group(
    configs: list[Config | dict | str | Path],
    run_dirs: list[str | Path | None] | None = None,
    *,
    runs_dir: str | Path = "runs",
    resume: list[bool] | None = None,
    progress_for: list[Progress | None] | None = None,
    curves: bool = True,
    trials: list | None = None,
) -> list[Run | ActexpError]:
    """Train configs that share a planning.group_key as one stacked model; each writes its own run
    folder, as `train` would, and gets its own progress events ("start", "step", "epoch", "end").

    run_dirs[i]: the folder to train config i into (None: a fresh one under runs_dir/<name>/), or,
    with resume[i], the run folder to continue from its last checkpoint. Members that resume from
    different epochs train one after the other, each set fused.

    `curves`: each completed member draws its curves.png, as `train` does. `trials[i]`: member i's
    tuning.TrialLink, or None (see `train`); the test split is loaded only when a member is no trial.

    Returns, in the order of `configs`, each member's Run (its status completed, diverged, stopped
    early or failed: a failure inside the shared computation fails every member still training),
    or the ActexpError that kept that member from starting (nothing written to its folder: a
    damaged checkpoint, a run already completed, a folder another process holds). Ctrl-C and
    SIGTERM record every unfinished member as interrupted, then KeyboardInterrupt is raised.
    Raises ConfigError or ActexpError for what stops the whole group before anything is written
    (a device that is missing, a group that cannot fit in memory, missing data), and ValueError for
    configs that do not share a group key."""
    configs = [as_config(c) for c in configs]
    k = len(configs)
    run_dirs = list(run_dirs) if run_dirs is not None else [None] * k
    resume = list(resume) if resume is not None else [False] * k
    progress_for = list(progress_for) if progress_for is not None else [None] * k
    trials = list(trials) if trials is not None else [None] * k
    if not k or not len(run_dirs) == len(resume) == len(progress_for) == len(trials) == k:
        raise ValueError("train_group: give one run_dir, resume flag, progress and trial per config")
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError("train_group: these configs cannot train as one group (plan them with planning.plan_groups)")
    if any(resume[i] and run_dirs[i] is None for i in range(k)):
        raise ValueError("train_group: a member to resume needs its run folder in run_dirs")
    device = resolve_device(configs[0].train.device)
    _require_extras(configs)
    check_fits(group_bytes(configs), available_bytes(str(device)), str(device))
    results: list = [None] * k
    order = sorted(range(k), key=lambda i: (member_order(configs[i]), i))
    with contextlib.ExitStack() as held, sigterm_as_interrupt(), _own_rng(device), thread_policy(configs[0].train.threads, device) as threads:
        claimed = []
        for i in order:
            try:
                if resume[i]:
                    _claim_for_resume(Path(run_dirs[i]), configs[i], held)
                claimed.append(i)
            except ActexpError as e:
                results[i] = e
        data = load_data(configs[0].data, device, test=any(trials[i] is None for i in claimed))
        probes: dict = {}
        started: dict[int, list] = {}  # first epoch -> [(index, member, recorder)]
        for i in claimed:
            try:
                folder = Path(run_dirs[i]) if run_dirs[i] is not None else None
                member, recorder = _prepare(configs[i], device, data, held, progress_for[i], runs_dir=runs_dir,
                                            folder=folder, resume=resume[i], probes=probes, curves=curves, trial=trials[i])
            except ActexpError as e:
                results[i] = e
                continue
            started.setdefault(recorder.start_epoch, []).append((i, member, recorder))
        for entries in started.values():
            indices, members, recorders = zip(*entries)
            try:
                runs = _fit(list(members), list(recorders), data, threads)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                # Each recorded as failed (or finished before); one that had not opened its folder
                # yet (another member's failed first) did not start.
                runs = [r.run or ActexpError(f"{r.folder}: did not start ({type(e).__name__}: {e})") for r in recorders]
            for i, run in zip(indices, runs):
                results[i] = run
    return results


def _require_extras(configs: list[Config]) -> None:
    """ConfigError naming the install when a config needs a package that is missing (tensorboard),
    before anything is written."""
    if any(c.train.tensorboard for c in configs):
        from .board import require_tensorboard

        require_tensorboard()


def with_overrides(config: Config | dict | str | Path, overrides: list[str]) -> Config:
    """The config with `KEY=VALUE` overrides applied and named after them, as load_config does for
    a file; a Config or a mapping gets the same."""
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if not overrides:
        return as_config(config)
    return config_with_overrides(config_to_dict(config) if isinstance(config, Config) else config, overrides)


@contextlib.contextmanager
def _own_rng(device: torch.device):
    """Runs seed torch's global RNG (weight init draws from it); fork_rng gives the caller's back."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _claim_for_resume(folder: Path, config: Config, held: contextlib.ExitStack) -> None:
    if not (folder / "summary.json").is_file():
        raise ActexpError(f"{folder}: not a run folder (no summary.json)")
    held.enter_context(locked(folder, "training"))  # before any check: a run still training is refused
    _check_resumable(folder, config)


def _check_resumable(folder: Path, config: Config) -> None:
    previous = read_summary(folder)
    if not previous:
        raise ActexpError(f"{folder}: not a run folder (no summary.json)")
    if previous.get("status") == "completed":
        raise ActexpError(f"{folder}: this run already completed; train the config again for a new run")
    if previous.get("config_hash") != config_hash(config):
        raise ConfigError(f"{folder}: the config differs from the run's config.yaml; a resumed run keeps its config (start a new run to change it)")


def _prepare(config: Config, device, data: Data, held, progress, *, runs_dir, folder: Path | None, resume: bool, probes=None, curves: bool = True,
             trial=None):
    """Build a member exactly as its solo run starts (seed, build_model, the optimizer's argument
    checks), load its checkpoint when it resumes, and make its recorder; a fresh member's folder is
    created (and locked) only once all of that succeeded. Nothing is written yet."""
    tc = config.train
    torch.manual_seed(tc.seed)
    model = build_model(config.model, data.n_features, data.n_classes).to(device)
    # Dropout draws from the run's own generator, in the state a solo run's global RNG has here.
    dropout = torch.Generator(device=device)
    if device.type == "cpu":
        dropout.set_state(torch.get_rng_state())
    else:
        dropout.manual_seed(tc.seed)
    batch_order = torch.Generator(device=device).manual_seed(tc.seed)
    optimizer, scheduler = build_optimizer(config, model)
    tracker = None
    if tc.diagnostics:
        probes = {} if probes is None else probes
        if tc.seed not in probes:
            probes[tc.seed] = choose_probe(data.x_train, data.y_train, tc.seed)
        tracker = Tracker(model, data.x_train, data.y_train, tc.seed, tc.batch_size, probe=probes[tc.seed])
    member = Member(config, model, dropout, batch_order, tracker)
    state = None
    if resume:
        # Read before anything is written: a checkpoint that cannot be loaded leaves the folder as it was.
        state = _resume_state(folder, tc, count_parameters(model))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            dropout.set_state(state["rng"]["torch" if device.type == "cpu" else "cuda"])
            batch_order.set_state(state["rng"]["batch_order"])
            _check_state_shapes(optimizer)
            member.optimizer_state = optimizer.state_dict()
            member.scheduler_state = scheduler.state_dict() if scheduler is not None else None
            best = {key: state["best"][key] for key in ("value", "epoch", "waited")}
            if not (type(best["value"]) in (int, float) and type(best["epoch"]) is int and type(best["waited"]) is int):
                raise ValueError(f"best holds {best['value']!r:.40}, {best['epoch']!r:.20}, {best['waited']!r:.20}; expected a number and two integers")
            best_model = state["best_model"] and {k: v.to("cpu") for k, v in state["best_model"].items()}
            epoch = int(state["epoch"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedFile(f"{folder / CHECKPOINTS / 'last.pt'}: does not fit this run's model and optimizer ({str(e).splitlines()[0][:120]})") from e
        state = {**state, "best": best, "best_model": best_model, "epoch": epoch}
    else:
        folder = Path(folder) if folder else new_run_dir(runs_dir, config.name)
        folder.mkdir(parents=True, exist_ok=True)
        held.enter_context(locked(folder, "training"))
    reporter = None
    if trial is not None:
        from .tuning import TrialReporter

        reporter = TrialReporter(trial)
    recorder = Recorder(config, folder, device, data, member, progress, state, draws_curves=curves, trial=reporter)
    return member, recorder


def _check_state_shapes(optimizer) -> None:
    """torch's load_state_dict checks the groups, not the tensors: a state of another shape would
    fail only at the first step, after the run folder was written to."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(f"optimizer state {key} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}")


def build_optimizer(config: Config, model: MLP):
    """The config's optimizer and schedule over the model's parameters (a list of tensors also
    does); torch's own argument checks become ConfigError."""
    return optimizer_for(config, list(model.parameters()) if isinstance(model, torch.nn.Module) else list(model))


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


class Recorder:
    """One run's folder and bookkeeping: config.yaml, summary.json, the metrics files, checkpoints,
    the best epoch and early stopping, and how the run ended (`finish`). It never touches a batch:
    the stepper computes, the loop hands each recorder its member's figures."""

    def __init__(self, config: Config, folder: Path, device, data: Data, member: Member, progress, state: dict | None, draws_curves: bool = True,
                 trial=None):
        tc = config.train
        self.config, self.folder, self.progress = config, folder, progress
        self.stopping = stopping = tc.early_stopping
        monitor = stopping.monitor if stopping else "val_loss"
        minimize = monitor.endswith("loss") if not stopping or stopping.mode == "auto" else stopping.mode == "min"
        self.best = _Best(monitor, minimize, stopping.min_delta if stopping else 0.0)
        # A run's result is one epoch, its selected epoch: the best by the monitor (val_loss unless early
        # stopping names another), or the last with early_stopping.restore_best false. Its weights are the
        # ones tested, and every command reports that epoch's figures, so a ranked validation figure and
        # the test figure beside it always come from the same weights.
        self.selects_best = not stopping or stopping.restore_best
        self.history, self.baseline, self.best_weights = [], [], None
        self.start_epoch = 1
        self.started = time.time()
        self.diagnostics = member.tracker is not None
        self.warned: set[str] = set()  # what the warnings in epoch events were about (new_warnings)
        self.summary = {
            "status": "running",
            "name": config.name,
            "run_id": folder.name,
            "config_hash": config_hash(config),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "device": str(device),
            # Matrix multiplies may sum in a thread-count-dependent order: same seed + same threads = same
            # metrics (with train.threads: auto, the most it may use; thread_policy says which it used).
            "threads": torch.get_num_threads(),
            "n_params": count_parameters(member.model),
            "data": {"dataset": config.data.dataset.name, "n_train": len(data.y_train), "n_val": len(data.y_val),
                     "n_test": len(data.y_test) if data.y_test is not None else 0},
            "versions": _versions(),
            "overrides": [],  # the KEY=VALUE changes it was trained with (train's --set or bare KEY=VALUE)
        }
        self.trial = trial  # tuning.TrialReporter of a tuning trial
        if trial is not None:
            self.summary["trial"] = trial.link.as_summary()
        if plugins := record_plugins(config):  # what show, eval and --resume need enabled
            self.summary["plugins"] = plugins
        if member.tracker:
            self.summary["diagnostics"] = {"probe_samples": len(member.tracker.probe_y), "saturates_both_sides": member.tracker.saturates_both_sides()}
        self.resumed = state is not None
        if state is not None:
            for key in ("value", "epoch", "waited"):
                setattr(self.best, key, state["best"][key])
            self.best_weights = state["best_model"]
            self.start_epoch = state["epoch"] + 1
            records = read_history(folder)
            self.baseline = [r for r in records if r["epoch"] == 0]
            self.history = [r for r in records if 1 <= r["epoch"] <= state["epoch"]]
            previous = read_summary(folder)
            self.summary["started"] = state.get("started", self.summary["started"])
            self.started -= state.get("wall_seconds", 0.0)
            self.summary["overrides"] = previous.get("overrides") or []
            notes = previous.get("notes")
            self.summary["notes"] = [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []
            if previous.get("threads") not in (None, self.summary["threads"]):
                self.summary["notes"].append(
                    f"resumed at epoch {self.start_epoch} with {self.summary['threads']} torch threads where the run had {previous['threads']}: "
                    f"from here on its metrics can differ in the last digits from an uninterrupted run (bit-identity needs equal thread counts)"
                )
        self.threads = None  # the threads.thread_policy the run computes under (set by _fit)
        self.metrics_pending = False  # a metrics write that did not finish: finish() writes the files again
        self.opened = False  # its folder holds this session's files (a failure from here on is recorded)
        self.ended: str | None = None
        self.run: Run | None = None
        self.board = None  # board.Board with train.tensorboard, from open() to finish()
        self.draws_curves = draws_curves  # complete() draws curves.png
        self.checkpoints = None  # checkpointing.CheckpointSchedule, from open() on

    def record_metrics(self) -> None:
        self.metrics_pending = True
        write_metrics(self.folder, self.baseline + self.history)
        self.metrics_pending = False

    def open(self, steps: int, fused: int, writer: CheckpointWriter) -> None:
        """Write the folder's first files and announce the run. The metrics files exist from the
        start (with their header), and a resumed run's drop the epochs after its checkpoint; from
        here on each finished epoch rewrites them. Checkpoints go through `writer`."""
        self.opened = True
        tc = self.config.train
        self.checkpoints = CheckpointSchedule(self.folder, tc.checkpoint, tc.checkpoint_every, writer)
        if fused > 1:
            # Its wall time and each epoch's seconds are the group's, shared by its members.
            self.summary["fused"] = {"members": fused}
        if not self.resumed:
            write_text_atomic(self.folder / "config.yaml", config_to_yaml(self.config))
        write_json_atomic(self.folder / "summary.json", self.summary)
        self.record_metrics()
        if self.config.train.tensorboard:
            from .board import Board

            self.board = Board(self.folder, self.baseline + self.history)
        if self.progress:
            self.progress("start", events.RunStart(dir=self.folder, config=self.config, summary=self.summary,
                                                   epochs=self.config.train.epochs, steps=steps, first_epoch=self.start_epoch))

    def epoch_zero(self, val_loss: float, val_acc: float, layers: list[dict]) -> None:
        """The epoch-0 record (the model as initialized): after the "start" event, so the caller
        knows the run folder by then."""
        self.baseline = [{"epoch": 0, "val_loss": val_loss, "val_acc": val_acc, "layers": layers}]
        self.record_metrics()
        if self.board:
            self.board.log(self.baseline[0])

    def step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if self.progress:
            self.progress("step", events.Step(epoch=epoch, step=step, steps=steps, loss=loss))

    def append(self, record: dict) -> None:
        """Part of the epoch's commit (inside signals_deferred)."""
        self.history.append(record)
        self.record_metrics()

    def keep(self, record: dict, stepper: Stepper, position: int) -> bool:
        """The rest of the epoch's commit (inside signals_deferred, after the schedules stepped):
        the best epoch, and the epoch's checkpoint snapshot (written when due: checkpointing.py).
        Returns whether the epoch improved on the best."""
        improved = self.best.update(record)
        selected = improved and self.selects_best
        if selected:
            self.best_weights = cpu_copy(stepper.model_state(position))
        if self.checkpoints is not None and self.checkpoints.wanted:
            snapshot = cpu_copy({
                "epoch": record["epoch"],
                "optimizer": stepper.optimizer_state(position),
                "scheduler": stepper.scheduler_state(position),
                "rng": stepper.rng_state(position),
                "best": {"value": self.best.value, "epoch": self.best.epoch, "waited": self.best.waited},
                "started": self.summary["started"],
                "wall_seconds": time.time() - self.started,
            })
            # CPU copies already, replaced and never changed: the epoch's weights are the best's
            # copy when this epoch is the best, not a second copy of them.
            snapshot["model"] = self.best_weights if selected else cpu_copy(stepper.model_state(position))
            snapshot["best_model"] = self.best_weights
            self.checkpoints.epoch(snapshot, improved)
        return improved

    def announce(self, record: dict, improved: bool) -> None:
        if self.board:
            self.board.log(record)
        if self.progress:
            self.progress("epoch", events.EpochEnd(record=record, improved=improved, epochs=self.config.train.epochs, warnings=self.new_warnings()))

    def new_warnings(self) -> list[str]:
        """The diagnostics' warnings that the records so far (epoch 0's included) raise and no
        earlier epoch event carried, so that a display shows each once, as soon as it is found."""
        if not self.diagnostics:
            return []
        found = diagnostic_findings(self.baseline + self.history, activation_label(self.config.model.activation),
                                    self.summary["diagnostics"]["saturates_both_sides"])
        new = [sentence for about, sentence in found.items() if about not in self.warned]
        self.warned.update(found)
        return new

    def stops_early(self, improved: bool) -> bool:
        stopping = self.stopping
        if stopping and not improved and self.best.waited >= stopping.patience:
            self.summary["stopped_early"] = True
            return True
        return False

    def complete(self, model: MLP, data: Data) -> Run:
        """The selected epoch's weights (the best, unless restore_best is off) on the test set, then
        finish: `model` is the member's own MLP, out of the stack or at the end of training."""
        selected = len(self.history)
        if self.selects_best and self.best.epoch != selected and self.best_weights is not None:  # (None: a checkpoint from before this rule)
            model.load_state_dict(self.best_weights)
            selected = self.best.epoch
        # A tuning trial selects on validation data only: it has no test split to read.
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test) if self.trial is None else (None, None)
        # The tested weights are the run's result, kept whatever train.checkpoint says (load_run reads
        # them); written before summary.json says completed, so a completed run always has them.
        save_weights(model.state_dict(), selected, self.folder / MODEL)
        if self.draws_curves:
            # Drawn before the run says completed: Ctrl-C while matplotlib loads (~1 s) leaves an
            # interrupted run that resumes straight to this point, never a completed folder whose
            # caller (a sweep's ledger) heard "interrupted".
            from .plots import run_title, save_run_curves  # matplotlib, if at all, only now: a run's start stays fast

            save_run_curves(self.folder, self.baseline + self.history, run_title(self.config.name, self.folder), selected)
        self.summary.setdefault("stopped_early", False)
        chosen = next(r for r in self.history if r["epoch"] == selected)
        result = {key: chosen[key] for key in ("train_loss", "train_acc", "val_loss", "val_acc")}
        return self.finish("completed", selected_epoch=selected, **result, test_loss=test_loss, test_acc=test_acc)

    def finish(self, status: str, **extra) -> Run:
        if self.checkpoints is not None:  # the last finished epoch's state on disk before the run says how it ended
            self.checkpoints.save()
            self.checkpoints.writer.flush()
        summary = self.summary
        summary.update(status=status, wall_seconds=round(time.time() - self.started, 3), epochs_completed=len(self.history), **extra)
        summary.update(_best_fields(self.history, self.best))
        if self.threads is not None:
            summary["thread_policy"] = describe_threads(self.config.train.threads, self.threads)
        if self.diagnostics:
            activation = activation_label(self.config.model.activation)
            summary["warnings"] = diagnostic_warnings(self.baseline + self.history, activation, summary["diagnostics"]["saturates_both_sides"])
        if self.metrics_pending:
            self.record_metrics()
        write_json_atomic(self.folder / "summary.json", summary)
        if self.board:
            self.board, board = None, self.board
            board.close()
        self.ended = status
        self.run = Run(self.folder, summary, self.history)
        if self.progress:
            self.progress("end", events.RunEnd(dir=self.folder, summary=summary))
        return self.run


def _fit(members: list[Member], recorders: list[Recorder], data: Data, threads) -> list[Run]:
    """The loop: K recorders around one stepper (K = 1 for a solo run). Members all start at the
    same epoch. A member that diverges or stops early leaves the stepper (the others go on); each
    epoch is committed for every member at once, under signals_deferred. `threads` is the
    threads.thread_policy in force (its tick runs every step)."""
    config = members[0].config
    for recorder in recorders:
        recorder.threads = threads
    steps = steps_per_epoch(len(data.y_train), config.train.batch_size, config.model.batch_norm)
    live = list(range(len(members)))  # members (and recorders) still training, in stepper order
    writer = CheckpointWriter()
    try:
        for recorder in recorders:
            recorder.open(steps, len(members), writer)
        for member, recorder in zip(members, recorders):
            if member.tracker is not None and not recorder.resumed:
                val_loss, val_acc = evaluate(member.model, data.x_val, data.y_val)
                recorder.epoch_zero(val_loss, val_acc, member.tracker.epoch_zero())
        stepper = Stepper(members, data)
        for epoch in range(recorders[0].start_epoch, config.train.epochs + 1):
            tick = time.time()
            lrs = stepper.lrs()

            def report(step, total, losses, live=live, epoch=epoch):
                for position, i in enumerate(live):
                    recorders[i].step(epoch, step, total, losses[position])

            watched = any(recorders[i].progress for i in live)
            train_losses, train_accs = train_epoch(stepper, epoch, report if watched else None, threads.tick)
            diverged = [p for p, loss in enumerate(train_losses) if not math.isfinite(loss)]
            for position in diverged:
                i = live[position]
                recorders[i].finish("diverged", error=_diverged_message(members[i].config, epoch))
            if diverged:
                stepper = stepper.without(diverged)
                kept = [p for p in range(len(live)) if p not in diverged]
                live, lrs = [live[p] for p in kept], [lrs[p] for p in kept]
                train_losses, train_accs = [train_losses[p] for p in kept], [train_accs[p] for p in kept]
                if stepper is None:
                    break
            validation = [evaluate(members[i].model, data.x_val, data.y_val) for i in live]
            layers = stepper.tracker.end_epoch() if stepper.tracker is not None else [None] * len(live)
            seconds = round(time.time() - tick, 4)
            records = []
            for position in range(len(live)):
                record = {
                    "epoch": epoch, "train_loss": train_losses[position], "train_acc": train_accs[position],
                    "val_loss": validation[position][0], "val_acc": validation[position][1], "lr": lrs[position], "seconds": seconds,
                }
                if layers[position] is not None:
                    record["layers"] = layers[position]
                records.append(record)
            with signals_deferred():  # the epoch is recorded whole (records, metrics files, its checkpoint snapshot) or not at all
                for position, i in enumerate(live):
                    recorders[i].append(records[position])
                stepper.step_schedules()
                improved = [recorders[i].keep(records[position], stepper, position) for position, i in enumerate(live)]
            for position, i in enumerate(live):
                recorders[i].announce(records[position], improved[position])
            stopped = [p for p, i in enumerate(live) if recorders[i].stops_early(improved[p])]
            pruned = _pruned(recorders, live, records, stopped, epoch == config.train.epochs)
            for position in pruned:
                recorders[live[position]].finish("pruned")
            stopped += pruned
            if stopped:
                stepper = stepper.without(stopped)
                for position in stopped:
                    if position not in pruned:
                        recorders[live[position]].complete(members[live[position]].model, data)
                live = [i for p, i in enumerate(live) if p not in stopped]
                if stepper is None:
                    break
        for i in live:
            recorders[i].complete(members[i].model, data)
        return [recorder.run for recorder in recorders]
    except KeyboardInterrupt as e:
        for recorder in recorders:
            if recorder.opened and recorder.ended is None:
                _finish_anyway(recorder.finish, "interrupted", error=str(e) or "interrupted (Ctrl-C)")
        raise
    except Exception as e:
        for recorder in recorders:
            if recorder.opened and recorder.ended is None:
                _finish_anyway(recorder.finish, "failed", error=str(e) if isinstance(e, ActexpError) else f"{type(e).__name__}: {e}")
        raise
    finally:
        writer.close()


def _pruned(recorders: list, live: list[int], records: list[dict], stopped: list[int], last_epoch: bool) -> list[int]:
    """The positions of the tuning trials whose studies prune them after this epoch. Every trial
    reports the epoch before any asks: a pruner that ranks a trial against the others at the same
    epoch then sees the whole group's figures. A trial that stops early or ends now is not pruned."""
    trials = [(p, recorders[i].trial) for p, i in enumerate(live) if recorders[i].trial is not None]
    for position, trial in trials:
        trial.report(records[position])
    if last_epoch:
        return []
    return [p for p, trial in trials if p not in stopped and trial.should_prune()]


def train_epoch(stepper: Stepper, epoch: int, progress=None, each_step=None) -> tuple[list[float], list[float]]:
    """One pass over the training split for every member of the stepper: per member (mean
    cross-entropy, accuracy), nan for a member whose loss diverged. `progress(step, steps, losses)`
    hears the members' current losses every few steps; `each_step()` is called after every step."""
    report_every = max(1, stepper.steps_per_epoch() // PROGRESS_UPDATES_PER_EPOCH)
    return stepper.train_epoch(progress, report_every, each_step)


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
        raise ActexpError(f"{folder}: no checkpoint was written before the run stopped (none is, before its first epoch ends; after "
                          f"that every train.checkpoint_every = {tc.checkpoint_every:g} s and on Ctrl-C/SIGTERM), so there is nothing "
                          f"to resume; train the config again")
    if not last.is_file():
        raise ActexpError(f"{folder}: no {CHECKPOINTS}/last.pt to resume from (the run kept train.checkpoint={tc.checkpoint}; resuming needs last or both)")
    # The model, up to three optimizer states and the best weights, in float32, plus RNG states.
    return load_checkpoint(last, max_bytes=4 * 6 * n_params + (64 << 20))


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
    # torchvision's installed version from its metadata: importing torchvision only to ask would
    # slow every run's start (the distribution's version has no build label: 0.29.1, not 0.29.1+cu130).
    from importlib.metadata import PackageNotFoundError, version

    try:
        tv = version("torchvision")
    except PackageNotFoundError:
        tv = None
    return {"actexp": __version__, "torch": torch.__version__, "torchvision": tv, "python": platform.python_version()}
