"""`svd generate IMAGE`: image to video."""

import dataclasses
import json
import secrets
import signal
import sys
import time
from pathlib import Path

import typer

from . import app, err, fail, note
from .progress import ProgressView


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so temporary files are cleaned up on SIGTERM as on Ctrl-C


@app.command()
def generate(
    image: Path = typer.Argument(..., help="Input image (any format Pillow reads)."),
    preset: str = typer.Option("svd-xt", help="Preset name (svd, svd-xt, svd-xt-1.1, ...) or a YAML file."),
    weights: str = typer.Option(None, help="Checkpoint file, diffusers folder, or hub repo id in the local cache. "
                                           "Default: the preset's weights from the hub cache."),
    frames: int = typer.Option(None, help="Number of frames (preset: 14 for SVD, 25 for SVD-XT)."),
    steps: int = typer.Option(None, help="Denoising steps."),
    seed: int = typer.Option(None, help="Seed; the same seed gives the same video on any device. Default: random."),
    fps: int = typer.Option(None, help="Playback rate of the file. The model is conditioned on fps - 1 (the "
                                       "reference's convention; diffusers uses it too)."),
    fps_id: int = typer.Option(None, "--fps-id", help="Raw fps conditioning value, for experts (default fps - 1)."),
    motion: int = typer.Option(None, help="Motion bucket id: more motion when higher (trained 0-255; default 127)."),
    noise_aug: float = typer.Option(None, "--noise-aug", help="Noise added to the conditioning image (0.02)."),
    cfg_min: float = typer.Option(None, "--cfg-min", help="Guidance scale of the first frame."),
    cfg_max: float = typer.Option(None, "--cfg-max", help="Guidance scale of the last frame."),
    size: str = typer.Option(None, help="WIDTHxHEIGHT in multiples of 64, or auto (keep the image's aspect at the "
                                        "preset's pixel count). Default: the preset's trained size."),
    resize: str = typer.Option("crop", help="Fit the image by crop (cover, centre-crop), pad or stretch."),
    decode_chunk: str = typer.Option(None, "--decode-chunk", help="Frames decoded at once (lower: less memory), or "
                                     "auto: the most that fit in free memory. Default: the preset's (14)."),
    decode_overlap: int = typer.Option(4, "--decode-overlap", help="Frames shared by neighbouring decode chunks, "
                                       "cross-faded to hide the seams; 0 decodes disjoint chunks like the reference."),
    offload: str = typer.Option("none", help="none, model (each component on the GPU only for its phase) or "
                                             "sequential (U-Net blocks streamed to the GPU one ahead of use)."),
    attention_slice: str = typer.Option("auto", "--attention-slice", help="Tokens per transformer slice: auto "
                                        "(sliced when memory is short), none, or a number. Same results."),
    compile: bool = typer.Option(False, "--compile", help="Compile the U-Net with torch.compile: minutes once per "
                                 "shape, then faster steps (worth it for long runs and batches)."),
    weights_dtype: str = typer.Option(None, "--weights-dtype", help="How the U-Net and image encoder weights are "
                                      "stored: fp32, fp16, bf16, fp8 (1 byte, any device) or int8 (bitsandbytes). "
                                      "Default: the compute dtype."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option("auto", help="Compute dtype: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16."),
    out: str = typer.Option(None, help="Output file or folder. Default: a numbered name in the current folder."),
    fmt: str = typer.Option("mp4", "--format", help="mp4, gif, webp, or png (a folder of frames)."),
    quality: float = typer.Option(8.0, help="MP4 quality, 0-10."),
    loop: bool = typer.Option(False, "--loop", help="Ping-pong: play forward then backward."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    no_watermark: bool = typer.Option(False, "--no-watermark", help="Skip the reference's invisible watermark."),
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, notes or warnings on stderr."),
):
    """Turn an image into a video with Stable Video Diffusion."""
    from ..generation import OptionsError, metadata, prepare_image, render, resolve_options
    from ..images import ImageError
    from ..loader import load
    from ..outputs import OutputError, can_watermark, output_path, watermark_available, write_video
    from ..decoding import auto_chunk
    from ..offload import MODES
    from ..pipeline import VideoPipeline
    from ..quantize import WEIGHT_DTYPES, check_int8
    from ..presets import PresetError, load_preset
    from ..runtime import attention_slice_for, free_memory, resolve_device, resolve_dtype
    from ..safetensors_io import CheckpointError
    from ..weights import WeightsError, resolve_weights, weights_sha256

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    try:
        p = load_preset(preset)
        watermark = not no_watermark and watermark_available()
        o, warnings = resolve_options(p, frames=frames, steps=steps, fps=fps, fps_id=fps_id, motion=motion,
                                      noise_aug=noise_aug, cfg_min=cfg_min, cfg_max=cfg_max, size=size, resize=resize,
                                      decode_chunk=decode_chunk, fmt=fmt, loop=loop, watermark=watermark,
                                      quality=quality)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        if offload not in MODES:
            raise ValueError(f"--offload {offload}: choose one of {', '.join(MODES)}")
        if weights_dtype is not None and weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"--weights-dtype {weights_dtype}: choose one of {', '.join(WEIGHT_DTYPES)}")
        if weights_dtype == "int8":
            check_int8(dev)
        if decode_overlap < 0:
            raise ValueError("--decode-overlap must not be negative")
        if attention_slice == "auto":
            max_tokens = attention_slice_for(free_memory(dev))
        elif attention_slice == "none":
            max_tokens = None
        elif attention_slice.isdigit() and int(attention_slice) > 0:
            max_tokens = int(attention_slice)
        else:
            raise ValueError(f"--attention-slice {attention_slice}: auto, none, or a positive number of tokens")
        picture = prepare_image(image, o, p)
        if o.watermark and not can_watermark(*picture.size):
            note("note: frames under 256x256 pixels cannot carry the invisible watermark; writing without it", quiet)
            o = dataclasses.replace(o, watermark=False)
        target = output_path(out, image.stem, o.format, overwrite)
        weights_path = resolve_weights(weights, p)
    except (PresetError, OptionsError, ImageError, OutputError, WeightsError, ValueError) as e:
        fail(str(e))
    if offload != "none" and dev.type == "cpu":
        note(f"note: --offload {offload} has no effect without an accelerator", quiet)
        offload = "none"
    if o.decode_chunk == 0:  # auto: the most frames whose decoder activations fit in free memory
        o = dataclasses.replace(o, decode_chunk=auto_chunk(o.frames, *picture.size[::-1], free_memory(dev)))
    for w in warnings:
        note(f"warning: {w}", quiet)
    if not no_watermark and not watermark:
        note("note: invisible-watermark is not installed; writing without the watermark", quiet)
    if seed is None:
        seed = secrets.randbelow(2**31)
        note(f"seed {seed}", quiet)

    try:
        with ProgressView(err, quiet) as progress:
            try:
                model = load(weights_path, device=dev if offload == "none" else "cpu", dtype=dt,
                             architecture=p.architecture, weights_dtype=weights_dtype, progress=progress)
            except CheckpointError as e:
                fail(str(e))
            # Sizes beyond the trained one are decoded in tiles of the trained size (blended over 8 latent pixels).
            tile = (p.height // 8, p.width // 8) if picture.size[0] > p.width or picture.size[1] > p.height else None
            pipe = VideoPipeline(model, dev, dt, offload=offload, decode_overlap=decode_overlap,
                                 attention_slice=max_tokens, decode_tile=tile, compile=compile)
            frames_u8, _ = render(pipe, picture, o, seed, progress)
            meta = metadata(o, p, seed, str(image), picture.size, weights_path, weights_sha256(model.files),
                            model.architecture.name, str(dev), str(dt).removeprefix("torch."),
                            weights_dtype=weights_dtype or str(dt).removeprefix("torch."), offload=offload,
                            decode_overlap=decode_overlap, compile=compile)
            progress("write", 0, 1)
            sidecar = write_video(frames_u8, target, o.format, o.fps, meta, o.quality)
            progress("write", 1, 1)
    except KeyboardInterrupt:
        fail("interrupted; no output was written", 130)
    seconds = time.perf_counter() - started
    if as_json:
        sys.stdout.write(json.dumps({"output": str(target), "metadata": str(sidecar), "seed": seed,
                                     "frames": len(frames_u8), "width": picture.size[0], "height": picture.size[1],
                                     "fps": o.fps, "seconds": round(seconds, 2)}) + "\n")
    else:
        note(f"wrote {target} ({len(frames_u8)} frames, {picture.size[0]}x{picture.size[1]}, {o.fps} fps, "
             f"{seconds:.1f} s)", quiet)
