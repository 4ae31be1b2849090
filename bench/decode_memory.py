"""Peak memory of the VAE decoder per decoded frame, and the decode chunk `auto` picks for common cards.

The decoder is built at full size on the meta device (shapes only: no memory, seconds on a CPU) and run under
svdcli.runtime.peak_memory.TensorBytes, which counts the bytes of live tensors as the CUDA allocator counts its allocated
bytes (tests/test_decode.py checks that a real CPU run counts the same). fp32, as the pipeline decodes.

    python bench/decode_memory.py                      # the table of docs/memory.md
    python bench/decode_memory.py --check-cpu          # also a real run at 256x256 on this CPU, for comparison
"""

import argparse

import torch

from svdcli.inference.decoding import DECODE_MEMORY_SHARE, DECODER_MAPS_PER_FRAME, auto_chunk
from svdcli.models.init import random_init
from svdcli.models.vae import VAE, VAEConfig
from svdcli.runtime.peak_memory import TensorBytes

GIB = 1024**3
SIZES = [(256, 256), (512, 512), (576, 576), (1024, 576), (1280, 720), (2048, 1152)]
CHUNKS = [1, 2, 4, 8, 14, 25]
CONTEXT = 0.5 * GIB  # the CUDA context, which takes card memory outside the allocator


def resident_bytes() -> dict[str, float]:
    """What stays on the card while decoding, by offload mode, with bf16 compute: with none the U-Net and image
    encoder in bf16 and the VAE in fp32; with model offload the decoder alone (fp32). Counted on the meta device."""
    from svdcli.models.clip import CLIPConfig, ImageEncoder
    from svdcli.models.unet import UNetConfig, VideoUNet

    with torch.device("meta"):
        unet, clip, vae = VideoUNet(UNetConfig()), ImageEncoder(CLIPConfig()), VAE(VAEConfig())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"none": 2 * (count(unet) + count(clip)) + 4 * count(vae) + CONTEXT,
            "model": 4 * count(vae.decoder) + CONTEXT}

def peak(vae: VAE, frames: int, width: int, height: int) -> int:
    z = torch.empty(frames, 4, height // 8, width // 8, device=next(vae.parameters()).device)
    with torch.no_grad(), TensorBytes() as counted:
        vae.decode(z, frames)
    return counted.peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-cpu", action="store_true", help="also decode 2 frames at 256x256 for real on the CPU")
    args = ap.parse_args()
    with torch.device("meta"):
        vae = VAE(VAEConfig())
    print("peak bytes of live tensors while decoding (fp32, SVD's temporal decoder)")
    print(f"{'size':>10s} " + " ".join(f"{c:>6d} fr" for c in CHUNKS) + "   maps/frame")
    for w, h in SIZES:
        peaks = [peak(vae, c, w, h) for c in CHUNKS]
        maps = max(p / (c * 128 * w * h * 4) for p, c in zip(peaks, CHUNKS))
        print(f"{w:>5d}x{h:<4d} " + " ".join(f"{p / GIB:6.2f} G" for p in peaks) + f"   {maps:.3f}")
    print(f"\nauto's chunk for 25 frames at 1024x576 ({DECODER_MAPS_PER_FRAME} maps/frame, "
          f"{DECODE_MEMORY_SHARE:.0%} of free memory)")
    print(f"{'card':>6s} {'offload none':>13s} {'offload model':>14s}")
    resident = resident_bytes()
    for card in (8, 12, 16, 24, 40, 80):
        row = []
        for mode in ("none", "model"):
            free = card * GIB - resident[mode]  # an "8 GB" card has 8 GiB (8192 MiB)
            row.append("does not fit" if free <= 0 else str(auto_chunk(25, 576, 1024, int(free))))
        print(f"{card:>4d}GB {row[0]:>13s} {row[1]:>14s}")
    if args.check_cpu:
        real = random_init(VAE(VAEConfig())).eval()
        measured = peak(real, 2, 256, 256)
        print(f"\nCPU run, 2 frames at 256x256: {measured / GIB:.3f} GiB counted; meta: {peak(vae, 2, 256, 256) / GIB:.3f}")


if __name__ == "__main__":
    main()
