"""`actexp show RUN`: a run folder read back as tables — its config essentials, the epoch table, and
the per-layer diagnostics at epoch 0 and the last epoch, with cells past a warning threshold in red.
Reads files only (no torch), so it answers instantly."""

from __future__ import annotations

import contextlib
from pathlib import Path

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


def resolve_run(path: str | Path, completed: bool = False) -> Path:
    """A run folder, or the latest run below a folder of runs; with `completed`, the latest
    completed one (what `eval` and `plot --boundary` use: only a completed run has result weights)."""
    runs = find_runs(path)
    if not runs:
        raise ActexpError(f"{path}: no run folder here (a run folder holds summary.json)")
    if completed and runs != [Path(path)]:  # a run folder named as such speaks for itself (load_run says why not)
        done = [run for run in runs if _completed(run)]
        if not done:
            raise ActexpError(f"{path}: no completed run here ({len(runs)} run folder(s), none completed); "
                              "only a completed run has result weights (model.pt)")
        runs = done
    return runs[-1]


def _completed(run: Path) -> bool:
    with contextlib.suppress(ActexpError):  # a damaged run is not the one asked for
        return run_status(run, read_summary(run)) == "completed"
    return False


def show_run(console: Console, path: str | Path) -> Path:
    run = resolve_run(path)
    summary, records = read_summary(run), read_history(run)
    summary = {**summary, "status": run_status(run, summary)}
    config = read_config(run)
    for line in essentials(run, summary, config):
        console.print(printable(line), markup=False, soft_wrap=True)
    if records:
        console.print(epoch_table(records))
    saturating = summary.get("diagnostics", {}).get("saturates_both_sides", False)
    with_layers = [r for r in records if r.get("layers")]
    for record in {id(r): r for r in with_layers[:1] + with_layers[-1:]}.values():
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
    if summary.get("overrides"):
        lines.append(f"set    {' '.join(summary['overrides'])} (the config's overrides: the run's config.yaml has them applied)")
    if summary.get("status") == "completed":
        lines.append(f"result {result_words(summary)}, {summary.get('wall_seconds') or 0:.1f}s on {summary.get('device', '?')}")
        if stopping_words(summary):
            lines.append(f"ended  {stopping_words(summary)}")
    elif summary.get("error"):
        lines.append(f"error  {summary['error']}")
    return lines


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def epoch_table(records: list[dict]) -> Table:
    table = Table(title="epochs (epoch 0: before training)", title_justify="left")
    for header in ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds", "g1/g_out"):
        table.add_column(header, justify="right")
    shown = records if len(records) <= HEAD_EPOCHS + TAIL_EPOCHS + 1 else records[:HEAD_EPOCHS] + [None] + records[-TAIL_EPOCHS:]
    for r in shown:
        if r is None:
            table.add_row("…", *[""] * 7)
            table.caption = f"{len(records) - HEAD_EPOCHS - TAIL_EPOCHS:,} epochs between the first {HEAD_EPOCHS} and the last {TAIL_EPOCHS} not shown (metrics.jsonl has them all)"
            continue
        first = next((row for row in r.get("layers", ()) if row["layer"] == 1), {})
        ratio = first.get("grad_ratio")
        cells = [str(r["epoch"])] + [_number(r.get(k), 4) for k in ("train_loss", "train_acc", "val_loss", "val_acc")]
        cells += [_number(r.get("lr"), 3), _number(r.get("seconds"), 2), _cell(_number(ratio, 2), is_problem("grad_ratio", ratio, False, 1))]
        table.add_row(*cells)
    return table


def layer_table(record: dict, saturating: bool) -> Table:
    table = Table(title=f"layers at epoch {record['epoch']}", title_justify="left")
    table.add_column("layer", justify="right")
    for metric in METRICS:
        table.add_column(DIAGNOSTIC_HEADERS[metric], justify="right")
    for row in record["layers"]:
        cells = [str(row["layer"])]
        for metric in METRICS:
            value = row.get(metric)
            text = _number(value, 3) if "fraction" not in metric or value is None else f"{value:.1%}"
            cells.append(_cell(text, row["layer"] != OUTPUT_LAYER and is_problem(metric, value, saturating, row["layer"])))
        table.add_row(*cells)
    return table


def _cell(text: str, problem: bool):
    return f"[{PROBLEM}]{text}[/]" if problem else text


def _number(value, digits: int) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value != 0 and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.{max(digits - 2, 1)}e}"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _component(value, names_only: bool = False) -> str:
    if isinstance(value, dict) and (names_only or value.get("name") == "constant"):
        return str(value.get("value", value.get("name")))
    if isinstance(value, dict):
        params = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value.get('name')}({params})" if params else str(value.get("name"))
    return str(value)
