"""Draws the library's progress callbacks (stage, done, total) with rich, on stderr."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

LABELS = {"load": "loading weights", "encode": "encoding image", "sample": "denoising", "decode": "decoding",
          "write": "writing"}


class SecondsPerStep(ProgressColumn):
    def render(self, task) -> Text:
        if task.fields.get("stage") != "sample" or not task.completed or task.elapsed is None:
            return Text("")
        return Text(f"{task.elapsed / task.completed:.2f} s/step", style="cyan")


class ProgressView:
    """Context manager and callback. Disabled when quiet or when stderr is not a terminal (scripts stay clean)."""

    def __init__(self, console: Console, quiet: bool):
        self.progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                                 SecondsPerStep(), TimeRemainingColumn(), console=console,
                                 disable=quiet or not console.is_terminal, transient=False)
        self.tasks = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(LABELS.get(stage, stage), total=total, stage=stage)
        self.progress.update(self.tasks[stage], completed=done, total=total)
