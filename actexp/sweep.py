"""Sweeps: a family of runs from a folder of configs or a grid, with a ledger so that a sweep
survives failures and interruptions and is resumed by running the same command again.

A sweep lives in `runs/<sweep name>/`: one run folder per run (`<run name>/<run id>/`, as `train`
makes them) and the ledger `sweep.json`, which lists every run with the hash of its resolved config,
its status and its folder. A run is recognised by that hash (its name is left out of it, so renaming
a run or adding a grid value does not re-train the others). The run folders' summary.json is the
truth about a run; the ledger points at them and is rewritten (atomically) whenever a run starts or ends.
The ledger also keeps what the sweep is (its source and the keys --grid adds): a folder that holds
another sweep's ledger is refused, so that one sweep never takes another's runs for its own removed
ones or overwrites its summary.

torch is imported only where a run trains, so `actexp sweep --dry-run` answers instantly.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .backends import Backend, Event, Outcome, RunSpec, Task, _relative, cpu_count, execute  # noqa: F401  (the seam, re-exported)
from .backends.local import Slot, worker_slots  # noqa: F401
from .config import SEED_RANGE, Config, _did_you_mean, _shown_path, apply_overrides, check_name, config_from_dict, config_hash, config_to_dict, load_config, read_yaml
from .events import SweepPlan
from .errors import ConfigError, RunLostWarning, sigterm_as_interrupt  # noqa: F401  (RunLostWarning: re-exported)
from .runs import CHECKPOINTS, FAILURES, RESULTS, RunFolderWarning, locked, make_dir, read_ledger, read_summary, write_ledger
from .tuning import TRIAL_SEED_BASE, Tune, parse_options, parse_section
from .tuning import merge as merge_tune
from .varying import SEED_KEY, describe, key_labels, run_name, safe_name, sweep_name, varying_keys

SWEEP_FILE_KEYS = ("name", "base", "grid", "seeds", "tune")
MAX_RUNS = 10_000
WORKER_STOP_SECONDS = 60  # after Ctrl-C, how long workers get to save their run as interrupted

Progress = Callable[[str, dict], None]  # progress(kind, info): "plan", then the task events (events.py), with the run's name


# ----------------------------------------------------------------------------- what a sweep is


@dataclass(frozen=True)
class SweepRun:
    name: str  # a grid run's from the keys that vary (activation=tanh,init=he_normal,seed=1); a folder run's from its file
    config: Config  # resolved; config.name is the run name
    labels: Mapping[str, str]  # varying dotted key -> value label
    hash: str  # config_hash of the resolved config without its name


@dataclass(frozen=True)
class Sweep:
    name: str  # its folder's name under the runs folder
    source: Path
    keys: tuple[str, ...]  # the dotted keys that vary between runs
    runs: tuple[SweepRun, ...]
    added_keys: tuple[str, ...] = ()  # the keys the command line's --grid adds to the source's own grid
    tune: Tune | None = None  # a tuned sweep: its runs are the confirmation runs, each of a row
    rows: tuple[SweepRun, ...] = ()  # a tuned sweep's rows: its runs without their seeds, the tuned keys at the base's values
    row_of: tuple[int, ...] = ()  # a tuned sweep's runs: the index of each one's row


def load_sweep(path: str | Path, overrides: list[str] = (), *, grid: Mapping[str, list] | None = None, seeds: list[int] | None = None,
               name: str | None = None, tune: list[str] = (), trials: int | None = None, storage: str | None = None) -> Sweep:
    """Expand a sweep into its runs: its source's configs × its grid × its seeds. The source is a
    folder of configs (every *.yaml directly inside, sorted), a sweep file (base, grid, seeds, name),
    or a single config (then `grid` or `seeds` make it a sweep). `grid` ({dotted key: values}, the
    command line's --grid) adds keys to the source's grid; `seeds` (--seeds) replaces its seeds;
    `overrides` (--set) apply to every run. A folder's runs are named after their files (tanh.yaml:
    tanh, or tanh,seed=1 with seeds), a grid's after the keys that vary. Every run's config is
    validated here, before anything trains. Raises ConfigError.

    The sweep's name, its folder under the runs folder, is `name` (--name) when given; else the
    source's (a folder's name, a sweep file's `name:` or file name, a config's `<stem>_sweep`), then
    `-` and each key `grid` adds (`relu_xavier_sweep-activation-init`, `activations-lr`): so that
    sweeps of one source over different keys never share a folder, while the same command (its
    --grid options in any order, more values, other seeds) names the same sweep and resumes it. A
    config swept by `seeds` alone is `<stem>_sweep-seed`.

    `tune` (--tune KEY=LOW:HIGH[:log]) adds keys to a sweep file's `tune:`, `trials` and `storage`
    replace its options (tuning.py): the sweep is then tuned, and its runs are its rows' confirmation
    runs, one per seed."""
    path = Path(path)
    extra_grid = dict(grid or {})
    cli_tune = parse_options(list(tune))
    file_tune = None
    if path.is_dir():
        files = sorted(path.glob("*.yaml"))
        if not files:
            raise ConfigError(f"{path}: no *.yaml configs in this folder")
        for file in files:
            if not safe_name(file.stem):
                raise ConfigError(f"{file}: a folder sweep names each run after its file; rename it with letters, digits and _ . , = + -")
        source_name, bases, file_grid, file_seeds = path.resolve().name, [(f, safe_name(f.stem)) for f in files], {}, None
        named_keys = list(extra_grid)
    elif path.is_file() and _is_sweep_file(path):
        source_name, base, file_grid, file_seeds, file_tune = _read_sweep_file(path)
        bases, named_keys = [(base, None)], list(extra_grid)
    elif path.is_file():
        if not extra_grid and seeds is None and not cli_tune:
            raise ConfigError(f"{path}: a single config is a sweep only with --grid or --seeds; to train it once: actexp train {path}")
        source_name, bases, file_grid, file_seeds = f"{safe_name(path.stem)}_sweep", [(path, None)], {}, None
        named_keys = list(extra_grid) or [SEED_KEY]  # seeds name a sweep only when nothing else varies
    else:
        raise ConfigError(f"{path}: no such file or folder")
    check_name(source_name, f"{path}: name")
    if name is None:
        # A tune the command line adds makes another sweep than the same source untuned.
        name = sweep_name(source_name, named_keys) + ("-tuned" if cli_tune else "")
    else:
        check_name(name, "--name")
    for key in extra_grid:
        if key in file_grid:
            raise ConfigError(f"--grid {key}: {path} sweeps {key} already; change it there")
    full_grid = file_grid | extra_grid
    seeds = seeds if seeds is not None else file_seeds
    swept = list(full_grid) + ([SEED_KEY] if seeds else [])
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in swept:
            raise ConfigError(f"--set {item}: {key} is swept by {'--grid/--seeds' if key in extra_grid or key == SEED_KEY else path}; set it in one place")
    tuned = merge_tune(file_tune, cli_tune, trials, storage)
    if tuned is not None:
        _check_tuned(tuned, path, full_grid, seeds, overrides)
    size = len(bases) * math.prod(len(values) for values in full_grid.values()) * len(seeds or [None])
    if size > MAX_RUNS:  # counted before expanding: a few aliased lines can describe millions of runs
        raise ConfigError(f"{path}: the sweep expands to {size:,} runs, more than the {MAX_RUNS:,} one sweep may hold; split it")

    def expand(seeds: list | None) -> tuple[list, list, list, list[int]]:
        configs, origins, prefixes, rows = [], [], [], []
        for base, prefix in bases:
            for point in itertools.product(*full_grid.values()):
                for seed in seeds or [None]:
                    settings = dict(zip(full_grid, point)) | ({SEED_KEY: seed} if seed is not None else {})
                    # A grid point is applied like --set, before the sweep's own --set overrides.
                    point_overrides = [f"{k}={json.dumps(v)}" for k, v in settings.items()] + list(overrides)
                    origin = ",".join(f"{k}={json.dumps(v)}" for k, v in settings.items()) or "base"
                    if isinstance(base, Path):
                        configs.append(load_config(base, point_overrides, rename=False))  # its errors name the file; _name_runs names it
                    else:
                        try:
                            configs.append(config_from_dict(apply_overrides(base, point_overrides)))
                        except ConfigError as e:
                            raise ConfigError(f"{path}: run {origin}: {e}") from e
                    origins.append(f"{base.name}: {origin}" if isinstance(base, Path) and prefix else origin)
                    prefixes.append(prefix)
                    rows.append(len(rows) // len(seeds or [None]))
        return configs, origins, prefixes, rows

    configs, origins, prefixes, row_of = expand(seeds)
    sweep = dataclasses.replace(_name_runs(name, path, configs, origins, prefixes, swept), added_keys=tuple(extra_grid))
    if tuned is None:
        return sweep
    rows = _name_runs(name, path, *expand(None)[:3], list(full_grid)).runs
    for run in rows:
        for param in tuned.params:
            for value in ((param.low, param.high) if not param.choices else param.choices):
                try:
                    with_values(run.config, {param.key: value})
                except ConfigError as e:
                    raise ConfigError(f"tune {param.key}: {value} does not make a valid config for {run.name}: {e}") from e
    return dataclasses.replace(sweep, tune=tuned, rows=rows, row_of=tuple(row_of))


def with_values(config: Config, values: Mapping[str, object], name: str | None = None) -> Config:
    """`config` with dotted keys set (a trial's or a row's chosen values), validated."""
    changed = config_from_dict(apply_overrides(config_to_dict(config), [f"{k}={json.dumps(v)}" for k, v in values.items()]))
    return dataclasses.replace(changed, name=name if name is not None else config.name)


def _check_tuned(tune: Tune, path: Path, grid: Mapping, seeds: list[int] | None, overrides: list[str]) -> None:
    for key in tune.keys:
        if key in grid:
            raise ConfigError(f"tune {key}: {path} sweeps {key} in its grid as well; tune it or sweep it, not both")
        if any(item.partition("=")[0].strip() == key for item in overrides):
            raise ConfigError(f"--set {key}: the sweep tunes {key}; set its range in the tune instead")
    if not seeds or len(seeds) < 2:
        raise ConfigError(f"{path}: a tuned sweep retrains each row's chosen values on its seeds, and compares those runs: "
                          "give it two seeds or more (--seeds 5, or seeds: in the sweep file)")
    if max(seeds) >= TRIAL_SEED_BASE:
        raise ConfigError(f"{path}: seeds: a tuned sweep's seeds stay below {TRIAL_SEED_BASE:,} (its trials' seeds start there), got {max(seeds)}")


def parse_grid(items: list[str]) -> dict[str, list]:
    """--grid KEY=V1,V2 (or KEY=[V1, {name: leaky_relu, negative_slope: 0.1}], a YAML list) -> {KEY: [values]}."""
    import yaml

    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid model.activation=relu,tanh")
        try:
            values = yaml.safe_load(text) if text.lstrip().startswith("[") else [yaml.safe_load(v) for v in text.split(",")]
        except yaml.YAMLError as e:
            raise ConfigError(f"--grid {item!r}: the values are not a YAML list; quote it: --grid '{key}=[v1, v2]'") from e
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {item!r}: expected a non-empty list of values")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; give all its values in one --grid")
        grid[key] = values
    return grid


MAX_SEEDS = 10_000


def parse_seeds(text: str) -> list[int]:
    """--seeds N (seeds 0..N-1) or --seeds 0,1,2 (these seeds)."""
    usage = f"--seeds {text[:40]}: expected a count (--seeds 5: seeds 0 to 4) or a list of seeds (--seeds 0,1,2)"
    bound = f"--seeds {text[:40]}: expected 1 to {MAX_SEEDS:,} distinct seeds in {SEED_RANGE}"
    if text.count(",") >= MAX_SEEDS:
        raise ConfigError(bound)
    parts = [p.strip() for p in text.split(",")]
    # str.isdigit also takes other scripts' digits and superscripts, which int() then refuses or reads
    # as another number; and the count is checked before any list of that length is built.
    if not all(p and p.isascii() and p.isdigit() for p in parts):
        raise ConfigError(usage)
    if any(len(p) > len(str(SEED_RANGE.high)) for p in parts):
        raise ConfigError(bound)
    numbers = [int(p) for p in parts]
    if len(numbers) == 1 and not 1 <= numbers[0] <= MAX_SEEDS:
        raise ConfigError(bound)
    seeds = list(range(numbers[0])) if len(numbers) == 1 else numbers
    if len(set(seeds)) != len(seeds) or max(seeds) not in SEED_RANGE:
        raise ConfigError(bound)
    return seeds


def _is_sweep_file(path: Path) -> bool:
    raw = read_yaml(path)
    return isinstance(raw, dict) and "base" in raw


def _read_sweep_file(path: Path) -> tuple[str, dict, dict, list[int] | None, Tune | None]:
    raw = read_yaml(path)
    for key in raw:
        if key not in SWEEP_FILE_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key{_did_you_mean(key, SWEEP_FILE_KEYS)}; allowed: {', '.join(SWEEP_FILE_KEYS)}")
    if raw.get("name") is not None and not isinstance(raw["name"], str):
        raise ConfigError(f"{path}: name: expected a string (the sweep's folder name), got {raw['name']!r}; quote it: name: \"{raw['name']}\"")
    base = raw["base"]
    if isinstance(base, str):
        base_path = path.parent / base  # relative to the sweep file, like an include
        base = read_yaml(base_path)
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: base: {base_path} does not hold a config mapping")
    elif not isinstance(base, dict):
        raise ConfigError(f"{path}: base: expected a config path or an inline config mapping")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: grid: expected a mapping from dotted keys to non-empty lists, e.g. {{model.activation: [relu, tanh]}}")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds)):
        raise ConfigError(f"{path}: seeds: expected a non-empty list of integers, e.g. [0, 1, 2]")
    tune = parse_section(raw["tune"], f"{path}: tune") if raw.get("tune") is not None else None
    return raw.get("name") or path.stem, base, grid, seeds, tune


def _name_runs(name: str, source: Path, configs: list[Config], origins: list[str], prefixes: list[str | None], swept: list[str]) -> Sweep:
    """Name the runs: a folder sweep's after their files (`prefixes`), followed by the values of the
    keys the command line sweeps (`tanh,seed=1`); a grid's after every key that varies. Each run's
    labels are its values of the varying keys, either way."""
    plain = [config_to_dict(c) for c in configs]
    keys = varying_keys(plain)
    labels = key_labels(keys)
    described = describe(plain, keys)
    run_names = []
    for config, values, prefix in zip(configs, described, prefixes):
        swept_values = {k: v for k, v in values.items() if k in swept}
        if prefix is None:
            run_names.append(run_name(values, labels) if keys else config.name)
        else:
            run_names.append(",".join([prefix, run_name(swept_values, labels)]) if swept_values else prefix)
    runs, seen, named = [], {}, {}
    for config, origin, values, run_label in zip(configs, origins, described, run_names):
        try:
            check_name(run_label, f"{source}: run {origin}: name")
        except ConfigError as e:
            raise ConfigError(f"{e}: sweep fewer keys in one grid, or use a folder of configs (runs named after their files)") from e
        config = dataclasses.replace(config, name=run_label)
        run = SweepRun(run_label, config, values, run_hash(config))
        if run.hash in seen:
            raise ConfigError(f"{source}: {origin} and {seen[run.hash]} are the same experiment ({run.name})")
        if run.name in named:
            raise ConfigError(f"{source}: {origin} and {named[run.name]} would both be named {run.name}")
        seen[run.hash], named[run.name] = origin, origin
        runs.append(run)
    return Sweep(name, source, tuple(keys), tuple(runs))


def run_hash(config: Config) -> str:
    """The config hash a sweep recognises a run by: the resolved config without its name."""
    return config_hash(dataclasses.replace(config, name=""))


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    """What a sweep does with one run: new, skip, resume, restart (same folder) or rerun (new folder)."""

    run: SweepRun
    action: str
    entry: dict  # the run's ledger entry (shared with the ledger: updating it updates the ledger)
    # A skipped run's result that was trained under another name (the same config: a run renamed by
    # a new grid key or value, seed 0 of a folder sweep's file): its folder, relative to the sweep's.
    reused_from: str | None = None


def plan_sweep(sweep: Sweep, sweep_dir: Path, force: bool = False) -> tuple[list[Step], dict]:
    """Match the sweep's runs against the ledger in `sweep_dir`; return the steps and the new ledger.
    Ledger entries whose config is no longer in the sweep move to `removed`, folders untouched.
    Raises ConfigError when the folder's ledger is another sweep's (see check_same_sweep)."""
    old = read_ledger(sweep_dir)
    check_same_sweep(sweep, sweep_dir, old)
    known = {e.get("config_hash"): e for e in old.get("removed", []) + old.get("runs", [])}
    steps, entries = [], []
    for i, run in enumerate(sweep.runs):
        old_entry = known.pop(run.hash, {})
        entry = {"name": run.name, "config_hash": run.hash, "status": old_entry.get("status", "pending"),
                 "folder": old_entry.get("folder"), "params": dict(run.labels), "error": old_entry.get("error"),
                 "config": config_to_dict(run.config)}  # so that `compare` can count a run that failed before its folder existed
        if sweep.tune is not None:  # a confirmation run: the row whose chosen values it trains (compare's edge flags)
            entry["row"] = sweep.rows[sweep.row_of[i]].name
        entry["status"] = _status(entry, sweep_dir)
        action = _action(entry, sweep_dir, force)
        steps.append(Step(run, action, entry, _reused_from(run, entry, action)))
        entries.append(entry)
    ledger = {**ledger_head(sweep), "runs": entries, "removed": list(known.values())}
    if sweep.tune is not None:  # the trials stage's record, kept (trials.py)
        ledger.update(tune=old.get("tune"), trials=old.get("trials", []))
    return steps, ledger


def ledger_head(sweep: Sweep) -> dict:
    """What a ledger says of its sweep, before its runs."""
    return {"sweep": sweep.name, "source": str(sweep.source), "identity": sweep_identity(sweep), "keys": list(sweep.keys)}


def sweep_identity(sweep: Sweep) -> dict:
    """What makes two commands the same sweep, as its ledger keeps it: its source (resolved) and the
    keys the command line's --grid adds. Not a sweep file's grid, a folder's files, the seeds or the
    --set values: changing those changes the sweep (runs no longer in it are left alone, new ones
    train), it does not make another one."""
    identity = {"source": str(sweep.source.resolve()), "grid": sorted(sweep.added_keys)}
    return identity | ({"tune": sorted(sweep.tune.keys)} if sweep.tune else {})


def check_same_sweep(sweep: Sweep, sweep_dir: Path, ledger: dict) -> None:
    """Refuse to plan `sweep` into a folder whose ledger belongs to another sweep (another source, or
    other --grid keys): its runs would be reported as removed and its summary.md and curves.png
    overwritten. Sweeps named by what they vary reach another's folder only by a name they are
    given (a sweep file's `name:`, --name). A ledger that does not say it all (hand-written, or from
    before ledgers kept the --grid keys) is compared by what it does say."""
    recorded = ledger.get("identity") if isinstance(ledger.get("identity"), dict) else {}
    sources = [s for s in (ledger.get("source"), recorded.get("source")) if isinstance(s, str)]
    ours = sweep_identity(sweep)
    same_source = not sources or any(_same_path(s, sweep.source) for s in sources)
    grid = recorded.get("grid")
    same_grid = not isinstance(grid, list) or sorted(map(str, grid)) == ours["grid"]
    tuned = recorded.get("tune", []) if recorded else ours.get("tune", [])
    same_tune = isinstance(tuned, list) and sorted(map(str, tuned)) == ours.get("tune", [])
    if same_source and same_grid and same_tune:
        return
    theirs = _described(sources[-1] if sources else "?", grid if isinstance(grid, list) else [], tuned if isinstance(tuned, list) else [])
    raise ConfigError(f"{sweep_dir} holds another sweep ({theirs}), not this one ({_described(ours['source'], ours['grid'], ours.get('tune', []))}); "
                      f"give this one its own folder: --name NAME")


def _same_path(recorded: str, source: Path) -> bool:
    # The path as given (a project moved elsewhere, the same command) or the same file by another path.
    if recorded == str(source):
        return True
    try:
        return Path(recorded).resolve() == source.resolve()
    except (OSError, ValueError):  # a ledger's string that is no path (a NUL)
        return False


def _described(source: str, grid: list, tune: list = ()) -> str:
    return _shown_path(source) + "".join(f" --grid {_shown_path(key)}" for key in grid) + "".join(f" --tune {_shown_path(key)}" for key in tune)


def _reused_from(run: SweepRun, entry: dict, action: str) -> str | None:
    folder = entry.get("folder")
    return folder if action == "skip" and folder and Path(folder).parts[0] != run.name else None


def _status(entry: dict, sweep_dir: Path) -> str:
    # The run folder's summary.json is the truth: the ledger may lag behind a sweep that was killed.
    if entry.get("folder"):
        summary = read_summary(sweep_dir / entry["folder"])
        if summary:
            return summary["status"]
    return "failed" if entry.get("status") == "failed" else "pending"


def _action(entry: dict, sweep_dir: Path, force: bool) -> str:
    status, folder = entry["status"], entry.get("folder")
    if force:
        return "rerun"
    if status in RESULTS:
        return "skip"
    if status == "failed":
        return "rerun"
    if folder and (sweep_dir / folder / CHECKPOINTS / "last.pt").exists():
        return "resume"  # interrupted, or `running` in a sweep that was killed
    return "restart" if folder and (sweep_dir / folder).is_dir() else "new"


# ----------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: its ledger entries (plain dicts) and, when it finished, the comparison."""

    name: str
    dir: Path
    runs: tuple[dict, ...]  # name, config_hash, status, folder, params, error, config
    removed: tuple[dict, ...]
    comparison: object = None  # report.Comparison
    curves: Path | None = None
    tuned: dict | None = None  # a tuned sweep's rows: {row: {study, chosen, edge, trials}} (the ledger's tune.rows)

    @property
    def failures(self) -> list[dict]:
        return [e for e in self.runs if e["status"] in FAILURES]

    @property
    def unfinished(self) -> list[dict]:
        return [e for e in self.runs if e["status"] not in RESULTS + ("failed",)]


def run_sweep(
    path: str | Path,
    overrides: list[str] = (),
    *,
    grid: Mapping[str, list] | None = None,
    seeds: list[int] | None = None,
    runs_dir: str | Path = "runs",
    jobs: int | None = None,
    backend: Backend | str | None = None,
    force: bool = False,
    fail_fast: bool = False,
    progress: Progress | None = None,
    report: bool = True,
    wait: bool = False,
    fused: bool = True,
    max_group: int | None = None,
    name: str | None = None,
    tune: list[str] = (),
    trials: int | None = None,
    storage: str | None = None,
) -> SweepResult:
    """Run a sweep into `runs_dir/<sweep name>/` (`name`, or the name load_sweep gives it): skip
    finished runs, re-run failed ones, resume interrupted ones. A failing run does not stop the others (unless `fail_fast`). `backend` trains
    the runs: None or "local", this machine, where `jobs` worker processes train in parallel (None:
    one per GPU on a multi-GPU machine, one in this process with one GPU, else one per CPU core
    this process may use, at most one per task); "ray", Ray tasks on a local Ray
    instance (a `backends.raycluster.RayBackend(address=...)` joins a cluster); or any
    `backends.Backend`. On Ctrl-C the ledger is saved and KeyboardInterrupt re-raised (SIGTERM too,
    as errors.Terminated). With `report`, a finished sweep writes summary.csv, summary.md and
    curves.png next to the ledger. The sweep folder is locked while it runs: a second copy raises
    runs.Busy, or with `wait` waits for the first to finish (and then finds its runs done). With
    `fused` (the default), runs that share their layer shapes, data, batch size and epochs train as
    one stacked model per group (at most `max_group` runs; by default the runs are shared evenly
    between the workers), each still writing its own run folder; groups start longest first. A
    folder whose ledger is another sweep's is refused (ConfigError) before anything trains.

    A tuned sweep (a sweep file's `tune:`, or `tune`: --tune KEY=LOW:HIGH[:log]; `trials` and
    `storage` as --trials and --storage) first runs each row's trials (trials.py), then its
    confirmation runs: each row's chosen values on the sweep's seeds, which alone are compared."""
    if backend == "ray":
        from .backends.raycluster import RayBackend

        backend = RayBackend(max_slots=jobs)
    elif backend not in (None, "local") and not isinstance(backend, Backend):
        raise ConfigError(f"backend {backend!r}: expected local or ray")
    sweep = load_sweep(path, overrides, grid=grid, seeds=seeds, name=name, tune=tune, trials=trials, storage=storage)
    if sweep.tune is not None:
        from .tuning import require_optuna

        require_optuna()  # before the sweep folder exists
    if any(run.config.train.tensorboard for run in sweep.runs):
        from .board import require_tensorboard

        require_tensorboard()  # once, before the sweep folder exists, rather than a failure per run
    sweep_dir = Path(runs_dir) / sweep.name
    make_dir(sweep_dir, root=runs_dir)
    with locked(sweep_dir, f"sweep {sweep.name}", wait), sigterm_as_interrupt():
        return _run_locked(sweep, sweep_dir, jobs, backend if isinstance(backend, Backend) else None, force, fail_fast, progress, report,
                           fused, max_group)


def _run_locked(sweep: Sweep, sweep_dir: Path, jobs, backend: Backend | None, force: bool, fail_fast: bool, progress, report: bool,
                fused: bool = True, max_group: int | None = None) -> SweepResult:
    from .plots import draw_folder_curves

    progress = progress or (lambda event, info: None)
    here = sweep_dir.absolute()  # tasks carry absolute paths: workers may run elsewhere
    if sweep.tune is not None:
        sweep = _tune(sweep, sweep_dir, jobs, backend, fail_fast, progress, fused, max_group)
    steps, ledger = plan_sweep(sweep, sweep_dir, force)
    write_ledger(sweep_dir, ledger)
    todo = [s for s in steps if s.action != "skip"]
    by_name = {step.run.name: step for step in todo}

    def plan(slots: int) -> None:
        stage = "confirmation runs" if sweep.tune is not None else ""
        progress("plan", SweepPlan(sweep=sweep, steps=steps, dir=sweep_dir, removed=ledger["removed"], jobs=slots, stage=stage))

    def record(event: Event) -> None:
        """Keep the ledger in step with a run's events, then pass them on to the display."""
        step, info = by_name[event.run], event.info
        if event.kind == "run_start":
            step.entry.update(status="running", folder=_relative(info["dir"], here), error=None)
            write_ledger(sweep_dir, ledger)
        elif event.kind == "run_end":
            info = dataclasses.asdict(info)
            step.entry.update(status=info["status"], folder=info["folder"] or step.entry["folder"], error=info["error"])
            write_ledger(sweep_dir, ledger)
            if info["status"] == "completed":  # drawn here, while the workers train: off their path
                draw_folder_curves(sweep_dir / step.entry["folder"])
        elif event.kind == "retry":
            warnings.warn(f"{event.run}: {info['error']}; it goes on from its folder (attempt {info['attempt']} of {info['attempts']})", RunLostWarning, stacklevel=2)
            return
        progress(event.kind, {"name": event.run, **info})

    if not todo:
        plan(1)
    else:
        backend = backend or _local_backend(sweep, jobs, len(todo))
        _drive(backend, plan_tasks(todo, here, fused, max_group or _even_share(len(todo), backend.slots)), here, record, fail_fast, plan)
    for entry in ledger["runs"]:  # a run whose drawing an interrupted sweep never reached
        if entry["status"] == "completed" and entry["folder"] and not (sweep_dir / entry["folder"] / "curves.png").exists():
            draw_folder_curves(sweep_dir / entry["folder"])
    tuned = (ledger.get("tune") or {}).get("rows") if sweep.tune is not None else None
    result = SweepResult(sweep.name, sweep_dir, tuple(ledger["runs"]), tuple(ledger["removed"]), tuned=tuned)
    if report and not result.unfinished and any(e["folder"] for e in result.runs):
        from .plots import write_report

        comparison, curves = write_report(sweep_dir)
        result = dataclasses.replace(result, comparison=comparison, curves=curves)
        if sweep.tune is not None and any(run.config.train.tensorboard for run in sweep.runs):
            from .board import write_tune_hparams
            from .tuning import tuned_rows

            write_tune_hparams(sweep_dir, tuned_rows(sweep_dir, ledger), sweep.tune.metric)  # (the ledger as just written)
    return result


def _tune(sweep: Sweep, sweep_dir: Path, jobs, backend: Backend | None, fail_fast: bool, progress, fused: bool, max_group: int | None) -> Sweep:
    """A tuned sweep's trials (trials.py), then the sweep of its confirmation runs: each run with its
    row's chosen values."""
    from .trials import check_chosen, run_trials

    old = read_ledger(sweep_dir)
    check_same_sweep(sweep, sweep_dir, old)
    ledger = {"runs": [], "removed": [], **old, **ledger_head(sweep)}
    here = sweep_dir.absolute()

    def drive(backend_now, tasks, record, started):
        _drive(backend_now, tasks, here, record, False, started)  # trials.py decides fail-fast: a diverged trial is a finding

    chosen = run_trials(sweep, sweep_dir, ledger, lambda n: backend or _local_backend(sweep, jobs, n), drive, plan_tasks, progress,
                        fused, max_group, fail_fast)
    check_chosen(sweep, chosen)
    runs = []
    for run, row in zip(sweep.runs, sweep.row_of):
        config = with_values(run.config, chosen[sweep.rows[row].name])
        runs.append(SweepRun(run.name, config, run.labels, run_hash(config)))
    return dataclasses.replace(sweep, runs=tuple(runs))


def _local_backend(sweep: Sweep, jobs: int | None, n_tasks: int) -> Backend:
    from .backends.local import InProcessBackend, ProcessBackend

    jobs, gpus = _local_jobs(sweep, jobs, n_tasks)
    return InProcessBackend() if jobs == 1 else ProcessBackend(worker_slots(jobs, cpu_count(), gpus))


def _local_jobs(sweep: Sweep, jobs: int | None, n_tasks: int) -> tuple[int, int]:
    """(worker processes, GPUs) of a local sweep of `n_tasks` runs."""
    gpus = _gpu_count(sweep) if jobs is None or jobs > 1 else 0
    if jobs is None:  # a run computes with one thread on a CPU (threads.py): one worker per core fills them
        jobs = gpus if gpus else cpu_count()
    return max(1, min(jobs, n_tasks)), gpus


def _even_share(runs: int, workers: int) -> int:
    """The default fused group size: the runs shared evenly between the workers, one group each."""
    return math.ceil(runs / max(1, workers))


def dry_run_tasks(sweep: Sweep, steps: list[Step], sweep_dir: Path, jobs: int | None, max_group: int | None) -> list[Task]:
    """The fused tasks a local sweep of these steps would train (what --dry-run shows)."""
    todo = [s for s in steps if s.action != "skip"]
    workers, _ = _local_jobs(sweep, jobs, len(todo))
    return plan_tasks(todo, sweep_dir, True, max_group or _even_share(len(todo), workers))


def plan_tasks(steps: list[Step], sweep_dir: Path, fused: bool = True, max_group: int | None = None) -> list[Task]:
    """The steps to train as tasks, the costliest first (so that no worker is left with a long
    task while the others idle): one run each, or with `fused`, one task per group of runs that
    train as one stacked model (planning.plan_groups: same layer shapes, data, batch size and epochs,
    split to fit the device's memory and `max_group`); a run that fuses with nothing is a task alone."""
    from .planning import plan_groups, training_cost

    configs = [step.run.config for step in steps]
    groups = plan_groups(configs, max_group) if fused else [[i] for i in range(len(steps))]
    groups.sort(key=lambda group: -sum(training_cost(configs[i]) for i in group))  # (stable: ties keep the plan's order)
    return [Task(tuple(_spec(steps[i], sweep_dir) for i in group), sweep_dir, fused=len(group) > 1) for group in groups]


def _spec(step: Step, sweep_dir: Path) -> RunSpec:
    folder = sweep_dir / step.entry["folder"] if step.action in ("resume", "restart") else None
    return RunSpec(step.run.name, step.entry["config"], folder, step.action == "resume")


def _drive(backend: Backend, tasks: list[Task], sweep_dir: Path, record, fail_fast: bool, started) -> None:
    """Hand the tasks to the backend, at most `backend.slots` at a time, and pass its events to
    `record` until every submitted run has ended. After a failure with `fail_fast`, nothing more is
    submitted (runs in training finish). Ctrl-C or SIGTERM asks the backend to stop (its runs save
    as interrupted) and waits up to WORKER_STOP_SECONDS for them; a second one stops waiting. The
    interrupt is then re-raised, as it came."""
    pending = deque(tasks)
    running: dict[str, Task] = {}  # run name -> its task, for the runs submitted and not ended
    state = {"stopping": False}

    def on_event(event: Event) -> None:
        if event.run not in running:
            return  # not a run of ours (a backend's stray event)
        record(event)
        if event.kind == "run_end":
            del running[event.run]
            state["stopping"] = state["stopping"] or (fail_fast and event.info.status in FAILURES)

    interrupt = deadline = None
    try:
        backend.start(sweep_dir, on_event)
        started(backend.slots)
        while True:
            try:
                while pending and not state["stopping"] and len(set(map(id, running.values()))) < backend.slots:
                    task = pending.popleft()
                    running.update((name, task) for name in task.names)
                    backend.submit(task)
                if not running or (deadline and time.time() > deadline):
                    break
                backend.poll(0.5)
            except KeyboardInterrupt as e:
                if interrupt is not None:
                    break  # a second Ctrl-C: don't wait; the ledger resumes `running` runs all the same
                interrupt, state["stopping"] = e, True
                deadline = time.time() + WORKER_STOP_SECONDS
                backend.stop()
    finally:
        backend.close()
    if interrupt is not None:
        raise interrupt


def _gpu_count(sweep: Sweep) -> int:
    if not any(r.config.train.device in ("auto", "cuda") for r in sweep.runs):
        return 0
    import torch

    return torch.cuda.device_count()
