"""Seconds per training epoch of the relu_xavier network (784-256-256-10, Adam, batch 100) on
Fashion-MNIST-sized data, three ways in one process:

  (a) the canonical PyTorch recipe: torchvision dataset + ToTensor() + Normalize through a DataLoader;
  (b) actexp's trainer (`actexp.train`, one config, defaults otherwise but (a)'s thread count);
  (c) the GEMM bound: the epoch's forward+backward matrix-multiply FLOPs divided by this machine's
      measured large-matmul FLOP/s (no optimizer, no elementwise work: a floor, not a target).

Real Fashion-MNIST is used when found (ACTEXP_DATA, or Debian's /usr/share/datasets/fashion-mnist),
same-shaped random data in the real IDX format otherwise. Each way runs `--epochs` epochs; the
fastest epoch after the first is reported (the first pays one-time costs). Usage:

    python bench/speed.py [--epochs 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

import actexp
from actexp.data import IMAGE_SETS, data_root, import_dataset

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN = 55_000  # the training split actexp uses: 60,000 minus the 5,000 validation samples
LAYERS = [(784, 256), (256, 256), (256, 10)]


def prepare_root() -> tuple[Path, str]:
    """A data root holding FashionMNIST/raw: the real data if available, random IDX files otherwise."""
    root = data_root()
    if (root / IMAGE_SETS["fashion_mnist"].folder / "train-images-idx3-ubyte").exists():
        return root, f"real Fashion-MNIST from {root}"
    tmp = Path(tempfile.mkdtemp(prefix="actexp-bench-"))
    if DEBIAN_FASHION.is_dir():
        import_dataset("fashion_mnist", DEBIAN_FASHION, tmp)
        return tmp, f"real Fashion-MNIST from {DEBIAN_FASHION}"
    raw = tmp / IMAGE_SETS["fashion_mnist"].folder
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        header = lambda magic, *dims: b"".join(x.to_bytes(4, "big") for x in (magic, *dims))  # noqa: E731
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header(2051, n, 28, 28) + images.numpy().tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(header(2049, n) + labels.numpy().tobytes())
    return tmp, "random data of Fashion-MNIST's shape (real Fashion-MNIST not found)"


def canonical_epochs(root: Path, epochs: int, device: str) -> list[float]:
    """(a) The recipe of pytorch/examples and most tutorials."""
    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    dataset = datasets.FashionMNIST(str(root), train=True, transform=transform)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(N_TRAIN)), batch_size=100, shuffle=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = []
    for _ in range(epochs):
        tick = time.perf_counter()
        model.train()
        total = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        seconds.append(time.perf_counter() - tick)
    return seconds


def actexp_epochs(root: Path, epochs: int, device: str) -> list[float]:
    """(b) actexp's trainer on configs/relu_xavier.yaml, switched to Fashion-MNIST, with the thread
    count (a) computes with (torch's default; actexp's own default is one thread, see
    docs/shared-machines.md)."""
    config = actexp.load_config(
        Path(__file__).parent.parent / "configs" / "relu_xavier.yaml",
        ["data.dataset=fashion_mnist", f"data.root={root}", f"train.epochs={epochs}", f"train.device={device}",
         f"train.threads={torch.get_num_threads()}"],
    )
    with tempfile.TemporaryDirectory() as runs:
        run = actexp.train(config, runs_dir=runs)
    return [r["seconds"] for r in run.history]


def matmul_flops_per_second(device: str, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tick = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - tick)
    return 2 * n**3 / best


def epoch_flops() -> float:
    """Forward 2·in·out per sample and layer; backward the same for the weight gradient, and again
    for the input gradient of every layer but the first (the data needs none)."""
    per_sample = sum(2 * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(LAYERS))
    return per_sample * N_TRAIN


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    root, source = prepare_root()
    print(f"data: {source}; device {args.device}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    a = min(canonical_epochs(root, args.epochs, args.device)[1:] or [float("nan")])
    b = min(actexp_epochs(root, args.epochs, args.device)[1:] or [float("nan")])
    flops = matmul_flops_per_second(args.device)
    c = epoch_flops() / flops
    print(f"(a) canonical DataLoader recipe : {a:7.3f} s/epoch")
    print(f"(b) actexp trainer              : {b:7.3f} s/epoch   (a)/(b) = {a / b:5.2f}x faster")
    print(f"(c) GEMM bound                  : {c:7.3f} s/epoch   (b)/(c) = {b / c:5.2f}x the bound "
          f"({epoch_flops() / 1e9:.1f} GFLOP at {flops / 1e9:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
