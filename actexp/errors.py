"""Errors the user can fix (the CLI prints the message as one line and exits with `exit_code`), and
SIGTERM and SIGHUP turned into an exception so that whatever it stops can record how it ended."""

import contextlib
import os
import signal
import threading


class ActexpError(Exception):
    exit_code = 1


class ConfigError(ActexpError):
    exit_code = 2


class PluginError(ConfigError):
    """A plugin that cannot be loaded or fails its checks, or one that a run folder needs and that
    is not enabled here: the message names the plugin and what to do."""


class DatasetMissing(ActexpError):
    """A dataset that is not there, or not what it should be (damaged files are never called
    missing, and never replaced by a download)."""


class OverrideError(ConfigError):
    """A ConfigError that a KEY=VALUE override caused: the message starts with the override
    (`label`, e.g. "override 'train.epoch=3'"), then what is wrong (`detail`); load_config adds
    the file it was applied to after the override, so the file is not taken for the culprit."""

    def __init__(self, label: str, detail: str):
        super().__init__(f"{label}: {detail}")
        self.label, self.detail = label, detail

    def applied_to(self, where: str) -> "OverrideError":
        return OverrideError(f"{self.label} (applied to {where})", self.detail)


class DamagedFile(ActexpError):
    """A file in a run folder or sweep that cannot be read as what it should be."""


class WriteFailed(ActexpError):
    """A file could not be written (a full disk, a read-only folder)."""


class Busy(ActexpError):
    """Another process holds the folder's lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RunFolderWarning(UserWarning):
    """A damaged run folder was skipped; the CLI prints these as `warning:` lines."""


class RunLostWarning(RunFolderWarning):
    """A run's worker was lost (its process or node died) and the run goes on from its folder
    elsewhere; the CLI prints these as `warning:` lines."""


class BackendUnavailable(ActexpError):
    """The backend asked for cannot run here (its package is missing, its cluster is out of reach,
    the runs folder is not shared with its nodes): nothing trained; fix the setup and run again."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by schedulers, `timeout`, containers, sweep drivers) or SIGHUP (the terminal or
    ssh session went away), handled like Ctrl-C."""

    def __init__(self, reason: str | int = signal.SIGTERM):
        """`reason`: the signal's number, or a message (a stop that SIGTERM caused elsewhere)."""
        self.signum = signal.SIGTERM if isinstance(reason, str) else int(reason)
        self.name = signal.Signals(self.signum).name
        super().__init__(reason if isinstance(reason, str) else f"terminated by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal killed


# Signals whose default action kills the process without a word, that a run turns into Terminated.
STOPPING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM and SIGHUP raise Terminated instead of killing the process
    outright, so that a run records itself as interrupted and stays resumable. Only where a signal
    still has its default action and only in the main thread (where Python runs signal handlers): a
    caller's own handler (nohup's SIG_IGN included) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = [signum for signum in STOPPING if signal.getsignal(signum) is signal.SIG_DFL]

    def terminate(signum, frame):
        for other in taken:
            signal.signal(other, signal.SIG_IGN)  # once: let the run save itself
        raise Terminated(signum)

    for signum in taken:
        signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum in taken:
            signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C, SIGTERM and SIGHUP wait until the block has run, then act as they would have: an epoch's
    record, metrics files and checkpoint are written together or not at all. (Blocking the signals
    with pthread_sigmask would not do: another thread, such as torch's thread pool, can take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, *STOPPING)}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in caught:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
