"""Draws the library's progress callbacks (stage, done, total) with rich, on stderr."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

LABELS = {"items": "items", "load": "loading weights", "encode": "encoding image", "sample": "denoising", "decode": "decoding",
          "write": "writing", "cache": "encoding clips", "train": "training", "interpolate": "interpolating"}


class SecondsPerStep(ProgressColumn):
    def render(self, task) -> Text:
        if task.fields.get("stage") not in ("sample", "train") or not task.completed or task.elapsed is None:
            return Text("")
        loss = f"loss {task.fields['loss']:.4f}  " if task.fields.get("loss") is not None else ""
        return Text(f"{loss}{task.elapsed / task.completed:.2f} s/step", style="cyan")


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

    def __call__(self, stage: str, done: int, total: int, **fields) -> None:
        if stage == "sample-flops":  # sent just before sampling: done = FLOPs of one step, total = steps
            self.step_flops = done
            self._print(f"denoising: {total} steps x {done / 1e12:.2f} TFLOP")
            self._start("sample", total)
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(LABELS.get(stage, stage), total=total, stage=stage)
        elif done < self.progress.tasks[self.tasks[stage]].completed:  # the next item of a batch
            self._start(stage, total)
        self.progress.update(self.tasks[stage], completed=done, total=total, **fields)
        if stage == "sample" and done == 1 and getattr(self, "step_flops", 0):
            elapsed = self.progress.tasks[self.tasks["sample"]].elapsed
            if elapsed:
                self._print(f"first step {elapsed:.1f} s ({self.step_flops / elapsed / 1e12:.3f} TFLOP/s): "
                            f"about {elapsed * (total - 1):.0f} s of denoising to go")

    def _start(self, stage: str, total: int) -> None:
        if stage in self.tasks:
            self.progress.reset(self.tasks[stage], total=total)
        else:
            self.tasks[stage] = self.progress.add_task(LABELS.get(stage, stage), total=total, stage=stage)

    def _print(self, line: str) -> None:
        if not self.progress.disable:
            self.progress.console.print(line, highlight=False, markup=False)
