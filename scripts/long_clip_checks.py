"""Clips longer than a window on the demo model, measured as issue 36 asks (figures logged in docs/generate.md,
"Long clips: measured").

For each held-out image, with the demo preset (14-frame windows at 192x128, 16 steps), a clip of 3 windows' length:
- windows: svd's sampler (windows sharing --overlap frames, pinned; pipeline.VideoPipeline.sample);
- chain: the naive way, a clip from the image, then a clip from its decoded last frame, and so on, each joined
  without its first frame (a repeat of the last one);
and for both:
- join: at each join, the frame-to-frame difference over the median difference elsewhere (the largest over the
  joins); a jump at a join shows as a large ratio. The joins of the windows are both edges of every overlap (a
  window's first frame, and the first frame after the window before); the chain's, where its clips meet;
- drift: how far the mean colour of the last window's frames is from the first window's (RGB, 0-255);
- motion: the median frame-to-frame difference (0-255), so that a still clip does not pass for a smooth one.
--memory: the peak resident memory of `svd generate` (the demo model on the CPU) for one window and for the long
clip, each in its own process.

    python scripts/long_clip_checks.py [--overlap 4] [--images 5] [--memory]
"""

import argparse
import dataclasses
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import resolve_weights
from svdcli.demo.checks import held_out_images
from svdcli.inference.decoding import temporal_windows
from svdcli.inference.generation import EngineSettings, open_engine, resolve_options
from svdcli.media.images import fit, to_tensor


def differences(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each frame to the next, 0-255 units; frames in [0, 1]."""
    return 255 * (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))


def measure(frames: torch.Tensor, joins: list[int], window: int) -> dict:
    """joins: index of each join's first new frame."""
    d = differences(frames)
    inside = torch.ones(len(d), dtype=torch.bool)
    inside[[j - 1 for j in joins]] = False
    colour = lambda part: 255 * part.mean(dim=(0, 2, 3))  # noqa: E731
    return {"join": float(max(d[j - 1] for j in joins) / d[inside].median()),
            "drift": float((colour(frames[-window:]) - colour(frames[:window])).norm()),
            "motion": float(d.median())}


def peak_memory(args: list[str]) -> float:
    """Peak resident memory (GiB) of `python -m svdcli generate ARGS` in a process of its own."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "svdcli", "generate", *args],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 2 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--windows", type=int, default=3, help="clip length in windows")
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    preset = load_preset("demo")
    window, frames = preset.frames, args.windows * preset.frames
    if args.memory:
        with tempfile.TemporaryDirectory() as folder:
            image = Path(folder) / "image.png"
            fit(held_out_images(1, preset.width, preset.height)[0], preset.width, preset.height).save(image)
            common = [str(image), "--preset", "demo", "--device", "cpu", "--no-watermark", "--quiet", "--seed", "0"]
            one = peak_memory([*common, "--out", f"{folder}/one.mp4"])
            long = peak_memory([*common, "--frames", str(frames), "--out", f"{folder}/long.mp4"])
        print(f"peak RSS: one window ({window} frames) {one:.2f} GiB, {frames} frames {long:.2f} GiB, "
              f"ratio {long / one:.3f}")
        return
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    engine = open_engine(preset, resolve_weights(None, preset),
                         EngineSettings("cpu", "fp32", attention_slice="none"))
    pipe = engine.pipe
    base = resolve_options(preset, watermark=False)[0].sampling()
    long = dataclasses.replace(base, frames=frames, window=window, overlap=args.overlap)
    starts = [s for s, _ in temporal_windows(frames, window, args.overlap)]
    # both edges of every overlap: the first frame of each window after the first, and the first after each window
    joins = sorted({s for s in starts[1:]} | {s + window for s in starts[:-1]})
    chain_joins = [window + k * (window - 1) for k in range(args.windows - 1)]
    images = [to_tensor(fit(im, preset.width, preset.height))
              for im in held_out_images(args.images, preset.width, preset.height)]

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return pipe.decode(latents.cpu(), window, most=window).frames

    rows = []
    for i, image in enumerate(images):
        ours = decode(pipe.sample(image, long, seed=i))
        parts = [decode(pipe.sample(image, base, seed=i))]
        for k in range(1, args.windows):
            parts.append(decode(pipe.sample(parts[-1][-1:] * 2 - 1, base, seed=i + 1000 * k))[1:])
        chain = torch.cat(parts)
        row = {f"windows_{k}": v for k, v in measure(ours, joins, window).items()}
        row.update({f"chain_{k}": v for k, v in measure(chain, chain_joins, window).items()})
        rows.append(row)
        print({"image": i, **{k: round(v, 3) for k, v in row.items()}}, flush=True)
    print(f"{frames} frames, windows of {window} at {starts}, overlap {args.overlap}; chain of {args.windows} clips")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key:>15s}: mean {np.mean(values):.3f}, min {np.min(values):.3f}, max {np.max(values):.3f}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB "
          f"(at start {rss0 / 2 ** 20:.2f})")


if __name__ == "__main__":
    main()
