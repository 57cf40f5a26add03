"""What running a sweep through Ray costs on one machine: the same sweep with `--jobs N` (worker
processes) and with `--backend ray` (a Ray instance of this machine, N CPUs, one per run), timed
side by side, plus Ray's own start-up. Both give each run 1 torch thread when N equals the cores.

Each sweep is a fresh `actexp sweep` command in its own runs folder, so every figure includes what
a user waits for: imports, (for Ray) starting the instance, the storage probe, worker processes,
the training, the report. The two are run alternately `--repeats` times; the machine's load
average is printed before and after (a shared machine's other work shows there).

    ACTEXP_DATA=/tmp/data python bench/ray_overhead.py            # real MNIST if it is there
    python bench/ray_overhead.py --config configs/relu_xavier.yaml --grid model.activation=relu,tanh,gelu,elu --seeds 3 --set train.epochs=2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def sweep_seconds(args, extra: list[str], runs_dir: Path) -> float:
    command = [sys.executable, "-m", "actexp", "sweep", args.config, "--runs-dir", str(runs_dir), "--quiet",
               *[f"--grid={g}" for g in args.grid], "--seeds", args.seeds, *[f"--set={s}" for s in args.set], *extra]
    tick = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - tick
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds


RAY_START = """
import time
tick = time.perf_counter()
import ray
imported = time.perf_counter()
ray.init(num_cpus={cpus}, include_dashboard=False, logging_level="ERROR")
started = time.perf_counter()
ray.get(ray.remote(lambda: 1).remote())
first = time.perf_counter()
ray.shutdown()
print(imported - tick, started - imported, first - started, time.perf_counter() - first)
"""


def ray_start(cpus: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", RAY_START.format(cpus=cpus)], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/relu_xavier.yaml")
    parser.add_argument("--grid", action="append", default=None)
    parser.add_argument("--seeds", default="3")
    parser.add_argument("--set", action="append", default=None)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    args.grid = args.grid or ["model.activation=relu,tanh,gelu,elu"]
    args.set = args.set or ["train.epochs=2"]
    data = os.environ.get("ACTEXP_DATA", "(default data root)")
    print(f"sweep: {args.config} --grid {' --grid '.join(args.grid)} --seeds {args.seeds} --set {' --set '.join(args.set)}; data {data}")
    print(f"cores: {len(os.sched_getaffinity(0))}, jobs / Ray CPUs: {args.jobs}; load average before: {load()}")

    timings = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            timings["local"].append(sweep_seconds(args, ["--jobs", str(args.jobs)], Path(tmp) / f"local{i}"))
            # --jobs caps Ray's runs at a time; without --address the sweep starts Ray on this machine (all its cores)
            timings["ray"].append(sweep_seconds(args, ["--backend", "ray", "--jobs", str(args.jobs)], Path(tmp) / f"ray{i}"))
            print(f"  round {i + 1}: --jobs {args.jobs} {timings['local'][-1]:.1f} s, --backend ray {timings['ray'][-1]:.1f} s (load {load()})")
        runs = len(list((Path(tmp) / "local0").glob("*/*/*/summary.json")))
    starts = [ray_start(args.jobs) for _ in range(args.repeats)]
    local, remote = statistics.median(timings["local"]), statistics.median(timings["ray"])
    print(f"\n{runs} runs; median of {args.repeats}:")
    print(f"  --jobs {args.jobs}:          {local:7.1f} s  ({local / runs:.2f} s a run)")
    print(f"  --backend ray:      {remote:7.1f} s  ({remote / runs:.2f} s a run)")
    print(f"  ray / local:        {remote / local:7.2f}  (+{remote - local:.1f} s)")
    imported, init, first, shutdown = (statistics.median(s[i] for s in starts) for i in range(4))
    print(f"  Ray start-up:       import {imported:.1f} s + ray.init {init:.1f} s + first task {first:.1f} s; shutdown {shutdown:.1f} s")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
