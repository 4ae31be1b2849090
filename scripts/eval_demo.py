"""The demo model's checks (issue 7), measured with the same code as `svd eval`:

- first-frame fidelity: PSNR of frame 0 against the input, on held-out images (procedural scenes from seeds the
  recipe never used, and a natural-looking photo made here);
- motion control: mean flow magnitude for four --motion settings, averaged over seeds;
- camera labels of the base model over seeds (pan/tilt/static vs zoom), and with the demo-zoom LoRA.

    python scripts/eval_demo.py [--weights svdcli/demo/svd-demo.safetensors] [--seeds 20] [--json out.json]
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdcli.evaluate import evaluate  # noqa: E402
from svdcli.generation import prepare_image, render, resolve_options  # noqa: E402
from svdcli.loader import load  # noqa: E402
from svdcli.lora import apply_loras  # noqa: E402
from svdcli.outputs import write_video  # noqa: E402
from svdcli.pipeline import VideoPipeline  # noqa: E402
from svdcli.presets import load_preset  # noqa: E402
from svdcli.procedural import SCENES, scene  # noqa: E402
from svdcli.weights import resolve_weights  # noqa: E402


def natural_photo(w: int = 640, h: int = 480, seed: int = 7) -> Image.Image:
    """A photo-like picture: a sky gradient with a sun, hills at three depths with fine texture, soft shadows,
    sensor noise and JPEG compression; nothing like the training scenes' flat shapes and noise fields."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    sky = np.stack([0.35 + 0.3 * y / h, 0.55 + 0.25 * y / h, 0.9 - 0.2 * y / h], -1)
    img[:] = sky
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


def held_out_images(n: int, w: int, h: int) -> list[Image.Image]:
    rng = np.random.default_rng(123456789)  # not a seed_of() stream the recipe draws from
    out = [natural_photo()]
    for i in range(n - 1):
        a = scene(rng, h, w, SCENES[i % len(SCENES)])
        out.append(Image.fromarray((a * 255 + 0.5).astype(np.uint8)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--motion-seeds", type=int, default=10)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    preset = load_preset("demo")
    weights = resolve_weights(a.weights, preset)
    model = load(weights, device="cpu", dtype=torch.float32, architecture="svd")
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    o, _ = resolve_options(preset, watermark=False)
    tmp = Path(tempfile.mkdtemp())
    images = held_out_images(a.images, preset.width, preset.height)
    for i, im in enumerate(images):
        im.save(tmp / f"in{i}.png")

    def clip(i: int, seed: int, motion: int | None = None, tag: str = "base") -> dict:
        opts = replace(o, motion_bucket=motion) if motion is not None else o
        picture = prepare_image(tmp / f"in{i}.png", opts, preset)
        frames, _ = render(pipe, picture, opts, seed)
        target = tmp / f"{tag}-{i}-{seed}-{motion}.mp4"
        write_video(frames, target, "mp4", opts.fps, {}, 10.0)
        return evaluate(target, tmp / f"in{i}.png")

    t0 = time.perf_counter()
    fidelity = [clip(i, 0)["first_frame_psnr"] for i in range(len(images))]
    settings = (20, 70, 130, 200)
    motion = {m: float(np.mean([clip(s % len(images), s, m, "m")["motion"] for s in range(a.motion_seeds)]))
              for m in settings}
    base = [clip(s % len(images), 1000 + s)["camera"] for s in range(a.seeds)]
    apply_loras(model.unet, model.architecture, ["demo-zoom"], "demo")
    zoom = [clip(s % len(images), 1000 + s, tag="zoom")["camera"] for s in range(a.seeds)]
    frac = lambda labels, kinds: sum(any(x.startswith(k) for k in kinds) for x in labels) / len(labels)  # noqa
    result = {
        "weights": str(weights), "psnr_first_frame": fidelity, "psnr_natural_photo": fidelity[0],
        "psnr_min": min(fidelity), "psnr_mean": float(np.mean(fidelity)),
        "motion_by_bucket": motion, "motion_monotonic": all(motion[x] < motion[y] for x, y in
                                                            zip(settings, settings[1:])),
        "base_labels": base, "base_pan_tilt_static": frac(base, ("pan", "tilt", "static")),
        "base_zoom": frac(base, ("zoom",)), "lora_labels": zoom, "lora_zoom": frac(zoom, ("zoom",)),
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("labels")}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
