"""The figures of the README's classic-experiments table, read from run folders.

    python bench/seed_figures.py RUNS_DIR
    python bench/seed_figures.py --seeds SWEEP_DIR

For every run below RUNS_DIR (the latest per name): the data it trained on, test accuracy,
epochs, the initial validation loss (epoch 0), layer 1's gradient ratio at epoch 0, and at the
last epoch the largest dead and saturated fractions over the hidden layers, plus its warnings.

--seeds: a markdown table of the runs of a sweep with several seeds (bench/seeds.sh's
seed_configs), one row per config: test accuracy, mean ± sample sd over its seeds that completed,
n, each seed's value, and how many diverged.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actexp.config import load_config  # noqa: E402
from actexp.diagnostics import layer_values  # noqa: E402
from actexp.runs import find_runs, read_history, read_summary  # noqa: E402
from actexp.stats import summarize  # noqa: E402


def figures(run: Path) -> dict:
    summary, records = read_summary(run), read_history(run)
    last = records[-1] if records else {}
    hidden = [row for row in last.get("layers", ()) if row["layer"] != "output"]
    ratio0 = dict(layer_values(records, 1, "grad_ratio")).get(0)
    initial = records[0].get("val_loss") if records and records[0]["epoch"] == 0 else None
    return {
        "name": summary.get("name"),
        "data": f"{summary['data']['dataset']} ({summary['data']['n_train']} train / {summary['data']['n_test']} test)",
        "status": summary.get("status"),
        "test_acc": summary.get("test_acc"),
        "epochs": summary.get("epochs_completed"),
        "val_loss_epoch0": initial,
        "grad_ratio_epoch0": ratio0,
        "dead_last": max((row["dead_fraction"] for row in hidden), default=None),
        "saturated_last": max((row["saturated_fraction"] for row in hidden), default=None),
        "warnings": summary.get("warnings", []),
        "run": str(run),
    }


def seed_table(sweep: str) -> None:
    latest = {}
    for run in find_runs(sweep):
        latest[run.parent.name] = run  # find_runs is oldest first
    rows: dict[str, list] = {}
    for run in latest.values():
        summary, config = read_summary(run), load_config(run / "config.yaml")
        # a sweep names its runs by what varies: "CONFIG,seed=N", or "seed=N" when one config is swept
        name = re.sub(r"(^|,)seed=\d+", "", summary["name"]) or Path(sweep).name
        rows.setdefault(name, []).append((config.train.seed, summary, config))
    print("| config | data (train / test) | inputs | epochs | n | test accuracy, mean ± sd | per seed | not completed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(rows):
        runs = sorted(rows[name], key=lambda r: r[0])
        completed = [(seed, s) for seed, s, _ in runs if s.get("status") == "completed"]
        stat = summarize([s["test_acc"] for _, s in completed])
        mean = "—" if stat.n == 0 else f"{stat.mean:.4f}" if stat.n == 1 else f"{stat.mean:.4f} ± {stat.sd:.4f}"
        per_seed = ", ".join(f"{seed}: {s['test_acc']:.4f}" if (seed, s) in completed else f"{seed}: {s.get('status')}" for seed, s, _ in runs)
        others = [f"{s.get('status')} (seed {seed})" for seed, s, _ in runs if s.get("status") != "completed"]
        data = runs[0][1]["data"]
        epochs = sorted({s.get("epochs_completed") for _, s in completed})
        print(f"| {name} | {data['dataset']} ({data['n_train']:,} / {data['n_test']:,}) | {runs[0][2].data.normalize} "
              f"| {', '.join(map(str, epochs)) or '—'} | {stat.n} | {mean} | {per_seed} | {', '.join(others) or '—'} |")


def main() -> None:
    if sys.argv[1:2] == ["--seeds"]:
        return seed_table(sys.argv[2])
    latest = {}
    for run in find_runs(sys.argv[1] if len(sys.argv) > 1 else "runs"):
        latest[run.parent.name] = run  # find_runs is oldest first
    for name in sorted(latest):
        f = figures(latest[name])
        numbers = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in f.items()
            if k not in ("name", "warnings", "run", "data") and v is not None
        )
        print(f"{name}: {f['data']}; {numbers}")
        for warning in f["warnings"]:
            print(f"    warning: {warning}")


if __name__ == "__main__":
    main()
