"""Plugins: activations and initializers from a loose file (--plugin, ACTEXP_PLUGINS) or an installed
package's entry points, enabled by whoever runs the command and never by a config; checked when
they register; recorded in run folders, so that show, eval and --resume say what a run needs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

import actexp
from actexp import plugins
from actexp.config import config_from_dict
from actexp.errors import ConfigError, PluginError
from actexp.runs import find_runs, read_summary

from conftest import REPO, cli, tiny_config, write_yaml

SNAKE = REPO / "tests" / "plugin_files" / "snake.py"


def config_file(tmp_path: Path, activation, name: str = "c.yaml", **model) -> Path:
    return write_yaml(tmp_path / name, tiny_config(model={"hidden": [16], "activation": activation, **model}, train={"epochs": 2, "batch_size": 50, "seed": 0, "device": "cpu"}))


def fake_distribution(root: Path, name: str = "snakes", version: str = "1.2", module: str = "snakes_act", entries=None) -> Path:
    """An installed package on a path of its own: its module, and its metadata with entry points."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from actexp.components import Activation

        class Swish(nn.Module):
            def __init__(self, beta=1.0):
                super().__init__()
                self.beta = beta

            def forward(self, x):
                return x * torch.sigmoid(self.beta * x)

        SWISH = Activation(Swish, elementwise=True, gain=1.7)

        def tiny_normal(t, fan_in, fan_out, act_gain, std=0.01):
            return nn.init.normal_(t, 0.0, std)
    """))
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    entries = entries or {"actexp.activations": {"ep_swish": f"{module}:SWISH"}, "actexp.initializers": {"tiny_normal": f"{module}:tiny_normal"}}
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) for group, points in entries.items()))
    return root


@pytest.fixture
def installed(tmp_path, monkeypatch):
    root = fake_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    plugins.forget()
    yield root
    sys.modules.pop("snakes_act", None)


# ----------------------------------------------------------------------------- enabling


def test_a_plugin_file_enabled_with_the_option_trains_and_is_recorded(tmp_path, data_root):
    path = config_file(tmp_path, {"name": "snake", "alpha": 0.5}, init={"name": "scaled_normal", "scale": 2.0})
    assert cli("validate", path).exit_code == 2  # not enabled: an unknown name
    result = cli("validate", path, "--plugin", SNAKE)
    assert result.exit_code == 0, result.output
    result = cli("train", path, "--plugin", SNAKE, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    (folder,) = find_runs(tmp_path / "runs")
    run = actexp.load_run(folder)
    recorded = {(p["kind"], p["name"]): p for p in run.summary["plugins"]}
    assert set(recorded) == {("activation", "snake"), ("initializer", "scaled_normal")}
    snake = recorded["activation", "snake"]
    assert snake["origin"] == "file" and snake["path"] == str(SNAKE.resolve())
    import hashlib

    assert snake["sha256"] == hashlib.sha256(SNAKE.read_bytes()).hexdigest()
    alphas = torch.load(run.dir / "model.pt", weights_only=True)["model"]["hidden.0.activation.alpha"]
    assert alphas.shape == (1,) and alphas.item() != 0.5  # learned


def test_a_plugin_file_enabled_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTEXP_PLUGINS", f"{tmp_path / 'none'}.py{__import__('os').pathsep}{SNAKE}")
    result = cli("validate", config_file(tmp_path, "snake"))
    assert result.exit_code == 2 and "none.py: no such file" in result.output  # every listed file must exist
    monkeypatch.setenv("ACTEXP_PLUGINS", str(SNAKE))
    plugins.forget()
    assert cli("validate", config_file(tmp_path, "snake")).exit_code == 0


def test_an_installed_packages_entry_points_are_plugins(tmp_path, data_root, installed):
    assert "snakes_act" not in sys.modules  # listed from metadata, not imported
    path = config_file(tmp_path, {"name": "ep_swish", "beta": 1.5}, init="tiny_normal")
    result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    (folder,) = find_runs(tmp_path / "runs")
    run = actexp.load_run(folder)
    assert {(p["name"], p["origin"], p["distribution"], p["version"], p["module"]) for p in run.summary["plugins"]} == {
        ("ep_swish", "entry point", "snakes", "1.2", "snakes_act"), ("tiny_normal", "entry point", "snakes", "1.2", "snakes_act")}
    assert run.model.hidden[0].activation.beta == 1.5


def test_a_config_naming_a_plugin_that_is_not_enabled_imports_nothing(tmp_path, installed):
    modules = set(sys.modules)
    for name in ("ep_swsh", "snake", str(SNAKE), "snakes_act", "os.system"):
        with pytest.raises(ConfigError) as caught:
            config_from_dict(tiny_config(model={"activation": name}))
        assert f"unknown activation {name!r}" in str(caught.value)
        assert "plugins: ep_swish" in str(caught.value)
    assert "did you mean 'ep_swish'" in cli("validate", config_file(tmp_path, "ep_swsh")).output
    assert set(sys.modules) == modules  # neither the installed package nor anything else was imported


def test_no_plugin_enabled_says_how_to_enable_one(tmp_path):
    result = cli("validate", config_file(tmp_path, "snake"))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "unknown activation 'snake'" in result.output and "plugins: none enabled (--plugin FILE.py, ACTEXP_PLUGINS" in result.output


# ----------------------------------------------------------------------------- checked when they register


BAD_PLUGINS = [
    ("import fails", "raise RuntimeError('half-written')", ["importing it raised RuntimeError: half-written"]),
    ("nothing defined", "x = 1", ["defines neither ACTIVATIONS nor INITIALIZERS"]),
    ("a factory for a spec", "ACTIVATIONS = {'a': nn.Tanh}", ["activation 'a'", "declare it as actexp.components.Activation"]),
    ("shape changes", "ACTIVATIONS = {'a': Activation(lambda: Lambda(lambda x: x[:, :8]), elementwise=False, gain=1.0)}",
     ["activation 'a'", "turned a probe batch of 64 x 16 into 64 x 8", "keeps its input's shape"]),
    ("not finite", "ACTIVATIONS = {'a': Activation(lambda: Lambda(lambda x: x / 0), elementwise=True)}", ["is not finite"]),
    ("not differentiable", "ACTIVATIONS = {'a': Activation(lambda: Lambda(lambda x: x.detach().sign()), elementwise=True)}",
     ["is not differentiable"]),
    ("not elementwise", "ACTIVATIONS = {'a': Activation(lambda: Lambda(lambda x: x - x.mean()), elementwise=True)}",
     ["declared elementwise, but an output depends on other inputs", "declare elementwise=False"]),
    ("learnable undeclared", "ACTIVATIONS = {'a': Activation(lambda: nn.PReLU(), elementwise=True)}",
     ["declares learnable [] but its module's parameters are ['weight']"]),
    ("a per-member parameter that does not broadcast", "ACTIVATIONS = {'a': Activation(Scaled, elementwise=True, learnable=('s',))}",
     ["with its parameters stacked per member"]),
    ("a built-in's name", "ACTIVATIONS = {'relu': Activation(nn.ReLU, elementwise=True)}", ["'relu' is a built-in name"]),
    ("a gain of zero", "ACTIVATIONS = {'a': Activation(nn.Tanh, elementwise=True, gain=0)}", ["its gain is 0"]),
    ("auto gain, not elementwise", "ACTIVATIONS = {'a': Activation(nn.Tanh, elementwise=False)}", ["gain 'auto' integrates an elementwise activation"]),
    ("a parameter without a default", "ACTIVATIONS = {'a': Activation(lambda k: nn.Tanh(), elementwise=True)}", ["parameter 'k' has no default"]),
    ("an initializer out of place", "INITIALIZERS = {'i': lambda t, fan_in, fan_out, act_gain: t.clone().zero_()}",
     ["initializer 'i'", "did not fill a 16 x 8 probe matrix"]),
    ("an initializer's signature", "INITIALIZERS = {'i': lambda t: t.zero_()}", ["takes (tensor, fan_in, fan_out, act_gain) first"]),
]
PLUGIN_HEADER = """
import torch
from torch import nn
from actexp.components import Activation

class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)

class Scaled(nn.Module):  # one scale per unit, indexed so that a stack of members cannot broadcast it
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.s.reshape(-1)[0]
"""


@pytest.mark.parametrize("body,fragments", [c[1:] for c in BAD_PLUGINS], ids=[c[0] for c in BAD_PLUGINS])
def test_a_plugin_is_checked_when_it_registers(tmp_path, body, fragments):
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text(PLUGIN_HEADER + body + "\n")
    result = cli("validate", config_file(tmp_path, "relu"), "--plugin", plugin)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert line.startswith(f"error: plugin {plugin}")
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_two_plugins_defining_one_name_are_refused(tmp_path):
    copy = tmp_path / "copy.py"
    copy.write_text(SNAKE.read_text())
    with pytest.raises(PluginError, match="'snake' is also defined by file"):
        plugins.enable([SNAKE, copy])


def test_a_plugin_option_needs_a_python_file(tmp_path):
    for path, message in ((tmp_path / "missing.py", "no such file"), (write_yaml(tmp_path / "c.yaml", {}), "expected a Python file")):
        result = cli("validate", config_file(tmp_path, "relu"), "--plugin", path)
        assert result.exit_code == 2 and message in result.output


# ----------------------------------------------------------------------------- run folders say what they need


def test_show_eval_and_resume_name_a_missing_plugin(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("ACTEXP_PLUGINS", str(SNAKE))
    path = config_file(tmp_path, "snake", name="snake_run.yaml")
    run = actexp.train(path, runs_dir=tmp_path / "runs")
    assert "enabled here" in cli("show", run.dir).output
    monkeypatch.delenv("ACTEXP_PLUGINS")
    plugins.forget()
    shown = cli("show", run.dir)
    assert shown.exit_code == 0 and f"plugin activation snake: file {SNAKE.resolve()}" in shown.output
    assert f"enable it: --plugin {SNAKE.resolve()}" in shown.output
    for args in (["eval", run.dir], ["train", "--resume", run.dir]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert f"its activation 'snake' comes from the plugin file {SNAKE.resolve()}" in result.output
        assert f"enable it: --plugin {SNAKE.resolve()}" in result.output
    result = cli("eval", run.dir, "--plugin", SNAKE)
    assert result.exit_code == 0, result.output
    assert f"accuracy {run.summary['test_acc']:.4f}" in result.output


def test_dry_run_says_which_runs_train_solo(tmp_path):
    path = config_file(tmp_path, "relu")
    result = cli("sweep", path, "--grid", "model.activation=[relu, tanh, snake, centered_tanh]", "--dry-run", "--plugin", SNAKE)
    assert result.exit_code == 0, result.output
    assert "solo: activation centered_tanh is not elementwise" in result.output
    assert result.output.count("not elementwise") == 1


@pytest.mark.slow
def test_the_plugin_option_reaches_a_sweeps_worker_processes(tmp_path, data_root):
    path = config_file(tmp_path, "relu")
    result = cli("sweep", path, "--grid", "model.activation=[snake, centered_tanh]", "--plugin", SNAKE, "--jobs", "2",
                 "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    summaries = [read_summary(folder) for folder in find_runs(tmp_path / "runs")]
    assert sorted(s["status"] for s in summaries) == ["completed", "completed"]
    assert all(s["plugins"][0]["path"] == str(SNAKE.resolve()) for s in summaries)
