"""One sweep trained solo and fused, side by side in one script: wall time, model-steps per second,
peak memory, time per model-step against the GEMM bound, and how far each fused run's figures are
from its solo run's.

Variants (each in a fresh child process, timed from its start, so each pays its own imports):

  solo-jN    `actexp sweep --no-fuse --jobs N` (without the report): every run alone, N worker
             processes
  fused-jN   `actexp sweep --jobs N`, the default: fused groups, the runs shared evenly between
             the N workers, the costliest group first
  ...tT      (a suffix, e.g. fused-j1t2) train.threads=T instead of the default (auto: one thread)

Rounds alternate the order of the variants, so that a machine shared with other work slows them
alike; the table gives each variant's best and median round and the ratio to solo-j2 per round.
Real MNIST is used when $ACTEXP_DATA holds it (the configs say which dataset).

    ACTEXP_DATA=/tmp/data python bench/sweep_speed.py configs/sweeps/activation_x_init.yaml \\
        --seeds 0,1,2 --set train.epochs=3 --rounds 2

--solo-src DIR runs the solo variants with the actexp of another checkout (the previous trainer,
say): the equivalence columns then compare fused runs with that version's solo runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- children


def child(args) -> None:
    """Train the sweep one way into args.runs_dir, as `actexp sweep` does; print a JSON line with
    the peak memory and the CPU time of every process."""
    from actexp.sweep import run_sweep

    kind, spec = args.child.split("-")
    workers, _, threads = spec[1:].partition("t")
    overrides = list(args.set) + ([f"train.threads={threads}"] if threads else [])
    run_sweep(args.sweep, overrides, seeds=args.seeds, runs_dir=args.runs_dir, jobs=int(workers), report=False, fused=kind == "fused")
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(json.dumps({
        "peak_rss_mb": max(u.ru_maxrss for u in usage) / 1024,  # the largest process's
        "cpu_seconds": sum(u.ru_utime + u.ru_stime for u in usage),  # every process's, imports included
    }))


def gemm_child(args) -> None:
    """This machine's matrix-multiply rate (FLOP/s) with 1 and with all cores' threads."""
    import torch

    rates = {}
    for threads in sorted({1, args.cores}):
        torch.set_num_threads(threads)
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        for _ in range(3):
            a @ b
        best = math.inf
        for _ in range(10):
            tick = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - tick)
        rates[threads] = 2 * 2048**3 / best
    print(json.dumps(rates))


# ----------------------------------------------------------------------------- the parent


def run_child(args, variant: str, runs_dir: Path, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--runs-dir", str(runs_dir), "--cores", str(args.cores), args.sweep]
    command += [f"--set={s}" for s in args.set] + (["--seeds", ",".join(map(str, args.seeds))] if args.seeds else [])
    tick = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if out.returncode:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
    return {"wall": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def shape(args):
    """(runs, model-steps, GEMM FLOPs per model-step) of the sweep."""
    sys.path.insert(0, str(REPO))
    from actexp.data import load_data
    from actexp.stepper import steps_per_epoch
    from actexp.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.set, seeds=args.seeds)
    steps, flops = 0, []
    sizes = {}
    for run in sweep.runs:
        config = run.config
        key = json.dumps([str(config.data)])
        if key not in sizes:
            data = load_data(config.data, "cpu")
            sizes[key] = (len(data.y_train), data.n_features, data.n_classes)
        n, features, classes = sizes[key]
        per_epoch = steps_per_epoch(n, config.train.batch_size, config.model.batch_norm)
        steps += per_epoch * config.train.epochs
        pieces = config.model.activation.params["k"] if config.model.activation.name == "maxout" else 1
        widths = list(config.model.hidden)
        ins, outs = [features] + widths, [w * pieces for w in widths] + [classes]
        products = [i * o for i, o in zip(ins, outs)]
        # forward and weight gradient for every layer, input gradient for all but the first
        flops.append(config.train.batch_size * 2 * (2 * sum(products) + sum(products[1:])))
    return sweep, len(sweep.runs), steps, statistics.mean(flops)


def compare(fused_dir: Path, solo_dir: Path) -> list[dict]:
    from actexp.runs import find_runs, read_history, read_summary

    def by_name(root):
        found = {}
        for folder in find_runs(root):
            summary = read_summary(folder)
            found[summary["name"]] = (summary, [r for r in read_history(folder) if r["epoch"] > 0])
        return found

    fused, solo = by_name(fused_dir), by_name(solo_dir)
    rows = []
    for name in sorted(set(fused) & set(solo)):
        (fs, fh), (ss, sh) = fused[name], solo[name]
        if not fh or not sh:
            rows.append({"name": name, "status": (fs["status"], ss["status"])})
            continue
        rows.append({
            "name": name,
            "status": (fs["status"], ss["status"]),
            "val_acc_diff": 100 * abs(fh[-1]["val_acc"] - sh[-1]["val_acc"]),  # points
            "loss1_rel": abs(fh[0]["train_loss"] - sh[0]["train_loss"]) / abs(sh[0]["train_loss"]),
            "weights_equal": _same_weights(fused_dir, solo_dir, name),
        })
    return rows


def _same_weights(fused_dir, solo_dir, name) -> bool | None:
    import torch

    paths = [next(iter(sorted(Path(root).rglob(f"{name}/*/checkpoints/last.pt"))), None) for root in (fused_dir, solo_dir)]
    if None in paths:
        return None
    a, b = (torch.load(p, weights_only=True)["model"] for p in paths)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default=str(REPO / "configs/sweeps/activation_x_init.yaml"))
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run (e.g. train.epochs=3)")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--variants", default="solo-j2,fused-j2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    parser.add_argument("--solo-src", type=Path, default=REPO, help="the actexp checkout the solo variants run (default: this one)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: a temporary folder, removed)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.set = [s for s in args.set if s]
    if args.child == "gemm":
        return gemm_child(args)
    if args.child:
        return child(args)

    sweep, runs, steps, flops = shape(args)
    variants = args.variants.split(",")
    root = args.keep or Path(tempfile.mkdtemp(prefix="actexp-sweep-speed-"))
    print(f"sweep {sweep.name}: {runs} runs, {steps:,} model-steps, {flops / 1e9:.3f} GFLOP of matmuls per model-step; "
          f"{args.cores} cores; solo from {args.solo_src}")
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min)")
    gemm = json.loads(subprocess.run([sys.executable, __file__, "--child", "gemm", "--cores", str(args.cores)], capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)}).stdout)
    rate = max(gemm.values())
    bound = flops / rate  # seconds per model-step if every core did nothing but large matmuls
    print("GEMM rate: " + ", ".join(f"{float(v) / 1e9:.0f} GFLOP/s with {k} thread(s)" for k, v in gemm.items())
          + f"; bound {bound * 1e3:.3f} ms per model-step")
    results = {v: [] for v in variants}
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]
        for variant in order:
            runs_dir = root / f"{variant}-{round_}"
            src = args.solo_src if variant.startswith("solo") else REPO
            result = run_child(args, variant, runs_dir, src)
            result["load"] = os.getloadavg()[0]
            results[variant].append(result)
            print(f"  round {round_ + 1} {variant:10s} {result['wall']:7.1f} s wall {result['cpu_seconds']:7.1f} s CPU   "
                  f"peak RSS {result['peak_rss_mb']:6.0f} MB   load {result['load']:.2f}", flush=True)
            if round_ < args.rounds - 1:  # the last round's folders are compared below
                shutil.rmtree(runs_dir, ignore_errors=True)

    reference = "solo-j2" if "solo-j2" in results else variants[0]
    print()
    print("wall: best and median round; steps/s and ms/step: model-steps in the best round; x GEMM: its ms/step over the")
    print("GEMM bound; CPU ms/step: CPU time of every process over model-steps (the best round); speedup: " + reference + "'s wall")
    print("over this variant's, round by round (each round runs the variants back to back)")
    print(f"{'variant':11s} {'best s':>7s} {'median s':>9s} {'steps/s':>8s} {'ms/step':>8s} {'x GEMM':>7s} {'CPU ms/step':>12s} {'peak MB':>8s}  speedup")
    for variant, rows in results.items():
        walls = [r["wall"] for r in rows]
        best = min(rows, key=lambda r: r["wall"])
        ratios = [results[reference][i]["wall"] / r["wall"] for i, r in enumerate(rows)]
        print(f"{variant:11s} {best['wall']:7.1f} {statistics.median(walls):9.1f} {steps / best['wall']:8.0f} {best['wall'] / steps * 1e3:8.3f} "
              f"{best['wall'] / steps / bound:7.1f} {best['cpu_seconds'] / steps * 1e3:12.3f} {max(r['peak_rss_mb'] for r in rows):8.0f}  "
              + ", ".join(f"{x:.2f}x" for x in ratios))
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    last = args.rounds - 1
    fused_variants = [v for v in variants if v.startswith("fused")]
    solo_variants = [v for v in variants if v.startswith("solo")]
    if fused_variants and solo_variants:
        sys.path.insert(0, str(REPO))
        rows = compare(root / f"{fused_variants[0]}-{last}", root / f"{solo_variants[0]}-{last}")
        measured = [r for r in rows if "val_acc_diff" in r]
        print(f"\nfused ({fused_variants[0]}) vs solo ({solo_variants[0]}, from {args.solo_src}), {len(rows)} runs:")
        if measured:
            diffs = [r["val_acc_diff"] for r in measured]
            print(f"  final val accuracy: mean |difference| {statistics.mean(diffs):.3f} points, max {max(diffs):.3f}")
            print(f"  epoch-1 training loss: max relative difference {max(r['loss1_rel'] for r in measured):.2e}")
            print(f"  final weights bit-identical: {sum(r['weights_equal'] is True for r in measured)} of {len(measured)}")
            for r in sorted(measured, key=lambda r: -r["val_acc_diff"])[:5]:
                print(f"    {r['name']}: {r['val_acc_diff']:.3f} points, loss {r['loss1_rel']:.1e}")
        statuses = [r for r in rows if r["status"][0] != r["status"][1]]
        for r in statuses:
            print(f"  status differs: {r['name']}: fused {r['status'][0]}, solo {r['status'][1]}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"run folders kept in {root}")


if __name__ == "__main__":
    main()
