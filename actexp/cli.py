"""The `actexp` command: parses arguments, calls the library, prints with rich. torch is imported
only by the commands that train, so `actexp --help` and `actexp validate` answer instantly."""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .errors import ActexpError, Terminated
from .runs import RunFolderWarning
from .terminal import printable

class _FlagsShownAsFlags:
    """Help as written. Typer reads help texts as rich markup, where `'actexp[ray]'` and
    `[xavier_normal, {name: normal, std: 0.1}]` are tags and vanish: every help text is escaped
    once, here. And recent typers show a boolean flag with a value placeholder (`--dry-run <bool>`),
    as if it took a value; an empty metavar shows it as the bare flag it is (older typers never show one)."""

    def __init__(self, *args, **kwargs):
        from rich.markup import escape

        super().__init__(*args, **kwargs)
        if self.help:
            self.help = escape(self.help)
        for param in self.params:
            if getattr(param, "help", None):
                param.help = escape(param.help)

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Group(_FlagsShownAsFlags, typer.core.TyperGroup):
    pass


class Command(_FlagsShownAsFlags, typer.core.TyperCommand):
    pass


app = typer.Typer(cls=Group, no_args_is_help=True, help="Experiments on activations, initialization and regularization of MLPs.")
data_app = typer.Typer(cls=Group, no_args_is_help=True, help="Fetch or import datasets into the data root.")
app.add_typer(data_app, name="data")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

PLUGIN_HELP = "Enable a plugin file of activations or initializers (repeatable; the environment variable ACTEXP_PLUGINS does the same); a config can then name what it defines."
SET_HELP = "Override a config key, e.g. --set optim.lr=0.01 (repeatable; values are YAML scalars)."
OVERRIDES_HELP = "Config overrides as bare KEY=VALUE, e.g. model.activation=tanh optim.lr=0.01 (the same as --set; applied after --set)."
# A bare command-line argument that is an override: a dotted key of identifiers, then `=`.
OVERRIDE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def package_version(name: str) -> str | None:
    """An installed distribution's version, from its metadata (importing nothing of it: no torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _print_version(value: bool) -> None:
    if not value:
        return
    from . import __version__

    torch = package_version("torch")
    out.print(f"actexp {package_version('actexp') or __version__} (Python {sys.version.split()[0]}" + (f", torch {torch})" if torch else ", torch not installed)"),
              markup=False, soft_wrap=True)
    raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version of actexp (and of Python and torch) and exit.")):
    pass


def complete_key_value(incomplete: str) -> list[str]:
    """Tab completion of a KEY=VALUE being typed: dotted config keys, then a key's fixed values."""
    from .config import complete_override

    return complete_override(incomplete)


def complete_grid(incomplete: str) -> list[str]:
    """Tab completion of a --grid KEY=V1,V2 being typed: as complete_key_value, for each value."""
    from .config import complete_override

    return complete_override(incomplete, several=True)


def is_override(argument: str) -> bool:
    """A bare KEY=VALUE argument (a file of that name is a file)."""
    return bool(OVERRIDE.match(argument)) and not Path(argument).exists()


def bare_overrides(arguments: list[str], command: str) -> list[str]:
    """The KEY=VALUE arguments given after the config (the Hydra / Ultralytics habit) as --set
    overrides; anything else is a usage error suggesting --set."""
    for argument in arguments:
        if not OVERRIDE.match(argument):
            fail(f"unexpected argument {argument!r}: after {command}'s config, give overrides as KEY=VALUE (e.g. model.activation=tanh) or --set KEY=VALUE", 2)
    return list(arguments)


def enable_plugins(files: list[Path]) -> None:
    """--plugin: the files join ACTEXP_PLUGINS (for this process and the workers it starts) and are
    loaded and checked now."""
    if files:
        from .plugins import enable

        enable(files)


def whole_keys(overrides: list[str]) -> list[str]:
    """The overrides with short keys made whole (config.resolve_overrides: `epochs=3` is
    `train.epochs=3`), each one resolved said on stderr; the run records the whole key."""
    from .config import resolve_overrides

    resolved = resolve_overrides(overrides)
    for given, whole in zip(overrides, resolved):
        if given != whole:
            err.print(printable(f"note: {given} is {whole}"), markup=False, soft_wrap=True, style="dim")
    return resolved


def check_figure_output(output: Path, needing: str) -> None:
    """Before any work: matplotlib is installed (exit 1, saying that `needing`, the command or
    option, needs it) and writes the format `output`'s suffix names (exit 2)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        fail(f"{needing} needs matplotlib: pip install 'actexp[plot]'", 1)
    formats = FigureCanvasBase.get_supported_filetypes()
    if output.suffix[1:].lower() not in formats:
        fail(f"-o {output}: matplotlib writes {', '.join('.' + f for f in sorted(formats))}; the suffix picks the format", 2)


def print_table(table) -> None:
    """Tables keep all their columns when the output goes to a file or a pipe (rich would squeeze
    them into 80 columns there); a terminal gets its own width."""
    if out.is_terminal:
        return out.print(table)
    width = out.measure(table, options=out.options.update_width(10_000)).maximum
    Console(file=out.file, width=max(out.width, width), highlight=False).print(table)


def fail(message: str, code: int) -> None:
    err.print("error: " + printable(message), soft_wrap=True, markup=False, style="red")
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, RunFolderWarning):
        err.print(f"warning: {printable(message)}", style="yellow", markup=False, soft_wrap=True)
    else:
        err.print(printable(warnings.formatwarning(message, category, filename, lineno, line).rstrip()), markup=False, soft_wrap=True)


def user_errors(command):
    """Turn the library's user-facing errors into one line on stderr and their exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():  # restores the warning machinery afterwards
                warnings.simplefilter("always", RunFolderWarning)
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except ActexpError as e:
            if os.environ.get("ACTEXP_DEBUG"):  # the traceback, with the cause the line was made from
                raise
            fail(str(e), e.exit_code)
        except typer.Exit:  # the command's own fail(): already printed (typer.Exit is an Exception)
            raise
        except Exception as e:  # a bug or an environment failure: one line, the traceback on request
            if os.environ.get("ACTEXP_DEBUG"):
                raise
            fail(f"{type(e).__name__}: {e} (set ACTEXP_DEBUG=1 for the traceback)", 1)

    return wrapper


@app.command(cls=Command)
@user_errors
def train(
    config: Optional[Path] = typer.Argument(None, metavar="CONFIG", help="A YAML config, e.g. configs/relu_xavier.yaml (not needed with --resume).", show_default=False),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="KEY=VALUE", autocompletion=complete_key_value, help=OVERRIDES_HELP, show_default=False),
    set_: List[str] = typer.Option([], "--set", "-s", autocompletion=complete_key_value, help=SET_HELP),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Root of the run folders."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run folder from its last checkpoint; given a config's folder of runs (runs/NAME, or NAME under --runs-dir), its latest resumable run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; the final line only."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (every key, overrides applied) as YAML and exit; trains nothing."),
    plugin: List[Path] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Train one config; writes runs/<name>/<run id>/ (a run with overrides is named after them:
    runs/relu_xavier,activation=tanh/). Overrides take dotted keys (train.epochs=3) or, where only
    one key ends so, its last part (epochs=3)."""
    from .config import config_to_yaml, load_config
    from .display import TrainingDisplay

    enable_plugins(plugin)
    if resume:
        if config is not None or set_ or overrides:
            fail("--resume continues a run with its own config.yaml; drop CONFIG and --set or KEY=VALUE overrides (start a new run to change the config)", 2)
        resume = _resumable(resume, runs_dir)
        from .plugins import require_recorded

        require_recorded(resume)
        config = resume / "config.yaml"
    elif config is None:
        fail("give a CONFIG file, e.g. `actexp train configs/relu_xavier.yaml`, or --resume RUN_DIR", 2)
    elif is_override(str(config)):
        fail(f"{str(config)!r} is an override; give the CONFIG first: actexp train CONFIG {config}", 2)
    set_ = whole_keys([*set_, *bare_overrides(overrides or [], "train")])
    cfg = load_config(config, set_)  # its errors before torch is imported
    if print_config:
        sys.stdout.write(config_to_yaml(cfg))
        return
    from .training import train as train_config

    display = TrainingDisplay(out, quiet)
    try:
        run = train_config(config, overrides=set_, runs_dir=runs_dir, progress=display, resume=resume)
    except KeyboardInterrupt as e:
        display.close()
        stop, code = (f"terminated ({e.name})", e.exit_code) if isinstance(e, Terminated) else ("interrupted", 130)
        folder = display.run_dir
        if folder is None:
            fail(f"{stop} before the run folder was created", code)
        from .runs import CHECKPOINTS

        if (folder / CHECKPOINTS / "last.pt").exists():
            fail(f"{stop}: {folder} keeps every finished epoch; continue with `actexp train --resume {folder}`", code)
        if cfg.train.checkpoint in ("last", "both"):
            fail(f"{stop} before the first epoch finished ({folder}): nothing to resume, train the config again", code)
        fail(f"{stop}: {folder} keeps every finished epoch (no checkpoints/last.pt to resume from: train.checkpoint is {cfg.train.checkpoint})", code)
    if run.status == "diverged":
        fail(f"diverged: {run.summary['error']} (run folder {run.dir})", 1)


def _resumable(resume: Path, runs_dir: Path) -> Path:
    """--resume's run folder: a run folder as given; a config's folder of runs (runs/NAME, or NAME
    under --runs-dir when no such path exists here) gives its latest resumable run."""
    from .runs import latest_resumable

    if not resume.exists() and not resume.is_absolute() and (runs_dir / resume).is_dir():
        resume = runs_dir / resume
    if not resume.is_dir():
        hint = f"to train a config, `actexp train {resume}`" if resume.suffix in (".yaml", ".yml") else f"nor under {runs_dir}"
        fail(f"--resume {resume}: not a run folder or a config's folder of runs ({hint}); give runs/<name>/<run id> or runs/<name>", 2)
    run = latest_resumable(resume)
    if run != resume:
        out.print(printable(f"resuming {run}, the latest resumable run in {resume}"), markup=False, soft_wrap=True)
    return run


@app.command(cls=Command)
@user_errors
def validate(
    configs: List[str] = typer.Argument(..., metavar="CONFIG|KEY=VALUE", help="Config files, sweep files or sweep folders to check; KEY=VALUE arguments (that are not files) are overrides, as --set.", show_default=False),
    set_: List[str] = typer.Option([], "--set", "-s", autocompletion=complete_key_value, help=SET_HELP),
    plugin: List[Path] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Check configs (and sweeps: every run they expand to) without training (exit 2 if any is
    invalid); prints the name each config's run (or sweep) will have."""
    from .config import load_config, read_yaml
    from .sweep import load_sweep

    enable_plugins(plugin)
    paths = [Path(c) for c in configs if not is_override(c)]
    set_ = whole_keys([*set_, *filter(is_override, configs)])
    if not paths:
        fail("give the CONFIG files to check, then any KEY=VALUE overrides: actexp validate configs/relu_xavier.yaml model.activation=tanh", 2)
    bad = 0
    for path in paths:
        try:
            document = None if path.is_dir() else read_yaml(path)
            if path.is_dir() or (isinstance(document, dict) and "base" in document):
                sweep = load_sweep(path, set_)
                names = ", ".join(run.name for run in sweep.runs[:3]) + (", …" if len(sweep.runs) > 3 else "")
                what = f"sweep {sweep.name}, {len(sweep.runs)} runs: {names}"
                if sweep.tune is not None:
                    what = (f"sweep {sweep.name}, tuned: {len(sweep.rows)} rows x {sweep.tune.trials} trials of {', '.join(sweep.tune.keys)}, "
                            f"then {len(sweep.runs)} confirmation runs: {names}")
            else:
                what = load_config(path, set_, document=document).name
                what += _as_swept(path, what, paths)
        except ActexpError as e:
            err.print("error: " + printable(e), soft_wrap=True, markup=False, style="red")
            bad += 1
        else:
            out.print(printable(f"ok: {path} ({what})"), markup=False, soft_wrap=True)
    if bad:
        raise typer.Exit(2)


def _as_swept(path: Path, name: str, paths: list[Path]) -> str:
    """Where several configs of one folder are checked (`validate configs/activations/*.yaml`), the
    name a sweep of that folder gives the run, which is the file's (`tanh`), where the config's own
    name (`act_tanh`, what `train` files it under) is another."""
    from .varying import safe_name

    stem = safe_name(path.stem)
    siblings = sum(1 for p in paths if p.parent == path.parent and p.suffix in (".yaml", ".yml"))
    return f"; run {stem} in a sweep of {path.parent}" if siblings > 1 and stem != name.split(",")[0] else ""


@app.command(cls=Command)
@user_errors
def sweep(
    path: Path = typer.Argument(..., help="A folder of configs (every *.yaml inside), a sweep file (base, grid, seeds), or a config with --grid/--seeds."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="KEY=VALUE", autocompletion=complete_key_value, help=OVERRIDES_HELP + " Applies to every run.", show_default=False),
    set_: List[str] = typer.Option([], "--set", "-s", autocompletion=complete_key_value, help=SET_HELP + " Applies to every run."),
    grid: List[str] = typer.Option([], "--grid", autocompletion=complete_grid, help="Sweep a key over values: --grid model.activation=relu,tanh (repeatable: every combination; a YAML list for components: --grid 'model.init=[xavier_normal, {name: normal, std: 0.1}]')."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Repeat every run with these seeds: --seeds 5 (seeds 0-4) or --seeds 0,1,2; replaces a sweep file's seeds. Adding seeds later trains only the new runs."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Root of the run folders; the sweep lives in RUNS_DIR/<sweep name>/."),
    name: Optional[str] = typer.Option(None, "--name", help="The sweep's name and folder (RUNS_DIR/NAME). Default: the folder's name, a sweep file's name:, or CONFIG_sweep for a config, followed by -KEY per key --grid sweeps (relu_xavier_sweep-lr; relu_xavier_sweep-seed for --seeds alone)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes that train in parallel, each a fused group at a time (default: one per CPU core, one per GPU with several GPUs, 1 with one GPU). With --backend ray: at most this many tasks at a time."),
    backend: str = typer.Option("local", "--backend", help="Where the runs train: local (this machine, --jobs) or ray (Ray tasks on a Ray cluster; pip install 'actexp[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="With --backend ray: the cluster to join: auto (the one `ray start` runs on this node) or ray://HOST:10001 (Ray Client). Default: a Ray instance on this machine, for this sweep."),
    cpus_per_run: Optional[float] = typer.Option(None, "--cpus-per-run", min=0.01, help="With --backend ray: CPUs each run asks Ray for (default 1; its torch threads: the whole part, at least 1)."),
    gpus_per_run: Optional[float] = typer.Option(None, "--gpus-per-run", min=0.01, help="With --backend ray: GPUs each CUDA run asks Ray for (default 1; 0.25: four runs share a GPU)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded runs and what would happen to each; train nothing."),
    force: bool = typer.Option(False, "--force", help="Re-run every run, finished or not (new folders; old ones are kept)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first run that fails or diverges."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live table; the final table only."),
    wait: bool = typer.Option(False, "--wait", help="If another process is running this sweep, wait for it to finish instead of exiting."),
    no_fuse: bool = typer.Option(False, "--no-fuse", help="Train each run alone. By default runs that share layer shapes, data, batch size and epochs train as one stacked model per group (each still writes its own run folder); --dry-run shows the groups."),
    max_group: Optional[int] = typer.Option(None, "--max-group", min=1, help="At most this many runs in one fused group (default: the runs shared evenly between the workers; groups are also split to fit the device's memory)."),
    tune: List[str] = typer.Option([], "--tune", help="Tune a key for every row of the sweep: --tune optim.lr=1e-4:1:log (repeatable; LOW:HIGH, :log for a log range). Each row's trials (an Optuna study each) train first, then each row's chosen values train on the sweep's seeds, and only those runs are compared. Needs pip install 'actexp[tune]'."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trials per row of a tuned sweep (default 16, or the sweep file's tune.trials)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="A tuned sweep's Optuna storage: a database URL (postgresql://...) that several machines share. Default: SQLite in the sweep folder (tune.db)."),
    plugin: List[Path] = typer.Option([], "--plugin", help=PLUGIN_HELP + " Reaches the sweep's workers."),
):
    """Run a family of experiments; run the same command again to resume it."""
    from .display import SweepDisplay, comparison_table
    from .sweep import load_sweep, parse_grid, parse_seeds, plan_sweep, run_sweep
    from .tuning import chosen_lines, tuned_plan_words

    enable_plugins(plugin)
    set_ = whole_keys([*set_, *bare_overrides(overrides or [], "sweep")])
    expansion = {"grid": parse_grid(grid), "seeds": parse_seeds(seeds) if seeds is not None else None, "name": name, "tune": tune, "trials": trials,
                 "storage": storage}
    if backend not in ("local", "ray"):
        fail(f"--backend {backend}: expected local or ray", 2)
    ray_options = {"--address": address, "--cpus-per-run": cpus_per_run, "--gpus-per-run": gpus_per_run}
    given = [option for option, value in ray_options.items() if value is not None]
    if backend == "local" and given:
        fail(f"{given[0]} is an option of --backend ray", 2)
    if gpus_per_run is not None and gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
        fail(f"--gpus-per-run {gpus_per_run}: a fraction of one GPU, or a whole number of GPUs", 2)
    fused = not no_fuse
    if max_group is not None and not fused:
        fail("--max-group sizes fused groups; leave out --no-fuse, or --max-group", 2)
    if dry_run:
        swept = load_sweep(path, set_, **expansion)
        if swept.tune is not None:
            out.print(printable(tuned_plan_words(swept)), markup=False, soft_wrap=True)
        steps, _ = plan_sweep(swept, runs_dir / swept.name, force)
        groups = None
        if fused:
            from .sweep import dry_run_tasks

            tasks = dry_run_tasks(swept, steps, runs_dir / swept.name, jobs, max_group)
            groups = {name: i for i, task in enumerate(tasks, 1) for name in task.names}
        print_table(_dry_run_table(swept, steps, runs_dir / swept.name, groups))
        return
    runner = None
    if backend == "ray":
        from .backends.raycluster import RayBackend

        runner = RayBackend(address, cpus_per_run or 1.0, gpus_per_run, max_slots=jobs)  # says at once when Ray is missing
    from .backends import keep_freed_memory

    keep_freed_memory()  # this process trains the sweep's tasks itself with --jobs 1
    display = SweepDisplay(out, quiet)
    try:
        result = run_sweep(path, set_, **expansion, runs_dir=runs_dir, jobs=jobs, backend=runner, force=force, fail_fast=fail_fast, progress=display,
                           wait=wait, fused=fused, max_group=max_group)
    except KeyboardInterrupt as e:
        display.close()
        stop, code = (f"terminated ({e.name})", e.exit_code) if isinstance(e, Terminated) else ("interrupted", 130)
        fail(f"{stop}: finished runs are kept and the ledger is saved; run the same command again to resume", code)
    finally:
        display.close()
    if result.tuned:
        for line in chosen_lines(result.tuned):
            out.print(printable(line), markup=False, soft_wrap=True)
    if result.comparison is not None:
        print_table(comparison_table(result.comparison))
        written = ", ".join(str(result.dir / f) for f in ("summary.md", "summary.csv", "curves.png") if (result.dir / f).exists())
        out.print(printable(f"written: {written}"), markup=False, soft_wrap=True)
    if result.failures:
        names = "; ".join(f"{e['name']} ({e['status']}: {e['error']})" for e in result.failures)
        fail(f"{len(result.failures)} of {len(result.runs)} runs did not complete: {names}", 1)
    if result.unfinished:
        fail(f"stopped early: {len(result.unfinished)} runs not trained; run the same command again to continue", 1)


def _dry_run_table(swept, steps, sweep_dir, groups: dict | None = None):
    from collections import Counter

    from rich.table import Table

    from .display import plain_cells
    from .varying import key_labels

    labels = key_labels(list(swept.keys))
    table = Table(title=f"{swept.name}: {len(steps)} runs → {sweep_dir}", title_justify="left")
    table.add_column("run", overflow="fold")
    for column in [*(labels[k] for k in swept.keys), "action", *(["group"] if groups is not None else [])]:
        table.add_column(column)
    from .planning import solo_reason

    for step in steps:
        reason = solo_reason(step.run.config) if groups is not None else None
        group = [str(groups.get(step.run.name, "")) + (f" ({reason})" if reason else "")] if groups is not None else []
        action = f"reused from {step.reused_from}" if step.reused_from else step.action
        table.add_row(*plain_cells([step.run.name, *(step.run.labels[k] for k in swept.keys), action, *group]))
    if groups:
        sizes = sorted(Counter(groups.values()).values(), reverse=True)
        table.caption = f"fused: {len(sizes)} tasks (group sizes {', '.join(map(str, sizes))}); a run alone in its group trains solo"
    return table


@app.command(cls=Command)
@user_errors
def compare(
    paths: List[Path] = typer.Argument(..., help="Sweep folders, run folders, or folders holding runs."),
    metric: str = typer.Option("val_acc", "--metric", "-m", help="Rank by val_acc, val_loss, train_acc, train_loss, test_acc or test_loss, each of a run's selected epoch (the one whose weights were tested)."),
    group_by: List[str] = typer.Option([], "--group-by", "-g", help="Aggregate by these keys only (repeatable), e.g. model.activation."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Write summary.csv, summary.md (summary_<metric>.* for another metric) and runs.csv here (default: the one folder given)."),
    min_diff: Optional[float] = typer.Option(None, "--min-diff", help="The smallest difference that matters, in the metric's units: the seeds needed are for it (default 0.005, half a point, for an accuracy; none for a loss)."),
):
    """Rank runs by a metric; runs that differ only by seed become one row (mean, 95% CI, n), and
    each row is tested against the best, in a family of every pair of rows (the best is picked from
    the same runs)."""
    from .display import comparison_table
    from .report import compare as compare_runs, summary_files

    if out_dir is None and len(paths) == 1 and not (paths[0] / "summary.json").exists():
        out_dir = paths[0]
    comparison = compare_runs(paths, metric, group_by or None, out_dir, min_diff)
    print_table(comparison_table(comparison))
    if out_dir is not None:
        out.print(printable(f"written: {', '.join(map(str, summary_files(out_dir, metric)))}"), markup=False, soft_wrap=True)
        try:
            _tuning_figures(paths, out_dir)
        except ImportError:  # matplotlib is optional (pip install actexp[plot]): the table stands without the figures
            pass


@app.command(cls=Command)
@user_errors
def plot(
    paths: List[Path] = typer.Argument(..., help="Sweep folders, run folders, or folders holding runs."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The file to write (default curves.png; boundary.png with --boundary); its suffix picks the format: .png, .pdf or .svg (vector, for papers)."),
    metric: str = typer.Option("val_acc", "--metric", "-m", help="val_acc, val_loss, train_acc, train_loss or lr."),
    group_by: List[str] = typer.Option([], "--group-by", "-g", help="One line per value of these keys (repeatable)."),
    panel_by: Optional[str] = typer.Option(None, "--panel-by", "-p", help="One panel per value of this key, e.g. init or seed (default: with two varying keys, the one with fewer values)."),
    diag: Optional[str] = typer.Option(None, "--diag", help="Plot a per-layer diagnostic instead: grad_norm, grad_ratio, dead_fraction, saturated_fraction, act_std, ... (one panel per run)."),
    sharey: bool = typer.Option(False, "--sharey", help="With --diag: one y scale for every panel, so that panels compare (learning-curve panels always share theirs)."),
    boundary: bool = typer.Option(False, "--boundary", help="Draw one run's decision regions with its test points instead (a run on a 2-D dataset: xor)."),
    plugin: List[Path] = typer.Option([], "--plugin", help=PLUGIN_HELP + " For --boundary."),
):
    """Learning curves overlaid: one line per config, the mean across seeds with a ±1 sd band,
    legend best first (as `compare` ranks); with two varying keys, a panel per value of one of
    them. With --diag, one line per layer over epochs, one panel per run. With --boundary, one
    run's decision regions. -o x.pdf or -o x.svg writes a PDF or an SVG."""
    output = output or Path("boundary.png" if boundary else "curves.png")
    if not output.suffix:
        output = output.with_suffix(".png")  # what matplotlib would write anyway
    check_figure_output(output, "plot")
    enable_plugins(plugin)
    if boundary:
        if diag or panel_by or group_by:
            fail("--boundary draws one run's decision regions; drop --diag, --panel-by and --group-by", 2)
        if len(paths) != 1:
            fail("--boundary draws one run: give one run folder (or a folder of runs: a sweep's best completed run is drawn, runs/NAME's latest)", 2)
        from .evaluation import decision_grid
        from .plots import draw_boundary
        from .show import choose_run

        run, chosen = choose_run(paths[0], completed=True)
        if chosen:
            err.print(printable(f"drawing {run}: {chosen}"), style="dim", markup=False, soft_wrap=True)
        grid = decision_grid(run)
        draw_boundary(grid, output, title=f"{run.parent.name} ({run.name})")
        out.print(printable(f"wrote {output} (decision regions of {run}: test accuracy {grid.accuracy:.4f} on {len(grid.labels)} points)"), markup=False, soft_wrap=True)
        return
    if diag:
        from .diagplot import plot_diagnostics
        from .runs import find_runs

        if panel_by:
            fail("--panel-by is for learning curves; --diag draws one panel per run", 2)
        runs = [run for path in paths for run in find_runs(path)]
        if not runs:
            fail(f"no run folders (with a summary.json) in {', '.join(map(str, paths))}", 1)
        plot_diagnostics(runs, diag, output, sharey=sharey)
        out.print(f"wrote {output} ({len(runs)} panels of {diag})", markup=False, soft_wrap=True)
        return
    from .plots import plot as plot_runs

    path, curves = plot_runs(paths, output, metric, group_by or None, panel_by=panel_by)
    panels = f" in {len(curves.panels)} panels" if len(curves.panels) > 1 else ""
    out.print(printable(f"wrote {path} ({len(curves.lines)} lines{panels})"), markup=False, soft_wrap=True)
    _tuning_figures(paths, path.parent, path.suffix)


def _tuning_figures(paths: list[Path], folder: Path, suffix: str = ".png") -> None:
    """A tuned sweep's sensitivity and budget figures, when `paths` is one tuned sweep folder."""
    if len(paths) == 1 and paths[0].is_dir():
        from .plots import write_tuning_figures

        written = write_tuning_figures(paths[0], folder, suffix)
        if written:
            out.print(printable(f"wrote {', '.join(map(str, written))} (the tune's sensitivity and budget)"), markup=False, soft_wrap=True)


@app.command("runs", cls=Command)
@user_errors
def list_runs(
    root: Path = typer.Argument(Path("runs"), help="Folder to search for run folders."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Only the runs of this sweep folder (its name, or its path below ROOT)."),
    status: Optional[str] = typer.Option(None, "--status", help="Only runs of this status: completed, diverged, pruned (a tuning trial its study stopped), failed, interrupted, running or pending."),
    where: List[str] = typer.Option([], "--where", help="Only runs whose config has this value, e.g. --where activation=tanh or --where optim.lr=0.01 (repeatable: all must hold)."),
    wide: bool = typer.Option(False, "--wide", "-w", help="One table with every column: sweep, name, status, epoch, val acc, test acc, start, overrides, folder."),
    as_csv: bool = typer.Option(False, "--csv", help="Print one CSV row per run instead (the columns of compare's runs.csv)."),
):
    """List runs, newest first, a table per sweep: each run's selected epoch with its val acc and
    test acc. --wide for every column, --csv for a spreadsheet."""
    from .report import list_runs as find, read_runs, runs_csv

    if wide and as_csv:
        fail("--wide and --csv are two forms of the listing; give one", 2)
    filtered = sweep is not None or status is not None or bool(where)
    if as_csv:
        runs = read_runs(root, sweep, status, where)
        if not runs:
            fail(f"no runs in {root}" + (" match these filters" if filtered else ""), 1)
        sys.stdout.write(runs_csv(runs, root))
        return
    from .display import runs_by_sweep, runs_table

    rows = find(root, sweep, status, where)
    if not rows:
        fail(f"no runs in {root}" + (" match these filters" if filtered else ""), 1)
    if wide:
        return print_table(runs_table(rows))
    for i, (title, table) in enumerate(runs_by_sweep(rows, root)):
        out.print(*(["\n"] if i else []), title, sep="", soft_wrap=not out.is_terminal)
        print_table(table)


BEST_HELP = "Of a folder of runs, the completed run with the best val acc (the default for a sweep's folder)."
LATEST_HELP = "Of a folder of runs, the newest (the default for a config's folder of runs, runs/NAME)."


def _pick(best: bool, latest: bool) -> str | None:
    if best and latest:
        fail("--best and --latest pick one run each; give one", 2)
    return "best" if best else "latest" if latest else None


@app.command(cls=Command)
@user_errors
def show(
    run: Path = typer.Argument(..., help="A run folder, or a folder of runs: a sweep's shows its best run, runs/NAME its latest."),
    best: bool = typer.Option(False, "--best", help=BEST_HELP),
    latest: bool = typer.Option(False, "--latest", help=LATEST_HELP),
    plugin: List[Path] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Show a run: config essentials, epochs, and per-layer diagnostics at epoch 0 and the last epoch."""
    from .show import show_run

    enable_plugins(plugin)
    show_run(out, run, _pick(best, latest))


@app.command("eval", cls=Command)
@user_errors
def eval_run(
    run: Path = typer.Argument(..., help="A completed run folder, or a folder of runs: a sweep's best completed run, runs/NAME's latest completed run."),
    split: str = typer.Option("test", "--split", help="test, or val (the validation samples the run held out)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Evaluate on another dataset whose inputs and classes are the run's (the same class names: an mnist run's digits are no fashion_mnist garments), preprocessed as the run's own data."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also draw the confusion matrix to this file (.png, .pdf or .svg)."),
    best: bool = typer.Option(False, "--best", help=BEST_HELP),
    latest: bool = typer.Option(False, "--latest", help=LATEST_HELP),
    plugin: List[Path] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """A run's result weights (its selected epoch's) on a split: loss, accuracy, per-class accuracy
    and the confusion matrix."""
    from .evaluation import evaluate_run
    from .show import choose_run

    enable_plugins(plugin)
    pick = _pick(best, latest)
    if output is not None:
        check_figure_output(output, "-o")
    chosen_run, chosen = choose_run(run, completed=True, pick=pick)
    if chosen:
        err.print(printable(f"evaluating {chosen_run}: {chosen}"), style="dim", markup=False, soft_wrap=True)
    result = evaluate_run(chosen_run, split, dataset)
    on = result["dataset"] if result["dataset"] == result["trained_on"] else f"{result['dataset']} (trained on {result['trained_on']})"
    out.print(printable(f"{result['run']}: epoch {result['epoch']}'s weights on {on} {result['split']}, {result['n']} samples: "
                        f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}"), markup=False, soft_wrap=True)
    for table in _eval_tables(result):
        print_table(table)
    if output is not None:
        from .plots import draw_confusion

        draw_confusion(result, output)
        out.print(f"wrote {output}", markup=False, soft_wrap=True)


def _eval_tables(result: dict) -> list:
    """Per-class accuracy (with the class each is most often mistaken for) and, for up to 20
    classes, the confusion matrix."""
    from rich.table import Table
    from rich.text import Text

    from .display import plain_cells
    from .evaluation import MAX_TABLE_CLASSES

    names = result["classes"]
    per_class = Table(title="per class", title_justify="left")
    for column in ("class", "samples", "accuracy", "most often taken for"):
        per_class.add_column(column, justify="left" if column in ("class", "most often taken for") else "right")
    for row in result["per_class"]:
        confused = f"{names[row['confused_with']]} ({row['confused_count']})" if row["confused_with"] is not None else ""
        accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        per_class.add_row(*plain_cells([row["name"], str(row["n"]), accuracy, confused]))
    if len(names) > MAX_TABLE_CLASSES:
        per_class.caption = f"confusion matrix: {len(names)} × {len(names)}, drawn with -o cm.png"
        return [per_class]
    confusion = Table(title="confusion matrix", title_justify="left")
    confusion.add_column("true \\ predicted")
    for name in names:
        confusion.add_column(Text(printable(name)), justify="right")
    for name, counts in zip(names, result["confusion"]):
        confusion.add_row(*plain_cells([name, *(str(c) if c else "·" for c in counts)]))
    return [per_class, confusion]


@data_app.command("download", cls=Command)
@user_errors
def data_download(
    name: str = typer.Argument(..., help="mnist, fashion_mnist or cifar100."),
    root: Optional[str] = typer.Option(None, "--root", help="Data root (default $ACTEXP_DATA or ~/.cache/actexp/data)."),
):
    """Download a dataset from its official mirrors (checksums verified)."""
    from .data import download_dataset

    _check_dataset_name(name)
    out.print(f"downloaded {name} to {download_dataset(name, root)}", markup=False, soft_wrap=True)


@data_app.command("import", cls=Command)
@user_errors
def data_import(
    name: str = typer.Argument(..., help="mnist, fashion_mnist or cifar100."),
    source: Path = typer.Argument(..., help="A folder holding the dataset's original files (gzipped or not)."),
    root: Optional[str] = typer.Option(None, "--root", help="Data root (default $ACTEXP_DATA or ~/.cache/actexp/data)."),
):
    """Copy a folder of original dataset files into the data root, after checking their content."""
    from .data import import_dataset

    _check_dataset_name(name)
    out.print(f"imported {name} into {import_dataset(name, source, root)}", markup=False, soft_wrap=True)


def _check_dataset_name(name: str) -> None:
    from .config import parse_component

    parse_component(name, "dataset", "dataset")


def main():
    app()


if __name__ == "__main__":
    sys.exit(main())
