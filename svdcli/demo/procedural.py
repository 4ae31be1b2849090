"""Procedural video clips with known camera and object motion: training data that needs no download.

A scene (noise textures at several scales, gradients, shapes, layered compositions, or a user's image) is drawn at
twice the clip's size; the camera is a window moving over it by a known pan, tilt or zoom at a known speed, and a
few textured sprites move across the frame in screen space (object motion). Camera conventions are curate's: a
camera panning right moves the content left; speeds are fractions of the frame width per second (pan, tilt) or
log scale per second (zoom), the units of `motion.clip_motion`.

    frames, motion = random_clip(seed=3, frames=14, fps=7, size=(128, 192))
"""

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..media.images import to_uint8

SCENES = ("noise", "gradient", "shapes", "layered")
# The base model's camera moves. Zoom is left out of the demo model's base training data on purpose: a zoom LoRA
# then has something to teach it.
BASE_CAMERAS = ("static", "pan-left", "pan-right", "tilt-up", "tilt-down")
ZOOM_CAMERAS = ("zoom-in", "zoom-out")


@dataclass(frozen=True)
class Motion:
    camera: str  # static, pan-left, pan-right, tilt-up, tilt-down, zoom-in, zoom-out
    speed: float  # pan/tilt: fraction of the frame width per second; zoom: log scale per second; static: 0
    objects: int  # sprites moving across the frame
    scene: str

    @property
    def velocity(self) -> tuple[float, float, float]:
        """Content motion per second (dx, dy as fractions of the width; dz as log scale)."""
        s = self.speed
        return {"static": (0, 0, 0), "pan-right": (-s, 0, 0), "pan-left": (s, 0, 0), "tilt-up": (0, s, 0),
                "tilt-down": (0, -s, 0), "zoom-in": (0, 0, s), "zoom-out": (0, 0, -s)}[self.camera]


def _noise(rng: np.random.Generator, h: int, w: int, scales=(2, 8, 32)) -> np.ndarray:
    """Noise at several scales with amplitude growing with the scale (about 1/f, like photographs): fine detail
    for optical flow to track, without the white-noise energy no 8× autoencoder could keep."""
    img = np.zeros((h, w, 3), np.float32)
    for scale in scales:
        small = rng.random((h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w] * scale * rng.uniform(0.5, 1.0)
    img -= img.min()
    return img / max(img.max(), 1e-6)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * x / w + np.sin(angle) * y / h)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    a, b = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    img = a * (1 - t[..., None]) + b * t[..., None]
    return np.clip(img + 0.15 * (_noise(rng, h, w, (4, 16)) - 0.5), 0, 1)  # texture, so flow can see motion


def _shapes(rng: np.random.Generator, img: np.ndarray, count: int) -> np.ndarray:
    h, w = img.shape[:2]
    for _ in range(count):
        color = tuple(float(c) for c in rng.random(3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(max(3, min(h, w) // 40), max(6, min(h, w) // 8)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(img, (cx, cy), r, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1, cv2.LINE_AA)
        else:
            pts = np.array([[cx + r * math.cos(a), cy + r * math.sin(a)]
                            for a in np.linspace(0, 2 * math.pi, 4)[:3] + rng.uniform(0, 6)], np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    return img


def scene(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]."""
    if kind == "noise":
        return _noise(rng, h, w)
    if kind == "gradient":
        return _gradient(rng, h, w)
    if kind == "shapes":
        return _shapes(rng, _gradient(rng, h, w) * 0.6 + 0.2, 40)
    if kind == "layered":  # a horizon: sky gradient above, textured ground below, objects on top
        img = _gradient(rng, h, w)
        horizon = int(h * rng.uniform(0.35, 0.65))
        img[horizon:] = _noise(rng, h - horizon, w) * rng.random(3).astype(np.float32)
        return _shapes(rng, img, 20)
    raise ValueError(f"scene {kind!r}: choose one of {', '.join(SCENES)}")


def image_scene(path: str | Path, h: int, w: int) -> np.ndarray:
    """A user's image, scaled to cover (h, w) and centre-cropped: (h, w, 3) float32 in [0, 1]."""
    from ..media.images import fit, load_image

    return np.asarray(fit(load_image(path), w, h, "crop"), np.float32) / 255


def sprite(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured disc or box (size, size, 3) and its soft alpha mask (size, size, 1)."""
    tex = _noise(rng, size, size, (2, 4)) * 0.6 + rng.random(3).astype(np.float32) * 0.4
    mask = np.zeros((size, size), np.float32)
    if rng.integers(2):
        cv2.circle(mask, (size // 2, size // 2), size // 2 - 1, 1.0, -1, cv2.LINE_AA)
    else:
        cv2.rectangle(mask, (1, size // 4), (size - 2, 3 * size // 4), 1.0, -1, cv2.LINE_AA)
    return tex, mask[..., None]


def render(background: np.ndarray, motion: Motion, frames: int, fps: float, size: tuple[int, int],
           rng: np.random.Generator) -> np.ndarray:
    """(frames, H, W, 3) uint8: the camera window over `background` (at least twice (H, W)), plus sprites."""
    h, w = size
    bh, bw = background.shape[:2]
    cx, cy = bw / 2, bh / 2
    dx, dy, dz = motion.velocity
    sprites = []
    duration = max(frames - 1, 1) / fps
    for _ in range(motion.objects):
        s = int(rng.integers(max(4, h // 10), max(6, h // 5)))
        tex, mask = sprite(rng, s)
        pos = np.array([rng.uniform(0, w - s), rng.uniform(0, h - s)])
        end = pos + rng.uniform(-0.15, 0.15, 2) * w * duration  # up to 15% of the width per second...
        end = np.clip(end, 0, [w - s, h - s])  # ...and never leaving the frame
        sprites.append((tex, mask, pos, (end - pos) / duration))
    out = []
    for t in range(frames):
        sec = t / fps
        scale = math.exp(dz * sec)
        # Content moves by (dx, dy)·w per second: the window moves the opposite way over the background.
        m = cv2.getRotationMatrix2D((cx - dx * w * sec, cy - dy * w * sec), 0.0, scale)
        m[0, 2] += w / 2 - (cx - dx * w * sec)
        m[1, 2] += h / 2 - (cy - dy * w * sec)
        frame = cv2.warpAffine(background, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for tex, mask, pos, vel in sprites:
            x, y = (int(round(v)) for v in pos + vel * sec)
            region = frame[y:y + tex.shape[0], x:x + tex.shape[1]]
            region[:] = region * (1 - mask) + tex * mask
        out.append(frame)
    return to_uint8(np.stack(out))


def random_clip(seed: int, frames: int, fps: float, size: tuple[int, int], cameras=BASE_CAMERAS,
                speeds=(0.04, 0.08, 0.16), zoom_speeds=(0.1, 0.2, 0.4), max_objects: int = 2,
                images: list[Path] | None = None) -> tuple[np.ndarray, Motion]:
    """One clip from one seed: a scene (or one of `images`), a camera move and its speed, 0..max_objects sprites."""
    rng = np.random.default_rng(seed)
    h, w = size
    camera = cameras[int(rng.integers(len(cameras)))]
    speed = 0.0 if camera == "static" else float(rng.choice(zoom_speeds if camera.startswith("zoom") else speeds))
    if images and rng.random() < 0.5:
        kind = "image"
        background = image_scene(images[int(rng.integers(len(images)))], 2 * h, 2 * w)
    else:
        kind = SCENES[int(rng.integers(len(SCENES)))]
        background = scene(rng, 2 * h, 2 * w, kind)
    motion = Motion(camera, speed, int(rng.integers(max_objects + 1)), kind)
    return render(background, motion, frames, fps, size, rng), motion
