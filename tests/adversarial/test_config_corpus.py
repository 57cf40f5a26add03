"""Hostile config files: every file read is possibly hostile. Each case exits 2 with exactly one
line, `error: ...`, naming the file, without a traceback, well under 2 s, before any data is
touched or any run folder made; the ones that used to hang or read without end (/dev/zero, a FIFO)
also run in a child process whose own peak memory is measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, cli

SECONDS = 2.0  # per CLI call; the refusals take milliseconds
PWNED = "pwned"  # the file a python/object tag would create if it ran


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo.yaml")
    return tmp_path / "fifo.yaml"


def _sparse(tmp_path: Path) -> Path:
    path = tmp_path / "sparse.yaml"
    with path.open("wb") as f:
        f.truncate(100 * 2**30)  # 100 GB of holes: the size alone refuses it
    return path


def _symlink(target) -> callable:
    def make(tmp_path: Path) -> Path:
        (tmp_path / "link.yaml").symlink_to(target if isinstance(target, str) else tmp_path / target)
        return tmp_path / "link.yaml"

    return make


def _bytes(content: bytes, name: str = "bad.yaml") -> callable:
    def make(tmp_path: Path) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    return make


# (id, a function making the path in tmp_path, fragments besides the path)
BAD_PATHS = [
    ("FIFO", _fifo, ["named pipe (FIFO), not a regular file"]),
    ("/dev/zero", lambda tmp_path: Path("/dev/zero"), ["character device, not a regular file"]),
    ("/dev/null", lambda tmp_path: Path("/dev/null"), ["not a regular file"]),
    ("a link to /dev/zero", _symlink("/dev/zero"), ["character device, not a regular file"]),
    ("a link to itself", _symlink("link.yaml"), ["cannot be read"]),
    ("a folder", lambda tmp_path: (tmp_path / "folder.yaml").mkdir() or tmp_path / "folder.yaml", []),
    ("2 MB of comments", _bytes(b"# padding\n" * 200_000), ["larger than 1 MB"]),
    ("100 GB sparse file", _sparse, ["larger than 1 MB"]),
    ("random binary", _bytes(bytes(range(256)) * 4), ["not UTF-8"]),
    ("latin-1 text", _bytes("name: caf\xe9\n".encode("latin-1")), ["not UTF-8", "0xe9"]),
    ("UTF-16 text", _bytes("name: x\n".encode("utf-16")), ["not UTF-8"]),
]
if os.path.exists("/proc/self/pagemap"):  # a regular file that claims size 0 and reads for terabytes
    BAD_PATHS.append(("/proc/self/pagemap", lambda tmp_path: Path("/proc/self/pagemap"), []))


# ----------------------------------------------------------------------------- checks


@pytest.fixture
def deadline():
    """A hang (a FIFO opened for reading, an endless read) fails the test instead of the suite."""

    def expire(signum, frame):
        raise TimeoutError("the config check did not finish in 10 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 10)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _refused(args, path: Path, fragments) -> str:
    start = time.perf_counter()
    result = cli(*args)
    seconds = time.perf_counter() - start
    assert result.exit_code == 2, result.output[:2000]
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output[:2000]
    line = lines[0]
    assert line.startswith("error: ") and len(line) < 1000, line[:2000]
    assert str(path) in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert seconds < SECONDS, f"{seconds:.2f} s: {line}"
    return line


def _check(tmp_path: Path, path: Path, fragments, overrides=()) -> None:
    sets = [arg for o in overrides for arg in ("--set", o)]
    runs = tmp_path / "runs"
    _refused(["validate", path, *sets], path, fragments)
    _refused(["train", path, "--runs-dir", runs, *sets], path, fragments)
    assert not runs.exists()
    assert not (tmp_path / "empty-data-root").exists()  # $ACTEXP_DATA (conftest): no data was touched
    assert not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("make,fragments", [c[1:] for c in BAD_PATHS], ids=[c[0] for c in BAD_PATHS])
def test_bad_path(tmp_path, deadline, make, fragments):
    _check(tmp_path, make(tmp_path), fragments)


# ----------------------------------------------------------------------------- memory, in a child process


# Runs `python -m actexp ...` and writes its exit code, seconds and peak RSS (KB) to argv[1]. A child's
# ru_maxrss starts at its parent's peak on Linux (fork copies the parent's memory map, and exec keeps
# the larger figure): measured from the pytest process, which holds torch, every child would weigh
# ~700 MB. This small launcher's only child is measured from the launcher, so RUSAGE_CHILDREN is that
# child's alone. The child's address space is capped at 2 GB (a regression fails with MemoryError
# instead of taking the machine's memory) and it is killed after its time limit.
LAUNCHER = """
import resource, subprocess, sys, time
report, limit, args = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
start = time.monotonic()
try:
    code = subprocess.run([sys.executable, "-m", "actexp", *args], preexec_fn=cap, timeout=limit).returncode
except subprocess.TimeoutExpired:
    code = "timeout"
seconds = time.monotonic() - start
open(report, "w").write(f"{code} {seconds} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""


def _run_child(args, cwd: Path, limit: float = 10.0):
    """`python -m actexp ARGS` in a grandchild: (exit code, output, seconds, its peak RSS in bytes)."""
    report, output = cwd / "child-report.txt", cwd / "child-output.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with output.open("wb") as sink:
        subprocess.run([sys.executable, "-c", LAUNCHER, report, str(limit), *map(str, args)],
                       stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=limit + 30, check=True)
    code, seconds, peak_kb = report.read_text().split()
    assert code != "timeout", f"actexp {' '.join(map(str, args))[:80]} still ran after {limit} s"
    return int(code), output.read_text(errors="replace"), float(seconds), int(peak_kb) * (1 if sys.platform == "darwin" else 1024)


PEAK_LIMIT = 300 * 10**6
CHILD_SECONDS = 5.0


# (id, a function making the path in tmp_path): the cases that used to hang or take gigabytes
CHILD_CASES = [
    ("/dev/zero", lambda tmp_path: Path("/dev/zero")),
    ("FIFO", _fifo),
    ("100 GB sparse file", _sparse),
]


@pytest.mark.parametrize("make", [c[1] for c in CHILD_CASES], ids=[c[0] for c in CHILD_CASES])
def test_bounded_in_a_child_process(tmp_path, make):
    path = make(tmp_path)
    for command in (["validate", path], ["train", path, "--runs-dir", tmp_path / "runs"]):
        code, output, seconds, peak = _run_child(command, tmp_path)
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], output[:2000]
        assert seconds < CHILD_SECONDS, f"{seconds:.1f} s"
        assert peak < PEAK_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
    assert not (tmp_path / "runs").exists()


