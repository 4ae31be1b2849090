"""How far chunked decoding is from decoding the whole clip at once: the reference's disjoint chunks vs our
overlapped, cross-faded windows. Full-size temporal decoder with random weights N(0, 1/fan_in), temporally smooth
random latents (a video's latents change slowly from frame to frame).

    python bench/decode_seams.py --frames 25 --size 128 --chunk 14 --overlaps 2 4 6
"""

import argparse
import time

import torch

from svdcli.inference.decoding import decode_frames, temporal_windows
from svdcli.models.init import random_init
from svdcli.models.vae import VAE, VAEConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--size", type=int, default=128, help="frame side in pixels")
    ap.add_argument("--chunk", type=int, default=14)
    ap.add_argument("--overlaps", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    vae = random_init(VAE(VAEConfig()), args.seed).eval()
    g = torch.Generator().manual_seed(args.seed)
    h = args.size // 8
    base = torch.randn(1, 4, h, h, generator=g)
    drift = torch.randn(args.frames, 4, h, h, generator=g).cumsum(0) * 0.15
    latents = base + drift  # scaled latent space, std ≈ 1 per frame, slowly changing
    t0 = time.perf_counter()
    whole = decode_frames(vae, latents, torch.device('cpu'), chunk=args.frames)
    print(f"whole clip ({args.frames} frames at {args.size}x{args.size}): {time.perf_counter() - t0:.1f} s")
    rows = [("reference: disjoint chunks", 0)] + [(f"ours: overlap {o}", o) for o in args.overlaps]
    print(f"{'scheme':28s} {'windows':8s} {'max |err|':>10s} {'mean |err|':>11s} {'worst frame mean':>17s}")
    for name, overlap in rows:
        out = decode_frames(vae, latents, torch.device('cpu'), chunk=args.chunk, overlap=overlap)
        err = (out - whole).abs()
        per_frame = err.mean(dim=(1, 2, 3))
        print(f"{name:28s} {len(temporal_windows(args.frames, args.chunk, overlap)):<8d} "
              f"{err.max().item():10.4f} {err.mean().item():11.5f} "
              f"{per_frame.max().item():10.5f} (#{per_frame.argmax().item()})")


if __name__ == "__main__":
    main()
