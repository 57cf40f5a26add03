"""Rich rendering: training progress (a bar per epoch with the live loss, a line per epoch), the
live sweep table, and the comparison and run tables."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.markup import escape
from rich.text import Text

from .terminal import printable, printable_lines


class TrainingDisplay:
    """A `progress(event, info)` callback for actexp.train that draws on a rich console."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console, self.quiet = console, quiet
        self.bar: Progress | None = None
        self.task = None
        self.run_dir = None

    def __call__(self, event: str, info: dict) -> None:
        getattr(self, f"on_{event}")(info)

    def on_start(self, info):
        self.run_dir = info["dir"]
        summary, config = info["summary"], info["config"]
        if self.quiet:
            return
        self.console.print(
            f"[bold]{escape(printable(config.name))}[/] → {escape(printable(info['dir']))}  ({summary['data']['dataset']}: {summary['data']['n_train']} train / "
            f"{summary['data']['n_val']} val / {summary['data']['n_test']} test, {summary['n_params']:,} parameters, {summary['device']})",
            soft_wrap=True,
        )
        for note in summary.get("notes", []):
            self.console.print(f"note: {printable(note)}", style="yellow", markup=False, soft_wrap=True)
        if not self.console.is_terminal:
            return  # logs get the per-epoch lines, not bar redraws
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=info["steps"], epoch=info["first_epoch"], epochs=info["epochs"], loss="…")

    def on_step(self, info):
        if self.bar is not None:
            self.bar.update(self.task, completed=info["step"], epoch=info["epoch"], loss=f"{info['loss']:.4f}")

    def on_epoch(self, info):
        r = info["record"]
        if self.bar is not None:
            self.bar.reset(self.task, epoch=min(r["epoch"] + 1, info["epochs"]), epochs=info["epochs"], loss="…")
        if not self.quiet:
            mark = " *" if info["improved"] else ""
            self.console.print(
                f"epoch {r['epoch']:>3}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
                f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}  lr {r['lr']:.3g}  {r['seconds']:.2f}s{mark}",
                markup=False,
                soft_wrap=True,
            )
            # As soon as the diagnostics find it (epoch 0's findings after epoch 1), not only at the end.
            for warning in info.get("warnings", []):
                self.console.print(f"warning: {printable(warning)}", style="yellow", markup=False, soft_wrap=True)

    def on_end(self, info):
        self.close()
        s = info["summary"]
        if s["status"] == "completed":
            stopped = stopping_words(s)
            result = f"{stopped}; result: {result_words(s)}" if stopped else result_words(s)
            self.console.print(f"[green]completed[/] in {s['wall_seconds']:.1f}s: {escape(printable(result))} → {escape(printable(info['dir']))}", soft_wrap=True)
        for warning in s.get("warnings", []):
            self.console.print(f"warning: {printable(warning)}", style="yellow", markup=False, soft_wrap=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def result_words(summary: dict) -> str:
    """A completed run's result in one phrase: its selected epoch and that epoch's figures."""
    epoch, stopped = summary.get("selected_epoch"), summary.get("stopped_early")
    why = f"best {summary.get('monitor', 'val_loss')}" if epoch != summary.get("epochs_completed") or stopped else "last epoch"
    return (f"epoch {epoch} ({why}): val acc {_figure(summary.get('val_acc'))}, val loss {_figure(summary.get('val_loss'))}, "
            f"test acc {_figure(summary.get('test_acc'))}")


def stopping_words(summary: dict) -> str | None:
    """How early stopping ended a run, in one phrase; None for a run it did not stop. It stops a run
    `patience` epochs after the monitored figure last improved, which was on the best epoch."""
    if not summary.get("stopped_early"):
        return None
    last, best, monitor = summary.get("epochs_completed"), summary.get("best_epoch"), summary.get("monitor", "val_loss")
    waited = f" ({monitor} did not improve for {last - best} epoch{'s' * (last - best != 1)})" if isinstance(last, int) and isinstance(best, int) else ""
    return f"stopped early at epoch {last}{waited}"


def _figure(x) -> str:
    return "?" if not isinstance(x, (int, float)) else f"{x:.4f}"


# ----------------------------------------------------------------------------- sweeps

STATUS_STYLES = {
    "completed": "green",
    "diverged": "yellow",
    "failed": "red",
    "interrupted": "magenta",
    "running": "cyan",
    "pending": "dim",
    "pruned": "blue",
}

ACTION_WORDS = {"new": "to train", "skip": "finished earlier", "reused": "reused", "resume": "to resume", "restart": "to restart", "rerun": "to re-run"}


@dataclass
class _RunRow:
    name: str
    status: str
    note: str = ""  # "earlier": finished by an earlier invocation, skipped now; "reused": trained under another name
    epoch: int = 0
    epochs: int = 0
    first_epoch: int = 1
    val_acc: float = math.nan
    best_val_acc: float = math.nan
    started: float | None = None
    ended: float | None = None
    error: str | None = None

    def elapsed(self) -> float:
        return ((self.ended or time.time()) - self.started) if self.started else 0.0

    def eta(self) -> float | None:
        done = self.epoch - self.first_epoch + 1
        if self.status != "running" or done < 1:
            return None
        return self.elapsed() / done * (self.epochs - self.epoch)


class SweepDisplay:
    """A `progress(event, info)` callback for run_sweep: a live table on a terminal (one row per
    run: status, epoch, val accuracy, elapsed, ETA), one line per finished run elsewhere."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console, self.quiet = console, quiet
        self.rows: dict[str, _RunRow] = {}
        self.live = None
        self.jobs = 1
        self.started = time.time()

    def __call__(self, event: str, info: dict) -> None:
        getattr(self, f"on_{event}")(info)

    def on_plan(self, info):
        # A tuned sweep plans once per batch of trials, then its confirmation runs: one table each.
        self.close()
        self.rows = {}
        steps, self.jobs = info["steps"], info["jobs"]
        for step in steps:
            skipped = step.action == "skip"
            note = ("reused" if step.reused_from else "earlier") if skipped else ""
            self.rows[step.run.name] = _RunRow(step.run.name, step.entry["status"] if skipped else "pending", note)
        actions = Counter(action_word(step) for step in steps)
        todo = ", ".join(f"{n} {ACTION_WORDS[action]}" for action, n in actions.items())
        stage = f" {escape(printable(info['stage']))}" if info.get("stage") else ""
        self.console.print(f"[bold]sweep {escape(printable(info['sweep'].name))}[/]{stage}: {len(steps)} runs ({todo}) → {escape(printable(info['dir']))}, {self.jobs} job(s)", soft_wrap=True)
        reused = [step for step in steps if step.reused_from]
        if reused:
            names = ", ".join(f"{step.run.name} reused from {step.reused_from}" for step in reused[:5]) + (", …" if len(reused) > 5 else "")
            self.console.print(f"note: {len(reused)} run(s) reuse the result of a finished run of the same config: {printable(names)}",
                               markup=False, soft_wrap=True)
        removed = info["removed"]
        if removed:
            names = ", ".join(e["name"] for e in removed[:5]) + (", …" if len(removed) > 5 else "")
            self.console.print(f"note: {len(removed)} run(s) in the ledger are no longer in this sweep and were left alone: {printable(names)}", markup=False, soft_wrap=True)
        if self.console.is_terminal and not self.quiet and actions.get("skip", 0) + actions.get("reused", 0) < len(steps):
            self.live = Live(self, console=self.console, refresh_per_second=4)
            self.live.start()

    def on_run_start(self, info):
        row = self.rows[info["name"]]
        row.status, row.started, row.ended, row.error = "running", time.time(), None, None
        row.epochs, row.first_epoch, row.epoch = info["epochs"], info["first_epoch"], info["first_epoch"] - 1

    def on_epoch(self, info):
        row = self.rows[info["name"]]
        row.epoch, row.val_acc = info["epoch"], info["val_acc"]
        row.best_val_acc = max(row.val_acc, row.best_val_acc) if not math.isnan(row.best_val_acc) else row.val_acc

    def on_run_end(self, info):
        row = self.rows[info["name"]]
        row.status, row.ended, row.error = info["status"], time.time(), info["error"]
        if self.live is None and not self.quiet:
            done = sum(r.status in ("completed", "diverged", "failed", "pruned") and not r.note for r in self.rows.values())
            todo = sum(not r.note for r in self.rows.values())
            facts = [f"best val acc {row.best_val_acc:.4f}"] if not math.isnan(row.best_val_acc) else []
            facts += [f"test acc {info['test_acc']:.4f}"] if info.get("test_acc") is not None else []
            facts.append(f"{row.elapsed():.1f}s")
            error = f": {row.error}" if row.status in ("failed", "diverged") else ""
            self.console.print(
                printable(f"[{done}/{todo}] {row.name} {row.status}{error} ({', '.join(facts)})"),
                markup=False, soft_wrap=True, style=STATUS_STYLES.get(row.status),
            )

    def __rich__(self) -> Table:
        rows = list(self.rows.values())
        room = max(5, self.console.size.height - 6)
        shown = rows if len(rows) <= room else _most_relevant(rows, room)
        table = Table(box=box.SIMPLE_HEAD, caption=self._caption(rows, len(rows) - len(shown)), caption_justify="left")
        for column in ("run", "status", "epoch", "val acc", "elapsed", "ETA"):
            # In a narrow terminal the run name wraps (cut, seed=1 and seed=2 would look alike); figures stay whole.
            table.add_column(column, justify="left" if column in ("run", "status") else "right",
                             overflow="fold" if column == "run" else "ellipsis", no_wrap=column != "run")
        for r in shown:
            status = f"{r.status} ({r.note})" if r.note else r.status
            table.add_row(
                Text(printable(r.name)), Text(printable(status), style=STATUS_STYLES.get(r.status, "")),
                f"{r.epoch}/{r.epochs}" if r.epochs else "", "" if math.isnan(r.val_acc) else f"{r.val_acc:.4f}",
                _duration(r.elapsed()) if r.started else "", _duration(r.eta()),
            )
        return table

    def _caption(self, rows: list[_RunRow], hidden: int) -> str:
        counts = Counter(r.status for r in rows)
        text = " · ".join(f"{n} {status}" for status, n in counts.items())
        finished = [r.elapsed() for r in rows if r.ended and r.status == "completed"]
        left = counts.get("pending", 0) + counts.get("running", 0)
        if finished and left:
            text += f" · sweep ETA {_duration(statistics.fmean(finished) * left / self.jobs)}"
        return text + (f" · {hidden} rows not shown" if hidden else "")

    def close(self):
        if self.live is not None:
            self.live.stop()
            self.live = None


def action_word(step) -> str:
    """A step's action as the plan shows it: `reused` for a skipped run whose result was trained under
    another name (step.reused_from), else its action."""
    return "reused" if step.reused_from else step.action


def _most_relevant(rows: list[_RunRow], room: int) -> list[_RunRow]:
    """Running runs, then problems, then the latest finished, then the next pending, in sweep order."""
    order = {"running": 0, "failed": 1, "diverged": 1, "interrupted": 1, "completed": 2, "pending": 3}
    ranked = sorted(rows, key=lambda r: (order.get(r.status, 2), -(r.ended or 0) if r.status == "completed" else 0))
    keep = {id(r) for r in ranked[:room]}
    return [r for r in rows if id(r) in keep]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def comparison_table(comparison) -> "_ComparisonView":
    """A report.Comparison as rich renders it: the table, best row highlighted, and its notes."""
    return _ComparisonView(comparison)


class _ComparisonView:
    """The comparison laid out for the width it is given, never cutting a figure: one line per row
    where that fits, else each interval and p-value on a second line of its cell (80 columns hold an
    18-row, two-key sweep that way), else those stacked rows in two tables (the ranking, then the
    rest), and only then folded labels. Below: the notes, in plain words. Piped output (which
    cli.print_table widens to the table's full width) gets one line per row."""

    def __init__(self, comparison):
        self.comparison = comparison

    def _tables(self, stacked: bool, split: bool = False) -> list[Table]:
        from .report import comparison_cells, comparison_title

        c = self.comparison
        header, rows = comparison_cells(c, stacked)
        keys = range(1, 1 + len(c.labels))
        metric = 1 + len(c.labels) + 1  # after rank, the keys and n
        ranking = metric + 1 + any(row.verdict for row in c.rows)  # rank … metric and its mark (Δ to best goes with the rest)
        parts = [range(ranking), [0, *keys, *range(ranking, len(header))]] if split else [range(len(header))]
        tables = []
        for number, columns in enumerate(parts):
            title = None if number else Text(comparison_title(c))  # it holds config keys and the protocol: data, not markup
            table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", show_edge=False, pad_edge=False, collapse_padding=True)
            for i in columns:
                label = i in keys or header[i] == "runs"
                # Figures never wrap (a cut figure misleads); labels may fold, as a last resort.
                table.add_column(header[i], justify="left" if label or metric <= i < ranking else "right", no_wrap=not label, overflow="fold")
            for r, cells in enumerate(rows):
                best = r == 0 and c.rows[0].metric.n > 0
                table.add_row(*plain_cells((cells[i] for i in columns), lines=True), style="bold green" if best else None)
            tables.append(table)
        return tables

    def _layouts(self):
        yield self._tables(stacked=False)
        yield self._tables(stacked=True)
        yield self._tables(stacked=True, split=True)

    def __rich_console__(self, console: Console, options):
        from .report import comparison_notes

        layouts = list(self._layouts())
        fitting = [tables for tables in layouts if max(_width(console, t) for t in tables) <= options.max_width]
        for i, table in enumerate((fitting or layouts[-1:])[0]):
            if i:
                yield Text("")
            yield table
        notes = comparison_notes(self.comparison)
        if notes:
            yield Text("\n" + "\n".join(map(printable, notes)))

    def __rich_measure__(self, console: Console, options):
        from rich.measure import Measurement

        widths = [max(_width(console, t) for t in tables) for tables in self._layouts()]
        return Measurement(min(widths), max(widths))


def _width(console: Console, table: Table) -> int:
    """The width a table takes with nothing wrapped."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def plain_cells(cells, lines: bool = False) -> list:
    """Table cells as plain text: strings read from run folders (names, dates, overrides) are data,
    never rich markup (a summary.json holding "[/bad]" would stop the whole table), and their
    control characters are shown escaped (terminal.printable). `lines`: the cells' own line breaks
    are meant (report.comparison_cells stacks a figure over its interval; its labels are made
    printable there)."""
    clean = printable_lines if lines else printable
    return [Text(clean(cell)) if isinstance(cell, str) else cell for cell in cells]


def runs_table(rows: list[dict]) -> Table:
    """report.list_runs as one wide table, every column: each run's sweep folder, name, status,
    selected epoch, its val acc and test acc, start, overrides (where any run has them), folder."""
    table = Table(box=box.SIMPLE_HEAD)
    overrides = any(r.get("overrides") for r in rows)
    columns = ("sweep", "name", "status", "epoch", "val acc", "test acc", "started", *(["overrides"] if overrides else []), "folder")
    for column in columns:
        table.add_column(column, justify="right" if column in FIGURE_COLUMNS else "left", no_wrap=column in FIGURE_COLUMNS, overflow="fold")
    for r in rows:
        table.add_row(*plain_cells([
            r["sweep"], r["name"], Text(printable(r["status"]), style=STATUS_STYLES.get(r["status"], "")), _epoch(r),
            _accuracy(r["val_acc"]), _accuracy(r["test_acc"]), r["started"].replace("T", " "),
            *([" ".join(r.get("overrides", []))] if overrides else []), r["folder"],
        ]))
    return table


FIGURE_COLUMNS = ("epoch", "val acc", "test acc")


def runs_by_sweep(rows: list[dict], root) -> list[tuple[Text, Table]]:
    """report.list_runs, compact: a table per sweep folder (the runs trained one by one together),
    the newest sweep first; each row the run's name, its selected epoch, val acc and test acc (never
    cut: names fold first) and when it started; the status column only where some run of the table
    did not complete, and an overrides column only where a run has overrides its name does not say
    (those that name nothing, as train.device=cpu, or a hand-made summary's). Each table comes with
    its title line, the sweep folder and its runs' statuses counted (printed whole above the table,
    a pipe's lines as long as it takes)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["sweep"], []).append(r)
    tables = []
    for sweep, members in groups.items():
        counts = Counter(r["status"] for r in members)
        where = f"{root}" if sweep == "." else f"{root}/{sweep}"
        title = f"{where}: {len(members)} run{'s' * (len(members) != 1)} (" + ", ".join(f"{n} {printable(status)}" for status, n in counts.items()) + ")"
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        with_status = set(counts) != {"completed"}
        unnamed = {id(r): _unnamed_overrides(r) for r in members}
        table.add_column("run", overflow="fold")
        if with_status:
            table.add_column("status", no_wrap=True)
        for column in FIGURE_COLUMNS:
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("started", no_wrap=True)
        if any(unnamed.values()):
            table.add_column("overrides", overflow="fold")
        for r in members:
            status = [Text(printable(r["status"]), style=STATUS_STYLES.get(r["status"], ""))] if with_status else []
            overrides = [" ".join(unnamed[id(r)])] if any(unnamed.values()) else []
            table.add_row(*plain_cells([r["name"], *status, _epoch(r), _accuracy(r["val_acc"]), _accuracy(r["test_acc"]), _short_time(r["started"]), *overrides]))
        tables.append((Text(printable(title), style="bold"), table))
    return tables


def _unnamed_overrides(r: dict) -> list[str]:
    """The run's overrides that its name does not already say (`activation=` in `relu_xavier,activation=tanh`)."""
    return [o for o in r.get("overrides", []) if f"{o.partition('=')[0].rsplit('.', 1)[-1]}=" not in r["name"] or "=" not in o]


def _epoch(r: dict) -> str:
    return "" if r["selected_epoch"] is None else str(r["selected_epoch"])


def _short_time(started: str) -> str:
    """`2026-12-07T11:20:31.5` as `2026-12-07 11:20`: minutes tell runs apart in a listing."""
    return started.replace("T", " ")[:16]


def _accuracy(x) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.4f}"
