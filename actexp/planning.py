"""Which runs train together, torch-free: a fused group's members share their data and its split,
layer shapes, batch size, epochs and device (`group_key`), and are ordered within the group
(`member_order`) so that the stepper can take them as contiguous slices: members with equal
optimizer settings (one optimizer call), then one seed (their first layer shares its input), then
one activation. `plan_groups` splits groups to fit the device's memory (resources.estimate_bytes,
summed as `group_bytes` does) and a size cap; `training_cost` orders tasks longest first.

torch is imported only to ask a GPU how much memory it has.
"""

from __future__ import annotations

import json
import sys

from .config import config_to_dict
from .registry import activation_label, elementwise, per_member_params


def group_key(config) -> tuple:
    """What the members of one fused group must share, as a hashable key: the data and its split,
    the layer shapes (hidden widths, maxout's pieces, batch norm), batch size, epochs, device and
    torch threads (one process computes the group). Every config the stepper can train solo it
    can train fused."""
    model, train = config.model, config.train
    activation = model.activation
    if not stacks_activation(config):  # its own group: it trains solo
        return ("solo", json.dumps(config_to_dict(config), sort_keys=True))
    pieces = activation.params["k"] if activation.name == "maxout" else 1
    data = json.dumps(config_to_dict(config)["data"], sort_keys=True)
    return (data, tuple(model.hidden), pieces, model.batch_norm, train.batch_size, train.epochs, train.device, train.threads)


def stacks_activation(config) -> bool:
    """Whether the config's activation applies to a fused stack of members at once: an elementwise
    one (built-ins, formulas, plugins declared elementwise) or maxout (groups of units along the
    last axis). Any other (a plugin not declared elementwise) trains solo."""
    activation = config.model.activation
    return activation.name == "maxout" or elementwise(activation)


def solo_reason(config) -> str | None:
    """Why a config never fuses (for `sweep --dry-run`), or None."""
    if stacks_activation(config):
        return None
    return f"solo: activation {activation_label(config.model.activation)} is not elementwise"


def member_order(config) -> tuple:
    """Sort key within a group: by optimizer settings (contiguous: one optimizer call each), then
    seed (members of one seed share their batches: contiguous, their first layer is one matmul),
    then activation (contiguous slices)."""
    return optimizer_key(config), config.train.seed, activation_key(config)


def activation_key(config) -> str:
    """Members with equal keys share one slice of the stack: the same activation, up to the values
    that only initialize a learnable parameter (PReLU's init, a formula's learned parameters), which
    are per member."""
    activation = config.model.activation
    plain = activation.to_plain()
    if isinstance(plain, dict):
        for name in per_member_params(activation):
            plain.pop(name, None)
    return json.dumps(plain, sort_keys=True)


def optimizer_key(config) -> str:
    """Members with equal keys share one optimizer call (its hyperparameters are scalars)."""
    plain = config_to_dict(config)["optim"]
    return json.dumps({k: plain[k] for k in ("optimizer", "lr", "weight_decay", "schedule")}, sort_keys=True)


def plan_groups(configs, max_group: int | None = None, available: int | None = None) -> list[list[int]]:
    """Indices of `configs`, grouped: configs with the same group_key train together, sorted by
    member_order; a group is split where it would exceed `max_group` members or the device memory
    (`available` bytes; default: what resources.available_bytes reports for the group's device).
    Groups come in the order of their first config."""
    from .data import dataset_shape
    from .resources import estimate_bytes

    buckets: dict = {}
    for index, config in enumerate(configs):
        buckets.setdefault(group_key(config), []).append(index)
    rooms: dict = {}
    groups = []
    for indices in buckets.values():
        indices = sorted(indices, key=lambda i: (member_order(configs[i]), i))
        device = configs[indices[0]].train.device
        if device not in rooms:
            rooms[device] = available if available is not None else _room(_resolved(device))
        shape = dataset_shape(configs[indices[0]].data.dataset)
        chunk, size = [], _GroupSize(shape)
        for index in indices:
            estimate = estimate_bytes(configs[index], *shape)
            too_many = max_group is not None and len(chunk) + 1 > max_group
            if chunk and (too_many or size.total_with(estimate) > rooms[device]):
                groups.append(chunk)
                chunk, size = [], _GroupSize(shape)
            chunk.append(index)
            size.add(estimate)
        groups.append(chunk)
    return groups


def training_cost(config) -> int:
    """A run's arithmetic, up to a constant: its parameters times the samples it sees (a fused
    group costs about the sum of its members'); plan_tasks starts the costliest groups first."""
    from .data import dataset_shape
    from .resources import estimate_bytes

    shape = dataset_shape(config.data.dataset)
    return config.train.epochs * shape[1] * estimate_bytes(config, *shape)["gradients"]


def _room(device: str) -> int:
    """The memory a group on `device` may take; unbounded for a GPU this process cannot see (a Ray
    cluster's): each group is checked again where it trains (training.train_group)."""
    from .resources import available_bytes

    if device.startswith("cuda") and not _cuda_available():
        return sys.maxsize
    return available_bytes(device)


def _resolved(device: str) -> str:
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    return device


def group_bytes(configs) -> dict[str, int]:
    """resources.estimate_bytes for a fused group: every member's parameters, gradients, optimizer
    state, best weights and diagnostics; the data once (plus each member's epoch order); every
    member's training batch at once (one stacked step), an evaluation or probe batch one member at
    a time; and, for retiring a member (early stopping, divergence), a second copy of the
    parameters (the others are re-stacked)."""
    from .data import dataset_shape
    from .resources import estimate_bytes

    shape = dataset_shape(configs[0].data.dataset)
    size = _GroupSize(shape)
    for config in configs:
        size.add(estimate_bytes(config, *shape))
    return size.items()


class _GroupSize:
    """group_bytes, kept up to date member by member (plan_groups grows groups one at a time)."""

    SUMMED = ("parameters", "gradients", "optimizer state", "best weights", "checkpoint copy", "diagnostics", "training batch")
    LARGEST = ("evaluation batch", "probe batch")

    def __init__(self, shape):
        self.samples = shape[1]
        self.members = 0
        self.values = dict.fromkeys(self.SUMMED + self.LARGEST, 0)
        self.data = 0

    def add(self, estimate: dict) -> None:
        self.members += 1
        self.data = estimate["data"]
        for key in self.SUMMED:
            self.values[key] += estimate[key]
        for key in self.LARGEST:
            self.values[key] = max(self.values[key], estimate[key])

    def items(self) -> dict[str, int]:
        from .resources import INT64, PASSES

        items = dict(self.values)
        items["data"] = self.data + INT64 * self.samples * max(self.members - 1, 0)  # each member's epoch order
        items["retiring"] = items["parameters"] if self.members > 1 else 0
        items["total"] = sum(v for k, v in items.items() if k not in PASSES) + max(items[k] for k in PASSES)
        return items

    def total_with(self, estimate: dict) -> int:
        grown = _GroupSize((0, self.samples, 0))
        grown.members, grown.data, grown.values = self.members, self.data, dict(self.values)
        grown.add(estimate)
        return grown.items()["total"]


def runs_of_equal(keys: list) -> list[tuple[int, int]]:
    """(start, end) of each run of equal consecutive keys."""
    runs, start = [], 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            runs.append((start, end))
            start = end
    return runs


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
