"""`svd batch DIR|JOBFILE`: many images, one model load, resumable and shardable."""

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import options
from .app import command, err, fail, note
from .progress import ProgressView


def _shard(spec: str | None) -> tuple[int, int]:
    """--shard i/n (0 <= i < n), else torchrun's RANK/WORLD_SIZE, else the whole batch."""
    if spec:
        try:
            i, n = (int(v) for v in spec.split("/"))
        except ValueError:
            raise ValueError(f"--shard {spec}: expected i/n, e.g. 0/4") from None
        if not 0 <= i < n:
            raise ValueError(f"--shard {spec}: i must be in 0..n-1")
        return i, n
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@command("finished items are kept, run the same command again to resume")
def batch(
    source: Path = typer.Argument(..., help="A folder of images, or a job file: .txt (one image per line), .csv or "
                                            ".jsonl (an image column plus any per-item settings)."),
    out: Path = typer.Option(..., help="Output folder (also holds manifest.jsonl)."),
    name: str = typer.Option("{stem}.{ext}", help="Output name template: {stem}, {seed}, {index}, {ext}."),
    recursive: bool = typer.Option(False, "--recursive", help="Look for images in sub-folders too."),
    glob: list[str] = typer.Option(None, "--glob", help="Image patterns in the folder (repeatable; default: the "
                                                        "usual image extensions)."),
    seed: int = typer.Option(0, help="Base seed; each item's seed derives from it and the item's path."),
    force: bool = typer.Option(False, "--force", help="Redo items whose output already exists."),
    shard: str = typer.Option(None, help="i/n: do only this share of the items (0 <= i < n), for job arrays. Under "
                                         "torchrun the rank and world size are used."),
    preset: str = options.PRESET, weights: str = options.WEIGHTS, frames: int = options.FRAMES,
    steps: int = options.STEPS, fps: int = options.FPS, fps_id: int = options.FPS_ID, motion: int = options.MOTION,
    noise_aug: float = options.NOISE_AUG, cfg_min: float = options.CFG_MIN, cfg_max: float = options.CFG_MAX,
    size: str = options.SIZE, resize: str = options.RESIZE, decode_chunk: str = options.DECODE_CHUNK,
    decode_overlap: int = options.DECODE_OVERLAP, offload: str = options.OFFLOAD,
    attention_slice: str = options.ATTENTION_SLICE, compile: bool = options.COMPILE,
    weights_dtype: str = options.WEIGHTS_DTYPE, device: str = options.DEVICE, dtype: str = options.DTYPE,
    fmt: str = options.FORMAT, quality: float = options.QUALITY, loop: bool = options.LOOP,
    pingpong: bool = options.PINGPONG, keyframes: str = options.KEYFRAMES, overlap: int = options.OVERLAP,
    sampler: str = options.SAMPLER, schedule: str = options.SCHEDULE, cache: int = options.CACHE,
    no_watermark: bool = options.NO_WATERMARK, interpolate: int = options.INTERPOLATE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per item on stdout."),
    quiet: bool = options.QUIET, lora: list[str] = options.LORA, save_latents: bool = options.SAVE_LATENTS,
):
    """Generate a video for every image of a folder or job file, loading the model once."""
    from ..inference.batch import IMAGE_GLOBS, BatchError, in_shard, read_items, run_batch
    from ..inference.generation import LatentsKept, OptionsError, resolve_options
    from ..media.outputs import watermark_available
    from ..checkpoints.presets import PresetError
    from ..checkpoints.weights import WeightsError, resolve_weights

    flags = {"frames": frames, "steps": steps, "fps": fps, "fps_id": fps_id, "motion": motion, "noise_aug": noise_aug,
             "cfg_min": cfg_min, "cfg_max": cfg_max, "size": size, "resize": resize, "decode_chunk": decode_chunk,
             "fmt": fmt, "loop": loop, "quality": quality, "interpolate": interpolate, "pingpong": pingpong,
             "keyframes": keyframes, "overlap": overlap, "sampler": sampler, "schedule": schedule, "cache": cache}
    try:
        p = options.default_preset(preset, weights, quiet)
        watermark = not no_watermark and watermark_available()
        resolve_options(p, **flags, watermark=watermark)  # the batch-wide settings must be valid
        index, count = _shard(shard)
        engine_setup = options.engine_settings(device, dtype, offload, weights_dtype, attention_slice, decode_overlap,
                                              quiet, compile, lora)
        items = [it for it in read_items(source, recursive, tuple(glob) if glob else IMAGE_GLOBS)
                 if in_shard(it.key, index, count)]
        weights_path = resolve_weights(weights, p)
    except (PresetError, OptionsError, BatchError, WeightsError, ValueError) as x:
        fail(options.user_message(x, options.OPTION_FLAGS))
    if not items:
        fail(f"{source}: no images" + (f" in shard {index}/{count}" if count > 1 else ""))

    def make(item, item_seed, output):
        # A bad override or image raises a ValueError (OptionsError, ImageError): that item fails alone.
        per_item = {("fmt" if k == "format" else k): v for k, v in item.overrides.items() if k not in ("seed", "name")}
        o, _ = resolve_options(p, **{**flags, **per_item}, watermark=watermark)
        return engine.make(item.image, o, item_seed, output, progress, save_latents=save_latents)

    rows = []

    def on_item(outcome, done, total):
        progress("items", done, total)
        rows.append(outcome)
        if as_json:
            sys.stdout.write(json.dumps({"input": str(outcome.item.image), "status": outcome.status,
                                         "output": str(outcome.output) if outcome.output else None,
                                         "seed": outcome.seed, "seconds": round(outcome.seconds, 2),
                                         "error": outcome.error}) + "\n")
            sys.stdout.flush()

    try:
        with ProgressView(err, quiet) as progress:
            progress("items", 0, len(items))
            engine = options.open_engine(p, weights_path, engine_setup, progress)
            run_batch(items, out, name, seed, force, fmt, make, on_item, rank=index)
    except BatchError as x:
        fail(str(x))
    except LatentsKept as x:  # the clip's latents wait beside its output; the finished items are kept
        fail(f"{x}; run the same command again to continue the batch", 1)
    failed = [r for r in rows if r.status == "failed"]
    if not as_json:
        table = Table(title=f"svd batch: {len(rows)} items" + (f" (shard {index}/{count})" if count > 1 else ""))
        for col in ("input", "status", "output", "seed", "seconds"):
            table.add_column(col)
        for r in rows:
            table.add_row(r.item.key, r.status if not r.error else f"failed: {r.error}",
                          r.output.name if r.output else "-", str(r.seed), f"{r.seconds:.1f}")
        Console(stderr=quiet).print(table) if not quiet else None
    note(f"{sum(r.status == 'done' for r in rows)} done, {sum(r.status == 'skipped' for r in rows)} already there, "
         f"{len(failed)} failed; manifest: {out / 'manifest.jsonl'}", quiet)
    if failed:
        raise typer.Exit(1)
