"""Datasets -> normalized, flattened float tensors on the training device, loaded once.

The on-disk layout is torchvision's, so an existing torchvision data folder works as it is, and a
missing dataset is downloaded by torchvision's own code (its mirrors and checksums). Every file is
read as if hostile, on every load as on `data import`: the IDX sets are read here and checked
(magic, declared vs actual sizes, counts, label ranges, that they are the dataset asked for), gzip
is inflated only as far as the header promises, and CIFAR-100's pickles are md5-checked and read
by an unpickler that can build nothing but arrays. The registry maps a dataset name to a loader
returning host tensors; `load_data` splits, subsets, normalizes and moves them once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .components import LazyModule
from .errors import ActexpError, ConfigError, DatasetMissing

torch = LazyModule("torch")
np = LazyModule("numpy")
tv_datasets = LazyModule("torchvision.datasets")
tv_utils = LazyModule("torchvision.datasets.utils")

DEFAULT_VAL_SIZE = 5000

# No header may make a read allocate more than this: MNIST's largest file is 47 MB.
IDX_MAX_BYTES = 256 * 2**20
# About 4x the original files (train 155 MB, test 31 MB, meta 2 kB): a pickle's size bounds what
# unpickling it can allocate, so a larger file is refused before it is read.
CIFAR_MAX_BYTES = {"train": 640 * 2**20, "test": 128 * 2**20, "meta": 2**20}
CIFAR_ARCHIVE = "cifar-100-python.tar.gz"
# How far the mean pixel value (0..1) of a set's images may be from the dataset's: MNIST's (0.1307)
# and Fashion-MNIST's (0.2860) windows are far apart, and both sets' splits land within 0.005.
MEAN_TOLERANCE = 0.05


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
    title: str  # as the dataset's authors spell it, for messages
    n_features: int  # pixels × channels of one image
    n_samples: int  # train + test, as published
    # What each label means, in label order, where known here: datasets with the same names tell
    # the same classes apart (an MNIST model's 3 is no Fashion-MNIST Dress). None: unnamed here.
    classes: tuple[str, ...] | None = None


IMAGE_SETS = {
    "mnist": ImageSet(
        "MNIST", "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        (0.1307,), (0.3081,), 10, "MNIST", 784, 70_000, tuple("0123456789"),
    ),
    "fashion_mnist": ImageSet(
        "FashionMNIST", "FashionMNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        (0.2860,), (0.3530,), 10, "Fashion-MNIST", 784, 70_000,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar100": ImageSet(
        "CIFAR100", "cifar-100-python", ("train", "test", "meta"),
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100, "CIFAR-100", 3072, 60_000,
    ),
}
CIFAR_SPLITS = ("train", "test")  # what training reads; meta only names the classes


def data_root(root: str | None = None) -> Path:
    return Path(root or os.environ.get("ACTEXP_DATA") or "~/.cache/actexp/data").expanduser()


def _load_image_set(name: str, root: Path, download: bool) -> Source:
    return (_load_cifar100 if name == "cifar100" else _load_idx_set)(name, root, download)


def _load_idx_set(name: str, root: Path, download: bool) -> Source:
    info = IMAGE_SETS[name]
    paths = _present(root / info.folder, info.files)
    if len(paths) < len(info.files):
        with _advice(_load_advice(name)):
            for filename, path in paths.items():  # a damaged file is reported, never replaced by a download
                _read_idx(path, filename)
        train, test = _download(name, root, download, [f for f in info.files if f not in paths] if paths else [])
        paths = _present(root / info.folder, info.files)
        if len(paths) < len(info.files):  # torchvision read an old processed/ folder: no raw files
            where = root / info.torchvision_class / "processed"
            arrays = {"train": (train.data.numpy(), train.targets.numpy()), "t10k": (test.data.numpy(), test.targets.numpy())}
            with _advice(_load_advice(name)):
                for split, (images, labels) in arrays.items():
                    _check_idx_split(name, split, images, labels, where, where)
            return _idx_source(info, arrays)
    with _advice(_load_advice(name)):
        contents = _read_idx_set(name, paths)
    return _idx_source(info, {split: _idx_split(contents, split) for split in ("train", "t10k")})


def _idx_source(info: ImageSet, arrays: dict) -> Source:
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["t10k"]

    def images(x):
        return torch.from_numpy(np.array(x, dtype=np.uint8).reshape(-1, 1, 28, 28))  # a copy torch may own

    def labels(y):
        return torch.from_numpy(np.array(y, dtype=np.int64))

    return Source(images(x_train), labels(y_train), images(x_test), labels(y_test), info.n_classes, info.mean, info.std)


def _load_cifar100(name: str, root: Path, download: bool) -> Source:
    info = IMAGE_SETS[name]
    paths = {split: root / info.folder / split for split in CIFAR_SPLITS}
    present = [path for path in paths.values() if os.path.lexists(path)]
    with _advice(_load_advice(name)):
        for path in present:  # a damaged file is reported, never replaced by a download
            _check_cifar_file(path)
    if len(present) < len(paths):
        _download(name, root, download, [path.name for path in paths.values() if path not in present] if present else [])
        if not all(path.is_file() for path in paths.values()):
            raise DatasetMissing(_missing_message(name, root, tried=True))
        with _advice(_load_advice(name)):
            for path in paths.values():
                _check_cifar_file(path)
    with _advice(_load_advice(name)):
        arrays = {}
        for split, path in paths.items():
            with _reading(path) as f:
                arrays[split] = _cifar_arrays(f, path, split)
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]

    def images(x):  # rows are the R, G and B planes of a 32x32 image: (N, 3072) -> (N, 3, 32, 32)
        return torch.from_numpy((x if x.flags.writeable else x.copy()).reshape(-1, 3, 32, 32))

    return Source(images(x_train), torch.from_numpy(y_train), images(x_test), torch.from_numpy(y_test),
                  info.n_classes, info.mean, info.std)


def _download(name: str, root: Path, download: bool, missing: list[str]):
    """torchvision's own download (mirrors, checksums) of a dataset whose files are missing (`missing`
    names them when some others are there)."""
    info = IMAGE_SETS[name]
    cls = getattr(tv_datasets, info.torchvision_class)
    if not download:
        raise DatasetMissing(_missing_message(name, root, tried=False, missing=missing))
    archive = root / CIFAR_ARCHIVE
    if name == "cifar100" and archive.is_file() and not tv_utils.check_integrity(str(archive), cls.tgz_md5):
        # torchvision would download over it; a file put there by hand deserves a word instead
        raise DatasetMissing(f"{archive}: not the original archive (its md5 differs from the one torchvision checks); put the "
                             f"original there, or copy in its files with `actexp data import {name} DIR`, or delete it to download it again")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if name == "cifar100":
                # What CIFAR100(download=True) does, without its constructor, which unpickles the files
                # with plain pickle; they are read below, by an unpickler that can only build arrays.
                tv_utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
                return None
            return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as e:  # (no network, a mirror down, a checksum that differs): said in the line, kept as the cause
        raise DatasetMissing(_missing_message(name, root, tried=True, missing=missing, cause=e)) from e


def _missing_message(name: str, root: Path, tried: bool, missing: list[str] = (), cause: Exception | None = None) -> str:
    info = IMAGE_SETS[name]
    cls = getattr(tv_datasets, info.torchvision_class)
    mirrors = getattr(cls, "mirrors", None) or [getattr(cls, "url", "")]
    why = f": {_innermost(cause)}" if cause is not None else ""
    attempt = f"could not be downloaded (tried {', '.join(mirrors)}{why})" if tried else "is not downloaded"
    if name == "cifar100":
        where = f"put the original {CIFAR_ARCHIVE} in {root}, or its extracted files {', '.join(info.files)} in {root / info.folder}"
    else:
        where = f"put the files {', '.join(info.files)} (uncompressed, or the original .gz) in {root / info.folder}"
    lacking = f" ({', '.join(missing)} missing)" if missing else ""
    return (
        f"dataset {name} not found in {root / info.folder}{lacking} and {attempt}: {where}, "
        f"or copy in a folder of them with `actexp data import {name} DIR`"
    )


def _load_advice(name: str) -> str:
    return (f"replace it with {IMAGE_SETS[name].title}'s original file (copy them in with "
            f"`actexp data import {name} DIR`, or delete it to download it again)")


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


def dataset_shape(dataset) -> tuple[int, int, int]:
    """(features, samples, classes) of a dataset component, known without loading it: the memory
    estimate is made before anything is read or allocated."""
    if dataset.name in IMAGE_SETS:
        info = IMAGE_SETS[dataset.name]
        return info.n_features, info.n_samples, info.n_classes
    return 2, dataset.params["n_train"] + dataset.params["n_test"], 2  # xor


def load_source(dataset, root: str | None, seed: int, download: bool = True) -> Source:
    """Load a dataset component (name + params) from its registry loader."""
    return DATASETS[dataset.name](data_root(root), download, seed, **dict(dataset.params))


def load_data(data_config, device, download: bool = True, test: bool = True) -> Data:
    """Load, split (seeded), subset, normalize, flatten, and move every split to `device` once.
    Without `test` the test split is never touched (x_test and y_test are None): what tuning trials
    train on."""
    source = load_source(data_config.dataset, data_config.root, data_config.split_seed, download)
    train_idx, val_idx = split_indices(len(source.y_train), data_config)
    if data_config.subset:
        train_idx = train_idx[: data_config.subset]

    def prepare(x, y):
        return model_inputs(x, data_config, source.mean, source.std).to(device), y.to(device)

    x_train, y_train = prepare(source.x_train[train_idx], source.y_train[train_idx])
    x_val, y_val = prepare(source.x_train[val_idx], source.y_train[val_idx])
    x_test, y_test = prepare(source.x_test, source.y_test) if test else (None, None)
    return Data(x_train, y_train, x_val, y_val, x_test, y_test, x_train.shape[1], source.n_classes)


def split_indices(n: int, data_config):
    """(train, validation) indices into a training set of n samples: the seeded split every run of
    this data config makes (`actexp eval --split val` takes the same samples)."""
    val_size = data_config.val_size or min(DEFAULT_VAL_SIZE, n // 5)
    if val_size >= n:
        raise ConfigError(f"data.val_size: {val_size} leaves no training samples (the training set has {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(data_config.split_seed))
    return order[val_size:].sort().values, order[:val_size]


def input_statistics(dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that a dataset's Source carries, known without loading it: what
    load_run's preprocessing normalizes with."""
    if dataset.name in IMAGE_SETS:
        return IMAGE_SETS[dataset.name].mean, IMAGE_SETS[dataset.name].std
    return (), ()


def model_inputs(x, data_config, mean, std):
    """Raw inputs as a Source holds them (uint8 images (N, C, H, W), or features (N, D)) -> the
    model's input: normalized as the data config says, flattened. Training (load_data) and a loaded
    run's preprocessing (evaluation.load_run) both go through here, so they cannot differ."""
    return _normalize(x, mean, std, data_config.normalize).flatten(1)


def _normalize(x, mean, std, mode: str = "standardize"):
    """Images (uint8, with the dataset's mean and std) as the network sees them: `standardize`
    ((x/255 - mean)/std per channel), `unit` (x/255, in [0, 1], as most published recipes feed
    them) or `none` (the raw 0..255 as floats). Generated features (no mean given: XOR's points,
    already centred at (±1, ±1)) have no pixel scale and are used as they are in every mode."""
    if not mean or mode == "none":
        return x.float()
    if mode == "unit":
        return x.float() / 255
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = torch.tensor(mean).view(shape) * 255
    std = torch.tensor(std).view(shape) * 255
    # In place on the float copy: the same numbers as (x - mean) / std, at a third of the memory
    # traffic.
    return x.float().sub_(mean).div_(std)


# ----------------------------------------------------------------------------- offline install


def download_dataset(name: str, root: str | None = None) -> Path:
    """Fetch a dataset into the data root ahead of time (`actexp data download`)."""
    if name not in IMAGE_SETS:
        raise DatasetMissing(f"dataset {name} is generated from the seed; there is nothing to download")
    _load_image_set(name, data_root(root), download=True)
    return data_root(root) / IMAGE_SETS[name].folder


def import_dataset(name: str, source_dir: str | Path, root: str | None = None) -> Path:
    """Copy a folder of a dataset's original files (gzipped or not) into the data root, after
    checking their content; for air-gapped machines and re-packed copies such as Debian's.
    The folder may hold the files, or be a data root (or its dataset folder) in torchvision's layout."""
    source_dir = Path(source_dir).expanduser()
    if name not in IMAGE_SETS:
        raise DatasetMissing(f"dataset {name} is generated from the seed; there is nothing to import")
    if not source_dir.is_dir():
        raise DatasetMissing(f"{source_dir} is not a folder")
    info = IMAGE_SETS[name]
    folder = _source_folder(name, source_dir)
    if name == "cifar100":
        contents = _import_cifar100(folder)
    else:
        paths = {filename: _find(folder, filename) for filename in info.files}
        with _advice(f"use {info.title}'s original files"):
            contents = _read_idx_set(name, paths)
    target = data_root(root) / info.folder
    _write_files(target, contents)
    return target


def _source_folder(name: str, source_dir: Path) -> Path:
    """The first of DIR, DIR/raw and DIR/<torchvision's folder> that holds any of the dataset's files."""
    info = IMAGE_SETS[name]
    for folder in (source_dir, source_dir / "raw", source_dir / info.folder):
        if _present(folder, info.files) or (name == "cifar100" and (folder / CIFAR_ARCHIVE).is_file()):
            return folder
    return source_dir


def _present(folder: Path, filenames) -> dict[str, Path]:
    """Each file that is there, uncompressed or as the original .gz (torchvision keeps both)."""
    paths = {}
    for filename in filenames:
        for candidate in (folder / filename, folder / f"{filename}.gz"):
            if os.path.lexists(candidate):  # a FIFO, a device or a broken link is a damaged file, not a missing one
                paths[filename] = candidate
                break
    return paths


def _find(folder: Path, filename: str) -> Path:
    path = _present(folder, [filename]).get(filename)
    if path is None:
        raise DatasetMissing(f"{folder}: {filename} (or {filename}.gz) is missing")
    return path


def _write_files(target: Path, contents: dict[str, bytes]) -> None:
    """Every file goes to a temporary name first and is renamed over the old one only once all
    are written: a failure (a full disk) leaves the previous files as they were, and no temporary."""
    path = target
    temps = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        for filename, content in contents.items():
            path = target / filename
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{filename}.", suffix=".tmp")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the data root is often shared
        for filename, tmp in zip(contents, temps):
            path = target / filename
            os.replace(tmp, path)
    except BaseException as e:  # Ctrl-C too: no temporary is left behind
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise ActexpError(f"{path}: could not be written ({e.strerror or e}); free space or fix the folder's permissions, then import again") from e
        raise


@contextlib.contextmanager
def _advice(advice: str):
    """The checks say which file is wrong and how; the caller knows what the user can do about it."""
    try:
        yield
    except DatasetMissing as e:
        raise DatasetMissing(f"{e}; {advice}") from e


def _innermost(e: BaseException) -> str:
    """The first failure under `e` (torchvision wraps a mirror's URLError in its own RuntimeError), as
    its type and one short line."""
    seen = set()
    while (inner := e.__cause__ or e.__context__) is not None and id(inner) not in seen:
        seen.add(id(e))
        e = inner
    text = _one_line(e)
    # torchvision's own: "Error downloading FILE: Tried MIRROR, got: ERROR ..." for each mirror
    return f"{type(e).__name__}: {text.rsplit('got: ', 1)[-1][:120]}"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextlib.contextmanager
def _reading(path: Path):
    """The file's content as a stream, inflated as it is read when it is gzip (a .gz must be);
    damaged gzip and read failures become one line naming the file."""
    gz = False
    _regular(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if path.suffix == ".gz" and not gz:
                raise DatasetMissing(f"{path}: named .gz but not gzip-compressed")
            with gzip.GzipFile(fileobj=f) if gz else contextlib.nullcontext(f) as stream:
                yield stream
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        if not gz:
            raise
        raise DatasetMissing(f"{path}: damaged gzip file ({_one_line(e)})") from e
    except OSError as e:
        raise DatasetMissing(f"{path}: could not be read ({e.strerror or _one_line(e)})") from e


# ----------------------------------------------------------------------------- MNIST, Fashion-MNIST


def _idx_kind(filename: str) -> tuple[int, tuple[int, ...]]:
    """An IDX file's magic number (0x0000 08 <ndim>: unsigned bytes) and item shape."""
    return (2051, (28, 28)) if "-images-" in filename else (2049, ())


def _read_idx(path: Path, filename: str) -> bytes:
    """The file's content, checked against its header: reads no more than the header promises."""
    magic, item_shape = _idx_kind(filename)
    header_size = 4 * (2 + len(item_shape))
    with _reading(path) as f:
        header = f.read(header_size)
        if not header:
            raise DatasetMissing(f"{path}: empty file")
        found = int.from_bytes(header[:4], "big")
        if len(header) < 4 or found != magic:
            raise DatasetMissing(f"{path}: not an IDX file of this kind (magic number {magic} expected, found {found})")
        if len(header) < header_size:
            raise DatasetMissing(f"{path}: {len(header)} bytes, shorter than the {header_size}-byte header")
        dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(1 + len(item_shape))]
        if tuple(dims[1:]) != item_shape:
            raise DatasetMissing(f"{path}: items are {tuple(dims[1:])}, expected {item_shape}")
        size = header_size + dims[0] * _product(item_shape)
        if size > IDX_MAX_BYTES:
            raise DatasetMissing(f"{path}: its header declares {dims[0]} items ({size} bytes), more than any "
                                 f"file of this dataset holds (at most {IDX_MAX_BYTES}); refusing to read it")
        body = f.read(size - header_size + 1)  # one byte more: does the file go on past its items?
    if len(header) + len(body) < size:
        raise DatasetMissing(f"{path}: {len(header) + len(body)} bytes, expected {size} for the {dims[0]} items its header declares (truncated?)")
    if len(header) + len(body) > size:
        raise DatasetMissing(f"{path}: goes on past the {size} bytes of the {dims[0]} items its header declares")
    return header + body


def _product(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _idx_split(contents: dict[str, bytes], split: str):
    """(images (N, 28, 28), labels (N,)) of a split: uint8 views of checked IDX contents."""
    images, labels = contents[f"{split}-images-idx3-ubyte"], contents[f"{split}-labels-idx1-ubyte"]
    return np.frombuffer(images, np.uint8, offset=16).reshape(-1, 28, 28), np.frombuffer(labels, np.uint8, offset=8)


def _read_idx_set(name: str, paths: dict[str, Path]) -> dict[str, bytes]:
    """Every file of an IDX set, checked one by one and together, by `data import` and every load."""
    contents = {filename: _read_idx(path, filename) for filename, path in paths.items()}
    for split in ("train", "t10k"):
        images, labels = _idx_split(contents, split)
        _check_idx_split(name, split, images, labels, paths[f"{split}-images-idx3-ubyte"], paths[f"{split}-labels-idx1-ubyte"])
    return contents


def _check_idx_split(name: str, split: str, images, labels, images_where: Path, labels_where: Path) -> None:
    _check_labels(labels_where, split, labels, len(images), IMAGE_SETS[name].n_classes, images_where)
    if tuple(images.shape[1:]) != (28, 28):
        raise DatasetMissing(f"{images_where}: items are {tuple(images.shape[1:])}, expected (28, 28)")
    _check_looks_like(name, images_where, images)


def _check_labels(where, split: str, labels, n_images: int, n_classes: int, images_where=None) -> None:
    """Every dataset: some images, one label each, each a class index."""
    if n_images == 0:
        raise DatasetMissing(f"{images_where or where}: {split} holds no images")
    if len(labels) != n_images:
        raise DatasetMissing(f"{where}: {split} has {n_images} images but {len(labels)} labels")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        raise DatasetMissing(f"{where}: holds labels outside 0..{n_classes - 1} (found {low if low < 0 else high})")


def _check_looks_like(name: str, where: Path, images) -> None:
    """MNIST and Fashion-MNIST share a format (and re-gzipped copies defeat the .gz checksums):
    their mean pixel values tell them apart."""
    mean = float(images.mean()) / 255
    if abs(mean - IMAGE_SETS[name].mean[0]) <= MEAN_TOLERANCE:
        return
    grey = {info.title: info.mean[0] for info in IMAGE_SETS.values() if len(info.mean) == 1}
    like = [title for title, m in grey.items() if abs(mean - m) <= MEAN_TOLERANCE]
    title = IMAGE_SETS[name].title
    means = ", ".join(f"{t}'s {m:.4f}" for t, m in grey.items())
    looks = f"look like {like[0]}'s, not {title}'s" if like else f"are not {title}'s"
    raise DatasetMissing(f"{where}: these images {looks} (mean pixel value {mean:.4f}; {means})")


# ----------------------------------------------------------------------------- CIFAR-100


def _import_cifar100(folder: Path) -> dict[str, bytes]:
    info = IMAGE_SETS["cifar100"]
    archive = folder / CIFAR_ARCHIVE
    if os.path.lexists(archive):
        _regular(archive)
    if archive.is_file():
        where = {filename: f"{archive} (cifar-100-python/{filename})" for filename in info.files}
    else:
        present = _present(folder, info.files)
        if not present:  # the archive is what users download: name it, not the files inside it
            raise DatasetMissing(f"{folder}: no {CIFAR_ARCHIVE} here (nor its extracted {', '.join(info.files)}); "
                                 f"download {CIFAR_ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html and import the folder holding it")
        where = {filename: _find(folder, filename) for filename in info.files}
    with _advice(f"import the original {CIFAR_ARCHIVE} or its extracted files"):
        if archive.is_file():
            raw = _read_cifar_archive(archive)
        else:
            raw = {filename: _read_capped(path, CIFAR_MAX_BYTES[filename]) for filename, path in where.items()}
        for filename, content in raw.items():  # first: a file that is not the original is never unpickled
            _check_cifar_md5(where[filename], hashlib.md5(content).hexdigest() == _cifar_md5(filename))
        for split in CIFAR_SPLITS:
            _cifar_arrays(io.BytesIO(raw[split]), where[split], split)
    return raw


def _regular(path: Path) -> None:
    """DatasetMissing naming the file unless it is a regular file (or a link to one): reading a FIFO
    would wait forever, /dev/zero never ends, and neither may be taken for a missing file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DatasetMissing(f"{path}: could not be read ({e.strerror or _one_line(e)}); replace it with the dataset's file, "
                             "or delete it to download the dataset again") from e
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
        raise DatasetMissing(f"{path}: not a regular file ({kind}); replace it with the dataset's file, or delete it to download the dataset again")


def _read_capped(path: Path, cap: int) -> bytes:
    _regular(path)
    if path.stat().st_size > cap:
        raise DatasetMissing(_too_large(path, cap))
    with _reading(path) as f:
        content = f.read(cap + 1)  # a .gz is inflated only this far
    if len(content) > cap:
        raise DatasetMissing(_too_large(path, cap))
    return content


def _too_large(where, cap: int) -> str:
    return f"{where}: larger than {cap} bytes, far more than CIFAR-100's original file holds; refusing to read it"


# The headers a tar archive may hold for a long name or extended attributes: tarfile reads each
# whole into memory (as the size its header claims) while it reads the member's header, before
# any check on the member itself can run. CIFAR-100's archive has none; a long name is a few kB.
TAR_META_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
MAX_TAR_META_BYTES = 1 << 20


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's own header reader, refusing a long-name or extended header that claims more than
    MAX_TAR_META_BYTES before tarfile reads it."""

    def _proc_member(self, tarfile_):
        if self.type in TAR_META_HEADERS and self.size > MAX_TAR_META_BYTES:
            raise DatasetMissing(f"{tarfile_.name}: a {'long-name' if self.type in TAR_META_HEADERS[:2] else 'extended'} header claims "
                                 f"{self.size:,} bytes, more than any name or attribute needs ({MAX_TAR_META_BYTES:,}); refusing to read it")
        return super()._proc_member(tarfile_)


def _read_cifar_archive(archive: Path) -> dict[str, bytes]:
    """train, test and meta from the original archive, without extracting anything to disk."""
    wanted = {f"cifar-100-python/{f}": f for f in IMAGE_SETS["cifar100"].files}
    raw = {}
    try:
        with tarfile.open(archive, tarinfo=_BoundedTarInfo) as tar:
            for _ in range(64):  # the original holds five members
                member = None if len(raw) == len(wanted) else tar.next()
                if member is None:
                    break
                filename = wanted.get(member.name)
                cap = CIFAR_MAX_BYTES.get(filename, max(CIFAR_MAX_BYTES.values()))
                if member.size > cap:  # skipping it would mean inflating it
                    raise DatasetMissing(_too_large(f"{archive} ({member.name})", cap))
                if filename is not None and member.isfile():
                    raw[filename] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetMissing(f"{archive}: not a readable tar.gz archive ({_one_line(e)})") from e
    for name, filename in wanted.items():
        if filename not in raw:
            raise DatasetMissing(f"{archive}: {name} is missing from the archive (or is not a regular file)")
    return raw


def _cifar_md5(filename: str) -> str:
    """The md5 torchvision expects of a file (its table: CIFAR100(download=True) checks it on every load)."""
    cls = tv_datasets.CIFAR100
    return {**dict(cls.train_list), **dict(cls.test_list), "meta": cls.meta["md5"]}[filename]


def _check_cifar_md5(where, matches: bool) -> None:
    if not matches:
        raise DatasetMissing(f"{where}: CIFAR-100's name, but not the original file (its md5 differs from the one torchvision checks)")


def _check_cifar_file(path: Path) -> None:
    """Before a training load reads a file: its size, then its md5, with torchvision's own check."""
    _regular(path)
    if path.stat().st_size > CIFAR_MAX_BYTES[path.name]:
        raise DatasetMissing(_too_large(path, CIFAR_MAX_BYTES[path.name]))
    _check_cifar_md5(path, tv_utils.check_integrity(str(path), _cifar_md5(path.name)))


def _cifar_arrays(file, where, split: str):
    """(data (N, 3072) uint8, fine labels (N,) int64) from one of CIFAR-100's pickles, which only
    the restricted unpickler reads (even when its md5 matched)."""
    try:
        entry = _CifarUnpickler(file, where).load()
    except DatasetMissing:
        raise
    except Exception as e:  # a damaged pickle fails in any of a dozen ways
        raise DatasetMissing(f"{where}: not a readable pickle ({type(e).__name__}: {_one_line(e)})") from e
    if not isinstance(entry, dict):
        raise DatasetMissing(f"{where}: holds a {type(entry).__name__}, not CIFAR-100's dict of data (N, 3072) and fine_labels")
    data, labels = (entry.get(key, entry.get(key.encode())) for key in ("data", "fine_labels"))
    if data is None or labels is None:
        raise DatasetMissing(f"{where}: not CIFAR-100's layout (a dict with data (N, 3072) and fine_labels)")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{tuple(data.shape)} {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise DatasetMissing(f"{where}: data is {what}, expected (N, 3072) uint8")
    try:
        labels = np.asarray(labels)
    except Exception:
        labels = np.asarray(None)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetMissing(f"{where}: fine_labels is not a list of integers")
    _check_labels(where, split, labels, len(data), IMAGE_SETS["cifar100"].n_classes)
    return data, labels.astype(np.int64)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-100's files hold: dicts, lists, strings, numbers, numpy arrays.
    A pickle runs code only through the globals it names; every name not listed here is refused."""

    def __init__(self, file, where):
        super().__init__(file, encoding="latin1")  # the files were pickled by Python 2
        self.where = where

    def find_class(self, module, name):
        allowed = _PICKLE_GLOBALS.get((module, name))
        if allowed is None:
            raise DatasetMissing(f"{self.where}: holds a pickled object of type {module}.{name} "
                                 f"that CIFAR-100's files never contain; refusing to load it")
        return allowed


_NDARRAY = object()  # stands for numpy.ndarray in a pickle: nothing can call or instantiate it


def _reconstruct(cls, shape, dtype):
    # An array is pickled as an empty one that the next step fills from the file's bytes; any
    # other use (a huge shape) would allocate memory the file never held.
    if cls is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("an array reconstruction CIFAR-100's files never use")
    numpy_reconstruct = np.ndarray(0).__reduce__()[0]  # numpy's own, wherever this version keeps it
    return numpy_reconstruct(np.ndarray, (0,), dtype)


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:  # object arrays unpickle arbitrary objects
        raise pickle.UnpicklingError("an object dtype")
    return dtype


def _latin1(text, encoding):
    # Python 3 pickles bytes in protocol 2 as _codecs.encode(text, "latin1"); nothing else is allowed.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"a {encoding!r} encoding")
    return text.encode("latin1")


_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 (and Python 2's original files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}
