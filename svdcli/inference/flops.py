"""How much work a clip is: FLOPs of one U-Net call, counted on the meta device (shapes only, no memory)."""

from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..models.unet import DeepFeatureCache, UNetConfig, VideoUNet


@lru_cache(maxsize=32)  # a batch asks again for every clip of the same shape
def unet_call_flops(cfg: UNetConfig, videos: int, frames: int, latent_h: int, latent_w: int,
                    cached_depth: int = 0) -> int:
    """FLOPs of one forward over `videos` clips (2 with guidance) of `frames` frames of latent_h × latent_w; with
    cached_depth, of a cached call of that depth (DeepFeatureCache: its shallow blocks only)."""
    with torch.device("meta"):
        unet = VideoUNet(cfg)
        n = videos * frames
        args = (torch.empty(n, cfg.in_channels, latent_h, latent_w), torch.empty(n), torch.empty(n, 1, cfg.context_dim),
                torch.empty(n, cfg.adm_in_channels), frames)
        cache = None
        if cached_depth:  # the features a refreshing call keeps, uncounted
            cache = DeepFeatureCache(cached_depth)
            with torch.no_grad():
                unet(*args, cache=cache)
            cache.refresh = False
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(*args, cache=cache)
    return counter.get_total_flops()
