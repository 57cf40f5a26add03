"""A plugin file, as a user writes one: enabled with `--plugin tests/plugin_files/snake.py` or
ACTEXP_PLUGINS, never by a config. It defines an elementwise activation with a learnable
parameter, one that is not elementwise, and an initializer."""

import torch
from torch import nn

from actexp.components import Activation


class Snake(nn.Module):
    """x + sin(alpha x)^2 / alpha (Ziyin et al., 2020), alpha learned per layer."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([float(alpha)]))

    def forward(self, x):
        return x + torch.sin(self.alpha * x) ** 2 / self.alpha


class CenteredTanh(nn.Module):
    """tanh of each unit less the mean of its layer: an output depends on every unit's input."""

    def forward(self, x):
        return torch.tanh(x - x.mean(-1, keepdim=True))


def scaled_normal(t, fan_in, fan_out, act_gain, scale=1.0):
    """He's normal init times `scale`."""
    return nn.init.normal_(t, 0.0, scale * act_gain / fan_in**0.5)


ACTIVATIONS = {
    "snake": Activation(Snake, elementwise=True, learnable=("alpha",)),
    "centered_tanh": Activation(CenteredTanh, elementwise=False, gain=5 / 3),
}
INITIALIZERS = {"scaled_normal": scaled_normal}
