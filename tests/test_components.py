"""Unit tests of the registries and the model: activation values, initializer statistics,
shapes and parameter counts, optimizers and schedules, aliases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actexp.components import ACTIVATIONS, ALIASES, INITIALIZERS, OPTIMIZERS, SCHEDULES
from actexp.config import Component, config_from_dict
from actexp.model import MLP, Maxout, build_model, count_parameters
from actexp.training import build_optimizer

XS = [-25.0, -3.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 3.0, 25.0]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _softplus(x, beta=1.0, threshold=20.0):
    return x if beta * x > threshold else math.log1p(math.exp(beta * x)) / beta


def _elu(x, alpha=1.0):
    return x if x > 0 else alpha * math.expm1(x)


SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772

# name -> [(params, scalar reference function)], written from the formulas, not from torch.
EXPECTED = {
    "linear": [({}, lambda x: x)],
    "sigmoid": [({}, _sigmoid)],
    "tanh": [({}, math.tanh)],
    "relu": [({}, lambda x: max(0.0, x))],
    "leaky_relu": [({}, lambda x: x if x > 0 else 0.01 * x), ({"negative_slope": 0.2}, lambda x: x if x > 0 else 0.2 * x)],
    "prelu": [({}, lambda x: x if x > 0 else 0.25 * x), ({"init": 0.1}, lambda x: x if x > 0 else 0.1 * x)],
    "elu": [({}, _elu), ({"alpha": 0.5}, lambda x: _elu(x, 0.5))],
    "selu": [({}, lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * math.expm1(x)))],
    "gelu": [
        ({}, lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))),
        ({"approximate": "tanh"}, lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    ],
    "silu": [({}, lambda x: x * _sigmoid(x))],
    "mish": [({}, lambda x: x * math.tanh(_softplus(x)))],
    "softplus": [({}, _softplus), ({"beta": 2.0, "threshold": 5.0}, lambda x: _softplus(x, 2.0, 5.0))],
}
ELEMENTWISE = [(name, params, f) for name, cases in EXPECTED.items() for params, f in cases]


def test_every_activation_has_a_value_test():
    assert set(EXPECTED) | {"maxout"} == set(ACTIVATIONS)


@pytest.mark.parametrize("name,params,reference", ELEMENTWISE, ids=[f"{n}{p or ''}" for n, p, _ in ELEMENTWISE])
def test_activation_values(name, params, reference):
    module = ACTIVATIONS[name](**params)
    x = torch.tensor(XS, dtype=torch.float64).reshape(1, -1)
    got = module.double()(x).reshape(-1).tolist()
    want = [reference(v) for v in XS]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_maxout_takes_max_over_consecutive_groups():
    x = torch.tensor([[1.0, 5.0, -2.0, -7.0, 3.0, 3.5], [0.0, -1.0, 9.0, 8.0, -4.0, -5.0]])
    assert Maxout(2)(x).tolist() == [[5.0, -2.0, 3.5], [0.0, 9.0, -4.0]]
    assert Maxout(3)(x).tolist() == [[5.0, 3.5], [9.0, 8.0]]
    assert ACTIVATIONS["maxout"]().pieces == 2 and ACTIVATIONS["maxout"](k=4).pieces == 4


def test_maxout_layer_computes_k_times_width_preactivations():
    config = config_from_dict({"model": {"hidden": [5, 4], "activation": {"name": "maxout", "k": 3}}}).model
    torch.manual_seed(0)
    model = build_model(config, 7, 2)
    layer = model.hidden[0]
    assert layer.linear.out_features == 15 and model.hidden[1].linear.in_features == 5
    x = torch.randn(8, 7)
    pre = layer.linear(x)
    assert torch.equal(layer(x), pre.reshape(8, 5, 3).amax(-1))
    assert model(x).shape == (8, 2)


# ----------------------------------------------------------------------------- initializers

FAN_IN, FAN_OUT = 1000, 800  # a weight (FAN_OUT, FAN_IN): 800k samples, std estimates within ~0.2%


def _init(name, act_gain=1.0, shape=(FAN_OUT, FAN_IN), **params):
    torch.manual_seed(0)
    t = torch.empty(shape)
    INITIALIZERS[name](t, FAN_IN, FAN_OUT, act_gain, **params)
    return t


@pytest.mark.parametrize(
    "name,params,std",
    [
        ("xavier_normal", {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("xavier_normal", {"gain": 2.0}, 2 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("xavier_uniform", {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("lecun_normal", {}, 1 / math.sqrt(FAN_IN)),
        ("normal", {}, 1.0),
        ("normal", {"std": 0.05}, 0.05),
        ("torch_default", {}, 1 / math.sqrt(FAN_IN) / math.sqrt(3)),
    ],
)
def test_initializer_std(name, params, std):
    t = _init(name, **params)
    assert t.std().item() == pytest.approx(std, rel=0.01)
    assert abs(t.mean().item()) < 0.01 * std


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2), 5 / 3])
def test_he_initializers_use_the_activation_gain(gain):
    normal, uniform = _init("he_normal", gain), _init("he_uniform", gain)
    assert normal.std().item() == pytest.approx(gain / math.sqrt(FAN_IN), rel=0.01)
    bound = gain * math.sqrt(3 / FAN_IN)
    assert uniform.abs().max().item() <= bound
    assert uniform.abs().max().item() > 0.99 * bound
    assert uniform.std().item() == pytest.approx(gain / math.sqrt(FAN_IN), rel=0.01)


def test_uniform_bounds():
    t = _init("uniform")
    assert -0.05 <= t.min().item() < -0.0499 and 0.0499 < t.max().item() <= 0.05
    t = _init("uniform", low=0.5, high=2.0)
    assert 0.5 <= t.min().item() < 0.501 and 1.999 < t.max().item() <= 2.0
    assert t.mean().item() == pytest.approx(1.25, abs=0.005)
    xavier = _init("xavier_uniform")
    bound = math.sqrt(6 / (FAN_IN + FAN_OUT))
    assert xavier.abs().max().item() <= bound and xavier.abs().max().item() > 0.99 * bound


def test_normal_mean_and_std():
    t = _init("normal", mean=3.0, std=0.5)
    assert t.mean().item() == pytest.approx(3.0, abs=0.005) and t.std().item() == pytest.approx(0.5, rel=0.01)


def test_torch_default_matches_nn_linear():
    bound = 1 / math.sqrt(FAN_IN)
    t = _init("torch_default")
    assert t.abs().max().item() <= bound and t.abs().max().item() > 0.99 * bound
    torch.manual_seed(0)
    reference = nn.Linear(FAN_IN, FAN_OUT).weight.detach()
    assert t.std().item() == pytest.approx(reference.std().item(), rel=0.01)


@pytest.mark.parametrize("shape", [(FAN_OUT, FAN_IN), (FAN_IN, FAN_OUT)])
def test_orthogonal(shape):
    t = _init("orthogonal", shape=shape, gain=1.0)
    small = min(shape)
    gram = t @ t.T if shape[0] <= shape[1] else t.T @ t
    assert torch.allclose(gram, torch.eye(small), atol=1e-4)
    scaled = _init("orthogonal", shape=shape, gain=2.0)
    gram = scaled @ scaled.T if shape[0] <= shape[1] else scaled.T @ scaled
    assert torch.allclose(gram, 4 * torch.eye(small), atol=1e-3)


def _model(model: dict, n_in=FAN_IN, n_out=10, seed=0) -> MLP:
    torch.manual_seed(seed)
    return build_model(config_from_dict({"model": model}).model, n_in, n_out)


@pytest.mark.parametrize(
    "activation,gain",
    [
        ("relu", math.sqrt(2)),
        ("tanh", 5 / 3),
        ("linear", 1.0),
        ("sigmoid", 1.0),
        ("selu", nn.init.calculate_gain("selu")),
        ({"name": "leaky_relu", "negative_slope": 0.2}, nn.init.calculate_gain("leaky_relu", 0.2)),
        ("elu", math.sqrt(2)),
    ],
)
def test_he_normal_in_a_model_uses_the_activation_gain(activation, gain):
    model = _model({"hidden": [FAN_OUT], "activation": activation, "init": "he_normal"})
    hidden, output = model.hidden[0].linear.weight, model.output.weight
    assert hidden.std().item() == pytest.approx(gain / math.sqrt(FAN_IN), rel=0.01)
    # The output layer feeds the loss: it gets the linear gain, 1.
    assert output.std().item() == pytest.approx(1 / math.sqrt(FAN_OUT), rel=0.05)


def test_bias_init_number_and_component():
    model = _model({"hidden": [FAN_OUT], "bias_init": 0.01})
    assert torch.all(model.hidden[0].linear.bias == 0.01) and torch.all(model.output.bias == 0.01)
    default = _model({"hidden": [FAN_OUT]})
    assert torch.all(default.hidden[0].linear.bias == 0)
    model = _model({"hidden": [4000], "bias_init": {"name": "normal", "std": 1}})
    bias = model.hidden[0].linear.bias
    assert bias.std().item() == pytest.approx(1.0, rel=0.05) and abs(bias.mean().item()) < 0.06
    config = config_from_dict({"model": {"bias_init": {"name": "normal", "std": 1}}})
    assert config.model.bias_init == Component("normal", {"mean": 0.0, "std": 1.0})
    assert isinstance(config.model.bias_init.params["std"], float)


def test_initialization_is_seeded():
    a, b, c = _model({"hidden": [16]}, seed=1), _model({"hidden": [16]}, seed=1), _model({"hidden": [16]}, seed=2)
    assert torch.equal(a.hidden[0].linear.weight, b.hidden[0].linear.weight)
    assert not torch.equal(a.hidden[0].linear.weight, c.hidden[0].linear.weight)


# ----------------------------------------------------------------------------- model shapes


@pytest.mark.parametrize(
    "model,n_params",
    [
        ({"hidden": [32, 16]}, (784 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)),
        ({"depth": 3, "width": 8}, (784 * 8 + 8) + 2 * (8 * 8 + 8) + (8 * 10 + 10)),
        ({"hidden": [32, 16], "activation": {"name": "maxout", "k": 3}}, (784 * 96 + 96) + (32 * 48 + 48) + (16 * 10 + 10)),
        ({"hidden": [32, 16], "batch_norm": True}, (784 * 32 + 32 + 64) + (32 * 16 + 16 + 32) + (16 * 10 + 10)),
        ({"hidden": [8], "activation": "maxout", "batch_norm": True}, (784 * 16 + 16 + 32) + (8 * 10 + 10)),
        ({"hidden": [32, 16], "activation": "prelu"}, (784 * 32 + 32 + 1) + (32 * 16 + 16 + 1) + (16 * 10 + 10)),
    ],
)
def test_model_shapes_and_parameter_counts(model, n_params):
    net = _model(model, n_in=784, n_out=10)
    assert count_parameters(net) == n_params
    net.eval()
    assert net(torch.randn(5, 784)).shape == (5, 10)
    logits, activations = net.forward_with_activations(torch.randn(5, 784))
    assert logits.shape == (5, 10)
    widths = list(config_from_dict({"model": model}).model.hidden)
    assert [a.shape for a in activations] == [(5, w) for w in widths]


def test_model_layout_batch_norm_and_dropout():
    net = _model({"hidden": [6], "activation": "tanh", "batch_norm": True, "dropout": 0.5}, n_in=3, n_out=2)
    layer = net.hidden[0]
    assert isinstance(layer.norm, nn.BatchNorm1d) and layer.norm.num_features == 6
    assert isinstance(layer.activation, nn.Tanh) and isinstance(layer.dropout, nn.Dropout) and layer.dropout.p == 0.5
    net.eval()
    x = torch.randn(4, 3)
    assert torch.allclose(net(x), net.output(torch.tanh(layer.norm(layer.linear(x)))))
    net.train()
    outs = {tuple(net(x).flatten().tolist()) for _ in range(5)}
    assert len(outs) > 1  # dropout is active in training mode
    plain = _model({"hidden": [6]}, n_in=3, n_out=2)
    assert isinstance(plain.hidden[0].norm, nn.Identity) and isinstance(plain.hidden[0].dropout, nn.Identity)


# ----------------------------------------------------------------------------- optimizers and schedules


def _toy_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _loss_after(optimizer_factory, schedule_factory=None, steps=60):
    """Full-batch steps on a toy classification problem; the schedule (if any) steps every 10."""
    torch.manual_seed(0)
    x, y = _toy_problem()
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    optimizer = optimizer_factory(model.parameters())
    scheduler = schedule_factory(optimizer) if schedule_factory else None
    first = nn.functional.cross_entropy(model(x), y).item()
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None and step % 10 == 9:
            scheduler.step()
    return first, nn.functional.cross_entropy(model(x), y).item()


OPTIMIZER_CASES = [
    ("sgd", 0.1, {}),
    ("sgd", 0.05, {"momentum": 0.9, "nesterov": True}),
    ("adam", 0.01, {}),
    ("adamw", 0.01, {"betas": [0.8, 0.99]}),
    ("nadam", 0.01, {}),
    ("rmsprop", 0.005, {"momentum": 0.5, "centered": True}),
    ("adagrad", 0.1, {"lr_decay": 0.001}),
]


def test_every_optimizer_is_tested():
    assert {name for name, _, _ in OPTIMIZER_CASES} == set(OPTIMIZERS)


@pytest.mark.parametrize("name,lr,params", OPTIMIZER_CASES)
def test_optimizer_builds_from_config_and_lowers_the_loss(name, lr, params):
    config = config_from_dict({"optim": {"optimizer": {"name": name, **params}, "lr": lr, "weight_decay": 1e-5}})
    optimizer, scheduler = build_optimizer(config, _model({"hidden": [4]}, n_in=3, n_out=2))
    group = optimizer.param_groups[0]
    assert group["lr"] == lr and group["weight_decay"] == 1e-5 and scheduler is None
    for key, value in params.items():
        assert group[key] == (tuple(value) if isinstance(value, list) else value)
    factory = OPTIMIZERS[config.optim.optimizer.name]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.optim.optimizer.params.items()}
    first, last = _loss_after(lambda p: factory(p, lr, 0.0, **kwargs))
    assert last < 0.5 * first


def _lrs(schedule, lr=1.0, epochs=6):
    config = config_from_dict({"optim": {"optimizer": "sgd", "lr": lr, "schedule": schedule}, "train": {"epochs": epochs}})
    model = _model({"hidden": [4]}, n_in=3, n_out=2)
    optimizer, scheduler = build_optimizer(config, model)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        model(torch.randn(2, 3)).sum().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("none", [1.0] * 6),
        ({"name": "step", "step_size": 2, "gamma": 0.5}, [1, 1, 0.5, 0.5, 0.25, 0.25]),
        ({"name": "exponential", "gamma": 0.9}, [0.9**e for e in range(6)]),
        ("cosine", [(1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]),
        ({"name": "cosine", "eta_min": 0.1}, [0.1 + 0.9 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]),
    ],
)
def test_schedules(schedule, expected):
    assert _lrs(schedule) == pytest.approx(expected)


def test_every_schedule_is_tested():
    assert set(SCHEDULES) == {"none", "step", "exponential", "cosine"}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_steps_and_the_loss_goes_down(name):
    factory = SCHEDULES[name]
    first, last = _loss_after(lambda p: OPTIMIZERS["adam"](p, 0.02, 0.0), lambda o: factory(o, 6))
    assert last < 0.5 * first


# ----------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    "section,key,alias,name",
    [
        ("model", "activation", "swish", "silu"),
        ("model", "activation", "identity", "linear"),
        ("model", "init", "glorot_normal", "xavier_normal"),
        ("model", "init", "glorot_uniform", "xavier_uniform"),
        ("model", "init", "kaiming_normal", "he_normal"),
        ("model", "init", "kaiming_uniform", "he_uniform"),
    ],
)
def test_aliases_resolve_to_the_canonical_component(section, key, alias, name):
    assert ALIASES[alias] == name
    by_alias = config_from_dict({section: {key: alias}})
    by_name = config_from_dict({section: {key: name}})
    assert getattr(by_alias.model, key) == getattr(by_name.model, key) and getattr(by_alias.model, key).name == name
    mapped = config_from_dict({section: {key: {"name": alias}}})
    assert getattr(mapped.model, key).name == name


def test_swish_model_computes_silu():
    net = _model({"hidden": [5], "activation": "swish"}, n_in=3, n_out=2)
    assert isinstance(net.hidden[0].activation, nn.SiLU)
