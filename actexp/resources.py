"""What a run will need in device memory, estimated from its config before anything is allocated,
and what the device has left: so that a config asking for terabytes fails in milliseconds with one
line, instead of after loading the data, or through the kernel's OOM killer.

torch-free at import: the host's memory comes from /proc/meminfo and the cgroup files, and torch is
imported only to ask a GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .diagnostics import PROBE_SIZE
from .errors import ConfigError
from .registry import learnable

FLOAT = 4  # bytes of a float32: parameters, optimizer state, features and activations
INT64 = 8  # labels and batch indices
EVAL_BATCH = 8192  # evaluation.EVAL_BATCH (kept here too so that this module imports nothing heavy; a test keeps the two equal)
PASSES = ("training batch", "evaluation batch", "probe batch")  # items alive one at a time

# Tensors of the parameters' shape that each optimizer keeps (torch.optim's per-parameter state;
# scalars such as Adam's step are left out), from the optimizer's parameters. A test checks that
# every optimizer in components.OPTIMIZERS has a line, and each line against torch.
OPTIMIZER_STATE = {
    "sgd": lambda momentum=0.0, **_: int(momentum > 0),  # momentum_buffer
    "adam": lambda amsgrad=False, **_: 3 if amsgrad else 2,  # exp_avg, exp_avg_sq (+ max_exp_avg_sq)
    "adamw": lambda amsgrad=False, **_: 3 if amsgrad else 2,
    "nadam": lambda **_: 2,  # exp_avg, exp_avg_sq
    "rmsprop": lambda momentum=0.0, centered=False, **_: 1 + int(momentum > 0) + int(centered),  # square_avg, momentum_buffer, grad_avg
    "adagrad": lambda **_: 1,  # sum
}

# Which config key to name, and what to suggest, when a run does not fit: by the item that weighs most.
_CULPRITS = {
    "parameters": ("model.hidden", "use fewer or narrower layers"),
    "gradients": ("model.hidden", "use fewer or narrower layers"),
    "optimizer state": ("model.hidden", "use fewer or narrower layers"),
    "best weights": ("model.hidden", "use fewer or narrower layers"),
    "checkpoint copy": ("model.hidden", "use fewer or narrower layers"),
    "training batch": ("train.batch_size", "use a smaller batch_size, or narrower layers"),
    "evaluation batch": ("model.hidden", f"use narrower layers (evaluation runs {EVAL_BATCH} samples at a time)"),
    "diagnostics": ("train.diagnostics", "set train.diagnostics: false, or use narrower layers"),
    "probe batch": ("train.diagnostics", "set train.diagnostics: false, or use narrower layers"),
    "data": ("data.dataset", "use a smaller dataset"),
}


def estimate_bytes(config, n_features: int, n_samples: int, n_classes: int) -> dict[str, int]:
    """What training `config` needs on its device, in bytes, item by item, for a dataset of `n_samples`
    samples (training, validation and test together) of `n_features` features in `n_classes` classes.

    Kept for the whole run: parameters (with batch norm's running statistics), gradients, optimizer
    state, best weights (the selected epoch's copy, kept unless early stopping's restore_best is
    off), the checkpoint copy (the weights and optimizer state each epoch's checkpoint is written
    from), data (every split, and an epoch's shuffled order), diagnostics (the probe samples and
    the weights as the epoch began). Alive one at a time:
    training batch (what the backward pass needs, and the gradients it makes), evaluation batch
    (EVAL_BATCH samples, no autograd), probe batch (the diagnostics' pass over their probe samples).
    total: everything kept plus the largest of the three passes. Pure arithmetic on the config, so
    milliseconds for any size; generous per layer (which tensors autograd keeps depends on the
    activation), so an upper estimate."""
    model, train = config.model, config.train
    activation = model.activation
    pieces = activation.params["k"] if activation.name == "maxout" else 1
    widths = list(model.hidden)
    units = [w * pieces for w in widths]  # a hidden Linear's outputs: maxout keeps the largest of k per unit
    inputs = [n_features] + widths  # what each Linear reads
    norm = 1 if model.batch_norm else 0
    weights = sum(n_in * u for n_in, u in zip(inputs, units)) + inputs[-1] * n_classes
    trainable = (
        weights
        + sum(units) + n_classes  # biases
        + 2 * norm * sum(units)  # batch norm's scale and shift
        + len(widths) * len(learnable(activation))  # PReLU's slope, a formula's learned parameters: one number each per layer
    )
    parameters = FLOAT * (trainable + 2 * norm * sum(units))  # + batch norm's running mean and variance
    # An optimizer without a line here (a test forbids it): as many as the most any keeps.
    slots = OPTIMIZER_STATE.get(config.optim.optimizer.name, lambda **_: 3)(**config.optim.optimizer.params)
    stopping = train.early_stopping
    dropout = model.dropout if isinstance(model.dropout, tuple) else (model.dropout,) * len(widths)
    widest = max(units)

    # A training batch: the batch's gathered copy; per hidden layer the Linear's outputs, batch norm's,
    # the activation's, dropout's and its mask (a byte per unit); the logits and their log-softmax; at
    # the backward pass's peak the gradients of two of the widest layers' outputs; labels and indices.
    per_sample = n_features + 2 * n_classes + 2 * widest
    for u, w, rate in zip(units, widths, dropout):
        per_sample += u * (1 + norm) + w + (w + w / FLOAT if rate > 0 else 0)
    batch = min(train.batch_size, n_samples)
    training = int(FLOAT * batch * per_sample) + 2 * INT64 * batch
    # Evaluation (no autograd): a layer's input and outputs are alive at once, one layer at a time.
    eval_per_sample = max(n_in + u * (1 + norm) + w for n_in, u, w in zip(inputs, units, widths)) + 2 * n_classes
    evaluation = FLOAT * min(EVAL_BATCH, n_samples) * eval_per_sample
    probe = min(PROBE_SIZE, n_samples) if train.diagnostics else 0
    # The probe pass, one layer at a time: the pre-activation, its derivative and that derivative's
    # absolute value, the activation and the unit's largest derivative.
    probe_pass = FLOAT * probe * (3 * widest + 2 * max(widths))

    estimate = {
        "parameters": parameters,
        "gradients": FLOAT * trainable,
        "optimizer state": FLOAT * trainable * slots,
        "best weights": parameters if not stopping or stopping.restore_best else 0,  # training.Recorder.selects_best
        # Each epoch's checkpoint is taken as a copy, written later by a thread (checkpointing.py).
        "checkpoint copy": parameters + FLOAT * trainable * slots if train.checkpoint != "none" else 0,
        # Every split as float32 features and int64 labels, and an epoch's shuffled order (int64).
        "data": n_samples * (FLOAT * n_features + INT64) + INT64 * n_samples,
        "diagnostics": probe * (FLOAT * n_features + INT64) + (FLOAT * weights if train.diagnostics else 0),
        "training batch": training,
        "evaluation batch": evaluation,
        "probe batch": probe_pass,
    }
    estimate["total"] = sum(v for k, v in estimate.items() if k not in PASSES) + max(estimate[k] for k in PASSES)
    return estimate


def check_fits(estimate: dict, available: int, device: str) -> None:
    """Raise ConfigError when the estimate's total exceeds `available` bytes on `device`: one line with
    the total and the items it sums in human units, the config key behind the heaviest item, and what
    to change there."""
    total = estimate["total"]
    if total <= available:
        return
    largest_pass = max(PASSES, key=lambda k: estimate[k])
    items = {k: v for k, v in estimate.items() if k != "total" and (k not in PASSES or k == largest_pass)}
    key, fix = _CULPRITS[max(items, key=lambda k: items[k])]
    shown = ", ".join(f"{k} {human_bytes(v)}" for k, v in items.items() if v >= total / 100)
    raise ConfigError(f"{key}: this run needs about {human_bytes(total)} on {device} ({shown}) but {human_bytes(available)} is available; {fix}")


def human_bytes(n: float) -> str:
    """Bytes in decimal units: 38.2 GB, 512 MB."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} EB"


# ----------------------------------------------------------------------------- what a device has


def available_bytes(device: str) -> int:
    """Memory a run on `device` (cpu, cuda, cuda:N or mps; resolve auto first) can still take, in bytes:
    on a GPU what torch.cuda.mem_get_info reports free; otherwise (cpu, and mps, whose memory is the
    host's) the host's MemAvailable, capped by the room left under this process's cgroup memory
    limits (a container's limit; /proc/meminfo shows the whole machine's)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    known = [room for room in (_meminfo_available(), *_cgroup_rooms()) if room is not None]
    return max(0, min(known)) if known else sys.maxsize  # nothing known: nothing is refused


def _meminfo_available() -> int | None:
    """MemAvailable (what can be allocated without swapping), or free pages where there is no /proc."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


_OWN_CGROUP = "/proc/self/cgroup"  # lines "id:controllers:path"; cgroup v2's has no controllers
# (controller, mount, limit file, usage file, reclaimable page cache in memory.stat)
_CGROUPS = (
    ("", "/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),  # cgroup v2
    ("memory", "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),  # v1
)


def _cgroup_rooms() -> list[int]:
    """Room left under each memory limit of this process's cgroup and of its ancestors (a limit
    anywhere up the tree applies). Usage counts page cache, of which the inactive part is reclaimable."""
    own = {}
    try:
        for line in Path(_OWN_CGROUP).read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                own[controller] = path
    except (OSError, ValueError):
        return []
    rooms = []
    for controller, mount, limit_file, usage_file, inactive_key in _CGROUPS:
        root = Path(mount)
        if controller not in own or not root.is_dir():
            continue
        folder = root / own[controller].lstrip("/")
        if not folder.is_dir():  # a container sees its own cgroup at the mount's root
            folder = root
        while True:
            limit = _read_int(folder / limit_file)
            if limit is not None and limit < 2**60:  # v1 writes "no limit" as about 2**63
                usage = (_read_int(folder / usage_file) or 0) - _stat_value(folder / "memory.stat", inactive_key)
                rooms.append(limit - usage)
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return rooms


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # missing, or "max" (cgroup v2: no limit)
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
