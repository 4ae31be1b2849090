"""`svd 4d VIDEO|FRAMES_DIR`: SV4D, the motion of an object's clip seen from new views, with the cameras of every
view at every time for 4D tools."""

import json
import sys
import time
from pathlib import Path

import typer

from . import options
from .app import command, err, fail, note
from .progress import ProgressView


@command("no output was written", name="4d")
def four_d(
    source: Path = typer.Argument(..., metavar="VIDEO|FRAMES_DIR", help="The object's clip: a video, or a folder of "
                                  "frame images (RGBA cut-outs keep their transparency; RGB frames on a near-uniform "
                                  "background are keyed out)."),
    preset: str = typer.Option("sv4d", help="sv4d (8 new views; runs SV3D_u on the first frame), sv4d2 (4 new "
                                            "views) or sv4d2-8views, or a YAML preset of one."),
    weights: str = options.WEIGHTS,
    orbit_weights: str = typer.Option(None, "--orbit-weights", help="sv4d: the SV3D_u file that makes the first "
                                      "frame's views. Default: the one `svd download sv4d` fetched with SV4D."),
    orbit: Path = typer.Option(None, help="sv4d: an `svd multiview` output folder of the clip's first frame (21 "
                                          "views at this --size), used instead of running SV3D."),
    frames_from: int = typer.Option(None, "--frames-from", help="First frame of the clip to use, 0-based (default "
                                                               "0)."),
    frames_to: int = typer.Option(None, "--frames-to", help="Last frame of the clip to use, inclusive (default the "
                                                           "last). 21 frames are taken evenly spaced from the range."),
    elevation: float = typer.Option(None, help="Camera elevation of every view, degrees above the object's equator "
                                               "(default: sv4d 10, sv4d2 models 0)."),
    elevations: str = typer.Option(None, help="One elevation per view, comma-separated, the input view's first (9 "
                                              "values; 5 for sv4d2)."),
    azimuths: str = typer.Option(None, help="sv4d2 models: the new views' azimuths, comma-separated degrees from the "
                                            "input view in (0, 360) (4 values for sv4d2, 8 for sv4d2-8views)."),
    object_ratio: float = typer.Option(None, "--object-ratio", help="The object's longer side (over the whole clip) "
                                       "as a share of the frame's side (default: sv4d 0.917, sv4d2 models 0.9)."),
    steps: int = options.STEPS,
    seed: int = typer.Option(None, help="Seed; the same seed gives the same views on any device. Default: random."),
    cfg_min: float = typer.Option(None, "--cfg-min", help="Lowest guidance scale (preset: 1.0; sv4d2-8views 1.5)."),
    cfg_max: float = typer.Option(None, "--cfg-max", help="Highest guidance scale (preset: 2.0; sv4d2-8views 2.5)."),
    size: str = typer.Option(None, help="WIDTHxHEIGHT, square, multiples of 64 (default 576x576, the trained size)."),
    decode_chunk: str = typer.Option(None, "--decode-chunk", help="Frames decoded at once (SV4D's and the SV3D "
                                     "orbit's), or auto: as many as fit in free memory (default)."),
    decode_overlap: int = options.DECODE_OVERLAP,
    offload: str = options.OFFLOAD, attention_slice: str = options.ATTENTION_SLICE, compile: bool = options.COMPILE,
    weights_dtype: str = options.WEIGHTS_DTYPE, device: str = options.DEVICE, dtype: str = options.DTYPE,
    out: str = typer.Option(None, help="Output folder. Default: CLIP-NAME_4d_NNNN in the current folder; a path "
                                       "ending in / gets a numbered folder inside it."),
    fmt: str = typer.Option("mp4", "--format", help="The videos: mp4, gif or webp (the frames are PNGs anyway)."),
    fps: int = typer.Option(None, help="Playback rate of the videos (default 10)."),
    quality: float = options.QUALITY,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
    quiet: bool = options.QUIET,
):
    """Turn a clip of an object into the same motion seen from new views with Stable Video 4D, and the cameras to
    reconstruct it in 4D."""
    from ..checkpoints.presets import PresetError, load_preset
    from ..checkpoints.weights import WeightsError, resolve_weights
    from ..inference.decoding import DecodeOutOfMemory
    from ..inference.four_d import LAYOUTS, FourDSettings
    from ..inference.four_d_output import (FourDError, first_frame_orbit, make, prepare_clip, read_frames_range,
                                           read_orbit, sv4d_views)
    from ..inference.generation import OptionsError, parse_decode_chunk, parse_size, resolve_options
    from ..inference.multiview import VIDEO_FORMATS, OrbitError, parse_angles
    from ..media.images import ImageError
    from ..media.outputs import OutputError, output_path
    from ..media.video_io import VideoError
    from ..runtime.settings import SettingsError

    started = time.perf_counter()
    renamed = {"elevations": "--elevation"} if elevation is not None else {}  # the flag the user gave
    try:
        p = load_preset(preset)
        if p.architecture not in LAYOUTS:
            raise PresetError(f"preset {p.name} is {p.architecture}; svd 4d runs sv4d, sv4d2 or sv4d2-8views")
        if fmt not in VIDEO_FORMATS:
            raise OptionsError("format", f"{fmt}: choose one of {', '.join(VIDEO_FORMATS)} (the frames are PNGs "
                               "anyway)")
        fps = p.fps if fps is None else fps
        if fps < 1:
            raise OptionsError("fps", f"{fps}: must be at least 1")
        if not 0 <= quality <= 10:
            raise OptionsError("quality", f"{quality}: must be between 0 and 10")
        width, height = (p.width, p.height) if size is None else (parse_size(size) or (None, None))
        if width is None or width != height:
            raise OptionsError("size", f"{size}: SV4D frames are square, e.g. 576x576")
        if elevation is not None and elevations is not None:
            raise OrbitError("--elevation and --elevations: give one (a single elevation, or one per view)")
        chunk = parse_decode_chunk(decode_chunk) if decode_chunk is not None else None
        settings = FourDSettings.for_model(
            p.architecture, p.steps if steps is None else steps, p.cfg_min if cfg_min is None else cfg_min,
            p.cfg_max if cfg_max is None else cfg_max, p.guidance, elevation,
            tuple(parse_angles(elevations, "--elevations")) if elevations is not None else None,
            tuple(parse_angles(azimuths, "--azimuths")) if azimuths is not None else None, chunk or 0)
        sv3d_step = p.architecture == "sv4d" and orbit is None
        if p.architecture != "sv4d" and (orbit is not None or orbit_weights is not None):
            flag = "--orbit" if orbit is not None else "--orbit-weights"
            raise OrbitError(f"{flag}: {p.name} makes its own first-frame views; only sv4d takes an SV3D orbit")
        ratio = settings.layout.object_ratio if object_ratio is None else object_ratio
        engine_setup = options.engine_settings(device, dtype, offload, weights_dtype, attention_slice, decode_overlap,
                                              quiet, compile)
        target = output_path(out, f"{source.stem}_4d", "png", overwrite)  # a folder, as for --format png
        clip = read_frames_range(source, frames_from, frames_to)
        pictures = prepare_clip(clip, width, ratio, str(source))  # checked before the weights are loaded
        orbit_views = sv4d_views(read_orbit(orbit, width)) if orbit is not None else None
        weights_path = resolve_weights(weights, p)
        if sv3d_step:
            companion = load_preset(p.companion or "sv3d-u")
            if not companion.architecture.startswith("sv3d"):
                raise PresetError(f"preset {p.name}'s companion {companion.name} is {companion.architecture}; its "
                                  "first-frame orbit needs SV3D")
            orbit_weights_path = companion_weights(orbit_weights, companion, p.name)
            # fps_id is not an SV3D_u input; the orbit is conditioning, not output: no watermark
            orbit_options, _ = resolve_options(companion, steps=settings.steps, fps_id=companion.fps_id,
                                               size=f"{width}x{height}", decode_chunk=chunk, watermark=False)
    except (PresetError, OptionsError, SettingsError, OrbitError, FourDError, ImageError, VideoError, OutputError,
            WeightsError, ValueError) as x:
        fail(options.user_message(x, renamed))
    if (width, height) != (p.width, p.height):
        note(f"warning: {width}x{height} is not the trained size {p.width}x{p.height}; results may degrade", quiet)
    seed = options.seed_or_drawn(seed, quiet)
    about = {"input": str(source), "input_frames": list(clip.indices), "input_frame_count": clip.total,
             "object_ratio": ratio}
    try:
        with ProgressView(err, quiet) as progress:
            if sv3d_step:  # SV3D first, freed before SV4D loads
                orbit_views, orbit_meta = first_frame_orbit(
                    lambda: options.open_engine(companion, orbit_weights_path, engine_setup, progress), pictures[0],
                    orbit_options, seed, progress)
                about["orbit"] = {"source": "sv3d", "preset": companion.name, "weights": orbit_meta["weights"],
                                  "weights_sha256": orbit_meta["weights_sha256"], "seed": seed,
                                  "settings": orbit_meta["settings"]}
            elif orbit_views is not None:
                about["orbit"] = {"source": str(orbit)}
            engine = options.open_engine(p, weights_path, engine_setup, progress)
            meta = make(engine, pictures, settings, seed, target, orbit_views, fmt, fps, quality, about=about,
                        progress=progress)
    except DecodeOutOfMemory as e:  # every smaller plan was tried
        fail(f"{e}; no output was written (try --offload model)", 1)
    seconds = time.perf_counter() - started
    views = len(meta["views"])
    if as_json:
        sys.stdout.write(json.dumps({"output": str(target), "grid": str(target / f"grid.{fmt}"),
                                     "transforms": str(target / "transforms.json"), "seed": seed, "views": views,
                                     "frames": meta["frames"], "width": meta["width"], "height": meta["height"],
                                     "seconds": round(seconds, 2)}) + "\n")
    else:
        note(f"wrote {target}/ ({views} views x {meta['frames']} frames, {meta['width']}x{meta['height']}, "
             f"grid.{fmt}, transforms.json, {seconds:.1f} s)", quiet)


def companion_weights(spec: str | None, companion, preset_name: str) -> Path:
    """The SV3D file of SV4D's first-frame orbit: --orbit-weights, else the companion preset's download; missing,
    one line naming the download that fetches both."""
    from ..checkpoints.weights import WeightsError, resolve_weights

    try:
        return resolve_weights(spec, companion)
    except WeightsError as e:
        if spec is not None:
            raise WeightsError(str(e).replace("--weights", "--orbit-weights", 1)) from None
        raise WeightsError(f"{preset_name} makes the first frame's views with {companion.name}, which is not "
                           f"downloaded: run `svd download {preset_name}` (it fetches both), or pass --orbit-weights "
                           "FILE, or --orbit FOLDER (an `svd multiview` orbit of the first frame)") from None
