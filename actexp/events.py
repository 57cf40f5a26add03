"""Every event actexp sends while it works, in one place: each kind's name and what its `info`
carries. Events stay plain data (a dict, or an Outcome) so that they cross into worker processes
and onto Ray nodes as they are, and so that a callback reads them as `info["epoch"]`.

Three conversations use them:

- a training run tells its caller `progress(kind, info)`: "start" (RunStart), "step" (Step),
  "epoch" (EpochEnd), "end" (RunEnd) — `actexp.train(progress=...)`, the CLI's live display;
- a sweep's task tells its backend, and the backend its driver, `Event(run, kind, info)`:
  "run_start" (TaskStart), "epoch" (TaskEpoch), "run_end" (an Outcome: exactly one per submitted
  run), "retry" (Retry) — backends/;
- a sweep's driver tells its caller `progress(kind, info)`: "plan" (SweepPlan), then the task
  events above with the run's `name` added — `run_sweep(progress=...)`, the live table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, TypedDict

# ----------------------------------------------------------------------------- a training run


class RunStart(TypedDict):
    dir: Path
    config: Any  # config.Config
    summary: dict
    epochs: int
    steps: int  # steps per epoch
    first_epoch: int  # 1, or the epoch a resumed run goes on from


class Step(TypedDict):
    epoch: int
    step: int
    steps: int
    loss: float  # the member's current training loss


class EpochEnd(TypedDict):
    record: dict  # the epoch's metrics record, as metrics.jsonl holds it
    improved: bool  # the best epoch so far by the monitor
    epochs: int
    warnings: list[str]  # the diagnostics' warnings first found by this epoch


class RunEnd(TypedDict):
    dir: Path
    summary: dict


Progress = Callable[[str, dict], None]  # progress(kind, info)


# ----------------------------------------------------------------------------- a sweep's tasks


class TaskStart(TypedDict):
    dir: str
    first_epoch: int
    epochs: int
    pid: int
    host: str


class TaskEpoch(TypedDict):
    epoch: int
    epochs: int
    val_acc: float
    val_loss: float


class Retry(TypedDict):
    error: str
    attempt: int  # the attempt about to start
    attempts: int  # the most there will be


class Event(NamedTuple):
    run: str  # the run's ledger name
    kind: str  # run_start, epoch, run_end, retry
    info: Any  # TaskStart, TaskEpoch, Retry; for run_end, the run's backends.Outcome


Report = Callable[[str, str, dict], None]  # report(run name, kind, info), from a task to its backend


# ----------------------------------------------------------------------------- a sweep's driver


class SweepPlan(TypedDict):
    sweep: Any  # sweep.Sweep
    steps: list  # sweep.Step, one per run
    dir: Path
    removed: list  # ledger entries no longer in the sweep
    jobs: int  # tasks the backend runs at once
    stage: str  # what the runs are: "" for a sweep's runs; a tuned sweep's "trials 1-64 of 256", "confirmation runs"
