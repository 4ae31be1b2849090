"""What each way of sampling costs and what it gives (docs/speed.md, "Fewer U-Net calls").

    python scripts/speed_checks.py flops                      # SVD-XT, 25 frames at 576x1024: calls and FLOPs
    python scripts/speed_checks.py demo [--images 4] [--steps 16] [--split]
    python scripts/speed_checks.py split [--steps 16]          # the --split part alone

flops: the U-Net calls and counted FLOPs of one clip in each mode, counted on the meta device (no weights) by the
pipeline's own bookkeeping (VideoPipeline.step_flops, the figures its ETA and --json use).
demo: each mode on the demo model, the same images and seeds for all: CPU seconds of sampling, and the cost in
fidelity as `svd eval` measures it (first-frame PSNR against the input, motion score, flicker), with the PSNR of
the frames against the reference mode's (the uncached Euler run at the same steps). --split also times
`svd generate --gpus 2`'s two processes (gloo on this CPU, one thread each) against one process.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from svdcli.checkpoints.architectures import ARCHITECTURES
from svdcli.checkpoints.loader import LoadedModel, meta_modules
from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import resolve_weights
from svdcli.inference.generation import EngineSettings, frames_to_uint8, open_engine, resolve_options
from svdcli.inference.pipeline import GuidanceSplit, SamplingSettings, VideoPipeline
from svdcli.inference.sampling import denoiser_calls
from svdcli.media.images import fit, to_tensor
from svdcli.video.evaluate import evaluate_frames


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    sampler: str = "euler"
    steps: int = 25
    guided: bool = True
    cache: int = 0
    split: bool = False


FULL_SIZE_MODES = [
    Mode("reference: Euler, 25 steps, guidance"),
    Mode("Euler, 25 steps, cfg 1 (no unconditional half)", guided=False),
    Mode("Heun, 13 steps, guidance (25 calls)", "heun", 13),
    Mode("DPM++ 2M, 12 steps, guidance", "dpmpp-2m", 12),
    Mode("cached: Euler, 25 steps, guidance, --cache 2", cache=2),
    Mode("cached: Euler, 25 steps, guidance, --cache 3", cache=3),
    Mode("split: Euler, 25 steps, guidance, --gpus 2 (per GPU)", split=True),
    Mode("AnimateLCM: lcm, 4 steps, guidance 1.0-1.2 (the app's default)", "lcm", 4),
    Mode("AnimateLCM: lcm, 4 steps, cfg 1 (the model card's)", "lcm", 4, guided=False),
]


def flops_table() -> None:
    arch = ARCHITECTURES["svd"]
    modules = meta_modules(arch)  # shapes only: the pipeline counts work without weights
    model = LoadedModel(arch, modules["unet"], modules["vae"], modules["image_encoder"], "meta", [], [])
    pipe = VideoPipeline(model, torch.device("meta"), torch.float32)
    frames, h, w = 25, 576 // 8, 1024 // 8
    print("SVD-XT, 25 frames at 1024x576 (latents 72x128), FLOPs counted on the meta device")
    print("| mode | U-Net calls (halves) | TFLOP per clip | FLOPs vs reference |")
    print("|---|---|---|---|")
    reference = None
    for mode in FULL_SIZE_MODES:
        pipe.guidance_split = GuidanceSplit(0) if mode.split else None
        settings = SamplingSettings(frames=frames, steps=mode.steps, sampler=mode.sampler, cache=mode.cache)
        flops = sum(pipe.step_flops(settings, [2 if mode.guided else 1], frames, h, w))
        calls = denoiser_calls(mode.sampler, mode.steps) * (2 if mode.guided else 1) // (2 if mode.split else 1)
        reference = reference or flops
        ratio = "-" if flops == reference else f"{reference / flops:.2f}x fewer"
        print(f"| {mode.name} | {calls} | {flops / 1e12:.1f} | {ratio} |")


def demo(images: int, steps: int, split: bool) -> None:
    from svdcli.demo.checks import held_out_images

    preset = load_preset("demo")
    engine = open_engine(preset, resolve_weights(None, preset), EngineSettings("cpu", "fp32", attention_slice="none"))
    pipe = engine.pipe
    options = resolve_options(preset, steps=steps, watermark=False)[0]
    pictures = [fit(im, preset.width, preset.height) for im in held_out_images(images, preset.width, preset.height)]
    modes = [Mode("reference: euler", steps=steps), Mode("euler, cfg 1", steps=steps, guided=False),
             *[Mode(f"euler, --cache {n}", steps=steps, cache=n) for n in (2, 3, 4)],
             *[Mode(s, s, steps) for s in ("euler-a", "heun", "dpmpp-2m", "dpmpp-2m-sde")],
             Mode("lcm, 4 steps (the demo is not distilled)", "lcm", 4)]
    print(f"demo model, {options.frames} frames at {preset.width}x{preset.height}, {images} images, seeds "
          f"0-{images - 1}, {torch.get_num_threads()} threads")
    print("| mode | U-Net calls | s per clip (sampling) | TFLOP | first-frame PSNR | motion | flicker | PSNR vs reference |")
    print("|---|---|---|---|---|---|---|---|")
    reference_frames = {}
    for mode in modes:
        settings = dataclasses.replace(options.sampling(), sampler=mode.sampler, steps=mode.steps, cache=mode.cache,
                                       cfg_max=options.cfg_max if mode.guided else 1.0,
                                       cfg_min=options.cfg_min if mode.guided else 1.0)
        rows = []
        for i, picture in enumerate(pictures):
            started = time.perf_counter()
            latents = pipe.sample(to_tensor(picture), settings, seed=i)
            seconds = time.perf_counter() - started
            frames = frames_to_uint8(pipe.decode(latents.cpu()).frames)
            reference_frames.setdefault(i, frames)
            error = np.mean((frames.astype(np.float64) - reference_frames[i]) ** 2)
            psnr = 10 * np.log10(255 ** 2 / error) if error else float("inf")
            m = evaluate_frames(frames, options.fps, np.asarray(picture))
            rows.append((seconds, pipe.unet_flops, m["first_frame_psnr"], m["motion"], m["flicker"], psnr))
        s, fl, p, mo, fk, vs = np.mean(rows, axis=0)
        print(f"| {mode.name} | {pipe.unet_calls} | {s:.2f} | {fl / 1e12:.3f} | {p:.2f} | {mo:.3f} | {fk:.4f} | "
              f"{vs:.1f} |", flush=True)
    if split:
        time_split(steps)


def time_split(steps: int) -> None:
    """svd generate on the photo in one process and as --gpus 2 launches it (two processes under torchrun, gloo):
    wall seconds of the whole command, and whether the frames are those of one process. On a CPU the frames depend
    on the threads per process (a reduction's order), so the comparison is with one process of one thread."""
    common = ["generate", "examples/photo.jpg", "--preset", "demo", "--steps", str(steps), "--seed", "0", "--format",
              "png", "--no-watermark", "--quiet", "--device", "cpu"]
    one, two = [sys.executable, "-m", "svdcli"], [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc-per-node=2", "-m", "svdcli"]
    runs = {"one process, 2 threads": (one, "2"), "one process, 1 thread": (one, "1"),
            "two processes (gloo), 1 thread each": (two, "1")}
    frames = {}
    with tempfile.TemporaryDirectory() as folder:
        for k, (name, (launcher, threads)) in enumerate(runs.items()):
            out = Path(folder) / str(k)
            started = time.perf_counter()
            subprocess.run([*launcher, *common, "--out", str(out)], check=True, capture_output=True,
                           env={**os.environ, "OMP_NUM_THREADS": threads})
            frames[name] = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])
            print(f"split guidance on this CPU: {name}: {time.perf_counter() - started:.1f} s (whole command)")
    same = np.array_equal(frames["one process, 1 thread"], frames["two processes (gloo), 1 thread each"])
    print(f"frames of two processes identical to one process's (1 thread each): {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("flops", "demo", "split"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16, help="the demo preset's")
    ap.add_argument("--split", action="store_true")
    args = ap.parse_args()
    if args.what == "flops":
        flops_table()
    elif args.what == "split":
        time_split(args.steps)
    else:
        demo(args.images, args.steps, args.split)


if __name__ == "__main__":
    main()
