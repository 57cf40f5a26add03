"""Formula activations: the documented grammar and its one spelling, formulas that equal built-ins,
learnable parameters, fused groups, the init gain, diagnostics and run names. The grammar's
refusals are in tests/adversarial/test_formula_grammar.py; solo = fused, eval = summary, resume and
diagnostics for formulas are in the layer contract (tests/test_layer_contract.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import integrate

import actexp
from actexp.config import config_from_dict, config_to_dict, config_to_yaml
from actexp.diagnostics import probe_activations
from actexp.formula import evaluate, formula_hash, parse_formula
from actexp.model import build_model
from actexp.planning import activation_key
from actexp.registry import hidden_gain
from actexp.runs import read_history
from actexp.sweep import load_sweep, parse_grid
from actexp.training import train_group

from conftest import cli, tiny_config, write_yaml
from test_fused import make_stepper

# What README and docs/activations.md show, and more: every operation of the grammar.
DOCUMENTED = [
    "x * sigmoid(beta * x)",
    "x * sigmoid(1.702 * x)",
    "x * tanh(softplus(x))",
    "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))",
    "where(x > 0, x, 0.01 * x)",
    "where(x >= 0, x, alpha * expm1(x))",
    "clamp(x, 0, 6)",
    "minimum(maximum(x, -1), 1)",
    "x * erf(x) + (x > 0) * 0.1",
    "log1p(exp(x)) - log(2)",
    "abs(x) ** 0.5 * sign(x)",
    "sqrt(x * x + 1) - 1",
    "sin(x) + cos(x) - 1",
    "atan(x) + asinh(x) / 2",
    "relu(x) - 0.1 * relu(-x)",
    "x / (1 + abs(x))",
    "-x ** 2 + x",
    "(x != 0) * x - (x == 0) * 0.5 + (x < 1) - (x <= 2)",
    "exp(-x ** 2)",
    "x ** p",
]
BUILT_IN_EQUALS = {
    "mish": ("x * tanh(softplus(x))", F.mish),
    "silu": ("x * sigmoid(x)", F.silu),
    "gelu-tanh": ("0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))", lambda x: F.gelu(x, approximate="tanh")),
    "leaky_relu": ("where(x > 0, x, 0.01 * x)", F.leaky_relu),
}
BUILT_IN_CONFIG = {"mish": "mish", "silu": "silu", "gelu-tanh": {"name": "gelu", "approximate": "tanh"}, "leaky_relu": "leaky_relu"}


def run_config(activation, seed: int = 0, **model) -> dict:
    return tiny_config(model={"hidden": [16, 12], "activation": activation} | model, train={"epochs": 2, "batch_size": 50, "seed": seed, "device": "cpu"})


# ----------------------------------------------------------------------------- the grammar


@pytest.mark.parametrize("text", DOCUMENTED)
def test_the_documented_formulas_parse_with_one_spelling(text):
    formula = parse_formula(text)
    assert parse_formula(formula.text) == formula  # the normalized text reads back as the same tree
    spaced = parse_formula(" " + text.replace(" ", "").replace("(", " ( ") + " ")
    assert spaced.text == formula.text  # spacing is not part of a formula
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    values = dict.fromkeys(formula.parameters, 1.0)
    assert torch.equal(evaluate(formula.tree, x, values), evaluate(parse_formula(formula.text).tree, x, values))


def test_normalized_text_keeps_precedence_and_signs():
    assert parse_formula("(-2) ** 2 * x").text == "(-2) ** 2 * x"  # not -2 ** 2, which is -(2 ** 2)
    assert parse_formula("x - (1 - x)").text == "x - (1 - x)"
    assert parse_formula("(x - 1) - x").text == "x - 1 - x"
    assert parse_formula("((x > 0) > 0) * x").text == "((x > 0) > 0) * x"  # never read back as a chain
    assert parse_formula("x*1.0+x*1e-06").text == "x * 1 + x * 1e-06"
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.equal(evaluate(parse_formula("(-2) ** 2 * x").tree, x, {}), 4 * x)
    assert torch.equal(evaluate(parse_formula("-x ** 2").tree, x, {}), -(x**2))


def test_a_formula_round_trips_through_a_run_folders_config_yaml():
    import yaml

    config = config_from_dict(run_config({"expr": "x*sigmoid(beta*x)", "beta": 1.702, "learn": "beta"}))
    activation = config_to_dict(config)["model"]["activation"]
    assert activation == {"expr": "x * sigmoid(beta * x)", "beta": 1.702, "learn": ["beta"], "gain": "auto"}
    assert config_from_dict(yaml.safe_load(config_to_yaml(config))) == config


@pytest.mark.parametrize("activation,fragments", [
    ({"expr": "x * sigmoid(bta * x)", "beta": 1.0}, ["model.activation.expr", "'bta' is not x", "did you mean 'beta'?"]),
    ({"expr": "x * sigmoid(x)", "beta": 1.0}, ["model.activation.beta", "does not use 'beta'", "it has no parameters"]),
    ({"expr": "x * sigmoid(beta * x)"}, ["model.activation.expr", "'beta'", "give its value", "beta: 1.0"]),
    ({"expr": "x * sigmoid(beta * x)", "beta": "big"}, ["model.activation.beta", "expected a number"]),
    ({"expr": "x * sigmoid(beta * x)", "beta": 1e9}, ["model.activation.beta", "out of range"]),
    ({"expr": "x * sigmoid(beta * x)", "beta": 1, "learn": ["gamma"]}, ["model.activation.learn", "'gamma' is not a parameter"]),
    ({"expr": "x ** p", "p": 2, "learn": ["p"]}, ["model.activation.learn", "p is an exponent"]),
    ({"expr": "x ** p", "p": 100}, ["model.activation.p", "is an exponent; at most ±16"]),
    ({"expr": "x * sigmoid(x)", "gain": 0}, ["model.activation.gain", "out of range"]),
    ({"name": "relu", "expr": "x"}, ["model.activation", "either name", "or expr"]),
    ("formula", ["model.activation", "a mapping with expr"]),
    ({"expr": "sigmod(x)"}, ["column 1", "'sigmod'", "did you mean sigmoid?"]),
])
def test_a_formula_config_is_refused_in_one_line_naming_the_key(tmp_path, activation, fragments):
    path = write_yaml(tmp_path / "bad.yaml", run_config(activation))
    result = cli("validate", path)
    assert result.exit_code == 2
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


# ----------------------------------------------------------------------------- equal to a built-in


@pytest.mark.parametrize("name", BUILT_IN_EQUALS)
def test_a_formula_that_equals_a_builtin_computes_its_numbers(name):
    text, builtin = BUILT_IN_EQUALS[name]
    x = torch.linspace(-30, 30, 200_001).requires_grad_(True)
    ours, theirs = evaluate(parse_formula(text).tree, x, {}), builtin(x)
    (our_grad,), (their_grad,) = torch.autograd.grad(ours.sum(), x), torch.autograd.grad(theirs.sum(), x)
    eps = torch.finfo(torch.float32).eps
    assert ((ours - theirs).abs() <= 4 * eps * (1 + theirs.abs())).all()
    # Autograd through the formula against the built-in's own derivative: a few float32 roundings.
    assert ((our_grad - their_grad).abs() <= 2e-6 * (1 + their_grad.abs())).all()


@pytest.mark.parametrize("name", BUILT_IN_EQUALS)
def test_a_formula_that_equals_a_builtin_trains_as_it_does_solo_and_fused(tmp_path, data_root, name):
    formula, builtin = run_config({"expr": BUILT_IN_EQUALS[name][0]}), run_config(BUILT_IN_CONFIG[name])
    solo_formula = actexp.train(formula, runs_dir=tmp_path / "solo")
    solo_builtin = actexp.train(builtin, runs_dir=tmp_path / "solo")
    fused_formula, fused_builtin = train_group([formula, builtin], [tmp_path / "fused" / "f", tmp_path / "fused" / "b"])
    reference = read_history(solo_builtin.dir)
    for run in (solo_formula, fused_formula, fused_builtin):
        history = read_history(run.dir)
        for ours, theirs in zip(history, reference):
            for key in ("train_loss", "val_loss", "val_acc"):
                if key in theirs:
                    assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), (run.dir, ours["epoch"], key)
        assert run.summary["test_loss"] == pytest.approx(solo_builtin.summary["test_loss"], rel=1e-4)


# ----------------------------------------------------------------------------- learnable parameters and fusing


def test_learned_parameters_train_per_layer_stack_per_member_and_resume(tmp_path, data_root):
    swish = {"expr": "x * sigmoid(beta * x)", "learn": ["beta"]}
    # Widths whose batch x width is a multiple of 32 floats: torch's elementwise kernels compute a
    # tensor's last few elements (past its last whole block of vectors) on a scalar path, where
    # sigmoid rounds differently; two members in one slice would put member 0's tail mid-stack.
    hidden = [32, 16]
    configs = [run_config({**swish, "beta": 1.0}, hidden=hidden), run_config({**swish, "beta": 2.0}, seed=1, hidden=hidden),
               run_config("prelu", seed=2, hidden=hidden)]
    fused = train_group(configs, [tmp_path / "fused" / str(i) for i in range(3)])
    for config, member in zip(configs, fused):
        solo = actexp.train(config, runs_dir=tmp_path / "solo")
        assert read_history(member.dir) != [] and [
            {k: v for k, v in r.items() if k != "seconds"} for r in read_history(member.dir)
        ] == [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(solo.dir)]
        weights = torch.load(member.dir / "model.pt", weights_only=True)["model"]
        assert weights.keys() == torch.load(solo.dir / "model.pt", weights_only=True)["model"].keys()
        assert all(torch.equal(weights[k], torch.load(solo.dir / "model.pt", weights_only=True)["model"][k]) for k in weights)
    betas = torch.load(fused[1].dir / "model.pt", weights_only=True)["model"]
    for layer in (0, 1):  # one parameter per layer, trained away from its initial value
        beta = betas[f"hidden.{layer}.activation.learned.beta"]
        assert beta.shape == (1,) and beta.item() != 2.0
    # A learned parameter survives a checkpoint: the resumed run is the uninterrupted one.
    folder = tmp_path / "interrupted"

    def stop_after_first(event, info):
        if event == "epoch" and info["record"]["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        actexp.train(configs[1], run_dir=folder, progress=stop_after_first)
    assert "hidden.0.activation.learned.beta" in torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]
    resumed = actexp.train(configs[1], resume=folder)
    assert torch.equal(torch.load(resumed.dir / "model.pt", weights_only=True)["model"]["hidden.1.activation.learned.beta"],
                       betas["hidden.1.activation.learned.beta"])


def test_the_fused_path_groups_formula_members_by_their_formula(tmp_path, data_root):
    swish = {"expr": "x * sigmoid(beta * x)", "learn": ["beta"]}
    configs = [config_from_dict({**run_config(a), "name": str(i)}) for i, a in enumerate([
        {**swish, "beta": 1.0},  # learned from different starts: one slice, a beta per member
        {**swish, "beta": 2.0},
        {"expr": "x * sigmoid(beta * x)", "beta": 1.0},  # the same formula, fixed: its own slice
        {"expr": "x*sigmoid(beta*x)", "beta": 1.0},  # ... which this one, spelled otherwise, shares
        {"expr": "x * sigmoid(beta * x)", "beta": 2.0},  # another fixed value: another slice
        {"expr": "x * tanh(softplus(x))"},
    ])]
    keys = [activation_key(c) for c in configs]
    assert keys[0] == keys[1] and keys[2] == keys[3] and len({keys[0], keys[2], keys[4], keys[5]}) == 4
    stepper, _ = make_stepper(configs, tmp_path)
    assert [(s.start, s.end, s.learned) for s in stepper.activations.slices] == [
        (0, 2, ("learned.beta",)), (2, 4, ()), (4, 5, ()), (5, 6, ())]
    assert stepper.model.layers[0]["activation"]["learned.beta"].shape == (6, 1)


# ----------------------------------------------------------------------------- the init gain


def second_moment(f) -> float:
    return integrate.quad(lambda z: f(z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -40, 40, limit=200)[0]


@pytest.mark.parametrize("text,expected", [
    ("maximum(x, 0)", math.sqrt(2.0)),  # He's ReLU gain, as torch's calculate_gain("relu")
    ("x", 1.0),
    ("where(x > 0, x, 0.01 * x)", torch.nn.init.calculate_gain("leaky_relu", 0.01)),
    ("tanh(x)", 1 / math.sqrt(second_moment(math.tanh))),
    ("x * sigmoid(x)", 1 / math.sqrt(second_moment(lambda z: z * (0.5 + 0.5 * math.tanh(z / 2))))),
])
def test_gain_auto_keeps_the_second_moment_of_standard_normal_inputs(text, expected):
    component = config_from_dict(run_config({"expr": text})).model.activation
    assert hidden_gain(component) == pytest.approx(expected, rel=1e-6)


def test_a_formulas_gain_scales_he_initialization():
    for gain in ("auto", 3.0):
        config = config_from_dict(run_config({"expr": "maximum(x, 0)", "gain": gain}, init="he_normal", hidden=[4000])).model
        torch.manual_seed(0)
        weight = build_model(config, 784, 10).hidden[0].linear.weight
        expected = (math.sqrt(2) if gain == "auto" else gain) / math.sqrt(784)
        assert weight.std().item() == pytest.approx(expected, rel=0.01)


# ----------------------------------------------------------------------------- diagnostics and names


def test_diagnostics_of_a_formula_are_the_builtins_it_equals():
    x = torch.randn(512, 784, generator=torch.Generator().manual_seed(0))
    figures = []
    # tanh's gain as torch's calculate_gain has it (5/3), where gain auto would give 1.593.
    for activation in ("relu", {"expr": "maximum(x, 0)"}, "tanh", {"expr": "tanh(x)", "gain": 5 / 3}):
        torch.manual_seed(0)
        model = build_model(config_from_dict(run_config(activation, init="he_normal")).model, 784, 10)
        figures.append(probe_activations(model, x))
    assert torch.equal(figures[0], figures[1]) and torch.equal(figures[2], figures[3])
    assert figures[0][:, 3].max() >= 0  # dead_fraction is measured


def test_a_grid_of_builtins_and_formulas_names_runs_short_and_stable(tmp_path):
    base = write_yaml(tmp_path / "base.yaml", run_config("relu"))
    grid = parse_grid(["model.activation=[relu, {expr: 'x * sigmoid(1.702 * x)'}, {expr: 'x*sigmoid(beta*x)', beta: 1.0}, {expr: 'x*sigmoid(beta*x)', beta: 2.0}]"])
    names = [run.name for run in load_sweep(base, grid=grid).runs]
    swish = formula_hash("x * sigmoid(beta * x)")
    assert names == ["activation=relu", f"activation=x-sigmoid-1.702-x-{formula_hash('x * sigmoid(1.702 * x)')}",
                     f"activation=x-sigmoid-beta-x-{swish}-beta=1", f"activation=x-sigmoid-beta-x-{swish}-beta=2"]
    # The same sweep spelled otherwise names its runs the same: the hash is of the normalized text.
    again = parse_grid(["model.activation=[relu, {expr: 'x*sigmoid(1.702*x)'}, {expr: 'x * sigmoid(beta * x)', beta: 1}, {expr: x*sigmoid(beta*x), beta: 2}]"])
    assert [run.name for run in load_sweep(base, grid=again).runs] == names
    result = cli("sweep", base, "--grid", "model.activation=[relu, {expr: 'x * sigmoid(1.702 * x)'}]", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"x-sigmoid-1.702-x-{formula_hash('x * sigmoid(1.702 * x)')}" in result.output


def test_formula_members_gathered_into_one_slice_as_on_a_gpu_stay_their_solo_runs(tmp_path, data_root, monkeypatch):
    # A GPU gathers each activation's members into one slice (stacked._gathers_activations): here on
    # the CPU, seeds first, so the two learned formulas sit apart in the stack and are gathered.
    import actexp.stacked

    monkeypatch.setattr(actexp.stacked, "_gathers_activations", lambda device: True)
    swish = {"expr": "x * sigmoid(beta * x)", "learn": ["beta"]}
    hidden = [32, 16]  # (see test_learned_parameters_train_per_layer_stack_per_member_and_resume)
    configs = [config_from_dict({**run_config(activation, seed=seed, hidden=hidden), "name": f"{i}"})
               for i, (activation, seed) in enumerate([({**swish, "beta": 1.0}, 0), ("tanh", 0), ({**swish, "beta": 2.0}, 1), ("tanh", 1)])]
    stepper, _ = make_stepper(configs, tmp_path)
    assert [(s.start, s.end) for s in stepper.activations.slices] == [(0, 2), (2, 4)] and stepper.activations.gather is not None
    fused = train_group(configs, [tmp_path / "fused" / str(i) for i in range(4)])
    for config, member in zip(configs, fused):
        solo = actexp.train(config, runs_dir=tmp_path / "solo")
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(member.dir)] == [
            {k: v for k, v in r.items() if k != "seconds"} for r in read_history(solo.dir)]
