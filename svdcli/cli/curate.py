"""`svd curate CLIPS/` and `svd eval VIDEO`."""

import json
import sys
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .app import command, fail, note


@command("no manifest was written")
def curate(
    clips: Path = typer.Argument(..., help="A folder of videos (mp4, mov, webm, mkv, gif) and/or frame folders."),
    out: Path = typer.Option(None, help="Manifest to write (JSONL). Default: CLIPS/curate.jsonl."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="Drop clips shorter than this."),
    static_quantile: float = typer.Option(0.1, "--static-quantile", help="Drop the least-moving fraction of clips."),
    min_motion: float = typer.Option(0.01, "--min-motion", help="Drop clips below this motion score (fraction of "
                                                                 "the frame width per second)."),
    keep_static: bool = typer.Option(False, "--keep-static", help="Keep static clips (for a static-camera LoRA)."),
    min_brightness: float = typer.Option(0.08, "--min-brightness", help="Drop darker clips (mean, 0-1)."),
    min_contrast: float = typer.Option(0.04, "--min-contrast", help="Drop flatter clips (std of brightness, 0-1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest lines on stdout instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Split clips at cuts and fades, label camera motion, and drop short, static, dark or flat clips."""
    from ..video.curate import MANIFEST, CurateSettings, manifest_lines, write_manifest
    from ..video.curate import curate as run

    if not clips.exists():
        fail(f"{clips}: no such folder or file")
    settings = CurateSettings(min_seconds, static_quantile, min_motion, keep_static, min_brightness, min_contrast)
    records, errors = run(clips, settings, on_source=lambda s, i, n: note(f"[{i + 1}/{n}] {s}", quiet or as_json))
    for src, e in errors:
        note(f"skipped: {e}", quiet)
    if not records:
        fail(f"{clips}: no readable clips")
    target = out or (clips if clips.is_dir() else clips.parent) / MANIFEST
    write_manifest(records, target)
    if as_json:
        sys.stdout.write(manifest_lines(records))
        return
    table = Table(title=f"{len(records)} clips from {len(records) and len({r.source for r in records})} sources")
    for col in ("clip", "seconds", "camera", "conf.", "motion", "kept"):
        table.add_column(col)
    for r in records:
        table.add_row(r.clip, f"{r.start_s:.1f}-{r.end_s:.1f}", r.label, f"{r.confidence:.2f}", f"{r.motion:.3f}",
                      "yes" if r.kept else f"no: {r.dropped}")
    if not quiet:
        Console().print(table)
    kept = [r for r in records if r.kept]
    labels = ", ".join(f"{k} {v}" for k, v in Counter(r.label for r in kept).most_common())
    note(f"kept {len(kept)} of {len(records)} clips ({labels}); manifest: {target}", quiet)


@command("nothing was written", name="eval")
def evaluate(
    video: Path = typer.Argument(..., help="A video or a folder of frames."),
    image: Path = typer.Option(None, help="The input image, for first-frame fidelity (PSNR, SSIM)."),
    fps: float = typer.Option(None, help="Frame rate for a folder of frames (default: the video's)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line on stdout."),
):
    """Measure a clip: first-frame fidelity, motion, flicker, consistency, camera motion."""
    from ..video.evaluate import evaluate as run
    from ..media.images import ImageError
    from ..media.video_io import VideoError

    try:
        result = run(video, image, fps)
    except (VideoError, ImageError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(show_header=False)
    for k, v in result.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
