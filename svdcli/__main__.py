"""The `svd` command (console script) and `python -m svdcli`."""

import sys

from .runtime.interrupts import interrupt_on_sigterm


def main() -> None:
    # First, before the imports that take seconds: a SIGTERM at any point is an interrupt, and each command turns an
    # interrupt anywhere in its body into one line and exit 130 (cli.command); this covers the time before that.
    interrupt_on_sigterm()
    try:
        from .runtime.hugepages import restart_with_hugepages

        # Rerun the same command the same way: as `python -m svdcli` when started so, else as the `svd` script.
        via_module = sys.argv[0].endswith("__main__.py")
        restart_with_hugepages([sys.executable, *(["-m", "svdcli"] if via_module else sys.argv[:1]), *sys.argv[1:]])
        from .cli import app

        app(prog_name="svd")
    except KeyboardInterrupt:
        sys.stderr.write("svd: error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
