"""Text from run folders printed by `runs`, `show`, `compare` and `eval`'s errors: control characters
in a run's name, status words, error, warnings or config values never reach the terminal raw (an OSC
sequence would set the window title, ESC[2J clear the screen, a newline forge a table row); they
are shown as their escapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from actexp.cli import app
from actexp.terminal import printable

TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the window title
CLEAR = "\x1b[2J"  # erase the screen
FORGED = "\ncompleted  0.9999"  # a newline starts a row of its own
NAME = f"evil{TITLE}{CLEAR}{FORGED}\x9b31m\u202e"


def hostile_run(root: Path) -> Path:
    folder = root / "evil" / "20240101-000000"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "name": NAME, "model": {"hidden": [8], "activation": f"relu{CLEAR}"}, "train": {"epochs": 1, "seed": 0}}))
    (folder / "summary.json").write_text(json.dumps({
        "name": NAME, "status": "completed", "started": f"2024-01-01T00:00:00{CLEAR}", "selected_epoch": 1,
        "val_acc": 0.5, "val_loss": 1.0, "test_acc": 0.5, "test_loss": 1.0, "overrides": [f"a.b=c{TITLE}"],
        "warnings": [f"look{CLEAR}here"], "monitor": f"val_loss{TITLE}"}))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "train_acc": 0.5, "train_loss": 1.0}) + "\n")
    # A second, ordinary run, so that compare has keys that vary.
    other = root / "plain" / "20240101-000001"
    other.mkdir(parents=True)
    (other / "config.yaml").write_text(yaml.safe_dump({"name": "plain", "model": {"hidden": [8], "activation": "tanh"}, "train": {"epochs": 1, "seed": 0}}))
    (other / "summary.json").write_text(json.dumps({"name": "plain", "status": "completed", "started": "2024-01-01T00:01:00", "selected_epoch": 1,
                                                    "val_acc": 0.4, "val_loss": 1.1, "test_acc": 0.4, "test_loss": 1.1}))
    (other / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": 0.4, "val_loss": 1.1}) + "\n")
    return folder


def assert_inert(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\x9b" not in output and "\u202e" not in output, repr(output)
    assert not any(line.lstrip().startswith("completed  0.9999") for line in output.splitlines()), output  # no forged row
    assert "\\x1b" in output  # shown, not hidden: the reader sees that the name holds an escape


@pytest.mark.parametrize("command", [["runs"], ["runs", "--wide"], ["runs", "--csv"], ["show", "evil"], ["compare", "."]])
def test_control_characters_from_run_files_are_shown_escaped(tmp_path, command, monkeypatch):
    hostile_run(tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "runs")
    args = [*command[:1], *(["."] if command[0] == "runs" else []), *command[1:]]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert_inert(result.output)


def test_an_error_naming_a_hostile_folder_is_inert(tmp_path):
    folder = tmp_path / f"x{CLEAR}y"
    folder.mkdir()
    result = CliRunner().invoke(app, ["show", str(folder)])
    assert result.exit_code == 1 and "\x1b" not in result.output and "x\\x1b[2Jy" in result.output


def test_printable_keeps_ordinary_text():
    assert printable("activation=tanh,seed=1 · ±0.01 – é 日本") == "activation=tanh,seed=1 · ±0.01 – é 日本"
    assert printable("a\tb\nc\x00") == "a\\tb\\nc\\x00"
