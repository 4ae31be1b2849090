"""How much work a clip is: FLOPs of one U-Net call, counted on the meta device (shapes only, no memory)."""

from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..models.unet import UNetConfig, VideoUNet


@lru_cache(maxsize=32)  # a batch asks again for every clip of the same shape
def unet_call_flops(cfg: UNetConfig, videos: int, frames: int, latent_h: int, latent_w: int) -> int:
    """FLOPs of one forward over `videos` clips (2 with guidance) of `frames` frames of latent_h × latent_w."""
    with torch.device("meta"):
        unet = VideoUNet(cfg)
        n = videos * frames
        args = (torch.empty(n, cfg.in_channels, latent_h, latent_w), torch.empty(n), torch.empty(n, 1, cfg.context_dim),
                torch.empty(n, cfg.adm_in_channels), frames)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(*args)
    return counter.get_total_flops()
