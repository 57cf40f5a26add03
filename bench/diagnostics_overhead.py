"""What per-layer diagnostics cost: a relu_xavier epoch (784-256-256-10 ReLU, Adam, batch 100) with
train.diagnostics on and off, side by side in one process.

The two are alternated (off-on, then on-off, ...) over several repeats so that load from other
processes falls on both alike; each timing is one whole epoch as the training loop runs it (the
training pass and the validation pass; with diagnostics, also the per-step gradient norms, the
weight snapshot and the probe batch). Prints the fastest and the median seconds of each and their
ratios; the bar is a ratio of at most 1.10. Uses real Fashion-MNIST when the data root holds it (ACTEXP_DATA), random
data of the same shape otherwise.

    python bench/diagnostics_overhead.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actexp.config import load_config  # noqa: E402
from actexp.data import Data, load_data  # noqa: E402
from actexp.diagnostics import Tracker  # noqa: E402
from actexp.errors import DatasetMissing  # noqa: E402
from actexp.model import build_model  # noqa: E402
from actexp.stepper import Member, Stepper  # noqa: E402
from actexp.evaluation import evaluate  # noqa: E402
from actexp.training import train_epoch  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "relu_xavier.yaml"


def fashion_mnist_or_random(config) -> tuple[Data, str]:
    try:
        return load_data(config.data, torch.device("cpu"), download=False), "real Fashion-MNIST"
    except DatasetMissing:
        g = torch.Generator().manual_seed(0)

        def split(n):
            return torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)

        return Data(*split(55_000), *split(5_000), *split(10_000), 784, 10), "random data of Fashion-MNIST's shape"


def one_epoch(config, data: Data, diagnostics: bool) -> float:
    """Seconds for epoch 1 of a fresh relu_xavier model, as the training loop runs it (a stepper of
    one member, as a solo run trains)."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.n_features, data.n_classes)
    dropout = torch.Generator().set_state(torch.get_rng_state())
    batch_order = torch.Generator().manual_seed(config.train.seed)
    tracker = Tracker(model, data.x_train, data.y_train, config.train.seed, config.train.batch_size) if diagnostics else None
    stepper = Stepper([Member(config, model, dropout, batch_order, tracker)], data)
    tick = time.perf_counter()
    train_epoch(stepper, 1)  # (the stepper's StackedTracker sums the gradient norms each step)
    evaluate(model, data.x_val, data.y_val)
    if stepper.tracker:
        stepper.tracker.end_epoch()  # the weight update and the probe pass, as the training loop asks
    return time.perf_counter() - tick


def epoch_zero_seconds(config, data: Data) -> float:
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.n_features, data.n_classes)
    tick = time.perf_counter()
    Tracker(model, data.x_train, data.y_train, config.train.seed, config.train.batch_size).epoch_zero()
    evaluate(model, data.x_val, data.y_val)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(CONFIG, ["data.dataset=fashion_mnist", "train.device=cpu"])
    data, source = fashion_mnist_or_random(config)
    print(f"relu_xavier epoch on {source}: {len(data.y_train)} train samples, batch {config.train.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {args.repeats} repeats")
    one_epoch(config, data, True)  # warm-up: allocator, kernels, lazy imports
    times = {False: [], True: []}
    for repeat in range(args.repeats):
        for diagnostics in ((False, True) if repeat % 2 == 0 else (True, False)):
            times[diagnostics].append(one_epoch(config, data, diagnostics))
        print(f"  repeat {repeat + 1}: off {times[False][-1]:.3f}s  on {times[True][-1]:.3f}s")
    # The fastest epoch is the one least disturbed by other processes; the median is shown beside it.
    for label, pick in (("fastest", min), ("median", statistics.median)):
        off, on = pick(times[False]), pick(times[True])
        print(f"{label} epoch: diagnostics off {off:.3f}s, on {on:.3f}s; ratio on/off {on / off:.3f} (bar: <= 1.10)")
    print(f"once per run, the epoch-0 record: {epoch_zero_seconds(config, data):.3f}s")


if __name__ == "__main__":
    main()
