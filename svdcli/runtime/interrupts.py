"""How an `svd` process is interrupted. Ctrl-C (SIGINT, sent to the terminal's whole process group) and SIGTERM (a
job scheduler, `timeout`, `kill`: sent to this process alone) both end a command as an interrupt, so the same code
cleans up after both. SIGTERM's is `Terminated`: code that started child processes must pass it on, as they were
not told. No imports beyond the standard library: the handler is installed before anything slow is loaded."""

import _thread
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

_received: list[int] = []  # the interrupting signals this process has had, in order


class Terminated(KeyboardInterrupt):
    """SIGTERM, as an interrupt. Unlike Ctrl-C's, this process's children did not receive it."""


def _terminated(signum, frame):
    _received.append(signum)
    raise Terminated


def _ctrl_c(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM has reached this process (once interrupt_on_sigterm has run). An error after one is
    its consequence, to report as the interrupt: under torchrun a worker whose peer stopped first can see the broken
    collective before its own interrupt is raised."""
    return bool(_received)


def _send_later(signum: int) -> None:
    time.sleep(0.01)
    os.kill(os.getpid(), signum)


def _unraisable(default):
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
            # The handler ran where Python drops exceptions (a weakref callback, a __del__): instead of a stray
            # "Exception ignored" and training on unstopped, deliver the interrupt again, to code that can stop.
            # From another thread, a moment later: sent from here the handler would run at once, here, and be
            # dropped again (so would a Thread's, whose start() waits in Python code).
            try:
                _thread.start_new_thread(_send_later, (_received[-1],))
                return
            except RuntimeError:  # no new threads at interpreter shutdown: nothing left to stop anyway
                pass
        default(unraisable)
    return hook


def interrupt_on_sigterm() -> None:
    """SIGTERM raises Terminated; both it and Ctrl-C are recorded (interrupted()) and never lost."""
    signal.signal(signal.SIGTERM, _terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _ctrl_c)
    sys.unraisablehook = _unraisable(sys.unraisablehook)


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
