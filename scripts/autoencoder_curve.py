"""How far a longer autoencoder stage gets: the recipe's stage 1 (svdcli.demo_recipe.train_autoencoder) with more
steps or another learning rate, measured on the demo checks' held-out images along the way.

    python scripts/autoencoder_curve.py --steps 1500 --lr 1e-4 [--every 250]

Prints the held-out PSNR of every image and their mean at step 0 (the box-filter codec start) and every --every
steps. A measurement for planning the recipe (docs/demo-model.md); it writes nothing.
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdcli.demo_checks import DemoChecker, autoencoder_psnr  # noqa: E402
from svdcli.demo_recipe import Recipe, autoencoder_start, train_autoencoder  # noqa: E402
from svdcli.models.vae import VAE  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=Recipe.vae_steps)
    ap.add_argument("--lr", type=float, default=Recipe.vae_lr)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--images", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # the checker writes the held-out images there
        pictures = DemoChecker(None, a.images, Path(tmp)).pictures()
    t0 = time.perf_counter()

    def report(step: int, vae: VAE) -> None:
        values = autoencoder_psnr(vae, pictures)
        print(f"step {step:5d}  {time.perf_counter() - t0:6.0f} s  mean {np.mean(values):5.2f} dB  "
              + " ".join(f"{v:5.2f}" for v in values), flush=True)

    r = replace(Recipe(), vae_steps=a.steps, vae_lr=a.lr)
    vae = autoencoder_start(r)
    report(0, vae)

    def progress(kind: str, step: int, steps: int) -> None:
        if kind == "train" and (step % a.every == 0 or step == steps):
            report(step, vae)

    train_autoencoder(r, vae, progress)


if __name__ == "__main__":
    main()
