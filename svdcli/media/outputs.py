"""Writing videos that just work: H.264 MP4, GIF, WebP, or a folder of PNG frames, each with its settings inside
and in a sidecar JSON. Everything is written to a temporary name beside the target and renamed when complete, so an
interrupted run never leaves a partial file under the final name."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

FORMATS = ("mp4", "gif", "webp", "png")
WATERMARK_BITS = [int(b) for b in format(0xB3EC907BB19E, "048b")]  # the reference's 48-bit message


class OutputError(ValueError):
    """An output that cannot be written as asked; one line for the user."""


def ping_pong(frames: np.ndarray) -> np.ndarray:
    """Forward then backward, without repeating the end frames: a seamless loop."""
    return np.concatenate([frames, frames[-2:0:-1]]) if len(frames) > 2 else frames


def watermark_available() -> bool:
    try:
        import imwatermark  # noqa: F401
    except ImportError:
        return False
    return True


def can_watermark(width: int, height: int) -> bool:
    """invisible-watermark refuses frames of fewer than 256×256 pixels."""
    return width * height >= 256 * 256


def apply_watermark(frames: np.ndarray) -> np.ndarray:
    """The reference's invisible watermark: invisible-watermark's dwtDct with the fixed 48-bit message, per frame,
    on BGR uint8 arrays (the reference flips RGB to BGR before encoding)."""
    from imwatermark import WatermarkEncoder

    enc = WatermarkEncoder()
    enc.set_watermark("bits", WATERMARK_BITS)
    return np.stack([enc.encode(np.ascontiguousarray(f[:, :, ::-1]), "dwtDct")[:, :, ::-1] for f in frames])


def sidecar_path(target: Path, fmt: str) -> Path:
    """The JSON beside an output: `NAME.json` for a file NAME.ext, `NAME.json` for a folder of PNGs NAME."""
    return target.with_name(target.name + ".json") if fmt == "png" else target.with_suffix(".json")


def remove_partials(target: Path, fmt: str) -> None:
    """Temporary files that a killed run left for target and its sidecar (names made by atomic_path)."""
    for t in (target, sidecar_path(target, fmt)):
        for p in t.parent.glob(f".{t.name}.*.partial*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def latents_path(target: Path) -> Path:
    """NAME.latents.safetensors beside an output NAME.mp4 (NAME.gif, NAME.webp) or folder NAME: where a run keeps
    its sampled latents (generation.py)."""
    name = target.stem if target.suffix.lower() in tuple(f".{f}" for f in FORMATS) else target.name
    return target.with_name(name + ".latents.safetensors")


def numbered_path(directory: Path, stem: str, suffix: str) -> Path:
    """The first `{stem}_NNNN{suffix}` in directory that does not exist (nor its sidecar, nor kept latents)."""
    n = 1
    while True:
        p = directory / f"{stem}_{n:04d}{suffix}"
        if not any(q.exists() for q in (p, p.with_name(p.name + ".json"), p.with_suffix(".json"), latents_path(p))):
            return p
        n += 1


def output_path(out: str | None, stem: str, fmt: str, overwrite: bool) -> Path:
    """Where to write. No --out: a numbered name in the current folder. A folder: a numbered name inside it.
    A file name: used as given, refused if it exists unless overwrite."""
    suffix = "" if fmt == "png" else f".{fmt}"
    if out is None:
        return numbered_path(Path.cwd(), stem, suffix)
    p = Path(out).expanduser()
    if p.is_dir() and fmt != "png" or out.endswith(os.sep):
        p.mkdir(parents=True, exist_ok=True)
        return numbered_path(p, stem, suffix)
    if fmt != "png" and p.suffix.lower() != suffix:
        raise OutputError(f"--out {out}: the name must end in {suffix} for --format {fmt}")
    if p.exists() and not overwrite:
        raise OutputError(f"{p} exists; pass --overwrite to replace it, or choose another --out")
    if not p.parent.exists():
        raise OutputError(f"{p.parent}: no such folder")
    return p


def refuse_kept_latents(target: Path, overwrite: bool) -> None:
    """A run that samples into `target` would replace the latents an earlier run could not decode: refused unless
    overwrite (their clip is finished with `svd decode`)."""
    kept = latents_path(target)
    if kept.exists() and not overwrite:
        raise OutputError(f"{kept} holds the latents of an earlier run; finish it with `svd decode {kept}`, or pass "
                          "--overwrite to replace them, or choose another --out")


def _default_mode(is_dir: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if is_dir else 0o666) & ~umask


@contextmanager
def atomic_path(target: Path, is_dir: bool = False) -> Iterator[Path]:
    """A temporary path beside target, renamed over target only when the block completes. The result gets the
    usual permissions (mkstemp's temporary file is private, 0600, which would hide outputs from other users)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    if is_dir:
        tmp.unlink()
        tmp.mkdir()
    try:
        yield tmp
        os.chmod(tmp, _default_mode(is_dir))
        if is_dir and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def write_mp4(frames: np.ndarray, path: Path, fps: float, metadata: dict, quality: float = 8.0) -> None:
    import imageio_ffmpeg

    t, h, w, _ = frames.shape
    comment = json.dumps(metadata, separators=(",", ":"))
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=quality, macro_block_size=2,
        output_params=["-f", "mp4", "-movflags", "+faststart", "-metadata", f"comment={comment}",
                       "-metadata", "encoder=svd"], ffmpeg_log_level="error")
    writer.send(None)
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()


def write_animation(frames: np.ndarray, path: Path, fps: float, metadata: dict, fmt: str) -> None:
    images = [Image.fromarray(f) for f in frames]
    duration = round(1000 / fps)
    comment = json.dumps(metadata, separators=(",", ":"))
    if fmt == "gif":
        images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                       comment=comment.encode(), optimize=False)
    else:
        exif = Image.Exif()
        exif[0x010E] = comment  # ImageDescription
        images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=duration, loop=0,
                       quality=90, method=4, exif=exif.tobytes())


def png_info(metadata: dict) -> PngImagePlugin.PngInfo:
    """svd's metadata as a PNG text chunk ("svd": compact JSON), the one place PNG outputs carry it."""
    info = PngImagePlugin.PngInfo()
    info.add_text("svd", json.dumps(metadata, separators=(",", ":")))
    return info


def write_png_frames(frames: np.ndarray, folder: Path, metadata: dict) -> None:
    info = png_info(metadata)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i:04d}.png", pnginfo=info)


def write_video(frames: np.ndarray, target: Path, fmt: str, fps: float, metadata: dict,
                quality: float = 8.0) -> Path:
    """frames: (T, H, W, 3) uint8. Writes target atomically, then its sidecar `.json`; returns the sidecar path."""
    if fmt not in FORMATS:
        raise OutputError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    with atomic_path(target, is_dir=fmt == "png") as tmp:
        if fmt == "mp4":
            write_mp4(frames, tmp, fps, metadata, quality)
        elif fmt == "png":
            write_png_frames(frames, tmp, metadata)
        else:
            write_animation(frames, tmp, fps, metadata, fmt)
    sidecar = sidecar_path(target, fmt)
    with atomic_path(sidecar) as tmp_json:
        tmp_json.write_text(json.dumps(metadata, indent=2) + "\n")
    return sidecar
