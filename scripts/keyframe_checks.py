"""Keyframe clips and loops on the demo model, measured as issue 36 asks (a measurement for choosing the method;
the figures are logged in docs/generate.md, "Keyframes and loops: methods measured").

For each pair of consecutive held-out images (START, END), with the demo preset's frames, steps and guidance:
- fidelity: the first frame's PSNR against the image of a plain generation from START (the model's own);
- first / last: the in-between clip's first frame against START and last against END;
- jump: the largest frame-to-frame difference over the clip's median (a cut shows as a large ratio), for the
  method and for a naive cross-fade of a clip from START and a reversed clip from END;
- loop: a clip with START at both ends: PSNR(first, last), and the wrap-around difference (last -> first) over the
  clip's median frame-to-frame difference; motion: that median, in [-1, 1] units.

    python scripts/keyframe_checks.py --method fusion
    python scripts/keyframe_checks.py --method bidirectional --scale 1.0
"""

import argparse

import numpy as np
import torch

from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import resolve_weights
from svdcli.demo.checks import held_out_images
from svdcli.inference.generation import EngineSettings, open_engine, resolve_options
from svdcli.media.images import fit, to_tensor
from svdcli.video.motion import psnr


def steps_between(frames: torch.Tensor) -> torch.Tensor:
    return (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="fusion", choices=["fusion", "bidirectional"])
    ap.add_argument("--scale", type=float, default=1.0, help="bidirectional: the CFG++ scale")
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    preset = load_preset("demo")
    engine = open_engine(preset, resolve_weights(None, preset),
                         EngineSettings("cpu", "fp32", attention_slice="none", decode_overlap=0))
    pipe = engine.pipe
    settings = resolve_options(preset, watermark=False)[0].sampling()
    images = [to_tensor(fit(im, preset.width, preset.height))
              for im in held_out_images(args.pairs + 1, preset.width, preset.height)]

    def frames(latents: torch.Tensor) -> torch.Tensor:
        return pipe.decode(latents.cpu()).frames * 2 - 1

    rows = []
    for i in range(args.pairs):
        start, end = images[i], images[i + 1]
        plain = frames(pipe.sample(start, settings, seed=i))
        clip = frames(pipe.sample_between(start, end, settings, seed=i, scale=args.scale, method=args.method))
        weight = torch.linspace(1, 0, len(plain)).view(-1, 1, 1, 1)
        fade = weight * plain + (1 - weight) * frames(pipe.sample(end, settings, seed=i)).flip(0)
        loop = frames(pipe.sample_between(start, start, settings, seed=i, scale=args.scale, method=args.method))
        d, d_fade, d_loop = steps_between(clip), steps_between(fade), steps_between(loop)
        rows.append({"pair": i, "fidelity": psnr(plain[:1], start, peak=2.0),
                     "first": psnr(clip[:1], start, peak=2.0), "last": psnr(clip[-1:], end, peak=2.0),
                     "jump": float(d.max() / d.median()), "fade_jump": float(d_fade.max() / d_fade.median()),
                     "loop_psnr": psnr(loop[:1], loop[-1:], peak=2.0),
                     "loop_wrap": float((loop[0] - loop[-1]).abs().mean() / d_loop.median()),
                     "loop_motion": float(d_loop.median())})
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    for key in rows[0]:
        if key != "pair":
            values = [r[key] for r in rows]
            print(f"{key:>12s}: mean {np.mean(values):.3f}, min {np.min(values):.3f}, max {np.max(values):.3f}")


if __name__ == "__main__":
    main()
