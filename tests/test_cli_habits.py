"""Habits users bring from other tools: bare KEY=VALUE overrides (Hydra, Ultralytics) and runs named
after them, --version, shell completion, boolean flags shown as flags, --resume on a config's folder
of runs, and a final line that says when early stopping ended a run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer
import yaml

import actexp
from actexp.cli import app
from actexp.config import MAX_NAME_LENGTH, check_name, load_config
from actexp.varying import override_name
from conftest import REPO, cli, run_dirs, tiny_config, write_yaml


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


# ----------------------------------------------------------------------------- overrides and names


def test_bare_key_value_arguments_are_overrides_like_set(tmp_path, data_root):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 2, "batch_size": 50, "seed": 0, "device": "cpu"}))
    bare = cli("train", path, "model.activation=tanh", "optim.lr=0.01", "--runs-dir", tmp_path / "bare", "-q")
    assert bare.exit_code == 0, bare.output
    flagged = cli("train", path, "--set", "model.activation=tanh", "-s", "optim.lr=0.01", "--runs-dir", tmp_path / "set", "-q")
    assert flagged.exit_code == 0, flagged.output
    (a,), (b,) = run_dirs(tmp_path / "bare"), run_dirs(tmp_path / "set")
    assert a.parent.name == b.parent.name == "tiny,activation=tanh,lr=0.01"  # filed under its overrides, not as `tiny`
    for run in (a, b):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["name"] == "tiny,activation=tanh,lr=0.01"
        assert summary["overrides"] == ["model.activation=tanh", "optim.lr=0.01"]
        assert load_config(run / "config.yaml").model.activation.name == "tanh"
    assert (a / "metrics.jsonl").read_text().count("\n") == 3
    metrics = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (a, b)]
    assert metrics[0] == metrics[1]  # the same training either way

    plain = cli("train", path, "--runs-dir", tmp_path / "plain", "-q")
    (c,) = run_dirs(tmp_path / "plain")
    assert plain.exit_code == 0 and c.parent.name == "tiny" and json.loads((c / "summary.json").read_text())["overrides"] == []


def test_anything_else_after_the_config_is_one_line_suggesting_set(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    extra = cli("train", path, tmp_path / "other.yaml")
    assert extra.exit_code == 2 and "--set KEY=VALUE" in one_error_line(extra.output) and "other.yaml" in extra.output
    first = cli("train", "model.activation=tanh", path)
    assert first.exit_code == 2 and "give the CONFIG first" in one_error_line(first.output)
    with_resume = cli("train", "--resume", tmp_path, "model.activation=tanh")
    assert with_resume.exit_code == 2 and "--resume" in one_error_line(with_resume.output)
    bad_value = cli("train", path, "model.activation=tanhh")
    assert bad_value.exit_code == 2 and "model.activation" in one_error_line(bad_value.output)
    assert not (tmp_path / "runs").exists()
    swept = cli("sweep", path, "--seeds", "2", "junk", "--dry-run")
    assert swept.exit_code == 2 and "--set KEY=VALUE" in one_error_line(swept.output)


def test_validate_and_sweeps_name_runs_as_train_does(tmp_path):
    path = write_yaml(tmp_path / "family" / "c.yaml", tiny_config())
    write_yaml(tmp_path / "family" / "d.yaml", tiny_config(model={"activation": "tanh"}))
    result = cli("validate", path, "model.hidden=[8, 8]", "train.seed=3", tmp_path / "family")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"ok: {path} (tiny,hidden=8x8,seed=3)",
        f"ok: {tmp_path / 'family'} (sweep family, 2 runs: c, d)",  # a folder sweep's runs: its files; overrides apply to each
    ]
    assert load_config(path, ["model.hidden=[8, 8]", "train.seed=3"]).name == "tiny,hidden=8x8,seed=3"  # what train names the run
    only_overrides = cli("validate", "optim.lr=0.1")
    assert only_overrides.exit_code == 2 and "CONFIG" in one_error_line(only_overrides.output)
    dry = cli("sweep", tmp_path / "family", "train.epochs=1", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert dry.exit_code == 0 and "family: 2 runs" in dry.output, dry.output


def test_override_names():
    assert override_name("relu_xavier", []) == "relu_xavier"
    assert override_name("relu_xavier", ["model.activation=tanh", "optim.lr=1e-3"]) == "relu_xavier,activation=tanh,lr=1e-3"
    assert override_name("r", ["optim.lr=0.1", "optim.lr=0.01"]) == "r,lr=0.01"  # the value that applies
    assert override_name("relu_xavier", ["optim.lr=1e-3", "model.activation=tanh"]) == "relu_xavier,activation=tanh,lr=1e-3"  # any order
    assert override_name("r", ["model.init.std=0.1", "model.bias_init.std=0.2"]) == "r,model.bias_init.std=0.2,model.init.std=0.1"  # same last part
    assert override_name("r", ["model.hidden=[64, 64]", "train.early_stopping={patience: 2}"]) == "r,hidden=64x64,early_stopping=patience-2"
    assert override_name("r", ["data.root=/tmp/x", "train.tensorboard=true", "train.device=cpu"]) == "r"  # where and how, not what
    assert override_name("r", ["name=mine", "optim.lr=0.1"]) == "r"  # the name given (load_config applied it)
    long = [override_name("r", [f"optim.lr=0.{'1' * 300}{i}"]) for i in range(2)]
    assert len(long[0]) == len(long[1]) == MAX_NAME_LENGTH and long[0] != long[1]
    for name in long + [override_name("r", ["data.dataset=../../etc", "model.activation={name: 'a b'}"])]:
        check_name(name)
    assert load_config(REPO / "configs/relu_xavier.yaml", ["name=mine", "optim.lr=0.1"]).name == "mine"


def test_python_api_takes_the_same_overrides(tmp_path, data_root):
    run = actexp.train(tiny_config(train={"epochs": 1, "batch_size": 50, "seed": 0, "device": "cpu"}), runs_dir=tmp_path, overrides=["model.activation=tanh"])
    assert run.dir.parent.name == "tiny,activation=tanh" and run.summary["overrides"] == ["model.activation=tanh"]
    assert load_config(run.dir / "config.yaml").model.activation.name == "tanh"


def test_runs_and_show_display_the_overrides(tmp_path, data_root):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 1, "batch_size": 50, "seed": 0, "device": "cpu"}))
    runs = tmp_path / "runs"
    assert cli("train", path, "model.activation=tanh", "--runs-dir", runs, "-q").exit_code == 0
    assert cli("train", path, "--runs-dir", runs, "-q").exit_code == 0
    listing = cli("runs", runs, "--wide")
    assert listing.exit_code == 0 and "overrides" in listing.output
    tanh_row, plain_row = (next(line for line in listing.output.splitlines() if line.split()[1:2] == [name]) for name in ("tiny,activation=tanh", "tiny"))
    assert "model.activation=tanh" in tanh_row and "model.activation" not in plain_row
    (run,) = [r for r in run_dirs(runs) if r.parent.name != "tiny"]
    shown = cli("show", run)
    assert shown.exit_code == 0 and "set    model.activation=tanh" in shown.output
    assert "set " not in cli("show", runs / "tiny").output


# ----------------------------------------------------------------------------- --version, completion, flags


@pytest.mark.slow
def test_version_comes_from_the_package_metadata_without_torch():
    code = "import sys\nfrom actexp.cli import app\ntry:\n    app(['--version'])\nexcept SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    from importlib.metadata import version

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"actexp {version('actexp')} (Python {sys.version.split()[0]}, torch {version('torch')})", "torch imported: False"]


def test_shell_completion_is_offered(monkeypatch):
    helped = cli("--help")
    assert "--install-completion" in helped.output and "--show-completion" in helped.output
    from typer.testing import CliRunner

    # typer's own switch for tests: the shell is named, not detected from the process tree (a test
    # runner started in the background has no interactive shell above it).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="actexp")  # the installed script's name
    assert script.exit_code == 0, (script.output, script.exception)
    assert script.exit_code == 0 and "_ACTEXP_COMPLETE=complete_bash" in script.output and "complete -o default -F _actexp_completion actexp" in script.output


def completions(line: str) -> list[str]:
    """What tab offers at the end of `line`, through typer's own completion machinery, as fish asks
    for it (fish passes the command line as typed; bash splits words at `=`)."""
    from typer.testing import CliRunner

    env = {"_ACTEXP_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args", "_TYPER_COMPLETE_ARGS": line}
    result = CliRunner().invoke(app, [], prog_name="actexp", env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return [line.split("\t")[0] for line in result.output.splitlines() if line]  # (a command comes with its help)


def test_tab_completes_config_keys_and_their_values(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    assert completions(f"actexp train {path} model.act") == ["model.activation="]
    optim = completions(f"actexp train {path} optim.")
    assert optim == ["optim.optimizer=", "optim.lr=", "optim.weight_decay=", "optim.schedule=", "optim.grad_clip="]
    assert "train.early_stopping.patience=" in completions(f"actexp train {path} train.early")
    assert completions(f"actexp train {path} epo") == ["epochs="]  # a short key, as overrides take them
    assert {"tanh", "gelu", "maxout"} <= {c.partition("=")[2] for c in completions(f"actexp train {path} model.activation=")}
    assert completions(f"actexp train {path} model.activation=ta") == ["model.activation=tanh"]
    assert completions(f"actexp train {path} train.checkpoint=") == [f"train.checkpoint={v}" for v in ("none", "best", "last", "both")]
    assert completions(f"actexp train {path} train.diagnostics=f") == ["train.diagnostics=false"]
    assert completions(f"actexp train {path} optim.lr=") == []  # a number: nothing to offer
    # --set and sweep's KEY=VALUE and --grid complete the same keys; a --grid value completes item by item
    assert completions(f"actexp train {path} --set data.data") == ["data.dataset="]
    assert completions(f"actexp validate {path} --set data.dataset=fa") == ["data.dataset=fashion_mnist"]
    assert completions(f"actexp sweep {path} model.in") == ["model.init="]
    assert completions(f"actexp sweep {path} --grid model.activation=relu,si") == ["model.activation=relu,sigmoid", "model.activation=relu,silu"]
    keys = completions(f"actexp train {path} ")
    assert "train.epochs=" in keys and "model.depth=" in keys and len(keys) > 40
    assert completions("actexp tr") == ["train"]  # commands complete as before


@pytest.mark.slow
def test_completion_answers_without_importing_torch():
    """The shell runs actexp on every tab: keys come from the config's dataclasses, not torch."""
    code = ("import os, sys\nos.environ.update(_ACTEXP_COMPLETE='complete_fish', _TYPER_COMPLETE_FISH_ACTION='get-args', "
            "_TYPER_COMPLETE_ARGS='actexp train c.yaml model.act')\nfrom actexp.cli import app\ntry:\n    app(prog_name='actexp')\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["model.activation=", "torch imported: False"]


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_boolean_options_are_shown_as_flags():
    flags = 0
    for path, command in _commands(typer.main.get_command(app)):
        shown = cli(*path, "--help")
        assert shown.exit_code == 0, shown.output
        assert "<bool>" not in shown.output and "BOOLEAN" not in shown.output, (path, shown.output)
        for param in command.params:
            if getattr(param, "is_flag", False) and param.opts[0] != "--help":
                flags += 1
                assert param.opts[0] in shown.output
    assert flags >= 10  # --quiet, --dry-run, --force, --fail-fast, --wait, --fused, --csv, --sharey, --version, ...
    dry = cli("sweep", REPO / "configs/xor", "--dry-run", "--runs-dir", "runs")
    assert dry.exit_code == 0 and "relu" in dry.output  # a flag still takes no value


# ----------------------------------------------------------------------------- --resume on a config's folder


def _stop_after(epoch):
    def progress(event, info):
        if event == "epoch" and info["record"]["epoch"] == epoch:
            raise KeyboardInterrupt

    return progress


def test_resume_on_a_config_folder_continues_its_latest_resumable_run(tmp_path, data_root):
    config = tiny_config(train={"epochs": 3, "batch_size": 50, "seed": 0, "device": "cpu"})
    runs = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        actexp.train(config, runs_dir=runs, progress=_stop_after(1))  # older, resumable too
    with pytest.raises(KeyboardInterrupt):
        actexp.train(config, runs_dir=runs, progress=_stop_after(2))
    completed = actexp.train(config, runs_dir=runs)  # the newest: completed, not resumable
    older, latest = sorted(set(run_dirs(runs)) - {completed.dir}, key=lambda r: json.loads((r / "summary.json").read_text())["epochs_completed"])
    older_summary = (older / "summary.json").read_text()

    result = cli("train", "--resume", runs / "tiny", "--runs-dir", runs, "-q")
    assert result.exit_code == 0, result.output
    assert f"resuming {latest}, the latest resumable run in {runs / 'tiny'}" in result.output.replace("\n", "")
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_loss"] == completed.summary["test_loss"]
    assert (older / "summary.json").read_text() == older_summary

    by_name = cli("train", "--resume", "tiny", "--runs-dir", runs, "-q")  # a config name under --runs-dir
    assert by_name.exit_code == 0 and json.loads((older / "summary.json").read_text())["status"] == "completed"
    done = cli("train", "--resume", runs / "tiny")
    assert done.exit_code == 1 and "none of its 3 runs can be resumed" in one_error_line(done.output) and "completed" in done.output
    empty = cli("train", "--resume", runs)  # the root: config folders, no run folders
    assert empty.exit_code == 1 and "no run folders in it" in one_error_line(empty.output)
    assert len(run_dirs(runs)) == 3


# ----------------------------------------------------------------------------- the final line


def test_the_final_line_says_when_early_stopping_stopped_the_run(tmp_path, data_root):
    # min_delta 100: no epoch after the first improves, so patience 2 stops the run after epoch 3.
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 8, "batch_size": 50, "seed": 0, "device": "cpu",
                                                              "early_stopping": {"patience": 2, "min_delta": 100.0}}))
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    final = result.output.strip().splitlines()[-1]
    assert "completed in " in final and ": stopped early at epoch 3 (val_loss did not improve for 2 epochs); result: epoch 1 (best val_loss)" in final
    epochs = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert [line.endswith(" *") for line in epochs] == [True, False, False]  # the mark: the monitor improved on its best
    (run,) = run_dirs(tmp_path / "runs")
    assert "ended  stopped early at epoch 3 (val_loss did not improve for 2 epochs)" in cli("show", run).output
    plain = cli("train", path, "--runs-dir", tmp_path / "more", "--set", "train.early_stopping=null", "--set", "train.epochs=2", "-q")
    assert plain.exit_code == 0 and "stopped early" not in plain.output


def test_resume_of_something_that_is_no_run_folder_says_what_to_give(tmp_path):
    for given, hint in ((tmp_path / "nosuch", "nor under"), (write_yaml(tmp_path / "c.yaml", {"name": "c"}), "actexp train")):
        result = cli("train", "--resume", given, "--runs-dir", tmp_path / "runs")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and hint in lines[0] and "runs/<name>" in lines[0], result.output


def _flat(text: str) -> str:
    """Help as read: box borders gone, whitespace collapsed, so that wrapped text reads on."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("columns", ["80", "120"])
def test_help_shows_every_help_text_as_written(columns):
    """Help texts are rich markup to typer: `'actexp[ray]'` or `[xavier_normal, {name: normal, std: 0.1}]`
    would vanish as tags. Every command's help and every parameter's appear whole, brackets and all."""
    from typer.testing import CliRunner

    checked = 0
    for path, command in _commands(typer.main.get_command(app)):
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": columns, "TERMINAL_WIDTH": columns})
        assert shown.exit_code == 0, shown.output
        flat = _flat(shown.output)
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in filter(None, texts):
            source = re.sub(r"\\(\[)", r"\1", text)  # as written in cli.py: the escape is typer's business
            assert _flat(source) in flat, (path, source)
            checked += 1
    assert checked > 40
    sweep = _flat(CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": columns}).output)
    assert "pip install 'actexp[ray]')" in sweep and "'model.init=[xavier_normal, {name: normal, std: 0.1}]'" in sweep


def test_short_keys_and_print_config(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(train={"epochs": 5, "batch_size": 50, "seed": 0, "device": "cpu"}))
    printed = cli("train", path, "epochs=3", "--print-config")
    assert printed.exit_code == 0, printed.output
    assert "note: epochs=3 is train.epochs=3" in printed.output
    config = yaml.safe_load(printed.stdout)
    assert config["train"]["epochs"] == 3 and config["name"] == "tiny,epochs=3" and not (tmp_path / "runs").exists()
    wrong = cli("train", path, "train.epoch=3")
    assert wrong.exit_code == 2 and f"override 'train.epoch=3' (applied to {path}): train.epoch: unknown key (did you mean 'epochs'?)" in wrong.output
    unknown = cli("validate", path, "epoch=3")
    assert unknown.exit_code == 2 and "did you mean train.epochs?" in unknown.output


def test_validate_says_the_name_a_folder_sweep_gives_a_config():
    configs = sorted((REPO / "configs/activations").glob("t*.yaml")) + sorted((REPO / "configs/activations").glob("s*.yaml"))
    result = cli("validate", *configs)
    assert result.exit_code == 0, result.output
    tanh = next(line for line in result.output.splitlines() if "tanh.yaml" in line)
    assert tanh.endswith(f"(act_tanh; run tanh in a sweep of {REPO / 'configs/activations'})")
    alone = cli("validate", REPO / "configs/activations/tanh.yaml")
    assert alone.output.strip().endswith("(act_tanh)")  # one file: what train names it
