"""Synthetic clips made by the tests: textured images moved by known camera motions, plus cuts and fades."""

import math

import cv2
import numpy as np


def texture(seed: int, h: int = 360, w: int = 640) -> np.ndarray:
    """Noise at several scales plus shapes: trackable everywhere, like a photo."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale in (4, 16, 64):
        small = rng.random((h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w] * (scale / 84)
    img = img / img.max() * 200
    for _ in range(25):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(8, 40)), c, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def camera_clip(kind: str, frames: int = 24, fps: float = 12.0, seed: int = 0, speed: float = 1.0,
                size: tuple[int, int] = (192, 320)) -> np.ndarray:
    """A clip of `kind` (static, pan-left, pan-right, tilt-up, tilt-down, zoom-in, zoom-out, roll), cropped from
    a larger texture so the motion never runs out of picture."""
    h, w = size
    big = texture(seed, h * 2, w * 2)
    cy, cx = h, w
    out = []
    for t in range(frames):
        s = t / fps * speed
        dx = dy = 0.0
        scale, angle = 1.0, 0.0
        if kind == "pan-right":
            dx = 0.12 * w * s  # camera moves right: crop window moves right, content moves left
        elif kind == "pan-left":
            dx = -0.12 * w * s
        elif kind == "tilt-up":
            dy = -0.12 * w * s  # camera tilts up: window moves up, content moves down
        elif kind == "tilt-down":
            dy = 0.12 * w * s
        elif kind == "zoom-in":
            scale = math.exp(0.25 * s)
        elif kind == "zoom-out":
            scale = math.exp(-0.25 * s)
        elif kind == "roll":
            angle = 12 * s
        m = cv2.getRotationMatrix2D((cx + dx, cy + dy), angle, scale)
        m[0, 2] += w / 2 - (cx + dx)
        m[1, 2] += h / 2 - (cy + dy)
        frame = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out.append(frame)
    clip = np.stack(out)
    if kind == "static":  # sensor noise, so static is not trivially identical frames
        rng = np.random.default_rng(seed + 99)
        clip = np.clip(clip.astype(np.int16) + rng.integers(-3, 4, clip.shape), 0, 255).astype(np.uint8)
    return clip


def fade(a: np.ndarray, b: np.ndarray, length: int) -> np.ndarray:
    """a, then a cross-dissolve of `length` frames into b, then b."""
    w = np.linspace(0, 1, length + 2)[1:-1, None, None, None]
    mid = (a[-1][None].astype(np.float32) * (1 - w) + b[0][None].astype(np.float32) * w).astype(np.uint8)
    return np.concatenate([a, mid, b])
