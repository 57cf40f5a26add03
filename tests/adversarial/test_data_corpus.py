"""An adversarial corpus of data files, each case through `actexp data import` and through
`actexp train` from a data root holding it.

Every case asserts what a user sees: a non-zero exit, one `error:` line naming the file and the
problem, no traceback, no download attempted (nor "could not be downloaded" / "not found" said of a
file that is there), no run folder left behind, nothing in the data root lost or overwritten, and
no code run from a pickle. The gzip bomb also runs in a subprocess whose peak memory is measured."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from actexp.data import CIFAR_MAX_BYTES, IMAGE_SETS
from conftest import IDX_TRAIN, REPO, accept_cifar_checksums, cli, tiny_config, write_yaml
from data_files import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Evaluates,
    HugeArray,
    RunsCommand,
    cifar_entry,
    dump,
    gzip_bomb,
    idx_header,
    newobj_ndarray_pickle,
    put,
    snapshot,
    sparse_file,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@dataclass
class Ctx:
    """What a damage function may use: the good fixture sets, and where a pickle's code would leave its mark."""

    mnist: object
    fashion: object
    cifar: object
    marker: Path


@dataclass(frozen=True)
class Case:
    id: str
    dataset: str
    damage: Callable[[Path, Ctx], str]  # damages a folder holding the good files; returns the file to name
    fragments: tuple[str, ...]  # what the error line must say besides the file
    via: tuple[str, ...] = ("import", "train")
    patch_md5: bool = True  # CIFAR-100: torchvision's table made to match the damaged files, so the checks behind it run


def read(folder: Path, filename: str) -> bytes:
    return (folder / filename).read_bytes()


def images_of(n: int, value: int = 0, shape=(28, 28)) -> bytes:
    return idx_header(2051, n, *shape) + bytes([value]) * (n * shape[0] * shape[1])


def touch(marker: Path) -> str:
    return f"touch '{marker}'"


# ----------------------------------------------------------------------------- MNIST / Fashion-MNIST


def wrong_magic(f, c):
    return put(f, TRAIN_IMAGES, (2052).to_bytes(4, "big") + read(f, TRAIN_IMAGES)[4:])


def labels_as_images(f, c):
    return put(f, TRAIN_IMAGES, read(f, TRAIN_LABELS))


def empty_images(f, c):
    return put(f, TRAIN_IMAGES, b"")


def empty_labels(f, c):
    return put(f, TEST_LABELS, b"")


def short_header(f, c):
    return put(f, TRAIN_IMAGES, idx_header(2051, IDX_TRAIN)[:10])


def truncated_images(f, c):
    return put(f, TEST_IMAGES, read(f, TEST_IMAGES)[:-100])


def truncated_labels(f, c):
    return put(f, TRAIN_LABELS, read(f, TRAIN_LABELS)[:-1])


def header_too_big(f, c):  # declares 700 images, holds 600
    return put(f, TRAIN_IMAGES, idx_header(2051, 700, 28, 28) + read(f, TRAIN_IMAGES)[16:])


def header_too_small(f, c):  # declares 500 images, holds 600
    return put(f, TRAIN_IMAGES, idx_header(2051, 500, 28, 28) + read(f, TRAIN_IMAGES)[16:])


def header_absurd(f, c):  # declares 4 billion images: nothing may be allocated for them
    return put(f, TRAIN_IMAGES, idx_header(2051, 2**32 - 1, 28, 28) + read(f, TRAIN_IMAGES)[16:])


def count_mismatch(f, c):  # 600 images, 599 labels
    return put(f, TRAIN_LABELS, read(f, TRAIN_LABELS)[:-1].replace(idx_header(2049, IDX_TRAIN), idx_header(2049, IDX_TRAIN - 1), 1))


def label_ten(f, c):
    labels = bytearray(read(f, TRAIN_LABELS))
    labels[8 + 17] = 10
    return put(f, TRAIN_LABELS, bytes(labels))


def label_255(f, c):
    labels = bytearray(read(f, TEST_LABELS))
    labels[-1] = 255
    return put(f, TEST_LABELS, bytes(labels))


def item_27x27(f, c):
    return put(f, TRAIN_IMAGES, images_of(IDX_TRAIN, 30, (27, 27)))


def no_images(f, c):
    put(f, TRAIN_LABELS, idx_header(2049, 0))
    return put(f, TRAIN_IMAGES, idx_header(2051, 0, 28, 28))


def bomb(f, c):  # a valid gzip of the 600 images its header promises, then 256 MiB of zeros
    images = read(f, TRAIN_IMAGES)
    (f / TRAIN_IMAGES).unlink()
    gzip_bomb(f / f"{TRAIN_IMAGES}.gz", images, 256)
    return f"{TRAIN_IMAGES}.gz"


def bad_crc(f, c):
    data = bytearray(gzip.compress(read(f, TRAIN_LABELS)))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    return put(f, TRAIN_LABELS, bytes(data), gz=True)


def truncated_gzip(f, c):
    return put(f, TEST_IMAGES, gzip.compress(read(f, TEST_IMAGES))[:-1000], gz=True)


def not_gzip(f, c):  # a valid IDX file, named .gz
    return put(f, TEST_LABELS, read(f, TEST_LABELS), gz=True)


def gzip_garbage(f, c):  # gzip's magic, then noise
    return put(f, TRAIN_IMAGES, b"\x1f\x8b\x08\x00" + np.random.default_rng(0).bytes(5000), gz=True)


def mnist_files(f, c):  # MNIST's files where Fashion-MNIST's belong
    for filename, content in c.mnist.files().items():
        put(f, filename, content)
    return TRAIN_IMAGES


def fashion_files(f, c):
    for filename, content in c.fashion.files().items():
        put(f, filename, content)
    return TRAIN_IMAGES


def bright_images(f, c):  # neither: a white training set
    return put(f, TRAIN_IMAGES, images_of(IDX_TRAIN, 255))


def fashion_test_split(f, c):  # MNIST's training split with Fashion-MNIST's test split
    put(f, TEST_LABELS, c.fashion.files()[TEST_LABELS])
    return put(f, TEST_IMAGES, c.fashion.files()[TEST_IMAGES])


def missing_and_damaged(f, c):  # one file missing (download would be tried), another damaged: say so, do not download
    (f / TEST_LABELS).unlink()
    return put(f, TRAIN_IMAGES, read(f, TRAIN_IMAGES)[:-1])


IDX_CASES = [
    Case("wrong magic", "mnist", wrong_magic, ("magic number 2051 expected, found 2052",)),
    Case("labels file as images", "mnist", labels_as_images, ("magic number 2051 expected, found 2049",)),
    Case("empty images", "mnist", empty_images, ("empty file",)),
    Case("empty labels", "fashion_mnist", empty_labels, ("empty file",)),
    Case("header cut short", "mnist", short_header, ("shorter than the 16-byte header",)),
    Case("truncated images", "mnist", truncated_images, ("bytes, expected", "truncated")),
    Case("truncated labels", "fashion_mnist", truncated_labels, ("bytes, expected 608",)),
    Case("header declares more", "mnist", header_too_big, ("expected 548816 for the 700 items",)),
    Case("header declares fewer", "mnist", header_too_small, ("goes on past", "500 items")),
    Case("header declares 4 billion", "mnist", header_absurd, ("4294967295 items", "refusing to read it")),
    Case("600 images, 599 labels", "mnist", count_mismatch, ("600 images but 599 labels",)),
    Case("label 10", "mnist", label_ten, ("outside 0..9 (found 10)",)),
    Case("label 255", "fashion_mnist", label_255, ("outside 0..9 (found 255)",)),
    Case("27x27 items", "mnist", item_27x27, ("(27, 27)", "(28, 28)")),
    Case("no images", "mnist", no_images, ("holds no images",)),
    Case("gzip bomb", "mnist", bomb, ("goes on past", "600 items")),
    Case("gzip bad CRC", "mnist", bad_crc, ("damaged gzip file", "CRC")),
    Case("gzip truncated", "fashion_mnist", truncated_gzip, ("damaged gzip file",)),
    Case(".gz not gzip", "mnist", not_gzip, ("not gzip-compressed",)),
    Case("gzip garbage", "mnist", gzip_garbage, ("damaged gzip file",)),
    Case("MNIST as Fashion-MNIST", "fashion_mnist", mnist_files, ("look like MNIST's, not Fashion-MNIST's",)),
    Case("Fashion-MNIST as MNIST", "mnist", fashion_files, ("look like Fashion-MNIST's, not MNIST's",)),
    Case("white images", "mnist", bright_images, ("are not MNIST's", "mean pixel value 1.0000")),
    Case("mixed sets", "mnist", fashion_test_split, ("look like Fashion-MNIST's",)),
    Case("missing and damaged", "mnist", missing_and_damaged, ("bytes, expected",), via=("train",)),
]


# ----------------------------------------------------------------------------- CIFAR-100


def damaged_entry(split: str, change: Callable[[dict], object]):
    def damage(f, c):
        entry = cifar_entry(read(f, split))
        put(f, split, dump(change(entry)))
        return split

    return damage


def malicious_entry(make: Callable[[Ctx], object], where: str = "extra"):
    def damage(f, c):
        entry = cifar_entry(read(f, "train"))
        if where == "labels":
            entry["fine_labels"][3] = make(c)
        else:
            entry[where] = make(c)
        put(f, "train", dump(entry))
        return "train"

    return damage


def with_(key, value):
    return lambda e: {**e, key: value}


def without(key):
    return lambda e: {k: v for k, v in e.items() if k != key}


def truncated_pickle(f, c):
    return put(f, "test", read(f, "test")[:5000])


def empty_pickle(f, c):
    return put(f, "test", b"")


def oversized(f, c):
    sparse_file(f / "train", CIFAR_MAX_BYTES["train"] + 1)
    return "train"


def repacked(f, c):  # the same arrays, pickled again (protocol 4): the md5 differs (torchvision's table unpatched)
    return put(f, "test", pickle.dumps(cifar_entry(read(f, "test")), protocol=4))


def meta_bomb(f, c):  # meta, gzipped, inflating far past any meta file
    gzip_bomb(f / "meta.gz", read(f, "meta"), 8)
    (f / "meta").unlink()
    return "meta.gz"


def not_original_archive(f, c):  # nothing extracted, and an archive that is not the original: no download over it
    for name in ("train", "test", "meta"):
        (f / name).unlink()
    (f.parent / "cifar-100-python.tar.gz").write_bytes(gzip.compress(b"not a tar"))
    return "cifar-100-python.tar.gz"


def tar_of(f: Path, members: dict[str, bytes | str]) -> None:
    """An archive of `members` (bytes: a file; str: a symlink to it) beside the loose files, which
    import then ignores (and whose md5s the tests patch into torchvision's table)."""
    with tarfile.open(f / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def archive_malicious(f, c):
    malicious_entry(lambda c: RunsCommand(touch(c.marker)))(f, c)
    tar_of(f, {name: read(f, name) for name in ("train", "test", "meta")})
    return "cifar-100-python.tar.gz (cifar-100-python/train)"


def archive_symlink(f, c):
    tar_of(f, {"meta": read(f, "meta"), "test": read(f, "test"), "train": "/etc/passwd"})
    return "cifar-100-python.tar.gz"


def archive_truncated(f, c):
    tar_of(f, {name: read(f, name) for name in ("train", "test", "meta")})
    archive = f / "cifar-100-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:20000])
    return "cifar-100-python.tar.gz"


def archive_huge_member(f, c):  # a member that declares 700 MB (and holds 10 bytes)
    info = tarfile.TarInfo("cifar-100-python/train")
    info.size = CIFAR_MAX_BYTES["train"] + 1
    (f / "cifar-100-python.tar.gz").write_bytes(gzip.compress(info.tobuf() + b"0123456789"))
    return "cifar-100-python.tar.gz (cifar-100-python/train)"


CIFAR_CASES = [
    Case("pickle runs os.system", "cifar100", malicious_entry(lambda c: RunsCommand(touch(c.marker))),
         ("holds a pickled object of type posix.system", "refusing to load it")),
    Case("pickle runs os.system, md5 unpatched", "cifar100", malicious_entry(lambda c: RunsCommand(touch(c.marker))),
         ("not the original file", "md5"), patch_md5=False),
    Case("pickle evals among the labels", "cifar100", malicious_entry(lambda c: Evaluates(f"open({str(c.marker)!r}, 'w')"), "labels"),
         ("__builtin__.eval", "refusing to load it")),  # protocol 2 spells builtins as Python 2 did
    Case("pickle of a terabyte array", "cifar100", malicious_entry(lambda c: HugeArray(), "data"),
         ("not a readable pickle", "UnpicklingError")),
    Case("pickle NEWOBJ ndarray", "cifar100", lambda f, c: put(f, "train", newobj_ndarray_pickle()), ("not a readable pickle", "NEWOBJ")),
    Case("object array", "cifar100", damaged_entry("train", lambda e: {**e, "data": e["data"][:2].astype(object)}),
         ("not a readable pickle", "object dtype")),
    Case("list, not dict", "cifar100", damaged_entry("train", lambda e: [e["data"], e["fine_labels"]]), ("holds a list",)),
    Case("no fine_labels", "cifar100", damaged_entry("test", without("fine_labels")), ("not CIFAR-100's layout",)),
    Case("data (N, 3000)", "cifar100", damaged_entry("train", lambda e: {**e, "data": e["data"][:, :3000]}),
         ("data is (1000, 3000) uint8, expected (N, 3072) uint8",)),
    Case("data float32", "cifar100", damaged_entry("test", lambda e: {**e, "data": e["data"].astype(np.float32)}),
         ("float32, expected (N, 3072) uint8",)),
    Case("data a list", "cifar100", damaged_entry("test", with_("data", [1, 2, 3])), ("data is a list",)),
    Case("label 100", "cifar100", damaged_entry("train", lambda e: {**e, "fine_labels": [100] + e["fine_labels"][1:]}),
         ("outside 0..99 (found 100)",)),
    Case("label -1", "cifar100", damaged_entry("test", lambda e: {**e, "fine_labels": e["fine_labels"][:-1] + [-1]}),
         ("outside 0..99 (found -1)",)),
    Case("labels strings", "cifar100", damaged_entry("train", lambda e: {**e, "fine_labels": [str(y) for y in e["fine_labels"]]}),
         ("not a list of integers",)),
    Case("999 labels", "cifar100", damaged_entry("train", lambda e: {**e, "fine_labels": e["fine_labels"][:-1]}),
         ("1000 images but 999 labels",)),
    Case("truncated pickle", "cifar100", truncated_pickle, ("not a readable pickle",)),
    Case("empty pickle", "cifar100", empty_pickle, ("not a readable pickle",)),
    Case("oversized pickle", "cifar100", oversized, ("larger than", "refusing to read it"), patch_md5=False),
    Case("re-pickled copy", "cifar100", repacked, ("not the original file",), patch_md5=False),
    Case("meta gzip bomb", "cifar100", meta_bomb, ("larger than 1048576 bytes",), via=("import",), patch_md5=False),
    Case("archive with a malicious train", "cifar100", archive_malicious, ("posix.system", "refusing to load it"), via=("import",)),
    Case("archive train is a symlink", "cifar100", archive_symlink, ("not a regular file",), via=("import",), patch_md5=False),
    Case("archive truncated", "cifar100", archive_truncated, ("not a readable tar.gz archive",), via=("import",), patch_md5=False),
    Case("archive member of 700 MB", "cifar100", archive_huge_member, ("larger than", "refusing"), via=("import",), patch_md5=False),
    Case("archive not the original", "cifar100", not_original_archive, ("not the original archive",), via=("train",), patch_md5=False),
]

CASES = IDX_CASES + CIFAR_CASES


# ----------------------------------------------------------------------------- the checks


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download attempt is recorded (and fails at once); the tests assert there was none."""
    attempts = []

    def urlopen(request, *args, **kwargs):
        attempts.append(getattr(request, "full_url", request))
        raise OSError("no network in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return attempts


@pytest.fixture
def ctx(tmp_path, mnist_set, fashion_set, cifar_set) -> Ctx:
    return Ctx(mnist_set, fashion_set, cifar_set, tmp_path / "pwned")


def good_set(ctx: Ctx, dataset: str):
    return {"mnist": ctx.mnist, "fashion_mnist": ctx.fashion, "cifar100": ctx.cifar}[dataset]


def prepare(case: Case, ctx: Ctx, folder: Path, monkeypatch) -> Path:
    """The good set in `folder`, damaged by the case; returns the damaged file's path."""
    good_set(ctx, case.dataset).write(folder)
    damaged = folder / case.damage(folder, ctx)
    if case.dataset == "cifar100":
        if case.patch_md5:
            accept_cifar_checksums(monkeypatch, folder)
        else:
            fake_table_for_good_files(monkeypatch, ctx)
    return damaged


def fake_table_for_good_files(monkeypatch, ctx: Ctx) -> None:
    """The good fixture files play the originals (a damaged file then fails the md5 check)."""
    folder = ctx.marker.parent / "originals"
    if not folder.exists():
        ctx.cifar.write(folder)
    accept_cifar_checksums(monkeypatch, folder)


def one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def assert_reported(line: str, damaged: Path | str, case: Case) -> None:
    assert str(damaged) in line, line
    for fragment in case.fragments:
        assert fragment in line, line
    assert "could not be downloaded" not in line and "not found" not in line, line


@pytest.mark.parametrize("case", [c for c in CASES if "import" in c.via], ids=lambda c: c.id)
def test_import(case, ctx, tmp_path, monkeypatch, no_network):
    root = tmp_path / "root"
    good_set(ctx, case.dataset).write(root / IMAGE_SETS[case.dataset].folder)  # imported earlier
    before = snapshot(root)
    damaged = prepare(case, ctx, tmp_path / "src", monkeypatch)
    line = one_error_line(cli("data", "import", case.dataset, tmp_path / "src", "--root", root))
    assert_reported(line, damaged, case)
    assert snapshot(root) == before  # nothing lost or replaced, no temporary left
    assert not ctx.marker.exists() and not no_network


@pytest.mark.parametrize("case", [c for c in CASES if "train" in c.via], ids=lambda c: c.id)
def test_train(case, ctx, tmp_path, monkeypatch, no_network):
    root = tmp_path / "root"
    folder = root / IMAGE_SETS[case.dataset].folder
    damaged = prepare(case, ctx, folder, monkeypatch)
    if not damaged.exists():  # the case damaged something beside the dataset's folder
        damaged = root / damaged.name
    before = snapshot(root)
    monkeypatch.setenv("ACTEXP_DATA", str(root))
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data={"dataset": case.dataset}))
    line = one_error_line(cli("train", config, "--runs-dir", tmp_path / "runs"))
    assert_reported(line, damaged, case)
    assert "actexp data import" in line  # the fix
    assert not list((tmp_path / "runs").rglob("summary.json"))  # no run folder, least of all a `running` one
    assert snapshot(root) == before
    assert not ctx.marker.exists() and not no_network


def test_corpus_size():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


def test_the_good_sets_pass(ctx, tmp_path, monkeypatch):
    """The corpus' starting point: every good fixture set imports and trains (so each case's error is its damage's)."""
    for dataset in ("mnist", "fashion_mnist", "cifar100"):
        source = tmp_path / dataset
        good_set(ctx, dataset).write(source)
        if dataset == "cifar100":
            accept_cifar_checksums(monkeypatch, source)
        result = cli("data", "import", dataset, source, "--root", tmp_path / "root")
        assert result.exit_code == 0, result.output
    monkeypatch.setenv("ACTEXP_DATA", str(tmp_path / "root"))
    config = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 1}))
    assert cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet").exit_code == 0


# ----------------------------------------------------------------------------- memory


# The child's own peak resident set size, read where it ends: ru_maxrss (getrusage of children,
# os.wait4) would not do, since Linux carries the parent's high-water mark into a forked child
# across exec (a bare `actexp --help` spawned from this torch-laden process "peaks" near 700 MB).
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as f:
        kb = next(line for line in f if line.startswith("VmHWM:")).split()[1]
    with open(os.environ["ACTEXP_TEST_PEAK"], "w") as out:
        out.write(kb)
atexit.register(peak)
sys.argv[0] = "actexp"
runpy.run_module("actexp", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_gzip_bomb_import_stays_small(tmp_path, mnist_set):
    """A 2 MB .gz inflating to 2 GiB through `actexp data import` in a subprocess: refused after
    reading what its header promises, with that process' peak RSS far below the bomb's size, quickly."""
    source = mnist_set.write(tmp_path / "src")
    prefix = read(source, TRAIN_IMAGES)
    (source / TRAIN_IMAGES).unlink()
    gzip_bomb(source / f"{TRAIN_IMAGES}.gz", prefix, 2048)
    assert (source / f"{TRAIN_IMAGES}.gz").stat().st_size < 4 * 2**20
    with gzip.open(source / f"{TRAIN_IMAGES}.gz") as f:  # a real gzip: the promised images, then zeros
        assert f.read(len(prefix) + 4096) == prefix + bytes(4096)

    root = tmp_path / "root"
    peak_file = tmp_path / "peak_kb"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, "data", "import", "mnist", str(source), "--root", str(root)],
                            env={**ENV, "ACTEXP_TEST_PEAK": str(peak_file)}, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    peak_mb = int(peak_file.read_text()) / 1024
    print(f"gzip bomb (2 GiB inflated): peak RSS {peak_mb:.0f} MB, {elapsed:.1f} s")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert len(output.strip().splitlines()) == 1 and output.startswith("error: "), output
    assert f"{TRAIN_IMAGES}.gz: goes on past" in output
    assert peak_mb < 600 and elapsed < 30
    assert not root.exists()


def test_the_payloads_are_live(tmp_path):
    """The corpus' malicious pickles do run their code under a plain pickle.loads (what torchvision's
    CIFAR100 and the old import did), so the marker's absence above means something."""
    for payload in (RunsCommand(touch(tmp_path / "ran")), Evaluates(f"open({str(tmp_path / 'evaluated')!r}, 'w')")):
        pickle.loads(dump({"data": payload}), encoding="latin1")
    assert (tmp_path / "ran").exists() and (tmp_path / "evaluated").exists()
