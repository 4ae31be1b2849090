"""The `svd` command. Thin: parse, validate, call the library, render."""

import json
import sys

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .safetensors_io import CheckpointError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run Stable Video Diffusion (SVD, SVD-XT, SV3D) on your own machine.")
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Bad input: one line on stderr and a non-zero exit code, never a traceback."""
    err.print(f"svd: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        typer.echo(f"svd {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    pass


@app.command()
def inspect(weights: str = typer.Argument(..., help="A .safetensors checkpoint or a diffusers folder."),
            as_json: bool = typer.Option(False, "--json", help="One machine-readable line on stdout."),
            device: str = typer.Option("cpu", help="Where to load the weights for the check."),
            dtype: str = typer.Option("fp16", help="Dtype to load into (fp16 halves the memory of the check).")):
    """Check a checkpoint: detect its layout and architecture and load every tensor the model needs."""
    from .loader import load
    from .runtime import resolve_device, resolve_dtype

    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ValueError as e:
        fail(str(e))
    quiet = as_json or not err.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=err,
                  disable=quiet, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        try:
            model = load(weights, device=dev, dtype=dt,
                         progress=lambda stage, done, total: bar.update(task, completed=done, total=total))
        except CheckpointError as e:
            fail(str(e))
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.components().items()}
    info = {"weights": weights, "layout": model.layout, "architecture": model.architecture.name,
            "release": model.release, "stored_dtypes": model.stored_dtypes, "skipped_tensors": model.skipped_tensors,
            "parameters": counts, "files": [str(f) for f in model.files]}
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    table = Table(show_header=False, box=None)
    for key in ("layout", "architecture", "release", "stored_dtypes", "skipped_tensors"):
        table.add_row(key, str(info[key]))
    for name, n in counts.items():
        table.add_row(f"{name} parameters", f"{n:,}")
    Console().print(table)
