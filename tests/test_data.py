"""Data: torchvision's readers on fixture files in the real layouts, splits and subsets,
`actexp data import`, and the one-line message for a missing dataset."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import numpy as np
import pytest
import torch

from actexp.config import config_from_dict
from actexp.data import IMAGE_SETS, load_data
from actexp.errors import ConfigError, DatasetMissing
from conftest import (
    IDX_FILES,
    IDX_TEST,
    IDX_TRAIN,
    UNREACHABLE,
    accept_cifar_checksums,
    cli,
    idx_bytes,
    make_cifar_set,
    make_idx_set,
    tiny_config,
    write_yaml,
)


def _data(dataset="mnist", device="cpu", **data):
    return load_data(config_from_dict({"data": {"dataset": dataset, **data}}).data, device)


def _normalized(raw: np.ndarray, name: str) -> torch.Tensor:
    """What actexp must feed the network: (x/255 - mean)/std per channel, flattened channel-major."""
    info = IMAGE_SETS[name]
    x = torch.as_tensor(raw, dtype=torch.float32).reshape(len(raw), len(info.mean), -1)
    mean = torch.tensor(info.mean).view(1, -1, 1)
    std = torch.tensor(info.std).view(1, -1, 1)
    return ((x / 255 - mean) / std).flatten(1)


def _raw(x: torch.Tensor, name: str) -> torch.Tensor:
    """The uint8 rows behind normalized rows (undoing the normalization)."""
    info = IMAGE_SETS[name]
    mean = torch.tensor(info.mean).view(1, -1, 1) * 255
    std = torch.tensor(info.std).view(1, -1, 1) * 255
    return (x.reshape(len(x), len(info.mean), -1) * std + mean).round().to(torch.uint8).flatten(1)


def _pixels(x: torch.Tensor, name: str) -> set[bytes]:
    return {row.numpy().tobytes() for row in _raw(x, name)}


def _patch_class(raw: torch.Tensor, name: str) -> torch.Tensor:
    """The class a fixture image shows: which grid cell holds the bright patch (see conftest)."""
    if name == "cifar100":
        cells = raw.reshape(-1, 3, 32, 32)[:, 0, 1:31, 1:31].float().reshape(-1, 10, 3, 10, 3).mean((2, 4))
    else:
        cells = raw.reshape(-1, 28, 28).float().reshape(-1, 4, 7, 4, 7).mean((2, 4))
    return cells.flatten(1).argmax(1)


@pytest.mark.parametrize("name,n_features,n_classes", [("mnist", 784, 10), ("fashion_mnist", 784, 10), ("cifar100", 3072, 100)])
def test_torchvision_readers_on_fixture_files(data_root, request, name, n_features, n_classes):
    fixture = request.getfixturevalue({"mnist": "mnist_set", "fashion_mnist": "fashion_set", "cifar100": "cifar_set"}[name])
    data = _data(name)
    n_train, n_test = len(fixture.y_train), len(fixture.y_test)
    assert data.n_features == n_features and data.n_classes == n_classes
    n_val = n_train // 5  # default: min(5000, 20%)
    assert data.x_train.shape == (n_train - n_val, n_features) and data.x_val.shape == (n_val, n_features)
    assert data.x_test.shape == (n_test, n_features)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.device.type == "cpu"
    # The official test set, in order, normalized with the dataset's mean/std.
    assert torch.equal(data.y_test, torch.as_tensor(np.asarray(fixture.y_test), dtype=torch.int64))
    raw_test = np.asarray(fixture.x_test).reshape(n_test, -1)
    assert torch.allclose(data.x_test, _normalized(raw_test, name), atol=1e-5)
    # Roughly zero-mean per channel (the fixtures' pixel statistics are near the real sets').
    channels = data.x_train.reshape(len(data.x_train), len(IMAGE_SETS[name].mean), -1)
    assert channels.mean(dim=(0, 2)).abs().max().item() < 0.1
    # Train and validation partition the training file: disjoint, together all of it.
    all_train = {row.tobytes() for row in np.asarray(fixture.x_train).reshape(n_train, -1)}
    train_rows, val_rows = _pixels(data.x_train, name), _pixels(data.x_val, name)
    assert len(all_train) == n_train and len(train_rows) + len(val_rows) == n_train
    assert not train_rows & val_rows
    assert train_rows | val_rows == all_train
    # Images and labels stay paired through the split.
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert torch.equal(_patch_class(_raw(x, name), name), y)


def test_data_root_from_the_config_wins_over_the_environment(shared_root, monkeypatch, tmp_path):
    monkeypatch.setenv("ACTEXP_DATA", str(tmp_path / "elsewhere"))
    data = _data("mnist", root=str(shared_root))
    assert len(data.y_test) == IDX_TEST


def test_split_sizes_subset_and_split_seed(data_root):
    full = _data("mnist", val_size=100)
    assert (len(full.y_train), len(full.y_val)) == (IDX_TRAIN - 100, 100)
    subset = _data("mnist", val_size=100, subset=50)
    assert len(subset.y_train) == 50 and torch.equal(subset.x_train, full.x_train[:50])
    assert torch.equal(subset.x_val, full.x_val) and torch.equal(subset.x_test, full.x_test)
    assert len(_data("mnist", subset=10_000).y_train) == IDX_TRAIN - IDX_TRAIN // 5  # more than there is: all
    same = _data("mnist", val_size=100, split_seed=0)
    other = _data("mnist", val_size=100, split_seed=1)
    assert torch.equal(same.x_val, full.x_val)
    assert _pixels(other.x_val, "mnist") != _pixels(full.x_val, "mnist")
    with pytest.raises(ConfigError, match="data.val_size"):
        _data("mnist", val_size=IDX_TRAIN)


def test_val_size_too_large_through_the_cli(data_root, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(data={"dataset": "mnist", "val_size": IDX_TRAIN}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "data.val_size" in result.output and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["mnist", "cifar100"])
def test_normalize_modes(data_root, request, name):
    """standardize (the default) is today's (x/255 - mean)/std; unit is x/255, every input in [0, 1];
    none is the raw 0..255 as floats. The split and the labels are the same in every mode."""
    fixture = request.getfixturevalue({"mnist": "mnist_set", "cifar100": "cifar_set"}[name])
    raw_test = torch.as_tensor(np.asarray(fixture.x_test).reshape(len(fixture.y_test), -1), dtype=torch.float32)
    standard, unit, none = (_data(name, normalize=mode) for mode in ("standardize", "unit", "none"))
    assert torch.equal(standard.x_test, _data(name).x_test)
    assert torch.allclose(standard.x_test, _normalized(raw_test.numpy(), name), atol=1e-5)
    assert torch.equal(unit.x_test, raw_test / 255) and torch.equal(none.x_test, raw_test)
    for data in (unit, none):
        assert data.x_train.dtype == torch.float32
        assert torch.equal(data.y_train, standard.y_train) and torch.equal(data.y_val, standard.y_val)
        assert torch.equal(data.x_val, none.x_val / 255 if data is unit else none.x_val)
    assert unit.x_train.min().item() >= 0 and unit.x_train.max().item() <= 1
    assert unit.x_train.max().item() == 1  # the fixtures' bright patches are 255
    assert none.x_train.max().item() == 255 and standard.x_train.min().item() < 0


def test_normalize_leaves_generated_features_as_they_are():
    xor = {"name": "xor", "n_train": 200, "n_test": 100}
    standard, unit, none = (_data(xor, val_size=40, normalize=mode) for mode in ("standardize", "unit", "none"))
    assert torch.equal(standard.x_train, unit.x_train) and torch.equal(standard.x_train, none.x_train)
    assert standard.x_train.min().item() < 0  # XOR's clusters sit at (±1, ±1), not scaled to [0, 1]


def test_normalize_is_validated():
    with pytest.raises(ConfigError, match=r"data.normalize: 'minmax' is not allowed; choose one of standardize, unit, none"):
        config_from_dict({"data": {"normalize": "minmax"}})
    with pytest.raises(ConfigError, match=r"data.normalize: 'units' is not allowed.*did you mean 'unit'"):
        config_from_dict({"data": {"normalize": "units"}})
    assert config_from_dict({}).data.normalize == "standardize"


def test_xor_is_generated_from_the_seed():
    data = _data({"name": "xor", "n_train": 400, "n_test": 100, "noise": 0.0}, val_size=40)
    assert data.n_features == 2 and data.n_classes == 2
    assert data.x_train.shape == (360, 2) and data.x_val.shape == (40, 2) and data.x_test.shape == (100, 2)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert set(x.abs().flatten().tolist()) == {1.0}  # corners, no noise
        assert torch.equal(y, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long())
        assert 0.3 < y.float().mean().item() < 0.7
    again = _data({"name": "xor", "n_train": 400, "n_test": 100, "noise": 0.0}, val_size=40)
    assert torch.equal(again.x_train, data.x_train)
    noisy = _data({"name": "xor", "noise": 0.25}, split_seed=1)
    assert len(noisy.y_train) + len(noisy.y_val) == 2000 and len(noisy.y_test) == 1000
    assert not torch.equal(noisy.x_test, _data({"name": "xor", "noise": 0.25}, split_seed=2).x_test)


# ----------------------------------------------------------------------------- data import


def _one_line(result, code):
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("name,gz", [("mnist", True), ("fashion_mnist", False)])
def test_import_idx_sets(tmp_path, monkeypatch, name, gz):
    fixture = make_idx_set(seed=5, noise=120 if name == "fashion_mnist" else 35)  # import checks which set it is
    source = fixture.write(tmp_path / "download", gz=gz)
    root = tmp_path / "root"
    line = _one_line(cli("data", "import", name, source, "--root", root), 0)
    target = root / IMAGE_SETS[name].folder
    assert line == f"imported {name} into {target}"
    for filename, content in fixture.files().items():
        assert (target / filename).read_bytes() == content  # stored uncompressed, as torchvision reads them
    monkeypatch.setenv("ACTEXP_DATA", str(root))
    data = _data(name)
    assert torch.equal(data.y_test, torch.as_tensor(fixture.y_test, dtype=torch.int64))
    assert torch.allclose(data.x_test, _normalized(fixture.x_test.reshape(IDX_TEST, -1), name), atol=1e-5)


def test_import_mixed_gzipped_and_plain(tmp_path):
    fixture = make_idx_set(seed=6)
    source = fixture.write(tmp_path / "src")
    (source / "train-images-idx3-ubyte").unlink()
    (source / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(fixture.files()["train-images-idx3-ubyte"]))
    _one_line(cli("data", "import", "mnist", source, "--root", tmp_path / "root"), 0)
    assert (tmp_path / "root/MNIST/raw/train-images-idx3-ubyte").read_bytes() == fixture.files()["train-images-idx3-ubyte"]


def _corrupt(files: dict, case: str) -> dict:
    files = dict(files)
    images, labels = files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"]
    if case == "magic":
        files["train-images-idx3-ubyte"] = (2052).to_bytes(4, "big") + images[4:]
    elif case == "labels as images":
        files["train-images-idx3-ubyte"] = labels
    elif case == "label range":
        files["train-labels-idx1-ubyte"] = labels[:8] + bytes([10]) + labels[9:]
    elif case == "count mismatch":
        files["train-labels-idx1-ubyte"] = idx_bytes(np.zeros(IDX_TRAIN - 1, dtype=np.uint8))
    elif case == "image shape":
        files["train-images-idx3-ubyte"] = idx_bytes(np.zeros((IDX_TRAIN, 27, 27), dtype=np.uint8))
    elif case == "truncated":
        files["t10k-images-idx3-ubyte"] = files["t10k-images-idx3-ubyte"][:-100]
    return files


@pytest.mark.parametrize(
    "case,fragments",
    [
        ("magic", ["train-images-idx3-ubyte", "magic number 2051"]),
        ("labels as images", ["train-images-idx3-ubyte", "magic number 2051"]),
        ("label range", ["train-labels-idx1-ubyte", "outside 0..9"]),
        ("count mismatch", ["600 images but 599 labels"]),
        ("image shape", ["(27, 27)", "(28, 28)"]),
        ("truncated", ["t10k-images-idx3-ubyte", "bytes"]),
    ],
)
def test_import_rejects_bad_content(tmp_path, case, fragments):
    source = tmp_path / "src"
    source.mkdir()
    for filename, content in _corrupt(make_idx_set(seed=7).files(), case).items():
        (source / f"{filename}.gz").write_bytes(gzip.compress(content))
    root = tmp_path / "root"
    line = _one_line(cli("data", "import", "mnist", source, "--root", root), 1)
    for fragment in fragments:
        assert fragment in line, line
    assert not root.exists()  # nothing is written before every file checks out


def test_import_missing_file_and_folder(tmp_path):
    source = make_idx_set(seed=8).write(tmp_path / "src")
    (source / "t10k-labels-idx1-ubyte").unlink()
    line = _one_line(cli("data", "import", "fashion_mnist", source, "--root", tmp_path / "root"), 1)
    assert "t10k-labels-idx1-ubyte" in line and "missing" in line
    line = _one_line(cli("data", "import", "mnist", tmp_path / "nowhere", "--root", tmp_path / "root"), 1)
    assert "nowhere" in line and "not a folder" in line
    line = _one_line(cli("data", "import", "mnsit", source, "--root", tmp_path / "root"), 2)
    assert "did you mean 'mnist'" in line
    line = _one_line(cli("data", "import", "xor", source, "--root", tmp_path / "root"), 1)
    assert "generated from the seed" in line
    (tmp_path / "empty").mkdir()  # CIFAR-100 is downloaded as one archive: the error names it
    line = _one_line(cli("data", "import", "cifar100", tmp_path / "empty", "--root", tmp_path / "root"), 1)
    assert "no cifar-100-python.tar.gz here" in line and "https://www.cs.toronto.edu/~kriz/" in line and "train.gz" not in line
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("form", ["folder", "nested folder", "tar.gz", "gzipped files"])
def test_import_cifar100(tmp_path, monkeypatch, form):
    fixture = make_cifar_set(seed=9)
    files = fixture.files()
    source = tmp_path / "src"
    if form == "folder":
        fixture.write(source)
    elif form == "nested folder":
        fixture.write(source / "cifar-100-python")
    elif form == "gzipped files":
        source.mkdir()
        for filename, content in files.items():
            (source / f"{filename}.gz").write_bytes(gzip.compress(content))
    else:
        source.mkdir()
        with tarfile.open(source / "cifar-100-python.tar.gz", "w:gz") as tar:
            for filename, content in files.items():
                info = tarfile.TarInfo(f"cifar-100-python/{filename}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    root = tmp_path / "root"
    fixture.write(tmp_path / "originals")
    accept_cifar_checksums(monkeypatch, tmp_path / "originals")  # these files play the originals
    line = _one_line(cli("data", "import", "cifar100", source, "--root", root), 0)
    target = root / "cifar-100-python"
    assert line == f"imported cifar100 into {target}"
    assert {p.name for p in target.iterdir()} == {"train", "test", "meta"}
    monkeypatch.setenv("ACTEXP_DATA", str(root))
    data = _data("cifar100")
    assert data.n_features == 3072 and data.n_classes == 100
    assert torch.allclose(data.x_test, _normalized(fixture.x_test, "cifar100"), atol=1e-5)


def test_import_cifar100_rejects_files_torchvision_would_refuse(tmp_path):
    make_cifar_set(seed=9).write(tmp_path / "src")  # right layout, but not the published files' md5
    line = _one_line(cli("data", "import", "cifar100", tmp_path / "src", "--root", tmp_path / "root"), 1)
    assert "not the original file" in line and "md5" in line
    assert not (tmp_path / "root").exists()


def test_import_cifar100_rejects_bad_labels(tmp_path, monkeypatch):
    # The md5 is checked first: these files play the originals, so that the layout checks run.
    fixture = make_cifar_set(seed=10)
    fixture.y_train = [100] + fixture.y_train[1:]
    fixture.write(tmp_path / "src")
    accept_cifar_checksums(monkeypatch, tmp_path / "src")
    line = _one_line(cli("data", "import", "cifar100", tmp_path / "src", "--root", tmp_path / "root"), 1)
    assert "train" in line and "0..99" in line
    fixture = make_cifar_set(seed=10)
    fixture.x_train = fixture.x_train[:, :3000]
    fixture.write(tmp_path / "src2")
    accept_cifar_checksums(monkeypatch, tmp_path / "src2")
    line = _one_line(cli("data", "import", "cifar100", tmp_path / "src2", "--root", tmp_path / "root"), 1)
    assert "3072" in line
    assert not (tmp_path / "root").exists()


# ----------------------------------------------------------------------------- missing datasets


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar100"])
def test_missing_dataset_is_one_line(tmp_path, name):
    root = tmp_path / "data"
    path = write_yaml(tmp_path / "c.yaml", tiny_config(data={"dataset": name, "root": str(root)}))
    started = time.time()
    line = _one_line(cli("train", path, "--runs-dir", tmp_path / "runs"), 1)
    assert time.time() - started < 30
    info = IMAGE_SETS[name]
    assert f"dataset {name} not found in {root / info.folder}" in line
    assert "could not be downloaded" in line and UNREACHABLE in line
    assert "Connection refused" in line or "URLError" in line or "Error" in line  # the download's own failure, not dropped
    for filename in info.files:
        assert filename in line
    assert f"actexp data import {name}" in line
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_without_download(tmp_path):
    root = tmp_path / "data"
    config = config_from_dict({"data": {"dataset": "fashion_mnist", "root": str(root)}})
    with pytest.raises(DatasetMissing) as caught:
        load_data(config.data, "cpu", download=False)
    message = str(caught.value)
    assert "\n" not in message and "is not downloaded" in message
    assert str(root / "FashionMNIST/raw") in message and all(f in message for f in IDX_FILES)


def test_data_download_fails_with_one_line(tmp_path):
    line = _one_line(cli("data", "download", "mnist", "--root", tmp_path / "d"), 1)
    assert "dataset mnist" in line and UNREACHABLE in line
    line = _one_line(cli("data", "download", "xor"), 1)
    assert "nothing to download" in line


def test_partially_present_dataset_is_missing(tmp_path, mnist_set):
    root = tmp_path / "data"
    mnist_set.write(root / "MNIST/raw")
    (root / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    config = config_from_dict({"data": {"dataset": "mnist", "root": str(root)}})
    with pytest.raises(DatasetMissing, match="t10k-labels-idx1-ubyte"):
        load_data(config.data, "cpu", download=False)


def test_a_failed_download_keeps_its_cause_and_actexp_debug_shows_it(tmp_path, monkeypatch):
    """The line says why the download failed; the exception keeps the failure as its cause, and
    ACTEXP_DEBUG=1 shows the traceback with it instead of the one line."""
    root = tmp_path / "data"
    path = write_yaml(tmp_path / "c.yaml", tiny_config(data={"dataset": "mnist", "root": str(root)}))
    with pytest.raises(DatasetMissing) as missing:
        load_data(config_from_dict(tiny_config(data={"dataset": "mnist", "root": str(root)})).data, torch.device("cpu"))
    assert missing.value.__cause__ is not None and "could not be downloaded" in str(missing.value)
    monkeypatch.setenv("ACTEXP_DEBUG", "1")
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert isinstance(result.exception, DatasetMissing) and result.exception.__cause__ is not None
