"""`svd decode LATENTS`: finish a clip from its saved latents, on any device."""

import json
import sys
import time
from pathlib import Path

import typer

from . import options
from .app import command, err, fail, note
from .progress import ProgressView

SUFFIX = ".latents.safetensors"


@command("no output was written")
def decode(
    latents: Path = typer.Argument(..., help="A NAME.latents.safetensors file, written by `svd generate` (or batch, "
                                             "multiview) with --save-latents or when decoding ran out of memory."),
    out: str = typer.Option(None, help="Output file or folder. Default: NAME.<format> beside the latents file."),
    fmt: str = typer.Option(None, "--format", help="mp4, gif, webp or png. Default: the run's."),
    quality: float = typer.Option(None, help="MP4 quality, 0-10. Default: the run's."),
    weights: str = typer.Option(None, help="The checkpoint to take the VAE from. Default: the weights the clip was "
                                           "sampled with, as recorded in the file."),
    device: str = options.DEVICE, decode_chunk: str = options.DECODE_CHUNK,
    decode_overlap: int = typer.Option(None, "--decode-overlap", help="Frames shared by neighbouring decode chunks. "
                                                                      "Default: the run's."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
    quiet: bool = options.QUIET,
):
    """Finish a clip from its saved latents, on any device: the frames its run would have written."""
    import dataclasses

    from ..inference.generation import (LatentsError, OptionsError, decode_saved, options_of, parse_decode_chunk,
                                        read_latents)
    from ..inference.multiview import VIDEO_FORMATS, write_orbit_of
    from ..media.outputs import OutputError, output_path, sidecar_path, write_video
    from ..checkpoints.weights import WeightsError

    started = time.perf_counter()
    try:
        saved, picture, meta = read_latents(latents)
        o = options_of(meta)
        o = dataclasses.replace(o, format=fmt or o.format, quality=o.quality if quality is None else quality)
        chunk = None if decode_chunk is None else parse_decode_chunk(decode_chunk)
        overlap = meta.get("decode_overlap", 0) if decode_overlap is None else decode_overlap
        engine_setup = options.engine_settings(device, "auto", "none", None, "none", overlap, quiet)
        meta = {**meta, "settings": dataclasses.asdict(o)}
        name = latents.name.removesuffix(SUFFIX) if latents.name.endswith(SUFFIX) else latents.stem
        orbit = "multiview" in meta  # svd multiview's run: its folder of views, poses and video
        if orbit and o.format not in VIDEO_FORMATS:
            raise OptionsError("format", f"{o.format}: choose one of {', '.join(VIDEO_FORMATS)} (the views are "
                               "PNGs anyway)")
        folder = orbit or o.format == "png"
        default = latents.parent / (name if folder else f"{name}.{o.format}")
        target = output_path(out or str(default), name, "png" if folder else o.format, overwrite)
        source = Path(weights or meta["weights"]).expanduser()
        if not source.exists():
            raise WeightsError(f"{source}: the weights this clip was sampled with are not here; pass --weights")
    except (LatentsError, OptionsError, OutputError, WeightsError, ValueError) as x:
        fail(options.user_message(x, options.OPTION_FLAGS))
    with ProgressView(err, quiet) as progress:
        engine = options.open_engine(None, source, engine_setup, progress, ("vae",), meta["architecture"])
        if weights and engine.weights_sha256 != meta.get("weights_sha256"):
            note(f"warning: {source} is not the checkpoint this clip was sampled with; the frames will differ from "
                 "the run's", quiet)
        frames, meta = decode_saved(saved, picture, meta, engine, chunk, progress)
        meta["decoded_from"] = str(latents)
        progress("write", 0, 1)
        if orbit:
            write_orbit_of(target, frames, meta)
        else:
            write_video(frames, target, o.format, meta["fps_written"], meta, o.quality)
        progress("write", 1, 1)
    seconds = time.perf_counter() - started
    if as_json:
        sidecar = target / "orbit.json" if orbit else sidecar_path(target, o.format)
        sys.stdout.write(json.dumps({"output": str(target), "metadata": str(sidecar),
                                     "frames": meta["frames_written"], "seconds": round(seconds, 2)}) + "\n")
    else:
        note(f"wrote {target} ({meta['frames_written']} frames, {meta['width']}x{meta['height']}, "
             f"{meta['fps_written']} fps, {seconds:.1f} s)", quiet)
