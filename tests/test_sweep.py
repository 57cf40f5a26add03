"""Sweeps: expansion, the ledger (skip, re-run, resume, config changes), failure isolation,
parallel workers, and the live display. Runs train on tiny XOR problems (no files needed)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from actexp.cli import app
from actexp.errors import ConfigError

from actexp.runs import read_history, read_summary
from actexp.sweep import load_sweep, plan_sweep, read_ledger, run_sweep, worker_slots
from actexp.varying import sweep_name
from conftest import hear_signals

REPO = Path(__file__).resolve().parents[1]
XOR_BASE = {
    "data": {"dataset": {"name": "xor", "n_train": 400, "n_test": 200, "noise": 0.25}, "val_size": 100},
    "model": {"hidden": [8], "activation": "relu"},
    "optim": {"optimizer": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 50, "device": "cpu"},
}


# Tiny networks train fastest on one thread, and these machines' cores are shared: more threads
# only wait for each other. Subprocess sweeps get the same through OMP_NUM_THREADS.
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_sweep(folder: Path, grid: dict, seeds=None, base=None, name="xor_sweep", filename="sweep.yaml") -> Path:
    spec = {"name": name, "base": base if base is not None else XOR_BASE, "grid": grid}
    if seeds is not None:
        spec["seeds"] = seeds
    path = folder / filename
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_config(path: Path, **sections) -> Path:
    config = json.loads(json.dumps(XOR_BASE))
    for section, values in sections.items():
        config[section].update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snapshot(folder: Path) -> dict:
    """Every file in a run folder with its modification time and content: unchanged means not re-trained."""
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def statuses(sweep_dir: Path) -> dict:
    return {e["name"]: e["status"] for e in read_ledger(sweep_dir)["runs"]}


# ----------------------------------------------------------------------------- expansion


def test_grid_expansion_product_names_seeds_and_set(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(XOR_BASE))
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh", "sigmoid"], "model.init": ["xavier_normal", "he_normal"]},
                       seeds=[0, 1], base="base.yaml")
    sweep = load_sweep(path, ["train.epochs=7"])
    assert sweep.name == "xor_sweep"
    assert len(sweep.runs) == 3 * 2 * 2
    assert sweep.keys == ("model.activation", "model.init", "train.seed")
    assert sweep.runs[0].name == "activation=relu,init=xavier_normal,seed=0"
    assert sweep.runs[1].name == "activation=relu,init=xavier_normal,seed=1"
    assert sweep.runs[-1].name == "activation=sigmoid,init=he_normal,seed=1"
    assert [r.config.train.seed for r in sweep.runs[:4]] == [0, 1, 0, 1]
    assert {r.config.model.activation.name for r in sweep.runs} == {"relu", "tanh", "sigmoid"}
    assert all(r.config.train.epochs == 7 for r in sweep.runs)  # --set reaches every run
    assert all(r.config.name == r.name for r in sweep.runs)
    assert len({r.hash for r in sweep.runs}) == 12
    assert sweep.runs[0].labels == {"model.activation": "relu", "model.init": "xavier_normal", "train.seed": "0"}


def test_grid_of_component_parameters_and_bad_sweeps(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": [{"name": "leaky_relu", "negative_slope": 0.1}, {"name": "leaky_relu", "negative_slope": 0.3}], "optim.lr": [1e-3]})
    assert [r.name for r in load_sweep(path).runs] == ["activation=leaky_relu-negative_slope=0.1", "activation=leaky_relu-negative_slope=0.3"]
    assert load_sweep(path).runs[0].labels == {"model.activation": "leaky_relu(negative_slope=0.1)"}
    with pytest.raises(ConfigError, match="model.activation is swept"):
        load_sweep(path, ["model.activation=relu"])
    bad = write_sweep(tmp_path, {"model.activation": ["relu", "tahn"]}, filename="bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: run model.activation=\"tahn\": model.activation: unknown activation 'tahn' \(did you mean 'tanh'\?\)"):
        load_sweep(bad)
    (tmp_path / "typo.yaml").write_text("base: {}\ngird: {}\n")
    with pytest.raises(ConfigError, match="gird: unknown key .did you mean 'grid'"):
        load_sweep(tmp_path / "typo.yaml")
    same = write_sweep(tmp_path, {"model.activation": ["relu", "relu"]}, filename="same.yaml")
    with pytest.raises(ConfigError, match="same experiment"):
        load_sweep(same)
    numbered = write_sweep(tmp_path, {"model.activation": ["relu"]}, name=5, filename="numbered.yaml")
    with pytest.raises(ConfigError, match=r"numbered.yaml: name: expected a string .* got 5"):
        load_sweep(numbered)


def test_run_names_longer_than_200_characters_are_refused(tmp_path):
    path = write_sweep(tmp_path, {"model.hidden": [[8] * 100, [9] * 100]})  # hidden=8x8x...x8: 206 characters
    with pytest.raises(ConfigError, match=r"sweep.yaml: run model.hidden=.*: name: .*: 206 characters, at most 200"):
        load_sweep(path)
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "at most 200" in result.output


def test_folder_sweep_runs_are_named_after_their_files(tmp_path):
    folder = tmp_path / "family"
    folder.mkdir()
    write_config(folder / "small net.yaml", model={"hidden": [4], "activation": "tanh"}, optim={"lr": 0.05})
    with open(folder / "small net.yaml", "a") as f:
        f.write("name: small\n")  # the file's own name: is not the run's name in a sweep
    write_config(folder / "big_net.yaml", model={"hidden": [16, 16], "init": "he_normal"}, train={"epochs": 4})
    sweep = load_sweep(folder)
    assert [r.name for r in sweep.runs] == ["big_net", "small-net"]  # sorted by file; made safe for a folder name
    assert all(r.config.name == r.name for r in sweep.runs)
    assert sweep.keys == ("model.hidden", "model.activation", "model.init", "optim.lr", "train.epochs")  # still the columns
    assert sweep.runs[1].labels["model.activation"] == "tanh"


def test_the_classic_experiments_folder_is_a_sweep_with_short_names():
    seeds = load_sweep(REPO / "configs/seeds")
    files = sorted((REPO / "configs/seeds").glob("*.yaml"))
    assert [r.name for r in seeds.runs] == [f.stem for f in files]
    assert all(len(r.name) <= 60 for r in seeds.runs)


def test_directory_sweeps_and_shipped_sweeps():
    xor = load_sweep(REPO / "configs/xor")
    assert xor.name == "xor" and [r.name for r in xor.runs] == ["linear", "relu", "sigmoid"]
    assert xor.keys == ("model.activation",) and [r.labels["model.activation"] for r in xor.runs] == ["linear", "relu", "sigmoid"]
    activations = load_sweep(REPO / "configs/activations/")
    assert len(activations.runs) == len(list((REPO / "configs/activations").glob("*.yaml")))
    assert activations.keys == ("model.activation",)
    grid = load_sweep(REPO / "configs/sweeps/activation_x_init.yaml")
    assert grid.name == "activation_x_init" and len(grid.runs) == 6 * 3 * 5
    first = grid.runs[0].config
    assert (first.model.hidden, first.data.dataset.name, first.optim.optimizer.name, first.optim.lr) == ((256, 256), "mnist", "adam", 1e-3)
    assert first.model.init.name == "normal" and first.model.init.params["std"] == 1.0
    assert {r.labels["model.init"] for r in grid.runs} == {"normal", "xavier_normal", "he_normal"}


def test_dry_run_prints_runs_and_trains_nothing(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, seeds=[0, 1])
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    for name in ("activation=relu,seed=0", "activation=tanh,seed=1"):
        assert name in result.output
    assert "xor_sweep: 4 runs" in result.output and "new" in result.output
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- running


def test_failure_isolation_exit_code_and_ledger(tmp_path):
    folder = tmp_path / "family"
    folder.mkdir()
    write_config(folder / "a.yaml", model={"activation": "relu"})
    write_config(folder / "b.yaml", optim={"optimizer": "sgd", "lr": 1e12})  # diverges
    write_config(folder / "c.yaml", data={"val_size": 5000})  # fails when the data is split
    write_config(folder / "d.yaml", model={"activation": "tanh"})
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", str(folder), "--runs-dir", str(runs)])
    assert result.exit_code == 1
    assert "2 of 4 runs did not complete" in result.output
    assert "diverged" in result.output and "val_size" in result.output
    ledger = read_ledger(runs / "family")
    by_status = {e["status"]: e for e in ledger["runs"]}
    assert sorted(by_status) == ["completed", "diverged", "failed"] and len(ledger["runs"]) == 4
    assert sum(e["status"] == "completed" for e in ledger["runs"]) == 2
    assert "non-finite" in by_status["diverged"]["error"] and "val_size" in by_status["failed"]["error"]
    assert read_summary(runs / "family" / by_status["diverged"]["folder"])["status"] == "diverged"
    assert (runs / "family" / "summary.csv").exists()  # the finished sweep is still compared
    assert by_status["failed"]["name"] == "c" and by_status["failed"]["folder"] is None  # it failed before it had a folder
    with open(runs / "family" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and [r["statuses"] for r in rows if r["data.val_size"] == "5000"] == ["failed=1"]  # counted all the same

    # Again: diverged is a result (skipped); failed is re-run.
    steps, _ = plan_sweep(load_sweep(folder), runs / "family")
    assert sorted(s.action for s in steps) == ["rerun", "skip", "skip", "skip"]

    # --fail-fast stops at the first failure (the sorted order is a, b, c, d).
    result = run_sweep(folder, runs_dir=tmp_path / "fast", fail_fast=True, jobs=1, fused=False)  # (a fused group trains on together)
    assert [e["status"] for e in result.runs] == ["completed", "diverged", "pending", "pending"]


# Runs long enough (a few seconds each) to be caught part-way by a poller that may itself wait for a core.
LONG_BASE = {**XOR_BASE, "data": {**XOR_BASE["data"], "dataset": {"name": "xor", "n_train": 8000}},
             "train": {**XOR_BASE["train"], "epochs": 30}}


def signal_sweep_when(path: Path, runs: Path, ready, signum, *args: str, env: dict = ONE_THREAD_ENV, wait: float = 60) -> tuple[int, str]:
    """Start `actexp sweep PATH ... ARGS` in a subprocess; send it `signum` once `ready(sweep_dir,
    ledger entries)` (or after 120 s, or once it has ended); its exit code and output, within `wait` s."""
    sweep_dir = runs / "xor_sweep"
    process = subprocess.Popen([sys.executable, "-m", "actexp", "sweep", str(path), "--runs-dir", str(runs), "--quiet", *args],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=hear_signals)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if ready(sweep_dir, read_ledger(sweep_dir).get("runs", [])):
            break
        time.sleep(0.02)
    process.send_signal(signum)
    output = process.communicate(timeout=wait)[0].decode()
    return process.returncode, output


def training_mid_way(sweep_dir: Path, entry: dict) -> bool:
    """The run is training, has finished an epoch (its checkpoint may wait in memory: an interrupt
    writes it) and is well before its end."""
    folder = sweep_dir / (entry["folder"] or "-")
    return entry["status"] == "running" and 2 <= len(read_history(folder)) < 20


@pytest.mark.slow
def test_resume_after_ctrl_c(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh", "sigmoid"]}, base=LONG_BASE)
    runs = tmp_path / "runs"
    sweep_dir = runs / "xor_sweep"
    # Ctrl-C while the second run trains, the first being finished (runs one after the other).
    code, output = signal_sweep_when(path, runs, lambda d, e: len(e) > 1 and e[0]["status"] == "completed" and training_mid_way(d, e[1]), signal.SIGINT,
                                     "--no-fuse", "--jobs", "1")
    assert code == 130, output
    assert "run the same command again to resume" in output
    assert statuses(sweep_dir) == {"activation=relu": "completed", "activation=tanh": "interrupted", "activation=sigmoid": "pending"}

    entries = read_ledger(sweep_dir)["runs"]
    finished = snapshot(sweep_dir / entries[0]["folder"])
    interrupted = sweep_dir / entries[1]["folder"]
    assert 1 <= read_summary(interrupted)["epochs_completed"] < 30

    steps, _ = plan_sweep(load_sweep(path), sweep_dir)
    assert [s.action for s in steps] == ["skip", "resume", "new"]
    result = run_sweep(path, runs_dir=runs)
    assert [e["status"] for e in result.runs] == ["completed"] * 3
    assert snapshot(sweep_dir / entries[0]["folder"]) == finished  # not re-trained
    assert result.runs[1]["folder"] == entries[1]["folder"]  # resumed in place, not started over
    assert [r["epoch"] for r in read_history(interrupted)] == list(range(0, 31))  # the epoch-0 record, kept once


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    """SIGKILL gives no chance to save anything: the ledger says `running`; the runs' checkpoints resume
    them (a fused group's members, each from its own)."""
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, base=LONG_BASE)
    runs = tmp_path / "runs"
    sweep_dir = runs / "xor_sweep"
    # kill -9 loses what came after the last checkpoint written: here every epoch's.
    signal_sweep_when(path, runs, lambda d, e: len(e) > 1 and all(training_mid_way(d, x) and (d / x["folder"] / "checkpoints/last.pt").exists() for x in e),
                      signal.SIGKILL, "--jobs", "1", "--set", "train.checkpoint_every=0")
    assert set(statuses(sweep_dir).values()) == {"running"}
    steps, _ = plan_sweep(load_sweep(path, ["train.checkpoint_every=0"]), sweep_dir)
    assert [s.action for s in steps] == ["resume", "resume"]
    result = run_sweep(path, ["train.checkpoint_every=0"], runs_dir=runs, report=False)
    assert [e["status"] for e in result.runs] == ["completed", "completed"]
    for entry in result.runs:
        assert [r["epoch"] for r in read_history(sweep_dir / entry["folder"])] == list(range(0, 31))  # the epoch-0 record, kept once


def test_config_change_detection_and_force(tmp_path):
    runs = tmp_path / "runs"
    sweep_dir = runs / "xor_sweep"
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    first = run_sweep(path, runs_dir=runs, report=False)
    relu, tanh = (sweep_dir / e["folder"] for e in first.runs)
    relu_files, tanh_files = snapshot(relu), snapshot(tanh)

    # tanh leaves the sweep, sigmoid joins: relu is skipped, tanh left alone and reported.
    write_sweep(tmp_path, {"model.activation": ["relu", "sigmoid"]})
    events = []
    second = run_sweep(path, runs_dir=runs, report=False, progress=lambda event, info: events.append((event, info)))
    plan = events[0][1]
    assert [s.action for s in plan["steps"]] == ["skip", "new"]
    assert [e["name"] for e in plan["removed"]] == ["activation=tanh"]
    assert [e["name"] for e in second.removed] == ["activation=tanh"]
    assert snapshot(relu) == relu_files and snapshot(tanh) == tanh_files
    assert [e["name"] for e in read_ledger(sweep_dir)["removed"]] == ["activation=tanh"]

    # A changed base config changes every run's hash: nothing is reused.
    third = run_sweep(path, ["train.epochs=2"], runs_dir=runs, report=False)
    assert {e["folder"] for e in third.runs}.isdisjoint({e["folder"] for e in second.runs})
    assert len(third.removed) == 3
    assert snapshot(relu) == relu_files

    # Back to the first definition: tanh's earlier result is found again in `removed`.
    write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    steps, _ = plan_sweep(load_sweep(path), sweep_dir)
    assert [s.action for s in steps] == ["skip", "skip"]
    forced = run_sweep(path, runs_dir=runs, force=True, report=False)
    assert all(e["status"] == "completed" for e in forced.runs)
    assert {e["folder"] for e in forced.runs}.isdisjoint({e["folder"] for e in first.runs})
    assert snapshot(relu) == relu_files  # old folders are kept


@pytest.mark.slow
def test_parallel_jobs_give_the_same_metrics(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, seeds=[0, 1])
    serial = run_sweep(path, runs_dir=tmp_path / "serial", jobs=1, report=False)
    parallel = run_sweep(path, runs_dir=tmp_path / "parallel", jobs=2, report=False)

    def metrics(result):
        out = {}
        for e in result.runs:
            folder = result.dir / e["folder"]
            history = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(folder)]
            out[e["name"]] = (history, read_summary(folder)["test_acc"])
        return out

    assert [e["status"] for e in parallel.runs] == ["completed"] * 4
    assert metrics(parallel) == metrics(serial)


def test_worker_slots_divide_threads_and_gpus():
    assert worker_slots(2, cpus=2, gpus=0) == worker_slots(2, cpus=3, gpus=1)
    assert [(s.threads, s.gpu) for s in worker_slots(2, cpus=2, gpus=0)] == [(1, None), (1, None)]
    assert [(s.threads, s.gpu) for s in worker_slots(3, cpus=16, gpus=0)] == [(5, None)] * 3
    assert [(s.threads, s.gpu) for s in worker_slots(4, cpus=2, gpus=0)] == [(1, None)] * 4
    assert [s.gpu for s in worker_slots(4, cpus=16, gpus=2)] == [0, 1, 0, 1]


def test_live_table_shows_status_epoch_accuracy_and_eta(tmp_path):
    from actexp.display import SweepDisplay

    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    steps, _ = plan_sweep(load_sweep(path), tmp_path / "runs")
    console = Console(file=StringIO(), force_terminal=True, width=120, height=40)
    display = SweepDisplay(console)
    display("plan", {"sweep": load_sweep(path), "steps": steps, "dir": tmp_path, "removed": [], "jobs": 1})
    display("run_start", {"name": "activation=relu", "dir": "x", "first_epoch": 1, "epochs": 10})
    display("epoch", {"name": "activation=relu", "epoch": 4, "epochs": 10, "val_acc": 0.8125, "val_loss": 0.4})
    display.close()
    out = StringIO()
    Console(file=out, width=120).print(display.__rich__())
    text = out.getvalue()
    assert "activation=relu" in text and "running" in text and "4/10" in text and "0.8125" in text
    assert "activation=tanh" in text and "pending" in text


# ----------------------------------------------------------------------------- --seeds and --grid


def test_seeds_replicate_a_folder_sweep_and_adding_seeds_trains_only_new_runs(tmp_path):
    folder = tmp_path / "family"
    folder.mkdir()
    for activation in ("relu", "tanh"):
        write_config(folder / f"{activation}.yaml", model={"activation": activation})
    runs = tmp_path / "runs"
    first = run_sweep(folder, runs_dir=runs, report=False)
    assert [e["name"] for e in first.runs] == ["relu", "tanh"]
    swept = load_sweep(folder, seeds=[0, 1, 2])
    assert [r.name for r in swept.runs] == [f"{a},seed={s}" for a in ("relu", "tanh") for s in (0, 1, 2)]
    # Seed 0 is each file's own seed: those runs are the ones already trained.
    steps, _ = plan_sweep(swept, runs / "family")
    assert [s.action for s in steps] == ["skip", "new", "new"] * 2
    again = run_sweep(folder, runs_dir=runs, seeds=[0, 1, 2], report=False)
    assert [e["status"] for e in again.runs] == ["completed"] * 6
    assert len({e["folder"] for e in again.runs}) == 6 and again.runs[0]["folder"] == first.runs[0]["folder"]
    dry = CliRunner().invoke(app, ["sweep", str(folder), "--runs-dir", str(runs), "--seeds", "4", "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0 and dry.output.count("finished earlier") == 0 and dry.output.count(" new") == 2
    # Seed 0's runs keep the results trained as relu and tanh: the dry run says where they are.
    assert dry.output.count("skip") == 4 and dry.output.count("reused from") == 2 and f"reused from {first.runs[0]['folder']}" in dry.output


def test_grid_from_the_command_line_on_a_config_a_folder_and_a_sweep_file(tmp_path):
    config = write_config(tmp_path / "base.yaml")
    swept = load_sweep(config, grid={"model.activation": ["relu", "tanh"], "optim.lr": [0.01, 0.1]}, seeds=[0, 1])
    assert swept.name == "base_sweep-activation-lr" and len(swept.runs) == 8
    assert swept.runs[0].name == "activation=relu,lr=0.01,seed=0" and swept.runs[-1].name == "activation=tanh,lr=0.1,seed=1"
    folder = tmp_path / "family"
    folder.mkdir()
    for activation in ("relu", "tanh"):
        write_config(folder / f"{activation}.yaml", model={"activation": activation})
    names = [r.name for r in load_sweep(folder, grid={"optim.lr": [0.01, 0.1]}).runs]
    assert names == ["relu,lr=0.01", "relu,lr=0.1", "tanh,lr=0.01", "tanh,lr=0.1"]
    sweep_file = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, seeds=[0, 1])
    both = load_sweep(sweep_file, grid={"optim.lr": [0.01, 0.1]}, seeds=[5])
    assert [r.name for r in both.runs] == ["activation=relu,lr=0.01", "activation=relu,lr=0.1", "activation=tanh,lr=0.01", "activation=tanh,lr=0.1"]
    assert {r.config.train.seed for r in both.runs} == {5}
    with pytest.raises(ConfigError, match="sweeps model.activation already"):
        load_sweep(sweep_file, grid={"model.activation": ["gelu"]})
    with pytest.raises(ConfigError, match="only with --grid or --seeds"):
        load_sweep(config)
    with pytest.raises(ConfigError, match="train.seed is swept"):
        load_sweep(config, ["train.seed=3"], seeds=[0, 1])
    with pytest.raises(ConfigError, match=r"override 'model.activation=\"rleu\"' \(applied to .*base.yaml\): model.activation: unknown activation 'rleu'"):
        load_sweep(config, grid={"model.activation": ["relu", "rleu"]})


def test_grid_and_seeds_parsing_through_the_cli(tmp_path):
    from actexp.sweep import parse_grid, parse_seeds

    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,4, 7") == [0, 4, 7]
    assert parse_grid(["model.activation=relu,tanh", "optim.lr=1e-3,0.01"]) == {"model.activation": ["relu", "tanh"], "optim.lr": ["1e-3", 0.01]}
    assert parse_grid(["model.activation=[relu, {name: leaky_relu, negative_slope: 0.1}]"]) == {
        "model.activation": ["relu", {"name": "leaky_relu", "negative_slope": 0.1}]}
    config = write_config(tmp_path / "base.yaml")
    result = CliRunner().invoke(app, ["sweep", str(config), "--grid", "model.activation=relu,tanh", "--seeds", "2", "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in read_ledger(tmp_path / "runs" / "base_sweep-activation")["runs"]] == [
        "activation=relu,seed=0", "activation=relu,seed=1", "activation=tanh,seed=0", "activation=tanh,seed=1"]
    for bad, words in ((["--seeds", "0,x"], "--seeds 0,x"), (["--seeds", "0"], "1 to 10,000"), (["--seeds", "1,1"], "distinct"),
                       (["--grid", "model.activation"], "KEY=V1,V2"), (["--grid", "a=[1,"], "not a YAML list"),
                       (["--grid", "a=1", "--grid", "a=2"], "given twice")):
        result = CliRunner().invoke(app, ["sweep", str(config), *bad, "--dry-run"])
        assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1, (bad, result.output)


@pytest.mark.parametrize("name", ["..", ".", "evil\n", "a/b", "x" * 201])
def test_sweep_and_run_names_cannot_escape_the_runs_folder(tmp_path, name):
    spec = {"name": name, "base": XOR_BASE, "grid": {"model.activation": ["relu", "tanh"]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "s.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "name:" in result.output and len(result.output.strip().splitlines()) == 1
    folder = tmp_path / "folder"
    folder.mkdir()
    write_config(folder / "....yaml")  # a folder sweep names its run after the file: "..."
    result = CliRunner().invoke(app, ["sweep", str(folder), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "dots alone" in result.output
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["folder", "s.yaml"]


def test_live_table_at_80_columns_keeps_run_names_whole(tmp_path):
    """Long grid names wrap instead of being cut, so seed=1 and seed=2 can be told apart."""
    from actexp.display import SweepDisplay

    path = write_sweep(tmp_path, {"model.activation": ["leaky_relu", "gelu"], "model.init": ["xavier_normal", "he_normal"]}, seeds=[1, 2])
    sweep = load_sweep(path)
    steps, _ = plan_sweep(sweep, tmp_path / "runs")
    display = SweepDisplay(Console(file=StringIO(), force_terminal=True, width=80, height=60))
    display("plan", {"sweep": sweep, "steps": steps, "dir": tmp_path, "removed": [], "jobs": 1})
    display("run_start", {"name": steps[0].run.name, "dir": "x", "first_epoch": 1, "epochs": 10})
    display("epoch", {"name": steps[0].run.name, "epoch": 4, "epochs": 10, "val_acc": 0.8125, "val_loss": 0.4})
    display.close()
    out = StringIO()
    Console(file=out, width=80).print(display.__rich__())
    lines = out.getvalue().splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("run "))
    width = lines[header].index("status")
    run_column = "".join(line[:width].strip() for line in lines[header + 2 :] if "·" not in line)
    assert "…" not in out.getvalue()
    assert run_column == "".join(step.run.name for step in steps)  # every name whole, in order
    assert "0.8125" in out.getvalue() and "4/10" in out.getvalue()


# ----------------------------------------------------------------------------- fused groups (the default)


def test_fused_sweep_groups_runs_and_writes_ordinary_run_folders(tmp_path):
    grid = {"model.activation": ["relu", "tanh", "sigmoid"], "model.hidden": [[8], [16]]}
    path = write_sweep(tmp_path, grid, seeds=[0, 1])
    runs = tmp_path / "runs"
    dry = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0 and "fused: 2 tasks (group sizes 6, 6)" in dry.output  # one group per layer shape
    capped = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--max-group", "4", "--dry-run"], env={"COLUMNS": "200"})
    assert "fused: 4 tasks (group sizes 4, 4, 2, 2)" in capped.output
    shared = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--jobs", "4", "--dry-run"], env={"COLUMNS": "200"})
    assert "fused: 4 tasks (group sizes 3, 3, 3, 3)" in shared.output  # the runs shared evenly between the workers
    alone = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--no-fuse", "--dry-run"], env={"COLUMNS": "200"})
    assert alone.exit_code == 0 and "tasks (group sizes" not in alone.output and "┃ group" not in alone.output
    result = run_sweep(path, runs_dir=runs, report=False)
    assert [e["status"] for e in result.runs] == ["completed"] * 12
    for entry in result.runs:  # each member's folder is an ordinary run folder
        folder = result.dir / entry["folder"]
        assert {"config.yaml", "summary.json", "metrics.jsonl", "metrics.csv"} <= {p.name for p in folder.iterdir()}
        assert (folder / "checkpoints" / "last.pt").is_file() and read_summary(folder)["name"] == entry["name"]
    # A later solo run of the same sweep finds every run done.
    steps, _ = plan_sweep(load_sweep(path), result.dir)
    assert {s.action for s in steps} == {"skip"}


def test_an_interrupted_fused_group_resumes_from_its_members_checkpoints(tmp_path):
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh", "gelu"]}, base={**XOR_BASE, "train": {**XOR_BASE["train"], "epochs": 4}})
    runs = tmp_path / "runs"

    def stop(event, info):
        if event == "epoch" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, runs_dir=runs, progress=stop, report=False)
    sweep_dir = runs / "xor_sweep"
    assert set(statuses(sweep_dir).values()) == {"interrupted"}
    steps, _ = plan_sweep(load_sweep(path), sweep_dir)
    assert [s.action for s in steps] == ["resume"] * 3
    result = run_sweep(path, runs_dir=runs, report=False)
    assert [e["status"] for e in result.runs] == ["completed"] * 3
    for entry in result.runs:
        assert [r["epoch"] for r in read_history(sweep_dir / entry["folder"])] == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- a sweep's identity: its name, its folder


def test_a_sweep_is_named_after_its_source_and_what_the_command_line_varies(tmp_path):
    config = write_config(tmp_path / "relu_xavier.yaml")
    grid = {"model.activation": ["relu", "tanh"], "model.init": ["xavier_normal", "he_normal"]}
    assert load_sweep(config, grid=grid).name == "relu_xavier_sweep-activation-init"
    assert load_sweep(config, grid=dict(reversed(grid.items()))).name == "relu_xavier_sweep-activation-init"  # --grid in any order
    assert load_sweep(config, grid={"optim.lr": [0.01, 0.001, 0.1]}, seeds=[0, 1]).name == "relu_xavier_sweep-lr"  # more values, seeds: the same sweep
    assert load_sweep(config, seeds=[0, 1]).name == "relu_xavier_sweep-seed"  # seeds alone
    assert load_sweep(config, grid={"optim.lr": [0.01]}, name="lr_study").name == "lr_study"
    folder = tmp_path / "family"
    folder.mkdir()
    write_config(folder / "relu.yaml")
    assert load_sweep(folder, seeds=[0, 1]).name == "family"  # a folder keeps its name; seeds replicate it
    assert load_sweep(folder, grid={"optim.lr": [0.01, 0.1]}).name == "family-lr"
    sweep_file = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    assert load_sweep(sweep_file).name == "xor_sweep" and load_sweep(sweep_file, grid={"optim.lr": [0.01, 0.1]}).name == "xor_sweep-lr"
    assert load_sweep(sweep_file, name="mine").name == "mine"
    many = load_sweep(sweep_file, grid={"optim.lr": [0.01, 0.1], "optim.weight_decay": [0, 0.1], "train.batch_size": [10, 50]}).name
    assert many == "xor_sweep-batch_size-lr-weight_decay"
    for bad in ("a/b", "..", "x" * 201):
        with pytest.raises(ConfigError, match="--name: "):
            load_sweep(config, grid={"optim.lr": [0.01]}, name=bad)
    # A name too long for a folder is cut, and ends in a hash of the whole, so that two stay apart.
    long = [sweep_name("x" * 195, ["optim.lr", key]) for key in ("model.activation", "model.init")]
    assert [len(n) for n in long] == [200, 200] and long[0] != long[1] and long[0].startswith("x" * 180)


def sweep_outputs(sweep_dir: Path) -> dict:
    """The files a sweep writes next to its ledger: unchanged means no other sweep wrote there."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(sweep_dir.iterdir()) if p.is_file() and p.name != ".lock"}


def test_a_second_sweep_of_the_same_config_gets_its_own_folder(tmp_path):
    """Issue 21: an lr grid after an activation × init grid of the same config landed in the first
    sweep's folder, called its runs removed, overwrote its summary.md and curves.png, and skipped the
    run the two share as if this sweep had trained it."""
    config = write_config(tmp_path / "relu_xavier.yaml")
    runs = tmp_path / "runs"
    first_command = ["sweep", str(config), "--grid", "model.activation=relu,tanh", "--grid", "model.init=xavier_normal,he_normal",
                     "--runs-dir", str(runs), "--quiet", "--jobs", "1"]
    first = CliRunner().invoke(app, first_command)
    assert first.exit_code == 0, first.output
    first_dir = runs / "relu_xavier_sweep-activation-init"
    assert set(statuses(first_dir).values()) == {"completed"} and len(statuses(first_dir)) == 4
    before = sweep_outputs(first_dir)
    assert {"summary.md", "summary.csv", "sweep.json"} <= set(before)

    # lr=0.01 is the config's own: the same experiment as activation=relu,init=xavier_normal.
    second = CliRunner().invoke(app, ["sweep", str(config), "--grid", "optim.lr=0.01,0.001", "--runs-dir", str(runs), "--quiet", "--jobs", "1"])
    assert second.exit_code == 0, second.output
    assert "no longer in this sweep" not in second.output and "reused" not in second.output
    second_dir = runs / "relu_xavier_sweep-lr"
    assert str(second_dir / "summary.md") in second.output
    ledger = read_ledger(second_dir)
    assert [(e["name"], e["status"]) for e in ledger["runs"]] == [("lr=0.01", "completed"), ("lr=0.001", "completed")]
    assert all(e["folder"].startswith(e["name"] + "/") for e in ledger["runs"]) and ledger["removed"] == []  # trained here, by this sweep
    assert sweep_outputs(first_dir) == before  # the first sweep's ledger, summary and curves untouched
    assert sorted(p.name for p in runs.iterdir()) == ["relu_xavier_sweep-activation-init", "relu_xavier_sweep-lr"]

    # The first command again is the first sweep again: it resumes there, every run finished.
    again = CliRunner().invoke(app, [*first_command, "--dry-run"], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "relu_xavier_sweep-activation-init: 4 runs" in again.output and again.output.count(" skip ") == 4
    steps, _ = plan_sweep(load_sweep(config, grid={"model.init": ["xavier_normal", "he_normal"], "model.activation": ["relu", "tanh"]}), first_dir)
    assert [s.action for s in steps] == ["skip"] * 4 and not any(s.reused_from for s in steps)


def test_a_folder_holding_another_sweeps_ledger_is_refused_and_name_gives_a_sweep_its_own(tmp_path):
    config = write_config(tmp_path / "relu_xavier.yaml")
    runs = tmp_path / "runs"
    named = run_sweep(config, grid={"optim.lr": [0.01, 0.1]}, name="study", runs_dir=runs, jobs=1)
    assert named.dir == runs / "study" and named.name == "study" and [e["status"] for e in named.runs] == ["completed"] * 2
    before = sweep_outputs(runs / "study")
    assert "summary.md" in before

    # Another sweep given the same name: one line, exit 2, nothing written there.
    other = ["sweep", str(config), "--grid", "model.activation=relu,tanh", "--name", "study", "--runs-dir", str(runs)]
    for extra in (["--dry-run"], ["--quiet", "--jobs", "1"]):
        result = CliRunner().invoke(app, [*other, *extra])
        line = result.output.strip()
        assert result.exit_code == 2 and len(line.splitlines()) == 1, result.output
        assert f"{runs / 'study'} holds another sweep ({config.resolve()} --grid optim.lr), not this one ({config.resolve()} --grid model.activation)" in line
        assert line.endswith("give this one its own folder: --name NAME")
    sweep_file = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]}, name="study")  # a sweep file's name: the same
    with pytest.raises(ConfigError, match="holds another sweep"):
        run_sweep(sweep_file, runs_dir=runs, jobs=1)
    assert sweep_outputs(runs / "study") == before and sorted(p.name for p in (runs / "study").iterdir() if p.is_dir()) == ["lr=0.01", "lr=0.1"]

    # Its own name; and the named sweep again, with one more value: it resumes.
    own = CliRunner().invoke(app, [*other[:4], "--name", "activations", "--runs-dir", str(runs), "--dry-run"])
    assert own.exit_code == 0 and "activations: 2 runs" in own.output
    more = load_sweep(config, grid={"optim.lr": [0.01, 0.1, 0.2]}, name="study")
    assert [s.action for s in plan_sweep(more, runs / "study")[0]] == ["skip", "skip", "new"]


def test_a_run_trained_under_another_name_is_reused_in_words(tmp_path):
    """A grid that gains a key renames its runs; a run whose config was trained under its old name
    keeps that result, and the dry run, the plan and the live table say where it comes from."""
    from actexp.display import SweepDisplay

    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"model.activation": ["relu", "tanh"]})
    first = run_sweep(path, runs_dir=runs, report=False, jobs=1)
    relu_folder = first.runs[0]["folder"]
    assert relu_folder.startswith("activation=relu/")
    write_sweep(tmp_path, {"model.activation": ["relu", "tanh"], "optim.lr": [0.01, 0.1]})  # 0.01: the base's
    steps, _ = plan_sweep(load_sweep(path), runs / "xor_sweep")
    assert [(s.run.name, s.action, s.reused_from) for s in steps] == [
        ("activation=relu,lr=0.01", "skip", relu_folder), ("activation=relu,lr=0.1", "new", None),
        ("activation=tanh,lr=0.01", "skip", first.runs[1]["folder"]), ("activation=tanh,lr=0.1", "new", None)]

    dry = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0 and f"reused from {relu_folder}" in dry.output and dry.output.count("reused from") == 2 and "skip" not in dry.output

    display = SweepDisplay(Console(file=StringIO(), force_terminal=True, width=120, height=40))
    display("plan", {"sweep": load_sweep(path), "steps": steps, "dir": runs / "xor_sweep", "removed": [], "jobs": 1})
    display.close()
    table = StringIO()
    Console(file=table, width=120).print(display.__rich__())
    assert "completed (reused)" in table.getvalue()

    result = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--quiet", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "4 runs (2 reused, 2 to train)" in result.output
    assert f"note: 2 run(s) reuse the result of a finished run of the same config: activation=relu,lr=0.01 reused from {relu_folder}" in result.output
    assert "no longer in this sweep" not in result.output
    ledger = read_ledger(runs / "xor_sweep")
    assert ledger["runs"][0]["folder"] == relu_folder and [e["status"] for e in ledger["runs"]] == ["completed"] * 4
