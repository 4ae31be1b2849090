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


def _frame(path: Path) -> np.ndarray:
    try:
        return np.asarray(Image.open(path).convert("RGB"))
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


def iter_frames(source: str | Path, last: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame (H, W, 3) uint8) of a video (streamed) or a frame folder, up to frame `last` (None: all)."""
    p = Path(source)
    if p.is_dir():
        for i, name in enumerate(frame_files(p)):
            if last is not None and i > last:
                return
            yield i, _frame(name)
        return
    if not p.is_file():
        raise VideoError(f"{p}: no such file")
    _, frames = _ffmpeg(p)
    for i, frame in enumerate(frames):
        yield i, frame
        if last is not None and i >= last:
            frames.close()
            return


def read_clip(path: str | Path, default_fps: float = 24.0) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) uint8, fps) from a video file or a folder of frame images (default_fps for folders and
    videos that do not say)."""
    p = Path(path)
    if p.is_dir():
        if not frame_files(p):
            raise VideoError(f"{p}: no frame images")
        frames = [f for _, f in iter_frames(p)]
        if len({f.shape for f in frames}) > 1:
            raise VideoError(f"{p}: frames of different sizes")
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
