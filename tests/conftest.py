"""Tiny configurations of the real architecture, and random models built from them."""

from dataclasses import replace

import pytest
import torch

from svdcli.checkpoints.loader import LoadedModel
from svdcli.models.clip import CLIPConfig, ImageEncoder
from svdcli.models.init import random_init
from svdcli.models.unet import UNetConfig, VideoUNet
from svdcli.models.vae import VAE, VAEConfig
from svdcli.checkpoints.architectures import ARCHITECTURES

TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=2, attention_levels=(True, False),
                       head_dim=16, context_dim=48, adm_in_channels=24)
TINY_VAE = VAEConfig(channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2)
TINY_CLIP = CLIPConfig(image_size=224, patch_size=32, width=64, layers=2, head_width=16, mlp_width=128, embed_dim=48)


def tiny_architecture(name: str = "svd"):
    arch = ARCHITECTURES[name]
    adm = {"svd": 24, "svd_image_decoder": 24, "sv3d_u": 8, "sv3d_p": 40}[name]
    return replace(arch, unet=replace(TINY_UNET, adm_in_channels=adm),
                   vae=replace(TINY_VAE, temporal_decoder=arch.vae.temporal_decoder,
                               post_quant_conv=arch.vae.post_quant_conv),
                   clip=TINY_CLIP)


def tiny_model(name: str = "svd", seed: int = 0) -> LoadedModel:
    arch = tiny_architecture(name)
    return LoadedModel(arch, random_init(VideoUNet(arch.unet), seed).eval(), random_init(VAE(arch.vae), seed + 1).eval(),
                       random_init(ImageEncoder(arch.clip), seed + 2).eval(), "memory", [], ["float32"])


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Deterministic, and never touching the user's caches or config (child processes inherit this)."""
    torch.manual_seed(0)
    home = tmp_path_factory.mktemp("home")
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(home / var.lower()))
