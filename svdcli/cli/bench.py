"""`svd bench`: measure this machine with the real pipeline, before downloading any weights."""

import json
from pathlib import Path

import typer

from . import options
from .app import command, fail, note

CPU_SIZE, CPU_FRAMES = (128, 128), 3  # a CPU runs the full architecture too, at a size that takes minutes


@command("nothing was written")
def bench(
    preset: str = typer.Option("svd-xt", help="Preset whose architecture and defaults are measured."),
    weights: str = typer.Option(None, help="Checkpoint to measure with. Default: random weights of the preset's "
                                           "architecture at full size, drawn on the device (no download)."),
    size: str = typer.Option(None, help="WIDTHxHEIGHT. Default: the preset's (on a CPU 128x128)."),
    frames: int = typer.Option(None, help="Frames. Default: the preset's (on a CPU 3)."),
    steps: int = typer.Option(3, help="Denoising steps run per configuration (the first is a warm-up); the "
                                      "estimate scales to the preset's step count."),
    configs: list[str] = typer.Option(None, "--configs", help="OFFLOAD:WEIGHTS:DTYPE[:compile], repeatable, e.g. "
                                      "sequential:fp8:bf16. Default: a matrix for this device."),
    device: str = options.DEVICE,
    vram: float = typer.Option(None, "--vram", help="Emulate a card with this many GB (CUDA): the allocator is "
                                                    "capped there, and so is what the engine sees as free."),
    compare_diffusers: bool = typer.Option(False, "--compare-diffusers", help="Also time diffusers' "
                                           "StableVideoDiffusionPipeline on the same weights (needs diffusers)."),
    seed: int = typer.Option(0, help="Seed of the weights and the noise."),
    json_file: Path = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    quiet: bool = options.QUIET,
):
    """Time and memory of each way of running on this machine, and the fastest that fits."""
    from ..inference.bench import BenchConfig, BenchError, BenchSettings, default_configs, run_bench
    from ..inference.generation import OptionsError, parse_size
    from ..media.outputs import atomic_path
    from ..checkpoints.presets import PresetError, load_preset
    from ..runtime.devices import resolve_device

    try:
        p = load_preset(preset)
        dev = resolve_device(device)
        width, height = parse_size(size) if size else ((p.width, p.height) if dev.type != "cpu" else CPU_SIZE)
        frames = frames or (p.frames if dev.type != "cpu" else CPU_FRAMES)
        if frames < 1:
            raise OptionsError("frames", f"{frames}: must be at least 1")
        chosen = [BenchConfig.parse(x) for spec in configs for x in spec.split(",")] if configs else \
            default_configs(dev)
        weights_path = Path(weights).expanduser() if weights else None
        if weights_path is not None and not weights_path.exists():
            raise BenchError(f"{weights_path}: no such file or folder")
        if json_file is not None and not json_file.parent.is_dir():
            raise BenchError(f"--json {json_file}: no such folder")
        settings = BenchSettings(p, dev, width, height, frames, steps, weights_path, seed, vram)
    except (PresetError, OptionsError, BenchError, ValueError) as x:
        fail(options.user_message(x, options.OPTION_FLAGS))
    note(f"bench: {p.name} architecture, {width}x{height}, {frames} frames, {steps} steps per configuration, "
         f"{'random weights' if weights_path is None else weights_path}", quiet)
    def save(report) -> None:  # after every configuration, so that a run cut short keeps what it measured
        if json_file is not None:
            with atomic_path(json_file) as tmp:
                tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n")

    report = run_bench(settings, chosen, lambda m: note(m, quiet), compare_diffusers, save)
    render(report, p.steps)


def render(report, preset_steps: int) -> None:
    from rich.console import Console
    from rich.table import Table

    gib = 1024**3
    table = Table(title=f"svd bench on {report.device}")
    for column in ("config", "status", "s/step", "1st step", "encode s", "decode s", f"est. {preset_steps} steps",
                   "TFLOP/s", "% peak", "peak GiB enc/sample/dec", "max |diff|"):
        table.add_column(column, justify="left" if column in ("config", "status") else "right")
    notes = sorted({r.ran_as for r in report.rows if r.ran_as})
    for r in report.rows:
        name = r.config.name + ("*" * (notes.index(r.ran_as) + 1) if r.ran_as else "")
        if r.status != "ok":
            table.add_row(name, r.status, *[""] * 9)
            continue
        peaks = " / ".join(f"{(p.reserved if p.reserved is not None else p.allocated) / gib:.2f}"
                           for p in r.phases.values())
        table.add_row(name, "ok", f"{r.step_s:.3f}", f"{r.first_step_s:.2f}",
                      f"{r.phases['encode'].seconds:.2f}", f"{r.phases['decode'].seconds:.2f}",
                      f"{r.estimate_s:.1f} s", f"{r.step_tflops:.3g}",
                      f"{r.peak_share:.0%}" if r.peak_share is not None else "-", peaks,
                      f"{r.max_diff:.4f}" if r.max_diff is not None else "-")
    console = Console(width=max(160, Console().width))
    console.print(table)
    for i, line in enumerate(notes):
        console.print(f"{'*' * (i + 1)} ran as {line}")
    if report.fastest:
        console.print(f"fastest: {report.fastest}")
    for budget, name in report.within_budget.items():
        console.print(f"fastest within {budget}: {name or 'none of these fits'}")
    if report.diffusers:
        d = report.diffusers
        if d["status"] == "ok":
            console.print(f"diffusers on the same weights ({d['config']}): {d['step_s']:.3f} s/step, whole run "
                          f"{d['run_s']:.1f} s; ours {d['ours_run_s']:.1f} s. Speed-up (diffusers' time / ours): "
                          f"{d['step_ratio']:.2f}x per step, {d['run_ratio']:.2f}x over the whole run")
        else:
            console.print(f"diffusers: {d['status']}")
