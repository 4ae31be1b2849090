"""Our U-Net step, decode and whole clip against diffusers', in one process, on identical random full-architecture
weights (the diffusers modules are assigned our very tensors, so memory is not doubled).

    python bench/speed.py --size 128x128 --frames 8 --dtype fp32            # CPU, reduced size
    python bench/speed.py --size 1024x576 --frames 25 --dtype bf16          # GPU, real size

Reports the medians of --runs alternating timed runs (ours, theirs, ours, ...) after one warm-up each, the ratio ours/diffusers, and achieved TFLOP/s (FLOPs
counted with torch.utils.flop_counter on our forward; both sides do the same work up to our shortcuts).
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from svdcli.inference.bench import diffusers_pipeline
from svdcli.checkpoints.loader import LoadedModel
from svdcli.models.clip import ImageEncoder
from svdcli.models.init import random_init
from svdcli.models.layers import timestep_embedding
from svdcli.models.unet import VideoUNet
from svdcli.models.vae import VAE
from svdcli.runtime.devices.devices import DTYPES
from svdcli.checkpoints.architectures import ARCHITECTURES


def _once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def timed(fn, runs: int, device: torch.device) -> float:
    _once(fn, device)  # warm-up
    return statistics.median(_once(fn, device) for _ in range(runs))


def compared(ours, theirs, runs: int, device: torch.device) -> tuple[float, float]:
    """Medians of alternating runs (after one warm-up each), so drift in machine speed hits both sides alike."""
    _once(ours, device), _once(theirs, device)
    a, b = [], []
    for _ in range(runs):
        a.append(_once(ours, device))
        b.append(_once(theirs, device))
    return statistics.median(a), statistics.median(b)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def reference_models(model: LoadedModel):
    """diffusers' UNet and temporal VAE holding our tensors (GroupNorm eps aligned to the reference's 1e-5)."""
    pipe = diffusers_pipeline(model)
    return pipe.unet, pipe.vae


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-unet", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time our U-Net under torch.compile")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    w, h = (int(v) for v in args.size.split("x"))
    t, lh, lw = args.frames, h // 8, w // 8
    arch = ARCHITECTURES["svd"]
    model = LoadedModel(arch, random_init(VideoUNet(arch.unet), 0), random_init(VAE(arch.vae), 1),
                        ImageEncoder(arch.clip).to("meta"), "memory", [], [])
    model.unet.to(device, dtype).eval()
    model.vae.to(device, dtype).eval()
    ref_unet, ref_vae = reference_models(model)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, t, 8, lh, lw, generator=g).to(device, dtype)  # the guidance batch: 2 videos
    c_noise = (torch.tensor([10.0, 10.0]).log() / 4).to(device)
    context = torch.randn(2, 1, 1024, generator=g).to(device, dtype)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * 2, device=device)
    y = torch.cat([timestep_embedding(ids[:, i], 256) for i in range(3)], 1).to(dtype)

    def ours_args():
        return (sample.flatten(0, 1), c_noise.repeat_interleave(t), context.repeat_interleave(t, 0),
                y.repeat_interleave(t, 0), t)

    def ours():
        return model.unet(*ours_args())

    def theirs():
        return ref_unet(sample, c_noise, context, ids.to(dtype)).sample

    print(f"device {device}, {args.dtype}, U-Net step = guidance batch of 2x{t} frames at {w}x{h} "
          f"(latent {lw}x{lh}), decode = {t} frames; median of {args.runs} after warm-up")
    print(f"{'':14s} {'ours s':>8s} {'diffusers s':>12s} {'ratio':>6s} {'TFLOP':>7s} {'ours TFLOP/s':>13s}")
    if not args.skip_unet:
        err = ((ours() - theirs().flatten(0, 1)).abs().max() / theirs().abs().max()).item()
        f = flops(ours)
        a, b = compared(ours, theirs, args.runs, device)
        print(f"{'U-Net step':14s} {a:8.3f} {b:12.3f} {a / b:6.2f} {f / 1e12:7.3f} {f / a / 1e12:13.3f}"
              f"   (outputs agree to {err:.1e} relative)")
    if args.compile and not args.skip_unet:
        compiled = torch.compile(model.unet, dynamic=False)
        t0 = time.perf_counter()
        compiled(*ours_args())
        first = time.perf_counter() - t0
        c = timed(lambda: compiled(*ours_args()), args.runs, device)
        print(f"{'  compiled':14s} {c:8.3f} {b:12.3f} {c / b:6.2f} {f / 1e12:7.3f} {f / c / 1e12:13.3f}"
              f"   (compilation + first call {first:.0f} s)")
    if not args.skip_decode:
        z = torch.randn(t, 4, lh, lw, generator=g).to(device, dtype)
        err = ((model.vae.decode(z, t) - ref_vae.decode(z, num_frames=t).sample).abs().max()).item()
        fd = flops(lambda: model.vae.decode(z, t))
        a, b = compared(lambda: model.vae.decode(z, t), lambda: ref_vae.decode(z, num_frames=t).sample, args.runs,
                        device)
        print(f"{'decode':14s} {a:8.3f} {b:12.3f} {a / b:6.2f} {fd / 1e12:7.3f} {fd / a / 1e12:13.3f}"
              f"   (outputs agree to {err:.1e} absolute)")


if __name__ == "__main__":
    main()
