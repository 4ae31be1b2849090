"""How far a longer or different autoencoder stage gets: the recipe's stage 1 (svdcli.demo.recipe.train_autoencoder's
settings and data) with more steps or other settings, measured on the demo checks' held-out images along the way.

    python scripts/autoencoder_curve.py --steps 1500 --lr 1e-4 [--every 250]
    python scripts/autoencoder_curve.py --batch 1 --steps 4000       # the same compute in smaller steps
    python scripts/autoencoder_curve.py --frame-scale 0.5 --l2 10    # other data, more weight on large errors
    python scripts/autoencoder_curve.py --bounds                     # what the 25 dB bar asks of the hard scenes

Prints the held-out PSNR of every image and their mean at step 0 (the box-filter codec start) and every --every
steps. --bounds trains nothing: it prints the PSNR of Gaussian blurs of the held-out images (how sharp a
reconstruction must be to score a given PSNR) and the shipped autoencoder's PSNR on scenes drawn as the recipe
draws its training clips (at twice the clip's size, seen through the camera's window) instead of at the clip's
size as the held-out ones are. A measurement for planning the recipe (docs/demo-model.md); it writes nothing.
"""

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from svdcli.demo.checks import DemoChecker, autoencoder_psnr, held_out_images
from svdcli.demo.recipe import Recipe, autoencoder_clips, autoencoder_settings, autoencoder_start
from svdcli.media.images import to_tensor
from svdcli.models.vae import VAE
from svdcli.demo.procedural import BASE_CAMERAS, SCENES, Motion, render, scene
from svdcli.runtime.seeds import seed_of
from svdcli.demo.autoencoder import train_vae
from svdcli.video.motion import psnr


def row(values: list[float]) -> str:
    return f"mean {np.mean(values):5.2f} dB  " + " ".join(f"{v:5.2f}" for v in values)


def frame_scale_clip(seed: int, r: Recipe) -> torch.Tensor:
    """A crop of a clip whose scene is drawn at the clip's size, as the held-out scenes are (the recipe's are drawn
    at twice it): shapes half as large, edges twice as dense. (vae_frames, 3, *vae_crop) in [-1, 1]."""
    rng = np.random.default_rng([seed, 7])
    h, w = r.height, r.width
    kind = SCENES[int(rng.integers(len(SCENES)))]
    background = scene(rng, h, w, kind)
    camera = BASE_CAMERAS[int(rng.integers(len(BASE_CAMERAS)))]
    speed = 0.0 if camera == "static" else float(rng.choice((0.04, 0.08, 0.16)))
    clip = render(background, Motion(camera, speed, int(rng.integers(3)), kind), r.vae_frames, r.fps, (h, w), rng)
    ch, cw = r.vae_crop
    y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    return torch.from_numpy(clip[:, y:y + ch, x:x + cw]).permute(0, 3, 1, 2).float() / 127.5 - 1


def bounds(pictures: list[torch.Tensor], vae: VAE, r: Recipe) -> None:
    for sigma in (0.5, 1.0, 1.5, 2.0, 3.0):
        blurred = [torch.from_numpy(cv2.GaussianBlur(x[0].permute(1, 2, 0).numpy(), (0, 0), sigma,
                                                     borderType=cv2.BORDER_REFLECT)).permute(2, 0, 1)[None]
                   for x in pictures]
        print(f"gaussian blur sigma {sigma:3.1f} px      " + row([psnr(b, x, peak=2.0) for b, x in zip(blurred, pictures)]))
    recipe_scale = [to_tensor(im) for im in held_out_images(len(pictures), r.width, r.height, scale=2)[1:]]
    print("shipped autoencoder, held-out scenes   " + row(autoencoder_psnr(vae, pictures)))
    print("shipped autoencoder, scenes at 2x size " + row(autoencoder_psnr(vae, recipe_scale))
          + "  (no photo: noise, gradient, shapes, layered, noise, gradient, shapes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=Recipe.vae_steps)
    ap.add_argument("--lr", type=float, default=Recipe.vae_lr)
    ap.add_argument("--batch", type=int, default=Recipe.vae_batch)
    ap.add_argument("--l2", type=float, help="the L2 term's weight (the recipe's: VAETrainSettings.l2_weight)")
    ap.add_argument("--frame-scale", type=float, default=0.0,
                    help="the share of clips whose scene is drawn at the clip's size, as the held-out scenes are")
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--bounds", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # the checker writes the held-out images there
        checker = DemoChecker(None, a.images, Path(tmp))
        pictures = checker.pictures()
    r = replace(Recipe(), vae_steps=a.steps, vae_lr=a.lr, vae_batch=a.batch)
    if a.bounds:
        return bounds(pictures, checker.model.vae.float(), r)
    t0 = time.perf_counter()

    def report(step: int, vae: VAE) -> None:
        print(f"step {step:5d}  {time.perf_counter() - t0:6.0f} s  " + row(autoencoder_psnr(vae, pictures)),
              flush=True)

    settings = autoencoder_settings(r)
    if a.l2 is not None:
        settings = replace(settings, l2_weight=a.l2)

    def clips(step: int) -> torch.Tensor:
        batch = autoencoder_clips(r, step)
        for j in range(r.vae_batch):  # swap a share of the recipe's clips for frame-scale ones, chosen by seed
            s = seed_of(r.seed, "vae", step, j)
            if np.random.default_rng([s, 9]).random() < a.frame_scale:
                batch[j] = frame_scale_clip(s, r)
        return batch

    vae = autoencoder_start(r)
    report(0, vae)

    def progress(kind: str, step: int, steps: int) -> None:
        if kind == "train" and (step % a.every == 0 or step == steps):
            report(step, vae)

    train_vae(vae, clips, settings, progress)  # the recipe's stage 1 without its latent-scale calibration


if __name__ == "__main__":
    main()
