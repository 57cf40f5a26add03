"""`actexp data import` beyond the corpus: the folder layouts it accepts, writes that fail part-way
(a full disk, Ctrl-C), the files' permissions, `data download` of a damaged set, torchvision's own
download from a local mirror (and the checks on what it fetched), and the real MNIST subset when
this machine has it."""

from __future__ import annotations

import errno
import functools
import gzip
import hashlib
import http.server
import io
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
import torchvision

import actexp.data as data
from actexp.config import config_from_dict
from actexp.data import IMAGE_SETS, import_dataset, load_data
from actexp.errors import DatasetMissing
from conftest import accept_cifar_checksums, cli
from data_files import TEST_LABELS, TRAIN_LABELS, put, snapshot

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


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server over a folder: torchvision's own downloader runs for real, offline."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def serve_mnist(monkeypatch, folder: Path, url: str, files: dict[str, bytes]) -> None:
    resources = []
    for filename, content in files.items():
        (folder / f"{filename}.gz").write_bytes(gzip.compress(content))
        resources.append((f"{filename}.gz", hashlib.md5((folder / f"{filename}.gz").read_bytes()).hexdigest()))
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)


def test_download_through_torchvision_then_the_same_checks(tmp_path, monkeypatch, mirror, mnist_set, cifar_set):
    folder, url = mirror
    serve_mnist(monkeypatch, folder, url, mnist_set.files())
    archive = folder / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for filename, content in cifar_set.files().items():
            info = tarfile.TarInfo(f"cifar-100-python/{filename}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    cifar_set.write(tmp_path / "originals")
    accept_cifar_checksums(monkeypatch, tmp_path / "originals")
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "url", url + archive.name)
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    root = tmp_path / "root"
    for name in ("mnist", "cifar100"):
        result = cli("data", "download", name, "--root", root)
        assert result.exit_code == 0, result.output
        config = config_from_dict({"data": {"dataset": name, "root": str(root)}}).data
        assert len(load_data(config, "cpu", download=False).y_test) == len(cifar_set.y_test if name == "cifar100" else mnist_set.y_test)


def test_a_downloaded_file_that_fails_the_checks_is_named(tmp_path, monkeypatch, mirror, mnist_set):
    """The mirror's md5 matches (torchvision is satisfied), but a label is 10: caught after the download."""
    folder, url = mirror
    files = mnist_set.files()
    files[TEST_LABELS] = files[TEST_LABELS][:-1] + bytes([10])
    serve_mnist(monkeypatch, folder, url, files)
    root = tmp_path / "root"
    line = one_error_line(cli("data", "download", "mnist", "--root", root))
    assert f"{root / 'MNIST/raw' / TEST_LABELS}: holds labels outside 0..9 (found 10)" in line


def test_an_old_processed_folder_is_checked_too(tmp_path, mnist_set):
    """torchvision still reads MNIST/processed/{training,test}.pt (written by its old versions) when
    there are no raw files; what it returns goes through the same checks."""
    import torch

    processed = tmp_path / "root/MNIST/processed"
    processed.mkdir(parents=True)
    for filename, x, y in (("training.pt", mnist_set.x_train, mnist_set.y_train), ("test.pt", mnist_set.x_test, mnist_set.y_test)):
        torch.save((torch.from_numpy(x), torch.from_numpy(y.astype("int64"))), processed / filename)
    config = config_from_dict({"data": {"dataset": "mnist", "root": str(tmp_path / "root")}}).data
    assert len(load_data(config, "cpu").y_test) == len(mnist_set.y_test)
    y = torch.from_numpy(mnist_set.y_test.astype("int64"))
    y[0] = 10
    torch.save((torch.from_numpy(mnist_set.x_test), y), processed / "test.pt")
    with pytest.raises(DatasetMissing, match=f"{processed}: holds labels outside 0..9 \\(found 10\\)"):
        load_data(config, "cpu")
