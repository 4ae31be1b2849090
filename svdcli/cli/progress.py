"""Draws the library's progress callbacks (stage, done, total) with rich, on stderr."""

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

LABELS = {"items": "items", "load": "loading weights", "encode": "encoding image", "sample": "denoising",
          "decode": "decoding", "write": "writing", "cache": "encoding clips", "train": "training", "interpolate": "interpolating"}


class SecondsPerStep(ProgressColumn):
    def render(self, task) -> Text:
        if task.fields.get("stage") not in ("sample", "train") or not task.completed or task.elapsed is None:
            return Text("")
        loss = f"loss {task.fields['loss']:.4f}  " if task.fields.get("loss") is not None else ""
        return Text(f"{loss}{task.elapsed / task.completed:.2f} s/step", style="cyan")


class ProgressView:
    """Context manager and callback. Disabled when quiet or when stderr is not a terminal (scripts stay clean);
    notices that change what happens (decoding retried in less memory) are printed unless quiet."""

    def __init__(self, console: Console, quiet: bool):
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                                 SecondsPerStep(), TimeRemainingColumn(), console=console,
                                 disable=quiet or not console.is_terminal, transient=False)
        self.tasks = {}
        self.sample_flops = 0  # the denoising's FLOPs (this process's), and those done when the clock started
        self.work, self.work_at_clock = 0, 0
        self.untimed_steps = 0  # steps before the timed one: 1 when the first step compiles the U-Net
        self.clock = 0.0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, **fields) -> None:
        if stage == "sample-flops":  # sent just before sampling: done = FLOPs of all steps, total = steps
            self.sample_flops, self.untimed_steps, self.clock = done, 0, time.perf_counter()
            self.work = self.work_at_clock = 0
            self._print(f"denoising: {total} steps, {done / 1e12:.2f} TFLOP")
            self._start("sample", total)
            return
        if stage == "sample-work":  # before each step's report: done = FLOPs of the steps so far
            self.work = done
            return
        if stage == "compile":  # around the first step, which compiles the U-Net: the timed step is the next one
            if done:
                self.untimed_steps, self.clock, self.work_at_clock = 1, time.perf_counter(), self.work
            else:
                self._print("compiling the U-Net (the first step)")
            return
        if stage.startswith("decode-retry"):
            what = (f"{done} frame(s) at a time" if stage == "decode-retry-chunk" else
                    f"one frame at a time in tiles of {done}x{total} pixels")
            if not self.quiet:
                self.progress.console.print(f"svd: decoding ran out of memory; retrying {what}", highlight=False,
                                            markup=False, soft_wrap=True)
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(LABELS.get(stage, stage), total=total, stage=stage)
        elif done < self.progress.tasks[self.tasks[stage]].completed:  # the next item of a batch
            self._start(stage, total)
        self.progress.update(self.tasks[stage], completed=done, total=total, **fields)
        timed = self.work - self.work_at_clock
        if stage == "sample" and done == self.untimed_steps + 1 and self.sample_flops and timed:
            # the library reports a step once the device has finished it, so this times the work itself; the
            # steps ahead are weighed by their FLOPs (cached steps are cheaper, a split's halves run at once)
            elapsed = time.perf_counter() - self.clock
            which = "first step" if not self.untimed_steps else "first step after compiling"
            self._print(f"{which} {elapsed:.1f} s ({timed / elapsed / 1e12:.3f} TFLOP/s): "
                        f"about {elapsed * (self.sample_flops - self.work) / timed:.0f} s of denoising to go")

    def _start(self, stage: str, total: int) -> None:
        if stage in self.tasks:
            self.progress.reset(self.tasks[stage], total=total)
        else:
            self.tasks[stage] = self.progress.add_task(LABELS.get(stage, stage), total=total, stage=stage)

    def _print(self, line: str) -> None:
        if not self.progress.disable:
            self.progress.console.print(line, highlight=False, markup=False)
