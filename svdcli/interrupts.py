"""How an `svd` process is interrupted. Ctrl-C (SIGINT, sent to the terminal's whole process group) and SIGTERM (a
job scheduler, `timeout`, `kill`: sent to this process alone) both end a command as an interrupt, so the same code
cleans up after both. SIGTERM's is `Terminated`: code that started child processes must pass it on, as they were
not told. No imports beyond the standard library: the handler is installed before anything slow is loaded."""

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, as an interrupt. Unlike Ctrl-C's, this process's children did not receive it."""


def _terminated(signum, frame):
    raise Terminated


def interrupt_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _terminated)
