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
import struct
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


# ----------------------------------------------------------------------------- smaller


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
