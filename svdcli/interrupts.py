"""How an `svd` process is interrupted. Ctrl-C (SIGINT, sent to the terminal's whole process group) and SIGTERM (a
job scheduler, `timeout`, `kill`: sent to this process alone) both end a command as an interrupt, so the same code
cleans up after both. SIGTERM's is `Terminated`: code that started child processes must pass it on, as they were
not told. No imports beyond the standard library: the handler is installed before anything slow is loaded."""

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, as an interrupt. Unlike Ctrl-C's, this process's children did not receive it."""


def _terminated(signum, frame):
    raise Terminated


def interrupt_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _terminated)


@contextmanager
def held():
    """Ctrl-C and SIGTERM wait until the block ends, then interrupt as they would have: for work that must not stop
    half done (a weight update: the optimizer's step, then the moving average's). Python raises signal interrupts in
    the main thread only, so elsewhere there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: installed outside Python, leave it
    for s in previous:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)  # the handler just restored runs now
