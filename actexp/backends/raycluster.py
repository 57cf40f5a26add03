"""The Ray backend: each task is a Ray task (`ray.remote`, no Ray Tune) on a Ray cluster, or on a
Ray instance of this machine started for the sweep.

- Run folders are written by the workers, into the sweep folder, which every node must see at the
  same path (a shared file system). `start` checks it: a probe task on each node writes a file
  with a random token there, and the driver must read it back.
- Each task asks Ray for `cpus_per_run` CPUs (its torch threads) and, when its runs train on CUDA
  (train.device cuda, or auto on a cluster with GPUs), `gpus_per_run` GPUs (a fraction shares one).
- Epochs reach the driver as they happen, through a small actor the tasks report to.
- A task whose worker process or node dies is not lost: it is submitted again, its runs going on
  from their last checkpoint in the same folders, up to `retries` times; then its runs are
  `failed`. A run's own error (a bad config, missing data) is a `failed` outcome, never retried.
- `stop` tells the tasks, through the same actor; each raises KeyboardInterrupt in itself, as Ctrl-C
  does in a local run, and its runs save as interrupted. Not `ray.cancel`: a cancel that meets a
  task ending on its own can crash the driver (a RAY_CHECK in Ray's task manager, "Tried to
  complete task that was not pending"; ray-project/ray#54527 fixed one form of that race).
"""

from __future__ import annotations

import _thread
import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

from ..events import Retry
from ..plugins import ENV as PLUGINS_ENV
from . import Backend, BackendUnavailable, Event, Outcome, Task, cpu_count, ended_without_outcome, execute, keep_freed_memory, recorded_outcome, resumable

INSTALL = "pip install 'actexp[ray]'"
RETRIES = 3
PROBE_SECONDS = 120  # a probe waits for a worker process to start on each node
RESOURCES_EVERY = 10.0  # seconds between looks at the cluster's size (nodes come and go)
STOP_POLL_SECONDS = 0.25  # how often a task asks whether the sweep is stopping
STOP_SET_SECONDS = 10.0  # how long Ctrl-C waits for the stop to be set in the actor


def import_ray():
    """The ray module, or BackendUnavailable saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise BackendUnavailable(f"--backend ray needs Ray, which is not installed here: {INSTALL}") from e
    return ray


class RayBackend(Backend):
    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float | None = None,
                 max_slots: int | None = None, retries: int = RETRIES):
        self.ray = import_ray()  # at once: a missing Ray is said before anything else happens
        self.address, self.cpus, self.gpus = address, cpus_per_run, gpus_per_run
        self.max_slots, self.retries = max_slots, retries
        self.owned = False  # whether this backend started Ray (and so shuts it down)
        self.inbox = None
        self.attempts: dict = {}  # ObjectRef -> _Attempt, for the tasks in Ray's hands
        self.stopping = False
        self.slots, self.sized = 1, 0.0

    # ------------------------------------------------------------------------- the seam

    def start(self, sweep_dir: Path, emit) -> None:
        ray = self.ray
        self.sweep_dir, self.emit = Path(sweep_dir).absolute(), emit
        if not ray.is_initialized():
            self._init()
        self.inbox = ray.remote(num_cpus=0)(_Inbox).options(scheduling_strategy=_here(ray)).remote()
        self.remote = ray.remote(_run_task)
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(node.get("CPU", 0) >= self.cpus for node in nodes):
            most = max((node.get("CPU", 0) for node in nodes), default=0)
            raise BackendUnavailable(f"--cpus-per-run {self.cpus:g}: no node of the Ray cluster has that many CPUs (at most {most:g})")
        check_shared(ray, self.sweep_dir)
        self.most_gpus = max((node.get("GPU", 0) for node in nodes), default=0)
        self._size(force=True)

    def submit(self, task: Task, tries: int = 0) -> None:
        cpus, gpus = self._resources(task)
        if gpus > self.most_gpus:  # Ray would hold the task forever, waiting for such a node
            error = f"it asks Ray for {gpus:g} GPU(s) (train.device {task.device}) and no node of the cluster has {'that many' if self.most_gpus else 'any'}"
            for run in task.runs:
                self.emit(Event(run.name, "run_end", Outcome(run.name, "failed", None, error)))
            return
        key = secrets.token_hex(8)
        ref = self.remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=0, name=f"actexp:{'+'.join(task.names)[:100]}").remote(
            task, key, self.inbox, max(1, math.floor(cpus)))
        self.attempts[ref] = _Attempt(task, key, tries)

    def poll(self, timeout: float) -> None:
        ray = self.ray
        self._size()
        refs = list(self.attempts)
        ready = []
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        else:
            time.sleep(timeout)
        self._read_inbox()  # every event of a finished task is in by now: it reports synchronously
        for ref in ready:
            self._finish(ref)

    def stop(self) -> None:
        self.stopping = True
        if self.inbox is not None:
            # Waited for: Ray orders one caller's calls only, and a task that begins after this returns
            # must find the flag set. A running task hears it within STOP_POLL_SECONDS.
            try:
                self.ray.get(self.inbox.stop.remote(), timeout=STOP_SET_SECONDS)
            except self.ray.exceptions.RayError:
                pass  # the actor is out of reach: what still runs at the driver's deadline is force-cancelled

    def close(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            return
        for ref in list(self.attempts):
            ray.cancel(ref, force=True)  # what is left after a second Ctrl-C: its runs resume from their checkpoints
        if self.inbox is not None:
            ray.kill(self.inbox)
            self.inbox = None
        if self.owned:
            ray.shutdown()

    # ------------------------------------------------------------------------- inside

    def _init(self) -> None:
        ray = self.ray
        # ray.init sets its own SIGTERM handler (sys.exit); the sweep's turns SIGTERM into a clean stop.
        main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            # The plugin files the command enabled reach every worker (paths on a storage the nodes share, as the runs folder is).
            plugins = {"runtime_env": {"env_vars": {PLUGINS_ENV: os.environ[PLUGINS_ENV]}}} if os.environ.get(PLUGINS_ENV) else {}
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING, **plugins)
            else:
                ray.init(num_cpus=cpu_count(), include_dashboard=False, logging_level=logging.WARNING, **plugins)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a Ray instance on this machine"
            hint = ""
            if self.address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ:
                hint = " (to a cluster with token authentication, Ray connects by address only with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token)"
            raise BackendUnavailable(f"could not start or reach {where}: {_first_line(e)}{hint}") from e
        finally:
            if main and sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        self.owned = True

    def _resources(self, task: Task) -> tuple[float, float]:
        device = task.device
        on_gpu = device.startswith("cuda") or (device == "auto" and self.most_gpus > 0)
        return self.cpus, (self.gpus or 1.0) if on_gpu else 0.0

    def _size(self, force: bool = False) -> None:
        """How many tasks the cluster runs at once (CPUs / cpus per run); looked at again now and
        then, for nodes that join or leave."""
        now = time.time()
        if not force and now - self.sized < RESOURCES_EVERY:
            return
        self.sized = now
        slots = max(1, math.floor(self.ray.cluster_resources().get("CPU", 0) / self.cpus + 1e-9))
        self.slots = min(slots, self.max_slots) if self.max_slots else slots

    def _read_inbox(self) -> None:
        current = {a.key: a for a in self.attempts.values()}
        for key, name, kind, info in self.ray.get(self.inbox.take.remote()):
            attempt = current.get(key)
            if attempt is None:
                continue  # from an attempt already ended (cancelled, or lost and submitted again)
            if kind == "run_start":
                attempt.folders[name] = Path(info["dir"])
            self.emit(Event(name, kind, info))

    def _finish(self, ref) -> None:
        ray = self.ray
        attempt = self.attempts.pop(ref)
        try:
            outcomes = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            outcomes = self._ended(attempt, "interrupted", "interrupted")
        except LOST_ERRORS(ray) as e:
            outcomes = self._lost(attempt, f"{type(e).__name__}: {_first_sentence(e)}")
        except ray.exceptions.RayTaskError as e:  # the task's code raised (execute catches a run's own errors)
            outcomes = self._ended(attempt, "failed", f"the Ray task failed: {_first_line(e.cause) if e.cause else _first_line(e)}")
        except ray.exceptions.RayError as e:
            outcomes = self._ended(attempt, "failed", f"Ray: {_first_line(e)}")
        if outcomes is None:  # the task heard the stop outside its runs' own catch
            outcomes = self._ended(attempt, "interrupted", "interrupted")
        for outcome in outcomes:
            self.emit(Event(outcome.name, "run_end", outcome))

    def _ended(self, attempt: "_Attempt", status: str, error: str) -> list[Outcome]:
        return [ended_without_outcome(run, attempt.folders.get(run.name), attempt.task.sweep_dir, status, error) for run in attempt.task.runs]

    def _lost(self, attempt: "_Attempt", error: str) -> list[Outcome]:
        """A lost task's runs: the finished ones as their folders say; the others go on from their
        folders in a new task, unless stopping or out of tries."""
        if self.stopping:
            return self._ended(attempt, "interrupted", "interrupted")
        if attempt.tries >= self.retries:
            return self._ended(attempt, "failed", f"its worker was lost {attempt.tries + 1} times; the last: {error}")
        task, done, again = attempt.task, [], []
        for run in task.runs:
            recorded = recorded_outcome(run, attempt.folders.get(run.name), task.sweep_dir)
            if recorded is None:
                again.append(resumable(run, attempt.folders.get(run.name)))
            else:
                done.append(recorded)
        if again:
            for run in again:
                self.emit(Event(run.name, "retry", Retry(error=f"its worker was lost ({error})", attempt=attempt.tries + 2, attempts=self.retries + 1)))
            self.submit(Task(tuple(again), task.sweep_dir, fused=task.fused and len(again) > 1), attempt.tries + 1)
        return done


def _here(ray):
    """Schedule beside the driver (the events' actor must not sit on a worker node that may die)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    except Exception:  # (a Ray Client driver has no node of its own: anywhere will do)
        return "DEFAULT"


class _Attempt:
    def __init__(self, task: Task, key: str, tries: int):
        self.task, self.key, self.tries = task, key, tries
        self.folders: dict[str, Path] = {}  # run name -> its folder, from run_start


def LOST_ERRORS(ray) -> tuple[type, ...]:
    """The errors that mean a task's worker process or node is gone, not that its code failed."""
    e = ray.exceptions
    return tuple(getattr(e, name) for name in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ObjectLostError")
                 if hasattr(e, name))


def _first_sentence(e) -> str:
    line = _first_line(e)
    return line.split(". ")[0].rstrip(".") if len(line) > 120 else line


def _first_line(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


# ----------------------------------------------------------------------------- in the workers


class _Inbox:
    """The events of the running tasks, held until the driver takes them, and whether the driver is
    stopping (a Ray actor)."""

    def __init__(self):
        self.items = []
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def stopping(self) -> bool:
        return self.stopped

    def put(self, item) -> None:
        self.items.append(item)

    def take(self) -> list:
        items, self.items = self.items, []
        return items


def _run_task(task: Task, key: str, inbox, threads: int) -> list[Outcome] | None:
    """A Ray task: train `task` with `threads` torch threads, reporting to `inbox`."""
    import ray
    import torch

    torch.set_num_threads(threads)
    keep_freed_memory()

    def report(name, kind, info):
        ray.get(inbox.put.remote((key, name, kind, info)))  # waited for: the driver sees it before the task's end

    # None: the stop came outside the runs' own catch (before the first, or between two); the driver
    # ends them as their folders say.
    return run_interruptibly(lambda: execute(task, report), lambda: ray.get(inbox.stopping.remote()))


def run_interruptibly(work, stopping, every: float = STOP_POLL_SECONDS):
    """`work()` in the main thread, while a thread calls `stopping()` every `every` seconds; once
    that is true, KeyboardInterrupt is raised in `work` at its next Python line, as Ctrl-C would
    (a call into torch finishes first). Returns what `work` returns, or None if the interrupt came
    out of it (or came before it began: then it does not begin). Nothing is raised after this
    returns: an interrupt on its way as `work` ends lands here (any Python line can take it, so the
    lines that end the watch are retried until it has)."""
    lock, ended, fired, landed = threading.Lock(), threading.Event(), threading.Event(), threading.Event()

    def asked() -> bool | None:
        try:
            return bool(stopping())
        except Exception:  # the driver is gone: the task ends on its own (or its worker is killed)
            return None

    def on_interrupt(signum, frame):
        landed.set()
        if not ended.is_set():
            raise KeyboardInterrupt

    def watch():
        while not ended.wait(every):
            stop = asked()
            if stop:
                with lock:
                    if not ended.is_set():
                        fired.set()
                        _thread.interrupt_main()  # as ray.cancel does (Ray's workers block the SIGINT signal itself)
            if stop is not False:
                return

    if asked():
        return None
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        threading.Thread(target=watch, name="actexp-stop-watch", daemon=True).start()
        return work()
    except KeyboardInterrupt:
        return None
    finally:
        while True:
            try:
                with lock:
                    ended.set()  # from here on the watcher fires no more, and on_interrupt raises nothing
                waited = time.monotonic()
                while fired.is_set() and not landed.is_set() and time.monotonic() - waited < 1.0:
                    time.sleep(0.001)
                break
            except KeyboardInterrupt:
                continue
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- shared storage


def _probe_target(sweep_dir: Path) -> Path:
    """Where the probe tasks write (the sweep folder; the tests point it elsewhere)."""
    return sweep_dir


def _probe(path: str, token: str) -> str:
    """A probe task: write `token` to `path`; return this node's name."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(token)
    return socket.gethostname()


def check_shared(ray, sweep_dir: Path) -> None:
    """On each node that can run tasks, a probe writes a random token into the sweep folder, which
    the driver must read back: the workers write the run folders there. BackendUnavailable
    otherwise, saying what to mount."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if not nodes:
        raise BackendUnavailable("the Ray cluster has no node with CPUs to run tasks on")
    token = secrets.token_hex(16)
    probe = ray.remote(_probe)
    names = {n["NodeID"]: f".probe-{token[:8]}-{i}" for i, n in enumerate(nodes)}
    refs = {n["NodeID"]: probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(_probe_target(sweep_dir) / names[n["NodeID"]]), token) for n in nodes}
    try:
        for node in nodes:
            where = f"{node.get('NodeManagerHostname')} ({node.get('NodeManagerAddress')})"
            try:
                ray.get(refs[node["NodeID"]], timeout=PROBE_SECONDS)
            except ray.exceptions.GetTimeoutError as e:
                raise BackendUnavailable(f"Ray node {where} did not run the storage probe within {PROBE_SECONDS} s") from e
            except ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None) or e
                raise BackendUnavailable(f"Ray node {where} cannot write into the runs folder {sweep_dir} ({_first_line(cause)}): "
                                         f"mount the runs folder, at this same path, on every node of the cluster") from e
            found = sweep_dir / names[node["NodeID"]]
            try:
                seen = found.read_text()
            except OSError:
                seen = None
            if seen != token:
                raise BackendUnavailable(f"the runs folder {sweep_dir} is not shared with Ray node {where}: a file its worker wrote there "
                                         f"is not here. Mount one shared folder (NFS or the like) at this same path on every node, "
                                         f"or pass --runs-dir a folder that is shared")
    finally:
        for name in names.values():
            (sweep_dir / name).unlink(missing_ok=True)
