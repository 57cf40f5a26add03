"""Epoch time of one training run on a quiet machine and on one shared with another busy process,
for several thread settings, side by side in one script.

On a machine with few cores, torch's OpenMP threads spin while they wait for each other; when
another process holds a core, a thread that spins for a core nobody gives it stalls the whole
matrix multiply. Each variant trains `configs/relu_xavier.yaml` on Fashion-MNIST in a fresh child
process (thread settings must be in place before torch loads), timed per epoch from its metrics:

  quiet       nothing else runs
  busy-loop   one Python `while True: pass` process runs beside it
  torch       a second training (torch's defaults: every core, active waiting) runs beside it

Variants (child environment):

  actexp      what `actexp train` does by default (train.threads: auto, one thread)
  adaptive    train.threads: adaptive (the governor: the cores other processes leave free)
  t<N>        N torch threads, libgomp's defaults (t2 on 2 cores: torch's own default)
  passive     torch's default threads with OMP_WAIT_POLICY=PASSIVE
  spin<N>     torch's default threads with GOMP_SPINCOUNT=N

Rounds alternate the order of the variants, so that load from elsewhere slows them alike. Prints,
per variant and contention, the median epoch time over the rounds with the fastest and slowest
round, its ratio to the quiet time of `t<cores>` (torch's default), and whether each variant's metrics equal those of the other variants with the
same thread count.

    ACTEXP_DATA=/tmp/data python bench/contention.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTENTIONS = ("quiet", "busy-loop", "torch")


def variant_env(name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "ACTEXP_THREADS")}
    if name == "adaptive":
        env["ACTEXP_THREADS"] = "adaptive"
    elif name.startswith("t"):
        env["ACTEXP_THREADS"] = name[1:]
    elif name == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env["ACTEXP_THREADS"] = "torch"
    elif name.startswith("spin"):
        env["GOMP_SPINCOUNT"] = name[4:]
        env["ACTEXP_THREADS"] = "torch"
    elif name != "actexp":
        raise SystemExit(f"unknown variant {name}")
    return env


def child(args) -> None:
    """Train in this process with the thread settings the environment asks for; print a JSON line."""
    import actexp
    from actexp.config import load_config

    overrides = [f"data.dataset={args.dataset}", f"train.epochs={args.epochs}"]
    threads = os.environ.get("ACTEXP_THREADS")
    if threads == "torch":  # torch's own default: a thread per core
        threads = str(len(os.sched_getaffinity(0)))
    if threads:
        overrides.append(f"train.threads={threads}")
    config = load_config(REPO / "configs" / "relu_xavier.yaml", overrides)
    run = actexp.train(config, runs_dir=args.runs_dir)
    assert run.status == "completed", run.summary.get("error")
    seconds = [r["seconds"] for r in run.history]
    print(json.dumps({"seconds": seconds, "threads": run.summary["threads"], "used": run.summary["thread_policy"]["used"], "val_acc": [r["val_acc"] for r in run.history]}))


def contender(kind: str, args):
    if kind == "quiet":
        return None
    if kind == "busy-loop":
        code = "while True: pass"
    else:  # another torch training, with torch's own defaults, for as long as it is needed
        code = (
            "import torch\n"
            "x = torch.randn(100, 784); w = [torch.randn(784, 256, requires_grad=True), torch.randn(256, 256, requires_grad=True)]\n"
            "while True:\n"
            "    h = x\n"
            "    for m in w: h = torch.relu(h @ m)\n"
            "    h.sum().backward()\n"
        )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(variant: str, contention: str, args, tmp: Path) -> dict:
    other = contender(contention, args)
    try:
        if other is not None:
            time.sleep(1.0)  # let it start (and import torch)
        runs_dir = tempfile.mkdtemp(dir=tmp)
        cmd = [sys.executable, __file__, "--child", "--runs-dir", runs_dir, "--epochs", str(args.epochs), "--dataset", args.dataset]
        done = subprocess.run(cmd, env=variant_env(variant), capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"{variant}/{contention} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if other is not None:
            other.kill()
            other.wait()
    # The first epoch pays warm-up (page faults, allocator): the later ones are the steady state.
    result["epoch"] = statistics.median(result["seconds"][1:] or result["seconds"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="actexp,adaptive,t2")
    parser.add_argument("--contentions", default=",".join(CONTENTIONS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    variants = args.variants.split(",")
    contentions = args.contentions.split(",")
    cores = os.cpu_count()
    print(f"{cores} cores; load before: {os.getloadavg()}; {args.epochs} epochs of relu_xavier on {args.dataset}, {args.rounds} rounds")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for contention in contentions:
                for variant in order:
                    r = measure(variant, contention, args, Path(tmp))
                    results.setdefault((variant, contention), []).append(r)
                    print(f"  round {round_ + 1} {variant:>10} {contention:>9}: {r['epoch']:.2f} s/epoch ({r['threads']} threads)", flush=True)
    print(f"load after: {os.getloadavg()}")
    base = statistics.median(r["epoch"] for r in results[(f"t{cores}", "quiet")]) if (f"t{cores}", "quiet") in results else None
    print(f"\nmedian epoch time over the rounds [fastest–slowest round] (x its median over {f't{cores}'} quiet's), n = {args.rounds} rounds")
    print(f"{'variant':>10} {'threads':>7} " + " ".join(f"{c:>30}" for c in contentions) + "   thread counts used")
    for variant in variants:
        cells = []
        for contention in contentions:
            epochs = [r["epoch"] for r in results[(variant, contention)]]
            epoch = statistics.median(epochs)
            ratio = f" ({epoch / base:.2f}x)" if base else ""
            cells.append(f"{epoch:.2f} s [{min(epochs):.2f}–{max(epochs):.2f}]{ratio}")
        used = sorted({t for c in contentions for r in results[(variant, c)] for t in r["used"]})
        print(f"{variant:>10} {results[(variant, contentions[0])][0]['threads']:>7} " + " ".join(f"{c:>30}" for c in cells) + f"   {used}")
    # Fixed counts: identical at equal counts is the promise; across counts, and for the governor
    # (which changes count as the machine's load changes), it is what this machine's BLAS gives.
    by_used: dict = {}
    for rs in results.values():
        for r in rs:
            by_used.setdefault(tuple(r["used"]), set()).add(json.dumps(r["val_acc"]))
    for used, accs in sorted(by_used.items()):
        print(f"runs that used {list(used)} threads: metrics {'identical' if len(accs) == 1 else f'DIFFER ({len(accs)} distinct)'} across variants, contentions and rounds")
    every = set().union(*by_used.values())
    print(f"all runs: metrics {'identical' if len(every) == 1 else 'differ'} whatever thread counts they used")


if __name__ == "__main__":
    main()
