"""The seam between a sweep's driver and its backends: the driver's part (ledger, fail-fast, stop,
the interrupt re-raised as it came) with a scripted backend that trains nothing; `execute` on a task
of several runs; SIGTERM through the local backends; --backend ray without Ray installed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actexp.backends import Backend, Event, Outcome, RunSpec, Task, execute
from actexp.cli import app
from actexp.errors import Terminated
from actexp.runs import read_history, read_summary
from actexp.sweep import run_sweep
from test_sweep import LONG_BASE, ONE_THREAD_ENV, REPO, XOR_BASE, signal_sweep_when, statuses, training_mid_way, write_sweep


class ScriptedBackend(Backend):
    """Trains nothing: each poll moves every submitted run one step on (run_start, 2 epochs,
    run_end). `ends` gives a run's final status (default completed); `interrupt_at` raises these
    exceptions at those polls; after `stop`, each run ends interrupted at the next poll, unless
    `deaf` (a backend whose runs do not stop)."""

    def __init__(self, slots=2, ends=None, interrupt_at=None, deaf=False):
        self.slots, self.ends, self.interrupt_at, self.deaf = slots, ends or {}, dict(interrupt_at or {}), deaf
        self.log, self.runs, self.polls, self.stopped = [], {}, 0, False

    def start(self, sweep_dir, emit):
        self.sweep_dir, self.emit = sweep_dir, emit
        self.log.append(("start",))

    def submit(self, task):
        assert len({id(t) for t, _ in self.runs.values()}) < self.slots, "submitted past its slots"
        self.log.append(("submit", task.names))
        for run in task.runs:
            self.runs[run.name] = (task, 0)

    def poll(self, timeout):
        self.polls += 1
        if self.polls in self.interrupt_at:
            raise self.interrupt_at[self.polls]
        for name, (task, step) in list(self.runs.items()):
            folder = task.sweep_dir / name / "1"
            if self.stopped and not self.deaf:
                self._end(Outcome(name, "interrupted", f"{name}/1", "interrupted"))
            elif step == 0:
                self.emit(Event(name, "run_start", {"dir": str(folder), "first_epoch": 1, "epochs": 2, "pid": 1, "host": "here"}))
            elif step in (1, 2):
                self.emit(Event(name, "epoch", {"epoch": step, "epochs": 2, "val_acc": 0.5, "val_loss": 1.0}))
            else:
                status = self.ends.get(name, "completed")
                self._end(Outcome(name, status, f"{name}/1", None if status == "completed" else "it broke", 0.9, 1.0))
            if name in self.runs:
                self.runs[name] = (task, step + 1)

    def _end(self, outcome):
        del self.runs[outcome.name]
        self.emit(Event(outcome.name, "run_end", outcome))

    def stop(self):
        self.log.append(("stop",))
        self.stopped = True

    def close(self):
        self.log.append(("close",))


def four_runs(tmp_path) -> Path:
    return write_sweep(tmp_path, {"model.activation": ["relu", "tanh", "sigmoid", "gelu"]})


NAMES = ["activation=relu", "activation=tanh", "activation=sigmoid", "activation=gelu"]


def test_the_driver_keeps_the_ledger_and_passes_events_in_order(tmp_path):
    backend = ScriptedBackend(slots=2)
    events = []
    result = run_sweep(four_runs(tmp_path), runs_dir=tmp_path / "runs", backend=backend, fused=False, report=False,
                       progress=lambda event, info: events.append((event, info)))
    assert [e["status"] for e in result.runs] == ["completed"] * 4
    assert [e["folder"] for e in result.runs] == [f"{name}/1" for name in NAMES]  # relative to the sweep folder
    assert backend.log[0] == ("start",) and backend.log[-1] == ("close",)
    assert [entry for entry in backend.log if entry[0] == "submit"] == [("submit", (name,)) for name in NAMES]
    assert events[0][0] == "plan" and events[0][1]["jobs"] == 2  # the backend's slots, for the table's ETA
    for name in NAMES:
        assert [event for event, info in events if info.get("name") == name] == ["run_start", "epoch", "epoch", "run_end"]
    end = next(info for event, info in events if event == "run_end")
    assert end["status"] == "completed" and end["test_acc"] == 0.9 and end["folder"]


def test_fail_fast_submits_nothing_after_a_failure_and_lets_running_runs_finish(tmp_path):
    backend = ScriptedBackend(slots=2, ends={"activation=tanh": "failed"})
    result = run_sweep(four_runs(tmp_path), runs_dir=tmp_path / "runs", backend=backend, fused=False, fail_fast=True, report=False)
    assert [e["status"] for e in result.runs] == ["completed", "failed", "pending", "pending"]
    assert result.runs[1]["error"] == "it broke"
    assert ("stop",) not in backend.log  # fail-fast is not a stop: relu, in flight, completed

    slow = ScriptedBackend(slots=1, ends={"activation=relu": "diverged"})
    result = run_sweep(four_runs(tmp_path), runs_dir=tmp_path / "again", backend=slow, fused=False, fail_fast=True, report=False)
    assert [e["status"] for e in result.runs] == ["diverged", "pending", "pending", "pending"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Terminated("terminated by SIGTERM")], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_stops_the_backend_waits_for_its_runs_and_is_raised_as_it_came(tmp_path, interrupt):
    backend = ScriptedBackend(slots=2, interrupt_at={3: interrupt})  # two runs in flight, at their first epoch
    with pytest.raises(KeyboardInterrupt) as raised:
        run_sweep(four_runs(tmp_path), runs_dir=tmp_path / "runs", backend=backend, fused=False, report=False)
    assert raised.value is interrupt  # Terminated stays Terminated: the CLI exits 143, not 130
    assert backend.log.count(("stop",)) == 1 and backend.log[-1] == ("close",)
    assert sum(entry[0] == "submit" for entry in backend.log) == 2
    assert statuses(tmp_path / "runs" / "xor_sweep") == dict(zip(NAMES, ["interrupted", "interrupted", "pending", "pending"]))


def test_a_second_interrupt_stops_waiting(tmp_path):
    backend = ScriptedBackend(slots=2, interrupt_at={3: KeyboardInterrupt(), 5: KeyboardInterrupt()}, deaf=True)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(four_runs(tmp_path), runs_dir=tmp_path / "runs", backend=backend, fused=False, report=False)
    assert backend.polls == 5 and backend.log[-1] == ("close",)
    # The runs never said how they ended: the ledger keeps `running`, which the next sweep resumes.
    assert list(statuses(tmp_path / "runs" / "xor_sweep").values()) == ["running", "running", "pending", "pending"]


def test_execute_trains_each_run_of_a_task_and_keys_events_by_run(tmp_path):
    sweep_dir = tmp_path / "sweep"
    configs = []
    for activation in ("relu", "tanh"):
        from actexp.config import config_from_dict, config_to_dict

        config = config_to_dict(config_from_dict({**XOR_BASE, "name": activation, "model": {**XOR_BASE["model"], "activation": activation}}))
        configs.append(RunSpec(activation, config, None, False))
    bad = {**configs[0].config, "name": "bad", "data": {**configs[0].config["data"], "val_size": 5000}}
    task = Task((configs[0], RunSpec("bad", bad, None, False), configs[1]), sweep_dir)
    events = []
    outcomes = execute(task, lambda name, kind, info: events.append((name, kind, info)))
    assert [(o.name, o.status) for o in outcomes] == [("relu", "completed"), ("bad", "failed"), ("tanh", "completed")]
    assert "val_size" in outcomes[1].error and outcomes[1].folder is None  # a run's own failure is its outcome
    assert [(name, kind) for name, kind, _ in events] == [("relu", "run_start")] + [("relu", "epoch")] * 3 + [("tanh", "run_start")] + [("tanh", "epoch")] * 3
    for outcome in (outcomes[0], outcomes[2]):
        folder = sweep_dir / outcome.folder
        assert read_summary(folder)["status"] == "completed" and len(read_history(folder)) == 4
    assert events[0][2]["dir"] == str(sweep_dir / outcomes[0].folder) and events[0][2]["pid"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_stops_a_sweep_with_143_and_its_runs_resume(tmp_path, jobs):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, base=LONG_BASE)
    runs = tmp_path / "runs"
    sweep_dir = runs / "xor_sweep"
    code, output = signal_sweep_when(path, runs, lambda d, e: bool(e) and training_mid_way(d, e[0]), signal.SIGTERM, "--jobs", jobs, wait=90)
    assert code == 143, output
    assert "terminated (SIGTERM)" in output
    assert statuses(sweep_dir)["activation=relu"] == "interrupted"
    result = run_sweep(path, runs_dir=runs, report=False)
    assert [e["status"] for e in result.runs] == ["completed", "completed"]
    assert [r["epoch"] for r in read_history(sweep_dir / result.runs[0]["folder"])] == list(range(0, 31))


def test_backend_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    result = CliRunner().invoke(app, ["sweep", str(path), "--backend", "ray", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "pip install 'actexp[ray]'" in result.output
    assert not (tmp_path / "runs").exists()


def test_ray_options_need_the_ray_backend(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    for args, words in ((["--address", "auto"], "--address is an option of --backend ray"),
                        (["--gpus-per-run", "0.5"], "--gpus-per-run is an option of --backend ray"),
                        (["--backend", "slurm"], "expected local or ray"),
                        (["--backend", "ray", "--gpus-per-run", "1.5"], "a fraction of one GPU")):
        result = CliRunner().invoke(app, ["sweep", str(path), *args, "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1, (args, result.output)


@pytest.mark.slow
def test_importing_the_sweep_machinery_imports_neither_torch_nor_ray():
    code = "import sys, actexp.sweep, actexp.backends, actexp.backends.local, actexp.cli; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

