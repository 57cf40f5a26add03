"""Errors the user can fix (the CLI prints the message as one line and exits with `exit_code`), and
SIGTERM turned into an exception so that whatever it stops can record how it ended."""

import contextlib
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
