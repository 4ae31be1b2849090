"""Golden fixtures for SV4D and SV4D 2.0, made by the reference code itself (Stability-AI/generative-models).

The reference is never a dependency of svdcli: run this in an environment of its own, then commit what it writes.

    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0 einops omegaconf numpy safetensors packaging fsspec pillow scipy tqdm
    git clone https://github.com/Stability-AI/generative-models /tmp/generative-models  # checked at 0ad7de9
    PYTHONPATH=. /tmp/refenv/bin/python scripts/sv4d_reference_fixtures.py /tmp/generative-models

Only the reference's model modules are imported (its package __init__ files, which pull in the training stack, are
bypassed). Weights are random, N(0, 1/fan_in), drawn by svdcli.models.init.random_state from a seed in the sorted
order of the tensor names, so the tests rebuild the same weights without storing them; a checksum in each fixture
says if they did not. Attention runs the reference's "softmax" path (its default "softmax-xformers" needs xformers
and computes the same function). Everything is float32 on the CPU.

Writes tests/fixtures/sv4d/<model>_transformer.safetensors (one SV4D transformer: inputs, output),
<model>_unet.safetensors (a tiny U-Net of the real layout: inputs, output) and guidance.safetensors (each model's
guidance scales over its window).
"""

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

from svdcli.models.init import random_state

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sv4d"

# The three released models' switches (scripts/sampling/configs/sv4d*.yaml) and their window: T frames x V views.
MODELS = {
    "sv4d": dict(use_camera_emb=False, use_3d_attention=False, separate_motion_merge_factor=False, frames=5, views=8),
    "sv4d2": dict(use_camera_emb=True, use_3d_attention=True, separate_motion_merge_factor=True, frames=12, views=4),
    "sv4d2_8views": dict(use_camera_emb=True, use_3d_attention=False, separate_motion_merge_factor=True, frames=5,
                         views=8),
}
# A tiny U-Net of the real layout: four levels, transformers at the first three, heads of 16 channels. Its window is
# smaller than the real one (the network takes any T and V; the transformer fixtures use the real ones) and its
# latents are 16 x 16, so that the narrowest level's GroupNorms (32 groups, as the reference fixes) still see 8
# values each: at 1 x 1 a group of two values turns float32 rounding into visible differences.
TINY = dict(model_channels=32, channel_mult=[1, 2, 2, 2], attention_resolutions=[4, 2, 1], num_head_channels=16,
            context_dim=32, frames=2, views=3, size=16)


def import_reference(root: Path):
    """The reference's modules, without running its package __init__ files."""
    sys.path.insert(0, str(root))
    for package in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):
        module = types.ModuleType(package)
        module.__path__ = [str(root / package.replace(".", "/"))]
        sys.modules[package] = module
    return (importlib.import_module("sgm.modules.spacetime_attention"),
            importlib.import_module("sgm.modules.diffusionmodules.video_model"),
            importlib.import_module("sgm.modules.diffusionmodules.guiders"))


def randomise(module: torch.nn.Module, seed: int) -> float:
    state = module.state_dict()
    values = random_state({k: tuple(v.shape) for k, v in state.items()}, seed)
    module.load_state_dict(values)
    return checksum(values)


def checksum(values: dict[str, torch.Tensor]) -> float:
    return float(sum(v.double().abs().sum() for v in values.values()))


def transformer_fixture(spacetime, name: str, switches: dict, seed: int) -> dict:
    channels, head_dim, context_dim, emb_dim = 32, 16, 32, 128
    block = spacetime.PostHocSpatialTransformerWithTimeMixingAndMotion(
        channels, channels // head_dim, head_dim, depth=1, context_dim=context_dim, use_linear=True,
        use_spatial_context=True, use_camera_emb=switches["use_camera_emb"],
        use_3d_attention=switches["use_3d_attention"],
        separate_motion_merge_factor=switches["separate_motion_merge_factor"], adm_in_channels=emb_dim,
        merge_strategy="learned_with_images", merge_factor=0.0, motion_context_dim=4, ff_in=True,
        attn_mode="softmax", time_mix_legacy=False).eval()
    weights = randomise(block, seed)
    g = torch.Generator().manual_seed(seed + 1)
    b, t, v, h, w = 2, switches["frames"], switches["views"], 3, 4  # 2: both halves of guidance
    x = torch.randn(b * t * v, channels, h, w, generator=g)
    context = torch.randn(b, t, context_dim, generator=g)
    emb = torch.randn(b * t * v, emb_dim, generator=g)
    view_latents = torch.randn(b * v, 4, 7, 9, generator=g)  # another size: the block resizes it bilinearly
    indicator = torch.zeros(b, t * v)
    with torch.no_grad():
        out = block(x, context, emb, None, t * v, indicator, view_latents, None)
    return {"x": x, "context": context, "emb": emb, "view_latents": view_latents, "out": out,
            "config": dict(channels=channels, head_dim=head_dim, context_dim=context_dim, emb_dim=emb_dim,
                           seed=seed, weights_checksum=weights, **switches)}


def unet_fixture(video_model, name: str, switches: dict, seed: int) -> dict:
    emb_dim = 4 * TINY["model_channels"]  # the camera embedding reads the U-Net's embedding: adm = its width
    unet = video_model.SpatialUNetModelWithTime(
        in_channels=8, model_channels=TINY["model_channels"], out_channels=4, num_res_blocks=2,
        attention_resolutions=TINY["attention_resolutions"], channel_mult=TINY["channel_mult"],
        num_classes="sequential", adm_in_channels=emb_dim, num_head_channels=TINY["num_head_channels"],
        use_spatial_transformer=True, transformer_depth=1, context_dim=TINY["context_dim"], motion_context_dim=4,
        extra_ff_mix_layer=True, use_spatial_context=True, time_block_merge_strategy="learned_with_images",
        time_block_merge_factor=0.0, spatial_transformer_attn_type="softmax", time_kernel_size=[3, 1, 1],
        use_linear_in_transformer=True, legacy=False, time_mix_legacy=False, replicate_time_mix_bug=True,
        use_motion_attention=True, use_camera_emb=switches["use_camera_emb"],
        use_3d_attention=switches["use_3d_attention"],
        separate_motion_merge_factor=switches["separate_motion_merge_factor"]).eval()
    weights = randomise(unet, seed)
    g = torch.Generator().manual_seed(seed + 1)
    b, t, v, h, w = 2, TINY["frames"], TINY["views"], TINY["size"], TINY["size"]
    x = torch.randn(b * t * v, 8, h, w, generator=g)
    timesteps = 0.25 * torch.log(torch.tensor([3.0, 3.0])).repeat_interleave(t * v)  # c_noise of sigma 3
    context = torch.randn(b, t, TINY["context_dim"], generator=g)
    y = torch.randn(b * t * v, emb_dim, generator=g)
    view_latents = torch.randn(b * v, 4, h, w, generator=g)
    indicator = torch.ones(b, t * v)  # as the reference's sampling passes it (it changes nothing in this network)
    with torch.no_grad():
        out = unet(x, timesteps, context=context, y=y, num_video_frames=t * v, image_only_indicator=indicator,
                   cond_view=view_latents, cond_motion=None)
    return {"x": x, "timesteps": timesteps, "context": context, "y": y, "view_latents": view_latents, "out": out,
            "config": dict(switches, **TINY, emb_dim=emb_dim, seed=seed, weights_checksum=weights)}


def guidance_fixture(guiders) -> dict:
    """The scales of each model's guider, configured as simple_video_sample_4d.py and 4d2.py configure them."""
    return {"sv4d": guiders.SpatiotemporalPredictionGuider(max_scale=2.0, num_frames=40, num_views=8).scale[0],
            "sv4d2": guiders.LinearPredictionGuider(max_scale=2.0, num_frames=48).scale[0],
            "sv4d2_8views": guiders.SpatiotemporalPredictionGuider(max_scale=2.5, min_scale=1.5, num_frames=40,
                                                                   num_views=8).scale[0],
            "config": {}}


def save(fixture: dict, path: Path) -> None:
    config = fixture.pop("config")
    save_file({k: v.contiguous() for k, v in fixture.items()}, str(path), metadata={"config": json.dumps(config)})
    print(f"{path.relative_to(OUT.parent.parent.parent)}: {path.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path, help="a checkout of Stability-AI/generative-models")
    args = parser.parse_args()
    spacetime, video_model, guiders = import_reference(args.reference.resolve())
    OUT.mkdir(parents=True, exist_ok=True)
    save(guidance_fixture(guiders), OUT / "guidance.safetensors")
    for i, (name, switches) in enumerate(MODELS.items()):
        save(transformer_fixture(spacetime, name, switches, seed=10 + i), OUT / f"{name}_transformer.safetensors")
        save(unet_fixture(video_model, name, switches, seed=20 + i), OUT / f"{name}_unet.safetensors")


if __name__ == "__main__":
    main()
