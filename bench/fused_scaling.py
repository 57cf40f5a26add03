"""How a fused group's training throughput grows with its size K, and what each member costs in
device memory: the point past which a larger group no longer trains more model-steps per second.

For each K, one fused group of the sweep's first K runs (the seeds are repeated past the sweep's own
runs: seeds 0, 1, 2, ...) trains `--epochs` epochs through training.train_group, in this process;
the table gives the fastest training epoch after the first (the stepper alone: no evaluation, no
checkpoints), model-steps per second (K x steps / seconds), the throughput against K = 1, and on a
GPU the peak memory torch allocated during the group and that peak less the data, per member.
With --profile, the group's last epoch is profiled instead of timed (torch.profiler): CPU and GPU
time per step, and kernels per step (on a GPU the launches; on a CPU the aten operations that
compute, views and allocations left out); --ops N adds the N costliest operations (the matrix
multiplies are aten::mm, addmm, baddbmm and bmm).

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
    parser.add_argument("--profile", action="store_true", help="profile each group's last epoch (then give at least 3 epochs)")
    parser.add_argument("--ops", type=int, default=0, help="with --profile: also print the N operations that took the most CPU time, per step")
    args = parser.parse_args()

    import torch

    from actexp import training
    from actexp.data import load_data
    from actexp.stepper import steps_per_epoch
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
    profiled: list[str] = []
    original = training.train_epoch

    def timed_epoch(stepper, *a, **kw):
        if args.profile and len(epoch_seconds) == args.epochs - 1:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
                result = original(stepper, *a, **kw)
            profiled.append(per_step(prof, stepper.steps_per_epoch(), on_gpu))
            if args.ops:
                top_operations(prof, stepper.steps_per_epoch(), stepper.k, args.ops)
            return result
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = original(stepper, *a, **kw)  # ends in .tolist(): the device has finished the epoch
        epoch_seconds.append(time.perf_counter() - start)
        return result

    training.train_epoch = timed_epoch
    load = os.getloadavg()
    print(f"{Path(args.sweep).name} ({', '.join(args.set) or 'as configured'}), {configs[0].data.dataset.name}, device {device}, "
          f"{torch.get_num_threads()} threads; {args.epochs} epochs per group; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'K':>5} {'epoch s':>8} {'steps/s':>9} {'vs K=1':>7} {'peak MB':>8} {'MB/member':>10}"
          + ("   per step (profiled): CPU ms, GPU ms, kernels" if args.profile else ""))
    single = None  # K = 1's model-steps per second, when 1 is among the sizes
    for k in ks:
        epoch_seconds.clear()
        profiled.clear()
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
        if k == 1:
            single = rate
        versus = f"{rate / single:6.1f}x" if single else f"{'-':>7}"
        if on_gpu:
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            memory = f"{peak:8.0f} {(peak - data_bytes / 2**20) / k:10.2f}"
        else:
            memory = f"{'-':>8} {'-':>10}"
        print(f"{k:5d} {seconds:8.3f} {rate:9.0f} {versus} {memory}" + (f"   {profiled[0]}" if profiled else ""), flush=True)


# aten operations that compute nothing (views, allocations, metadata)
NOT_COMPUTING = {
    "aten::view", "aten::as_strided", "aten::select", "aten::slice", "aten::unsqueeze", "aten::expand", "aten::transpose",
    "aten::t", "aten::split", "aten::split_with_sizes", "aten::unbind", "aten::reshape", "aten::_reshape_alias", "aten::empty",
    "aten::empty_strided", "aten::empty_like", "aten::detach", "aten::alias", "aten::permute", "aten::narrow", "aten::squeeze",
    "aten::flatten", "aten::resolve_conj", "aten::resolve_neg", "aten::to", "aten::lift_fresh", "aten::result_type", "aten::_unsafe_view",
}
LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"}


def top_operations(prof, steps: int, k: int, n: int) -> None:
    """The n operations with the most self CPU time: ms per step and per member-step, and share."""
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages)
    print(f"      K={k}, the {n} costliest operations: {'ms/step':>8} {'ms/member-step':>15} {'share':>6}")
    for e in averages[:n]:
        ms = e.self_cpu_time_total / 1e3 / steps
        print(f"      {e.key[:40]:40} {ms:8.2f} {ms / k:15.3f} {e.self_cpu_time_total / total:6.1%}")


def per_step(prof, steps: int, on_gpu: bool) -> str:
    events = prof.events()
    if on_gpu:
        kernels = sum(e.name in LAUNCHES for e in events)
    else:
        kernels = sum(e.name.startswith("aten::") and e.name not in NOT_COMPUTING and not e.cpu_children for e in events)
    averages = prof.key_averages()
    cpu = averages.self_cpu_time_total / 1e3
    gpu = sum(getattr(e, "self_device_time_total", 0) for e in averages) / 1e3
    return f"{cpu / steps:6.2f} {gpu / steps:6.2f} {kernels / steps:5.0f}"


if __name__ == "__main__":
    main()
