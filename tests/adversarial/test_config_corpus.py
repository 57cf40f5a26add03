"""Hostile configs and --set overrides: every file read is possibly hostile. Each case exits 2 with
exactly one line, `error: ...`, naming the file and the key, without a traceback, well under 2 s,
before any data is touched or any run folder made; the ones that used to take gigabytes or hang
(alias bombs, /dev/zero, a FIFO) also run in a child process whose own peak memory is measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli, tiny_config, write_yaml

SECONDS = 2.0  # CPU seconds of the calling thread per CLI call (the refusals take milliseconds): neither
# other processes on a busy machine nor torch's idle threads spinning count


def _bomb(levels: int = 9, fan: int = 10) -> str:
    """Billion laughs: anchor i is a list of `fan` aliases to anchor i-1, 10^9 strings in ~1 KB."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _flow_bomb(levels: int = 7) -> str:
    """The same in one flow value (what fits in --set model.hidden=...)."""
    parts = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _merge_bomb(n: int = 3000) -> str:
    """Merge keys: each mapping merges the previous one, so the last holds n keys and all hold n²/2."""
    return "\n".join(["m0: &m0 {k0: 1}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: 1}}" for i in range(1, n)]) + "\n"


def _block_nest(depth: int) -> str:
    return "".join(f"{'  ' * i}a:\n" for i in range(depth)) + "  " * depth + "b: 1\n"


DEEP_LIST = "model:\n  hidden: " + "[" * 20_000 + "]" * 20_000 + "\n"
DEEP_MAP = "model: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n"
PWNED = "pwned"  # the file a python/object tag would create if it ran

# (id, YAML text, fragments the one line must hold besides the file's path)
BAD_FILES = [
    # aliases, nesting, size of the document
    ("alias bomb", _bomb(), ["more than 20,000 values", "nested aliases"]),
    ("alias bomb under model.hidden", f"model:\n  hidden: {_flow_bomb()}\n", ["more than 20,000 values"]),
    ("alias bomb of mappings", "\n".join(["b0: &b0 {x: 1, y: 2, z: 3}"] + [f"b{i}: &b{i} {{x: *b{i-1}, y: *b{i-1}, z: *b{i-1}, w: *b{i-1}}}" for i in range(1, 12)]) + "\n", ["more than 20,000 values"]),
    ("merge-key bomb", _merge_bomb(), ["more than 20,000 values"]),
    ("recursive alias in a list", "model:\n  hidden: &a [1, *a]\n", ["alias *a", "holds it"]),
    ("recursive alias in a mapping", "model: &m\n  hidden: [8]\n  extra: *m\n", ["alias *m", "holds it"]),
    ("deep flow sequence", DEEP_LIST, ["nests deeper than 100 levels"]),
    ("deep flow mapping", DEEP_MAP, ["nests deeper than 100 levels"]),
    ("deep block mapping", _block_nest(150), ["nests deeper than 100 levels"]),
    ("a list of 150,000 values", "model:\n  hidden: [" + "1," * 150_000 + "1]\n", ["more than 20,000 values"]),
    ("undefined alias", "model:\n  hidden: *nowhere\n", ["YAML syntax error", "alias"]),
    ("two documents", "name: a\n---\nname: b\n", ["YAML syntax error"]),
    ("NUL in the text", "name: a\x00b\n", ["YAML syntax error"]),
    # tags that would construct Python objects (a safe loader has no constructor for them)
    ("python/object/apply", f'name: !!python/object/apply:os.system ["touch {PWNED}"]\n', ["YAML syntax error", "python/object/apply"]),
    ("python/object/apply at the top", f'!!python/object/apply:os.system ["touch {PWNED}"]\n', ["YAML syntax error"]),
    ("python/object/new", f'name: !!python/object/new:subprocess.Popen [["touch", "{PWNED}"]]\n', ["YAML syntax error", "python/object/new"]),
    ("python/name", "name: !!python/name:os.system\n", ["YAML syntax error", "python/name"]),
    ("python/module", "name: !!python/module:os\n", ["YAML syntax error"]),
    ("local tag", "name: !shell touch pwned\n", ["YAML syntax error"]),
    # values the YAML constructors build (or fail to)
    ("date for a string", "name: 2024-01-01\n", ["name", "a date (2024-01-01"]),
    ("impossible date", "name: 2024-13-45\n", ["a YAML value cannot be read", "month"]),
    ("5000-digit integer", "train:\n  epochs: " + "9" * 5000 + "\n", ["a YAML value cannot be read", "4300 digits"]),
    ("binary for a string", "name: !!binary aGVsbG8=\n", ["name", "expected a string", "bytes"]),
    ("set for a section", "model: !!set {a, b}\n", ["model", "expected a mapping", "set"]),
    ("omap for a list", "model:\n  hidden: !!omap [a: 1]\n", ["model.hidden[0]", "expected an integer"]),
    # names that are not one plain folder under the runs folder
    ("name ..", "name: ..\n", ["name", "not a usable folder name", "dots alone"]),
    ("name .", "name: .\n", ["name", "not a usable folder name"]),
    ("name ...", "name: ...\n", ["name", "not a usable folder name"]),
    ("name a/b", "name: a/b\n", ["name", "not a usable folder name"]),
    ("name ../x", "name: ../x\n", ["name", "not a usable folder name"]),
    ("name /abs", "name: /tmp/x\n", ["name", "not a usable folder name"]),
    ("name with a backslash", "name: 'a\\b'\n", ["name", "not a usable folder name"]),
    ("name with a trailing newline", 'name: "evil\\n"\n', ["name", "'evil\\n'", "not a usable folder name"]),
    ("name with a carriage return", 'name: "evil\\r"\n', ["name", "not a usable folder name"]),
    ("name with a tab", 'name: "a\\tb"\n', ["name", "not a usable folder name"]),
    ("name with a NUL", 'name: "a\\0b"\n', ["name", "not a usable folder name"]),
    ("name with a space", "name: a b\n", ["name", "not a usable folder name"]),
    ("name of one-dot leaders", 'name: "\\u2024\\u2024"\n', ["name", "not a usable folder name"]),
    ("name of fullwidth dots", "name: ．．\n", ["name", "not a usable folder name"]),
    ("name with a right-to-left override", 'name: "a\\u202eb"\n', ["name", "not a usable folder name"]),
    ("name of 201 characters", f"name: {'n' * 201}\n", ["name", "201 characters, at most 200"]),
    ("name of 100,000 characters", f"name: {'n' * 100_000}\n", ["name", "100000 characters, at most 200"]),
    ("name empty", "name: ''\n", ["name", "empty"]),
    ("name an integer", "name: 123\n", ["name", "expected a string", "int 123"]),
    ("name a list", "name: [a]\n", ["name", "expected a string", "a list"]),
    ("name a mapping", "name: {a: b}\n", ["name", "expected a string", "a mapping"]),
    ("name null", "name: null\n", ["name", "expected a string"]),
    ("name a boolean", "name: yes\n", ["name", "expected a string", "boolean"]),
    # wrong types in every section
    ("data a number", "data: 5\n", ["data", "expected a mapping"]),
    ("model a string", "model: x\n", ["model", "expected a mapping"]),
    ("optim a list", "optim: [1]\n", ["optim", "expected a mapping"]),
    ("regularization a boolean", "regularization: true\n", ["regularization", "expected a mapping"]),
    ("train a number", "train: 3.5\n", ["train", "expected a mapping"]),
    ("early_stopping a number", "train:\n  early_stopping: 5\n", ["train.early_stopping", "expected a mapping"]),
    ("dataset a number", "data:\n  dataset: 5\n", ["data.dataset", "expected a dataset name"]),
    ("root a list", "data:\n  root: [a]\n", ["data.root", "expected a string"]),
    ("dropout a string", "model:\n  dropout: lots\n", ["model.dropout", "expected a number"]),
    ("the whole file a string", "just words\n", ["expected a mapping of sections"]),
    # unknown keys
    ("unknown section", "foo: 1\n", ["foo", "unknown key"]),
    ("unknown data key", "data:\n  foo: 1\n", ["data.foo", "unknown key"]),
    ("unknown regularization key", "regularization:\n  l3: 1\n", ["regularization.l3", "unknown key"]),
    ("unknown optimizer parameter", "optim:\n  optimizer: {name: adam, foo: 1}\n", ["optim.optimizer.foo", "adam has no parameter"]),
    ("unknown key with a newline", 'model:\n  "a\\nb": 1\n', ["model.'a\\nb'", "unknown key"]),
    ("unknown key of 10,000 characters", f"model:\n  ? {'k' * 10_000}\n  : 1\n", ["model.'kkk", "unknown key"]),
    ("unknown integer key", "model:\n  1: 2\n", ["model.1", "unknown key"]),
    ("unknown null key", "model:\n  ~: 2\n", ["model.None", "unknown key"]),
    # sizes that would allocate gigabytes to terabytes, and other out-of-range values
    ("depth 1000000", "model:\n  depth: 1000000\n  width: 8\n", ["model.depth", "1000000 is out of range", "[1, 1000]"]),
    ("width 1e9", "model:\n  depth: 2\n  width: 1000000000\n", ["model.width", "out of range", "[1, 1000000]"]),
    ("hidden width 1e9", "model:\n  hidden: [1000000000]\n", ["model.hidden[0]", "out of range"]),
    ("1001 hidden layers", "model:\n  hidden: [" + ", ".join(["4"] * 1001) + "]\n", ["model.hidden", "1001 hidden layers; at most 1000"]),
    ("maxout k 1e9", "model:\n  activation: {name: maxout, k: 1000000000}\n", ["model.activation.k", "out of range", "[2, 64]"]),
    ("xor n_train 1e11", "data:\n  dataset: {name: xor, n_train: 100000000000}\n", ["data.dataset.n_train", "out of range", "[8, 10000000]"]),
    ("xor n_test 1e11", "data:\n  dataset: {name: xor, n_test: 100000000000}\n", ["data.dataset.n_test", "out of range"]),
    ("xor n_train 1e11 written 1e11", "data:\n  dataset: {name: xor, n_train: 1e11}\n", ["data.dataset.n_train", "expected an integer"]),
    ("batch_size 1e8", "train:\n  batch_size: 100000000\n", ["train.batch_size", "out of range"]),
    ("epochs 1e7", "train:\n  epochs: 10000000\n", ["train.epochs", "out of range"]),
    ("val_size 1e9", "data:\n  val_size: 1000000000\n", ["data.val_size", "out of range"]),
    ("subset 1e9", "data:\n  subset: 1000000000\n", ["data.subset", "out of range"]),
    ("patience 1e9", "train:\n  early_stopping: {patience: 1000000000}\n", ["train.early_stopping.patience", "out of range"]),
    ("step_size 1e9", "optim:\n  schedule: {name: step, step_size: 1000000000}\n", ["optim.schedule.step_size", "out of range"]),
    ("epochs 10^400", "train:\n  epochs: 1" + "0" * 400 + "\n", ["train.epochs", "about 10^400 is out of range"]),
    ("seed -10^400", "train:\n  seed: -1" + "0" * 400 + "\n", ["train.seed", "out of range"]),
    ("epochs 1e400", "train:\n  epochs: 1e400\n", ["train.epochs", "expected an integer"]),
    ("negative width", "model:\n  hidden: [-5]\n", ["model.hidden[0]", "out of range"]),
    ("batch_size 0", "train:\n  batch_size: 0\n", ["train.batch_size", "out of range"]),
    ("batch_size -1", "train:\n  batch_size: -1\n", ["train.batch_size", "out of range"]),
    ("xor n_train 0", "data:\n  dataset: {name: xor, n_train: 0}\n", ["data.dataset.n_train", "out of range"]),
    ("seed -1", "train:\n  seed: -1\n", ["train.seed", "out of range"]),
    # not numbers, and booleans for numbers
    ("lr nan", "optim:\n  lr: .nan\n", ["optim.lr", "expected a finite number"]),
    ("lr inf", "optim:\n  lr: .inf\n", ["optim.lr", "expected a finite number"]),
    ("lr -inf", "optim:\n  lr: -.inf\n", ["optim.lr", "expected a finite number"]),
    ("lr 1e400", "optim:\n  lr: 1e400\n", ["optim.lr", "expected a finite number"]),
    ("dropout nan in a list", "model:\n  hidden: [8, 8]\n  dropout: [0.1, .nan]\n", ["model.dropout[1]", "finite"]),
    ("epochs true", "train:\n  epochs: true\n", ["train.epochs", "expected an integer", "boolean"]),
    ("width true", "model:\n  hidden: [true]\n", ["model.hidden[0]", "expected an integer", "boolean"]),
    ("maxout k true", "model:\n  activation: {name: maxout, k: true}\n", ["model.activation.k", "boolean"]),
    ("lr false", "optim:\n  lr: false\n", ["optim.lr", "boolean"]),
    # penalty lists (one value per weight matrix, or per hidden layer for activity penalties)
    ("l2 list too short", "model:\n  hidden: [8, 8]\nregularization:\n  l2: [0.1]\n", ["regularization.l2", "1 value for 3 weight matrices", "give a list of 3"]),
    ("l1 list too long", "model:\n  hidden: [8]\nregularization:\n  l1: [0.1, 0.1, 0.1]\n", ["regularization.l1", "3 values for 2 weight matrices"]),
    ("activity list of the weight matrices", "model:\n  hidden: [8]\nregularization:\n  activity_l1: [0.1, 0.1]\n", ["regularization.activity_l1", "2 values for 1 hidden layer"]),
    ("penalty list empty", "regularization:\n  l2: []\n", ["regularization.l2", "non-empty list"]),
    ("penalty list of 19,000 values", "model:\n  hidden: [8]\nregularization:\n  l2: [" + "0.1," * 18_999 + "0.1]\n", ["regularization.l2", "a list of 19000 values", "at most 1001"]),
    ("penalty list of 1001 values", "model:\n  hidden: [8]\nregularization:\n  l1: [" + "0," * 1000 + "0]\n", ["regularization.l1", "1001 values for 2 weight matrices"]),
    ("hidden list of 19,000 widths", "model:\n  hidden: [" + "8," * 18_999 + "8]\n", ["model.hidden", "a list of 19000 values", "at most 1001"]),
    ("penalty list of 150,000 values", "regularization:\n  l1: [" + "0," * 150_000 + "0]\n", ["more than 20,000 values"]),
    ("penalty list alias bomb", f"regularization:\n  l2: {_flow_bomb()}\n", ["more than 20,000 values"]),
    ("negative in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l1: [0.1, -1]\n", ["regularization.l1[1]", "out of range"]),
    ("-inf in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l2: [-.inf, 0]\n", ["regularization.l2[0]", "finite"]),
    ("nan in an activity list", "model:\n  hidden: [8]\nregularization:\n  activity_l2: [.nan]\n", ["regularization.activity_l2[0]", "finite"]),
    ("1e400 in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l2: [1e400, 0]\n", ["regularization.l2[0]", "finite"]),
    ("string in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l1: [0.1, lots]\n", ["regularization.l1[1]", "expected a number", "'lots'"]),
    ("boolean in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l2: [true, 0]\n", ["regularization.l2[0]", "expected a number", "boolean"]),
    ("null in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l2: [0.1, null]\n", ["regularization.l2[1]", "expected a number", "null"]),
    ("nested list in a penalty list", "model:\n  hidden: [8]\nregularization:\n  l1: [[0.1], 0]\n", ["regularization.l1[0]", "expected a number", "a list"]),
    ("mapping for a penalty", "regularization:\n  l1: {a: 1}\n", ["regularization.l1", "expected a number", "a mapping"]),
    ("string for a penalty", "regularization:\n  activity_l1: strong\n", ["regularization.activity_l1", "expected a number"]),
    # input scaling
    ("normalize unknown", "data:\n  normalize: minmax\n", ["data.normalize", "choose one of standardize, unit, none"]),
    ("normalize a number", "data:\n  normalize: 255\n", ["data.normalize", "is not allowed"]),
    ("normalize a list", "data:\n  normalize: [unit]\n", ["data.normalize", "is not allowed"]),
    # devices
    ("device with a newline", 'train:\n  device: "cpu\\n"\n', ["train.device", "'cpu\\n' is not a device"]),
    ("device index of 20 digits", "train:\n  device: cuda:99999999999999999999\n", ["train.device", "is not a device"]),
]


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo.yaml")
    return tmp_path / "fifo.yaml"


def _sparse(tmp_path: Path) -> Path:
    path = tmp_path / "sparse.yaml"
    with path.open("wb") as f:
        f.truncate(100 * 2**30)  # 100 GB of holes: the size alone refuses it
    return path


def _symlink(target) -> callable:
    def make(tmp_path: Path) -> Path:
        (tmp_path / "link.yaml").symlink_to(target if isinstance(target, str) else tmp_path / target)
        return tmp_path / "link.yaml"

    return make


def _bytes(content: bytes, name: str = "bad.yaml") -> callable:
    def make(tmp_path: Path) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    return make


def _no_name_file(name: str) -> callable:
    """A valid config without a name, in a file whose stem becomes the run's name."""

    def make(tmp_path: Path) -> Path:
        config = tiny_config()
        del config["name"]
        return write_yaml(tmp_path / name, config)

    return make


# (id, a function making the path in tmp_path, fragments besides the path)
BAD_PATHS = [
    ("FIFO", _fifo, ["named pipe (FIFO), not a regular file"]),
    ("/dev/zero", lambda tmp_path: Path("/dev/zero"), ["character device, not a regular file"]),
    ("/dev/null", lambda tmp_path: Path("/dev/null"), ["not a regular file"]),
    ("a link to /dev/zero", _symlink("/dev/zero"), ["character device, not a regular file"]),
    ("a link to itself", _symlink("link.yaml"), ["cannot be read"]),
    ("a folder", lambda tmp_path: (tmp_path / "folder.yaml").mkdir() or tmp_path / "folder.yaml", []),
    ("2 MB of comments", _bytes(b"# padding\n" * 200_000), ["larger than 1 MB"]),
    ("100 GB sparse file", _sparse, ["larger than 1 MB"]),
    ("random binary", _bytes(bytes(range(256)) * 4), ["not UTF-8"]),
    ("latin-1 text", _bytes("name: caf\xe9\n".encode("latin-1")), ["not UTF-8", "0xe9"]),
    ("UTF-16 text", _bytes("name: x\n".encode("utf-16")), ["not UTF-8"]),
    ("a file called ..yaml", _no_name_file("..yaml"), ["name: '.'", "not a usable folder name"]),
    ("a file called ...yaml", _no_name_file("...yaml"), ["name: '..'", "not a usable folder name"]),
]
if os.path.exists("/proc/self/pagemap"):  # a regular file that claims size 0 and reads for terabytes
    BAD_PATHS.append(("/proc/self/pagemap", lambda tmp_path: Path("/proc/self/pagemap"), []))

# (id, --set overrides on a good config, fragments besides the path)
BAD_OVERRIDES = [
    ("no equals sign", ["optim.lr"], ["--set 'optim.lr'", "KEY=VALUE"]),
    ("empty key", ["=5"], ["--set '=5'", "KEY=VALUE"]),
    ("blank key", ["  =5"], ["KEY=VALUE"]),
    ("a..b", ["optim..lr=1"], ["'optim..lr'", "empty part"]),
    (".a", [".lr=1"], ["empty part"]),
    ("a.", ["optim.=1"], ["empty part"]),
    ("a key through a list", ["model.hidden.0=5"], ["model.hidden", "expected a list"]),
    ("a key through a number", ["optim.lr.x=1"], ["optim.lr", "expected a number"]),
    ("a key through a name", ["name.x=1"], ["name", "expected a string"]),
    ("unknown section", ["trian.epochs=3"], ["trian", "unknown key"]),
    ("key with a newline", ["optim.l\nr=1"], ["optim.'l\\nr'", "unknown key"]),
    ("alias bomb value", [f"model.hidden={_flow_bomb()}"], ["--set 'model.hidden=", "more than 20,000 values"]),
    ("alias bomb of a whole section", ["model=" + _bomb()], ["more than 20,000 values"]),
    ("deep nesting value", ["model.hidden=" + "[" * 20_000 + "]" * 20_000], ["nests deeper than 100 levels"]),
    ("recursive alias value", ["model.hidden=&a [1, *a]"], ["alias *a", "holds it"]),
    ("python tag value", [f'name=!!python/object/apply:os.system ["touch {PWNED}"]'], ["name", "not a usable folder name"]),
    ("5000-digit value", ["train.epochs=" + "9" * 5000], ["train.epochs", "expected an integer"]),
    ("name ..", ["name=.."], ["name", "not a usable folder name"]),
    ("name with a newline", ['name="evil\\n"'], ["name", "not a usable folder name"]),
    ("name of 300 characters", ["name=" + "n" * 300], ["name", "300 characters"]),
    ("name a list", ["name=[a]"], ["name", "expected a string"]),
    ("depth 1000000", ["model.depth=1000000"], ["model.depth", "out of range"]),
    ("width 1e9", ["model.width=1000000000"], ["model.width", "out of range"]),
    ("maxout k 1e9", ["model.activation={name: maxout, k: 1000000000}"], ["model.activation.k", "out of range"]),
    ("xor 1e11", ["data.dataset={name: xor, n_train: 100000000000}"], ["data.dataset.n_train", "out of range"]),
    ("batch_size nan", ["train.batch_size=.nan"], ["train.batch_size", "expected an integer"]),
    ("lr inf", ["optim.lr=.inf"], ["optim.lr", "finite"]),
    ("epochs a boolean", ["train.epochs=yes"], ["train.epochs", "boolean"]),
    ("penalty list of the wrong length", ["regularization.l2=[0.1, 0.1, 0.1]"], ["regularization.l2", "3 values for 2 weight matrices"]),
    ("depth that no longer fits a penalty list", ["regularization.l1=[0.1, 0]", "model.depth=3"], ["regularization.l1", "2 values for 4 weight matrices"]),
    ("penalty list alias bomb", [f"regularization.l2={_flow_bomb()}"], ["more than 20,000 values"]),
    ("normalize unknown", ["data.normalize=x/255"], ["data.normalize", "choose one of"]),
]


# ----------------------------------------------------------------------------- checks


@pytest.fixture
def deadline():
    """A hang (a FIFO opened for reading, an endless read) fails the test instead of the suite."""

    def expire(signum, frame):
        raise TimeoutError("the config check did not finish in 10 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 10)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _refused(args, path: Path, fragments, limit: float = SECONDS) -> str:
    """The CLI call refuses in one line naming `path` and each fragment, exit 2, within `limit` CPU seconds."""
    start = time.thread_time()
    result = cli(*args)
    seconds = time.thread_time() - start
    assert result.exit_code == 2, result.output[:2000]
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output[:2000]
    line = lines[0]
    assert line.startswith("error: ") and len(line) < 1000, line[:2000]
    assert str(path) in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert seconds < limit, f"{seconds:.2f} s: {line}"
    return line


def _check(tmp_path: Path, path: Path, fragments, overrides=()) -> None:
    sets = [arg for o in overrides for arg in ("--set", o)]
    runs = tmp_path / "runs"
    _refused(["validate", path, *sets], path, fragments)
    _refused(["train", path, "--runs-dir", runs, *sets], path, fragments)
    assert not runs.exists()
    assert not (tmp_path / "empty-data-root").exists()  # $ACTEXP_DATA (conftest): no data was touched
    assert not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("text,fragments", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_file(tmp_path, deadline, text, fragments):
    path = write_yaml(tmp_path / "bad.yaml", text)
    _check(tmp_path, path, fragments)


@pytest.mark.parametrize("make,fragments", [c[1:] for c in BAD_PATHS], ids=[c[0] for c in BAD_PATHS])
def test_bad_path(tmp_path, deadline, make, fragments):
    _check(tmp_path, make(tmp_path), fragments)


@pytest.mark.parametrize("overrides,fragments", [c[1:] for c in BAD_OVERRIDES], ids=[c[0] for c in BAD_OVERRIDES])
def test_bad_override(tmp_path, deadline, overrides, fragments):
    path = write_yaml(tmp_path / "ok.yaml", tiny_config())
    _check(tmp_path, path, fragments, overrides)


def test_the_corpus_is_large():
    assert len(BAD_FILES) + len(BAD_PATHS) + len(BAD_OVERRIDES) >= 60


def test_sweep_files_are_read_the_same_way(tmp_path, deadline):
    # A sweep file and the base config it names go through read_yaml too.
    bomb = write_yaml(tmp_path / "bomb.yaml", _bomb())
    sweep = write_yaml(tmp_path / "sweep.yaml", {"base": "bomb.yaml", "grid": {"optim.lr": [0.1, 0.01]}})
    line = _refused(["validate", sweep], bomb, ["more than 20,000 values"])
    assert line
    _refused(["sweep", sweep, "--runs-dir", tmp_path / "runs"], bomb, ["more than 20,000 values"])
    fifo = _fifo(tmp_path)
    _refused(["sweep", fifo, "--runs-dir", tmp_path / "runs"], fifo, [])
    assert not (tmp_path / "runs").exists()


def test_good_files_still_load(tmp_path):
    from actexp.config import load_config, read_yaml

    # Aliases within the bound load, and each use is a copy of its own: an override changes one place.
    shared = write_yaml(tmp_path / "shared.yaml", "model:\n  hidden: [8]\n  init: &i {name: normal, std: 0.1}\n  bias_init: *i\n")
    config = load_config(shared, ["model.init.std=0.5"])
    assert config.model.init.params["std"] == 0.5 and config.model.bias_init.params["std"] == 0.1
    # 100 levels are read (and then refused as an unknown key), 101 are not read.
    assert "x: unknown key" in cli("validate", write_yaml(tmp_path / "n100.yaml", _block_nest(99).replace("a:", "x:", 1))).output
    assert "nests deeper than 100" in cli("validate", write_yaml(tmp_path / "n101.yaml", _block_nest(100))).output
    assert cli("validate", write_yaml(tmp_path / "utf8.yaml", "# café, naïve\nmodel:\n  hidden: [8]\n")).exit_code == 0
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfmodel:\n  hidden: [8]\n")
    assert cli("validate", bom).exit_code == 0
    assert load_config(write_yaml(tmp_path / "wide.yaml", "model:\n  depth: 1000\n  width: 1000000\n")).model.hidden[-1] == 1_000_000
    # The value bound leaves room for the largest real documents: a config with every per-layer list
    # at its longest (about 6,000 values), and a sweep file of 10,000 seeds.
    longest = {"model": {"hidden": list(range(1, 1001)), "dropout": [0.1] * 1000},
               "regularization": {"l1": [0.0] * 1001, "l2": [0.0] * 1001, "activity_l1": [0.0] * 1000, "activity_l2": [0.0] * 1000}}
    assert len(load_config(write_yaml(tmp_path / "longest.yaml", longest)).regularization.l2) == 1001
    seeds = write_yaml(tmp_path / "seeds.yaml", {"base": "longest.yaml", "grid": {"optim.lr": [0.1]}, "seeds": list(range(10_000))})
    assert len(read_yaml(seeds)["seeds"]) == 10_000


# ----------------------------------------------------------------------------- memory, in a child process


# Runs `python -m actexp ...` and writes its exit code, CPU seconds and peak RSS (KB) to argv[1]. A child's
# ru_maxrss starts at its parent's peak on Linux (fork copies the parent's memory map, and exec keeps
# the larger figure): measured from the pytest process, which holds torch, every child would weigh
# ~700 MB. This small launcher's only child is measured from the launcher, so RUSAGE_CHILDREN is that
# child's alone. The child's address space is capped at 2 GB (a regression fails with MemoryError
# instead of taking the machine's memory) and it is killed after its time limit.
LAUNCHER = """
import resource, subprocess, sys
report, limit, args = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
try:
    code = subprocess.run([sys.executable, "-m", "actexp", *args], preexec_fn=cap, timeout=limit).returncode
except subprocess.TimeoutExpired:
    code = "timeout"
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(report, "w").write(f"{code} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""


def _run_child(args, cwd: Path, limit: float = 10.0):
    """`python -m actexp ARGS` in a grandchild: (exit code, output, its CPU seconds, its peak RSS in
    bytes). CPU time, not wall time: other work on the machine (a parallel test run) does not count;
    a hang (a blocking read) is caught by `limit`, in wall seconds."""
    report, output = cwd / "child-report.txt", cwd / "child-output.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with output.open("wb") as sink:
        subprocess.run([sys.executable, "-c", LAUNCHER, report, str(limit), *map(str, args)],
                       stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=limit + 30, check=True)
    code, seconds, peak_kb = report.read_text().split()
    assert code != "timeout", f"actexp {' '.join(map(str, args))[:80]} still ran after {limit} s"
    return int(code), output.read_text(errors="replace"), float(seconds), int(peak_kb) * (1 if sys.platform == "darwin" else 1024)


PEAK_LIMIT = 300 * 10**6
CHILD_SECONDS = 5.0


# (id, a function making the path in tmp_path): the cases that used to hang or take gigabytes
CHILD_CASES = [
    ("alias bomb", lambda tmp_path: write_yaml(tmp_path / "bomb.yaml", _bomb())),
    ("merge-key bomb", lambda tmp_path: write_yaml(tmp_path / "merge_bomb.yaml", _merge_bomb())),
    ("deep nesting", lambda tmp_path: write_yaml(tmp_path / "deep.yaml", DEEP_LIST)),
    ("/dev/zero", lambda tmp_path: Path("/dev/zero")),
    ("FIFO", _fifo),
    ("100 GB sparse file", _sparse),
]


@pytest.mark.slow
@pytest.mark.parametrize("make", [c[1] for c in CHILD_CASES], ids=[c[0] for c in CHILD_CASES])
def test_bounded_in_a_child_process(tmp_path, make):
    path = make(tmp_path)
    for command in (["validate", path], ["train", path, "--runs-dir", tmp_path / "runs"]):
        code, output, seconds, peak = _run_child(command, tmp_path)
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], output[:2000]
        assert seconds < CHILD_SECONDS, f"{seconds:.1f} s"
        assert peak < PEAK_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_alias_bomb_override_in_a_child_process(tmp_path):
    path = write_yaml(tmp_path / "ok.yaml", tiny_config())
    code, output, seconds, peak = _run_child(["validate", path, "--set", f"model.hidden={_flow_bomb(9)}"], tmp_path)
    assert code == 2 and "more than 20,000 values" in output and len(output.strip().splitlines()) == 1, output[:2000]
    assert seconds < CHILD_SECONDS and peak < PEAK_LIMIT, (seconds, peak)


def test_the_bomb_is_a_bomb():
    # The corpus's bomb expands as claimed: 10^9 strings in about a kilobyte, and the loader's own
    # composer (nodes, not values) takes it in milliseconds: only expanding it costs.
    text = _bomb()
    assert len(text) < 1000
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    a9 = node.value[-1][1]
    assert len(a9.value) == 10 and a9.value[0] is node.value[-2][1]
