"""The Typer app and what every command uses: `command` (a command whose whole body is covered against
interrupts), `fail` (one line, a non-zero exit), `note`, and the stderr console."""

import functools
import os

import typer
from rich.console import Console

from .. import __version__
from ..runtime import interrupts

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run Stable Video Diffusion (SVD, SVD-XT, SV3D, SV4D) on your own machine.")
err = Console(stderr=True)


def fail(message: str, code: int = 2):
    """Bad input: one line on stderr and a non-zero exit code, never a traceback. Under torchrun only rank 0
    says it (every rank fails the same way)."""
    if os.environ.get("RANK", "0") != "0":
        raise typer.Exit(code)
    err.print(f"svd: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        err.print(f"svd: {message}", markup=False, highlight=False, soft_wrap=True)


def command(interrupted: str, **options):
    """app.command(**options), with the command's whole body covered: an interrupt anywhere in it (Ctrl-C, or
    SIGTERM, which __main__ turns into one), or an error that follows one, is the one-line `interrupted; <what the
    user has now>` and exit 130, never a traceback. Files are safe by then: outputs are written atomically and
    removed when unfinished."""
    def register(body):
        @functools.wraps(body)
        def run(*args, **kwargs):
            try:
                return body(*args, **kwargs)
            except KeyboardInterrupt:
                fail(f"interrupted; {interrupted}", 130)
            except typer.Exit:
                raise
            except Exception as error:
                if interrupts.interrupted():  # an error the interrupt caused (a torchrun peer gone): the interrupt
                    fail(f"interrupted; {interrupted}", 130)
                from ..inference.generation import LatentsKept

                if isinstance(error, LatentsKept):  # decoding failed after sampling; the latents were kept
                    fail(str(error), 1)
                raise
        return app.command(**options)(run)
    return register


def _version(value: bool):
    if value:
        typer.echo(f"svd {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    pass
