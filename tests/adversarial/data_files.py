"""Hostile data files for the adversarial data tests: IDX files that lie, gzip that is not, gzip
bombs written without ever holding them, and pickles that would run code."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)


def put(folder: Path, filename: str, content: bytes, gz: bool = False) -> str:
    """Replace a file of the set (in whichever form it was there) by `content`, stored as given:
    `gz` names it .gz without compressing (the caller compresses, or deliberately does not)."""
    for old in (folder / filename, folder / f"{filename}.gz"):
        old.unlink(missing_ok=True)
    name = f"{filename}.gz" if gz else filename
    (folder / name).write_bytes(content)
    return name


def gzip_bomb(path: Path, prefix: bytes, zeros_mib: int) -> None:
    """A valid gzip file (right CRC and length) of `prefix` followed by `zeros_mib` MiB of zeros,
    written in a fraction of a second without holding more than 1 MiB: after a full flush the
    deflate stream of a MiB of zeros is the same bytes every time, so it is compressed once and
    repeated (about 1 kB per MiB)."""
    chunk = bytes(2**20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head)  # gzip header: deflate, no name
        for _ in range(zeros_mib):
            f.write(block)
            crc = zlib.crc32(chunk, crc)
        f.write(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the final (empty) block
        f.write(struct.pack("<II", crc, (len(prefix) + zeros_mib * 2**20) & 0xFFFFFFFF))


def sparse_file(path: Path, size: int) -> None:
    """A file of `size` bytes that takes no disk space (and no time to write)."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


class RunsCommand:
    """Pickles as os.system(command): what a crafted file would run on a plain pickle.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Evaluates:
    """Pickles as builtins.eval(source)."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


class HugeArray:
    """Pickles as numpy's own array reconstruction, asked for a terabyte."""

    def __reduce__(self):
        return (np.ndarray(0).__reduce__()[0], (np.ndarray, (10**12,), b"B"))


def newobj_ndarray_pickle() -> bytes:
    """{'data': ndarray.__new__(ndarray, 10**12)} as pickle opcodes (pickle itself will not write
    NEWOBJ for a class other than the object's): a terabyte array through numpy.ndarray alone."""
    terabyte = pickle.dumps((10**12,), protocol=2)[2:-1]  # LONG1 10**12, TUPLE1, BINPUT
    return b"\x80\x02}X\x04\x00\x00\x00datacnumpy\nndarray\n" + terabyte + b"\x81s."  # NEWOBJ, SETITEM


def cifar_entry(content: bytes) -> dict:
    """A trusted fixture pickle, as a dict to damage (the tests' own files only)."""
    return pickle.loads(content, encoding="latin1")


def dump(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)  # as conftest writes CIFAR-100's files


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with its content's md5 (size and mtime for big sparse ones)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            if stat.st_size > 64 * 2**20:
                files[str(path.relative_to(root))] = f"{stat.st_size}:{stat.st_mtime_ns}"
            else:
                files[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return files
