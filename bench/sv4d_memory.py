"""GPU memory of `svd 4d` at full size, counted on the meta device (no weights, seconds on a CPU).

Each SV4D model's U-Net is built at full size on the meta device in half precision and run for one denoising call
of a window (T frames × V views, both halves of guidance at once, as `svd 4d` runs it) under
svdcli.runtime.peak_memory.TensorBytes, which counts live tensors as the CUDA allocator counts its allocated bytes
(attention as the fused kernels run it). The frame-wise decoder and the encoder are counted the same way, in fp32 as
the pipeline runs them. Weights are counted from the parameter shapes. The sums are what a card must hold in each
offload mode; docs/4d.md has the table.

    python bench/sv4d_memory.py                   # 576 x 576, every model
    python bench/sv4d_memory.py --size 512
"""

import argparse

import torch

from svdcli.checkpoints.architectures import ARCHITECTURES
from svdcli.inference.four_d import LAYOUTS
from svdcli.models.clip import ImageEncoder
from svdcli.models.unet import VideoUNet
from svdcli.models.vae import VAE
from svdcli.runtime.peak_memory import TensorBytes

GIB = 1024**3
CONTEXT = 0.5 * GIB  # the CUDA context, outside the allocator
SLICE = 1 << 17  # the attention slice `auto` picks under 40 GiB free (runtime.devices.attention_slice_for)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unet_peak(unet: VideoUNet, model: str, size: int, halves: int, max_tokens: int | None) -> int:
    """Peak bytes of one U-Net call on `halves` windows (2: both halves of guidance)."""
    layout = LAYOUTS[model]
    t, v, h = layout.frames, layout.views, size // 8
    n = t * v
    unet.set_max_tokens(max_tokens)
    kw = dict(device="meta", dtype=torch.float16)
    with torch.no_grad(), TensorBytes() as counted:
        unet(torch.empty(halves * n, 8, h, h, **kw), torch.empty(halves * n, **kw),
             torch.empty(halves, t, unet.cfg.context_dim, **kw), torch.empty(halves * n, unet.cfg.adm_in_channels, **kw),
             n, view_latents=torch.empty(halves * v, 4, h, h, **kw))
    return counted.peak


def vae_peaks(vae: VAE, size: int, frames: int) -> tuple[int, int]:
    """(encode, decode) peak bytes for `frames` frames at once, fp32."""
    with torch.no_grad(), TensorBytes() as encoding:
        vae.encode(torch.empty(frames, 3, size, size, device="meta"))
    with torch.no_grad(), TensorBytes() as decoding:
        vae.decode(torch.empty(frames, 4, size // 8, size // 8, device="meta"), frames)
    return encoding.peak, decoding.peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=576)
    args = ap.parse_args()
    size = args.size
    for model in LAYOUTS:
        arch = ARCHITECTURES[model]
        with torch.device("meta"):
            unet = VideoUNet(arch.unet).to(torch.float16)
            vae, clip = VAE(arch.vae), ImageEncoder(arch.clip)
        layout = LAYOUTS[model]
        unet_weights, clip_weights = 2 * parameters(unet), 2 * parameters(clip)
        vae_weights = 4 * parameters(vae)
        largest_block = max(2 * parameters(b) for b in [*unet.input_blocks, unet.middle_block, *unet.output_blocks])
        encode, decode = vae_peaks(vae, size, 4)  # a chunk of 4 frames
        print(f"{model}: window {layout.frames} frames x {layout.views} views at {size}x{size}; weights fp16: "
              f"U-Net {unet_weights / GIB:.2f} GiB, image encoder {clip_weights / GIB:.2f} GiB, VAE (fp32) "
              f"{vae_weights / GIB:.2f} GiB; VAE peaks for 4 frames: encode {encode / GIB:.2f}, decode "
              f"{decode / GIB:.2f} GiB")
        print(f"  {'attention slice':>16s} {'U-Net call':>11s} {'none':>7s} {'model':>7s} {'sequential + fp8':>17s}")
        for tokens in (None, SLICE):
            call = unet_peak(unet, model, size, 2, tokens)
            none = unet_weights + clip_weights + vae_weights + max(call, encode, decode) + CONTEXT
            offloaded = max(unet_weights + call, vae_weights + decode) + CONTEXT
            sequential = max(largest_block // 2 + call, vae_weights + decode) + CONTEXT  # fp8: 1 byte a weight
            print(f"  {str(tokens):>16s} {call / GIB:9.2f} G {none / GIB:5.1f} G {offloaded / GIB:5.1f} G "
                  f"{sequential / GIB:15.1f} G")


if __name__ == "__main__":
    main()
