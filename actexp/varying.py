"""Which config keys differ between runs, and short labels for them.

Sweeps name their runs from these labels (`activation=tanh,init=he_normal,seed=1`), and `compare`
and `plot` use them for table columns and legends. Everything works on plain resolved configs (as
`config_to_dict` makes them and config.yaml stores them), so hand-made run folders work too.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from .formula import formula_label
from .names import MAX_NAME_LENGTH, NAME_CHARS

SEED_KEY = "train.seed"
# Overrides that change where or how a run is recorded, not what it trains: left out of its name
# (summary.json's overrides still list them).
UNNAMED_KEYS = ("data.root", "train.device", "train.checkpoint", "train.checkpoint_every", "train.diagnostics", "train.tensorboard", "train.threads")
VALUE_PUNCTUATION = re.compile(r"[\s{}\[\]'\"]+")
UNSAFE_NAME_CHARS = re.compile(f"[^{NAME_CHARS}]+")


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf of a plain config. A component (a mapping with a `name`,
    e.g. `{name: leaky_relu, negative_slope: 0.2}`, or a formula's `expr`) is one leaf: it is one
    choice, not several."""
    flat = {}
    for key, value in config.items():
        if not prefix and key == "name":
            continue  # the experiment's name is not part of the experiment
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not is_component(value):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def is_component(value: Mapping) -> bool:
    return "name" in value or "expr" in value


def component_name(value: Mapping) -> str:
    """A plain component's name; a formula's label (formula.formula_label: the start of its text
    and a hash of it)."""
    if "name" in value or "expr" not in value:
        return str(value.get("name"))
    return formula_label(str(value["expr"]))


def varying_keys(configs: list[Mapping]) -> list[str]:
    """The dotted keys whose values are not the same in every config, in config order."""
    flats = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if len({_canonical(flat.get(k)) for flat in flats}) > 1]


def key_labels(keys: list[str]) -> dict[str, str]:
    """A short column label per dotted key: its last part, unless two keys would share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last)}


def value_labels(values: list[Any]) -> list[str]:
    """A label per value: `tanh`, `0.001`, `256x256`; a component is its name, with the parameters
    that tell it apart from other values of the same name: `leaky_relu(negative_slope=0.2)`; a
    formula is its label (`x-sigmoid-beta-x-bde48117`), with the parameters that tell it apart from
    the same formula's other values."""
    components = [v for v in values if isinstance(v, Mapping)]
    labels = []
    for value in values:
        if not isinstance(value, Mapping):
            labels.append(_scalar_label(value))
            continue
        name = component_name(value)
        same_name = [c for c in components if component_name(c) == name]
        differing = [k for k in value if k not in ("name", "expr") and len({_canonical(c.get(k)) for c in same_name}) > 1]
        params = ",".join(f"{k}={_scalar_label(value[k])}" for k in differing)
        labels.append(f"{name}({params})" if params else name)
    return labels


def describe(configs: list[Mapping], keys: list[str]) -> list[dict[str, str]]:
    """For each config, {dotted key: value label} over `keys`."""
    flats = [flatten(c) for c in configs]
    columns = {k: value_labels([flat.get(k) for flat in flats]) for k in keys}
    return [{k: columns[k][i] for k in keys} for i in range(len(configs))]


def run_name(labels: Mapping[str, str], key_label: Mapping[str, str]) -> str:
    """`activation=tanh,init=he_normal,seed=1`, made safe for a folder name."""
    return safe_name(",".join(f"{key_label[k]}={v}" for k, v in labels.items()))


def override_name(name: str, overrides: list[str]) -> str:
    """The name of a config trained with `KEY=VALUE` overrides, Hydra's override-dirname habit in
    this project's run-name form: the name, then `,key=value` per overridden key in the order of
    the keys (the same overrides in any order give the same name), as a folder sweep appends the
    keys it sweeps (`tanh,seed=1`). The key is its last part (the dotted key where
    two overridden keys share one), the value as written (a key given twice: its last value), and
    characters a folder name cannot hold become `-`. Keys that change only where or how the run is
    recorded (UNNAMED_KEYS) are left out. An override of `name` itself is the name as given. A
    result longer than MAX_NAME_LENGTH is cut and ends in a hash of the whole, so that different
    overrides still get different names."""
    given = {}
    for item in overrides:
        key, _, value = item.partition("=")
        given[key.strip()] = value.strip()
    if "name" in given:
        return name
    given = {k: given[k] for k in sorted(given) if k not in UNNAMED_KEYS}  # sorted: the same overrides, the same name
    if not given:
        return name
    labels = key_labels(list(given))
    return _fit(",".join([name, *(f"{safe_name(labels[k])}={_value_label(v)}" for k, v in given.items())]))


def sweep_name(base: str, keys: list[str]) -> str:
    """The name of a sweep that varies `keys` (dotted) over `base`: `relu_xavier_sweep-activation-init`,
    the base, then `-` and each key's label, in the labels' order, so that the same keys in any order
    give the same name (and so the same folder: running the command again resumes it). No keys: the
    base. A result longer than MAX_NAME_LENGTH is cut and ends in a hash of the whole, as override_name's."""
    labels = key_labels(list(keys))
    return _fit("-".join([base, *sorted(safe_name(labels[k]) for k in keys)]))


def _fit(name: str) -> str:
    """`name`, or when it is longer than MAX_NAME_LENGTH its start and a hash of the whole, so that
    different long names stay different."""
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}-{digest}"


def _value_label(text: str) -> str:
    """An override's value for a name, without the commas that separate keys: a list as the sweep
    labels it ([64, 64]: 64x64), a mapping's items with `-` ({patience: 2, min_delta: 0}: patience-2-min_delta-0)."""
    joiner = "x" if text.startswith("[") else "-"
    return safe_name(re.sub(VALUE_PUNCTUATION, "", text).replace(",", joiner))


def safe_name(text: str) -> str:
    """`text` with the characters a folder name may not hold replaced by `-`."""
    return UNSAFE_NAME_CHARS.sub("-", text).strip("-")


def _scalar_label(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(_scalar_label(v) for v in value)
    return str(value)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)
