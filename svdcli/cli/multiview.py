"""`svd multiview IMAGE`: SV3D orbit views of an object, with camera poses for 3D tools."""

import json
import sys
import time
from pathlib import Path

import typer

from . import options
from .app import command, err, fail, note
from .progress import ProgressView


@command("no output was written")
def multiview(
    image: Path = typer.Argument(..., help="The object: an RGBA cut-out, or an RGB photo on a near-uniform "
                                           "background (keyed out automatically)."),
    preset: str = typer.Option(None, help="sv3d-u (no camera input) or sv3d-p (camera-conditioned), or a YAML "
                                          "preset of either. Default: sv3d-p when a camera flag is given, else "
                                          "sv3d-u."),
    weights: str = options.WEIGHTS,
    elevation: float = typer.Option(None, help="SV3D_p: camera elevation of every view, degrees above the object's "
                                               "equator (default 10, the reference's)."),
    elevations: str = typer.Option(None, help="SV3D_p: one elevation per view (21 values, comma-separated)."),
    azimuths: str = typer.Option(None, help="SV3D_p: one azimuth per view (21 values in [0, 360), increasing); the "
                                            "last view is the input photo. Default: an even full turn."),
    orbit: str = typer.Option(None, help="SV3D_p preset orbits: turn (an even full turn at --elevation) or dynamic "
                                         "(the same turn with a smooth ±10° elevation wobble)."),
    object_ratio: float = typer.Option(None, "--object-ratio", help="The object's longer side as a share of the "
                                                                   "view's side (default 0.85)."),
    fov: float = typer.Option(None, help="Field of view written to transforms.json, degrees (default 33.8; see "
                                         "docs/multiview.md)."),
    radius: float = typer.Option(None, help="Camera distance from the object's centre written to transforms.json "
                                            "(default 2)."),
    frames: int = typer.Option(None, help="Number of views (SV3D was trained on 21)."),
    steps: int = options.STEPS,
    seed: int = typer.Option(None, help="Seed; the same seed gives the same views on any device. Default: random."),
    noise_aug: float = options.NOISE_AUG,
    cfg_min: float = typer.Option(None, "--cfg-min", help="Guidance at the first and last views (1.0)."),
    cfg_max: float = typer.Option(None, "--cfg-max", help="Guidance at the middle view (2.5)."),
    size: str = typer.Option(None, help="WIDTHxHEIGHT, square, multiples of 64 (default 576x576, the trained size)."),
    decode_chunk: str = options.DECODE_CHUNK, decode_overlap: int = options.DECODE_OVERLAP,
    offload: str = options.OFFLOAD, attention_slice: str = options.ATTENTION_SLICE, compile: bool = options.COMPILE,
    weights_dtype: str = options.WEIGHTS_DTYPE, device: str = options.DEVICE, dtype: str = options.DTYPE,
    out: str = typer.Option(None, help="Output folder. Default: IMAGE-NAME_orbit_NNNN in the current folder; a "
                                       "path ending in / gets a numbered folder inside it."),
    fmt: str = typer.Option("mp4", "--format", help="Orbit video: mp4, gif or webp."),
    fps: int = typer.Option(None, help="Playback rate of the orbit video (default 10)."),
    quality: float = options.QUALITY,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    no_watermark: bool = options.NO_WATERMARK,
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
    quiet: bool = options.QUIET,
):
    """Turn one object image into views around it with Stable Video 3D, and the camera poses to reconstruct it."""
    from ..inference.generation import OptionsError, resolve_options
    from ..media.images import ImageError
    from ..inference.multiview import (FOV_DEG, OBJECT_RATIO, RADIUS, VIDEO_FORMATS, Camera, OrbitError, make,
                                       make_orbit, prepare_object)
    from ..media.outputs import OutputError, output_path, refuse_kept_latents, watermark_available
    from ..checkpoints.presets import PresetError, load_preset
    from ..checkpoints.weights import WeightsError, resolve_weights

    started = time.perf_counter()
    camera_flags = any(v is not None for v in (elevation, elevations, azimuths, orbit))
    try:
        p = load_preset(preset or ("sv3d-p" if camera_flags else "sv3d-u"))
        if p.architecture not in ("sv3d_u", "sv3d_p"):
            raise PresetError(f"preset {p.name} is {p.architecture}; svd multiview runs SV3D (sv3d-u or sv3d-p)")
        if fmt not in VIDEO_FORMATS:
            raise OptionsError("format", f"{fmt}: choose one of {', '.join(VIDEO_FORMATS)} (the views are PNGs anyway)")
        watermark = not no_watermark and watermark_available()
        # fps_id is not an SV3D input: pinned so that --fps only sets the playback rate.
        o, warnings = resolve_options(p, frames=frames, steps=steps, fps=fps, fps_id=p.fps_id, noise_aug=noise_aug,
                                      cfg_min=cfg_min, cfg_max=cfg_max, size=size, decode_chunk=decode_chunk,
                                      fmt=fmt, watermark=watermark, quality=quality)
        if o.width is None or o.width != o.height:
            raise OptionsError("size", f"{size}: SV3D views are square, e.g. 576x576")
        path = make_orbit(o.frames, p.architecture == "sv3d_p", elevation, elevations, azimuths, orbit)
        camera = Camera(FOV_DEG if fov is None else fov, RADIUS if radius is None else radius)
        object_ratio = OBJECT_RATIO if object_ratio is None else object_ratio
        camera.check()
        engine_setup = options.engine_settings(device, dtype, offload, weights_dtype, attention_slice, decode_overlap,
                                              quiet, compile)
        picture = prepare_object(image, o.width, object_ratio)  # checked before the weights are loaded
        target = output_path(out, f"{image.stem}_orbit", "png", overwrite)  # a folder, as for --format png
        refuse_kept_latents(target, overwrite)
        weights_path = resolve_weights(weights, p)
    except (PresetError, OptionsError, OrbitError, ImageError, OutputError, WeightsError, ValueError) as x:
        fail(options.user_message(x, options.OPTION_FLAGS))
    if o.frames != 21:
        warnings.append(f"{o.frames} views: SV3D was trained on 21")
    seed = options.announce(warnings, o, picture.size, no_watermark, seed, quiet)
    with ProgressView(err, quiet) as progress:
        engine = options.open_engine(p, weights_path, engine_setup, progress)
        meta = make(engine, image, picture, o, path, seed, target, camera, object_ratio, progress)
    seconds = time.perf_counter() - started
    if as_json:
        sys.stdout.write(json.dumps({"output": str(target), "video": str(target / f"orbit.{o.format}"),
                                     "transforms": str(target / "transforms.json"), "seed": seed,
                                     "views": meta["frames_written"], "width": meta["width"],
                                     "height": meta["height"], "seconds": round(seconds, 2)}) + "\n")
    else:
        note(f"wrote {target}/ ({meta['frames_written']} views, {meta['width']}x{meta['height']}, orbit.{o.format}, "
             f"transforms.json, {seconds:.1f} s)", quiet)
