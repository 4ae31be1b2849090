"""Clip curation as in the SVD paper: split at cuts, measure motion, drop what would teach the model the wrong
thing (too short, static, dark or flat), label camera motion. Produces a manifest that train-lora reads."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..media.outputs import atomic_path
from ..media.video_io import FRAME_SUFFIXES, VIDEO_SUFFIXES, VideoError, read_clip
from .motion import brightness_and_contrast, clip_motion, find_cuts, segments


@dataclass
class CurateSettings:
    min_seconds: float = 1.0
    static_quantile: float = 0.1  # drop the clips in the bottom quantile of motion (the paper drops static clips)
    min_motion: float = 0.01  # and any clip below this motion score (fraction of the width per second)
    keep_static: bool = False  # for a "static" camera LoRA
    min_brightness: float = 0.08
    min_contrast: float = 0.04


@dataclass
class ClipRecord:
    clip: str
    source: str
    start: int
    end: int
    start_s: float
    end_s: float
    fps: float
    frames: int
    motion: float
    label: str
    confidence: float
    pan: float
    tilt: float
    zoom: float
    roll: float
    object_motion: float
    brightness: float
    contrast: float
    kept: bool = True
    dropped: str | None = None

    def to_json(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


MANIFEST = "curate.jsonl"  # the manifest's name beside the clips (svd curate's default, train-lora's first look)


def manifest_lines(records: list[ClipRecord]) -> str:
    """The manifest's text: one JSON object per clip."""
    return "".join(json.dumps(r.to_json()) + "\n" for r in records)


def write_manifest(records: list[ClipRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(manifest_lines(records))


def read_manifest(path: Path) -> list[ClipRecord]:
    """The records of a manifest write_manifest wrote; VideoError (one line) for anything else."""
    try:
        return [ClipRecord(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise VideoError(f"{path}: not a curate manifest ({e})") from None


def find_sources(folder: Path) -> list[Path]:
    """Video files, and folders holding frame images, below folder."""
    if folder.is_file():
        return [folder]
    videos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    frame_dirs = sorted({p.parent for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES})
    return videos + frame_dirs


def analyse(source: Path, root: Path) -> list[ClipRecord]:
    frames, fps = read_clip(source)
    name = source.relative_to(root).as_posix() if source != root else source.name
    out = []
    for k, (s, e) in enumerate(segments(len(frames), find_cuts(frames, fps))):
        clip = frames[s:e]
        m = clip_motion(clip, fps)
        b, c = brightness_and_contrast(clip)
        out.append(ClipRecord(f"{name}#{k}", str(source.resolve()), s, e, s / fps, e / fps, fps, e - s, m.score, m.label,
                              m.confidence, m.pan, m.tilt, m.zoom, m.roll, m.object_motion, b, c))
    return out


def apply_filters(records: list[ClipRecord], s: CurateSettings) -> None:
    moving = [r.motion for r in records if r.frames / r.fps >= s.min_seconds]
    floor = float(np.quantile(moving, s.static_quantile)) if moving and s.static_quantile > 0 else 0.0
    for r in records:
        reason = None
        if r.frames / r.fps < s.min_seconds:
            reason = f"too short ({r.frames / r.fps:.2f} s)"
        elif r.brightness < s.min_brightness:
            reason = f"too dark (mean {r.brightness:.2f})"
        elif r.contrast < s.min_contrast:
            reason = f"too flat (contrast {r.contrast:.3f})"
        elif not s.keep_static and (r.motion < s.min_motion or r.motion < floor):
            reason = f"too static (motion {r.motion:.4f})"
        r.kept, r.dropped = reason is None, reason


def curate(folder: str | Path, settings: CurateSettings = CurateSettings(), on_source=None) -> tuple[
        list[ClipRecord], list[tuple[str, str]]]:
    """(clip records, unreadable sources with their error)."""
    root = Path(folder)
    records, errors = [], []
    sources = find_sources(root)
    for i, src in enumerate(sources):
        if on_source:
            on_source(src, i, len(sources))
        try:
            records += analyse(src, root if root.is_dir() else root.parent)
        except VideoError as e:
            errors.append((str(src), str(e)))
    apply_filters(records, settings)
    return records, errors
