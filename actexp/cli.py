"""The `actexp` command: parses arguments, calls the library, prints with rich. torch is imported
only by the commands that train, so `actexp --help` and `actexp validate` answer instantly."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .errors import ActexpError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Experiments on activations, initialization and regularization of MLPs.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch or import datasets into the data root.")
app.add_typer(data_app, name="data")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

SET_HELP = "Override a config key, e.g. --set optim.lr=0.01 (repeatable; values are YAML scalars)."


def fail(message: str, code: int) -> None:
    err.print("error: " + message, soft_wrap=True, markup=False, style="red")
    raise typer.Exit(code)


def user_errors(command):
    """Turn the library's user-facing errors into one line on stderr and their exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ActexpError as e:
            fail(str(e), e.exit_code)
        except typer.Exit:  # fail() inside the command: already reported, keep its exit code
            raise
        except Exception as e:  # a bug or an environment failure: one line, the traceback on request
            if os.environ.get("ACTEXP_DEBUG"):
                raise
            fail(f"{type(e).__name__}: {e} (set ACTEXP_DEBUG=1 for the traceback)", 1)

    return wrapper


@app.command()
@user_errors
def train(
    config: Path = typer.Argument(..., help="A YAML config, e.g. configs/relu_xavier.yaml."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Root of the run folders."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run folder from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; the final line only."),
):
    """Train one config; writes runs/<name>/<run id>/."""
    from .config import load_config
    from .display import TrainingDisplay

    if resume:
        config = resume / "config.yaml"
    cfg = load_config(config, set_)
    from .training import train as train_config

    display = TrainingDisplay(out, quiet)
    try:
        run = train_config(cfg, runs_dir=runs_dir, progress=display, resume=resume)
    except KeyboardInterrupt:
        display.close()
        folder = display.run_dir or runs_dir
        fail(f"interrupted: {folder} keeps every finished epoch; continue with `actexp train --resume {folder}`", 130)
    if run.status == "diverged":
        fail(f"diverged: {run.summary['error']} (run folder {run.dir})", 1)


@app.command()
def validate(
    configs: List[Path] = typer.Argument(..., help="Config files to check."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
):
    """Check configs without training (exit 2 if any is invalid)."""
    from .config import load_config

    bad = 0
    for path in configs:
        try:
            cfg = load_config(path, set_)
        except ActexpError as e:
            err.print("error: " + str(e), soft_wrap=True, markup=False, style="red")
            bad += 1
        else:
            out.print(f"ok: {path} ({cfg.name})", markup=False)
    if bad:
        raise typer.Exit(2)


@app.command()
@user_errors
def show(run: Path = typer.Argument(..., help="A run folder, or a folder of runs (the latest is shown).")):
    """Show a run: config essentials, epochs, and per-layer diagnostics at epoch 0 and the last epoch."""
    from .show import show_run

    show_run(out, run)


@data_app.command("download")
@user_errors
def data_download(
    name: str = typer.Argument(..., help="mnist, fashion_mnist or cifar100."),
    root: Optional[str] = typer.Option(None, "--root", help="Data root (default $ACTEXP_DATA or ~/.cache/actexp/data)."),
):
    """Download a dataset from its official mirrors (checksums verified)."""
    from .data import download_dataset

    _check_dataset_name(name)
    out.print(f"downloaded {name} to {download_dataset(name, root)}", markup=False)


@data_app.command("import")
@user_errors
def data_import(
    name: str = typer.Argument(..., help="mnist, fashion_mnist or cifar100."),
    source: Path = typer.Argument(..., help="A folder holding the dataset's original files (gzipped or not)."),
    root: Optional[str] = typer.Option(None, "--root", help="Data root (default $ACTEXP_DATA or ~/.cache/actexp/data)."),
):
    """Copy a folder of original dataset files into the data root, after checking their content."""
    from .data import import_dataset

    _check_dataset_name(name)
    out.print(f"imported {name} into {import_dataset(name, source, root)}", markup=False)


def _check_dataset_name(name: str) -> None:
    from .config import parse_component

    parse_component(name, "dataset", "dataset")


def main():
    app()


if __name__ == "__main__":
    sys.exit(main())
