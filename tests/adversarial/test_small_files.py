"""Small hostile files that would cost far more than their size, and the other holes of the second
probe: counts built before their bound, writes through links, identical seeds counted twice, one
bad folder taking a listing down, and the smaller ones (a read-only runs folder, a FIFO for a
dataset file, SIGHUP, a checkpoint's best value of the wrong type, private file modes).

The memory cases run in a child process that measures its own peak resident memory above its
baseline (VmHWM after /proc/self/clear_refs) and its CPU time, so a busy machine cannot fail them;
the child's data segment is capped a little above its baseline (RLIMIT_DATA), so a file that is
not refused fails the test with MemoryError instead of taking the machine's memory."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch

import actexp
from actexp.errors import ConfigError
from actexp.report import comparison_notes, compare
from actexp.runs import read_history, read_ledger, read_summary
from actexp.sweep import MAX_SEEDS, parse_seeds

from conftest import REPO, cli, hear_signals, run_dirs, tiny_config, write_yaml
from test_faults import interrupted_run
from data_files import gzip_bomb

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
XOR = {
    "name": "xor",
    "data": {"dataset": {"name": "xor", "n_train": 300, "n_test": 100}, "val_size": 50},
    "model": {"hidden": [8], "activation": "relu"},
    "optim": {"optimizer": "adam"},
    "train": {"epochs": 3, "batch_size": 50, "device": "cpu", "diagnostics": False},
}
MB = 1 << 20


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


# ----------------------------------------------------------------------------- measured in a child

CHILD = """
import json, resource, sys, time
sys.setrecursionlimit(10_000)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

{setup}
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
limit = status("VmData") + {limit}
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
cpu = time.process_time()
try:
{action}
    outcome = "ok"
except BaseException as e:
    outcome = type(e).__name__ + ": " + str(e)
print(json.dumps({{"outcome": outcome, "peak": status("VmHWM") - base, "cpu": time.process_time() - cpu}}))
"""


def measured(setup: str, action: str, cwd: Path, limit: int = 1536 * MB) -> dict:
    """Run `action` (after `setup`, which the baseline includes) in a fresh process: what it raised
    (or "ok"), its peak resident memory above the baseline, and its CPU seconds."""
    code = CHILD.format(setup=setup, action="\n".join("    " + line for line in action.strip().splitlines()), limit=limit)
    env = {**ENV, "MALLOC_MMAP_THRESHOLD_": "131072", "ACTEXP_DATA": str(cwd / "data")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_proc = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="reads the peak RSS from /proc")


def _edit_checkpoint(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _deflated_pickle(path: Path, padding: int) -> None:
    """The checkpoint's own entries, its data.pkl deflated and followed by `padding` zero bytes
    (after the pickle's STOP, so a reader that inflated it would load it as before): a few MB on
    disk that inflate to `padding` bytes."""
    with zipfile.ZipFile(path) as original:
        entries = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(path, "w") as bomb:
        for info, content in entries:
            if info.filename.endswith("data.pkl"):
                with bomb.open(_deflated(info.filename), "w", force_zip64=True) as f:
                    f.write(content)
                    for _ in range(padding // MB):
                        f.write(bytes(MB))
            else:
                bomb.writestr(info, content)


def _deflated(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _shared_lists(state) -> None:
    """An optimizer state whose lists share their items: a few hundred bytes pickled, 10**8 values
    once copied out into a tree, as torch's load_state_dict does."""
    shared = [0.0] * 10
    for _ in range(7):
        shared = [shared] * 10
    state["optimizer"]["state"][0]["history"] = shared


def _stride_zero(state) -> None:
    """An optimizer state tensor of 2**28 float64 numbers that stores one (stride 0): cast to the
    parameter's float32 by load_state_dict, it becomes 1 GB."""
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(1, dtype=torch.float64).expand(2**28)


# The baseline includes a first run: what torch sets up on first use is not the file's doing.
RESUME = f"import actexp, torch\nfrom actexp.training import train\ntrain({XOR!r}, runs_dir='warm-up')\n"
CHECKPOINTS = [
    ("a deflated checkpoint", lambda path: _deflated_pickle(path, 1024 * MB), "compressed"),
    ("shared lists in the optimizer state", lambda path: _edit_checkpoint(path, _shared_lists), "counting shared ones"),
    ("a stride-0 optimizer tensor", lambda path: _edit_checkpoint(path, _stride_zero), "are stored (strides (0,))"),
]


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("damage, refusal", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_a_small_checkpoint_that_would_grow_is_refused_before_it_grows(tmp_path, damage, refusal):
    folder = interrupted_run(tmp_path, XOR)
    last = folder / "checkpoints" / "last.pt"
    damage(last)
    assert last.stat().st_size < 4 * MB
    before = (folder / "summary.json").read_bytes()
    result = measured(RESUME, f"train({XOR!r}, resume={str(folder)!r})", tmp_path)
    assert result["outcome"].startswith(f"DamagedFile: {last}: refused") and refusal in result["outcome"], result
    assert "\n" not in result["outcome"]
    assert result["peak"] < 64 * MB and result["cpu"] < 5, result
    assert (folder / "summary.json").read_bytes() == before


def _stride_zero_weights(folder: Path, hidden: list[int]) -> None:
    """model.pt of stride-0 tensors shaped as `hidden` layers on XOR (its 2 inputs, 2 classes),
    and config.yaml saying that is the model: a 3 kB file that matches names, shapes and dtypes."""
    text = (folder / "config.yaml").read_text()
    assert "hidden: [8]" in text
    (folder / "config.yaml").write_text(text.replace("hidden: [8]", f"hidden: {hidden}"))
    widths = [2, *hidden, 2]
    model = {}
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        prefix = "output" if i == len(hidden) else f"hidden.{i}.linear"
        model[f"{prefix}.weight"] = torch.zeros(1).expand(n_out, n_in)
        model[f"{prefix}.bias"] = torch.zeros(1).expand(n_out)
    epoch = torch.load(folder / "model.pt", weights_only=True)["epoch"]
    torch.save({"format": 1, "epoch": epoch, "model": model}, folder / "model.pt")


@pytest.mark.slow
@needs_proc
def test_a_small_model_pt_whose_config_claims_a_huge_model_is_refused_before_it_is_built(tmp_path):
    run = actexp.train({**XOR, "train": {**XOR["train"], "checkpoint": "none"}}, runs_dir=tmp_path / "runs")
    _stride_zero_weights(run.dir, [32768, 32768])  # 1.07e9 parameters: 4.3 GB
    assert (run.dir / "model.pt").stat().st_size < 8 * 1024
    setup = f"{RESUME}from actexp.evaluation import load_run\nload_run(train({XOR!r}, runs_dir='warm-up').dir)"
    result = measured(setup, f"load_run({str(run.dir)!r})", tmp_path)
    assert result["outcome"].startswith(f"DamagedFile: {run.dir / 'model.pt'}: refused"), result
    assert result["peak"] < 64 * MB and result["cpu"] < 5, result


def _tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    header = bytearray(512)
    header[0:len(name)] = name
    header[100:108] = b"0000644\x00"
    header[108:116] = header[116:124] = b"0000000\x00"
    header[124:136] = b"%011o\x00" % size
    header[136:148] = b"00000000000\x00"
    header[148:156] = b" " * 8
    header[156:157] = kind
    header[257:265] = b"ustar  \x00"
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header)


@pytest.mark.slow
@needs_proc
def test_a_cifar_archive_whose_long_name_claims_a_gigabyte_is_refused_before_it_is_read(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    claimed = 1024 * MB
    gzip_bomb(source / "cifar-100-python.tar.gz", _tar_header(b"././@LongLink", claimed, tarfile.GNUTYPE_LONGNAME), claimed // MB)
    assert (source / "cifar-100-python.tar.gz").stat().st_size < 4 * MB
    result = measured("import actexp, torch\nfrom actexp.data import import_dataset", f"import_dataset('cifar100', {str(source)!r})", tmp_path)
    assert result["outcome"].startswith("DatasetMissing: ") and "long-name header claims 1,073,741,824 bytes" in result["outcome"], result
    assert result["peak"] < 64 * MB and result["cpu"] < 5, result


@pytest.mark.slow
@needs_proc
def test_one_long_metrics_line_is_refused_before_it_is_parsed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = b", ".join([b'{"layer": 0}'] * (64 * MB // 14))
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2, "layers": [' + rows + b"]}\n")
    result = measured("import actexp\nfrom actexp.runs import read_history", f"read_history({str(run)!r})", tmp_path)
    assert result["outcome"].startswith(f"DamagedFile: {run / 'metrics.jsonl'}: line 2 is longer than"), result
    assert result["peak"] < 16 * MB and result["cpu"] < 2, result


def test_metrics_records_denser_than_actexp_writes_them_are_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "layers": [{"layer": 0}] * 1000}) + "\n")
    with pytest.raises(actexp.runs.DamagedFile, match="line 1 is not an epoch record"):
        read_history(tmp_path)
    real = {"epoch": 1, "train_loss": 0.5, "val_acc": 0.5, "layers": [{"layer": i, "grad_norm": 0.479634, "weight_norm": 1.31812,
                                                                     "act_mean": 0.23, "dead_fraction": 0.0} for i in range(1000)]}
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "val_loss": 2.3}) + "\n" + json.dumps(real) + "\n")
    assert len(read_history(tmp_path)) == 2


# ----------------------------------------------------------------------------- counts built before their bound


@pytest.mark.parametrize("text", ["100000000", "1000000000", "1" + "0" * 22, "9" * 5000, "١٢", "²", "1,2,x", "0", "",
                                  ",".join(["1"] * (MAX_SEEDS + 1)), "12345678901234567890123"])
def test_seeds_are_bounded_before_they_are_built(text):
    tracemalloc.start()
    start = time.thread_time()
    with pytest.raises(ConfigError) as refused:
        parse_seeds(text)
    seconds = time.thread_time() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(refused.value).startswith("--seeds ") and "\n" not in str(refused.value)
    assert seconds < 0.05 and peak < 2 * len(text) + 200_000, (seconds, peak)


def test_seeds_through_the_cli_are_a_usage_error(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", XOR)
    for text in ("100000000", "1" + "0" * 22, "٣"):
        result = cli("sweep", config, "--seeds", text, "--dry-run", "--runs-dir", tmp_path / "runs")
        assert result.exit_code == 2 and "--seeds" in one_error_line(result.output)
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds(" 4, 7") == [4, 7] and len(parse_seeds(str(MAX_SEEDS))) == MAX_SEEDS


# ----------------------------------------------------------------------------- writing through links


def test_a_ledger_folder_that_links_out_of_the_sweep_is_refused_and_nothing_is_written_there(tmp_path):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"name": "s", "base": {**XOR, "train": {**XOR["train"], "epochs": 1}},
                                                 "grid": {"model.activation": ["relu"]}})
    assert cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "--quiet").exit_code == 0
    sweep_dir = tmp_path / "runs" / "s"
    (entry,) = read_ledger(sweep_dir)["runs"]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    folder = sweep_dir / entry["folder"]
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    folder.symlink_to(victim, target_is_directory=True)
    ledger = json.loads((sweep_dir / "sweep.json").read_text())
    ledger["runs"][0]["status"] = "failed"
    (sweep_dir / "sweep.json").write_text(json.dumps(ledger))

    with pytest.raises(actexp.runs.DamagedFile, match="a link out of it"):
        read_ledger(sweep_dir)
    result = cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and str(sweep_dir / "sweep.json") in one_error_line(result.output)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


def test_a_runs_folder_entry_that_links_out_of_the_runs_folder_is_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "xor").symlink_to(outside, target_is_directory=True)
    config = write_yaml(tmp_path / "c.yaml", XOR)
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and "outside" in one_error_line(result.output) and "link" in result.output
    assert not list(outside.iterdir())
    (tmp_path / "runs" / "s").symlink_to(outside, target_is_directory=True)
    sweep = write_yaml(tmp_path / "sweep.yaml", {"name": "s", "base": XOR, "grid": {"model.activation": ["relu"]}})
    result = cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and "link" in one_error_line(result.output)
    assert not list(outside.iterdir())


# ----------------------------------------------------------------------------- identical seeds


def _run_folder(folder: Path, activation: str, seed: int, val_acc: float) -> None:
    folder.mkdir(parents=True)
    config = actexp.config.config_from_dict({**tiny_config(model={"hidden": [32], "activation": activation}), "train": {"seed": seed}})
    (folder / "config.yaml").write_text(actexp.config.config_to_yaml(config))
    (folder / "summary.json").write_text(json.dumps({"status": "completed", "name": "x", "val_acc": val_acc, "selected_epoch": 1}))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": val_acc}) + "\n")


def test_the_same_config_and_seed_trained_twice_is_one_observation(tmp_path):
    root = tmp_path / "runs"
    _run_folder(root / "relu" / "1", "relu", 0, 0.90)
    _run_folder(root / "relu" / "2", "relu", 1, 0.91)
    _run_folder(root / "tanh" / "1", "tanh", 0, 0.80)
    _run_folder(root / "tanh" / "2", "tanh", 0, 0.80)  # the same run again
    comparison = compare([root])
    best, other = comparison.rows
    assert best.values == ("relu",) and best.metric.n == 2
    assert other.metric.n == 1 and other.verdict is None and other.repeats == 1 and len(other.runs) == 2
    assert any("1 run repeated an earlier run's config and seed and was counted once" in note for note in comparison_notes(comparison))
    shown = cli("compare", root)
    assert shown.exit_code == 0 and "p<0.001" not in shown.output and "counted once" in shown.output


# ----------------------------------------------------------------------------- one bad folder, not the listing


def _good_run(folder: Path, seed: int) -> Path:
    _run_folder(folder, "relu", seed, 0.9 - seed / 100)
    return folder


def test_a_folder_tree_a_thousand_levels_deep_does_not_take_the_listing_down(tmp_path):
    root = tmp_path / "runs"
    _good_run(root / "a" / "1", 0)
    _good_run(root / "a" / "2", 1)
    deep = str(root)
    for _ in range(1100):  # one level at a time: Path.mkdir(parents=True) recurses too
        deep = os.path.join(deep, "d")
        os.mkdir(deep)
    try:
        for command in (["runs", root], ["compare", root], ["plot", root, "-o", tmp_path / "c.png"]):
            result = cli(*command)
            assert result.exit_code == 0 and "Traceback" not in result.output, (command, result.output)
        assert (tmp_path / "c.png").exists()
    finally:  # pytest's clean-up of old temp folders (shutil.rmtree) recurses too
        while deep != str(root):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


@pytest.mark.parametrize("record", [{"epoch": 2**63, "val_acc": 0.5}, {"epoch": 2**64 + 1}, {"epoch": -1}, {"epoch": 3, "val_acc": 10**400 // 10**380}],
                         ids=["epoch 2**63", "epoch 2**64+1", "epoch -1", "a figure of 10**20"])
def test_a_run_with_numbers_numpy_cannot_hold_is_skipped_by_plot(tmp_path, record):
    root = tmp_path / "runs"
    _good_run(root / "a" / "1", 0)
    _good_run(root / "a" / "2", 1)
    bad = _good_run(root / "a" / "3", 2)
    (bad / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": 0.5}) + "\n" + json.dumps(record) + "\n")
    result = cli("plot", root, "-o", tmp_path / "c.png")
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert result.exit_code == 0 and len(warnings) == 1 and f"skipped {bad}" in warnings[0], result.output
    assert (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------- smaller


def test_a_runs_folder_that_cannot_be_written_is_one_clear_line(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the runs folder's parent should be")
    config = write_yaml(tmp_path / "c.yaml", XOR)
    for command in (["train", config], ["sweep", config, "--seeds", "2"]):
        result = cli(*command, "--runs-dir", blocked / "runs", "--quiet")
        line = one_error_line(result.output)
        assert result.exit_code == 1 and f"could not create {blocked / 'runs'}" in line and "--runs-dir" in line, result.output
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        (tmp_path / "ro").mkdir(mode=0o555)
        result = cli("train", config, "--runs-dir", tmp_path / "ro", "--quiet")
        assert result.exit_code == 1 and "Permission denied" in one_error_line(result.output)


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "folder", "dangling link"])
def test_a_dataset_file_that_is_not_a_regular_file_is_damaged_not_missing(tmp_path, data_root, monkeypatch, kind):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (data_root / "MNIST" / "raw").iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    target = next(p for p in raw.iterdir() if p.name.startswith("train-images"))
    target.unlink()
    {"fifo": lambda: os.mkfifo(target), "link to /dev/zero": lambda: target.symlink_to("/dev/zero"),
     "folder": target.mkdir, "dangling link": lambda: target.symlink_to(raw / "nowhere")}[kind]()
    monkeypatch.setenv("ACTEXP_DATA", str(root))
    config = write_yaml(tmp_path / "c.yaml", tiny_config())
    started = time.time()
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    line = one_error_line(result.output)
    assert result.exit_code == 1 and str(target) in line and "missing" not in line and "download" not in line.split(";")[0], line
    assert time.time() - started < 20 and not (tmp_path / "runs").exists()


def _hear_sighup() -> None:
    hear_signals()
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # nohup, or a harness, may have left it ignored


@pytest.mark.slow
def test_sighup_records_the_run_as_interrupted(tmp_path):
    long = {**XOR, "data": {"dataset": {"name": "xor", "n_train": 2000}, "val_size": 200},
            "train": {**XOR["train"], "epochs": 300, "batch_size": 20}}
    path = write_yaml(tmp_path / "long.yaml", long)
    process = subprocess.Popen([sys.executable, "-m", "actexp", "train", str(path), "--runs-dir", "runs", "--quiet"], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_hear_sighup)
    deadline = time.time() + 120
    # An epoch finished (its checkpoint waits in memory: the signal writes it).
    while not (run_dirs(tmp_path / "runs") and (run_dirs(tmp_path / "runs")[0] / "metrics.jsonl").exists()
               and len(read_history(run_dirs(tmp_path / "runs")[0])) >= 2):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    (run,) = run_dirs(tmp_path / "runs")
    process.send_signal(signal.SIGHUP)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 128 + signal.SIGHUP, output
    assert "terminated (SIGHUP)" in one_error_line(output) and "--resume" in output
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["error"] == "terminated by SIGHUP"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == summary["epochs_completed"]


@pytest.mark.parametrize("value", ["0.5", None, [0.5], {"v": 1}, True])
def test_a_checkpoint_whose_best_value_is_not_a_number_is_refused_before_training(tmp_path, value):
    folder = interrupted_run(tmp_path, XOR)
    last = folder / "checkpoints" / "last.pt"
    _edit_checkpoint(last, lambda state: state["best"].update(value=value))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    result = cli("train", "--resume", folder)
    line = one_error_line(result.output)
    assert result.exit_code == 1 and str(last) in line and "best" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_run_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run = actexp.train(XOR, runs_dir=tmp_path / "runs")
        report = compare([tmp_path / "runs"], out_dir=tmp_path / "report")
    finally:
        os.umask(previous)
    files = [p for p in [*run.dir.rglob("*"), *(tmp_path / "report").iterdir()] if p.is_file()]
    assert len(files) >= 8 and report.rows
    assert {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {p.relative_to(tmp_path).as_posix(): oct(0o666 & ~umask if p.name != ".lock" else 0o644 & ~umask) for p in files}


def test_a_checkpoints_folder_that_links_out_of_its_run_is_neither_read_nor_written(tmp_path):
    folder = interrupted_run(tmp_path, XOR)
    outside = tmp_path / "outside"
    (folder / "checkpoints").rename(outside)
    (folder / "checkpoints").symlink_to(outside, target_is_directory=True)
    (outside / ".last.pt.stale.tmp").write_bytes(b"someone else's")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    result = cli("train", "--resume", folder)
    line = one_error_line(result.output)
    assert result.exit_code == 1 and f"{folder / 'checkpoints'}: is a link to {outside}" in line
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert read_summary(folder)["status"] == "interrupted"
