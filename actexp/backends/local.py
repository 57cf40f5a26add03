"""The backends of one machine: in-process (--jobs 1) and worker processes (--jobs N)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import Terminated
from . import Backend, Event, Task, ended_without_outcome, execute, keep_freed_memory


class InProcessBackend(Backend):
    """Runs each task in the driver's own process and thread, one at a time: `poll` trains the
    submitted task, its events reaching the driver as they happen. Ctrl-C and SIGTERM land in the
    training itself, which saves its run as interrupted; `poll` then re-raises them to the driver."""

    slots = 1

    def start(self, sweep_dir: Path, emit) -> None:
        self.sweep_dir, self.emit, self.task = sweep_dir, emit, None
        self.unended: dict[str, tuple] = {}  # the runs of the task in hand that have no run_end yet

    def submit(self, task: Task) -> None:
        assert not self.unended, "the in-process backend runs one task at a time"
        self.task = task
        self.unended = {run.name: (run, None) for run in task.runs}

    def poll(self, timeout: float) -> None:
        task, self.task = self.task, None
        if task is None:
            return

        def report(name, kind, info):
            if kind == "run_start":
                self.unended[name] = (self.unended[name][0], Path(info["dir"]))
            self.emit(Event(name, kind, info))

        with _sigterm_noted() as terminated:
            outcomes = execute(task, report)
        for outcome in outcomes:
            self.unended.pop(outcome.name, None)
            self.emit(Event(outcome.name, "run_end", outcome))
        if any(o.status == "interrupted" for o in outcomes):
            raise Terminated("terminated by SIGTERM") if terminated else KeyboardInterrupt

    def stop(self) -> None:
        """Nothing trains between polls; a task whose end was cut short (an interrupt that came
        just after it returned) ends as its run folders say."""
        while self.unended:
            name, (run, folder) = next(iter(self.unended.items()))
            del self.unended[name]
            self.emit(Event(name, "run_end", ended_without_outcome(run, folder, self.sweep_dir, "interrupted", "interrupted")))

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _sigterm_noted():
    """Yield a list that gets an entry when SIGTERM arrives during the block (the handler in place
    still runs): training turns both Ctrl-C and SIGTERM into an `interrupted` outcome, and the
    driver needs to know which it was (exit code 130 or 143)."""
    noted: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield noted
        return

    def note(signum, frame):
        noted.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, note)
    try:
        yield noted
    finally:
        if signal.getsignal(signal.SIGTERM) is note:  # (a handler that ignores further SIGTERMs stays)
            signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- worker processes


WORKER_JOIN_SECONDS = 5


@dataclass(frozen=True)
class Slot:
    threads: int  # torch threads: the CPU cores divided between workers, so they don't oversubscribe
    gpu: int | None  # the GPU this worker sees (one run per GPU), None: as the config says


def worker_slots(jobs: int, cpus: int, gpus: int) -> list[Slot]:
    threads = max(1, cpus // jobs)
    return [Slot(threads, i % gpus if gpus > 1 else None) for i in range(jobs)]


class _Worker:
    """A worker process, its task queue and its own pipe of events: a worker killed while it sends
    can break only its own pipe (a queue shared by the workers would stay locked by the dead one,
    and every other worker's events would wait behind it for ever)."""

    def __init__(self, context, slot: Slot, index: int):
        self.tasks = context.Queue()
        self.events, writer = context.Pipe(duplex=False)
        self.process = context.Process(target=_worker_main, args=(index, slot, self.tasks, writer, os.getpid()), daemon=True)
        self.process.start()
        writer.close()  # the worker's copy is the only one: its end is the pipe's end (EOF)
        self.task: Task | None = None
        self.folders: dict[str, str] = {}  # run name -> its folder, from run_start
        self.seen_dead = False
        self.retired = False  # its run was interrupted: the process leaves its loop

    def give(self, task: Task) -> None:
        self.task, self.folders, self.seen_dead = task, {}, False
        self.tasks.put(task)

    def lost_its_task(self) -> bool:
        """Whether the process died (killed from outside, e.g. out of memory) with a task in hand.
        It takes two looks: its last message may still be on its way through the pipe."""
        if self.task is None or self.process.is_alive():
            return False
        lost, self.seen_dead = self.seen_dead, True
        return lost

    def receive(self):
        """The next message, or None once the process has ended and its pipe is empty."""
        try:
            return self.events.recv()
        except (EOFError, OSError):
            self.ended = True
            return None

    ended = False  # its pipe reached its end: the process is gone


class ProcessBackend(Backend):
    """Worker processes on this machine, one task at a time each; their events come back on a pipe
    each. Ctrl-C reaches the driver only (workers ignore SIGINT): `stop` sends the busy workers
    SIGTERM, which they turn into KeyboardInterrupt so that their runs save as interrupted. A worker
    that dies with a task in hand (killed from outside, out of memory) fails its runs; a new process
    takes its place for the next task."""

    def __init__(self, slots: list[Slot]):
        self.slot_specs = slots
        self.slots = len(slots)

    def start(self, sweep_dir: Path, emit) -> None:
        import multiprocessing

        self.sweep_dir, self.emit = sweep_dir, emit
        self.context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        self.workers = [_Worker(self.context, slot, i) for i, slot in enumerate(self.slot_specs)]

    def submit(self, task: Task) -> None:
        i = next(i for i, w in enumerate(self.workers) if w.task is None)
        worker = self.workers[i]
        if worker.retired or not worker.process.is_alive():
            worker.process.join(timeout=WORKER_JOIN_SECONDS)
            self.workers[i] = worker = _Worker(self.context, self.slot_specs[i], i)
        worker.give(task)

    def poll(self, timeout: float) -> None:
        from multiprocessing.connection import wait

        listening = {w.events: w for w in self.workers if not w.ended}
        ready = wait(list(listening), timeout) if listening else []
        messages = [(worker, worker.receive()) for worker in map(listening.get, ready)]
        messages = [(worker, message) for worker, message in messages if message is not None]
        if not messages:
            for worker in self.workers:
                if worker.lost_its_task():
                    message = f"the worker process died (exit code {worker.process.exitcode})"
                    task, worker.task = worker.task, None
                    for run in task.runs:
                        folder = worker.folders.get(run.name)
                        outcome = ended_without_outcome(run, Path(folder) if folder else None, task.sweep_dir, "failed", message)
                        self.emit(Event(run.name, "run_end", outcome))
            if not ready:
                return
        for worker, (_, name, kind, info) in messages:
            self._handle(worker, name, kind, info)

    def _handle(self, worker: _Worker, name, kind: str, info) -> None:
        if kind == "outcomes":
            worker.task = None
            worker.retired = any(o.status == "interrupted" for o in info)
            for outcome in info:
                self.emit(Event(outcome.name, "run_end", outcome))
            return
        if kind == "run_start":
            worker.folders[name] = info["dir"]
        self.emit(Event(name, kind, info))

    def stop(self) -> None:
        for w in self.workers:
            if w.task and w.process.is_alive():
                os.kill(w.process.pid, signal.SIGTERM)

    def close(self) -> None:
        for w in self.workers:
            if w.process.is_alive():
                w.tasks.put(None)
        for w in self.workers:
            w.process.join(timeout=WORKER_JOIN_SECONDS)
            if w.process.is_alive():
                w.process.kill()
            w.events.close()


def _worker_main(index: int, slot: Slot, tasks, events, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    if slot.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)  # before torch initialises CUDA
    import torch

    torch.set_num_threads(slot.threads)
    keep_freed_memory()

    def report(name, kind, info):
        if os.getppid() != parent_pid:
            raise KeyboardInterrupt  # the sweep was killed: stop, leaving the run resumable
        events.send((index, name, kind, info))

    try:
        while (task := _next_task(tasks, parent_pid)) is not None:
            outcomes = execute(task, report)
            events.send((index, None, "outcomes", outcomes))
            if any(o.status == "interrupted" for o in outcomes):
                break
    except (KeyboardInterrupt, BrokenPipeError):  # (the driver is gone: nobody hears the end; its runs' folders say it)
        pass


def _next_task(tasks, parent_pid: int):
    while os.getppid() == parent_pid:
        try:
            return tasks.get(timeout=1.0)
        except queue.Empty:
            continue
    return None


def _interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the run save itself
    raise Terminated("stopped by the sweep")
