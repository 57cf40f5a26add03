"""The seam between a sweep's driver and what trains its runs.

A **task** is plain data (it crosses into worker processes and onto other nodes): one run, or
several that train together (a fused group), each keyed by its ledger name. `execute(task, report)`
trains a task wherever it lands and returns one `Outcome` per run; every backend calls it in its
worker. A **backend** runs the tasks the driver submits and sends their events back to it:

    start(sweep_dir, emit)   set up (spawn workers, join a cluster); events go to emit(Event)
    slots                    how many tasks it runs at once; the driver keeps at most that many submitted
    submit(task)             run a task (the driver submits only while fewer than `slots` are in flight)
    poll(timeout)            wait up to `timeout` seconds and pass what happened to emit
    stop()                   graceful: runs in training save themselves as interrupted
    close()                  let go of everything (always called, after stop or not)

Events are `events.Event(run, kind, info)`: `run_start` (events.TaskStart), `epoch`
(events.TaskEpoch), `run_end` (the run's Outcome; exactly one per submitted run, however its task
ended) and `retry` (events.Retry: a backend that re-runs a lost task says so). The driver (sweep.py) alone keeps the ledger, decides fail-fast, turns
Ctrl-C/SIGTERM into `stop()`, and feeds the live table.

Three implementations: `local.InProcessBackend` (--jobs 1), `local.ProcessBackend` (--jobs N) and
`raycluster.RayBackend` (--backend ray). Nothing here imports torch or ray.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BackendUnavailable  # noqa: F401  (re-exported)
from ..events import Event, Report, TaskEpoch, TaskStart  # noqa: F401  (Event, Report: re-exported)
from ..runs import CHECKPOINTS, RESULTS, DamagedFile, read_summary, write_json_atomic


@dataclass(frozen=True)
class RunSpec:
    """One run of a task."""

    name: str  # its name in the sweep's ledger
    config: dict  # its resolved config as plain data (config_to_dict)
    folder: Path | None  # resume or restart in this folder (absolute); None: a fresh folder
    resume: bool
    trial: object = None  # a tuning trial's tuning.TrialLink


@dataclass(frozen=True)
class Task:
    """What a backend runs: one run, or several trained together (a fused group). Its paths are
    absolute: a worker on another node, or in another working directory, finds the same folders."""

    runs: tuple[RunSpec, ...]
    sweep_dir: Path  # absolute; a fresh run folder is made in it
    fused: bool = False  # train the runs together as one stacked model (training.train_group)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(run.name for run in self.runs)

    @property
    def device(self) -> str:
        """The train.device its runs ask for (a fused group's runs share one device)."""
        return self.runs[0].config.get("train", {}).get("device", "auto")


@dataclass(frozen=True)
class Outcome:
    """How one run ended. `status` is a run status (completed, diverged, failed, interrupted), or
    `pending` for a run of a task that stopped before this run began."""

    name: str
    status: str
    folder: str | None  # relative to the sweep folder; None: it ended before it had one
    error: str | None = None
    test_acc: float | None = None
    wall_seconds: float | None = None




class Backend:
    """What the driver needs from a backend (see the module's docstring)."""

    slots: int = 1

    def start(self, sweep_dir: Path, emit: Callable[[Event], None]) -> None:
        raise NotImplementedError

    def submit(self, task: Task) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- executing a task


def execute(task: Task, report: Report) -> list[Outcome]:
    """Train a task and return one Outcome per run, in the task's order. Never raises for a run's
    own failure (a bad config, a diverging run) nor for Ctrl-C/SIGTERM: those are outcomes
    (`failed`, `diverged`, `interrupted`); the runs in training save themselves first.
    `report(run name, kind, info)` hears run_start and epoch events as they happen; run_end is the
    backend's to send, from what this returns.

    A fused task trains its runs together (one stepper, one recorder per run); any other task of
    several runs trains them one after another."""
    if task.fused:
        return _train_group(task, report)
    outcomes = []
    for i, run in enumerate(task.runs):
        outcome = train_run(run, task.sweep_dir, lambda kind, info, name=run.name: report(name, kind, info))
        outcomes.append(outcome)
        if outcome.status == "interrupted":
            outcomes += [Outcome(later.name, "pending", _relative(later.folder, task.sweep_dir)) for later in task.runs[i + 1:]]
            break
    return outcomes


def _progress(folder: dict, report: Callable[[str, dict], None]):
    """A training progress callback that passes a run's start and epochs on as task events and keeps
    its folder in `folder["dir"]` once it exists."""

    def progress(event, info):
        if event == "start":
            folder["dir"] = info["dir"]
            report("run_start", TaskStart(dir=str(info["dir"]), first_epoch=info["first_epoch"], epochs=info["epochs"],
                                          pid=os.getpid(), host=socket.gethostname()))
        elif event == "epoch":
            record = info["record"]
            report("epoch", TaskEpoch(epoch=record["epoch"], epochs=info["epochs"], val_acc=record["val_acc"], val_loss=record["val_loss"]))

    return progress


def train_run(run: RunSpec, sweep_dir: Path, report: Callable[[str, dict], None]) -> Outcome:
    """Train one run; never raises: a failure or Ctrl-C becomes the outcome's status."""
    from ..config import config_from_dict
    from ..training import train

    folder = {"dir": run.folder}
    progress = _progress(folder, report)
    try:
        config = config_from_dict(run.config)
        # curves.png: the sweep's driver draws it, off this worker's path.
        if run.resume:
            trained = train(config, progress=progress, resume=run.folder, curves=False, trial=run.trial)
        else:
            trained = train(config, runs_dir=sweep_dir, progress=progress, run_dir=run.folder, curves=False, trial=run.trial)
    except KeyboardInterrupt:
        return Outcome(run.name, "interrupted", _relative(folder["dir"], sweep_dir), "interrupted")
    except Exception as e:
        return Outcome(run.name, "failed", _relative(folder["dir"], sweep_dir), f"{type(e).__name__}: {e}")
    s = trained.summary
    return Outcome(run.name, trained.status, _relative(trained.dir, sweep_dir), s.get("error"), s.get("test_acc"), s.get("wall_seconds"))


def _train_group(task: Task, report: Report) -> list[Outcome]:
    """Train a fused task's runs as one stacked model; never raises, like train_run."""
    from ..config import config_from_dict
    from ..training import Run, train_group

    folders = [{"dir": run.folder} for run in task.runs]
    progress = [_progress(folder, lambda kind, info, name=run.name: report(name, kind, info)) for folder, run in zip(folders, task.runs)]

    def unfinished(status: str, error: str) -> list[Outcome]:
        """After the group stopped: what each member's folder records (a member may have finished
        first), else `status` (`pending` for an interrupted member that never began)."""
        outcomes = []
        for run, folder in zip(task.runs, folders):
            where = Path(folder["dir"]) if folder["dir"] else None
            recorded = recorded_outcome(run, where, task.sweep_dir)
            if recorded is None:
                began = where is not None or status == "failed"
                recorded = Outcome(run.name, status if began else "pending", _relative(where, task.sweep_dir), error)
            outcomes.append(recorded)
        return outcomes

    try:
        results = train_group([config_from_dict(run.config) for run in task.runs], [run.folder for run in task.runs],
                              runs_dir=task.sweep_dir, resume=[run.resume for run in task.runs], progress_for=progress, curves=False,
                              trials=[run.trial for run in task.runs])
    except KeyboardInterrupt:
        return unfinished("interrupted", "interrupted")
    except Exception as e:
        return unfinished("failed", f"{type(e).__name__}: {e}")
    outcomes = []
    for run, folder, result in zip(task.runs, folders, results):
        if isinstance(result, Run):
            s = result.summary
            outcomes.append(Outcome(run.name, result.status, _relative(result.dir, task.sweep_dir), s.get("error"), s.get("test_acc"), s.get("wall_seconds")))
        else:  # the member could not start (a damaged checkpoint, a folder another process holds)
            outcomes.append(Outcome(run.name, "failed", _relative(folder["dir"], task.sweep_dir), str(result)))
    return outcomes


def keep_freed_memory() -> None:
    """A fused step allocates and frees tensors of tens of MB (K members' activations and
    gradients); glibc gives such blocks back to the system when they are freed and faults them in
    again on the next step (a tenth of a 54-member step's time). Raise its mmap and trim thresholds
    for this process so that it keeps them. The cost: the process holds on to its peak memory until
    it ends, so only processes that exist to train a sweep's tasks call this (its workers, the
    `actexp sweep` command), never the library on its own. Nothing happens where the C library is
    not glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: free heap is given back beyond 1 GiB only
    except (OSError, AttributeError):
        pass


def _relative(folder, sweep_dir: Path) -> str | None:
    return None if folder is None else Path(folder).relative_to(sweep_dir).as_posix()


# ----------------------------------------------------------------------------- for backends


def recorded_outcome(run: RunSpec, folder: Path | None, sweep_dir: Path) -> Outcome | None:
    """The outcome a run's folder records when its summary.json says the run ended (completed,
    diverged, failed), a damaged summary being a failure; None when it holds no end."""
    folder = folder or run.folder
    if folder is None:
        return None
    try:
        summary = read_summary(folder)
    except DamagedFile as e:
        return Outcome(run.name, "failed", _relative(folder, sweep_dir), str(e))
    if summary.get("status") in RESULTS + ("failed", "pruned"):
        return Outcome(run.name, summary["status"], _relative(folder, sweep_dir), summary.get("error"), summary.get("test_acc"), summary.get("wall_seconds"))
    return None


def ended_without_outcome(run: RunSpec, folder: Path | None, sweep_dir: Path, status: str, error: str | None) -> Outcome:
    """The outcome of a run whose task ended without returning it (its worker died, or the task was
    cancelled). The run folder's summary.json is the truth when it holds an end: a worker may die
    after its run finished. Otherwise the run ends with `status` (`interrupted` or `failed`); a
    failed run's summary says so too, since its dead worker could not. A run interrupted before it
    began is `pending`."""
    recorded = recorded_outcome(run, folder, sweep_dir)
    if recorded is not None:
        return recorded
    folder = folder or run.folder
    if folder is None:
        return Outcome(run.name, "pending", None) if status == "interrupted" else Outcome(run.name, status, None, error)
    if status == "failed":
        summary = read_summary(folder)
        if summary.get("status") == "running":
            write_json_atomic(Path(folder) / "summary.json", {**summary, "status": "failed", "error": error})
    return Outcome(run.name, status, _relative(folder, sweep_dir), error)


def resumable(run: RunSpec, folder: Path | None) -> RunSpec:
    """The same run, set to go on in `folder` (where its lost attempt trained): from its last
    checkpoint when there is one, else started over in that folder."""
    folder = folder or run.folder
    if folder is None or not Path(folder).is_dir():
        return RunSpec(run.name, run.config, None, False)
    return RunSpec(run.name, run.config, Path(folder), (Path(folder) / CHECKPOINTS / "last.pt").exists())


def cpu_count() -> int:
    """The cores this process may keep busy (its CPU affinity, or its cgroup's CPU quota if lower)."""
    from ..threads import usable_cores

    return usable_cores()
