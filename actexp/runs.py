"""Run folders: `runs/<name>/<run id>/` with config.yaml, metrics.jsonl/.csv, summary.json and
checkpoints. Files another process may read mid-run are written atomically (temp file + rename)."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

CHECKPOINTS = "checkpoints"
# The flat per-epoch columns, in the order metrics.csv shows them.
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
DIAGNOSTIC_COLUMNS = ("epoch", "layer", "metric", "value")  # diagnostics.csv, in long form


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create a fresh, uniquely named folder `runs_dir/name/<YYYYmmdd-HHMMSS>[-N]`."""
    parent = Path(runs_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {parent}")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_torch_atomic(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl (every field of every epoch, the epoch-0 record included), metrics.csv (the flat
    columns of the trained epochs) and, when the records carry per-layer diagnostics, diagnostics.csv."""
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    trained = [r for r in history if r["epoch"] > 0]
    columns = [c for c in EPOCH_COLUMNS if any(c in r for r in trained)] or list(EPOCH_COLUMNS)
    write_text_atomic(run_dir / "metrics.csv", _csv(columns, trained))
    if any("layers" in r for r in history):
        from .diagnostics import long_rows

        rows = [dict(zip(DIAGNOSTIC_COLUMNS, row)) for row in long_rows(history)]
        write_text_atomic(run_dir / "diagnostics.csv", _csv(DIAGNOSTIC_COLUMNS, rows))


def _csv(columns, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when the file does not exist (yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def read_summary(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "summary.json")


def read_config(run_dir: Path) -> dict:
    """A run's resolved config as plain data ({} for a folder without config.yaml)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def find_runs(path: str | Path) -> list[Path]:
    """Every run folder (one holding summary.json) at or below `path`, oldest first."""
    path = Path(path)
    if (path / "summary.json").exists():
        return [path]
    return sorted((p.parent for p in path.rglob("summary.json")), key=lambda p: (p.stat().st_mtime, str(p)))
