"""`actexp show RUN`: a run folder read back as tables — its config essentials, the epoch table, and
the per-layer diagnostics at epoch 0 and the last epoch, with cells past a warning threshold in red.
Reads files only (no torch), so it answers instantly."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from .diagnostics import METRICS, OUTPUT_LAYER, is_problem
from .display import result_words, stopping_words
from .errors import ActexpError
from .terminal import printable
from .runs import find_runs, read_config, read_history, read_summary, run_status

PROBLEM = "bold red"
# The epoch table shows the first and the last epochs of a long run, so a run of any length prints a screenful.
HEAD_EPOCHS, TAIL_EPOCHS = 5, 30
DIAGNOSTIC_HEADERS = {
    "grad_norm": "grad", "weight_norm": "weight", "update_ratio": "update", "grad_ratio": "g/g_out",
    "act_mean": "mean", "act_std": "std", "saturated_fraction": "sat", "dead_fraction": "dead",
}
LAYER_CAPTION = (
    "grad: mean weight-gradient norm; weight: ‖W‖; update: ‖ΔW‖/‖W‖ over the epoch; g/g_out: grad ÷ the output "
    "layer's (g1: layer 1's); mean, std: activations on the probe batch; sat: share of saturated outputs; dead: share of dead units"
)


def resolve_run(path: str | Path, completed: bool = False, pick: str | None = None) -> Path:
    """The run folder `path` means: a run folder itself; below a folder of runs, the run `pick`
    names: "best", the completed run with the highest val acc at its selected epoch (what a sweep's
    folder means by default: its result), or "latest", the newest (what a config's folder of runs,
    runs/NAME, means by default: the run just trained). With `completed`, only completed runs count
    (what `eval` and `plot --boundary` use: only a completed run has result weights)."""
    return choose_run(path, completed, pick)[0]


def choose_run(path: str | Path, completed: bool = False, pick: str | None = None) -> tuple[Path, str]:
    """resolve_run's run, and a line saying which run of how many it is and why ("" for a run
    folder named as such)."""
    if pick not in (None, "best", "latest"):
        raise ValueError(f"pick: best or latest, not {pick!r}")
    runs = find_runs(path)
    if not runs:
        raise ActexpError(f"{path}: no run folder here (a run folder holds summary.json)")
    if runs == [Path(path)]:  # a run folder named as such speaks for itself (load_run says why not)
        return runs[0], ""
    if completed or pick == "best" or (pick is None and _is_sweep(runs)):
        done = [run for run in runs if _completed(run)]
        if not done:
            raise ActexpError(f"{path}: no completed run here ({len(runs)} run folder(s), none completed)"
                              + ("; only a completed run has result weights (model.pt)" if completed else ""))
    pick = pick or ("best" if _is_sweep(runs) else "latest")
    if len(runs) == 1:
        return runs[0], ""
    if pick == "latest":
        candidates = done if completed else runs
        return candidates[-1], f"the latest{' completed' if completed else ''} of {len(runs)} runs in {path} (--best for the best)"
    scored = [(_val_acc(run), run) for run in done]
    acc, best = max(scored, key=lambda item: item[0])
    return best, f"the best of {len(runs)} runs in {path} by val acc ({acc:.4f} at its selected epoch; --latest for the newest)"


def _is_sweep(runs: list[Path]) -> bool:
    """Runs of several configs (a sweep's folder, or a whole runs root), not one config's attempts."""
    return len({run.parent for run in runs}) > 1


def _val_acc(run: Path) -> float:
    from .report import read_run, run_result

    with contextlib.suppress(ActexpError):
        result = run_result(read_run(run))
        if result is not None and math.isfinite(result["val_acc"]):
            return result["val_acc"]
    return -math.inf


def _completed(run: Path) -> bool:
    with contextlib.suppress(ActexpError):  # a damaged run is not the one asked for
        return run_status(run, read_summary(run)) == "completed"
    return False


def show_run(console: Console, path: str | Path, pick: str | None = None) -> Path:
    run, chosen = choose_run(path, pick=pick)
    if chosen:
        console.print(printable(f"showing {run}: {chosen}"), style="dim", markup=False, soft_wrap=True)
    summary, records = read_summary(run), read_history(run)
    summary = {**summary, "status": run_status(run, summary)}
    config = read_config(run)
    for line in essentials(run, summary, config):
        console.print(printable(line), markup=False, soft_wrap=True)
    if records:
        console.print()
        console.print(epoch_table(records, summary.get("selected_epoch")))
    saturating = summary.get("diagnostics", {}).get("saturates_both_sides", False)
    with_layers = [r for r in records if r.get("layers")]
    for record in {id(r): r for r in with_layers[:1] + with_layers[-1:]}.values():
        console.print()
        console.print(layer_table(record, saturating))
    if with_layers:
        console.print(LAYER_CAPTION, style="dim", markup=False)
    if not with_layers:
        console.print("no per-layer diagnostics in this run (train.diagnostics was false)", style="dim")
    for warning in summary.get("warnings", []):
        console.print(f"warning: {printable(warning)}", style="yellow", markup=False, soft_wrap=True)
    return run


def essentials(run: Path, summary: dict, config: dict) -> list[str]:
    # A hand-edited config.yaml may have any shape: a section that is not a mapping shows as "?".
    data, model, optim, train, regularization = (_mapping(config.get(k)) for k in ("data", "model", "optim", "train", "regularization"))
    sizes = _mapping(summary.get("data"))
    n_params = summary.get("n_params")
    hidden = "-".join(str(w) for w in model.get("hidden", [])) if isinstance(model.get("hidden"), list) else "?"
    extras = ([f"dropout {model['dropout']}"] if model.get("dropout") else []) + (["batch norm"] if model.get("batch_norm") else [])
    reg = {k: v for k, v in regularization.items() if v}
    lines = [
        f"{summary.get('name', run.parent.name)} · {run} · {summary.get('status', 'unknown')}",
        f"data   {_component(data.get('dataset', '?'))}: {sizes.get('n_train', '?')} train / {sizes.get('n_val', '?')} val / {sizes.get('n_test', '?')} test",
        f"model  hidden {hidden}, {_component(model.get('activation', '?'))}, init {_component(model.get('init', '?'))}, "
        f"bias {_component(model.get('bias_init', '?'))}" + "".join(", " + e for e in extras) + f" ({'?' if n_params is None else format(n_params, ',')} parameters)",
        f"optim  {_component(optim.get('optimizer', '?'), names_only=True)} lr {optim.get('lr', '?')}, batch {train.get('batch_size', '?')}, "
        f"{train.get('epochs', '?')} epochs, seed {train.get('seed', '?')}" + (f", regularization {reg}" if reg else ""),
    ]
    for entry in summary.get("plugins") or []:
        lines.append(f"plugin {_plugin_line(entry)}")
    if summary.get("overrides"):
        lines.append(f"set    {' '.join(summary['overrides'])} (the config's overrides: the run's config.yaml has them applied)")
    if summary.get("status") == "completed":
        lines.append(f"result {result_words(summary)}, {summary.get('wall_seconds') or 0:.1f}s on {summary.get('device', '?')}")
        if stopping_words(summary):
            lines.append(f"ended  {stopping_words(summary)}")
    elif summary.get("error"):
        lines.append(f"error  {summary['error']}")
    return lines


def _plugin_line(entry) -> str:
    """A plugin the run recorded: what it is, where it came from, and whether it is enabled here."""
    from .plugins import describe_record, missing

    if not isinstance(entry, dict):
        return "?"
    problems = missing([entry])
    state = problems[0].split("; ", 1)[-1] if problems and "not enabled" in problems[0] else ("enabled here, but the file differs" if problems else "enabled here")
    return f"{entry.get('kind')} {entry.get('name')}: {describe_record(entry)}; {state}"


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


EPOCH_COLUMNS = (  # header, record key, format: one per column
    ("epoch", "epoch", "int"), ("train\nloss", "train_loss", "fixed4"), ("train\nacc", "train_acc", "fixed4"),
    ("val\nloss", "val_loss", "fixed4"), ("val\nacc", "val_acc", "fixed4"), ("lr", "lr", "auto"), ("wall\ns", "seconds", "fixed1"),
)
SELECTED = "▶"


def epoch_table(records: list[dict], selected: int | None = None) -> Table:
    """The epochs, one row each (the first and last of a long run): losses and accuracies to four
    decimals, each column in one number format (format_column), the selected epoch (whose
    weights were tested) marked and bold, and layer 1's gradient ÷ the output layer's."""
    title = "epochs (0: before training" + (f"; {SELECTED} selected: its weights were tested)" if selected is not None else ")")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    shown = records if len(records) <= HEAD_EPOCHS + TAIL_EPOCHS + 1 else records[:HEAD_EPOCHS] + [None] + records[-TAIL_EPOCHS:]
    present = [r for r in shown if r is not None]
    columns = []
    for header, key, kind in EPOCH_COLUMNS:
        columns.append((header, format_column([r.get(key) for r in present], kind)))
    ratios = [_first_layer(r).get("grad_ratio") for r in present]
    columns.append(("g1/g_out", format_column(ratios, "auto")))
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    row = 0
    for r in shown:
        if r is None:
            table.add_row("…", *[""] * len(columns))
            table.caption = f"{len(records) - HEAD_EPOCHS - TAIL_EPOCHS:,} epochs between the first {HEAD_EPOCHS} and the last {TAIL_EPOCHS} not shown (metrics.jsonl has them all)"
            continue
        cells = [column[row] for _, column in columns]
        cells[-1] = _cell(cells[-1], is_problem("grad_ratio", ratios[row], False, 1))
        chosen = selected is not None and r.get("epoch") == selected
        if chosen:
            cells[0] = f"{SELECTED} {cells[0]}"
        table.add_row(*cells, style="bold" if chosen else None)
        row += 1
    return table


def _first_layer(record: dict) -> dict:
    return next((row for row in record.get("layers", ()) if row.get("layer") == 1), {})


def layer_table(record: dict, saturating: bool) -> Table:
    table = Table(title=f"layers at epoch {record['epoch']}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("layer", justify="right")
    rows = record["layers"]
    formatted = {metric: format_column([row.get(metric) for row in rows], "percent" if "fraction" in metric else "auto") for metric in METRICS}
    for metric in METRICS:
        table.add_column(DIAGNOSTIC_HEADERS[metric], justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        cells = [str(row["layer"])]
        for metric in METRICS:
            problem = row["layer"] != OUTPUT_LAYER and is_problem(metric, row.get(metric), saturating, row["layer"])
            cells.append(_cell(formatted[metric][i], problem))
        table.add_row(*cells)
    return table


def _cell(text: str, problem: bool):
    return f"[{PROBLEM}]{text}[/]" if problem else text


def format_column(values: list, kind: str) -> list[str]:
    """A column's values in ONE format, so that digits line up and compare: `int`; `fixed4` and
    `fixed1` (decimals); `percent` (one decimal); `auto`, for figures whose size is not known ahead
    (a learning rate, a gradient ratio): fixed with three significant digits of the smallest, or,
    where the values span more than fixed can show (below 0.001 or from 100,000), scientific for
    the whole column. A missing value is `—`; a loss that is not finite stays `nan` or `inf`.
    `fixed4` also turns scientific where a value reaches 100,000 (a diverging loss)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    big = any(abs(v) >= 1e5 for v in numbers)
    if kind == "int":
        spec = "d"
    elif kind == "percent":
        spec = ".1%"
    elif kind.startswith("fixed"):
        spec = ".3e" if big else f".{kind[5:]}f"
    else:
        nonzero = [abs(v) for v in numbers if v]
        if big or (nonzero and min(nonzero) < 1e-3):
            spec = ".2e"
        else:
            smallest = min(nonzero, default=1.0)
            spec = f".{max(0, min(6, 2 - math.floor(math.log10(smallest))))}f"
    return [_formatted(v, spec) for v in values]


def _formatted(value, spec: str) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    if not math.isfinite(value):
        return str(value)
    if spec == "d":
        return str(int(value)) if float(value).is_integer() else f"{value:g}"
    return format(value, spec)


def _component(value, names_only: bool = False) -> str:
    if isinstance(value, dict) and "expr" in value and "name" not in value:  # a formula activation
        params = ", ".join(f"{k}={v}" for k, v in value.items() if k not in ("expr", "learn", "gain"))
        learn = f", learns {', '.join(map(str, value['learn']))}" if value.get("learn") else ""
        return f"formula {value['expr']}" + (f" ({params}{learn})" if params else "")
    if isinstance(value, dict) and (names_only or value.get("name") == "constant"):
        return str(value.get("value", value.get("name")))
    if isinstance(value, dict):
        params = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value.get('name')}({params})" if params else str(value.get("name"))
    return str(value)
