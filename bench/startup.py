"""Start-up time of `actexp train` and `actexp eval`, each in a fresh process as a user runs them.

  train  `actexp train CONFIG train.epochs=1`: seconds from the command to the start of its first
         epoch (when the epoch line appears, less the seconds that line says the epoch took), then
         the whole command's wall time (the rest: the test evaluation, model.pt and curves.png).
  eval   `actexp eval RUN` on the run the first round trained: the whole command's wall time.
  torch  inside a fresh `python -c`: seconds to `import torch`, then to make a first optimizer
         (torch.optim then imports torch._dynamo): the floor of any command that trains, before
         actexp does anything (a process's start and exit add to it; they are not counted here).

Prints each round's figures, their medians, and `uptime` before and after (the machine is shared:
compare figures from one invocation). `--baseline DIR` measures another checkout (e.g. the commit
before a change: `git archive COMMIT | tar -x -C DIR`) in the same rounds, alternating with this
one, and prints the ratios. Run it from the repository root:

    ACTEXP_DATA=/tmp/data python bench/startup.py --rounds 5 [--baseline /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^epoch +1 .* ([0-9.]+)s( \*)?$")


def actexp(*args: str) -> list[str]:
    return [sys.executable, "-m", "actexp", *args]


def environment(repo: Path) -> dict:
    """`repo`'s actexp, whatever is installed; a pipe, not a terminal (no progress bar); and
    bytecode cached as an installed package's is (PYTHONDONTWRITEBYTECODE, set on some machines,
    would compile actexp's modules from source in every process)."""
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_train(repo: Path, config: str, runs_dir: Path) -> tuple[float, float, float]:
    """(seconds to the first epoch's start, the first epoch's own seconds, the command's wall time)."""
    start = time.perf_counter()
    process = subprocess.Popen(actexp("train", config, "train.epochs=1", "--runs-dir", str(runs_dir)), cwd=repo, env=environment(repo),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = epoch = None
    output = []
    for line in process.stdout:
        output.append(line)
        match = EPOCH_LINE.match(line.strip())
        if match and first is None:
            epoch = float(match.group(1))
            first = time.perf_counter() - start - epoch
    process.wait()
    wall = time.perf_counter() - start
    if process.returncode != 0 or first is None:
        sys.exit(f"train failed ({process.returncode}):\n{''.join(output)}")
    return first, epoch, wall


def time_command(repo: Path, command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=environment(repo), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return time.perf_counter() - start


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(repo: Path, config: str, runs: Path) -> tuple[float, ...]:
    """One round in `repo`: (to the first epoch, that epoch, train's wall time, eval, import torch, a first optimizer)."""
    first, epoch, wall = time_train(repo, config, runs)
    run = sorted(runs.rglob("summary.json"))[0].parent
    evaluate = time_command(repo, actexp("eval", str(run)))
    torch, optimizer = torch_floor(repo)
    return first, epoch, wall, evaluate, torch, optimizer


FLOOR = """
import time
start = time.perf_counter()
import torch
imported = time.perf_counter()
torch.optim.SGD([torch.zeros(1, requires_grad=True)])
print(imported - start, time.perf_counter() - imported)
"""


def torch_floor(repo: Path) -> tuple[float, float]:
    """(seconds to import torch, then to make a first optimizer), measured inside a fresh process."""
    result = subprocess.run([sys.executable, "-c", FLOOR], cwd=repo, env=environment(repo), capture_output=True, text=True, check=True)
    torch, optimizer = map(float, result.stdout.split())
    return torch, optimizer


def describe(figures) -> str:
    first, epoch, wall, evaluate, torch, optimizer = figures
    return (f"train: first epoch starts {first:.2f} s (the epoch {epoch:.2f} s, the command {wall:.2f} s); eval {evaluate:.2f} s; "
            f"in a bare process: import torch {torch:.2f} s, then a first optimizer {optimizer:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/relu_xavier.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in the same rounds")
    args = parser.parse_args()

    trees = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    print("before:", uptime())
    rows = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            # Alternate which tree goes first, so that load from elsewhere slows both alike.
            for name in (list(trees) if round_ % 2 == 0 else list(trees)[::-1]):
                figures = measure(trees[name], args.config, Path(tmp) / name)
                rows[name].append(figures)
                print(f"round {round_ + 1}, {name}: {describe(figures)}", flush=True)
    print("after: ", uptime())
    medians = {name: [statistics.median(column) for column in zip(*figures)] for name, figures in rows.items()}
    for name, median in medians.items():
        print(f"median of {args.rounds}, {name} ({trees[name]}): {describe(median)}")
    if args.baseline:
        this, base = medians["this"], medians["baseline"]
        print(f"baseline / this: to the first epoch {base[0] / this[0]:.2f}x, train's wall time {base[2] / this[2]:.2f}x, eval {base[3] / this[3]:.2f}x")


if __name__ == "__main__":
    main()
