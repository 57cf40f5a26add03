"""Shared fixtures: small datasets written in each dataset's real on-disk layout, so that
torchvision's own readers (IDX for MNIST / Fashion-MNIST, pickles for CIFAR-100) run for real,
plus helpers to write configs and drive the CLI.

The images are learnable: each class lights a bright patch at its own place over a noisy
background, so a few epochs of a small MLP land far above chance.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from typer.testing import CliRunner

import actexp.plugins
from actexp.cli import app

# One intra-op thread: the fixture problems are tiny, and on a shared 2-core machine OpenMP's
# spinning worker threads make small runs up to 100x slower when other processes hold the cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once, no network needed

# Sizes of the fixture sets (small: the whole suite must stay fast on 2 CPU cores).
IDX_TRAIN, IDX_TEST = 600, 200
CIFAR_TRAIN, CIFAR_TEST = 1000, 300


# ----------------------------------------------------------------------------- file formats


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX (ubyte) file: magic 0x0000 08 <ndim>, big-endian dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim  # 2051 for (N, 28, 28) images, 2049 for (N,) labels
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def idx_images_labels(n: int, seed: int, noise: int = 35) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images and (n,) labels 0..9: class c lights a 7x7 patch at cell c of a
    4x4 grid, over uniform noise in 0..noise; noise 35 gives a pixel mean near MNIST's (0.1307),
    120 near Fashion-MNIST's (0.2860)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, noise + 1, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 4)
        images[i, r * 7 : r * 7 + 7, q * 7 : q * 7 + 7] = 255
    return images, labels.astype(np.uint8)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass
class IdxSet:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def files(self) -> dict[str, bytes]:
        arrays = (self.x_train, self.y_train, self.x_test, self.y_test)
        return {name: idx_bytes(a) for name, a in zip(IDX_FILES, arrays)}

    def write(self, folder: Path, gz: bool = False) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files().items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
        return folder


def make_idx_set(seed: int, noise: int = 35) -> IdxSet:
    x_train, y_train = idx_images_labels(IDX_TRAIN, seed, noise)
    x_test, y_test = idx_images_labels(IDX_TEST, seed + 1, noise)
    return IdxSet(x_train, y_train, x_test, y_test)


def cifar_images_labels(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """(n, 3072) uint8 rows (R, G, B planes of 32x32) and fine labels 0..99: class c lights a 3x3
    patch at cell c of a 10x10 grid, in all channels, over uniform noise centred near CIFAR-100's
    channel means."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 100
    rng.shuffle(labels)
    centre = np.array([128, 123, 111]).reshape(1, 3, 1, 1)
    images = (centre + rng.integers(-60, 61, size=(n, 3, 32, 32))).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 10)
        images[i, :, 1 + r * 3 : 4 + r * 3, 1 + q * 3 : 4 + q * 3] = 255
    return images.reshape(n, 3072), [int(c) for c in labels]


@dataclass
class CifarSet:
    x_train: np.ndarray  # (N, 3072) uint8, as in the pickles
    y_train: list[int]
    x_test: np.ndarray
    y_test: list[int]

    def files(self) -> dict[str, bytes]:
        def split(x, y, name):
            return pickle.dumps({"filenames": [f"{name}_{i}.png" for i in range(len(y))], "batch_label": name,
                                 "fine_labels": y, "coarse_labels": [c // 5 for c in y], "data": x}, protocol=2)

        meta = {"fine_label_names": [f"class_{i:02d}" for i in range(100)],
                "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}
        return {
            "train": split(self.x_train, self.y_train, "training batch 1 of 1"),
            "test": split(self.x_test, self.y_test, "testing batch 1 of 1"),
            "meta": pickle.dumps(meta, protocol=2),
        }

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files().items():
            (folder / name).write_bytes(content)
        return folder


def make_cifar_set(seed: int) -> CifarSet:
    x_train, y_train = cifar_images_labels(CIFAR_TRAIN, seed)
    x_test, y_test = cifar_images_labels(CIFAR_TEST, seed + 1)
    return CifarSet(x_train, y_train, x_test, y_test)


def accept_cifar_checksums(monkeypatch, folder: Path) -> None:
    """Replace torchvision's CIFAR-100 checksum table by the fixture files' md5s (the reader is
    torchvision's own; only the expected sums change)."""
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in ("train", "test", "meta")}
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(cls, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["meta"]})


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts on one thread, and a test that changes the count (a resume on another
    thread count) leaves the next one on one thread."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def sweeps_in_process(monkeypatch):
    """A sweep without --jobs trains in the test's own process, as on a one-core machine (its
    default is a worker process per core, each paying for its own torch import); tests of that
    default undo this."""
    import actexp.sweep

    monkeypatch.setattr(actexp.sweep, "cpu_count", lambda: 1)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Every test: no real download can start (mirrors point at a closed local port), the default
    data root is an empty temporary folder, and relative paths (runs/) land in tmp_path."""
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [UNREACHABLE])
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [UNREACHABLE])
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "url", UNREACHABLE + "cifar-100-python.tar.gz")
    monkeypatch.setenv("ACTEXP_DATA", str(tmp_path / "empty-data-root"))
    monkeypatch.delenv("ACTEXP_DEBUG", raising=False)
    # No plugin enabled, unless a test enables one (--plugin sets ACTEXP_PLUGINS; it is undone after the test).
    monkeypatch.delenv("ACTEXP_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    actexp.plugins.forget()


@pytest.fixture(scope="session")
def mnist_set() -> IdxSet:
    return make_idx_set(seed=1)


@pytest.fixture(scope="session")
def fashion_set() -> IdxSet:
    return make_idx_set(seed=11, noise=120)


@pytest.fixture(scope="session")
def cifar_set() -> CifarSet:
    return make_cifar_set(seed=21)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory, mnist_set, fashion_set, cifar_set) -> Path:
    """One data root in torchvision's layout holding all three fixture sets (read-only for tests)."""
    root = tmp_path_factory.mktemp("data")
    mnist_set.write(root / "MNIST" / "raw")
    fashion_set.write(root / "FashionMNIST" / "raw")
    cifar_set.write(root / "cifar-100-python")
    return root


@pytest.fixture
def data_root(shared_root, monkeypatch) -> Path:
    """The fixture data root as $ACTEXP_DATA, with CIFAR-100's checksums set to the fixture's."""
    monkeypatch.setenv("ACTEXP_DATA", str(shared_root))
    accept_cifar_checksums(monkeypatch, shared_root / "cifar-100-python")
    return shared_root


# ----------------------------------------------------------------------------- configs and CLI


def tiny_config(**sections) -> dict:
    """A small, fast MNIST-fixture config (CPU); keyword arguments update whole sections."""
    config = {
        "name": "tiny",
        "data": {"dataset": "mnist"},
        "model": {"hidden": [32], "activation": "relu", "init": "xavier_normal"},
        "optim": {"optimizer": "adam", "lr": 0.003},
        "train": {"epochs": 3, "batch_size": 50, "seed": 0, "device": "cpu"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            base = dict(config[key])
            if key == "model" and ("depth" in value or "width" in value):
                del base["hidden"]
            config[key] = {**base, **value}
        else:
            config[key] = value
    return config


def write_yaml(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def cli(*args: str):
    """Invoke the actexp CLI in-process; returns the click-style Result (output = stdout + stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def hear_signals() -> None:
    """preexec_fn for a subprocess a test will signal: a shell that runs a job in the background
    (`make test &`, some CI harnesses) ignores SIGINT for it, children inherit that, and Python
    then never turns Ctrl-C into KeyboardInterrupt. The child gets the default dispositions back."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_dirs(runs_dir: Path) -> list[Path]:
    """Every run folder (holding summary.json) under runs_dir."""
    return sorted(p.parent for p in Path(runs_dir).rglob("summary.json"))
