"""The trials stage of a tuned sweep: ask each row's study for trials, train them, tell the studies.

Trials go in batches: each row's study is asked for `tune.per_batch` trials at once, the batch trains
as fused groups (trials of many rows together) on the sweep's backend, and each trial's end is told
to its study before the next batch is asked, so that the sampler learns from every batch. The
ledger's `trials` list holds each trial (its row, number, folder and status) as soon as it is
asked: a sweep stopped at any point resumes its trials from their folders (a trial's checkpoint, or
a restart in its own folder) and never asks a study for a trial it has already run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .backends import RunSpec, _relative
from .config import config_to_dict
from .errors import ActexpError, ConfigError, DamagedFile, WriteFailed
from .runs import CHECKPOINTS, PRUNED, RESULTS, new_run_dir, read_summary, resolves_inside, write_ledger
from .budget import on_edge
from .tuning import STORAGE_FILE, TRIAL_SEED_BASE, TrialLink, open_study, require_optuna, storage_url, study_name, suggest, to_plain, tuned_rows
from .varying import SEED_KEY

TRIALS_DIR = "trials"  # trial run folders, inside the sweep folder
WORKER_DIED = "the worker process died"  # backends.local's outcome of a run whose worker was killed
MAX_ATTEMPTS = 3  # a trial whose worker dies is resumed from its folder this many times in all
ENDED = RESULTS + (PRUNED, "failed")


def run_trials(sweep, sweep_dir: Path, ledger: dict, backend_for, drive, plan_tasks, progress, fused: bool, max_group: int | None,
               fail_fast: bool) -> dict:
    """Run (or resume) every row's trials; returns each row's chosen values (None where no trial of
    the row completed). `backend_for(n)` gives
    the backend for n runs, `drive(backend, tasks, record)` trains tasks (sweep._drive) and
    `plan_tasks(steps, sweep_dir, fused, max_group)` groups them. KeyboardInterrupt passes through,
    the ledger saved."""
    from .events import SweepPlan
    from .sweep import Step

    optuna = require_optuna()
    tune = sweep.tune
    rows = {row.name: row for row in sweep.rows}
    check_same_tune(tune, ledger.get("tune"), sweep_dir)
    entries = _trial_entries(ledger, rows, tune, sweep_dir)
    if tune.storage is None:
        _check_storage_files(sweep_dir)
    storage = storage_url(tune, sweep_dir)
    studies = {row.name: open_study(tune, storage, study_name(sweep.name, row.name), row.name, row.config.train.epochs) for row in sweep.rows}
    ledger["trials"] = entries
    ledger["tune"] = {"spec": to_plain(tune), "storage": "database" if tune.storage else None, "rows": {}}
    here = sweep_dir.absolute()
    _reconcile(studies, entries, sweep_dir, optuna, tune.metric)
    write_ledger(sweep_dir, ledger)
    attempts: dict[str, int] = {}
    failed_fast = False
    while not failed_fast:
        todo = [e for e in entries if _needs_training(e, attempts)]
        for row in sweep.rows:
            asked = sum(e["row"] == row.name for e in entries)
            for _ in range(min(tune.per_batch, tune.trials - asked)):
                entries.append(_ask(studies[row.name], row, sweep_dir, tune))
                todo.append(entries[-1])
        if not todo:
            break
        write_ledger(sweep_dir, ledger)
        steps = []
        for entry in todo:
            attempts[entry["name"]] = attempts.get(entry["name"], 0) + 1
            resume = (sweep_dir / entry["folder"] / CHECKPOINTS / "last.pt").exists()
            run = _trial_run(entry, rows)
            entry["config"] = config_to_dict(run.config)
            steps.append(Step(run, "resume" if resume else "new" if entry["status"] == "pending" else "restart", entry))
        by_name = {step.run.name: step for step in steps}

        def record(event, by_name=by_name):
            entry, info = by_name[event.run].entry, event.info
            if event.kind == "run_start":
                entry.update(status="running", error=None)
                write_ledger(sweep_dir, ledger)
            elif event.kind == "run_end":
                info = dataclasses.asdict(info)
                entry.update(status=info["status"], error=info["error"])
                if info["status"] not in ("interrupted", "pending") and not _retried(entry, attempts):
                    _tell(studies[entry["row"]], entry, sweep_dir, optuna, tune.metric)
                write_ledger(sweep_dir, ledger)
            elif event.kind == "retry":
                return
            progress(event.kind, {"name": event.run, **info})

        backend = backend_for(len(steps))
        chunks = whole_rows(steps, backend.slots) if max_group is None else [steps]
        tasks = [dataclasses.replace(task, runs=tuple(_with_link(spec, by_name[spec.name].entry, here, studies, storage, tune) for spec in task.runs))
                 for chunk in chunks for task in plan_tasks(chunk, here, fused, max_group)]
        done = sum(e["status"] in ENDED for e in entries) - sum(e["status"] in ENDED for e in todo)
        stage = f"trials {done + 1}-{done + len(steps)} of {tune.trials * len(rows)}"
        drive(backend, tasks, record, lambda slots: progress("plan", SweepPlan(sweep=sweep, steps=steps, dir=sweep_dir, removed=[], jobs=slots, stage=stage)))
        # A diverged trial is a finding (that rate diverges), not a failure to stop for.
        failed_fast = fail_fast and any(e["status"] == "failed" for e in todo)
    chosen = {row.name: _chosen(studies[row.name]) for row in sweep.rows}
    for row in sweep.rows:
        ledger["tune"]["rows"][row.name] = {"study": study_name(sweep.name, row.name), "chosen": chosen[row.name],
                                            "trials": sum(e["row"] == row.name for e in entries)}
    for tuned in tuned_rows(sweep_dir, ledger):
        if tuned.label in ledger["tune"]["rows"] and tuned.chosen:
            ledger["tune"]["rows"][tuned.label]["edge"] = on_edge(tuned)
    write_ledger(sweep_dir, ledger)
    return chosen


def _trial_entries(ledger: dict, rows: dict, tune, sweep_dir: Path) -> list[dict]:
    """The ledger's trials of the sweep's rows (a row no longer in the sweep keeps its trials in the
    studies, not in the ledger); DamagedFile, before anything trains, for an entry that does not
    hold what a trial's does (runs.read_ledger has checked its name, status and folder)."""
    entries = []
    for number, entry in enumerate(ledger.get("trials", []), 1):
        if entry.get("row") not in rows:
            continue
        params = entry.get("params")
        if not (type(entry.get("number")) is int and type(entry.get("trial_id")) is int and isinstance(entry.get("folder"), str)
                and isinstance(params, dict) and set(params) == set(tune.keys)
                and all(type(v) in (int, float, str, bool) for v in params.values())):
            raise DamagedFile(f"{sweep_dir / 'sweep.json'}: trials entry {number} ({str(entry.get('name'))[:80]}) does not hold a trial's number, "
                              f"study id, folder and values of {', '.join(tune.keys)}; move the file away to start the tune afresh (run folders are kept)")
        entries.append(entry)
    return entries


def _check_storage_files(sweep_dir: Path) -> None:
    """WriteFailed when the SQLite file of the studies (or one SQLite writes beside it) is a link:
    SQLite would write through it, out of the sweep folder."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        path = sweep_dir / (STORAGE_FILE + suffix)
        if path.is_symlink() or (path.exists() and not resolves_inside(path, sweep_dir)):
            raise WriteFailed(f"{path}: is a link (to {os.readlink(path) if path.is_symlink() else path.resolve()}); actexp writes only inside its runs "
                              f"folder: remove the link")


def check_same_tune(tune, recorded, sweep_dir: Path) -> None:
    """ConfigError when the sweep folder's trials were asked under another tune (other ranges,
    sampler, pruner or metric): its studies' trials would count toward this tune and could be
    chosen. More or fewer trials per row are the same tune (more extends the studies)."""
    old = recorded.get("spec") if isinstance(recorded, dict) else None
    if not isinstance(old, dict):
        return
    new = to_plain(tune)
    changed = [key for key in ("params", "sampler", "pruner", "metric") if old.get(key) != new[key]]
    if changed:
        raise ConfigError(f"{sweep_dir} holds the trials of another tune (its {', '.join(changed)} differ); give this tune its own folder "
                          f"(--name NAME), or move that folder away")


def whole_rows(steps: list, slots: int) -> list[list]:
    """A batch's steps in at most `slots` chunks of whole rows, near-equal in trials, each then
    planned into groups on its own: a row's trials train in one group, in lockstep, and its study's
    pruner sees at each epoch the same trials whatever the machine's load (the earlier batches' and
    its group's). A row split between two groups running side by side would see the other group's
    reports or not, as their speeds fall, and prune otherwise."""
    rows: dict[str, list] = {}
    for step in steps:
        rows.setdefault(step.entry["row"], []).append(step)
    share = -(-len(steps) // max(1, slots))
    chunks, chunk = [], []
    for row_steps in rows.values():
        chunk += row_steps
        if len(chunk) >= share:
            chunks.append(chunk)
            chunk = []
    return chunks + ([chunk] if chunk else [])


def _ask(study, row, sweep_dir: Path, tune) -> dict:
    trial = study.ask()
    values = suggest(trial, tune.params)
    name = f"{row.name},trial={trial.number}"
    folder = new_run_dir(sweep_dir / TRIALS_DIR, name)
    return {"name": name, "row": row.name, "number": trial.number, "trial_id": trial._trial_id, "params": values,
            "status": "pending", "folder": _relative(folder.absolute(), sweep_dir.absolute()), "error": None}


def _trial_run(entry: dict, rows: dict):
    from .sweep import SweepRun, run_hash, with_values

    row = rows[entry["row"]]
    config = with_values(row.config, {**entry["params"], SEED_KEY: TRIAL_SEED_BASE + entry["number"]}, entry["name"])
    return SweepRun(entry["name"], config, {**row.labels, **{k: str(v) for k, v in entry["params"].items()}}, run_hash(config))


def _with_link(spec: RunSpec, entry: dict, here: Path, studies: dict, storage: str, tune) -> RunSpec:
    """The run of a trial, in its own folder (made when it was asked), with what it reports to."""
    from .config import config_from_dict

    epochs = config_from_dict(spec.config).train.epochs
    link = TrialLink(storage, studies[entry["row"]].study_name, entry["trial_id"], entry["number"], entry["row"], tune.metric, tune.pruner, epochs,
                     dict(entry["params"]))
    return dataclasses.replace(spec, trial=link, folder=here / entry["folder"])


def _needs_training(entry: dict, attempts: dict) -> bool:
    if entry["status"] in RESULTS + (PRUNED,):
        return False
    if entry["status"] == "failed":
        return _retried(entry, attempts)
    return True  # pending, running (a sweep that was killed), interrupted


def _retried(entry: dict, attempts: dict) -> bool:
    """A trial whose worker died (killed from outside) goes on from its folder, a few times at most;
    any other failure is the trial's result."""
    return entry["status"] == "failed" and (entry.get("error") or "").startswith(WORKER_DIED) and attempts.get(entry["name"], 0) < MAX_ATTEMPTS


def _reconcile(studies: dict, entries: list[dict], sweep_dir: Path, optuna, metric: str) -> None:
    """Bring the ledger and the studies in step after a sweep that was stopped: a trial's folder is
    the truth about how it ended, and a study's trial that ended is told so (a sweep killed between a
    run's end and its tell). A study's running trial that the ledger does not hold (killed between
    ask and the ledger's write) never trained: it is failed, and not counted."""
    known = {(e["row"], e["number"]) for e in entries}
    for entry in entries:
        summary = read_summary(sweep_dir / entry["folder"]) if entry.get("folder") else {}
        if summary.get("status") in ENDED:
            entry["status"], entry["error"] = summary["status"], summary.get("error")
        elif entry["status"] not in ("failed",):
            entry["status"] = "interrupted" if entry["status"] == "running" else entry["status"]
        if entry["status"] in ENDED and not (entry["status"] == "failed" and (entry.get("error") or "").startswith(WORKER_DIED)):
            _tell(studies[entry["row"]], entry, sweep_dir, optuna, metric)
    for row, study in studies.items():
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if (row, trial.number) not in known:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def _tell(study, entry: dict, sweep_dir: Path, optuna, metric: str) -> None:
    state = optuna.trial.TrialState
    trial = _frozen(study, entry["number"])
    if trial is None or trial.state.is_finished():
        return
    status = entry["status"]
    if status == "completed":
        value = read_summary(sweep_dir / entry["folder"]).get(metric)
        if isinstance(value, (int, float)):
            study.tell(trial.number, float(value), skip_if_finished=True)
            return
    if status == PRUNED:
        study.tell(trial.number, state=state.PRUNED, skip_if_finished=True)
        return
    study.tell(trial.number, state=state.FAIL, skip_if_finished=True)  # diverged, failed


def _frozen(study, number: int):
    trials = study.get_trials(deepcopy=False)
    return next((t for t in trials if t.number == number), None)


def _chosen(study) -> dict | None:
    try:
        return dict(study.best_trial.params)
    except ValueError:  # no completed trial
        return None


def check_chosen(sweep, chosen: dict) -> None:
    """ActexpError naming the rows that have no chosen values (every trial diverged, failed or was
    pruned), with the way out."""
    missing = [row for row, values in chosen.items() if values is None]
    if missing:
        raise ActexpError(f"tune: no trial of {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} completed (each diverged, failed or was pruned); "
                          f"lower or widen the range of {', '.join(sweep.tune.keys)}, or give more trials, then run the same command again")
