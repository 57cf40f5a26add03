"""The experiment config: frozen dataclasses, and one validator that walks them.

Every field has a default, a type and (for numbers) a range; the validator names the dotted path
of whatever is wrong. Components (activation, init, optimizer, schedule, dataset) are a bare name
or a mapping `{name: ..., **params}`; their parameters come from the registry factories' signatures.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import inspect
import json
import math
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

import yaml

from .components import (
    ACTIVATIONS,
    ALIASES,
    INITIALIZERS,
    MATRIX_ONLY_INITIALIZERS,
    MAX_SAMPLES,
    NON_NEGATIVE,
    OPTIMIZERS,
    PARAM_CHOICES,
    PARAM_RANGES,
    POSITIVE,
    SCHEDULES,
    UNIT,
    Range,
)
from .data import DATASETS
from .errors import ConfigError, OverrideError
from .formula import FORMULA, FORMULA_KEYS, FUNCTIONS as FORMULA_FUNCTIONS, MAX_EXPONENT as FORMULA_MAX_EXPONENT, MAX_NUMBER as FORMULA_MAX_NUMBER, parse_formula
from .plugins import GROUPS as PLUGIN_GROUPS, available as available_plugins, find as find_plugin, unknown_hint
from .names import MAX_NAME_LENGTH, NAME_CHARS, NAME_PATTERN  # noqa: F401  (NAME_CHARS: re-exported)
from .varying import override_name


REGISTRIES = {
    "activation": ACTIVATIONS,
    "initializer": INITIALIZERS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "dataset": DATASETS,
}


@dataclass(frozen=True)
class Component:
    """A registry entry by name, with its parameters (all of them, once validated)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_plain(self):
        if self.name == FORMULA:  # written as the user writes it: {expr: ..., its parameters, learn, gain}
            return _plain(dict(self.params))
        return {"name": self.name, **_plain(dict(self.params))} if self.params else self.name


def spec(default, *, range: Range | None = None, registry: str | None = None, doc: str = ""):
    """A config field with its default and its constraints (read by the validator and the README)."""
    return field(default=default, metadata={"range": range, "registry": registry, "doc": doc})


SEED_RANGE = Range(0, 2**63 - 1)  # what torch's generators accept

# Upper bounds no real experiment comes near (classic MLPs are a few to a few dozen layers of at most a
# few thousand units, trained for hundreds of epochs): they stop a typo or a hostile file from asking for
# terabytes in milliseconds, before resources.estimate_bytes weighs what is left against the device.
MAX_DEPTH = 1000  # hidden layers
MAX_WIDTH = 1_000_000  # units in one hidden layer: one such layer after MNIST's 784 inputs is 3 GB of weights
MAX_EPOCHS = 1_000_000  # also bounds early stopping's patience
MAX_BATCH = 10_000_000  # batch_size; a batch larger than the training set is the whole set anyway
MAX_LIST = MAX_DEPTH + 1  # values in any config list: one per layer (hidden widths, dropout rates, penalties)
SAMPLES_RANGE = Range(1, MAX_SAMPLES)


@dataclass(frozen=True)
class DataConfig:
    dataset: Component = spec(Component("mnist"), registry="dataset", doc="mnist, fashion_mnist, cifar100, xor")
    root: str | None = spec(None, doc="data folder; null: $ACTEXP_DATA or ~/.cache/actexp/data")
    subset: int | None = spec(None, range=SAMPLES_RANGE, doc="train on the first N training samples")
    val_size: int | None = spec(None, range=SAMPLES_RANGE, doc="validation samples taken from the training set; null: min(5000, 20% of it)")
    split_seed: int = spec(0, range=SEED_RANGE, doc="seed of the train/validation split")
    normalize: Literal["standardize", "unit", "none"] = spec(
        "standardize", doc="image inputs: standardize ((x/255 - mean)/std per channel), unit (x/255), none (raw 0..255); generated sets are used as they are"
    )


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = spec((256, 256), range=Range(1, MAX_WIDTH), doc="hidden layer widths (or give depth and width)")
    activation: Component = spec(Component("relu"), registry="activation")
    init: Component = spec(Component("xavier_normal"), registry="initializer", doc="weight initializer")
    bias_init: Component = spec(
        Component("constant", MappingProxyType({"value": 0.0})),
        registry="initializer",
        doc="a number (constant) or any initializer",
    )
    dropout: float | tuple[float, ...] = spec(0.0, range=UNIT, doc="dropout after each hidden activation; a list: one rate per hidden layer")
    batch_norm: bool = spec(False, doc="BatchNorm1d between each hidden Linear and its activation")


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Component = spec(Component("adam"), registry="optimizer")
    lr: float = spec(1e-3, range=POSITIVE)
    weight_decay: float = spec(0.0, range=NON_NEGATIVE, doc="the optimizer's weight_decay")
    schedule: Component = spec(Component("none"), registry="schedule", doc="stepped once per epoch")
    grad_clip: float | None = spec(None, range=POSITIVE, doc="clip the global gradient L2 norm to this")


@dataclass(frozen=True)
class RegularizationConfig:
    # A list gives one value per weight matrix (hidden layers, then the output layer) or, for the
    # activity penalties, one per hidden layer: recipes put penalties on single layers.
    l1: float | tuple[float, ...] = spec(0.0, range=NON_NEGATIVE, doc="Keras-style l1·Σ|W| over every weight matrix; a list: one value per matrix (hidden layers, then output)")
    l2: float | tuple[float, ...] = spec(0.0, range=NON_NEGATIVE, doc="Keras-style l2·ΣW² over every weight matrix; a list: one value per matrix (hidden layers, then output)")
    activity_l1: float | tuple[float, ...] = spec(0.0, range=NON_NEGATIVE, doc="l1·Σ|a| of hidden activations, per sample; a list: one value per hidden layer")
    activity_l2: float | tuple[float, ...] = spec(0.0, range=NON_NEGATIVE, doc="l2·Σa² of hidden activations, per sample; a list: one value per hidden layer")
    max_norm: float | None = spec(None, range=POSITIVE, doc="cap each unit's incoming weight norm after each step")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    monitor: Literal["val_loss", "val_acc"] = spec("val_loss")
    mode: Literal["auto", "min", "max"] = spec("auto", doc="auto: min for losses, max for accuracies")
    patience: int = spec(5, range=Range(0, MAX_EPOCHS), doc="epochs without improvement before stopping")
    min_delta: float = spec(0.0, range=NON_NEGATIVE, doc="smallest change that counts as improvement")
    restore_best: bool = spec(True, doc="evaluate and keep the best epoch's weights")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = spec(10, range=Range(1, MAX_EPOCHS))
    batch_size: int = spec(100, range=Range(1, MAX_BATCH))
    seed: int = spec(0, range=SEED_RANGE, doc="seeds weights, dropout and batch order")
    device: str = spec("auto", doc="auto, cpu, cuda, cuda:N")
    early_stopping: EarlyStoppingConfig | None = spec(None, doc="null/false: off; true or a mapping: on")
    checkpoint: Literal["none", "best", "last", "both"] = spec("last", doc="which checkpoints to keep")
    checkpoint_every: float = spec(60.0, range=Range(0, 86_400), doc="seconds between checkpoint writes while training (0: every epoch); always written at the end and on Ctrl-C/SIGTERM")
    diagnostics: bool = spec(True, doc="per-layer gradient, weight and activation figures each epoch (diagnostics.csv)")
    threads: int | Literal["auto", "adaptive"] = spec("auto", range=Range(1, 1024), doc="torch threads on a CPU; auto: 1, the same numbers whatever else runs; adaptive: the cores other processes leave free")
    tensorboard: bool = spec(False, doc="also write each epoch's figures as TensorBoard events to the run's tensorboard/ (pip install 'actexp[tensorboard]')")


@dataclass(frozen=True)
class Config:
    name: str = spec("experiment", doc="run folder name; default: the config file's stem")
    data: DataConfig = spec(DataConfig())
    model: ModelConfig = spec(ModelConfig())
    optim: OptimConfig = spec(OptimConfig())
    regularization: RegularizationConfig = spec(RegularizationConfig())
    train: TrainConfig = spec(TrainConfig())


DEVICE_PATTERN = re.compile(r"\A(auto|cpu|cuda(:[0-9]{1,4})?|mps)\Z")
# YAML 1.1 (PyYAML) reads 1e-3 as a string: numbers as people write them are parsed here.
FLOAT_PATTERN = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


# ----------------------------------------------------------------------------- loading


# Every config file is possibly hostile: no small input may make reading it allocate or spin without bound.
MAX_CONFIG_BYTES = 1_000_000  # a config is 1-2 KB and a sweep file not much more
MAX_YAML_DEPTH = 100  # nesting levels; a config is 3 deep
# Values with every alias expanded: a config has about 50 (at most ~6,000: six per-layer lists of
# 1,001), a sweep file at most ~12,000 (10,000 runs). Refusing costs ~0.3 s at the cap (PyYAML builds
# Python objects value by value), where 100,000 cost 1-2 s.
MAX_YAML_VALUES = 20_000
# libyaml parses ~20x faster than pure-Python PyYAML (a 1 MB file: 0.2 s instead of 4 s); the data
# and the errors are the same kinds.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_config(path: str | Path, overrides: list[str] = (), *, rename: bool = True, document=...) -> Config:
    """Read a YAML config, apply `key=value` overrides, validate. Raises ConfigError. With
    overrides, the config is named after them too (varying.override_name: `relu_xavier,activation=tanh`),
    so that a run trained with them is not filed and titled as the config without them; `rename`
    False keeps the file's name (sweeps name their runs themselves). `document`: what read_yaml(path)
    returned, when the caller has read the file already."""
    path = Path(path)
    raw = read_yaml(path) if document is ... else document
    if raw is None:
        raise ConfigError(f"{_shown_path(path)}: the file is empty; see configs/relu_xavier.yaml for a complete example")
    if not isinstance(raw, dict):
        raise ConfigError(f"{_shown_path(path)}: expected a mapping of sections (data, model, optim, ...), got {_kind(raw)}")
    raw.setdefault("name", path.stem)
    try:
        return config_with_overrides(raw, overrides, rename)
    except OverrideError as e:
        raise e.applied_to(_shown_path(path)) from e
    except ConfigError as e:
        raise ConfigError(f"{_shown_path(path)}: {e}") from e
    except RecursionError as e:  # read_yaml bounds the nesting; this is the last resort
        raise ConfigError(f"{_shown_path(path)}: the config nests too deeply") from e


def config_with_overrides(raw: Mapping, overrides: list[str], rename: bool = True) -> Config:
    """A config mapping with `key=value` overrides applied, validated, and (`rename`) named after
    them (varying.override_name: `relu_xavier,activation=tanh`). A short key is resolved first
    (resolve_overrides: `epochs=3` is `train.epochs=3`). A problem an override causes is an
    OverrideError naming the override, not the file."""
    overrides = resolve_overrides(overrides)
    applied = apply_overrides(dict(raw), overrides)
    if rename and overrides and isinstance(applied.get("name", "experiment"), str):  # another type: the validator names it
        applied["name"] = override_name(applied.get("name", "experiment"), overrides)
    try:
        return config_from_dict(applied)
    except ConfigError as e:
        culprit = _override_at_fault(str(e), overrides)
        if culprit is None:
            raise
        raise OverrideError(f"override {_shown(culprit)}", str(e)) from e


# Keys an override may set besides the fields: model.hidden as depth and width.
EXTRA_KEYS = ("model.depth", "model.width")


def config_keys() -> list[str]:
    """Every dotted key of the config, in config order: each section and field (the early stopping
    ones below train.early_stopping), and model.depth and model.width."""
    keys = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            inner = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if dataclasses.is_dataclass(t)]
            if inner and inner[0] is not Component:
                keys.append(prefix + f.name)  # a section is set whole too (model={...}; early_stopping: true)
                walk(inner[0], f"{prefix}{f.name}.")
            else:
                keys.append(prefix + f.name)

    walk(Config, "")
    return keys + list(EXTRA_KEYS)


def resolve_overrides(overrides) -> list[str]:
    """The overrides with each short key made whole, as Ultralytics users type them: a key that is
    not a config key but the last part of exactly one (`epochs`, `lr`, `patience`) becomes that key
    (`train.epochs=3`); other keys are kept as given. A short key that is the last part of no key,
    or of several, is an OverrideError suggesting the dotted keys."""
    keys = config_keys()
    resolved = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or "." in key or key in keys:
            resolved.append(item)
            continue
        matches = [k for k in keys if k.rsplit(".", 1)[-1] == key]
        if len(matches) == 1:
            resolved.append(f"{matches[0]}={value}")
        elif matches:
            raise OverrideError(f"override {_shown(item)}", f"{_shown(key)} is the last part of {' and '.join(matches)}; give the whole key")
        else:
            close = difflib.get_close_matches(key, keys + [k.rsplit(".", 1)[-1] for k in keys], n=1, cutoff=0.6)
            whole = [k for k in keys if close and close[0] in (k, k.rsplit(".", 1)[-1])][:1]
            hint = f" (did you mean {whole[0]}?)" if whole else ""
            raise OverrideError(f"override {_shown(item)}", f"no config key {_shown(key)}{hint}; keys are dotted, e.g. train.epochs=3, optim.lr=0.01")
    return resolved


def key_values(key: str) -> list[str]:
    """The values a config key can only take, as an override spells them: a component's registry
    names, a choice's choices, true/false; empty for any other key (numbers, lists, sections)."""
    leaves = {k: (tp, named) for k, tp, _, named, _ in config_fields()}
    if key not in leaves:
        return []
    tp, named = leaves[key]
    if isinstance(named, str):  # a registry's name
        return list(REGISTRIES[named])
    values = []
    for arm in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,):
        if typing.get_origin(arm) is Literal:
            values += [str(v) for v in typing.get_args(arm)]
        elif arm is bool:
            values += ["true", "false"]
    return values


def complete_override(incomplete: str, several: bool = False) -> list[str]:
    """What a shell offers for a KEY=VALUE being typed (`incomplete`), for tab completion: before
    the `=`, the dotted keys that start with it, each as `key=` (where none does and it has no dot,
    the short keys that start with it: `epo` -> `epochs=`); after the `=`, the key's values where it
    has a fixed set (key_values). `several`: the value is a comma-separated list (--grid), the last
    item completes. Torch-free and fast: the shell asks on every tab."""
    key, sep, value = incomplete.partition("=")
    keys = config_keys()
    if not sep:
        dotted = [k for k in keys if k.startswith(key)]
        if dotted or "." in key:
            return [f"{k}=" for k in dotted]
        short = [k.rsplit(".", 1)[-1] for k in keys]
        return [f"{s}=" for s in dict.fromkeys(short) if s.startswith(key) and short.count(s) == 1]
    if key not in keys:
        matches = [k for k in keys if k.rsplit(".", 1)[-1] == key]
        key = matches[0] if len(matches) == 1 else key
    last = value.rpartition(",")[2] if several else value
    head = incomplete[: len(incomplete) - len(last)]
    return [head + v for v in key_values(key) if v.startswith(last)]


def _override_at_fault(message: str, overrides: list[str]) -> str | None:
    """The override whose key the error's dotted path is, lies below or above (the path is what
    the message starts with), if any."""
    path = message.split(":", 1)[0].strip()
    for item in reversed(overrides):  # a key given twice: its last value is the one applied
        key = item.partition("=")[0].strip()
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return item
    return None


def read_yaml(path: Path):
    """The YAML document in `path` (None when empty). Raises ConfigError for a missing file, anything but
    a regular file of at most MAX_CONFIG_BYTES, text that is not UTF-8, bad YAML, and YAML that nests
    deeper than MAX_YAML_DEPTH or expands (through aliases) to more than MAX_YAML_VALUES values."""
    where = _shown_path(path)
    try:
        return _load_yaml(_read_text(Path(path), where), where)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error{at}: {problem}") from e
    except (ValueError, OverflowError) as e:  # a constructor's own check: a date 2024-13-45, a 5000-digit integer
        raise ConfigError(f"{where}: a YAML value cannot be read: {_first_line(e)}") from e


def _read_text(path: Path, where: str) -> str:
    """The file's text. Only a regular file is opened (a FIFO would block, /dev/zero never ends), and
    at most MAX_CONFIG_BYTES + 1 bytes are read (files in /proc claim size 0)."""
    try:
        kind = _file_kind(os.stat(path).st_mode)
        if kind:
            raise ConfigError(f"{where}: is {kind}, not a regular file; give a YAML config file")
        # Should the path be swapped for a FIFO after the check, O_NONBLOCK keeps the open from hanging
        # and fstat refuses it.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        with open(os.open(path, flags), "rb") as file:
            kind = _file_kind(os.fstat(file.fileno()).st_mode)
            if kind:
                raise ConfigError(f"{where}: is {kind}, not a regular file; give a YAML config file")
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as e:
        raise ConfigError(f"{where}: no such file") from e
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror or e})") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: the file is larger than {MAX_CONFIG_BYTES // 1_000_000} MB; a config is a few KB (is this the right file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: cannot be read as a text file (not UTF-8: byte {data[e.start]:#04x} at offset {e.start})") from e


def _file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is."""
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _load_yaml(text: str, where: str):
    """The one YAML document in `text`, built only after _check_yaml_shape has passed it. Raises
    ConfigError naming `where` for its shape, yaml.YAMLError for its syntax, ValueError for a value."""
    _check_yaml_shape(text, where)
    try:
        return yaml.load(text, Loader=_LOADER)
    except RecursionError as e:  # the shape check bounds the nesting; this is the last resort
        raise ConfigError(f"{where}: the YAML nests too deeply") from e


def _check_yaml_shape(text: str, where: str) -> None:
    """Refuse YAML nested deeper than MAX_YAML_DEPTH, or that expands to more than MAX_YAML_VALUES
    values: a few hundred bytes of nested aliases ("billion laughs") stand for billions of values,
    and everything that walks or copies the document would expand them. Walks the parser's event
    stream (flat: no recursion, nothing built) in time linear in the text, counting for each anchor
    the values it stands for, so an alias costs one addition however much it expands to."""
    sizes = {}  # anchor -> values it stands for, its own aliases expanded
    stack = [[None, 0]]  # [anchor, values so far] of each open collection, under the stream's total
    try:
        _walk_yaml_events(text, where, sizes, stack)
    except yaml.YAMLError as e:  # newer libyaml scanners stop deep nesting themselves, before the first event
        if "nesting depth" in str(e):
            raise ConfigError(f"{where}: the YAML nests deeper than {MAX_YAML_DEPTH} levels; a config is a few levels deep") from e
        raise


def _walk_yaml_events(text: str, where: str, sizes: dict, stack: list) -> None:
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) > MAX_YAML_DEPTH:
                raise ConfigError(f"{where}: the YAML nests deeper than {MAX_YAML_DEPTH} levels (line {event.start_mark.line + 1}); a config is a few levels deep")
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            if any(event.anchor == a for a, _ in stack):
                raise ConfigError(f"{where}: the alias *{event.anchor} at line {event.start_mark.line + 1} refers to a collection that holds it (a value cannot contain itself)")
            anchor, size = None, sizes.get(event.anchor, 1)  # an undefined alias: the loader names it
        else:
            continue  # stream and document boundaries
        if anchor is not None:
            sizes[anchor] = size
        stack[-1][1] += size
        if stack[-1][1] > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: the YAML expands to more than {MAX_YAML_VALUES:,} values (nested aliases?); a config has a few dozen")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of `raw` with each `dotted.key=value` set (value parsed as a YAML scalar)."""
    raw = _copy_tree(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"--set {_shown(item)}", "expected KEY=VALUE, e.g. --set optim.lr=0.01")
        parts = key.strip().split(".")
        if not all(parts):
            raise OverrideError(f"--set {_shown(item)}", f"{_shown(key.strip())} has an empty part between dots; expected a dotted key like optim.lr")
        try:
            value = _load_yaml(text, f"--set {_shown(item)}")
        except (yaml.YAMLError, ValueError, OverflowError):  # not a YAML value: the text as it is
            value = text
        node = raw
        if parts[:1] == ["model"] and parts[1:] in (["depth"], ["width"]):
            _hidden_as_depth_width(raw)
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and i == len(parts) - 2:
                child = {"name": child}  # --set model.activation.negative_slope=0.2 on `activation: leaky_relu`
            elif not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def _copy_tree(value):
    """A copy of YAML data whose every mapping and list is new: each use of an alias becomes a copy of
    its own, so that an override changes one place (read_yaml bounds what that expansion can make)."""
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy_tree(v) for v in value]
    return value


def _hidden_as_depth_width(raw: dict) -> None:
    """Rewrite equal `model.hidden` widths as depth and width, so `--set model.depth=9` deepens the net."""
    model = raw.get("model")
    hidden = model.get("hidden") if isinstance(model, dict) else None
    if isinstance(hidden, list) and hidden and all(h == hidden[0] for h in hidden):
        del model["hidden"]
        model.setdefault("depth", len(hidden))
        model.setdefault("width", hidden[0])


def config_from_dict(raw: Mapping) -> Config:
    """Validate a plain mapping (as read from YAML) into a Config. Raises ConfigError."""
    raw = dict(raw)
    if isinstance(raw.get("model"), dict):
        raw["model"] = _expand_depth_width(raw["model"])
    config = _parse(Config, raw, "")
    _check_cross_fields(config)
    return config


def _expand_depth_width(model: dict) -> dict:
    if "depth" not in model and "width" not in model:
        return model
    model = dict(model)
    if "hidden" in model:
        raise ConfigError("model: give either hidden (a list of widths) or depth and width, not both")
    depth = _parse(int, model.pop("depth", 2), "model.depth", Range(1, MAX_DEPTH))
    width = _parse(int, model.pop("width", 256), "model.width", Range(1, MAX_WIDTH))
    model["hidden"] = [width] * depth
    return model


def _check_cross_fields(config: Config) -> None:
    if len(config.model.hidden) > MAX_DEPTH:
        raise ConfigError(f"model.hidden: {len(config.model.hidden)} hidden layers; at most {MAX_DEPTH}")
    opt = config.optim.optimizer
    if opt.params.get("nesterov") and (opt.params.get("momentum", 0) <= 0 or opt.params.get("dampening", 0) != 0):
        raise ConfigError("optim.optimizer: nesterov needs momentum > 0 and dampening 0, e.g. {name: sgd, momentum: 0.9, nesterov: true}")
    for key in ("init", "bias_init"):
        c = getattr(config.model, key)
        if c.name == "uniform" and c.params["low"] > c.params["high"]:
            raise ConfigError(f"model.{key}.low: {c.params['low']:g} is above high ({c.params['high']:g}); uniform needs low <= high")
    if isinstance(config.model.dropout, tuple) and len(config.model.dropout) != len(config.model.hidden):
        raise ConfigError(f"model.dropout: {len(config.model.dropout)} rates for {len(config.model.hidden)} hidden layers; give one per layer, or one number for all")
    _check_penalty_lengths(config)
    if config.model.bias_init.name in MATRIX_ONLY_INITIALIZERS:
        raise ConfigError(f"model.bias_init: {config.model.bias_init.name} needs a matrix; use a number, normal or uniform")
    check_name(config.name)
    if not DEVICE_PATTERN.match(config.train.device):
        raise ConfigError(f"train.device: {_shown(config.train.device)} is not a device; use auto, cpu, cuda or cuda:N")
    if config.train.early_stopping and config.train.early_stopping.mode == "max" and config.train.early_stopping.monitor == "val_loss":
        raise ConfigError("train.early_stopping.mode: max with monitor val_loss would keep the worst epoch; use auto or min")


def _check_penalty_lengths(config: Config) -> None:
    hidden = len(config.model.hidden)
    matrices = f"{hidden + 1} weight matrices ({_plural(hidden, 'hidden layer')}, then the output layer)"
    for key, expected, what in (("l1", hidden + 1, matrices), ("l2", hidden + 1, matrices),
                                ("activity_l1", hidden, _plural(hidden, "hidden layer")),
                                ("activity_l2", hidden, _plural(hidden, "hidden layer"))):
        value = getattr(config.regularization, key)
        if isinstance(value, tuple) and len(value) != expected:
            raise ConfigError(f"regularization.{key}: {_plural(len(value), 'value')} for {what}; give a list of {expected}, or one number for all")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_name(name, what: str = "name") -> None:
    """Refuse a name that is not one plain folder inside the runs folder (a config's, a sweep's or a
    run's): a string of NAME_CHARS, not dots alone ("." and ".." are the folder itself and its
    parent), at most MAX_NAME_LENGTH characters. Raises ConfigError naming `what`."""
    if not isinstance(name, str):
        raise ConfigError(f"{what}: expected a string (a folder name), got {_kind(name)}")
    if not name:
        raise ConfigError(f"{what}: is empty; give a folder name of letters, digits and _ . , = + -")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{what}: {_shown(name)} is not a usable folder name: {len(name)} characters, at most {MAX_NAME_LENGTH}")
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{what}: {_shown(name)} is not a usable folder name; use letters, digits and _ . , = + -")
    if name.strip(".") == "":
        raise ConfigError(f"{what}: {name!r} is not a usable folder name: dots alone name the runs folder or its parents; use letters, digits and _ . , = + -")


# ----------------------------------------------------------------------------- the walker


def _parse(tp, value, path: str, rng: Range | None = None, registry: str | None = None):
    """Check `value` against type `tp` and return it converted; raise ConfigError naming `path`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, _UnionType) and type(None) in args:
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        if inner is not Component and dataclasses.is_dataclass(inner) and isinstance(value, bool):
            return inner() if value else None  # early_stopping: true
        return _parse(inner, value, path, rng, registry)
    if origin in (typing.Union, _UnionType):
        # The value's shape picks: a list (model.dropout's rates), a word (train.threads: auto), else a number.
        def fits(arm) -> bool:
            if isinstance(value, (list, tuple)) or typing.get_origin(arm) is tuple:
                return isinstance(value, (list, tuple)) and typing.get_origin(arm) is tuple
            return (typing.get_origin(arm) is Literal) == isinstance(value, str)

        inner = next((a for a in args if fits(a)), next(a for a in args if typing.get_origin(a) is not tuple))
        return _parse(inner, value, path, rng, registry)
    if tp is Component:
        return parse_component(value, path, registry)
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {_shown(value)} is not allowed; choose one of {', '.join(map(str, args))}{_did_you_mean(value, args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or isinstance(value, str):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {len(value)}")
        if not value:
            raise ConfigError(f"{path}: expected a non-empty list")
        if len(value) > MAX_LIST:  # refused before 20,000 values are checked one by one
            raise ConfigError(f"{path}: a list of {len(value)} values; lists here hold one value per layer, at most {MAX_LIST}")
        return tuple(_parse(args[0], v, f"{path}[{i}]", rng) for i, v in enumerate(value))
    return _parse_scalar(tp, value, path, rng)


_UnionType = type(int | None)


def _parse_scalar(tp, value, path, rng):
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_kind(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_kind(value)}")
    elif tp is float:
        if isinstance(value, str) and FLOAT_PATTERN.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_kind(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value}")
    else:
        raise TypeError(f"unsupported config type {tp!r} at {path}")
    if rng is not None and value not in rng:
        raise ConfigError(f"{path}: {_number(value)} is out of range; allowed {rng}")
    return value


def _parse_dataclass(cls, value, path):
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_kind(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            where = f"{path}.{_shown_key(key)}" if path else _shown_key(key)
            raise ConfigError(f"{where}: unknown key{_did_you_mean(key, fields)}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        # Defaults go through the parser too, so a default component gets its parameters filled in.
        given = _plain(value[name] if name in value else f.default)
        meta = f.metadata
        kwargs[name] = _parse(hints[name], given, f"{path}.{name}" if path else name, meta.get("range"), meta.get("registry"))
    return cls(**kwargs)


def parse_component(value, path, registry):
    table = REGISTRIES[registry]
    if registry == "initializer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"name": "constant", "value": value}
    if registry == "activation" and (value == FORMULA or isinstance(value, Mapping) and ("expr" in value or value.get("name") == FORMULA)):
        return parse_formula_component(value, path)
    if isinstance(value, str):
        name, given = value, {}
    elif isinstance(value, Mapping):
        if "name" not in value:
            raise ConfigError(f"{path}: a mapping needs a name, e.g. {{name: {next(iter(table))}}}")
        name, given = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        raise ConfigError(f"{path}: expected {_a(registry)} name or a mapping with a name, got {_kind(value)}")
    if not isinstance(name, str):
        raise ConfigError(f"{path}.name: expected {_a(registry)} name, got {_kind(name)}")
    name = ALIASES.get(name, name)
    if name in table:
        factory = table[name]
    else:
        # Only a plugin the person running the command enabled can provide another name: a config
        # that names one enabled nowhere imports nothing.
        plugin = find_plugin(registry, name)
        if plugin is None:
            others = list(table) + list(ALIASES) + list(available_plugins(registry) if registry in PLUGIN_GROUPS else ())
            raise ConfigError(f"{path}: unknown {registry} {_shown(name)}{_did_you_mean(name, others)}; choose one of {', '.join(table)}"
                              + (", or a formula {expr: ...}" if registry == "activation" else "") + unknown_hint(registry))
        factory = plugin.entry.factory if registry == "activation" else plugin.entry
    defaults = component_defaults(factory)
    for key in given:
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ConfigError(f"{path}.{_shown_key(key)}: {name} has no parameter {_shown(key)}{_did_you_mean(key, defaults)}; parameters: {allowed}")
    params = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        params[key] = _parse_param(key, value, default, f"{path}.{key}")
    return Component(name, MappingProxyType(params))


def parse_formula_component(value, path: str) -> Component:
    """A formula activation, `{expr: "x * sigmoid(beta * x)", beta: 1.702, learn: [beta], gain: auto}`:
    the formula (formula.parse_formula, normalized), a value for each parameter it uses, the ones it
    learns (`learn`, default none) and the init gain (`gain`: auto, the default, or a number)."""
    if not isinstance(value, Mapping) or "expr" not in value:
        raise ConfigError(f"{path}: a formula is a mapping with expr, e.g. {{expr: \"x * sigmoid(beta * x)\", beta: 1.702}}")
    if value.get("name", FORMULA) != FORMULA:
        raise ConfigError(f"{path}: give either name (a registered activation) or expr (a formula), not both")
    formula = parse_formula(value["expr"], f"{path}.expr")
    given = {k: v for k, v in value.items() if k not in FORMULA_KEYS}
    for name in formula.parameters:  # first: a typo in the formula is more likely than one beside it
        if name not in given:
            raise ConfigError(f"{path}.expr: {name!r} is not x, pi, a function or a parameter given a value{_did_you_mean(name, list(FORMULA_FUNCTIONS) + list(given))}; "
                              f"give its value beside expr, e.g. {name}: 1.0")
    for key in given:
        if key not in formula.parameters:
            uses = f"; it uses {', '.join(formula.parameters)}" if formula.parameters else "; it has no parameters"
            raise ConfigError(f"{path}.{_shown_key(key)}: the formula does not use {_shown(key)}{_did_you_mean(key, formula.parameters)}{uses}")
    params: dict[str, Any] = {"expr": formula.text}
    for name in formula.parameters:
        params[name] = _parse(float, given[name], f"{path}.{name}", Range(-FORMULA_MAX_NUMBER, FORMULA_MAX_NUMBER))
    learn = value.get("learn") or []
    if isinstance(learn, str):
        learn = [learn]
    if not isinstance(learn, (list, tuple)) or not all(isinstance(name, str) for name in learn):
        raise ConfigError(f"{path}.learn: expected a list of the formula's parameters, e.g. [beta]")
    for name in learn:
        if name not in formula.parameters:
            raise ConfigError(f"{path}.learn: {_shown(name)} is not a parameter of the formula{_did_you_mean(name, formula.parameters)}")
    for name in formula.exponents:
        if name in learn:
            raise ConfigError(f"{path}.learn: {name} is an exponent; an exponent stays fixed")
        if abs(params[name]) > FORMULA_MAX_EXPONENT:
            raise ConfigError(f"{path}.{name}: {_number(params[name])} is an exponent; at most ±{FORMULA_MAX_EXPONENT}")
    params["learn"] = tuple(name for name in formula.parameters if name in learn)
    gain = value.get("gain", "auto")
    params["gain"] = gain if gain == "auto" else _parse(float, gain, f"{path}.gain", Range(0, 1000, open_low=True))
    return Component(FORMULA, MappingProxyType(params))


def component_defaults(factory) -> dict[str, Any]:
    """A factory's user parameters: its keyword parameters that have defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def _parse_param(key, value, default, path):
    if key in PARAM_CHOICES:
        return _parse(Literal[PARAM_CHOICES[key]], value, path)
    tp = tuple[float, ...] if isinstance(default, tuple) else type(default)
    if isinstance(default, tuple) and isinstance(value, (list, tuple)) and len(value) != len(default):
        raise ConfigError(f"{path}: expected a list of {len(default)} numbers, got {len(value)}")
    return _parse(tp, value, path, PARAM_RANGES.get(key))


def _did_you_mean(word, choices) -> str:
    if not isinstance(word, str) or len(word) > 100:
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _kind(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()}; quote it for a string)"
    if isinstance(value, int):
        return f"int {_number(value)}"
    return f"{type(value).__name__.replace('str', 'string').replace('float', 'number')} {_shown(value)}"


def _shown(value, limit: int = 60) -> str:
    """repr(value) for a message: one line, at most about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown_key(key) -> str:
    """A mapping key in a dotted path: as it is when plain, else quoted and escaped."""
    return key if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 60 else _shown(key)


def _shown_path(path) -> str:
    text = str(path)
    return text if text.isprintable() else _shown(text, 200)


def _number(x) -> str:
    """A number for a message: integers in full, or by their size when huge (%g would overflow)."""
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x) if abs(x) < 10**20 else f"about {'-' if x < 0 else ''}10^{int(x.bit_length() * math.log10(2))}"
    return f"{x:g}"


def _first_line(error: Exception) -> str:
    # Python's advice for a too-long integer (raise sys.set_int_max_str_digits) is not the user's fix.
    lines = str(error).splitlines()
    return lines[0].split("; use sys.set_int_max_str_digits")[0] if lines else type(error).__name__


# ----------------------------------------------------------------------------- output


def _plain(value):
    if value is None or isinstance(value, (str, int, float)):  # most of a config: first, since lists can be long
        return value
    if isinstance(value, Component):
        return value.to_plain()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: Config) -> dict:
    """The resolved config as plain data: every key, every component parameter."""
    return _plain(config)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


# Keys config_hash leaves out: how a run is computed or watched, not which experiment it is.
UNHASHED_KEYS = ("train.threads", "train.tensorboard", "train.checkpoint_every")
# Keys added after run folders first recorded a hash, left out while at their default, so that
# runs recorded before a key existed are still recognised as the same experiments.
LATER_KEYS = {"data.normalize": "standardize"}


def config_hash(config: Config) -> str:
    """A short stable hash of the resolved config (sweeps use it to recognise finished runs)."""
    plain = config_to_dict(config)
    for key in UNHASHED_KEYS:
        parent, last = _parent(plain, key)
        parent.pop(last, None)
    for key, default in LATER_KEYS.items():
        parent, last = _parent(plain, key)
        if parent.get(last) == default:
            del parent[last]
    text = json.dumps(plain, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _parent(plain: dict, dotted: str) -> tuple[dict, str]:
    """The mapping that holds a dotted key, and the key's last part."""
    *parents, last = dotted.split(".")
    for part in parents:
        plain = plain.get(part, {})
    return plain, last


def as_config(config: Config | Mapping | str | Path) -> Config:
    """Accept a Config, a plain mapping or a YAML path (the Python API's convenience)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    return config_from_dict(config)


def config_fields(cls=Config, prefix: str = ""):
    """Yield (dotted key, type, default, range/registry, doc) for every field (a test checks that the
    README documents each)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        inner = hints[f.name]
        nested = next((a for a in typing.get_args(inner) if dataclasses.is_dataclass(a)), inner)
        if dataclasses.is_dataclass(nested) and nested is not Component:
            yield from config_fields(nested, key + ".")
        else:
            yield key, inner, _plain(f.default), f.metadata.get("range") or f.metadata.get("registry"), f.metadata.get("doc", "")
