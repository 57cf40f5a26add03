"""How a fused group's training throughput grows with its size K, and what each member costs in
device memory: the point past which a larger group no longer trains more model-steps per second.

For each K, one fused group of the sweep's first K runs (the seeds are repeated past the sweep's own
runs: seeds 0, 1, 2, ...) trains `--epochs` epochs through training.train_group, in this process;
the table gives the fastest training epoch after the first (the stepper alone: no evaluation, no
checkpoints), model-steps per second (K x steps / seconds), the throughput against K = 1, and on a
GPU the peak memory torch allocated during the group and that peak less the data, per member.

    ACTEXP_DATA=/tmp/data python bench/fused_scaling.py --set train.device=cuda --ks 1,2,4,8,16,32,54,108
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default=str(REPO / "configs/sweeps/activation_x_init.yaml"))
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run (e.g. train.device=cuda)")
    parser.add_argument("--ks", default="1,2,4,8,16,32,54", help="group sizes, comma-separated")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per group (the first is a warm-up)")
    args = parser.parse_args()

    import torch

    from actexp import training
    from actexp.data import load_data
    from actexp.fused import steps_per_epoch
    from actexp.sweep import load_sweep

    ks = [int(k) for k in args.ks.split(",")]
    base = load_sweep(args.sweep, args.set + [f"train.epochs={args.epochs}", "train.checkpoint=none"], seeds=[0])
    per_seed = len(base.runs)
    sweep = load_sweep(args.sweep, args.set + [f"train.epochs={args.epochs}", "train.checkpoint=none"],
                       seeds=list(range(math.ceil(max(ks) / per_seed))))
    configs = [run.config for run in sweep.runs]
    device = training.resolve_device(configs[0].train.device)
    on_gpu = device.type == "cuda"
    data = load_data(configs[0].data, device)
    data_bytes = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test))
    del data

    epoch_seconds: list[float] = []
    original = training.train_epoch

    def timed_epoch(*a, **kw):
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = original(*a, **kw)  # ends in .tolist(): the device has finished the epoch
        epoch_seconds.append(time.perf_counter() - start)
        return result

    training.train_epoch = timed_epoch
    load = os.getloadavg()
    print(f"{Path(args.sweep).name} ({', '.join(args.set) or 'as configured'}), {configs[0].data.dataset.name}, device {device}, "
          f"{torch.get_num_threads()} threads; {args.epochs} epochs per group; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'K':>5} {'epoch s':>8} {'steps/s':>9} {'vs K=1':>7} {'peak MB':>8} {'MB/member':>10}")
    single = None
    for k in ks:
        epoch_seconds.clear()
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with tempfile.TemporaryDirectory() as runs_dir:
            results = training.train_group(configs[:k], runs_dir=runs_dir)
        failed = [r for r in results if not hasattr(r, "status")]
        if failed:
            raise SystemExit(f"K={k}: {failed[0]}")
        steps = steps_per_epoch(results[0].summary["data"]["n_train"], configs[0].train.batch_size, configs[0].model.batch_norm)
        seconds = min(epoch_seconds[1:] or epoch_seconds)
        rate = k * steps / seconds
        single = single or rate / k  # per member, at the first K given (1 by default)
        if on_gpu:
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            memory = f"{peak:8.0f} {(peak - data_bytes / 2**20) / k:10.2f}"
        else:
            memory = f"{'-':>8} {'-':>10}"
        print(f"{k:5d} {seconds:8.3f} {rate:9.0f} {rate / single:6.1f}x {memory}", flush=True)


if __name__ == "__main__":
    main()
