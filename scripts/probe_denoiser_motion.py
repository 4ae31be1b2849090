"""Where does a video model lose the motion of its training clips? For windows of a train-lora cache: the camera
zoom/pan of the clip itself, of the one-step denoised estimate D(x0 + σ·ε; σ) at several σ, and of a full sample from
the window's first frame (16 steps, guidance 1→2, as the demo preset samples).

    python scripts/probe_denoiser_motion.py WORK/cache-*.safetensors [--lora FILE] [--windows 0 2 3 5]
    python scripts/probe_denoiser_motion.py WORK/cache-*.safetensors [--lora FILE] --loss

--loss: instead, how well the model fits the windows (all of them unless --windows is given): the training
objective's weighted error λ(σ)·‖D − x0‖² at each σ (one fixed noise draw per window), and, for scale, the same
error of a still prediction that copies the clip's own frame 0 into every frame.

A model that has learned a motion keeps it in D down to high σ; one that has not keeps it only at low σ, where the
noisy input still shows it, and its samples do not move (docs/demo-model.md, "Where the zoom is lost").
"""

import argparse
import glob

import numpy as np
import torch
from safetensors.torch import load_file

from svdcli.video.motion import clip_motion
from svdcli.inference.generation import EngineSettings, open_engine
from svdcli.inference.pipeline import SamplingSettings, conditioning_vector
from svdcli.checkpoints.presets import load_preset
from svdcli.inference.sampling import LinearFrameGuidance, Scalings, edm_sigmas, sample_euler
from svdcli.training.data import motion_bucket_for
from svdcli.checkpoints.weights import resolve_weights

SIGMAS = (0.5, 2.0, 8.0, 30.0)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", help="a train-lora window cache (a glob is fine)")
    ap.add_argument("--weights", default=None, help="default: the demo preset's weights")
    ap.add_argument("--lora", default=None)
    ap.add_argument("--windows", type=int, nargs="+", default=None, help="default: 0 2 3 5; with --loss, all")
    ap.add_argument("--component", choices=["zoom", "pan", "tilt"], default="zoom")
    ap.add_argument("--loss", action="store_true", help="the weighted denoising error by σ instead of the motion")
    a = ap.parse_args()
    cache = load_file(sorted(glob.glob(a.cache))[0])
    preset = load_preset("demo")
    engine = open_engine(preset, resolve_weights(a.weights, preset),
                         EngineSettings("cpu", "fp32", attention_slice="none", decode_overlap=0,
                                        loras=(a.lora,) if a.lora else ()))
    model, pipe = engine.pipe.model, engine.pipe
    fps = float(preset.fps)

    def measured(latents: torch.Tensor) -> float:
        frames = (pipe.decode(latents, len(latents)).frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return getattr(clip_motion(frames, fps), a.component)

    windows = a.windows or (list(range(len(cache["latents"]))) if a.loss else [0, 2, 3, 5])
    errors = {"model": {sig: [] for sig in SIGMAS}, "still": {sig: [] for sig in SIGMAS}}
    if not a.loss:
        print(f"{a.component} per second: clip, D at σ = {', '.join(map(str, SIGMAS))}, sample")
    for w in windows:
        x0 = cache["latents"][w].float()  # (T, 4, h, w) scaled latents
        t = len(x0)
        s = SamplingSettings(frames=t, fps_id=int(cache["fps_id"][w]), noise_aug=float(cache["cond_aug"][w, 0]),
                             motion_bucket_id=motion_bucket_for(float(cache["motion"][w])))
        y = conditioning_vector(model, s)
        cond = cache["cond"][w, 0].float()[None].expand(t, -1, -1, -1)  # (T, 4, h, w) unscaled
        ctx = cache["clip"][w].float()[None, None].expand(t, -1, -1)  # (T, 1, D)
        g = torch.Generator().manual_seed(w)
        eps = torch.randn(x0.shape, generator=g)

        def denoise(x, sigma, cond, ctx, y):
            """D(x; σ) for a batch of videos stacked along the first axis (conditioning given per frame)."""
            sc = Scalings.at(sigma.float())
            out = model.unet(torch.cat([sc.c_in * x, cond], 1), sc.c_noise.expand(len(x)), ctx, y, t)
            return sc.c_skip * x + sc.c_out * out

        def guided(x, sigma):
            """(D_cond, D_uncond) in one batch; the unconditional half has a zero CLIP token and latent."""
            d = denoise(x.repeat(2, 1, 1, 1), sigma, torch.cat([torch.zeros_like(cond), cond]),
                        torch.cat([torch.zeros_like(ctx), ctx]), y.repeat(2, 1))
            return d[t:], d[:t]

        if a.loss:
            still = x0[:1].expand_as(x0)  # (T, 4, h, w): frame 0 everywhere, no motion at all
            for sig in SIGMAS:
                weight = (sig ** 2 + 1) / sig ** 2
                d = denoise(x0 + sig * eps, torch.tensor(sig), cond, ctx, y)
                errors["model"][sig].append(weight * float(((d - x0) ** 2).mean()))
                errors["still"][sig].append(weight * float(((still - x0) ** 2).mean()))
            continue
        row = [measured(x0)]
        row += [measured(denoise(x0 + sig * eps, torch.tensor(sig), cond, ctx, y)) for sig in SIGMAS]
        sample = sample_euler(guided, torch.randn(x0.shape, generator=g), edm_sigmas(16),
                              LinearFrameGuidance(1.0, 2.0).scales(t))
        row.append(measured(sample))
        print(f"window {w}: " + "  ".join(f"{v:+.3f}" for v in row), flush=True)
    if a.loss:
        print(f"weighted error over {len(windows)} windows at σ = {', '.join(map(str, SIGMAS))}")
        for name, e in errors.items():
            print(f"{name:>6}: " + "  ".join(f"{np.mean(e[sig]):.4f}" for sig in SIGMAS))


if __name__ == "__main__":
    main()
