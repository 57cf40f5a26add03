"""The Ray backend on one local Ray instance (2 CPUs), started once for this module: the same
results as the local backend, a killed worker's run resumed, Ctrl-C then the same command (the
tasks stopping themselves, never through ray.cancel), a failing config, the shared-storage probe."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from typer.testing import CliRunner

from actexp.cli import app
from actexp.runs import read_history, read_ledger, read_summary
from actexp.sweep import RunLostWarning, load_sweep, plan_sweep, run_sweep
from test_sweep import LONG_BASE, ONE_THREAD_ENV, XOR_BASE, signal_sweep_when, snapshot, statuses, training_mid_way, write_sweep

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

from actexp.backends import raycluster  # noqa: E402
from actexp.backends.raycluster import RayBackend, run_interruptibly  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for all the Ray tests (they are all in this module): 2 CPUs, so two
    runs train at a time (1 thread each). Shut down when they are done, and its processes' logs are
    not forwarded here, so that nothing of Ray's writes into a later test's captured output."""
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    signal.signal(signal.SIGTERM, sigterm)  # ray.init's own (sys.exit) would change later tests' SIGTERM
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def metrics(result) -> dict:
    """Each run's per-epoch records (without their timings) and test accuracy."""
    out = {}
    for e in result.runs:
        folder = result.dir / e["folder"]
        history = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(folder)]
        out[e["name"]] = (history, read_summary(folder).get("test_acc"))
    return out


def test_a_grid_on_ray_gives_the_local_statuses_and_metrics(tmp_path, cluster):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"], "optim.lr": [0.01, 1e12]}, base={**XOR_BASE, "optim": {"optimizer": "sgd", "lr": 0.01}})
    local = run_sweep(path, runs_dir=tmp_path / "local", jobs=1, report=False)
    events = []
    remote = run_sweep(path, runs_dir=tmp_path / "ray", backend=RayBackend(), report=False, progress=lambda event, info: events.append((event, info)))
    assert [e["status"] for e in remote.runs] == [e["status"] for e in local.runs]
    assert [e["status"] for e in remote.runs][:2] == ["completed", "diverged"]  # (relu at lr 1e12 diverges)
    assert metrics(remote) == metrics(local)
    assert events[0][1]["jobs"] == 2  # the cluster's 2 CPUs, one per run
    for e in remote.runs:  # epochs arrive live, each run's between its start and its end
        kinds = [event for event, info in events if info.get("name") == e["name"]]
        assert kinds == ["run_start"] + ["epoch"] * 3 * (e["status"] == "completed") + ["run_end"]
    assert read_summary(remote.dir / remote.runs[0]["folder"])["threads"] == 1
    assert not list(remote.dir.glob(".probe-*"))  # the storage probe cleans up


def test_a_killed_worker_is_resumed_and_its_runs_end_as_if_never_stopped(tmp_path, cluster):
    """A fused group whose worker dies goes on from its members' folders, still as one group."""
    base = {**LONG_BASE, "train": {**LONG_BASE["train"], "epochs": 40, "checkpoint_every": 0}}  # (a kill -9 keeps what is on disk)
    path = write_sweep(tmp_path, {"model.activation": ["relu"]}, seeds=[0, 1], base=base)
    starts, killed = [], []

    def kill_mid_run(event, info):
        if event == "run_start":
            starts.append(info)
        if event == "epoch" and not killed and info["epoch"] >= 3:
            os.kill(starts[0]["pid"], signal.SIGKILL)  # the worker process dies mid-run, as on a lost node
            killed.append(info["epoch"])

    backend, submitted = RayBackend(), []
    submit = backend.submit
    backend.submit = lambda task, *args: (submitted.append(task), submit(task, *args))[1]
    with pytest.warns(RunLostWarning, match="its worker was lost"):
        result = run_sweep(path, runs_dir=tmp_path / "ray", backend=backend, max_group=2, report=False, progress=kill_mid_run)
    assert [e["status"] for e in result.runs] == ["completed", "completed"]
    assert killed and len(starts) == 4
    first, again = starts[:2], starts[2:]
    assert len({s["pid"] for s in first}) == len({s["pid"] for s in again}) == 1 and again[0]["pid"] != first[0]["pid"]  # one task each time
    assert {s["dir"] for s in again} == {s["dir"] for s in first} and all(s["first_epoch"] > 1 for s in again)  # resumed in place
    # The retry is a fused group too (its members train together where their checkpoints are of one epoch).
    assert [(len(t.runs), t.fused) for t in submitted] == [(2, True), (2, True)]
    local = run_sweep(path, runs_dir=tmp_path / "local", jobs=1, report=False)
    assert metrics(result) == metrics(local)


def test_a_worker_lost_more_often_than_allowed_fails_its_run(tmp_path, cluster):
    path = write_sweep(tmp_path, {"model.activation": ["relu"]}, seeds=[0], base={**LONG_BASE, "train": {**LONG_BASE["train"], "epochs": 40}})
    pids = []

    def kill_mid_run(event, info):
        if event == "run_start":
            pids.append(info["pid"])
        if event == "epoch" and len(pids) == 1 and info["epoch"] >= 2:
            os.kill(pids.pop(), signal.SIGKILL)

    result = run_sweep(path, runs_dir=tmp_path / "ray", backend=RayBackend(retries=0), report=False, progress=kill_mid_run)
    entry = result.runs[0]
    assert entry["status"] == "failed" and "its worker was lost 1 times" in entry["error"]
    assert read_summary(result.dir / entry["folder"])["status"] == "failed"  # the folder says so too
    steps, _ = plan_sweep(load_sweep(path), result.dir)
    assert [s.action for s in steps] == ["rerun"]  # the same command trains it again


def test_ctrl_c_then_the_same_command_retrains_nothing_and_loses_nothing(tmp_path, cluster):
    # Runs of several seconds each: Ray's events reach the ledger up to half a second late, and on a
    # busy machine the stop takes a while to reach the tasks.
    base = {**LONG_BASE, "data": {**LONG_BASE["data"], "dataset": {"name": "xor", "n_train": 12000}}}
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh", "sigmoid"]}, base=base)
    runs = tmp_path / "runs"
    sweep_dir = runs / "xor_sweep"
    env = {**ONE_THREAD_ENV, "RAY_AUTH_MODE": "token"}  # the token of `ray.init`'s instance, in ~/.ray (Ray asks this for an explicit address)

    def ready(folder, entries) -> bool:
        return any(e["status"] == "completed" for e in entries) and any(training_mid_way(folder, e) for e in entries)

    code, output = signal_sweep_when(path, runs, ready, signal.SIGINT, "--backend", "ray", "--address", cluster, "--no-fuse", env=env, wait=90)
    assert code == 130, output
    assert "run the same command again to resume" in output
    before = read_ledger(sweep_dir)["runs"]
    # On a busy machine a run may finish before the stop reaches it: every run is then completed,
    # interrupted (saved) or pending, and nothing is failed or lost.
    assert {e["status"] for e in before} <= {"completed", "interrupted", "pending"}
    finished = {e["name"]: snapshot(sweep_dir / e["folder"]) for e in before if e["status"] == "completed"}
    for e in before:
        if e["status"] == "interrupted":
            assert read_summary(sweep_dir / e["folder"])["status"] == "interrupted"  # the run saved itself

    result = run_sweep(path, runs_dir=runs, backend=RayBackend(), report=False)
    assert [e["status"] for e in result.runs] == ["completed"] * 3
    for e, old in zip(result.runs, before):
        if old["status"] == "completed":
            assert snapshot(sweep_dir / e["folder"]) == finished[e["name"]]  # not re-trained
        if old["status"] == "interrupted":
            assert e["folder"] == old["folder"]  # resumed in place
        assert [r["epoch"] for r in read_history(sweep_dir / e["folder"])] == list(range(0, 31))


def test_ctrl_c_stops_the_tasks_through_the_inbox_never_with_ray_cancel(tmp_path, cluster, monkeypatch):
    # ray.cancel of a task that is ending on its own can abort the driver inside Ray (a RAY_CHECK in
    # its task manager; bench/ray_stop_race.py shows it): the first Ctrl-C must not use it.
    def no_cancel(*args, **kwargs):
        raise AssertionError("ray.cancel called")

    monkeypatch.setattr(ray, "cancel", no_cancel)
    path = write_sweep(tmp_path, {"model.activation": ["relu"]}, seeds=[0], base={**LONG_BASE, "train": {**LONG_BASE["train"], "epochs": 40}})

    pressed = []

    def ctrl_c(event, info):
        if event == "epoch" and info["epoch"] >= 2 and not pressed:
            pressed.append(info["epoch"])
            raise KeyboardInterrupt  # as Ctrl-C lands in the driver, once

    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, runs_dir=tmp_path / "runs", backend=RayBackend(), report=False, progress=ctrl_c)
    [entry] = read_ledger(tmp_path / "runs" / "xor_sweep")["runs"]
    assert entry["status"] == "interrupted"
    summary = read_summary(tmp_path / "runs" / "xor_sweep" / entry["folder"])
    assert summary["status"] == "interrupted" and summary["epochs_completed"] < 40  # the task stopped, and saved its run


def test_a_task_that_hears_the_stop_before_it_begins_trains_nothing(tmp_path, cluster):
    from actexp.backends import RunSpec, Task
    from actexp.config import config_from_dict, config_to_dict

    sweep_dir = tmp_path / "sweep"
    config = config_to_dict(config_from_dict(XOR_BASE))
    task = Task((RunSpec("a", config, None, False), RunSpec("b", config, None, False)), sweep_dir)
    events = []
    backend = RayBackend()
    backend.start(sweep_dir, events.append)
    try:
        backend.stop()
        backend.submit(task)
        deadline = time.monotonic() + 60
        while backend.attempts and time.monotonic() < deadline:
            backend.poll(0.5)
    finally:
        backend.close()
    assert [(e.run, e.kind, e.info.status, e.info.folder) for e in events] == [("a", "run_end", "pending", None), ("b", "run_end", "pending", None)]
    assert not list(sweep_dir.rglob("*"))  # no run folder: nothing began


def test_a_stop_interrupts_the_task_in_its_main_thread_and_leaves_nothing_behind():
    def trains(seconds=30.0):  # short steps, as training's
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.005)
        return "done"

    def saves_itself():
        try:
            return trains()
        except KeyboardInterrupt:
            return "saved as interrupted"

    before = signal.getsignal(signal.SIGINT)  # (ignored when the tests run as a shell's background job)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # as in Ray's workers
    try:
        asked = time.monotonic() + 0.3
        assert run_interruptibly(trains, lambda: time.monotonic() > asked, every=0.01) is None
        assert time.monotonic() - asked < 5
        asked = time.monotonic() + 0.1
        assert run_interruptibly(saves_itself, lambda: time.monotonic() > asked, every=0.01) == "saved as interrupted"
        assert run_interruptibly(lambda: trains(0.05), lambda: False, every=0.01) == "done"
        assert run_interruptibly(lambda: pytest.fail("began after the stop"), lambda: True) is None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    assert signal.getsignal(signal.SIGINT) is before  # put back as it was
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "actexp-stop-watch"]


def test_a_stop_that_comes_as_the_task_ends_is_raised_inside_it_or_not_at_all():
    # The stop comes at random moments around the work's end; a KeyboardInterrupt may only ever come
    # out of the work itself, never later (where it would escape the task's catch).
    rng = random.Random(0)
    results, late = [], 0
    before = signal.getsignal(signal.SIGINT)

    def work():
        end = time.monotonic() + 0.002
        while time.monotonic() < end:
            pass
        return "done"

    for _ in range(300):
        flip = time.monotonic() + rng.uniform(0, 0.004)
        try:
            results.append(run_interruptibly(work, lambda: time.monotonic() > flip, every=0.0002))
            for _ in range(20):
                time.sleep(0.0002)
        except KeyboardInterrupt:
            late += 1
        assert signal.getsignal(signal.SIGINT) is before
    assert late == 0 and 0 < results.count(None) < 300 and set(results) == {None, "done"}


def test_a_failing_config_fails_once_and_is_not_retried(tmp_path, cluster):
    path = write_sweep(tmp_path, {"data.val_size": [100, 5000]})  # 5000 > the 400 samples: the data split fails
    events = []
    result = run_sweep(path, runs_dir=tmp_path / "runs", backend=RayBackend(), report=False, progress=lambda event, info: events.append((event, info)))
    assert [e["status"] for e in result.runs] == ["completed", "failed"]
    assert "val_size" in result.runs[1]["error"] and result.runs[1]["folder"] is None
    assert [event for event, info in events if info.get("name") == "val_size=5000"] == ["run_end"]
    assert statuses(result.dir) == {"val_size=100": "completed", "val_size=5000": "failed"}


def test_a_runs_folder_the_workers_do_not_share_is_refused_in_one_line(tmp_path, cluster, monkeypatch):
    elsewhere = tmp_path / "a node's own disk"
    monkeypatch.setattr(raycluster, "_probe_target", lambda sweep_dir: elsewhere)
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    result = CliRunner().invoke(app, ["sweep", str(path), "--backend", "ray", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "is not shared with Ray node" in result.output and "Mount one shared folder" in result.output
    assert list(elsewhere.glob(".probe-*"))  # the probe did write, elsewhere
    assert statuses(tmp_path / "runs" / "xor_sweep") == {"activation=relu": "pending", "activation=tanh": "pending"}
    assert ray.is_initialized()  # a Ray the sweep did not start is left running


def test_what_no_node_can_run_is_refused_not_left_waiting(tmp_path, cluster):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    result = CliRunner().invoke(app, ["sweep", str(path), "--backend", "ray", "--cpus-per-run", "3", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "no node of the Ray cluster has that many CPUs (at most 2)" in result.output, result.output
    gpu = run_sweep(path, ["train.device=cuda"], runs_dir=tmp_path / "runs", backend=RayBackend(), report=False)
    assert [e["status"] for e in gpu.runs] == ["failed", "failed"] and "no node of the cluster has any" in gpu.runs[0]["error"]
