"""The `svd` command (console script) and `python -m svdcli`."""

import sys

from .hugepages import restart_with_hugepages


def main() -> None:
    # Rerun the same command the same way: as `python -m svdcli` when started so, else as the `svd` script.
    via_module = sys.argv[0].endswith("__main__.py")
    restart_with_hugepages([sys.executable, *(["-m", "svdcli"] if via_module else sys.argv[:1]), *sys.argv[1:]])
    from .cli import app

    app(prog_name="svd")


if __name__ == "__main__":
    main()
