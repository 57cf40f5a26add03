"""Checkpoints off the training path: each epoch a run takes a snapshot of its state (copies on the
CPU, so that training goes on at once), and a background thread writes a due snapshot to disk.

A run's `last.pt` is due every `train.checkpoint_every` seconds, at the end of the run and when it
is interrupted; between writes the newest snapshot waits in memory, so a Ctrl-C or SIGTERM
still saves the last finished epoch exactly, and a kill -9 loses at most that interval. A write
that fails is a warning: the run goes on (and its next due write tries again).
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from pathlib import Path

from .runs import CHECKPOINTS, RunFolderWarning, save_checkpoint


def cpu_copy(value):
    """A checkpoint's contents with every tensor copied to the CPU: the snapshot no longer shares
    memory with the training (which goes on updating its tensors in place)."""
    import torch

    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


class CheckpointWriter:
    """One thread that writes checkpoints (path, state) in the order they come; a newer state for a
    path still waiting replaces the older one. `flush()` waits until everything given is on disk."""

    def __init__(self):
        self._waiting: dict[Path, dict] = {}
        self._lock = threading.Lock()
        self._work = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="actexp-checkpoints", daemon=True)
        self._thread.start()

    def write(self, path: Path, state: dict) -> None:
        with self._lock:
            fresh = path not in self._waiting
            self._waiting[path] = state
        if fresh:
            self._work.put(path)

    def flush(self) -> None:
        self._work.join()

    def close(self) -> None:
        self.flush()
        self._work.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (path := self._work.get()) is not None:
            try:
                with self._lock:
                    state = self._waiting.pop(path)
                try:
                    save_checkpoint(state, path)
                except Exception as e:  # a full disk, a folder gone: the run itself goes on
                    warnings.warn(f"{path} not written ({type(e).__name__}: {e}); training goes on", RunFolderWarning, stacklevel=1)
            finally:
                self._work.task_done()
        self._work.task_done()


class CheckpointSchedule:
    """A run's checkpoints: the newest snapshot of each kind it keeps (last.pt, best.pt), written
    through `writer` when due (every `every` seconds) and whenever `save()` is called."""

    def __init__(self, folder: Path, policy: str, every: float, writer: CheckpointWriter, clock=time.monotonic):
        self.folder, self.every, self.writer, self.clock = folder, every, writer, clock
        self.keeps_last = policy in ("last", "both")
        self.keeps_best = policy in ("best", "both")
        self.pending: dict[str, dict] = {}
        self.saved_at = clock()

    @property
    def wanted(self) -> bool:
        return self.keeps_last or self.keeps_best

    def epoch(self, snapshot: dict, improved: bool) -> None:
        """A finished epoch's snapshot (already a copy); written now when due."""
        if self.keeps_last:
            self.pending["last.pt"] = snapshot
        if self.keeps_best and improved:
            self.pending["best.pt"] = snapshot
        if self.clock() - self.saved_at >= self.every:
            self.save()

    def save(self) -> None:
        """Hand every waiting snapshot to the writer (the end of a run, an interrupt, a due time)."""
        for name, snapshot in self.pending.items():
            self.writer.write(self.folder / CHECKPOINTS / name, snapshot)
        self.pending.clear()
        self.saved_at = self.clock()
