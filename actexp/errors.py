"""Errors the user can fix (the CLI prints the message as one line and exits with `exit_code`), and
SIGTERM turned into an exception so that whatever it stops can record how it ended."""

import contextlib
import os
import signal
import threading


class ActexpError(Exception):
    exit_code = 1


class ConfigError(ActexpError):
    exit_code = 2


class DatasetMissing(ActexpError):
    pass


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by schedulers, `timeout`, containers, sweep drivers), handled like Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises Terminated instead of killing the process outright, so
    that a run records itself as interrupted and stays resumable. Only where SIGTERM still has its
    default action and only in the main thread (where Python runs signal handlers): a caller's own
    handler is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the run save itself
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait until the block has run, then act as they would have: an epoch's
    record, metrics files and checkpoint are written together or not at all. (Blocking the signals
    with pthread_sigmask would not do: another thread, such as torch's thread pool, can take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
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
