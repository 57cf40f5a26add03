"""Run folders: `runs/<name>/<run id>/` with config.yaml, metrics.jsonl/.csv, summary.json and
checkpoints; sweep ledgers; the locks that keep two processes out of one folder.

Every file another process may read mid-run is written atomically (a uniquely named temp file, then
a rename), so a reader sees the old file or the new one, never half of one. Every reader treats the
folder as possibly hostile: sizes are bounded, shapes are checked, and a damaged file is one
`DamagedFile` line naming it. Checkpoints load with `weights_only=True`: nothing read runs code.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import stat
import tempfile
import time
import warnings
from pathlib import Path

from .errors import ActexpError, Busy, DamagedFile, RunFolderWarning, WriteFailed  # noqa: F401  (Busy, RunFolderWarning: re-exported)

CHECKPOINTS = "checkpoints"
MODEL = "model.pt"  # a completed run's result weights (its selected epoch's), whatever train.checkpoint says
LOCK = ".lock"
LEDGER = "sweep.json"
RESULTS = ("completed", "diverged")  # a diverged run is a result too: that config diverges
FAILURES = ("failed", "diverged")
PRUNED = "pruned"  # a tuning trial its study stopped: a result of the tune, not of a config
CHECKPOINT_FORMAT = 1  # bumped when a checkpoint's keys change
# The flat per-epoch columns, in the order metrics.csv shows them.
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
DIAGNOSTIC_COLUMNS = ("epoch", "layer", "metric", "value")  # diagnostics.csv, in long form
# A run's own files stay far below these (a 1,000-epoch run with diagnostics: ~3 MB of metrics);
# past them a file is not read, so a hand-made one cannot make a command spin or eat memory.
MAX_JSON_BYTES = 16 << 20
MAX_METRICS_BYTES = 256 << 20
MAX_LOCK_BYTES = 4096
# An epoch record with diagnostics for 1,000 layers is about 250 kB, a row per layer and ~25 bytes a
# value. Parsed, a JSON value costs ~60-100 bytes of Python objects (an empty {} 64, from 2 bytes of
# text): a record denser than MIN_BYTES_PER_ITEM of text per value is not one actexp wrote, and
# refusing it keeps a hand-made file from costing 20 times its size in memory.
MAX_RECORD_BYTES = 1 << 20
MAX_LAYER_ROWS = 1001
MAX_LABEL_CHARS = 200
MIN_BYTES_PER_ITEM = 12
# A run records the overrides it was trained with; a command line holds a few dozen at most.
MAX_OVERRIDES = 1000
MAX_OVERRIDE_CHARS = 10_000


# ----------------------------------------------------------------------------- writing


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create a fresh, uniquely named folder `runs_dir/name/<YYYYmmdd-HHMMSS>[-N]`."""
    parent = make_dir(Path(runs_dir) / name, root=runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise _cannot_create(path, e) from e
    raise WriteFailed(f"could not create a run folder under {parent}: 1,000 folders named {stamp}[-N] exist")


def make_dir(path: Path, root: Path | None = None) -> Path:
    """`path` and its parents, as folders; WriteFailed naming the folder and the way out otherwise.
    With `root`, `path` must stay inside it once links are followed: a link planted in a shared
    runs folder must not make actexp write somewhere else."""
    path = Path(path)
    if root is not None and not resolves_inside(path, root):
        raise WriteFailed(f"{path}: is a link to {path.resolve()}, outside {root}; actexp writes only inside its runs folder, "
                          f"so remove the link (or give that folder with --runs-dir)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_create(path, e) from e
    return path


def resolves_inside(path: Path, root: Path) -> bool:
    """Whether `path`, its links followed (those that exist), lies in `root` (its links followed too)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def _cannot_create(path: Path, error: OSError) -> WriteFailed:
    return WriteFailed(f"could not create {path}: {error.strerror or error}; "
                       f"give a folder you can write with --runs-dir (or make this one writable)")


def write_atomic(path: Path, write) -> None:
    """Call `write(file)` on a uniquely named temp file beside `path`, then rename it over `path`.
    Unique, so that two processes never write one temp file; removed on failure, so that a full disk
    is not left with a partial copy taking the last space. Raises WriteFailed naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteFailed(f"could not write {path}: {e.strerror or e}") from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes the file 0600; a run folder is shared as its folder is
        with os.fdopen(fd, "wb") as file:
            write(file)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise WriteFailed(f"could not write {path}: {e.strerror or e}") from e
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can only be read
    by setting it, which races with threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda file: file.write(text.encode()))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_checkpoint(state: dict, path: Path) -> None:
    import torch

    _checkpoints_inside(Path(path), WriteFailed)
    write_atomic(path, lambda file: torch.save({"format": CHECKPOINT_FORMAT, **state}, file))


def save_weights(model_state: dict, epoch: int, path: Path) -> None:
    """A run's result weights: the state_dict alone (each tensor its own copy, so that a view into
    a fused group's stacked parameters saves its own numbers, not the whole stack's storage)."""
    import torch

    weights = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in model_state.items()}
    write_atomic(path, lambda file: torch.save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": weights}, file))


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl (every field of every epoch, the epoch-0 record included), metrics.csv (the flat
    columns of the trained epochs) and, when the records carry per-layer diagnostics, diagnostics.csv.
    metrics.jsonl is the record and is written last: the CSV files, derived from the same records,
    never hold fewer epochs than it (only a kill -9 between the renames leaves them one epoch ahead,
    and a resumed run rewrites all three)."""
    trained = [r for r in history if r["epoch"] > 0]
    columns = [c for c in EPOCH_COLUMNS if any(c in r for r in trained)] or list(EPOCH_COLUMNS)
    write_text_atomic(run_dir / "metrics.csv", _csv(columns, trained))
    if any("layers" in r for r in history):
        from .diagnostics import long_rows

        rows = [dict(zip(DIAGNOSTIC_COLUMNS, row)) for row in long_rows(history)]
        write_text_atomic(run_dir / "diagnostics.csv", _csv(DIAGNOSTIC_COLUMNS, rows))
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _csv(columns, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ----------------------------------------------------------------------------- reading


def read_bounded(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes (None when it does not exist); DamagedFile for anything else (a FIFO,
    a device, a folder) or a file over `limit` bytes, checked before reading."""
    file = open_bounded(path, limit)
    if file is None:
        return None
    with file:
        return file.read(limit + 1)


def open_bounded(path: Path, limit: int):
    """A regular file of at most `limit` bytes, opened for reading (None when it does not exist);
    DamagedFile for anything else, checked before anything is read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: opening a FIFO must not hang
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DamagedFile(f"{path}: cannot be read ({e.strerror or e})") from e
    file = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        file.close()
        if not stat.S_ISREG(info.st_mode):
            raise DamagedFile(f"{path}: not a regular file")
        raise DamagedFile(f"{path}: {info.st_size:,} bytes, more than the {limit:,} such a file can hold; not read")
    return file


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when the file does not exist (yet). DamagedFile otherwise."""
    content = read_bounded(path, MAX_JSON_BYTES)
    if content is None:
        return {}
    try:
        obj = json.loads(content)
    except (ValueError, RecursionError) as e:
        raise DamagedFile(f"{path}: not valid JSON ({str(e).splitlines()[0][:100]})") from e
    if not isinstance(obj, dict):
        raise DamagedFile(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


SUMMARY_NUMBERS = ("test_acc", "test_loss", "val_acc", "val_loss", "train_acc", "train_loss", "best_val_acc", "best_val_loss", "wall_seconds")
SUMMARY_INTEGERS = ("selected_epoch", "best_epoch", "epochs_completed", "n_params", "threads")


def read_summary(run_dir: Path) -> dict:
    """A run's summary.json ({} when there is none yet); DamagedFile when its figures are not numbers."""
    path = Path(run_dir) / "summary.json"
    summary = read_json(path)
    if not summary:
        return summary
    if not isinstance(summary.get("status"), str):
        raise DamagedFile(f"{path}: no status")
    for key in SUMMARY_NUMBERS + SUMMARY_INTEGERS:
        if not _is_number(summary.get(key), integer=key in SUMMARY_INTEGERS):
            raise DamagedFile(f"{path}: {key} is not a number within ±2**53 ({summary[key]!r:.40})")
        if key in EPOCH_KEYS and summary.get(key) is not None and not 0 <= summary[key] <= MAX_EPOCH:
            raise DamagedFile(f"{path}: {key} is {summary[key]}, outside 0..{MAX_EPOCH:,}")
    for key in ("name", "started", "error", "device"):
        if summary.get(key) is not None and not isinstance(summary[key], str):
            raise DamagedFile(f"{path}: {key} is not a string")
    overrides = summary.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(item, str) and len(item) <= MAX_OVERRIDE_CHARS for item in overrides) \
            or len(overrides) > MAX_OVERRIDES:
        raise DamagedFile(f"{path}: overrides is not a list of at most {MAX_OVERRIDES} KEY=VALUE strings")
    return summary


# JSON integers have no bound, numpy's have: past 2**53 an integer is no longer a float64 exactly,
# and past 2**63 numpy refuses it (a plot would fail on it rather than skip the run).
MAX_INTEGER = 2**53
# A run's epochs count from 0 (the untrained model) to config's MAX_EPOCHS.
EPOCH_KEYS = ("epoch", "selected_epoch", "best_epoch", "epochs_completed")
MAX_EPOCH = 1_000_000


def _is_number(value, integer: bool = False) -> bool:
    """None (absent) or a JSON number (an integer where one is expected) that numpy can hold; not a boolean."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return not isinstance(value, int) or -MAX_INTEGER <= value <= MAX_INTEGER


def read_history(run_dir: Path) -> list[dict]:
    """The per-epoch records of metrics.jsonl ([] when there is none); DamagedFile for a line that
    is not a record with an integer epoch. Read a line at a time, each at most MAX_RECORD_BYTES and
    refused before it is parsed, so what the reader holds stays a few times the file's size."""
    path = Path(run_dir) / "metrics.jsonl"
    file = open_bounded(path, MAX_METRICS_BYTES)
    if file is None:
        return []
    records = []
    with file:
        for number, line in enumerate(iter(lambda: file.readline(MAX_RECORD_BYTES + 1), b""), 1):
            if len(line) > MAX_RECORD_BYTES:
                raise DamagedFile(f"{path}: line {number} is longer than the {MAX_RECORD_BYTES:,} bytes an epoch record can take; not read")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if not _is_record(record) or _items(record) * MIN_BYTES_PER_ITEM > len(line):
                raise DamagedFile(f"{path}: line {number} is not an epoch record")
            records.append(record)
    return records


def _is_record(record) -> bool:
    if not isinstance(record, dict) or type(record.get("epoch")) is not int or not 0 <= record["epoch"] <= MAX_EPOCH:
        return False
    if not all(_is_number(record.get(key)) for key in EPOCH_COLUMNS):
        return False
    layers = record.get("layers", [])
    return isinstance(layers, list) and len(layers) <= MAX_LAYER_ROWS and all(
        isinstance(row, dict) and "layer" in row and all(_is_scalar(value) for value in row.values()) for row in layers)


def _is_scalar(value) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= MAX_LABEL_CHARS) or _is_number(value)


def _items(record: dict) -> int:
    """The objects a parsed record holds, about: its values and its rows with theirs."""
    layers = record.get("layers")
    return len(record) + (sum(1 + len(row) for row in layers) if isinstance(layers, list) else 0)


def read_config(run_dir: Path) -> dict:
    """A run's resolved config as plain data ({} for a folder without config.yaml)."""
    from .config import read_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    try:
        config = read_yaml(path)
    except ActexpError as e:
        raise DamagedFile(str(e)) from e
    if config is not None and not isinstance(config, dict):
        raise DamagedFile(f"{path}: not a config mapping")
    return config or {}


def _load_weights_only(path: Path, max_bytes: int, what: str = "checkpoint"):
    """torch.load with weights_only=True of a regular file of at most `max_bytes` (checked before
    reading); DamagedFile naming the file for anything else."""
    import pickle
    import torch

    try:
        info = path.stat()
    except OSError as e:  # gone meanwhile, a dangling link, a link loop
        raise DamagedFile(f"{path}: cannot be read ({e.strerror or e})") from e
    if not stat.S_ISREG(info.st_mode):
        raise DamagedFile(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise DamagedFile(f"{path}: {info.st_size:,} bytes, far more than this run's {what} can be ({max_bytes:,}); not loaded")
    _check_archive(path, max_bytes)
    try:
        with warnings.catch_warnings():  # torch's remarks on a foreign file's pickle protocol
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DamagedFile(f"{path}: refused: it holds Python objects other than tensors and plain data, which could run code when loaded") from e
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError) as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DamagedFile(f"{path}: not a checkpoint actexp can load safely ({reason}); only tensors and plain data are accepted") from e
    _check_plain(path, state, max_bytes)
    return state


# A checkpoint of the largest model the config allows (1,001 layers, each with weight, bias and
# batch-norm tensors, Adam's state for each) holds about 60,000 values; its archive a few thousand
# entries. The walk that checks a loaded checkpoint counts a value each time it is reached, so a
# list shared a million times over counts a million times: what torch's load_state_dict would copy.
MAX_CHECKPOINT_ITEMS = 500_000
MAX_CHECKPOINT_DEPTH = 32
MAX_ARCHIVE_ENTRIES = 100_000


def _check_archive(path: Path, max_bytes: int) -> None:
    """torch.save writes a zip archive of uncompressed entries; torch.load would inflate compressed
    ones, and reads the legacy format's storages at the sizes their headers claim, so only the
    former is loaded, and only after its directory says it holds no more than the file's own bytes."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ARCHIVE_ENTRIES:
                raise DamagedFile(f"{path}: {len(entries):,} entries in its archive, more than a checkpoint has; not loaded")
            packed = [e for e in entries if e.compress_type != zipfile.ZIP_STORED]
            total = sum(e.file_size for e in entries)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise DamagedFile(f"{path}: not a checkpoint actexp can load safely (not the zip archive torch.save writes: "
                          f"{str(e).splitlines()[0][:80] if str(e) else type(e).__name__}); only tensors and plain data are accepted") from e
    if packed:
        raise DamagedFile(f"{path}: refused: {packed[0].filename[:80]!r} is compressed ({packed[0].file_size:,} bytes inflated), "
                          "which torch.save never does; not loaded")
    if total > max_bytes:
        raise DamagedFile(f"{path}: its entries hold {total:,} bytes, far more than this run's checkpoint can be ({max_bytes:,}); not loaded")


def _check_plain(path: Path, state, max_bytes: int) -> None:
    """Refuse a loaded checkpoint that would grow when used: tensors that are views larger than the
    bytes stored for them (a stride of 0 makes one number look like a billion, and casting or
    copying it allocates them all), tensors that are not plain dense ones, and structure shared so
    often, or nested so deep, that copying it out (as load_state_dict does) would build a huge tree."""
    import torch

    items, numbers, stack = 0, 0, [(state, 0)]
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_CHECKPOINT_ITEMS or depth > MAX_CHECKPOINT_DEPTH:
            raise DamagedFile(f"{path}: refused: it holds more than {MAX_CHECKPOINT_ITEMS:,} values (counting shared ones each time) "
                              f"or nests deeper than {MAX_CHECKPOINT_DEPTH}, which no checkpoint of actexp's does; not loaded")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend((item, depth + 1) for item in value)
        elif torch.is_tensor(value):
            if value.layout != torch.strided or value.is_quantized or value.is_nested:
                raise DamagedFile(f"{path}: refused: a {value.layout} tensor, where actexp saves only dense ones; not loaded")
            size = value.numel() * value.element_size()
            numbers += size
            if size > value.untyped_storage().nbytes():
                raise DamagedFile(f"{path}: refused: a tensor of shape {tuple(value.shape)[:8]} stands for {size:,} bytes but "
                                  f"{value.untyped_storage().nbytes():,} are stored (strides {tuple(value.stride())[:8]}); not loaded")
            if numbers > max_bytes:  # views sharing one storage
                raise DamagedFile(f"{path}: refused: its tensors stand for more than the {max_bytes:,} bytes this run's checkpoint can hold; not loaded")


def load_checkpoint(path: Path, max_bytes: int) -> dict:
    """A checkpoint saved by `save_checkpoint`, loaded with weights_only=True (tensors and plain
    data only: a checkpoint from elsewhere cannot run code). DamagedFile for anything else."""
    path = Path(path)
    _checkpoints_inside(path, DamagedFile)
    state = _load_weights_only(path, max_bytes)
    missing = [k for k in ("epoch", "model", "optimizer", "rng", "best") if not isinstance(state, dict) or k not in state]
    if missing:
        raise DamagedFile(f"{path}: not an actexp checkpoint (missing {', '.join(missing)})")
    if state.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise DamagedFile(f"{path}: checkpoint format {state['format']!r}, this actexp reads format {CHECKPOINT_FORMAT}")
    return state


def _checkpoints_inside(path: Path, error) -> None:
    """A run's checkpoints folder must be the run folder's own: one that links elsewhere would have
    a resume read, and training write, files outside the run folder."""
    if path.parent.name == CHECKPOINTS and not resolves_inside(path.parent, path.parent.parent):
        raise error(f"{path.parent}: is a link to {path.parent.resolve()}, outside its run folder; actexp does not read or write "
                    f"checkpoints through it (remove the link, or put the folder itself there)")


def load_weights(path: Path, max_bytes: int) -> dict:
    """model.pt as `save_weights` wrote it ({"epoch", "model": name -> tensor}), loaded with
    weights_only=True and at most `max_bytes` read; DamagedFile for anything else. The caller checks
    the names and shapes against the model its config builds."""
    import torch

    state = _load_weights_only(Path(path), max_bytes, "model")
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or not model or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()):
        raise DamagedFile(f"{path}: not actexp result weights (a model state_dict of named tensors)")
    if state.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT or type(state.get("epoch")) is not int:
        raise DamagedFile(f"{path}: not actexp result weights (format {state.get('format')!r}, epoch {state.get('epoch')!r:.40})")
    return state


def read_ledger(sweep_dir: Path) -> dict:
    """A sweep's ledger ({} when there is none yet). Its run folders must lie inside the sweep
    folder: a hand-edited ledger cannot point a resume at, or a report into, any other place."""
    path = Path(sweep_dir) / LEDGER
    ledger = read_json(path)
    if not ledger:
        return {}
    for key in ("runs", "removed", "trials"):
        entries = ledger.setdefault(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DamagedFile(f"{path}: {key} is not a list of run entries; move the file away to start the ledger afresh (run folders are kept)")
        for number, entry in enumerate(entries, 1):
            folder, name = entry.get("folder"), entry.get("name")
            if not isinstance(name, str) or not isinstance(entry.get("status"), str) or not isinstance(entry.get("config_hash", ""), str):
                raise DamagedFile(f"{path}: {key} entry {number} lacks a name or a status")
            if folder is not None and not (_inside(folder) and resolves_inside(Path(sweep_dir) / folder, sweep_dir)):
                raise DamagedFile(f"{path}: {key} entry {number} ({name}) points outside the sweep folder ({folder!r}"
                                  f"{', a link out of it' if _inside(folder) else ''}); move the link or the file away")
    return ledger


def _inside(folder) -> bool:
    parts = Path(folder).parts if isinstance(folder, str) else ()
    return bool(parts) and not Path(folder).is_absolute() and ".." not in parts and "\0" not in folder


def write_ledger(sweep_dir: Path, ledger: dict) -> None:
    ledger["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json_atomic(Path(sweep_dir) / LEDGER, ledger)


def find_runs(path: str | Path) -> list[Path]:
    """Every run folder (one holding summary.json) at or below `path`, oldest first."""
    path = Path(path)
    if (path / "summary.json").exists():
        return [path]
    found = []
    # A walk with its own stack: Path.rglob recurses once per level, and a folder tree a thousand
    # levels deep would end it (and the command) with RecursionError. Links to folders are not
    # followed, as rglob does not follow them, so a link loop cannot make it spin.
    stack = [str(path)]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError):  # vanished meanwhile, unreadable, or a path too long: not a run to list
            with os.scandir(folder) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.name == "summary.json":
                            found.append((entry.stat().st_mtime, folder, Path(folder)))
                        elif entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
    return [folder for _, _, folder in sorted(found)]


RESUMABLE = ("interrupted", "failed")  # a diverged run would diverge again; a completed one is done


def latest_resumable(folder: str | Path) -> Path:
    """The run folder `train --resume FOLDER` continues: FOLDER itself when it is a run folder, else
    the latest started of the run folders directly inside it (a config's runs/<name>/) that can be
    resumed: interrupted or failed (a `running` run whose process died counts as interrupted), with
    checkpoints/last.pt. ActexpError saying what is there otherwise."""
    folder = Path(folder)
    if (folder / "summary.json").exists() or not folder.is_dir():
        return folder
    runs = []
    for run in (child for child in folder.iterdir() if (child / "summary.json").is_file()):
        with contextlib.suppress(DamagedFile):
            summary = read_summary(run)
            runs.append((str(summary.get("started", "")), len(run.name), run.name, run, run_status(run, summary)))
    if not runs:
        raise ActexpError(f"{folder}: no run folders in it; give a run folder (runs/<name>/<run id>) or a config's folder of runs (runs/<name>)")
    runs.sort()
    resumable = [run for *_, run, status in runs if status in RESUMABLE and (run / CHECKPOINTS / "last.pt").is_file()]
    if not resumable:
        *_, latest, status = runs[-1]
        raise ActexpError(f"{folder}: none of its {len(runs)} runs can be resumed (resumable: interrupted or failed, with {CHECKPOINTS}/last.pt; "
                          f"the latest, {latest.name}, is {status}); train the config again for a new run")
    return resumable[-1]


def skip_damaged(read, folders):
    """`read(folder)` for each folder, leaving out (with one RunFolderWarning each) the folders
    whose files are damaged, so that one bad run does not hide all the others."""
    results = []
    for folder in folders:
        try:
            results.append(read(folder))
        except DamagedFile as e:
            warnings.warn(f"skipped {folder}: {e}", RunFolderWarning, stacklevel=2)
    return results


# ----------------------------------------------------------------------------- locks


@contextlib.contextmanager
def locked(folder: Path, what: str, wait: bool = False):
    """Hold an exclusive lock on `folder` (its .lock file) while the block runs. Another holder
    makes this raise Busy naming its process, or, with `wait`, block until it lets go. The kernel
    drops the lock when its process ends, however it ends, so a killed run never leaves it stale."""
    import fcntl

    folder = Path(folder)
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise WriteFailed(f"could not create the lock {path}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as e:
            raise Busy(f"{folder} is in use by {lock_holder(folder)}; wait for it to finish"
                       + ("" if what == "training" else " (or pass --wait)")) from e
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "what": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _remove_stale_temps(folder)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temps(folder: Path) -> None:
    """Temp files that a killed writer left behind (kill -9 between write and rename): with the
    lock held, no other process of ours is writing them, and they only take space."""
    for directory in (folder, folder / CHECKPOINTS):
        if not resolves_inside(directory, folder):
            continue
        for tmp in directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink()


def lock_holder(folder: Path) -> str:
    """Who holds (or last held) a folder's lock, in words. The holder writes its note just after
    taking the lock, so a reader that comes in between looks again a few times."""
    for _ in range(20):
        holder = _lock_note(folder)
        if "pid" in holder:
            return f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('what')}, since {holder.get('since')})"
        time.sleep(0.01)
    return "another process"


def _lock_note(folder: Path) -> dict:
    """What the lock file says of its holder ({} when it says nothing readable)."""
    with contextlib.suppress(ActexpError, ValueError):
        note = json.loads(read_bounded(Path(folder) / LOCK, MAX_LOCK_BYTES) or b"{}")
        return note if isinstance(note, dict) else {}
    return {}


def is_locked(folder: Path) -> bool:
    """Whether a live process holds the folder's lock (False for a folder that has none)."""
    import fcntl

    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def run_status(run_dir: Path, summary: dict) -> str:
    """A run's status as its summary says, except that a `running` run whose lock no process holds
    on this machine was killed (kill -9, power loss) before it could say so: it is `interrupted`."""
    status = summary.get("status", "unknown")
    if status == "running" and (Path(run_dir) / LOCK).exists() and not is_locked(run_dir) and _locked_here(run_dir):
        return "interrupted"
    return status


def _locked_here(run_dir: Path) -> bool:
    # A lock taken on another node of a shared file system may not be visible from here.
    return _lock_note(run_dir).get("host") == socket.gethostname()
