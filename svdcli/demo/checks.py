"""The demo model's checks (issue 7), measured with the code `svd eval` uses on MP4s written as `svd generate`
writes them:

- first-frame fidelity: PSNR of frame 0 against the input, on held-out images (a photo-like picture and procedural
  scenes from a seed stream the recipe never draws from);
- motion control: mean flow magnitude at four --motion settings, averaged over seeds;
- camera labels over seeds: the base model (pan/tilt/static, not zoom) and with the demo-zoom LoRA (zoom).

Used by scripts/eval_demo.py (the full measurement, numbers in docs/demo-model.md) and tests/test_demo.py.
"""

import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..checkpoints.presets import load_preset
from ..checkpoints.weights import resolve_weights
from ..inference.generation import EngineSettings, open_engine, prepare_image, render, resolve_options
from ..inference.lora import apply_loras
from ..media.images import to_tensor, to_uint8
from ..media.outputs import write_video
from ..video.evaluate import evaluate
from ..video.motion import psnr
from .procedural import SCENES, scene

MOTION_SETTINGS = (20, 70, 130, 200)


def natural_photo(w: int = 640, h: int = 480, seed: int = 7) -> Image.Image:
    """A photo-like picture: a sky gradient with a sun, hills at three depths with fine texture, soft shadows,
    sensor noise and JPEG compression; nothing like the training scenes' flat shapes and noise fields.
    (examples/photo.jpg is this picture.)"""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    img[:] = np.stack([0.35 + 0.3 * y / h, 0.55 + 0.25 * y / h, 0.9 - 0.2 * y / h], -1)  # sky
    sun = np.exp(-(((x - 0.75 * w) ** 2 + (y - 0.2 * h) ** 2) / (2 * (0.05 * w) ** 2)))[..., None]
    img = img * (1 - sun) + np.array([1.0, 0.95, 0.8]) * sun
    for depth, (base, color) in enumerate([(0.55, (0.35, 0.45, 0.35)), (0.68, (0.25, 0.45, 0.2)),
                                           (0.82, (0.3, 0.35, 0.15))]):
        phase = rng.uniform(0, 6.28, 3)
        ridge = base * h + 0.05 * h * (np.sin(x / w * 6.28 * (1 + depth) + phase[0])
                                       + 0.5 * np.sin(x / w * 17 + phase[1]) + 0.2 * np.sin(x / w * 53 + phase[2]))
        mask = np.clip((y - ridge) / 3, 0, 1)[..., None]
        texture = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5 + depth)[..., None]
        shade = 0.75 + 0.25 * np.clip(1 - (y - ridge) / (0.3 * h), 0, 1)[..., None]
        img = img * (1 - mask) + mask * np.array(color) * shade * (0.8 + 0.4 * texture)
    img = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1)
    ok, jpg = cv2.imencode(".jpg", (img[..., ::-1] * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return Image.fromarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1])


def held_out_images(n: int, w: int, h: int, scale: int = 1) -> list[Image.Image]:
    """The photo, then procedural scenes of every kind from a seed stream the recipe never uses. scale 2 draws each
    scene at twice (h, w) and keeps its centre, as the recipe's camera sees its training scenes (a measurement of
    scale, scripts/autoencoder_curve.py --bounds; the checks use 1)."""
    rng = np.random.default_rng(123456789)  # not a seed_of() stream
    out = [natural_photo()]
    for i in range(n - 1):
        a = scene(rng, scale * h, scale * w, SCENES[i % len(SCENES)])
        y, x = (scale - 1) * h // 2, (scale - 1) * w // 2
        out.append(Image.fromarray(to_uint8(a[y:y + h, x:x + w])))
    return out


class DemoChecker:
    """Generates with the demo preset in-process (one model load) and measures each clip with `evaluate`."""

    def __init__(self, weights: str | None = None, images: int = 8, workdir: Path | None = None):
        self.preset = load_preset("demo")
        self.weights = resolve_weights(weights, self.preset)
        engine = open_engine(self.preset, self.weights, EngineSettings("cpu", "fp32", attention_slice="none",
                                                                       decode_overlap=0))
        self.model, self.pipe = engine.pipe.model, engine.pipe
        self.options, _ = resolve_options(self.preset, watermark=False)
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="svd-demo-checks-"))
        self.images = []
        for i, im in enumerate(held_out_images(images, self.preset.width, self.preset.height)):
            im.save(self.dir / f"in{i}.png")
            self.images.append(self.dir / f"in{i}.png")
        self.lora = False
        self.measured = {}  # (lora, image, seed, motion) -> evaluate's result: checks that share clips make them once

    def clip(self, image: int, seed: int, motion: int | None = None) -> dict:
        key = (self.lora, image, seed, motion)
        if key not in self.measured:
            self.measured[key] = self._measure(image, seed, motion)
        return self.measured[key]

    def _measure(self, image: int, seed: int, motion: int | None) -> dict:
        o = replace(self.options, motion_bucket=motion) if motion is not None else self.options
        frames, _ = render(self.pipe, prepare_image(self.images[image], o, self.preset), o, seed)
        target = self.dir / f"{'zoom' if self.lora else 'base'}-{image}-{seed}-{motion}.mp4"
        write_video(frames, target, "mp4", o.fps, {}, 10.0)
        return evaluate(target, self.images[image])

    def fidelity(self) -> list[float]:
        return [self.clip(i, 0)["first_frame_psnr"] for i in range(len(self.images))]

    def pictures(self) -> list[torch.Tensor]:
        """The held-out images as generation prepares them, each (1, 3, H, W) in [-1, 1]."""
        return [to_tensor(prepare_image(path, self.options, self.preset)) for path in self.images]

    def autoencoder_fidelity(self) -> list[float]:
        """The shipped autoencoder's PSNR on the held-out images: the ceiling for first-frame fidelity."""
        return autoencoder_psnr(self.model.vae, self.pictures())

    def motion(self, seeds: int) -> dict[int, float]:
        return {m: float(np.mean([self.clip(s % len(self.images), s, m)["motion"] for s in range(seeds)]))
                for m in MOTION_SETTINGS}

    def cameras(self, seeds: int) -> list[str]:
        return [self.clip(s % len(self.images), 1000 + s)["camera"] for s in range(seeds)]

    def use_zoom_lora(self) -> None:
        apply_loras(self.model.unet, self.model.architecture, ["demo-zoom"], "demo")
        self.lora = True


@torch.no_grad()
def autoencoder_psnr(vae, pictures: list[torch.Tensor]) -> list[float]:
    """PSNR of decode(encode(x)) for each picture (1, 3, H, W): frame 0 of a 3-frame still clip, since the temporal
    decoder sees neighbouring frames."""
    was_training = vae.training
    vae.eval()
    out = [psnr(vae.decode(vae.encode(x).repeat(3, 1, 1, 1), 3)[:1].clamp(-1, 1), x, peak=2.0) for x in pictures]
    vae.train(was_training)
    return out


def share(labels: list[str], kinds: tuple[str, ...]) -> float:
    """The fraction of camera labels that start with one of `kinds` (e.g. "pan" matches "pan-left")."""
    return sum(any(x.startswith(k) for k in kinds) for x in labels) / len(labels)


def monotonic(motion: dict[int, float]) -> bool:
    values = [motion[m] for m in sorted(motion)]
    return all(a < b for a, b in zip(values, values[1:]))
