"""Registries: a dict from name to factory for activations, initializers, optimizers and schedules.

Adding a component is one line here (plus a test). Config validation reads only the factories'
signatures: every keyword parameter with a default is a user parameter, typed by its default and
bounded by PARAM_RANGES. torch is imported on the first factory call, not at import, so that
`actexp --help` and `actexp validate` answer instantly.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable


class LazyModule:
    """A module imported on first attribute access."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
init = LazyModule("torch.nn.init")
optim = LazyModule("torch.optim")
lr_scheduler = LazyModule("torch.optim.lr_scheduler")
model_module = LazyModule("actexp.model")


@dataclass(frozen=True)
class Range:
    """A numeric interval; `open_low`/`open_high` exclude the bound."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, x) -> bool:
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            return False
        return not (self.high is not None and (x > self.high or (self.open_high and x == self.high)))

    def __str__(self) -> str:
        low = "-inf" if self.low is None else _bound(self.low)
        high = "inf" if self.high is None else _bound(self.high)
        return f"{'(' if self.open_low or self.low is None else '['}{low}, {high}{')' if self.open_high or self.high is None else ']'}"


def _bound(x) -> str:
    # Integer bounds in full (an upper bound of 1000000, not 1e+06), fractional ones as %g.
    return str(x) if isinstance(x, int) else f"{x:g}"


POSITIVE = Range(0, None, open_low=True)
NON_NEGATIVE = Range(0)
UNIT = Range(0, 1, open_high=True)

# Generated datasets hold at most this many samples (and data.subset, data.val_size count at most
# this many): 140x the largest real set here (MNIST's 70,000), and 10 million XOR points are 80 MB of
# features; the bound stops `n_train: 100000000000` (800 GB) before anything is generated.
MAX_SAMPLES = 10_000_000
# Maxout's pieces per unit: papers use 2 to 5; each piece multiplies the layer's weights.
MAX_PIECES = 64

# Bounds of component parameters, by parameter name (a name means the same in every component).
PARAM_RANGES = {
    "negative_slope": NON_NEGATIVE,
    "alpha": POSITIVE,
    "beta": POSITIVE,
    "threshold": POSITIVE,
    "k": Range(2, MAX_PIECES),
    "std": NON_NEGATIVE,
    "gain": POSITIVE,
    "momentum": UNIT,
    "dampening": UNIT,
    "eps": POSITIVE,
    "lr_decay": NON_NEGATIVE,
    "initial_accumulator_value": NON_NEGATIVE,
    "step_size": Range(1, 1_000_000),  # epochs between lr drops: no run is longer (config.MAX_EPOCHS)
    "gamma": Range(0, 1, open_low=True),
    "eta_min": NON_NEGATIVE,
    "betas": UNIT,
    "n_train": Range(8, MAX_SAMPLES),
    "n_test": Range(4, MAX_SAMPLES),
    "noise": NON_NEGATIVE,
}
PARAM_CHOICES = {"approximate": ("none", "tanh")}

ACTIVATIONS = {
    "linear": lambda: nn.Identity(),
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda negative_slope=0.01: nn.LeakyReLU(negative_slope),
    "prelu": lambda init=0.25: nn.PReLU(init=init),
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "selu": lambda: nn.SELU(),
    "gelu": lambda approximate="none": nn.GELU(approximate=approximate),
    "silu": lambda: nn.SiLU(),
    "mish": lambda: nn.Mish(),
    "softplus": lambda beta=1.0, threshold=20.0: nn.Softplus(beta, threshold),
    "maxout": lambda k=2: model_module.Maxout(k),
}


@dataclass(frozen=True)
class Activation:
    """What the engine needs of an activation beyond its factory: how a plugin declares one
    (`ACTIVATIONS = {"snake": Activation(make_snake, elementwise=True, learnable=("alpha",))}` in a
    plugin file; see plugins.py). The factory's keyword parameters with defaults are the config's
    parameters, as for the built-ins.

    elementwise: each output depends on its own input alone, so a fused group applies it to a
      stack of members' layers [K, batch, units] at once (with learnable parameters given per
      member, shaped to broadcast); otherwise each run trains solo.
    learnable: the names of the module's parameters (trained with the weights, one set per layer).
    gain: the init gain of he_* initializers: a number, "auto" (1/sqrt(E[f(z)^2]) for z ~ N(0, 1),
      elementwise only; formula.second_moment_gain), or a function of the config's parameters."""

    factory: Callable[..., Any]
    elementwise: bool
    learnable: tuple[str, ...] = ()
    gain: float | str | Callable[..., float] = "auto"


def activation_gain(name: str, params: dict) -> float:
    """The gain that keeps activations' variance through a layer (torch.nn.init.calculate_gain);
    activations that torch has no gain for behave like ReLU on the positive side: sqrt(2)."""
    slope = params.get("negative_slope", params.get("init"))
    if name in ("leaky_relu", "prelu"):
        return math.sqrt(2.0 / (1 + slope**2))
    return {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "selu": 0.75}.get(name, math.sqrt(2.0))


# Initializers get the tensor, the layer's fans and the gain of the activation after the layer,
# so fan-based schemes work for biases too (with their layer's fans).
INITIALIZERS = {
    "constant": lambda t, fan_in, fan_out, act_gain, value=0.0: init.constant_(t, value),
    "normal": lambda t, fan_in, fan_out, act_gain, mean=0.0, std=1.0: init.normal_(t, mean, std),
    "uniform": lambda t, fan_in, fan_out, act_gain, low=-0.05, high=0.05: init.uniform_(t, low, high),
    "xavier_normal": lambda t, fan_in, fan_out, act_gain, gain=1.0: init.normal_(
        t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out))
    ),
    "xavier_uniform": lambda t, fan_in, fan_out, act_gain, gain=1.0: _symmetric_uniform(
        t, gain * math.sqrt(6.0 / (fan_in + fan_out))
    ),
    "he_normal": lambda t, fan_in, fan_out, act_gain: init.normal_(t, 0.0, act_gain / math.sqrt(fan_in)),
    "he_uniform": lambda t, fan_in, fan_out, act_gain: _symmetric_uniform(t, act_gain * math.sqrt(3.0 / fan_in)),
    "lecun_normal": lambda t, fan_in, fan_out, act_gain: init.normal_(t, 0.0, 1.0 / math.sqrt(fan_in)),
    "orthogonal": lambda t, fan_in, fan_out, act_gain, gain=1.0: init.orthogonal_(t, gain),
    # nn.Linear.reset_parameters: kaiming_uniform(a=sqrt(5)) for weights = U(±1/sqrt(fan_in)), same for biases.
    "torch_default": lambda t, fan_in, fan_out, act_gain: _symmetric_uniform(t, 1.0 / math.sqrt(fan_in)),
}
MATRIX_ONLY_INITIALIZERS = {"orthogonal"}


def _symmetric_uniform(t, bound: float):
    return init.uniform_(t, -bound, bound)


OPTIMIZERS = {
    "sgd": lambda params, lr, weight_decay, momentum=0.0, nesterov=False, dampening=0.0: _fused(
        optim.SGD, params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, dampening=dampening
    ),
    "adam": lambda params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, amsgrad=False: _fused(
        optim.Adam, params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, amsgrad=amsgrad
    ),
    "adamw": lambda params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, amsgrad=False: _fused(
        optim.AdamW, params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, amsgrad=amsgrad
    ),
    "nadam": lambda params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8: optim.NAdam(
        params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps
    ),
    "rmsprop": lambda params, lr, weight_decay, alpha=0.99, eps=1e-8, momentum=0.0, centered=False: optim.RMSprop(
        params, lr=lr, weight_decay=weight_decay, alpha=alpha, eps=eps, momentum=momentum, centered=centered
    ),
    "adagrad": lambda params, lr, weight_decay, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0: _fused(
        optim.Adagrad,
        params,
        lr=lr,
        weight_decay=weight_decay,
        lr_decay=lr_decay,
        eps=eps,
        initial_accumulator_value=initial_accumulator_value,
    ),
}


def _fused(optimizer_class, params, **kwargs):
    """The single-kernel (fused) implementation where this torch and device have one: on a CPU
    it makes Adam's step ~3x cheaper, a third of an MLP training step at batch 100."""
    params = list(params)
    try:
        return optimizer_class(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return optimizer_class(params, **kwargs)


# Schedules step once per epoch; `epochs` is the run's length.
SCHEDULES = {
    "none": lambda optimizer, epochs: None,
    "step": lambda optimizer, epochs, step_size=10, gamma=0.1: lr_scheduler.StepLR(optimizer, step_size, gamma),
    "cosine": lambda optimizer, epochs, eta_min=0.0: lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min),
    "exponential": lambda optimizer, epochs, gamma=0.95: lr_scheduler.ExponentialLR(optimizer, gamma),
}

ALIASES = {
    "swish": "silu",
    "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
    "identity": "linear",
}
