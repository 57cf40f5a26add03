"""Datasets -> normalized, flattened float tensors on the training device, loaded once.

Image sets go through torchvision's dataset classes (its mirrors, checksums and on-disk layout),
so an existing torchvision data folder works as it is. The registry maps a dataset name to a
loader returning host tensors; `load_data` splits, subsets, normalizes and moves them once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .components import LazyModule
from .errors import ConfigError, DatasetMissing

torch = LazyModule("torch")
tv_datasets = LazyModule("torchvision.datasets")

DEFAULT_VAL_SIZE = 5000


@dataclass(frozen=True)
class Source:
    """A dataset as loaded from disk or generated: host tensors, before splitting."""

    x_train: object  # uint8 images (N, C, H, W) or float features (N, D)
    y_train: object
    x_test: object
    y_test: object
    n_classes: int
    mean: tuple[float, ...] = ()  # per channel, on the 0..1 scale; empty: features used as they are
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class Data:
    """The splits, flattened and normalized, on the device."""

    x_train: object
    y_train: object
    x_val: object
    y_val: object
    x_test: object
    y_test: object
    n_features: int
    n_classes: int


@dataclass(frozen=True)
class ImageSet:
    """What actexp needs to know about one torchvision image dataset."""

    torchvision_class: str
    folder: str  # relative to the data root, as torchvision lays it out
    files: tuple[str, ...]  # the original files, as `data import` expects them
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_classes: int


IMAGE_SETS = {
    "mnist": ImageSet(
        "MNIST", "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        (0.1307,), (0.3081,), 10,
    ),
    "fashion_mnist": ImageSet(
        "FashionMNIST", "FashionMNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        (0.2860,), (0.3530,), 10,
    ),
    "cifar100": ImageSet(
        "CIFAR100", "cifar-100-python", ("train", "test", "meta"),
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100,
    ),
}


def data_root(root: str | None = None) -> Path:
    return Path(root or os.environ.get("ACTEXP_DATA") or "~/.cache/actexp/data").expanduser()


def _load_image_set(name: str, root: Path, download: bool) -> Source:
    info = IMAGE_SETS[name]
    cls = getattr(tv_datasets, info.torchvision_class)
    try:
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    except RuntimeError:
        if not download:
            raise DatasetMissing(_missing_message(name, root, cls, tried=False)) from None
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                train = cls(str(root), train=True, download=True)
                test = cls(str(root), train=False, download=True)
        except Exception:
            raise DatasetMissing(_missing_message(name, root, cls, tried=True)) from None
    return Source(_images(train.data), _labels(train.targets), _images(test.data), _labels(test.targets),
                  info.n_classes, info.mean, info.std)


def _images(data):
    x = torch.as_tensor(data)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, H, W[, C]) -> (N, C, H, W)


def _labels(targets):
    return torch.as_tensor(targets, dtype=torch.int64)


def _missing_message(name: str, root: Path, cls, tried: bool) -> str:
    info = IMAGE_SETS[name]
    mirrors = getattr(cls, "mirrors", None) or [getattr(cls, "url", "")]
    attempt = f"could not be downloaded (tried {', '.join(mirrors)})" if tried else "is not downloaded"
    if name == "cifar100":
        where = f"put the original cifar-100-python.tar.gz in {root}, or its extracted files {', '.join(info.files)} in {root / info.folder}"
    else:
        where = f"put the files {', '.join(info.files)} (uncompressed, or the original .gz) in {root / info.folder}"
    return (
        f"dataset {name} not found in {root / info.folder} and {attempt}: {where}, "
        f"or copy in a folder of them with `actexp data import {name} DIR`"
    )


def _xor(root: Path, download: bool, seed: int, n_train: int = 2000, n_test: int = 1000, noise: float = 0.25) -> Source:
    """Four Gaussian clusters at (±1, ±1), labelled by XOR of the signs: no line separates them."""
    generator = torch.Generator().manual_seed(seed)

    def sample(n):
        corner = torch.randint(0, 2, (n, 2), generator=generator)
        x = (corner * 2 - 1).float() + noise * torch.randn(n, 2, generator=generator)
        return x, (corner[:, 0] ^ corner[:, 1]).long()

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return Source(x_train, y_train, x_test, y_test, n_classes=2)


def _image_loader(name):
    def load(root: Path, download: bool, seed: int) -> Source:
        return _load_image_set(name, root, download)

    return load


# name -> loader(root, download, seed, **params) -> Source
DATASETS = {
    "mnist": _image_loader("mnist"),
    "fashion_mnist": _image_loader("fashion_mnist"),
    "cifar100": _image_loader("cifar100"),
    "xor": _xor,
}


def load_source(dataset, root: str | None, seed: int, download: bool = True) -> Source:
    """Load a dataset component (name + params) from its registry loader."""
    return DATASETS[dataset.name](data_root(root), download, seed, **dict(dataset.params))


def load_data(data_config, device, download: bool = True) -> Data:
    """Load, split (seeded), subset, normalize, flatten, and move every split to `device` once."""
    source = load_source(data_config.dataset, data_config.root, data_config.split_seed, download)
    n = len(source.y_train)
    val_size = data_config.val_size or min(DEFAULT_VAL_SIZE, n // 5)
    if val_size >= n:
        raise ConfigError(f"data.val_size: {val_size} leaves no training samples (the training set has {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(data_config.split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:].sort().values
    if data_config.subset:
        train_idx = train_idx[: data_config.subset]

    def prepare(x, y):
        x = _normalize(x, source.mean, source.std).flatten(1)
        return x.to(device), y.to(device)

    x_train, y_train = prepare(source.x_train[train_idx], source.y_train[train_idx])
    x_val, y_val = prepare(source.x_train[val_idx], source.y_train[val_idx])
    x_test, y_test = prepare(source.x_test, source.y_test)
    return Data(x_train, y_train, x_val, y_val, x_test, y_test, x_train.shape[1], source.n_classes)


def _normalize(x, mean, std):
    if not mean:
        return x.float()
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = torch.tensor(mean).view(shape) * 255
    std = torch.tensor(std).view(shape) * 255
    return (x.float() - mean) / std


# ----------------------------------------------------------------------------- offline install


def download_dataset(name: str, root: str | None = None) -> Path:
    """Fetch a dataset into the data root ahead of time (`actexp data download`)."""
    if name not in IMAGE_SETS:
        raise DatasetMissing(f"dataset {name} is generated from the seed; there is nothing to download")
    _load_image_set(name, data_root(root), download=True)
    return data_root(root) / IMAGE_SETS[name].folder


def import_dataset(name: str, source_dir: str | Path, root: str | None = None) -> Path:
    """Copy a folder of a dataset's original files (gzipped or not) into the data root, after
    checking their content; for air-gapped machines and re-packed copies such as Debian's."""
    source_dir = Path(source_dir).expanduser()
    if name not in IMAGE_SETS:
        raise DatasetMissing(f"dataset {name} is generated from the seed; there is nothing to import")
    if not source_dir.is_dir():
        raise DatasetMissing(f"{source_dir} is not a folder")
    target = data_root(root) / IMAGE_SETS[name].folder
    contents = _read_cifar100(source_dir) if name == "cifar100" else _read_idx_set(source_dir)
    target.mkdir(parents=True, exist_ok=True)
    for filename, content in contents.items():
        tmp = target / f".{filename}.tmp"
        tmp.write_bytes(content)
        tmp.replace(target / filename)
    return target


def _find(source_dir: Path, filename: str) -> bytes:
    for candidate in (filename, filename + ".gz"):
        path = source_dir / candidate
        if path.is_file():
            data = path.read_bytes()
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    raise DatasetMissing(f"{source_dir}: {filename} (or {filename}.gz) is missing")


def _read_idx_set(source_dir: Path) -> dict[str, bytes]:
    files = {}
    for split in ("train", "t10k"):
        images = _find(source_dir, f"{split}-images-idx3-ubyte")
        labels = _find(source_dir, f"{split}-labels-idx1-ubyte")
        n_images = _check_idx(images, f"{split}-images-idx3-ubyte", 2051, (28, 28))
        n_labels = _check_idx(labels, f"{split}-labels-idx1-ubyte", 2049, ())
        if n_images != n_labels:
            raise DatasetMissing(f"{source_dir}: {split} has {n_images} images but {n_labels} labels")
        if max(labels[8:]) > 9:
            raise DatasetMissing(f"{source_dir}: {split}-labels-idx1-ubyte holds labels outside 0..9")
        files[f"{split}-images-idx3-ubyte"] = images
        files[f"{split}-labels-idx1-ubyte"] = labels
    return files


def _check_idx(data: bytes, filename: str, magic: int, item_shape: tuple[int, ...]) -> int:
    header = 4 * (2 + len(item_shape))
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DatasetMissing(f"{filename}: not an IDX file of this kind (magic number {magic} expected)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(1 + len(item_shape))]
    if tuple(dims[1:]) != item_shape:
        raise DatasetMissing(f"{filename}: items are {tuple(dims[1:])}, expected {item_shape}")
    size = 1
    for d in item_shape:
        size *= d
    if len(data) != header + dims[0] * size:
        raise DatasetMissing(f"{filename}: {len(data)} bytes, expected {header + dims[0] * size} for {dims[0]} items")
    return dims[0]


def _read_cifar100(source_dir: Path) -> dict[str, bytes]:
    archive = source_dir / "cifar-100-python.tar.gz"
    if archive.is_file():
        with tarfile.open(archive) as tar:
            raw = {f: tar.extractfile(f"cifar-100-python/{f}").read() for f in ("train", "test", "meta")}
    else:
        folder = source_dir / "cifar-100-python" if (source_dir / "cifar-100-python").is_dir() else source_dir
        raw = {f: _find(folder, f) for f in ("train", "test", "meta")}
    for split in ("train", "test"):
        # The official files are Python pickles, read by torchvision the same way.
        entry = pickle.loads(raw[split], encoding="latin1")
        data, labels = entry.get("data"), entry.get("fine_labels")
        if data is None or labels is None or getattr(data, "shape", (0, 0))[1:] != (3072,):
            raise DatasetMissing(f"{split}: not CIFAR-100's layout (a dict with data (N, 3072) and fine_labels)")
        if len(labels) != data.shape[0] or min(labels) < 0 or max(labels) > 99:
            raise DatasetMissing(f"{split}: fine_labels must be N values in 0..99")
    # torchvision checks these files' md5 on every load: a re-packed copy would import, then not load.
    cls = tv_datasets.CIFAR100
    expected = {**dict(cls.train_list), **dict(cls.test_list), "meta": cls.meta["md5"]}
    for filename, content in raw.items():
        if hashlib.md5(content).hexdigest() != expected[filename]:
            raise DatasetMissing(
                f"{filename}: CIFAR-100's layout, but not the original file (its md5 differs from the one "
                f"torchvision checks on every load); import the original cifar-100-python.tar.gz or its extracted files"
            )
    return raw
