"""Tuned sweeps: the tune's grammar, trials as fused groups with pruning, the honest protocol
(validation only, fresh seeds for the confirmation runs), the edge flag, and resuming a tune after
Ctrl-C, SIGTERM, kill -9 of the sweep and kill -9 of a worker with no trial lost or run twice."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

import actexp.training
from actexp.config import config_to_dict
from actexp.errors import ConfigError
from actexp.runs import read_history, read_ledger, read_summary
from actexp.sweep import load_sweep, run_sweep, with_values
from actexp.trials import TRIALS_DIR
from actexp.tuning import TRIAL_SEED_BASE, Param, chosen_lines, merge, parse_options, parse_section, storage_url, study_name

from conftest import cli, hear_signals

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
XOR_BASE = {
    "data": {"dataset": {"name": "xor", "n_train": 400, "n_test": 200, "noise": 0.25}, "val_size": 100},
    "model": {"hidden": [8], "activation": "relu"},
    "optim": {"optimizer": "sgd", "lr": 0.01},
    "train": {"epochs": 4, "batch_size": 50, "device": "cpu"},
}


def write_tuned(folder: Path, tune: dict, grid=None, seeds=(0, 1), base=None, name="xor_tuned") -> Path:
    spec = {"name": name, "base": base or XOR_BASE, "grid": grid or {"model.activation": ["relu", "tanh"]}, "seeds": list(seeds), "tune": tune}
    path = folder / "tuned.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trial_entries(sweep_dir: Path) -> list[dict]:
    return read_ledger(sweep_dir)["trials"]


def study_trials(sweep_dir: Path, row: str, sweep="xor_tuned"):
    storage = storage_url(parse_section({"optim.lr": [1e-3, 1.0, "log"]}, "t"), sweep_dir)
    return optuna.load_study(study_name=study_name(sweep, row), storage=storage).get_trials(deepcopy=False)


def assert_each_trial_once(sweep_dir: Path, rows: list[str], trials: int) -> None:
    """Every row's study holds `trials` finished trials, each trained in one folder of its own whose
    epochs were each trained once (a resumed trial went on from its checkpoint)."""
    entries = trial_entries(sweep_dir)
    for row in rows:
        mine = [e for e in entries if e["row"] == row]
        assert sorted(e["number"] for e in mine) == list(range(trials))
        finished = [t for t in study_trials(sweep_dir, row) if t.state.is_finished()]
        assert sorted(t.number for t in finished) == list(range(trials))
        assert all(t.state != optuna.trial.TrialState.FAIL for t in finished)
    folders = [e["folder"] for e in entries]
    assert len(set(folders)) == len(folders)
    on_disk = sorted(p.parent.relative_to(sweep_dir).as_posix() for p in (sweep_dir / TRIALS_DIR).rglob("summary.json"))
    assert on_disk == sorted(folders)  # no trial started over in a second folder
    for entry in entries:
        epochs = [r["epoch"] for r in read_history(sweep_dir / entry["folder"]) if r["epoch"] >= 1]
        assert epochs == list(range(1, len(epochs) + 1)), entry["name"]
        assert read_summary(sweep_dir / entry["folder"])["status"] in ("completed", "pruned")


# ----------------------------------------------------------------------------- the tune's grammar


def test_tune_section_and_options_parse_and_merge():
    tune = parse_section({"optim.lr": [1e-4, 1.0, "log"], "model.width": [8, 64], "optim.optimizer": {"choices": ["sgd", "adam"]}, "trials": 12}, "f")
    assert [p.key for p in tune.params] == ["optim.lr", "model.width", "optim.optimizer"]
    assert tune.params[0] == Param("optim.lr", 1e-4, 1.0, log=True)
    assert tune.params[1].integer and tune.params[2].choices == ("sgd", "adam")
    assert (tune.trials, tune.per_batch, tune.sampler, tune.pruner, tune.metric) == (12, 3, "qmc", "hyperband", "val_acc")

    assert parse_options(["optim.lr=1e-4:1:log"]) == [Param("optim.lr", 1e-4, 1.0, log=True)]
    merged = merge(parse_section({"optim.lr": [1e-4, 1.0, "log"]}, "f"), parse_options(["optim.momentum=0:0.99"]), trials=5)
    assert merged.keys == ("optim.lr", "optim.momentum") and merged.trials == 5
    assert merge(None, []) is None


@pytest.mark.parametrize("section, words", [
    ({"optim.lr": [1.0, 0.1]}, "must be below"),
    ({"optim.lr": [0, 1, "log"]}, "log range needs a low end above 0"),
    ({"optim.lr": [1e-4]}, "expected [LOW, HIGH]"),
    ({"optim.lr": ["a", "b"]}, "expected [LOW, HIGH]"),
    ({"optim.lr": [1e-4, 1.0], "trails": 3}, "did you mean 'trials'"),
    ({"optim.lr": [1e-4, 1.0], "trials": 0}, "trials: expected a whole number"),
    ({"optim.lr": [1e-4, 1.0], "sampler": "bayes"}, "choose from qmc, tpe, random, grid"),
    ({"optim.lr": [1e-4, 1.0], "pruner": "median!"}, "choose from hyperband"),
    ({"optim.lr": [1e-4, 1.0], "sampler": "grid"}, "grid needs"),
    ({"optim.lr": [1e-4, 1.0], "storage": "tune.db"}, "database URL"),
    ({"trials": 4}, "no key to tune"),
    ({"optim.lr": {"choices": ["x"]}}, "choices"),
])
def test_a_bad_tune_is_one_line_naming_the_problem(section, words):
    with pytest.raises(ConfigError, match=None) as caught:
        parse_section(section, "sweep.yaml: tune")
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("item", ["optim.lr", "optim.lr=1", "optim.lr=a:b", "lr=1e-4:1", "optim.lr=1e-4:1:ln", "optim.lr=1:1e-4"])
def test_a_bad_tune_option_says_the_form(item):
    with pytest.raises(ConfigError, match="--tune"):
        parse_options([item])


def test_the_sweep_refuses_what_makes_an_unfair_protocol(tmp_path):
    # A key both tuned and swept, a tuned key --set, too few seeds, seeds where the trials' are.
    with pytest.raises(ConfigError, match="tune it or sweep it, not both"):
        load_sweep(write_tuned(tmp_path, {"model.activation": [1, 2]}))
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"]})
    with pytest.raises(ConfigError, match="set its range in the tune instead"):
        load_sweep(path, ["optim.lr=0.1"])
    with pytest.raises(ConfigError, match="two seeds or more"):
        load_sweep(write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"]}, seeds=[0]))
    with pytest.raises(ConfigError, match="stay below 1,000,000"):
        load_sweep(write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"]}, seeds=[0, TRIAL_SEED_BASE]))
    # The range's ends must make valid configs (lr > 0).
    with pytest.raises(ConfigError, match="does not make a valid config"):
        load_sweep(write_tuned(tmp_path, {"optim.lr": [-1.0, 1.0]}))


def test_rows_and_confirmation_runs(tmp_path):
    sweep = load_sweep(write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"]}, seeds=[0, 1, 2]))
    assert [r.name for r in sweep.rows] == ["activation=relu", "activation=tanh"]
    assert [r.name for r in sweep.runs][:3] == ["activation=relu,seed=0", "activation=relu,seed=1", "activation=relu,seed=2"]
    assert sweep.row_of == (0, 0, 0, 1, 1, 1)
    # A tune the command line adds names another sweep than the untuned one.
    config = tmp_path / "xor.yaml"
    config.write_text(yaml.safe_dump({**XOR_BASE, "name": "xor"}))
    assert load_sweep(config, seeds=[0, 1], tune=["optim.lr=1e-3:1:log"]).name == "xor_sweep-seed-tuned"
    assert load_sweep(config, seeds=[0, 1]).name == "xor_sweep-seed"


def test_edge_flag_in_the_ledger_and_its_words(tmp_path):
    # XOR is learned at almost any lr: with the range's top 5% (log) above 0.3, a range ending at 0.3 ...
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 0.3, "log"], "trials": 4, "batch": 4, "pruner": "none", "sampler": "random"})
    result = run_sweep(path, runs_dir=tmp_path / "runs", jobs=1)
    for row, info in result.tuned.items():
        value = info["chosen"]["optim.lr"]
        expected = {"optim.lr": "high"} if value >= 10 ** (math.log10(0.3) - 0.05 * math.log10(300)) else {}
        assert info["edge"] == expected
    [line] = chosen_lines({"activation=relu": {"chosen": {"optim.lr": 0.29}, "edge": {"optim.lr": "high"}, "trials": 8}})
    assert "optim.lr=0.29" in line and "high edge" in line and "widen the range" in line
    [line] = chosen_lines({"activation=relu": {"chosen": {"optim.lr": 0.01}, "edge": {}, "trials": 8}})
    assert "edge" not in line


def test_optuna_missing_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"]})
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "pip install 'actexp[tune]'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written


# ----------------------------------------------------------------------------- a tune, end to end


def test_a_tuned_sweep_tunes_each_row_then_confirms_on_fresh_seeds(tmp_path, monkeypatch):
    calls = []
    real_load = actexp.training.load_data

    def watched_load(data_config, device, download=True, test=True):
        data = real_load(data_config, device, download, test)
        calls.append(test)
        return data

    monkeypatch.setattr(actexp.training, "load_data", watched_load)
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 6, "batch": 3, "pruner": "successive_halving"}, seeds=[0, 1, 2])
    runs = tmp_path / "runs"
    result = run_sweep(path, runs_dir=runs, jobs=1)
    sweep_dir = runs / "xor_tuned"
    assert_each_trial_once(sweep_dir, ["activation=relu", "activation=tanh"], 6)

    entries = trial_entries(sweep_dir)
    trial_seeds = set()
    for entry in entries:
        summary = read_summary(sweep_dir / entry["folder"])
        assert summary["trial"]["number"] == entry["number"] and summary["trial"]["row"] == entry["row"]
        assert summary.get("test_acc") is None and summary["data"]["n_test"] == 0  # trials never saw the test split
        config = yaml.safe_load((sweep_dir / entry["folder"] / "config.yaml").read_text())
        trial_seeds.add(config["train"]["seed"])
        assert config["optim"]["lr"] == pytest.approx(entry["params"]["optim.lr"])
    # Two batches per row: 2 groups of trials (one per batch, rows fused together), then the confirmation group.
    assert calls == [False, False, True]

    # The confirmation runs: each row's chosen lr on the sweep's seeds, disjoint from the trials'.
    assert [e["status"] for e in result.runs] == ["completed"] * 6
    confirm_seeds = {e["config"]["train"]["seed"] for e in result.runs}
    assert confirm_seeds == {0, 1, 2} and not confirm_seeds & trial_seeds
    rows = read_ledger(sweep_dir)["tune"]["rows"]
    for entry in result.runs:
        row = entry["name"].rsplit(",", 1)[0]
        assert entry["config"]["optim"]["lr"] == pytest.approx(rows[row]["chosen"]["optim.lr"])
        best = max((e for e in entries if e["row"] == row and read_summary(sweep_dir / e["folder"])["status"] == "completed"),
                   key=lambda e: read_summary(sweep_dir / e["folder"])["val_acc"])
        assert rows[row]["chosen"]["optim.lr"] == pytest.approx(best["params"]["optim.lr"])  # the best completed trial by val_acc
    # compare reads the confirmation runs only.
    assert result.comparison is not None and sum(len(row.runs) for row in result.comparison.rows) == 6
    assert result.tuned == rows

    # The tune's figures: written by the sweep's report, by compare and by plot.
    assert (sweep_dir / "sensitivity.png").stat().st_size > 0 and (sweep_dir / "budget.png").stat().st_size > 0
    (sweep_dir / "sensitivity.png").unlink()
    compared = cli("compare", sweep_dir)
    assert compared.exit_code == 0 and (sweep_dir / "sensitivity.png").exists(), compared.output
    plotted = cli("plot", sweep_dir, "-o", tmp_path / "figures" / "curves.svg")
    assert plotted.exit_code == 0, plotted.output
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["budget.svg", "curves.svg", "sensitivity.svg"]

    # The protocol says how the rows were chosen; a value chosen on its range's edge is flagged in
    # the table and under it (here the ledger's range is cut to end at relu's chosen lr).
    assert "each row at its tuned optim.lr (6 trials per row, optim.lr in [0.001, 1] log" in " ".join(compared.output.split())
    as_written = (sweep_dir / "sweep.json").read_text()
    ledger = json.loads(as_written)
    relu_lr = ledger["tune"]["rows"]["activation=relu"]["chosen"]["optim.lr"]
    ledger["tune"]["spec"]["params"][0]["high"] = relu_lr
    (sweep_dir / "sweep.json").write_text(json.dumps(ledger))
    flagged = " ".join(cli("compare", sweep_dir).output.split())
    assert "(high edge)" in flagged and "activation=relu: optim.lr was chosen on the high edge of its range" in flagged
    assert "widen the range" in flagged
    import csv

    table = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert all(float(row["optim.lr"]) > 0 for row in table)  # the flag is the table's, the CSV keeps the value a number
    (sweep_dir / "sweep.json").write_text(as_written)

    # Running the same command again trains nothing.
    again = run_sweep(path, runs_dir=runs, jobs=1)
    assert len(trial_entries(sweep_dir)) == 12 and [e["folder"] for e in again.runs] == [e["folder"] for e in result.runs]


def test_pruning_happens_inside_one_fused_group(tmp_path):
    """Eight trials of one row asked at once train as one stacked model; the pruner ranks each
    epoch's figures of the whole group (every member reports before any asks), so members leave
    the group part-way, recorded as pruned."""
    path = write_tuned(tmp_path, {"optim.lr": [1e-4, 3.0, "log"], "trials": 8, "batch": 8, "pruner": "successive_halving", "sampler": "random"},
                       grid={"model.init": ["xavier_normal"]}, base={**XOR_BASE, "train": {**XOR_BASE["train"], "epochs": 6}})
    runs = tmp_path / "runs"
    run_sweep(path, runs_dir=runs, jobs=1)
    sweep_dir = runs / "xor_tuned"
    summaries = [read_summary(sweep_dir / e["folder"]) for e in trial_entries(sweep_dir)]
    assert all(s["fused"]["members"] == 8 for s in summaries)  # one group
    pruned = [s for s in summaries if s["status"] == "pruned"]
    assert 2 <= len(pruned) < 8
    assert all(s["epochs_completed"] < 6 for s in pruned)
    [row] = {e["row"] for e in trial_entries(sweep_dir)}
    assert [t.state.name for t in study_trials(sweep_dir, row)].count("PRUNED") == len(pruned)
    # `actexp runs` lists them with a status of their own.
    listed = cli("runs", runs, "--status", "pruned", "--wide")
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("pruned") >= len(pruned)


# ----------------------------------------------------------------------------- stopping and resuming


def test_a_tune_resumes_after_ctrl_c_with_no_trial_lost_or_run_twice(tmp_path):
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 4, "batch": 2, "pruner": "none"})
    runs = tmp_path / "runs"
    epochs_seen = []

    def interrupt(event, info):
        if event == "epoch":
            epochs_seen.append(info["name"])
            if len(epochs_seen) == 22:  # in the second batch (4 trials of 4 epochs each), part-way
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, ["train.checkpoint_every=0"], runs_dir=runs, jobs=1, progress=interrupt)
    sweep_dir = runs / "xor_tuned"
    statuses = [e["status"] for e in trial_entries(sweep_dir)]
    assert statuses.count("completed") == 4 and statuses.count("interrupted") == 4
    result = run_sweep(path, ["train.checkpoint_every=0"], runs_dir=runs, jobs=1)
    assert_each_trial_once(sweep_dir, ["activation=relu", "activation=tanh"], 4)
    assert [e["status"] for e in result.runs] == ["completed"] * 4


def long_tune(tmp_path: Path, trials: int = 4, batch: int = 2) -> Path:
    base = {**XOR_BASE, "data": {**XOR_BASE["data"], "dataset": {"name": "xor", "n_train": 6000}}, "train": {**XOR_BASE["train"], "epochs": 12}}
    return write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": trials, "batch": batch, "pruner": "none"}, base=base)


def signal_tune_when(path: Path, runs: Path, ready, signum, *args: str) -> tuple[int, str]:
    process = subprocess.Popen([sys.executable, "-m", "actexp", "sweep", str(path), "--runs-dir", str(runs), "--quiet", *args],
                               cwd=REPO, env=ONE_THREAD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=hear_signals)
    sweep_dir = runs / "xor_tuned"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            if ready(sweep_dir, read_ledger(sweep_dir).get("trials", [])):
                break
        except Exception:  # a ledger being replaced
            pass
        time.sleep(0.02)
    process.send_signal(signum)
    return process.returncode if process.wait(60) is not None else None, process.communicate()[0].decode()


def mid_way(sweep_dir: Path, entries: list[dict]) -> bool:
    """A batch of trials is training, each with a checkpoint of an epoch or more, well before its end."""
    running = [e for e in entries if e["status"] == "running"]
    return len(running) >= 2 and all(2 <= len(read_history(sweep_dir / e["folder"])) < 10
                                     and (sweep_dir / e["folder"] / "checkpoints" / "last.pt").exists() for e in running)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_tune_resumes_after_sigterm_and_kill_9_of_the_sweep(tmp_path, signum):
    path = long_tune(tmp_path)
    runs = tmp_path / "runs"
    code, output = signal_tune_when(path, runs, mid_way, signum, "--jobs", "1", "--set", "train.checkpoint_every=0")
    sweep_dir = runs / "xor_tuned"
    if signum == signal.SIGTERM:
        assert code != 0 and "run the same command again" in output, output
    interrupted = [e for e in trial_entries(sweep_dir) if e["status"] in ("running", "interrupted")]
    assert interrupted
    result = run_sweep(path, ["train.checkpoint_every=0"], runs_dir=runs, jobs=1)
    assert_each_trial_once(sweep_dir, ["activation=relu", "activation=tanh"], 4)
    for entry in interrupted:  # resumed from its checkpoint in its own folder
        assert read_summary(sweep_dir / entry["folder"])["epochs_completed"] == 12
    assert [e["status"] for e in result.runs] == ["completed"] * 4


@pytest.mark.slow
def test_a_tune_goes_on_after_kill_9_of_a_worker(tmp_path, monkeypatch):
    """A worker process killed from outside fails its trials' runs; the sweep resumes each from its
    folder in the same command (it is not a new trial, and no trial is lost)."""
    import actexp.sweep

    monkeypatch.setattr(actexp.sweep, "cpu_count", lambda: 2)
    path = long_tune(tmp_path, trials=4, batch=4)
    runs = tmp_path / "runs"
    killed = {}

    def kill_a_worker(event, info):
        if event == "run_start" and not killed:
            killed["pid"] = info["pid"]
        if event == "epoch" and info["epoch"] == 3 and killed.get("pid") and "done" not in killed:
            killed["done"] = True
            os.kill(killed["pid"], signal.SIGKILL)

    result = run_sweep(path, ["train.checkpoint_every=0"], runs_dir=runs, jobs=2, progress=kill_a_worker)
    assert killed.get("done")
    sweep_dir = runs / "xor_tuned"
    assert_each_trial_once(sweep_dir, ["activation=relu", "activation=tanh"], 4)
    assert [e["status"] for e in result.runs] == ["completed"] * 4


def test_dry_run_says_what_a_tune_will_do(tmp_path):
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 6}, seeds=[0, 1, 2])
    result = cli("sweep", path, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "2 rows x 6 trials" in words and "6 confirmation runs" in words
    assert not (tmp_path / "runs").exists()


def test_the_ledger_of_a_tune_keeps_no_database_password(tmp_path):
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 2, "storage": "sqlite:///" + str(tmp_path / "elsewhere.db")})
    run_sweep(path, runs_dir=tmp_path / "runs", jobs=1)
    text = (tmp_path / "runs" / "xor_tuned" / "sweep.json").read_text()
    assert "elsewhere.db" not in text and json.loads(text)["tune"]["storage"] == "database"
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "runs" / "xor_tuned" / "tune.db").exists()


def test_another_tune_in_the_same_folder_is_refused_more_trials_extend_it(tmp_path):
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 2, "batch": 2, "pruner": "none"})
    runs = tmp_path / "runs"
    run_sweep(path, runs_dir=runs, jobs=1)
    sweep_dir = runs / "xor_tuned"
    before = len(trial_entries(sweep_dir))
    # Another range: the earlier trials would count toward it, and could be chosen.
    write_tuned(tmp_path, {"optim.lr": [1e-2, 1.0, "log"], "trials": 2, "batch": 2, "pruner": "none"})
    with pytest.raises(ConfigError, match="holds the trials of another tune \\(its params differ\\)"):
        run_sweep(path, runs_dir=runs, jobs=1)
    assert len(trial_entries(sweep_dir)) == before
    # More trials of the same tune: the studies go on, none of the first trials runs again.
    write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 3, "batch": 2, "pruner": "none"})
    run_sweep(path, runs_dir=runs, jobs=1)
    assert_each_trial_once(sweep_dir, ["activation=relu", "activation=tanh"], 3)


def test_fail_fast_does_not_stop_a_tune_for_a_diverged_trial(tmp_path):
    # lr up to 1e4 with SGD: the top of the range diverges.
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1e4, "log"], "trials": 4, "batch": 2, "pruner": "none"}, grid={"model.init": ["xavier_normal"]})
    runs = tmp_path / "runs"
    run_sweep(path, runs_dir=runs, jobs=1, fail_fast=True)
    statuses = {e["number"]: read_summary(runs / "xor_tuned" / e["folder"])["status"] for e in trial_entries(runs / "xor_tuned")}
    assert "diverged" in (statuses[0], statuses[1]) and len(statuses) == 4  # a diverged trial in the first batch, and the second batch ran


@pytest.mark.parametrize("damage", [{"params": ["optim.lr", 0.1]}, {"params": {"optim.momentum": 0.9}}, {"number": "0"}, {"trial_id": None},
                                    {"params": {"optim.lr": {"__class__": 1}}}], ids=["params-list", "other-key", "number-text", "no-id", "nested"])
def test_a_damaged_trial_entry_is_one_line_and_nothing_trains(tmp_path, damage):
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 2, "batch": 2, "pruner": "none"})
    runs = tmp_path / "runs"
    run_sweep(path, runs_dir=runs, jobs=1)
    sweep_dir = runs / "xor_tuned"
    ledger = json.loads((sweep_dir / "sweep.json").read_text())
    ledger["trials"][0].update(damage)
    (sweep_dir / "sweep.json").write_text(json.dumps(ledger))
    folders = sorted(p for p in sweep_dir.rglob("*") if p.is_dir())
    write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 3, "batch": 2, "pruner": "none"})  # more trials: it would train
    result = cli("sweep", path, "--runs-dir", runs)
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "trials entry 1" in result.output and "Traceback" not in result.output
    assert sorted(p for p in sweep_dir.rglob("*") if p.is_dir()) == folders


@pytest.mark.parametrize("name", ["tune.db", "tune.db-journal"])
def test_a_link_in_place_of_the_studies_file_is_refused(tmp_path, name):
    """SQLite would write through a link planted as the studies' file (or its journal), out of the
    sweep folder: refused with one line, the target untouched."""
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 2})
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    sweep_dir = tmp_path / "runs" / "xor_tuned"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / name).symlink_to(target)
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "is a link" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert target.read_bytes() == b"precious" and not (sweep_dir / "trials").exists()


def test_validate_says_a_sweep_is_tuned_and_refuses_a_bad_tune(tmp_path):
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 6}, seeds=[0, 1, 2])
    result = cli("validate", path)
    assert result.exit_code == 0 and "tuned: 2 rows x 6 trials of optim.lr, then 6 confirmation runs" in " ".join(result.output.split())
    bad = write_tuned(tmp_path, {"optim.lr": [1.0, 1e-3]})
    refused = cli("validate", bad)
    assert refused.exit_code == 2 and "tune.optim.lr: the low end (1.0) must be below the high end (0.001)" in refused.output


def test_many_rows_of_two_keys_draw_a_panel_per_value_and_a_line_per_row():
    """The classic activation x learning rate figure: 8 activations x 2 optimizers are 2 panels
    (a panel per optimizer, the key with fewer values) of 8 lines, an activation one colour in both."""
    from actexp.budget import Trial, TunedRow
    from actexp.plots import sensitivity_groups
    from actexp.tuneplots import layout_sensitivity

    activations = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu"]
    labels = [f"activation={a},optimizer={o}" for a in activations for o in ("sgd", "adam")]
    groups = sensitivity_groups(labels)
    assert groups["activation=relu,optimizer=adam"] == ("optimizer=adam", "relu")
    assert sensitivity_groups(labels[:8]) is None  # one panel holds them
    assert sensitivity_groups([f"activation={a}" for a in activations * 2][:9]) is None  # one key: nothing to panel by
    assert sensitivity_groups([f"a={i},b={i}" for i in range(20)]) is None  # a panel per value would hold 1 line each, or 20

    rows = [TunedRow(label, tuple(Trial(i, {"optim.lr": 10 ** (-3 + i)}, 0.5 + 0.1 * i, "completed", 3) for i in range(3)),
                     {"optim.lr": 0.1}, {"optim.lr": (1e-3, 1.0, True)}, True) for label in labels]
    layout = layout_sensitivity(rows, groups=groups)
    assert [p.title for p in layout.panels] == ["optimizer=sgd", "optimizer=adam"]
    assert all([m.label for m in p.marks] == activations for p in layout.panels)
    assert [m.color for m in layout.panels[0].marks] == [m.color for m in layout.panels[1].marks]
    assert len({m.color for m in layout.panels[0].marks}) == 8


def test_a_tune_with_tensorboard_writes_each_trial_once_into_the_hparams_view(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    base = {**XOR_BASE, "train": {**XOR_BASE["train"], "tensorboard": True}}
    path = write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 3, "batch": 3, "pruner": "none"}, base=base)
    runs = tmp_path / "runs"
    run_sweep(path, runs_dir=runs, jobs=1)
    run_sweep(path, runs_dir=runs, jobs=1)  # a second report: the view is written afresh, each trial once
    board = runs / "xor_tuned" / "tensorboard"
    trials = sorted(p.name for p in board.iterdir() if p.is_dir())
    assert trials == [f"{i:05d}" for i in range(6)]
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(board))
    multiplexer.Reload()
    plugin_runs = multiplexer.PluginRunToTagToContent("hparams")
    assert len([r for r in plugin_runs if r != "."]) == 6  # one hparams entry per trial


def test_the_hparams_view_never_writes_through_a_planted_link(tmp_path):
    pytest.importorskip("tensorboard")
    from actexp.board import write_tune_hparams
    from actexp.runs import RunFolderWarning

    target = tmp_path / "elsewhere"
    target.mkdir()
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "tensorboard").symlink_to(target)
    with pytest.warns(RunFolderWarning, match="not a folder"):
        assert write_tune_hparams(sweep_dir, [], "val_acc") is None
    assert list(target.iterdir()) == [] and (sweep_dir / "tensorboard").is_symlink()


def test_a_rows_trials_of_a_batch_train_in_one_group(tmp_path):
    """5 rows x 4 trials on 2 workers: planned as one batch, the groups sort their members by
    learning rate and seed and would split rows between two groups running side by side, so that a
    row's pruner would see the other group's reports or not as their speeds fall. Whole rows go to
    each worker's chunk (12 and 8 trials), each chunk one group."""
    from actexp.sweep import Step, SweepRun, plan_tasks
    from actexp.trials import whole_rows

    sweep = load_sweep(write_tuned(tmp_path, {"optim.lr": [1e-3, 1.0, "log"], "trials": 4, "batch": 4},
                                   grid={"model.activation": ["relu", "tanh", "sigmoid", "gelu", "silu"]}))
    steps = [Step(SweepRun(f"{row.name},trial={n}", config, {}, ""), "new",
                  {"row": row.name, "folder": None, "config": config_to_dict(config)})
             for row in sweep.rows for n in range(4)
             for config in [with_values(row.config, {"optim.lr": 10 ** (-3 + n), "train.seed": TRIAL_SEED_BASE + n})]]
    chunks = whole_rows(steps, 2)
    assert [len(c) for c in chunks] == [12, 8]
    tasks = [task for chunk in chunks for task in plan_tasks(chunk, tmp_path, True, None)]
    assert sorted(len(task.runs) for task in tasks) == [8, 12]
    for task in tasks:  # whole rows in each group
        rows = [name.split(",trial=")[0] for name in task.names]
        assert all(rows.count(row) == 4 for row in rows)
