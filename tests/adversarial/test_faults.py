"""Faults: signals at awkward moments, kill -9 inside a checkpoint write, hostile checkpoints, two
processes on one folder, a disk that fills up, and hand-damaged run folders.

Each case asserts what a user sees (exit code, one line naming the file, no traceback), that nothing
ran that a file asked to run, and that nothing already written was lost."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import actexp
import actexp.runs as runs
from actexp.config import config_from_dict, config_to_yaml
from actexp.runs import is_locked, read_history, read_ledger, read_summary

from conftest import REPO, cli, hear_signals, run_dirs, tiny_config, write_yaml
from data_files import RunsCommand

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# Long enough (a few seconds on these machines) to be caught part-way; no data files needed.
LONG_XOR = {
    "name": "long",
    "data": {"dataset": {"name": "xor", "n_train": 2000}, "val_size": 200},
    "model": {"hidden": [32], "activation": "relu"},
    "optim": {"optimizer": "adam", "lr": 0.003},
    "train": {"epochs": 200, "batch_size": 20, "device": "cpu", "diagnostics": False},
}
SHORT_XOR = {**LONG_XOR, "train": {**LONG_XOR["train"], "epochs": 4, "checkpoint_every": 0}}  # a checkpoint each epoch


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "actexp", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=hear_signals)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def epochs_recorded(folder: Path) -> int:
    try:
        return len(read_history(folder))
    except runs.DamagedFile:
        return 0


def the_run(runs_dir: Path) -> Path:
    wait_for(lambda: len(run_dirs(runs_dir)) == 1)
    return run_dirs(runs_dir)[0]


def csv_epochs(folder: Path) -> list[int]:
    with open(folder / "metrics.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def interrupted_run(tmp_path: Path, config: dict, after_epoch: int = 1) -> Path:
    def stop(event, info):
        if event == "epoch" and info["record"]["epoch"] == after_epoch:
            raise KeyboardInterrupt

    folder = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(config, run_dir=folder, progress=stop)
    return folder


# ----------------------------------------------------------------------------- signals and kill -9


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c_and_the_run_resumes(tmp_path):
    """SIGTERM (schedulers, `timeout`, containers): status interrupted, the resume hint, exit 143,
    metrics files that agree, and a second resume attempt refused while the first one trains."""
    path = write_yaml(tmp_path / "long.yaml", LONG_XOR)
    process = start("train", str(path), "--runs-dir", "runs", "--quiet", cwd=tmp_path)
    run = the_run(tmp_path / "runs")
    wait_for(lambda: epochs_recorded(run) >= 3)  # (its last.pt waits in memory: the signal writes it)
    assert is_locked(run)
    busy = cli("train", "--resume", run)  # a second process on a run that is training
    assert busy.exit_code == 75 and f"process {process.pid}" in one_error_line(busy.output)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 143, output
    shown = run.relative_to(tmp_path)
    assert one_error_line(output) == f"error: terminated (SIGTERM): {shown} keeps every finished epoch; continue with `actexp train --resume {shown}`"
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["error"] == "terminated by SIGTERM"
    done = summary["epochs_completed"]
    assert [r["epoch"] for r in read_history(run)] == csv_epochs(run) == list(range(1, done + 1))
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == done
    assert not list(run.rglob(".*.tmp"))

    short = {**LONG_XOR, "train": {**LONG_XOR["train"], "epochs": done + 2}}
    reference = actexp.train(short, runs_dir=tmp_path / "reference")
    assert without_seconds(read_history(run)) == without_seconds(reference.history[:done])


@pytest.mark.slow
def test_kill_9_between_timed_checkpoints_resumes_from_the_last_one_to_the_same_numbers(tmp_path):
    """With checkpoints every 0.5 s, a kill -9 loses the epochs after the last one written; the
    resumed run drops them from its metrics, trains them again, and ends with the numbers of a run
    never stopped."""
    config = {**LONG_XOR, "train": {**LONG_XOR["train"], "epochs": 60, "checkpoint_every": 0.5}}
    path = write_yaml(tmp_path / "timed.yaml", config)
    process = start("train", str(path), "--runs-dir", "runs", "--quiet", cwd=tmp_path)
    run = the_run(tmp_path / "runs")

    def checkpointed_and_ahead() -> bool:  # a checkpoint on disk, and the metrics past its epoch
        try:
            saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
        except (FileNotFoundError, RuntimeError, EOFError):
            return False
        return saved >= 2 and epochs_recorded(run) > saved

    wait_for(checkpointed_and_ahead)
    process.kill()
    process.wait()
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert saved < 60 and read_summary(run)["status"] == "running"
    resumed = cli("train", "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    reference = actexp.train(config, runs_dir=tmp_path / "reference")
    assert without_seconds(read_history(run)) == without_seconds(reference.history)
    assert read_summary(run)["test_loss"] == reference.summary["test_loss"]


@pytest.mark.slow
def test_kill_9_inside_a_checkpoint_write_loses_nothing(tmp_path):
    """kill -9 after half a checkpoint is written: last.pt is still the previous epoch's, the run
    reads as interrupted (its lock is free), and resuming gives the uninterrupted run's metrics."""
    config = write_yaml(tmp_path / "short.yaml", SHORT_XOR)
    driver = (
        "import os, signal, sys, torch\n"
        "real = torch.save\n"
        "def save(obj, f, *a, **k):\n"
        "    if obj.get('epoch') == 3:\n"
        "        f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(obj, f, *a, **k)\n"
        "torch.save = save\n"
        "import actexp; actexp.train(sys.argv[1], runs_dir='runs')\n"
    )
    result = subprocess.run([sys.executable, "-c", driver, str(config)], cwd=tmp_path, env=ENV, capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    (run,) = run_dirs(tmp_path / "runs")
    assert read_summary(run)["status"] == "running"  # it had no chance to say otherwise
    assert runs.run_status(run, read_summary(run)) == "interrupted"
    listed = cli("runs", tmp_path / "runs")
    assert listed.exit_code == 0 and "interrupted" in listed.output
    assert list((run / "checkpoints").glob(".last.pt.*.tmp"))  # the half-written temp file
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == 2

    resumed = cli("train", "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert not list(run.rglob(".*.tmp"))  # cleaned up under the lock
    reference = actexp.train(SHORT_XOR, runs_dir=tmp_path / "reference")
    assert without_seconds(read_history(run)) == without_seconds(reference.history)
    assert read_summary(run)["test_loss"] == reference.summary["test_loss"]


def test_a_failure_in_the_test_evaluation_is_recorded(tmp_path, data_root, monkeypatch):
    import actexp.training as training

    real = training.evaluate

    def evaluate(model, x, y):
        if len(y) == 200:  # the fixture's test split (the validation split has 120)
            raise IndexError("Target 10 is out of bounds.")
        return real(model, x, y)

    monkeypatch.setattr(training, "evaluate", evaluate)
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 2}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and "Target 10 is out of bounds" in one_error_line(result.output)
    (run,) = run_dirs(tmp_path / "runs")
    summary = read_summary(run)
    assert summary["status"] == "failed" and "Target 10" in summary["error"] and summary["epochs_completed"] == 2
    listed = cli("runs", tmp_path / "runs")
    assert "failed" in listed.output and "running" not in listed.output


def test_resuming_with_another_thread_count_says_so(tmp_path, data_root):
    config = tiny_config(train={"epochs": 3})
    folder = interrupted_run(tmp_path, config)
    # train.threads is how a run computes, not which experiment: its config may change it
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    saved["train"]["threads"] = 2
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    result = cli("train", "--resume", folder)
    assert result.exit_code == 0, result.output
    assert "note: resumed at epoch 2 with 2 torch threads where the run had 1" in result.output
    notes = read_summary(folder)["notes"]
    assert len(notes) == 1 and "bit-identity needs equal thread counts" in notes[0]


# ----------------------------------------------------------------------------- hostile checkpoints


def _zip_checkpoint(path: Path, marker: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["best"] = {"value": RunsCommand(f"touch {marker}"), "epoch": 1, "waited": 0}
    torch.save(state, path)


def _legacy_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"epoch": 1, "model": RunsCommand(f"touch {marker}")}))


def _not_a_checkpoint(path: Path, marker: Path) -> None:
    path.write_bytes(b"\x00" * 1000)


def _other_keys(path: Path, marker: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, path)


def _wrong_shapes(path: Path, marker: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["model"] = {k: torch.zeros(7) for k in state["model"]}
    torch.save(state, path)


def _huge(path: Path, marker: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(512 << 20)  # sparse: costs no disk


@pytest.mark.parametrize("damage", [_zip_checkpoint, _legacy_pickle, _not_a_checkpoint, _other_keys, _wrong_shapes, _huge],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_hostile_or_damaged_checkpoint_is_refused_and_runs_nothing(tmp_path, data_root, damage):
    folder = interrupted_run(tmp_path, tiny_config(train={"epochs": 3}))
    marker = tmp_path / "pwned"
    last = folder / "checkpoints" / "last.pt"
    damage(last, marker)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock" and p.stat().st_size < 1 << 20}
    started = time.time()
    result = cli("train", "--resume", folder)
    assert time.time() - started < 10
    line = one_error_line(result.output)
    assert result.exit_code == 1 and str(last) in line
    assert not marker.exists()
    assert read_summary(folder)["status"] == "interrupted"  # nothing written
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before


# ----------------------------------------------------------------------------- two processes, one folder


@pytest.mark.slow
def test_concurrent_copies_of_a_sweep_train_each_run_once(tmp_path):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"name": "race", "base": SHORT_XOR, "grid": {"model.activation": ["relu", "tanh", "sigmoid"]}})
    processes = [start("sweep", str(sweep), "--runs-dir", "runs", "--quiet", cwd=tmp_path) for _ in range(4)]
    outputs = [(p.communicate(timeout=180)[0].decode(), p.returncode) for p in processes]
    codes = sorted(code for _, code in outputs)
    assert codes == [0, 75, 75, 75], outputs
    for output, code in outputs:
        if code == 75:
            assert "is in use by process" in one_error_line(output) and "--wait" in output
    sweep_dir = tmp_path / "runs" / "race"
    assert [e["status"] for e in read_ledger(sweep_dir)["runs"]] == ["completed"] * 3
    assert len(run_dirs(sweep_dir)) == 3  # one folder per run: nothing trained twice
    assert not list(sweep_dir.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_waiting_copy_of_a_sweep_finds_its_runs_done(tmp_path):
    long_enough = {**SHORT_XOR, "train": {**SHORT_XOR["train"], "epochs": 15}}
    sweep = write_yaml(tmp_path / "sweep.yaml", {"name": "queue", "base": long_enough, "grid": {"model.activation": ["relu", "tanh"]}})
    first = start("sweep", str(sweep), "--runs-dir", "runs", "--quiet", cwd=tmp_path)
    wait_for(lambda: is_locked(tmp_path / "runs" / "queue"))
    second = start("sweep", str(sweep), "--runs-dir", "runs", "--quiet", "--wait", cwd=tmp_path)
    assert first.wait(timeout=180) == 0
    output = second.communicate(timeout=180)[0].decode()
    assert second.returncode == 0, output
    assert len(run_dirs(tmp_path / "runs" / "queue")) == 2


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("target, nth", [("metrics.jsonl", 3), ("summary.json", 2)])
def test_a_write_failure_names_the_file_and_leaves_no_temp_file(tmp_path, data_root, monkeypatch, target, nth):
    """ENOSPC on the nth write of `target` (a full disk; summary.json's second is the final one): one line naming the file, no partial
    temp file left to take the last space, earlier epochs kept, and the ending recorded where the
    disk still takes a small file."""
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == target:
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(runs.os, "replace", replace)
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 4}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    monkeypatch.setattr(runs.os, "replace", real)
    (run,) = run_dirs(tmp_path / "runs")
    line = one_error_line(result.output)
    assert result.exit_code == 1 and f"could not write {run}" in line and target in line and "No space left on device" in line
    assert not list(run.rglob(".*.tmp"))
    summary = read_summary(run)
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert len(read_history(run)) >= 1 and [r["epoch"] for r in read_history(run) if r["epoch"] > 0] == csv_epochs(run)


def test_a_checkpoint_write_failure_is_a_warning_and_the_next_write_tries_again(tmp_path, data_root, monkeypatch):
    """ENOSPC on the second last.pt: one warning line naming the file, no temp file left, and the
    run completes; the next epoch's checkpoint is written."""
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "last.pt":
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(runs.os, "replace", replace)
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 4, "checkpoint_every": 0}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    monkeypatch.setattr(runs.os, "replace", real)
    (run,) = run_dirs(tmp_path / "runs")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "last.pt not written" in warning[0] and "No space left on device" in warning[0]
    assert not list(run.rglob(".*.tmp")) and read_summary(run)["status"] == "completed"
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == 4


# ----------------------------------------------------------------------------- damaged run folders


def _good_run(folder: Path, name: str, val_acc: float) -> Path:
    folder.mkdir(parents=True)
    # a seed of its own: runs of one config and one seed would be one observation to compare
    config = config_from_dict({**tiny_config(train={**tiny_config()["train"], "seed": sum(map(ord, name))}), "name": name})
    (folder / "config.yaml").write_text(config_to_yaml(config))
    (folder / "summary.json").write_text(json.dumps({"status": "completed", "name": name, "test_acc": val_acc, "started": "2026-11-24T10:00:00"}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_acc": val_acc, "val_loss": 1.0 - val_acc}) + "\n" for e in (1, 2)))
    return folder


def _write(name: str, content: bytes):
    def damage(folder: Path):
        (folder / name).write_bytes(content)

    damage.__name__ = f"{name}: {content[:24]!r}"
    damage.file = name
    return damage


def _fifo(folder: Path):
    (folder / "summary.json").unlink()
    os.mkfifo(folder / "summary.json")


_fifo.file = "summary.json"


def _sparse(name: str):
    def damage(folder: Path):
        with open(folder / name, "wb") as f:
            f.write(b"{")
            f.truncate(300 << 20)

    damage.__name__ = f"{name}: 300 MB"
    damage.file = name
    return damage


BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode()
    for i in range(8))

DAMAGE = [
    _write("summary.json", b"{not json"),
    _write("summary.json", b"[1, 2, 3]"),
    _write("summary.json", b'{"name": "x"}'),
    _write("summary.json", b'{"status": "completed", "test_acc": "0.99"}'),
    _write("summary.json", b'{"status": "completed", "started": 5}'),
    _write("summary.json", b'{"status": "completed", "overrides": "model.activation=tanh"}'),
    _write("summary.json", b'{"status": "completed", "overrides": [1, {"a": 2}]}'),
    _write("summary.json", json.dumps({"status": "completed", "overrides": ["a=1"] * 1001}).encode()),
    _write("summary.json", json.dumps({"status": "completed", "overrides": ["a=" + "x" * 10_001]}).encode()),
    _write("summary.json", b"\xff\xfe\x00garbage"),
    _write("summary.json", b"[" * 100_000),
    _fifo,
    _sparse("summary.json"),
    _write("metrics.jsonl", b'{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2, "val_acc'),
    _write("metrics.jsonl", b'{"val_acc": 0.5}\n'),
    _write("metrics.jsonl", b'{"epoch": "1", "val_acc": 0.5}\n'),
    _write("metrics.jsonl", b'{"epoch": 1, "val_acc": "high"}\n'),
    _write("metrics.jsonl", b'{"epoch": 1, "layers": [1, 2]}\n'),
    _write("metrics.jsonl", b"[]\n"),
    _sparse("metrics.jsonl"),
    _write("config.yaml", b"model: [unclosed"),
    _write("config.yaml", BOMB),
    _write("config.yaml", b"!!python/object/apply:os.system ['touch pwned']"),
]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_one_damaged_run_is_skipped_with_one_warning(tmp_path, damage):
    root = tmp_path / "runs"
    _good_run(root / "good" / "1", "good", 0.9)
    _good_run(root / "other" / "1", "other", 0.8)
    bad = _good_run(root / "bad" / "1", "bad", 0.7)
    damage(bad)
    # runs lists both good runs (and reads no config.yaml); compare averages them (they differ only by name and seed): 0.85 ± 0.0707
    for command, survivors in ((["runs", root], ("good", "other")), (["compare", root], ("0.8500 ± 0.0707",))):
        expected_warnings = 0 if command[0] == "runs" and damage.file == "config.yaml" else 1
        started = time.time()
        result = cli(*command)
        assert time.time() - started < 10
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
        assert len(warnings) == expected_warnings and all(f"skipped {bad}: {bad / damage.file}" in w for w in warnings), result.output
        assert all(text in result.stdout for text in survivors) and "Traceback" not in result.output
    shown = cli("show", bad)
    assert shown.exit_code == 1 and str(bad) in one_error_line(shown.output)
    assert not (tmp_path / "pwned").exists()


def test_strings_read_from_run_folders_are_shown_as_text_never_as_markup(tmp_path):
    # rich reads "[...]" in a table cell as markup: "[/bad]" would stop the whole listing, "[link=...]" hide itself
    root = tmp_path / "runs"
    _good_run(root / "good" / "1", "good", 0.9)
    odd = _good_run(root / "odd" / "1", "odd", 0.8)
    summary = json.loads((odd / "summary.json").read_text())
    summary.update(name="[/bad]", started="[blink]2026", overrides=["[/x]", "[link=file:///etc/passwd]click"])
    (odd / "summary.json").write_text(json.dumps(summary))
    listed = cli("runs", root)
    assert listed.exit_code == 0 and "Traceback" not in listed.output, listed.output
    assert all(text in listed.stdout for text in ("[/bad]", "[blink]2026", "[/x]", "[link=file:///etc/passwd]click", "good"))
    assert cli("compare", root).exit_code == 0


@pytest.mark.parametrize("ledger", [
    b"{broken",
    json.dumps({"runs": "all of them"}).encode(),
    json.dumps({"runs": [{"name": "x", "status": "completed", "folder": "../../etc"}]}).encode(),
    json.dumps({"runs": [{"name": "x", "status": "completed", "folder": "/etc"}]}).encode(),
    json.dumps({"runs": [{"status": "completed"}]}).encode(),
], ids=["not-json", "runs-not-a-list", "folder-escapes", "absolute-folder", "no-name"])
def test_a_damaged_ledger(tmp_path, ledger):
    """compare falls back to the run folders below the sweep (with a warning); the sweep itself
    refuses to plan from it (it could point a resume anywhere) with one line."""
    sweep_dir = tmp_path / "runs" / "xor_sweep"
    _good_run(sweep_dir / "a" / "1", "a", 0.9)
    (sweep_dir / "sweep.json").write_bytes(ledger)
    compared = cli("compare", sweep_dir)
    assert compared.exit_code == 0 and "warning:" in compared.output and "reading every run folder" in compared.output
    spec = write_yaml(tmp_path / "sweep.yaml", {"name": "xor_sweep", "base": SHORT_XOR, "grid": {"model.activation": ["relu"]}})
    swept = cli("sweep", spec, "--runs-dir", tmp_path / "runs")
    assert swept.exit_code == 1 and "sweep.json" in one_error_line(swept.output)
    assert not (tmp_path / "etc").exists() and len(run_dirs(sweep_dir)) == 1


def test_show_bounds_what_it_reads_and_prints(tmp_path):
    run = _good_run(tmp_path / "runs" / "long" / "1", "long", 0.9)
    record = '{"epoch": %d, "train_loss": 0.1, "train_acc": 0.9, "val_loss": 0.2, "val_acc": 0.9, "lr": 0.001, "seconds": 0.01}\n'
    (run / "metrics.jsonl").write_text("".join(record % e for e in range(1, 200_001)))
    started = time.time()
    result = cli("show", run)
    assert result.exit_code == 0, result.output
    assert time.time() - started < 15
    assert len(result.output.splitlines()) < 80 and "199,965 epochs between the first 5 and the last 30 not shown" in result.output.replace("\n", " ") and "200000" in result.output


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize("sections, key", [
    ({"model": {"depth": 1000, "width": 1_000_000}}, "model.hidden"),
    ({"data": {"dataset": {"name": "xor", "n_train": 10_000_000}}, "model": {"hidden": [100_000]}, "train": {"batch_size": 1_000_000}}, None),
    ({"model": {"hidden": [200_000], "activation": {"name": "maxout", "k": 64}}}, "model.hidden"),
])
def test_a_run_that_cannot_fit_is_refused_before_anything_is_allocated(tmp_path, sections, key):
    """Sizes inside the config's bounds that still need far more memory than the machine has: one
    line with the estimate, exit 2, in well under a second, no run folder, no data read."""
    import resource

    path = write_yaml(tmp_path / "giant.yaml", tiny_config(**sections))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.time()
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert time.time() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing big was allocated
    line = one_error_line(result.output)
    assert result.exit_code == 2 and "this run needs about" in line and "is available" in line, line
    assert key is None or key in line
    assert not (tmp_path / "runs").exists()
