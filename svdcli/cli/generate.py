"""`svd generate IMAGE`: image to video."""

import json
import os
import sys
import time
from pathlib import Path

import typer

from . import options
from .app import command, err, fail, note
from .launch import torchrun
from .progress import ProgressView


def check_split(gpus: int, o, device: str) -> bool:
    """Whether --gpus asks for a guidance split, refusing what cannot work: more than two processes (guidance has
    two halves), a run without guidance, fewer than two CUDA devices."""
    if gpus not in (1, 2):
        raise ValueError(f"--gpus {gpus}: 1, or 2 to run the two halves of guidance at once (svd batch spreads "
                         "clips over more GPUs)")
    if gpus == 1:
        return False
    if o.cfg_max == 1 and o.cfg_min == 1:
        raise ValueError("--gpus 2 splits guidance, and cfg 1 has none to split: run on one GPU")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() and device != "cpu" else 0
    if count < 2:
        raise ValueError(f"--gpus 2 needs two CUDA devices; this machine has {count}")
    return True


def split_rank() -> int | None:
    """This process's rank when it is one of torchrun's two (a guidance split), else None."""
    return int(os.environ["RANK"]) if os.environ.get("WORLD_SIZE") == "2" else None


@command("no output was written")
def generate(
    image: Path = typer.Argument(..., help="Input image (any format Pillow reads)."),
    preset: str = options.PRESET, weights: str = options.WEIGHTS, frames: int = options.FRAMES,
    steps: int = options.STEPS,
    seed: int = typer.Option(None, help="Seed; the same seed gives the same video on any device. Default: random."),
    fps: int = options.FPS, fps_id: int = options.FPS_ID, motion: int = options.MOTION,
    noise_aug: float = options.NOISE_AUG, cfg_min: float = options.CFG_MIN, cfg_max: float = options.CFG_MAX,
    size: str = options.SIZE, resize: str = options.RESIZE, decode_chunk: str = options.DECODE_CHUNK,
    decode_overlap: int = options.DECODE_OVERLAP, offload: str = options.OFFLOAD,
    attention_slice: str = options.ATTENTION_SLICE, compile: bool = options.COMPILE,
    weights_dtype: str = options.WEIGHTS_DTYPE, device: str = options.DEVICE, dtype: str = options.DTYPE,
    out: str = typer.Option(None, help="Output file or folder. Default: a numbered name in the current folder."),
    fmt: str = options.FORMAT, quality: float = options.QUALITY, loop: bool = options.LOOP,
    pingpong: bool = options.PINGPONG, end: Path = options.END, keyframes: str = options.KEYFRAMES,
    overlap: int = options.OVERLAP, sampler: str = options.SAMPLER, schedule: str = options.SCHEDULE,
    cache: int = options.CACHE, interpolate: int = options.INTERPOLATE,
    gpus: int = typer.Option(1, "--gpus", help="2: the conditional and unconditional halves of guidance on two GPUs "
                             "at once (torchrun underneath); the same frames as one GPU (docs/speed.md)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    no_watermark: bool = options.NO_WATERMARK,
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
    quiet: bool = options.QUIET, lora: list[str] = options.LORA, save_latents: bool = options.SAVE_LATENTS,
):
    """Turn an image into a video with Stable Video Diffusion."""
    from ..inference.generation import OptionsError, prepare_end, prepare_image, resolve_options
    from ..media.images import ImageError
    from ..media.outputs import OutputError, output_path, refuse_kept_latents, sidecar_path, watermark_available
    from ..checkpoints.presets import PresetError
    from ..checkpoints.weights import WeightsError, resolve_weights

    started = time.perf_counter()
    second = split_rank() == 1  # the second process of a guidance split: it samples alongside, says and writes nothing
    quiet = quiet or second
    try:
        p = options.default_preset(preset, weights, quiet)
        watermark = not no_watermark and watermark_available()
        o, warnings = resolve_options(p, frames=frames, steps=steps, fps=fps, fps_id=fps_id, motion=motion,
                                      noise_aug=noise_aug, cfg_min=cfg_min, cfg_max=cfg_max, size=size,
                                      resize=resize, decode_chunk=decode_chunk, fmt=fmt, loop=loop,
                                      watermark=watermark, quality=quality, interpolate=interpolate, end=end,
                                      keyframes=keyframes, overlap=overlap, pingpong=pingpong, sampler=sampler,
                                      schedule=schedule, cache=cache)
        engine_setup = options.engine_settings(device, dtype, offload, weights_dtype, attention_slice, decode_overlap,
                                              quiet, compile, lora)
        picture = prepare_image(image, o, p)  # checked before the weights are loaded, then given to the engine
        end_picture = prepare_end(end, picture.size, o) if end else None
        target = output_path(out, image.stem, o.format, overwrite)
        refuse_kept_latents(target, overwrite)
        weights_path = resolve_weights(weights, p)
        split = check_split(gpus, o, device)
    except (PresetError, OptionsError, ImageError, OutputError, WeightsError, ValueError) as x:
        fail(options.user_message(x, options.OPTION_FLAGS))
    if split and "WORLD_SIZE" not in os.environ:  # checked above, so a bad flag is one line, not one per process
        # the seed drawn (and said) here, so that both processes draw the same noise; they say the rest
        raise typer.Exit(torchrun(2, ["--seed", str(options.seed_or_drawn(seed, quiet))]))
    seed = options.announce(warnings, o, picture.size, no_watermark, seed, quiet)
    with ProgressView(err, quiet) as progress:
        engine = options.open_engine(p, weights_path, engine_setup, progress)
        if split_rank() is not None and engine.split_guidance() == 1:  # the second process: it samples alongside
            engine.sample(picture, o, seed, None, end_picture)
            return
        meta = engine.make(image, o, seed, target, progress, picture=picture, save_latents=save_latents,
                           end_picture=end_picture)
    seconds = time.perf_counter() - started
    sidecar = sidecar_path(target, o.format)
    if as_json:
        sys.stdout.write(json.dumps({"output": str(target), "metadata": str(sidecar), "seed": seed,
                                     "frames": meta["frames_written"], "width": meta["width"],
                                     "height": meta["height"], "fps": meta["fps_written"],
                                     "seconds": round(seconds, 2), "unet_calls": meta["unet_calls"],
                                     "flops": meta["flops"]}) + "\n")
    else:
        note(f"wrote {target} ({meta['frames_written']} frames, {meta['width']}x{meta['height']}, "
             f"{meta['fps_written']} fps, {seconds:.1f} s)", quiet)
