"""`svd interpolate VIDEO|FRAMES_DIR`: raise a clip's frame rate with optical-flow interpolation, offline."""

import json
import sys
import time
from pathlib import Path

import typer

from . import options
from .app import command, err, fail, note
from .progress import ProgressView

SUFFIX_FORMATS = {".mp4": "mp4", ".gif": "gif", ".webp": "webp"}


@command("no output was written")
def interpolate(
    source: Path = typer.Argument(..., help="A video (mp4, mov, webm, mkv, gif, webp, ...) or a folder of frames."),
    factor: int = typer.Option(None, help="Frames out per frame in: 2, 3, 4, 8, ... (default 2). Every original "
                                          "frame is kept; the new ones fall evenly between them."),
    fps: float = typer.Option(None, help="Target frame rate instead of --factor, e.g. 24: frames are made at "
                                         "exactly that rate (originals are kept where their times fall on it)."),
    source_fps: float = typer.Option(None, "--source-fps", help="Frame rate of the input. Default: the video's; "
                                     "for a folder of frames, the rate svd recorded for it, else 24."),
    loop: bool = typer.Option(False, "--loop", help="Also interpolate from the last frame back to the first, for "
                                                    "a seamless loop."),
    out: str = typer.Option(None, help="Output file or folder. Default: a numbered name in the current folder."),
    fmt: str = typer.Option(None, "--format", help="mp4, gif, webp, or png (a folder of frames). Default: from "
                                                   "--out's extension, else the input's (mp4 for other videos)."),
    quality: float = options.QUALITY,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
    quiet: bool = options.QUIET,
):
    """Raise the frame rate of a clip with optical-flow interpolation (no downloaded weights)."""
    from ..video.interpolate import InterpolateError, metadata, read_source, resolve_ratio
    from ..video.interpolate import interpolate as run
    from ..media.video_io import VideoError
    from ..media.outputs import FORMATS, OutputError, output_path, sidecar_path, write_video

    started = time.perf_counter()
    fmt = fmt or SUFFIX_FORMATS.get(Path(out or "").suffix.lower()) or \
        ("png" if source.is_dir() else SUFFIX_FORMATS.get(source.suffix.lower(), "mp4"))
    try:
        if fmt not in FORMATS:
            raise OutputError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        if not 0 <= quality <= 10:
            raise OutputError(f"--quality {quality}: must be between 0 and 10")
        frames, clip_fps, source_meta = read_source(source, source_fps)
        ratio = resolve_ratio(len(frames), clip_fps, factor, fps)
        out_fps = fps if fps is not None else clip_fps * ratio
        target = output_path(out, f"{source.stem}_{out_fps:.4g}fps", fmt, overwrite)
    except (VideoError, InterpolateError, OutputError) as x:
        fail(str(x))
    with ProgressView(err, quiet) as progress:
        result = run(frames, clip_fps, factor=factor, target_fps=fps, loop=loop, progress=progress)
        meta = metadata(source, result, source_meta)
        progress("write", 0, 1)
        write_video(result.frames, target, fmt, result.fps, meta, quality)
        progress("write", 1, 1)
    seconds = time.perf_counter() - started
    t, h, w, _ = result.frames.shape
    if result.record["blended_pairs"]:
        note(f"note: {result.record['blended_pairs']} frame pair(s) share too little for flow (a cut?); their new "
             "frames are plain blends", quiet)
    if as_json:
        sys.stdout.write(json.dumps({"output": str(target), "metadata": str(sidecar_path(target, fmt)),
                                     "frames": t, "source_frames": len(frames), "fps": result.fps,
                                     "source_fps": clip_fps, "width": w, "height": h,
                                     "seconds": round(seconds, 2)}) + "\n")
    else:
        note(f"wrote {target} ({t} frames from {len(frames)}, {result.fps:.4g} fps, {w}x{h}, {seconds:.1f} s)", quiet)
