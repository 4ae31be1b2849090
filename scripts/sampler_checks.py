"""Each sampler on the demo model at equal steps: CPU time, and the cost in fidelity as `svd eval` measures it
(first-frame PSNR against the input, motion score, flicker), the same seeds and images for all (figures logged in
docs/generate.md, "Samplers").

    python scripts/sampler_checks.py [--images 4] [--steps 16]
"""

import argparse
import dataclasses
import time

import numpy as np
import torch

from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import resolve_weights
from svdcli.demo.checks import held_out_images
from svdcli.inference.generation import EngineSettings, frames_to_uint8, open_engine, resolve_options
from svdcli.inference.sampling import SAMPLERS, denoiser_calls
from svdcli.media.images import fit, to_tensor
from svdcli.video.evaluate import evaluate_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="default: the demo preset's")
    args = ap.parse_args()
    preset = load_preset("demo")
    pipe = open_engine(preset, resolve_weights(None, preset), EngineSettings("cpu", "fp32", attention_slice="none")).pipe
    options = resolve_options(preset, steps=args.steps, watermark=False)[0]
    pictures = [fit(im, preset.width, preset.height) for im in held_out_images(args.images, preset.width,
                                                                               preset.height)]
    print(f"demo model, {options.frames} frames at {preset.width}x{preset.height}, {options.steps} steps, "
          f"{args.images} images, seeds 0-{args.images - 1}")
    print("| sampler | U-Net calls | s per clip (sampling) | first-frame PSNR | motion | flicker |")
    print("|---|---|---|---|---|---|")
    for sampler in SAMPLERS:
        settings = dataclasses.replace(options.sampling(), sampler=sampler)
        rows = []
        for i, picture in enumerate(pictures):
            started = time.perf_counter()
            latents = pipe.sample(to_tensor(picture), settings, seed=i)
            seconds = time.perf_counter() - started
            frames = frames_to_uint8(pipe.decode(latents.cpu()).frames)
            m = evaluate_frames(frames, options.fps, np.asarray(picture))
            rows.append((seconds, m["first_frame_psnr"], m["motion"], m["flicker"]))
        s, p, mo, fl = np.mean(rows, axis=0)
        print(f"| {sampler} | {denoiser_calls(sampler, options.steps)} | {s:.2f} | {p:.2f} | {mo:.3f} | {fl:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
