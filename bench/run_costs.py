"""Where a fused group's (or a solo run's) time goes besides the training steps, in one process, as
a sweep's worker trains it (curves.png is the driver's): the group trains once with its phases
timed, then curves.png is drawn a few times on its own, as the driver draws it.

Phases (seconds of this thread's CPU, summed over the members, so that other processes on the
machine do not count): preparing the members (folders, models, optimizers: the first optimizer
imports torch._dynamo, about a second once per process), the training steps, evaluation
(validation each epoch, test at the end), diagnostics (the epoch-0 record and each epoch's probe),
checkpoint snapshots (the writer thread's saving is left out: it is off this thread), model.pt,
metrics files; "other" is the rest (the stepper, retiring members, ...).

    ACTEXP_DATA=/tmp/data python bench/run_costs.py --members 27 --set train.epochs=3
"""

from __future__ import annotations

import argparse
import collections
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(module, name: str, totals: collections.Counter, label: str | None = None) -> None:
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label or name] += time.thread_time() - start

    setattr(module, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default=str(REPO / "configs/sweeps/activation_x_init.yaml"))
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run (e.g. train.epochs=3)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--members", type=int, default=27, help="the first N runs of the sweep, as one fused group (1: a solo run)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from actexp import diagnostics, plots, training
    from actexp.backends import keep_freed_memory
    from actexp.sweep import load_sweep

    torch.set_num_threads(args.threads)
    sweep = load_sweep(args.sweep, args.set + [f"train.threads={args.threads}"], seeds=[int(s) for s in args.seeds.split(",")])
    configs = [run.config for run in sweep.runs][: args.members]
    totals: collections.Counter = collections.Counter()
    for name in ("_prepare", "train_epoch", "evaluate", "save_weights", "write_metrics"):
        timed(training, name, totals)
    timed(training.Recorder, "keep", totals, "checkpoint snapshots")
    timed(diagnostics.Tracker, "epoch_zero", totals, "diagnostics")
    timed(diagnostics.StackedTracker, "end_epoch", totals, "diagnostics")
    keep_freed_memory()  # as a sweep's worker does
    with tempfile.TemporaryDirectory() as runs_dir:
        start = time.thread_time()
        training.train_group(configs, runs_dir=runs_dir, curves=False)
        total = time.thread_time() - start
    print(f"{len(configs)} member(s) of {Path(args.sweep).name} ({', '.join(args.set) or 'as configured'}), {args.threads} thread(s), "
          f"{configs[0].data.dataset.name}")
    for name, seconds in totals.most_common():
        print(f"  {name:<16} {seconds:6.2f} s  {seconds / total:5.1%}")
    other = total - sum(totals.values())
    print(f"  {'other':<16} {other:6.2f} s  {other / total:5.1%}\n  {'total':<16} {total:6.2f} s")

    records = [{"epoch": 0, "val_loss": 2.3, "val_acc": 0.1}] + [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 1 / (e + 1), "val_acc": 1 - 1.2 / (e + 1)} for e in range(1, 16)
    ]
    draws = []
    for _ in range(9):
        start = time.thread_time()
        plots.draw_run_curves(records, None, "relu_xavier (20261124-140209)", 7).savefig(io.BytesIO(), format="png")
        draws.append(time.thread_time() - start)
    print(f"curves.png of a 15-epoch run, drawn on its own: median {statistics.median(draws) * 1000:.0f} ms (9 draws, matplotlib already imported)")


if __name__ == "__main__":
    main()
