"""Rich rendering of training progress: a bar per epoch with the live loss, a line per epoch."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


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
            f"[bold]{config.name}[/] → {info['dir']}  ({summary['data']['dataset']}: {summary['data']['n_train']} train / "
            f"{summary['data']['n_val']} val / {summary['data']['n_test']} test, {summary['n_params']:,} parameters, {summary['device']})",
            soft_wrap=True,
        )
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

    def on_end(self, info):
        self.close()
        s = info["summary"]
        if s["status"] == "completed":
            self.console.print(
                f"[green]completed[/] in {s['wall_seconds']:.1f}s: best epoch {s.get('best_epoch')} "
                f"(val acc {s.get('best_val_acc', float('nan')):.4f}), test acc {s['test_acc']:.4f} "
                f"(epoch {s['selected_epoch']} weights) → {info['dir']}",
                soft_wrap=True,
            )
        for warning in s.get("warnings", []):
            self.console.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
