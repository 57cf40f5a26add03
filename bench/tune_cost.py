"""What a tuned sweep costs beside the same rows at a fixed learning rate: both sweeps run one after
the other with `actexp sweep` in child processes (each into a fresh runs folder, each paying its own
imports), with `uptime` before and after. Prints each sweep's wall time, their ratio, and the epochs
each trained (a pruned trial trains fewer), so the ratio can be read against the work done.

    ACTEXP_DATA=/tmp/data python bench/tune_cost.py \\
        configs/sweeps/activations_tuned.yaml configs/sweeps/activations_fixed_lr.yaml --keep runs-bench

--keep DIR keeps both sweep folders in DIR (to read their tables and figures); by default they go
in a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def sweep(path: str, runs: Path, extra: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "actexp", "sweep", path, "--runs-dir", str(runs), "--quiet", *extra], cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{path}: actexp sweep exited with {done.returncode}")
    epochs = 0
    for summary in runs.rglob("summary.json"):
        epochs += json.loads(summary.read_text()).get("epochs_completed") or 0
    return seconds, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tuned")
    parser.add_argument("fixed")
    parser.add_argument("--keep", type=Path, help="keep the sweep folders here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for both sweeps")
    args = parser.parse_args()
    extra = [x for item in args.overrides for x in ("--set", item)]
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        print(f"before: {uptime()}", flush=True)
        fixed_s, fixed_epochs = sweep(args.fixed, root / "fixed", extra)
        tuned_s, tuned_epochs = sweep(args.tuned, root / "tuned", extra)
        print(f"after:  {uptime()}")
    print(f"fixed lr: {fixed_s:7.1f} s, {fixed_epochs:5d} run-epochs")
    print(f"tuned:    {tuned_s:7.1f} s, {tuned_epochs:5d} run-epochs (trials and confirmation runs)")
    print(f"ratio:    {tuned_s / fixed_s:.2f}x the time, {tuned_epochs / fixed_epochs:.2f}x the epochs")


if __name__ == "__main__":
    main()
