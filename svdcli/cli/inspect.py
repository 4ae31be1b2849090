"""`svd inspect`: what a checkpoint is, and whether it loads."""

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from . import options
from .app import command, err, fail
from .progress import ProgressView


@command("nothing was written")
def inspect(weights: str = typer.Argument(..., help="A .safetensors checkpoint or a diffusers folder."),
            as_json: bool = typer.Option(False, "--json", help="One machine-readable line on stdout."),
            device: str = typer.Option("cpu", help="Where to load the weights for the check."),
            dtype: str = typer.Option("fp16", help="Dtype to load into (fp16 halves the memory of the check).")):
    """Check a checkpoint: detect its layout and architecture and load every tensor the model needs."""
    from ..inference.generation import EngineSettings

    try:
        settings = EngineSettings(device, dtype, attention_slice="none")
        settings.resolve()
    except ValueError as e:
        fail(str(e))
    with ProgressView(err, quiet=as_json) as progress:
        model = options.open_engine(None, weights, settings, progress).pipe.model
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
