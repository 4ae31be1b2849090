"""Tiny SV4D-family single files with the official tensor names, random N(0, 1/fan_in) weights drawn by name.

Shared by the tests and scripts/sv4d_reference_fixtures.py (which loads the same tensors into the reference's
modules), so the end-to-end fixtures store a seed instead of weights. No test-framework imports: the fixture script
runs in the reference's own environment."""

from dataclasses import replace

import torch

from svdcli.checkpoints.architectures import ARCHITECTURES
from svdcli.models.clip import CLIPConfig, ImageEncoder
from svdcli.models.init import random_state
from svdcli.models.unet import VideoUNet
from svdcli.models.vae import VAE, VAEConfig

# Two levels, transformers at both: a 4 x 4 latent (32 x 32 frames) reaches 2 x 2, where the 32-group norms still
# see 8 values each. The vector is as wide as the U-Net's embedding (SV4D 2.0's camera embedding reads that embedding
# through a layer as wide as the vector: the reference builds it so, and the released files have both 1280), and
# splits as the real one's 256 + 512 + 512: 128 + 256 + 256. Hence 160 channels: the narrowest that is a multiple of
# the 32 norm groups and whose embedding (4 x) splits so.
UNET = dict(model_channels=160, channel_mult=(1, 2), attention_levels=(True, True), head_dim=32, context_dim=32,
            adm_in_channels=640)
VAE_CONFIG = VAEConfig(channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2, temporal_decoder=False)
CLIP = CLIPConfig(image_size=224, patch_size=32, width=64, layers=2, head_width=16, mlp_width=128, embed_dim=32)
VECTOR_WIDTHS = (128, 256, 256)


def tiny_architecture(name: str):
    arch = ARCHITECTURES[name]
    return replace(arch, unet=replace(arch.unet, **UNET), vae=VAE_CONFIG, clip=CLIP)


def tiny_file_tensors(name: str, seed: int) -> dict[str, torch.Tensor]:
    """Official name -> tensor of a tiny model of this architecture, the conditioner's three autoencoder encoders
    equal (as in the released files)."""
    arch = tiny_architecture(name)
    with torch.device("meta"):
        modules = {"unet": VideoUNet(arch.unet), "vae": VAE(arch.vae), "image_encoder": ImageEncoder(arch.clip)}
    shapes = {arch.single_file_key(comp, k): tuple(v.shape)
              for comp, module in modules.items() for k, v in module.state_dict().items()}
    tensors = random_state(shapes, seed)
    first = arch.vae_encoder_prefix
    for copy in arch.encoder_copies:
        if copy != first:
            tensors.update({copy + k[len(first):]: v.clone() for k, v in list(tensors.items()) if k.startswith(first)})
    return tensors


def checksum(tensors: dict[str, torch.Tensor]) -> float:
    return float(sum(v.double().abs().sum() for v in tensors.values()))
