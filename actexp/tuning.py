"""Tuning: each row of a sweep at its own best setting, found by an Optuna study.

A sweep file's `tune:` section (or `--tune KEY=LOW:HIGH[:log]`) names the keys to tune and their
ranges. Every row of the sweep (a config of a folder, a grid point of the keys that are not tuned)
gets its own study. The sweep's driver asks each study for a batch of trials, trains the batch as
fused groups like any other runs, and tells each study how its trials ended; a trial's run reports
each epoch's validation figure to its trial and leaves its group when the study's pruner says so
(status `pruned`). Trials train on validation data only: their seeds are TRIAL_SEED_BASE + the
trial's number, never a sweep's seed, and they never load the test split. When every study has its
trials, each row's chosen values train again on the sweep's seeds (the confirmation runs), and only
those are compared.

The studies live in an Optuna RDB storage: a SQLite file in the sweep folder unless `storage:` names
a database URL (several machines sharing one study). The sweep's ledger keeps which trial trains in
which folder, so the same command resumes a tune after Ctrl-C or kill -9 and no trial is run twice.
Nothing here imports optuna or torch at import: `actexp --help`, `validate` and `compare` stay fast.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from .config import _did_you_mean
from .errors import ConfigError

TRIAL_SEED_BASE = 1_000_000  # trials' train.seed = this + trial number; a tuned sweep's seeds stay below it
STORAGE_FILE = "tune.db"
OPTIONS = ("trials", "batch", "sampler", "pruner", "metric", "storage", "seed")
MAX_TRIALS = 10_000
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
INSTALL = "pip install 'actexp[tune]'"


@dataclass(frozen=True)
class Param:
    """One tuned key: a numeric range (log-spaced with `log`; whole numbers with `integer`) or a
    list of `choices`."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def describe(self) -> str:
        if self.choices:
            return f"{self.key} in {{{', '.join(map(str, self.choices))}}}"
        return f"{self.key} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class Tune:
    params: tuple[Param, ...]
    trials: int = 16  # per row
    batch: int | None = None  # trials asked per row at once (None: a quarter of `trials`)
    sampler: str = "qmc"  # the same points for every row: no row luckier in where it looked
    pruner: str = "hyperband"
    metric: str = "val_acc"
    storage: str | None = None  # a database URL; None: SQLite in the sweep folder
    seed: int = 0  # of the samplers (each row's sampler is seeded from this and the row's name)
    keys: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self):
        object.__setattr__(self, "keys", tuple(p.key for p in self.params))

    @property
    def per_batch(self) -> int:
        return self.batch or max(1, math.ceil(self.trials / 4))

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def describe(self) -> str:
        return f"{', '.join(p.describe() for p in self.params)}; {self.trials} trials per row ({self.sampler}, {self.pruner} pruning, by {self.metric})"


def to_plain(tune: Tune) -> dict:
    """The tune as the ledger keeps it (its storage URL left out: it may hold a password)."""
    return {"params": [{"key": p.key, "low": p.low, "high": p.high, "log": p.log, "integer": p.integer, "choices": list(p.choices)} for p in tune.params],
            "trials": tune.trials, "sampler": tune.sampler, "pruner": tune.pruner, "metric": tune.metric}


# ----------------------------------------------------------------------------- reading a tune


def parse_section(raw, where: str) -> Tune:
    """A sweep file's `tune:` mapping: dotted keys with their range ([low, high], [low, high, log],
    or {choices: [...]}) and the options trials, batch, sampler, pruner, metric, storage, seed."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a mapping of keys to tune and their ranges, e.g. {{optim.lr: [1.0e-4, 1.0, log], trials: 16}}")
    params, options = [], {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: {key!r}: expected a dotted key (optim.lr) or one of {', '.join(OPTIONS)}")
        if "." in key:
            params.append(_param(key, value, f"{where}.{key}"))
        elif key in OPTIONS:
            options[key] = value
        else:
            raise ConfigError(f"{where}.{key}: unknown option{_did_you_mean(key, OPTIONS)}; options: {', '.join(OPTIONS)}, or a dotted key to tune")
    return _tune(params, options, where)


def parse_options(items: list[str]) -> list[Param]:
    """The command line's --tune KEY=LOW:HIGH[:log] (repeatable)."""
    params = []
    for item in items:
        key, sep, text = item.partition("=")
        key, parts = key.strip(), text.split(":")
        usage = f"--tune {item[:80]!r}: expected KEY=LOW:HIGH or KEY=LOW:HIGH:log, e.g. --tune optim.lr=1e-4:1:log"
        if not sep or "." not in key or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
            raise ConfigError(usage)
        try:
            low, high = (_number(p.strip()) for p in parts[:2])
        except ValueError:
            raise ConfigError(usage) from None
        params.append(_param(key, [low, high] + (["log"] if len(parts) == 3 else []), f"--tune {key}"))
    return params


def merge(file_tune: Tune | None, params: list[Param], trials: int | None = None, storage: str | None = None) -> Tune | None:
    """A sweep file's tune (or none) with the command line's --tune keys added (a key in both is
    refused) and its --trials/--storage in place of the file's."""
    changes = {k: v for k, v in (("trials", trials), ("storage", storage)) if v is not None}
    if file_tune is None and not params:
        if changes:
            raise ConfigError("--trials and --storage go with a tune; give the keys to tune, e.g. --tune optim.lr=1e-4:1:log")
        return None
    known = file_tune.keys if file_tune else ()
    for p in params:
        if p.key in known:
            raise ConfigError(f"--tune {p.key}: the sweep file tunes {p.key} already; change its range there")
    base = _options(file_tune) if file_tune else {}
    return _tune(list(file_tune.params if file_tune else ()) + list(params), {**base, **changes}, "--tune")


def _options(tune: Tune) -> dict:
    return {"trials": tune.trials, "batch": tune.batch, "sampler": tune.sampler, "pruner": tune.pruner, "metric": tune.metric,
            "storage": tune.storage, "seed": tune.seed}


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _param(key: str, value, where: str) -> Param:
    if isinstance(value, dict) and set(value) == {"choices"}:
        choices = value["choices"]
        if not isinstance(choices, list) or not 2 <= len(choices) <= 100 or not all(isinstance(c, (str, int, float, bool)) for c in choices):
            raise ConfigError(f"{where}: choices: expected a list of 2 to 100 plain values, e.g. {{choices: [sgd, adam]}}")
        return Param(key, choices=tuple(choices))
    usage = f"{where}: expected [LOW, HIGH], [LOW, HIGH, log] or {{choices: [...]}}, e.g. [1.0e-4, 1.0, log]"
    if not isinstance(value, list) or len(value) not in (2, 3) or (len(value) == 3 and value[2] != "log"):
        raise ConfigError(usage)
    low, high = value[:2]
    if not all(type(v) in (int, float) and math.isfinite(v) and abs(v) < 1e15 for v in (low, high)):
        raise ConfigError(usage)
    log = len(value) == 3
    if not low < high:
        raise ConfigError(f"{where}: the low end ({low}) must be below the high end ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs a low end above 0 (got {low})")
    return Param(key, float(low) if not isinstance(low, int) or not isinstance(high, int) else low,
                 float(high) if not isinstance(low, int) or not isinstance(high, int) else high,
                 log, isinstance(low, int) and isinstance(high, int))


def _tune(params: list[Param], options: dict, where: str) -> Tune:
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: a key is tuned twice; give each key one range")
    if not params:
        raise ConfigError(f"{where}: no key to tune; add one with its range, e.g. optim.lr: [1.0e-4, 1.0, log]")
    trials, batch = options.get("trials", 16), options.get("batch")
    if type(trials) is not int or not 1 <= trials <= MAX_TRIALS:
        raise ConfigError(f"{where}: trials: expected a whole number of trials per row from 1 to {MAX_TRIALS:,}, got {trials!r}")
    if batch is not None and (type(batch) is not int or not 1 <= batch <= trials):
        raise ConfigError(f"{where}: batch: expected a whole number of trials asked at once per row, from 1 to trials ({trials}), got {batch!r}")
    sampler, pruner, metric = options.get("sampler", "qmc"), options.get("pruner", "hyperband"), options.get("metric", "val_acc")
    for name, value, choices in (("sampler", sampler, SAMPLERS), ("pruner", pruner, PRUNERS), ("metric", metric, METRICS)):
        if value not in choices:
            raise ConfigError(f"{where}: {name}: {value!r} is not one{_did_you_mean(value, choices)}; choose from {', '.join(choices)}")
    if sampler == "grid" and any(not p.choices and not p.integer for p in params):
        raise ConfigError(f"{where}: sampler: grid needs {{choices: [...]}} or whole-number ranges; use tpe, random or qmc for a continuous range")
    storage, seed = options.get("storage"), options.get("seed", 0)
    if storage is not None and (not isinstance(storage, str) or "://" not in storage or len(storage) > 2000):
        raise ConfigError(f"{where}: storage: expected a database URL such as postgresql://user@host/db or sqlite:///path/tune.db")
    if type(seed) is not int or not 0 <= seed < 2**31:
        raise ConfigError(f"{where}: seed: expected a whole number from 0 to 2**31 - 1, got {seed!r}")
    return Tune(tuple(params), trials, batch, sampler, pruner, metric, storage, seed)


# ----------------------------------------------------------------------------- optuna


def require_optuna():
    """The optuna module, or ConfigError (exit 2) with the install line."""
    try:
        import optuna
    except ImportError as e:
        raise ConfigError(f"tuning needs Optuna, which is not installed; {INSTALL}") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(name: str, seed: int, params: tuple[Param, ...]):
    optuna = require_optuna()
    if name == "grid":
        space = {p.key: list(p.choices) if p.choices else list(range(int(p.low), int(p.high) + 1)) for p in params}
        return optuna.samplers.GridSampler(space, seed=seed)
    if name == "qmc":
        import warnings

        with warnings.catch_warnings():  # "experimental" since Optuna 3.0: a note for Optuna's developers, not for ours
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_independent_sampling=False)
    return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[name](seed=seed)


SAMPLERS = ("qmc", "tpe", "random", "grid")
# A fused group reports every member's epoch before any asks whether to stop: the pruners must not
# wait for a finished trial (SuccessiveHalving's min_resource="auto" and the median pruner's warm-up
# do), or nothing is pruned in the first batch.
PRUNERS = {
    "hyperband": lambda optuna, epochs: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
    "successive_halving": lambda optuna, epochs: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
    "median": lambda optuna, epochs: optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0),
    "none": lambda optuna, epochs: optuna.pruners.NopPruner(),
}


def storage_url(tune: Tune, sweep_dir: Path) -> str:
    return tune.storage or f"sqlite:///{(Path(sweep_dir) / STORAGE_FILE).absolute()}"


def study_name(sweep_name: str, row: str) -> str:
    return f"{sweep_name}/{row}"


def row_seed(tune: Tune, row: str) -> int:
    """Each row's sampler seed: the same command asks the same trials. QMC's is the tune's own, so
    that every row tries the same points (common values: no row is luckier in where it looked)."""
    if tune.sampler == "qmc":
        return tune.seed
    return (tune.seed + int.from_bytes(hashlib.sha256(row.encode()).digest()[:4], "big")) % 2**31


def open_study(tune: Tune, storage: str, name: str, row: str, epochs: int):
    optuna = require_optuna()
    try:
        return optuna.create_study(study_name=name, storage=_storage(optuna, storage), load_if_exists=True, direction=tune.direction,
                                   sampler=_sampler(tune.sampler, row_seed(tune, row), tune.params), pruner=PRUNERS[tune.pruner](optuna, epochs))
    except ImportError as e:  # a database URL whose driver is not installed (psycopg2, pymysql)
        raise ConfigError(f"tune storage: {e}; install the database driver, or leave storage out (SQLite in the sweep folder)") from e


def _storage(optuna, url: str):
    # Workers report to the same SQLite file at once: wait for its lock instead of failing.
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def suggest(trial, params: tuple[Param, ...]) -> dict:
    values = {}
    for p in params:
        if p.choices:
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.integer:
            values[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log)
    return values


def tuned_rows(sweep_dir: Path, ledger: dict) -> list:
    """A tuned sweep's rows as budget.TunedRow, from its ledger and its trials' folders (the files
    are the contract: no study is opened). [] for a sweep that is not tuned. A trial not ended yet
    is left out; a ledger or folder that does not hold what a tune writes is skipped with a warning."""
    import warnings

    from .budget import Trial, TunedRow
    from .runs import DamagedFile, RunFolderWarning, read_summary

    tune = ledger.get("tune")
    if not isinstance(tune, dict):
        return []
    try:
        spec = tune["spec"]
        metric = spec["metric"] if spec["metric"] in METRICS else "val_acc"
        ranges = {p["key"]: (float(p["low"]), float(p["high"]), bool(p["log"])) for p in spec["params"] if not p.get("choices")}
        chosen = {str(row): dict(info.get("chosen") or {}) for row, info in (tune.get("rows") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        warnings.warn(f"{sweep_dir}: the ledger's tune does not say what a tune writes ({e!r:.80}); its figures are left out", RunFolderWarning, stacklevel=2)
        return []
    trials: dict[str, list] = {}
    for entry in ledger.get("trials", []):
        try:
            summary = read_summary(sweep_dir / entry["folder"]) if entry.get("folder") else {}
        except DamagedFile as e:
            warnings.warn(f"{e}; that trial is left out", RunFolderWarning, stacklevel=2)
            continue
        status = summary.get("status", entry["status"])
        state = {"completed": "completed", "pruned": "pruned", "diverged": "failed", "failed": "failed"}.get(status)
        if state is None or not isinstance(entry.get("params"), dict) or type(entry.get("number")) is not int:
            continue
        score = summary.get(metric if state == "completed" else f"best_{metric}") if state != "failed" else None
        epochs = summary.get("epochs_completed")
        trials.setdefault(str(entry.get("row")), []).append(
            Trial(entry["number"], dict(entry["params"]), float(score) if isinstance(score, (int, float)) else math.nan, state,
                  epochs if type(epochs) is int else 0))
    return [TunedRow(row, tuple(sorted(found, key=lambda t: t.number)), chosen.get(row, {}), ranges, metric == "val_acc")
            for row, found in trials.items()]


@dataclass(frozen=True)
class TunedReport:
    """What compare says about a tuned sweep: the protocol line above the table, the notes under it
    (chosen values on an edge, the budget), and each confirmation run's edge flags by its folder
    (relative to the sweep folder) for the table's value cells."""

    protocol: str
    notes: tuple[str, ...]
    edges: dict  # run folder -> {key: "low" | "high"}


def tuned_report(sweep_dir: Path, ledger: dict) -> TunedReport | None:
    """The TunedReport of a tuned sweep folder, from its ledger and trials' folders; None when the
    sweep is not tuned (or its ledger does not say what a tune writes)."""
    from .budget import budget_sentence, check_rows, leadership, on_edge

    rows = [row for row in tuned_rows(sweep_dir, ledger) if row.trials]
    spec = (ledger.get("tune") or {}).get("spec")
    if not rows or not isinstance(spec, dict):
        return None
    keys = [p.get("key") for p in spec.get("params", []) if isinstance(p, dict)]
    ranges = "; ".join(_range_words(p) for p in spec.get("params", []) if isinstance(p, dict))
    counts = sorted({len(row.trials) for row in rows})
    trials = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    seeds = sorted({e.get("config", {}).get("train", {}).get("seed") for e in ledger.get("runs", []) if isinstance(e.get("config"), dict)} - {None})
    protocol = (f"each row at its tuned {', '.join(map(str, keys))} ({trials} trials per row, {ranges}; {spec.get('sampler')} sampler, "
                f"{spec.get('pruner')} pruning; chosen on {spec.get('metric')}), retrained on {len(seeds)} fresh seeds: only these runs are compared")
    flags = {row.label: on_edge(row) for row in rows}
    notes = [f"{row}: {key} was chosen on the {side} edge of its range ({_value(dict(r.chosen).get(key))}): "
             f"the best may lie beyond it; widen the range and tune again."
             for r in rows for row in [r.label] for key, side in flags[row].items()]
    if len(rows) > 1 and check_rows(rows):
        sentence = budget_sentence(leadership(rows))
        if sentence:
            notes.append(sentence)
    edges = {e["folder"]: flags.get(e.get("row"), {}) for e in ledger.get("runs", []) if e.get("folder") and flags.get(e.get("row"))}
    return TunedReport(protocol, tuple(notes), edges)


def _range_words(param: dict) -> str:
    if param.get("choices"):
        return f"{param.get('key')} in {{{', '.join(map(str, param['choices']))}}}"
    return f"{param.get('key')} in [{_value(param.get('low'))}, {_value(param.get('high'))}]{' log' if param.get('log') else ''}"


def _value(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def tuned_plan_words(sweep) -> str:
    """What a tuned sweep will do, for --dry-run."""
    tune = sweep.tune
    seeds = sorted({run.config.train.seed for run in sweep.runs})
    return (f"tune {tune.describe()}: {len(sweep.rows)} rows x {tune.trials} trials (in batches of {tune.per_batch} per row, seeds from "
            f"{TRIAL_SEED_BASE:,}), then {len(sweep.runs)} confirmation runs (each row's chosen values on seeds {', '.join(map(str, seeds))}); "
            f"the table below lists the confirmation runs, at the base's values until the trials have chosen")


def chosen_lines(rows: dict) -> list[str]:
    """The end of a tuned sweep: each row's chosen values, and a flag with the fix where a value
    lies on the edge of its range (budget.on_edge)."""
    lines = []
    for row, info in rows.items():
        chosen = info.get("chosen") or {}
        values = ", ".join(f"{k}={_value(v)}" for k, v in chosen.items())
        edges = info.get("edge") or {}
        flag = "".join(f"; {k} on the {side} edge of its range: the best may lie beyond it, widen the range" for k, side in edges.items())
        lines.append(f"tuned {row}: {values} (best of {info.get('trials', '?')} trials){flag}")
    return lines


# ----------------------------------------------------------------------------- a trial in its worker


@dataclass(frozen=True)
class TrialLink:
    """What a trial's run needs to report to its study: plain data, carried by the task."""

    storage: str
    study: str
    trial_id: int
    number: int
    row: str
    metric: str
    pruner: str
    epochs: int
    params: dict

    def as_summary(self) -> dict:
        return {"study": self.study, "number": self.number, "row": self.row, "metric": self.metric, "params": dict(self.params)}


class TrialReporter:
    """The worker's side of a trial: report an epoch's figure, then ask whether to stop."""

    def __init__(self, link: TrialLink):
        optuna = require_optuna()
        self.link = link
        study = optuna.load_study(study_name=link.study, storage=_storage(optuna, link.storage), pruner=PRUNERS[link.pruner](optuna, link.epochs))
        self.trial = optuna.trial.Trial(study, link.trial_id)

    def report(self, record: dict) -> None:
        value = record[self.link.metric]
        if value is not None and math.isfinite(value):
            self.trial.report(float(value), record["epoch"])

    def should_prune(self) -> bool:
        return self.trial.should_prune()
