"""`actexp data import` beyond the corpus: the folder layouts it accepts, writes that fail part-way
(a full disk, Ctrl-C), the files' permissions, `data download` of a damaged set, and the real MNIST
subset when this machine has it."""

from __future__ import annotations

import errno
import gzip
import os
import shutil
from pathlib import Path

import pytest

import actexp.data as data
from actexp.config import config_from_dict
from actexp.data import IMAGE_SETS, import_dataset, load_data
from actexp.errors import DatasetMissing
from conftest import accept_cifar_checksums, cli
from data_files import TRAIN_LABELS, put, snapshot

REAL_MNIST = Path("/work/shared/data/mnist-10k")  # 8,500 + 1,500 real digits, gzipped IDX


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("layout", ["DIR/MNIST", "DIR", "DIR/MNIST/raw"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar100"])
def test_import_from_torchvision_layouts(tmp_path, monkeypatch, mnist_set, fashion_set, cifar_set, name, layout):
    """Another data root, or its dataset folder, imports as well as a folder of the files."""
    elsewhere = tmp_path / "elsewhere"
    mnist_set.write(elsewhere / "MNIST/raw")
    fashion_set.write(elsewhere / "FashionMNIST/raw", gz=True)
    cifar_set.write(elsewhere / "cifar-100-python")
    accept_cifar_checksums(monkeypatch, elsewhere / "cifar-100-python")
    folder = IMAGE_SETS[name].folder  # MNIST/raw, FashionMNIST/raw, cifar-100-python
    source = {"DIR": elsewhere, "DIR/MNIST": elsewhere / folder.split("/")[0], "DIR/MNIST/raw": elsewhere / folder}[layout]
    result = cli("data", "import", name, source, "--root", tmp_path / "root")
    assert result.exit_code == 0, result.output
    for filename in IMAGE_SETS[name].files:
        imported = (tmp_path / "root" / folder / filename).read_bytes()
        original = elsewhere / folder / filename
        assert imported == (original.read_bytes() if original.exists() else gzip.decompress((elsewhere / folder / f"{filename}.gz").read_bytes()))


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_write_failing_part_way_keeps_the_old_files(tmp_path, monkeypatch, mnist_set, failure):
    root = tmp_path / "root"
    mnist_set.write(root / "MNIST/raw")  # imported earlier
    before = snapshot(root)
    source = mnist_set.write(tmp_path / "src", gz=True)
    calls = []

    def fsync(fd):  # the third file's flush to disk fails
        calls.append(fd)
        if len(calls) == 3:
            raise failure

    monkeypatch.setattr(data.os, "fsync", fsync)
    if isinstance(failure, OSError):
        line = one_error_line(cli("data", "import", "mnist", source, "--root", root))
        assert f"{root / 'MNIST/raw/t10k-images-idx3-ubyte'}: could not be written (No space left on device)" in line
    else:
        with pytest.raises(KeyboardInterrupt):
            import_dataset("mnist", source, root)
    assert snapshot(root) == before  # the old files, and no temporary left beside them


def test_imported_files_are_readable_by_all(tmp_path, mnist_set):
    """mkstemp makes its files private; imported data follows the umask like any file."""
    old = os.umask(0o022)
    try:
        import_dataset("mnist", mnist_set.write(tmp_path / "src"), tmp_path / "root")
    finally:
        os.umask(old)
    for path in (tmp_path / "root/MNIST/raw").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644


def test_download_of_a_damaged_set_names_the_file_and_downloads_nothing(tmp_path, mnist_set):
    root = tmp_path / "root"
    folder = mnist_set.write(root / "MNIST/raw")
    put(folder, TRAIN_LABELS, (folder / TRAIN_LABELS).read_bytes()[:-3])
    line = one_error_line(cli("data", "download", "mnist", "--root", root))
    assert f"{folder / TRAIN_LABELS}: 605 bytes, expected 608" in line
    assert "could not be downloaded" not in line and "not found" not in line


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"{REAL_MNIST} not present")
def test_real_mnist_subset(tmp_path):
    root = tmp_path / "root"
    assert cli("data", "import", "mnist", REAL_MNIST, "--root", root).exit_code == 0
    line = one_error_line(cli("data", "import", "fashion_mnist", REAL_MNIST, "--root", root))
    assert "look like MNIST's, not Fashion-MNIST's" in line
    config = config_from_dict({"data": {"dataset": "mnist", "root": str(root), "val_size": 500}}).data
    loaded = load_data(config, "cpu", download=False)
    assert len(loaded.y_train) + len(loaded.y_val) == 8500 and len(loaded.y_test) == 1500
    labels = root / "MNIST/raw" / TRAIN_LABELS
    content = bytearray(labels.read_bytes())
    content[100] = 10
    labels.write_bytes(bytes(content))
    with pytest.raises(DatasetMissing, match="outside 0..9 \\(found 10\\)"):
        load_data(config, "cpu", download=False)
    shutil.rmtree(root)
