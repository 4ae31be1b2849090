"""Writing models in the two layouts the loader reads: an sgm single file and a diffusers folder.

Used for our own models (tests, the demo model) and to convert between layouts. Files are written to a temporary
name and renamed when complete.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..media.outputs import atomic_path
from . import diffusers_keys
from .architectures import Architecture
from .loader import LoadedModel, model_metadata


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path,
                      metadata: dict[str, str] | None = None) -> None:
    """The one way this project writes a safetensors file: atomically (media.outputs.atomic_path), in its folder,
    made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t if dtype is None else t.to(dtype)


def save_single_file(model: LoadedModel, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """The sgm layout: component prefixes as in the released files (only the tensors inference uses)."""
    arch = model.architecture
    tensors = {}
    for comp, module in model.components().items():
        for k, v in module.state_dict().items():
            tensors[arch.single_file_key(comp, k)] = _cast(v, dtype)
    write_safetensors(tensors, Path(path), model_metadata(arch))


def diffusers_configs(arch: Architecture) -> dict[str, dict]:
    """config.json contents that diffusers/transformers accept for our configs (SVD family only)."""
    u, v, c = arch.unet, arch.vae, arch.clip
    widths = [u.model_channels * m for m in u.channel_mult]
    down = ["CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in u.attention_levels]
    up = ["CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(u.attention_levels)]
    unet = {"_class_name": "UNetSpatioTemporalConditionModel", "sample_size": 96, "in_channels": u.in_channels,
            "out_channels": u.out_channels, "down_block_types": down, "up_block_types": up,
            "block_out_channels": widths, "addition_time_embed_dim": u.adm_in_channels // 3,
            "projection_class_embeddings_input_dim": u.adm_in_channels, "layers_per_block": u.num_res_blocks,
            "cross_attention_dim": u.context_dim, "transformer_layers_per_block": 1,
            "num_attention_heads": [w // u.head_dim for w in widths], "num_frames": 25}
    vae = {"_class_name": "AutoencoderKLTemporalDecoder" if v.temporal_decoder else "AutoencoderKL",
           "in_channels": v.image_channels, "out_channels": v.image_channels,
           "down_block_types": ["DownEncoderBlock2D"] * len(v.channel_mult),
           "block_out_channels": [v.channels * m for m in v.channel_mult], "layers_per_block": v.num_res_blocks,
           "latent_channels": v.z_channels, "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True}
    if not v.temporal_decoder:
        vae.update(up_block_types=["UpDecoderBlock2D"] * len(v.channel_mult), norm_num_groups=32,
                   use_post_quant_conv=v.post_quant_conv, act_fn="silu")
    clip = {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
            "hidden_size": c.width, "intermediate_size": c.mlp_width, "num_hidden_layers": c.layers,
            "num_attention_heads": c.heads, "image_size": c.image_size, "patch_size": c.patch_size,
            "projection_dim": c.embed_dim, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "num_channels": 3}
    return {"unet": unet, "vae": vae, "image_encoder": clip}


def diffusers_state_dicts(model: LoadedModel, dtype: torch.dtype | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """component -> its tensors under diffusers names (through the same tables the loader reads with)."""
    arch = model.architecture
    tables = {"unet": (diffusers_keys.unet_source, arch.unet), "vae": (diffusers_keys.vae_source, arch.vae),
              "image_encoder": (diffusers_keys.clip_source, arch.clip)}
    out = {}
    for comp, module in model.components().items():
        table, cfg = tables[comp]
        out[comp] = {}
        for k, v in module.state_dict().items():
            src = table(k, cfg)
            for name, part in zip(src.keys, src.split(v)):
                out[comp][name] = _cast(part, dtype)
    return out


def save_diffusers(model: LoadedModel, folder: str | Path, dtype: torch.dtype | None = None,
                   variant: str | None = None) -> None:
    """A diffusers folder (model_index.json, unet/, vae/, image_encoder/); variant "fp16" names the files
    `*.fp16.safetensors` as the hub does."""
    arch, folder = model.architecture, Path(folder)
    if arch.name not in ("svd", "svd_image_decoder"):
        raise ValueError(f"diffusers has no layout for {arch.name}")
    configs = diffusers_configs(arch)
    stems = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"}
    for comp, tensors in diffusers_state_dicts(model, dtype).items():
        suffix = f".{variant}" if variant else ""
        write_safetensors(tensors, folder / comp / f"{stems[comp]}{suffix}.safetensors", {"format": "pt"})
        (folder / comp / "config.json").write_text(json.dumps(configs[comp], indent=2))
    index = {"_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": "0.24.0",
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"],
             "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
             "vae": ["diffusers", "AutoencoderKLTemporalDecoder"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
