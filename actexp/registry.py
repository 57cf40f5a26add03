"""What the engine needs of a config's activation and initializers, whatever they are: a built-in
(components.py), a formula (formula.py) or an enabled plugin (plugins.py). Every lookup goes
through here, by the config's component: its factory, whether it is elementwise (fuses), its
learnable parameters, its init gain, and a label for messages.

torch-free, except `make_activation` and `hidden_gain` (which build or integrate the activation).
"""

from __future__ import annotations

import functools

from .components import ACTIVATIONS, INITIALIZERS, Activation, activation_gain
from .formula import FORMULA, formula_label, parse_formula
from .plugins import activation_gain_of, find

NOT_ELEMENTWISE = ("maxout",)  # maxes over groups of units: fuses all the same (it acts on the last axis only)


def activation_spec(component) -> Activation:
    """The Activation a config's activation component stands for (a formula's factory builds its
    FormulaActivation with the config's values)."""
    name, params = component.name, dict(component.params)
    if name == FORMULA:
        return Activation(functools.partial(_formula_module, params), elementwise=True, learnable=tuple(params["learn"]), gain=params["gain"])
    if name in ACTIVATIONS:
        return Activation(ACTIVATIONS[name], elementwise=name not in NOT_ELEMENTWISE,
                          learnable=("weight",) if name == "prelu" else (), gain=functools.partial(activation_gain, name))
    plugin = find("activation", name)
    if plugin is None:
        raise KeyError(f"unknown activation {name!r}")  # the config validator says so first, with the fix
    return plugin.entry


def elementwise(component) -> bool:
    return activation_spec(component).elementwise


def learnable(component) -> tuple[str, ...]:
    """The names of the activation module's learnable parameters (one set per hidden layer)."""
    return activation_spec(component).learnable


def per_member_params(component) -> tuple[str, ...]:
    """The config parameters that only initialize a learnable parameter: members that differ in
    them alone share one slice of a fused group (each member's parameter is its own)."""
    if component.name == FORMULA:
        return tuple(component.params["learn"])
    if component.name == "prelu":
        return ("init",)
    return ()


def activation_label(component) -> str:
    """The activation in words: its name, or a formula's label."""
    if component.name == FORMULA:
        return f"formula {formula_label(component.params['expr'])}"
    return component.name


def make_activation(component):
    """The activation's nn.Module."""
    return activation_spec(component).factory(**_factory_params(component))


def hidden_gain(component) -> float:
    """The gain he_* initializers scale a hidden layer's weights by: a built-in's as torch's
    calculate_gain (components.activation_gain); a formula's or a plugin's as it declares (a
    number, or "auto": formula.second_moment_gain)."""
    name, params = component.name, dict(component.params)
    if name in ACTIVATIONS:
        return activation_gain(name, params)
    if name == FORMULA:
        gain = params["gain"]
        return float(gain) if gain != "auto" else _formula_gain(params["expr"], tuple(sorted(_values(params).items())))
    return activation_gain_of(activation_spec(component), params)


def initializer(name: str):
    """The initializer function a config's init or bias_init names."""
    if name in INITIALIZERS:
        return INITIALIZERS[name]
    plugin = find("initializer", name)
    if plugin is None:
        raise KeyError(f"unknown initializer {name!r}")
    return plugin.entry


def _factory_params(component) -> dict:
    return {} if component.name == FORMULA else dict(component.params)


def _values(params: dict) -> dict:
    """A formula component's parameter values (its params less expr, learn and gain)."""
    return {k: v for k, v in params.items() if k not in ("expr", "learn", "gain")}


def _formula_module(params: dict):
    from .model import FormulaActivation

    return FormulaActivation(parse_formula(params["expr"]), _values(params), tuple(params["learn"]))


@functools.lru_cache(maxsize=256)
def _formula_gain(expr: str, values: tuple) -> float:
    from .errors import ConfigError
    from .formula import evaluate, second_moment_gain

    tree = parse_formula(expr).tree
    try:
        return second_moment_gain(lambda z: evaluate(tree, z, dict(values)))
    except ValueError as e:
        raise ConfigError(f"model.activation.gain: auto: {e} for the formula {expr!r}; give a number") from e
