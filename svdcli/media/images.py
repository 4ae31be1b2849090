"""Input images: anything Pillow reads, made into the RGB frame the model conditions on."""

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 80_000_000  # larger inputs are refused: decoding alone would take gigabytes
RESIZE_MODES = ("crop", "pad", "stretch")


class ImageError(ValueError):
    """An input image that cannot be used; one line for the user."""


def _to_rgb(im: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """RGB with transparency composited on white (or kept: RGBA); 16-bit and float images scaled to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA", "RGBa") or (im.mode == "L" and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode == "RGBA" and keep_alpha:
        return im
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV, 1


def load_image(path: str | Path, keep_alpha: bool = False) -> Image.Image:
    """Open, apply the EXIF orientation, convert to RGB (RGBA if keep_alpha and the image has transparency).
    Raises ImageError with one line for bad input."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"{p}: {im.width}x{im.height} is too large (limit {MAX_PIXELS // 10**6} MP)")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im, keep_alpha)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{p}: too large to decode safely (Pillow's limit is {Image.MAX_IMAGE_PIXELS // 10**6} MP)") \
            from None
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{p}: corrupt or truncated image ({e})") from None


def fit(im: Image.Image, width: int, height: int, mode: str = "crop") -> Image.Image:
    """crop: scale to cover, centre-crop; pad: scale to fit, centre on black; stretch: ignore the aspect ratio."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")
    if im.size == (width, height):
        return im
    if mode == "stretch":
        return im.resize((width, height), Image.LANCZOS)
    cover = mode == "crop"
    scale = (max if cover else min)(width / im.width, height / im.height)
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    im = im.resize((w, h), Image.LANCZOS)
    if cover:
        left, top = (w - width) // 2, (h - height) // 2
        return im.crop((left, top, left + width, top + height))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(im, ((width - w) // 2, (height - h) // 2))
    return canvas


def auto_size(im: Image.Image, area: int, multiple: int = 64) -> tuple[int, int]:
    """A size with about `area` pixels and the image's aspect ratio, both sides multiples of 64."""
    aspect = im.width / im.height
    h = (area / aspect) ** 0.5
    w = h * aspect
    return max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple)


def to_uint8(x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """Values rounded to the nearest of 256 levels and clipped: values in [0, 1] with the default scale, or values
    already in levels (0..255) with scale 1."""
    return np.clip(x * scale + 0.5, 0, 255).astype(np.uint8)


def to_tensor(im: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1], as the reference converts (ToTensor, then ×2 − 1)."""
    a = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float() / 255
    return a[None] * 2 - 1
