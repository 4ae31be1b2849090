"""Running a command again under torchrun, one process per GPU: svd train-lora --gpus N (data parallel) and svd
generate --gpus 2 (the two halves of guidance)."""

import signal
import subprocess
import sys

import typer

from ..runtime.interrupts import Terminated


def torchrun(gpus: int, extra: list[str] | None = None) -> int:
    """Run this same command under torchrun, one process per GPU, without --gpus and with `extra` arguments."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        args.append(a)
    cmd = [sys.executable, "-c", "import sys; from svdcli.cli.launch import launch; launch(sys.argv[1:])",
           "--standalone", f"--nproc-per-node={gpus}", "-m", "svdcli", *args, *(extra or [])]
    launcher = subprocess.Popen(cmd)
    try:
        return launcher.wait()
    except KeyboardInterrupt as interrupt:
        # Ctrl-C reached every process of the terminal; SIGTERM (a scheduler, `kill`) this one alone, so pass it on.
        # Either way torchrun stops the workers (a training saves a checkpoint) and rank 0 says it was interrupted
        # in one line: wait for that rather than leave them running unseen, and end with its status without
        # another line.
        if isinstance(interrupt, Terminated):
            launcher.send_signal(signal.SIGTERM)
        launcher.wait()
        raise typer.Exit(130)


def launch(argv: list[str]) -> None:
    """torchrun, ending without a traceback when a signal stops it (the workers report the interrupt), and without
    its warnings (the thread-count banner, a line for each signal it passes on): errors only."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main

    for name in list(logging.root.manager.loggerDict):  # each module's logger sets its own level
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        main(argv)
    except SignalException:
        sys.exit(130)


