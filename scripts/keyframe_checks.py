"""Keyframe clips and loops on the demo model, measured as issue 36 asks (a measurement for choosing the method;
the figures are logged in docs/generate.md, "Keyframes and loops: methods measured").

For each pair of consecutive held-out images (START, END), with the demo preset's frames, steps and guidance:
- fidelity: the first frame's PSNR against the image of a plain generation from START (the model's own);
- first / last: the in-between clip's first frame against START and last against END;
- jump: the largest frame-to-frame difference over the clip's median (a cut shows as a large ratio), for the
  method and for a naive cross-fade of a clip from START and a reversed clip from END;
- end fidelity: the model's own for END (the first frame of a plain generation from END against END), which the
  last frame is compared with;
- loop: a clip with START at both ends: PSNR(first, last), the wrap-around difference (last -> first) over the
  clip's median frame-to-frame difference, and the seam of the written loop (which leaves out the last frame, a
  repeat of the first): second-to-last -> first over the median; motion: that median, in [-1, 1] units.

    python scripts/keyframe_checks.py --method fusion
    python scripts/keyframe_checks.py --method bidirectional
"""

import dataclasses

import argparse

import numpy as np
import torch

from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import resolve_weights
from svdcli.demo.checks import held_out_images
from svdcli.inference.generation import EngineSettings, open_engine, resolve_options
from svdcli.inference.pipeline import KEYFRAME_METHODS
from svdcli.media.images import fit, to_tensor
from svdcli.video.motion import psnr


def steps_between(frames: torch.Tensor) -> torch.Tensor:
    return (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="fusion", choices=KEYFRAME_METHODS)
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    preset = load_preset("demo")
    engine = open_engine(preset, resolve_weights(None, preset),
                         EngineSettings("cpu", "fp32", attention_slice="none", decode_overlap=0))
    pipe = engine.pipe
    plain_settings = resolve_options(preset, watermark=False)[0].sampling()
    settings = dataclasses.replace(plain_settings, keyframes=args.method)
    images = [to_tensor(fit(im, preset.width, preset.height))
              for im in held_out_images(args.pairs + 1, preset.width, preset.height)]

    def frames(latents: torch.Tensor) -> torch.Tensor:
        return pipe.decode(latents.cpu()).frames * 2 - 1

    rows = []
    for i in range(args.pairs):
        start, end = images[i], images[i + 1]
        plain = frames(pipe.sample(start, plain_settings, seed=i))
        plain_end = frames(pipe.sample(end, plain_settings, seed=i))
        clip = frames(pipe.sample(start, settings, seed=i, end=end))
        weight = torch.linspace(1, 0, len(plain)).view(-1, 1, 1, 1)
        fade = weight * plain + (1 - weight) * plain_end.flip(0)
        loop = frames(pipe.sample(start, settings, seed=i, end=start))
        d, d_fade, d_loop = steps_between(clip), steps_between(fade), steps_between(loop)
        written = steps_between(loop[:-1])
        rows.append({"pair": i, "fidelity": psnr(plain[:1], start, peak=2.0),
                     "end_fidelity": psnr(plain_end[:1], end, peak=2.0),
                     "first": psnr(clip[:1], start, peak=2.0), "last": psnr(clip[-1:], end, peak=2.0),
                     "jump": float(d.max() / d.median()), "fade_jump": float(d_fade.max() / d_fade.median()),
                     "loop_psnr": psnr(loop[:1], loop[-1:], peak=2.0),
                     "loop_wrap": float((loop[0] - loop[-1]).abs().mean() / d_loop.median()),
                     "loop_seam": float((loop[0] - loop[-2]).abs().mean() / written.median()),
                     "loop_motion": float(d_loop.median())})
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    for key in rows[0]:
        if key != "pair":
            values = [r[key] for r in rows]
            print(f"{key:>12s}: mean {np.mean(values):.3f}, min {np.min(values):.3f}, max {np.max(values):.3f}")


if __name__ == "__main__":
    main()
