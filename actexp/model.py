"""The MLP: hidden layers of Linear -> [BatchNorm] -> activation -> [Dropout], then a linear output
layer (softmax lives in the loss)."""

from __future__ import annotations

import torch
from torch import nn

from .formula import Formula, evaluate
from .registry import hidden_gain, initializer, make_activation


class Maxout(nn.Module):
    """Max over each group of `k` consecutive pre-activations: width k·w in, w out."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.pieces = k

    def forward(self, x):
        return x.unflatten(-1, (-1, self.pieces)).amax(-1)

    def extra_repr(self):
        return f"k={self.pieces}"


class FormulaActivation(nn.Module):
    """A formula activation (formula.py): its parameters' values fixed, except those it learns,
    one nn.Parameter of shape (1,) each per layer (as PReLU's slope)."""

    def __init__(self, formula: Formula, values: dict, learn: tuple[str, ...] = ()):
        super().__init__()
        self.formula = formula
        self.fixed = {name: float(value) for name, value in values.items() if name not in learn}
        self.learned = nn.ParameterDict({name: nn.Parameter(torch.tensor([float(values[name])])) for name in learn})

    def forward(self, x):
        return evaluate(self.formula.tree, x, {**self.fixed, **self.learned})

    def forward_with(self, x, learned: dict):
        """The formula with the learnable parameters given (keyed `learned.<name>`, as the module's
        parameters are named): a fused group's per-member values, shaped to broadcast."""
        return evaluate(self.formula.tree, x, {**self.fixed, **{name.partition(".")[2]: value for name, value in learned.items()}})

    def extra_repr(self):
        return self.formula.text


class HiddenLayer(nn.Module):
    def __init__(self, n_in: int, width: int, activation: nn.Module, batch_norm: bool, dropout: float):
        super().__init__()
        pieces = getattr(activation, "pieces", 1)
        self.linear = nn.Linear(n_in, width * pieces)
        self.norm = nn.BatchNorm1d(width * pieces) if batch_norm else nn.Identity()
        self.activation = activation
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return self.activation(self.norm(self.linear(x)))


class MLP(nn.Module):
    def __init__(self, layers: list[HiddenLayer], output: nn.Linear):
        super().__init__()
        self.hidden = nn.ModuleList(layers)
        self.output = output

    def forward(self, x):
        for layer in self.hidden:
            x = layer.dropout(layer(x))
        return self.output(x)

    def forward_with_activations(self, x):
        """Logits and each hidden layer's activation output (before dropout), for activity penalties."""
        activations = []
        for layer in self.hidden:
            a = layer(x)
            activations.append(a)
            x = layer.dropout(a)
        return self.output(x), activations

    def linears(self) -> list[nn.Linear]:
        return [layer.linear for layer in self.hidden] + [self.output]


def build_model(model_config, n_features: int, n_classes: int, initialize: bool = True) -> MLP:
    """Build and initialize the MLP; the global torch RNG must already be seeded. `initialize`
    False leaves the layers as torch makes them: for a model whose weights are loaded next."""
    activation = model_config.activation
    layers, n_in = [], n_features
    dropout = model_config.dropout
    rates = dropout if isinstance(dropout, tuple) else (dropout,) * len(model_config.hidden)
    for width, rate in zip(model_config.hidden, rates):
        module = make_activation(activation)
        layers.append(HiddenLayer(n_in, width, module, model_config.batch_norm, rate))
        n_in = width
    model = MLP(layers, nn.Linear(n_in, n_classes))
    gain_of_hidden = hidden_gain(activation) if initialize else None
    for linear in model.linears() if initialize else ():
        # The output layer feeds softmax through the loss: it is initialized for a linear activation.
        gain = 1.0 if linear is model.output else gain_of_hidden
        _initialize(linear.weight, model_config.init, linear, gain)
        _initialize(linear.bias, model_config.bias_init, linear, gain)
    return model


@torch.no_grad()
def _initialize(tensor, spec, linear: nn.Linear, gain: float):
    initializer(spec.name)(tensor, linear.in_features, linear.out_features, gain, **spec.params)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
