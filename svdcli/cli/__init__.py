"""The `svd` command. Thin: parse, validate, call the library, render.

app.py holds the Typer app and the helpers every command uses; each command is a module of its own that registers
itself on the app when imported, which this file does; options.py holds the options several commands share."""

from . import batch, bench, curate, decode, download, four_d, generate, inspect, interpolate, multiview, train  # noqa: F401
from .app import app

__all__ = ["app"]
