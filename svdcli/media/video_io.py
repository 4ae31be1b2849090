"""Reading clips: a video file (through ffmpeg) or a folder of frame images, whole or streamed frame by frame. The
one reader of the project: curation, evaluation and interpolation read whole clips, training streams the frames
of its windows."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".gif", ".avi", ".m4v")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class VideoError(ValueError):
    """A clip that cannot be read; one line for the user."""


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a folder, in name order."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)


def _frame(path: Path, keep_alpha: bool = False) -> np.ndarray:
    """(H, W, 3) uint8; (H, W, 4) with keep_alpha when the image has transparency (an object cut out per frame)."""
    try:
        with Image.open(path) as im:
            transparent = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            return np.asarray(im.convert("RGBA" if keep_alpha and transparent else "RGB"))
    except OSError as e:
        raise VideoError(f"{path}: unreadable frame ({e})") from None


def _ffmpeg(path: Path):
    """(fps or None, the frames as a generator) of a video file."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration, ValueError) as e:
        raise _unreadable(path, e) from None
    w, h = meta["size"]

    def frames():
        try:
            for f in reader:
                yield np.frombuffer(f, np.uint8).reshape(h, w, 3)
        except (RuntimeError, OSError, ValueError) as e:
            raise _unreadable(path, e) from None
        finally:
            reader.close()

    return meta.get("fps"), frames()


def _unreadable(path: Path, error: Exception) -> VideoError:
    reason = str(error).splitlines()[0][:120] if str(error) else "empty"
    return VideoError(f"{path}: not a video ffmpeg can read ({reason})")


def iter_frames(source: str | Path, last: int | None = None,
                keep_alpha: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame (H, W, 3) uint8) of a video (streamed) or a frame folder, up to frame `last` (None: all).
    keep_alpha: frame images with transparency come as (H, W, 4) (videos are read as RGB)."""
    p = Path(source)
    if p.is_dir():
        for i, name in enumerate(frame_files(p)):
            if last is not None and i > last:
                return
            yield i, _frame(name, keep_alpha)
        return
    if not p.is_file():
        raise VideoError(f"{p}: no such file")
    _, frames = _ffmpeg(p)
    for i, frame in enumerate(frames):
        yield i, frame
        if last is not None and i >= last:
            frames.close()
            return


def read_clip(path: str | Path, default_fps: float = 24.0, keep_alpha: bool = False) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) uint8, fps) from a video file or a folder of frame images (default_fps for folders and
    videos that do not say). keep_alpha: a folder with transparent frames gives (T, H, W, 4), the opaque ones of it
    with alpha 255."""
    p = Path(path)
    if p.is_dir():
        if not frame_files(p):
            raise VideoError(f"{p}: no frame images")
        frames = [f for _, f in iter_frames(p, keep_alpha=keep_alpha)]
        if len({f.shape[:2] for f in frames}) > 1:
            raise VideoError(f"{p}: frames of different sizes")
        if len({f.shape for f in frames}) > 1:  # some frames transparent, some not
            frames = [f if f.shape[2] == 4 else np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in frames]
        return np.stack(frames), default_fps
    if not p.is_file():
        raise VideoError(f"{p}: no such file")
    fps, stream = _ffmpeg(p)
    frames = list(stream)
    if not frames:
        raise VideoError(f"{p}: no frames")
    return np.stack(frames), float(fps or default_fps)


def read_frames(source: str | Path, indices: list[int]) -> dict[int, np.ndarray]:
    """Only the wanted frames of a video or a frame folder."""
    wanted = set(indices)
    out = {i: f for i, f in iter_frames(source, max(wanted)) if i in wanted}
    if len(out) < len(wanted):
        raise VideoError(f"{source}: has fewer frames than the curate manifest says; run curate again")
    return out
