"""How our parameter names map to the diffusers folder layout (`unet/`, `vae/`, `image_encoder/`).

Our names are the single-file names (minus the component prefix), so the single-file layout needs no table. Each
function below is the one table for one diffusers component: given our name and the component's config it returns a
`Source` — the diffusers tensor names it is made from and how to combine them (and how to split it back when saving).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.clip import CLIPConfig
from ..models.unet import UNetConfig
from ..models.vae import VAEConfig


def same(ts: list[torch.Tensor]) -> torch.Tensor:
    return ts[0]


def _unsame(t: torch.Tensor) -> list[torch.Tensor]:
    return [t]


@dataclass(frozen=True)
class Source:
    keys: tuple[str, ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor] = same  # theirs -> ours
    split: Callable[[torch.Tensor], list[torch.Tensor]] = _unsame  # ours -> theirs
    # Shape of each of their tensors, from ours (for checks before reading anything).
    shapes: Callable[[tuple[int, ...]], list[tuple[int, ...]]] = lambda s: [s]


def _rename(key: str) -> Source:
    return Source((key,))


def _squeeze_1x1(key: str) -> Source:
    """VAE attention: 1×1 Conv2d weights (ours) vs Linear weights (diffusers)."""
    return Source((key,), combine=lambda ts: ts[0][:, :, None, None], split=lambda t: [t[:, :, 0, 0]],
                  shapes=lambda s: [s[:2]])


# --- U-Net ---------------------------------------------------------------------------------------------------------

_RESNET = [("in_layers.0", "spatial_res_block.norm1"), ("in_layers.2", "spatial_res_block.conv1"),
           ("emb_layers.1", "spatial_res_block.time_emb_proj"), ("out_layers.0", "spatial_res_block.norm2"),
           ("out_layers.3", "spatial_res_block.conv2"), ("skip_connection", "spatial_res_block.conv_shortcut"),
           ("time_stack.in_layers.0", "temporal_res_block.norm1"), ("time_stack.in_layers.2", "temporal_res_block.conv1"),
           ("time_stack.emb_layers.1", "temporal_res_block.time_emb_proj"),
           ("time_stack.out_layers.0", "temporal_res_block.norm2"),
           ("time_stack.out_layers.3", "temporal_res_block.conv2"), ("time_mixer.", "time_mixer.")]
_TRANSFORMER = [("time_stack.", "temporal_transformer_blocks."), ("time_pos_embed.0", "time_pos_embed.linear_1"),
                ("time_pos_embed.2", "time_pos_embed.linear_2")]
_UNET_TOP = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
             "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
             "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}


def _replace_prefix(rest: str, table: list[tuple[str, str]]) -> str:
    for ours, theirs in table:
        if rest.startswith(ours):
            return theirs + rest[len(ours):]
    return rest


def unet_source(key: str, cfg: UNetConfig) -> Source:
    for ours, theirs in _UNET_TOP.items():
        if key.startswith(ours + "."):
            return _rename(theirs + key[len(ours):])
    per_level = cfg.num_res_blocks + 1
    levels = len(cfg.channel_mult)
    m = re.match(r"(input_blocks|output_blocks|middle_block)\.(\d+)\.(?:(\d+)\.)?(.*)", key)
    assert m, key
    where, i, j, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if where == "middle_block":  # middle_block.0 / .1 / .2 (no sub-index)
        j, rest = i, rest
        if j == 1:
            return _rename("mid_block.attentions.0." + _replace_prefix(rest, _TRANSFORMER))
        return _rename(f"mid_block.resnets.{j // 2}." + _replace_prefix(rest, _RESNET))
    j = int(j)
    if where == "input_blocks":
        b, l = divmod(i - 1, per_level)
        if l == cfg.num_res_blocks:  # input_blocks.i.0.op
            return _rename(f"down_blocks.{b}.downsamplers.0.conv." + rest.removeprefix("op."))
        if j == 0:
            return _rename(f"down_blocks.{b}.resnets.{l}." + _replace_prefix(rest, _RESNET))
        return _rename(f"down_blocks.{b}.attentions.{l}." + _replace_prefix(rest, _TRANSFORMER))
    b, l = divmod(i, per_level)
    has_attention = cfg.attention_levels[levels - 1 - b]
    if j == 0:
        return _rename(f"up_blocks.{b}.resnets.{l}." + _replace_prefix(rest, _RESNET))
    if j == 1 and has_attention:
        return _rename(f"up_blocks.{b}.attentions.{l}." + _replace_prefix(rest, _TRANSFORMER))
    return _rename(f"up_blocks.{b}.upsamplers.0." + rest)  # rest is conv.weight / conv.bias


# --- VAE -----------------------------------------------------------------------------------------------------------

_VAE_RESNET_TEMPORAL = [("norm1", "spatial_res_block.norm1"), ("conv1", "spatial_res_block.conv1"),
                        ("norm2", "spatial_res_block.norm2"), ("conv2", "spatial_res_block.conv2"),
                        ("nin_shortcut", "spatial_res_block.conv_shortcut"),
                        ("time_stack.in_layers.0", "temporal_res_block.norm1"),
                        ("time_stack.in_layers.2", "temporal_res_block.conv1"),
                        ("time_stack.out_layers.0", "temporal_res_block.norm2"),
                        ("time_stack.out_layers.3", "temporal_res_block.conv2"),
                        ("mix_factor", "time_mixer.mix_factor")]
_VAE_RESNET_PLAIN = [("nin_shortcut", "conv_shortcut")]
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def vae_source(key: str, cfg: VAEConfig) -> Source:
    part, rest = key.split(".", 1)
    if part in ("quant_conv", "post_quant_conv"):
        return _rename(key)
    temporal = part == "decoder" and cfg.temporal_decoder
    resnet = _VAE_RESNET_TEMPORAL if temporal else _VAE_RESNET_PLAIN
    if rest.startswith("norm_out."):
        return _rename(f"{part}.conv_norm_out." + rest[len("norm_out."):])
    if rest.startswith("conv_out.time_mix_conv."):
        return _rename("decoder.time_conv_out." + rest[len("conv_out.time_mix_conv."):])
    if m := re.match(r"mid\.attn_1\.(\w+)\.(weight|bias)$", rest):
        name = f"{part}.mid_block.attentions.0.{_VAE_ATTN[m.group(1)]}.{m.group(2)}"
        return _squeeze_1x1(name) if m.group(1) != "norm" and m.group(2) == "weight" else _rename(name)
    if m := re.match(r"mid\.block_(\d)\.(.*)", rest):
        return _rename(f"{part}.mid_block.resnets.{int(m.group(1)) - 1}." + _replace_prefix(m.group(2), resnet))
    if m := re.match(r"(down|up)\.(\d+)\.block\.(\d+)\.(.*)", rest):
        level = int(m.group(2)) if m.group(1) == "down" else len(cfg.channel_mult) - 1 - int(m.group(2))
        return _rename(f"{part}.{m.group(1)}_blocks.{level}.resnets.{m.group(3)}."
                       + _replace_prefix(m.group(4), resnet))
    if m := re.match(r"(down|up)\.(\d+)\.(?:downsample|upsample)\.(.*)", rest):
        level = int(m.group(2)) if m.group(1) == "down" else len(cfg.channel_mult) - 1 - int(m.group(2))
        kind = "downsamplers" if m.group(1) == "down" else "upsamplers"
        return _rename(f"{part}.{m.group(1)}_blocks.{level}.{kind}.0.{m.group(3)}")
    return _rename(key)  # conv_in, conv_out


# --- image encoder -------------------------------------------------------------------------------------------------

_CLIP_TOP = {"class_embedding": "vision_model.embeddings.class_embedding",
             "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
             "positional_embedding": "vision_model.embeddings.position_embedding.weight",
             "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias",
             "ln_post.weight": "vision_model.post_layernorm.weight",
             "ln_post.bias": "vision_model.post_layernorm.bias"}
_CLIP_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def clip_source(key: str, cfg: CLIPConfig) -> Source:
    if key in _CLIP_TOP:
        return _rename(_CLIP_TOP[key])
    if key == "proj":  # open_clip multiplies x @ proj; transformers stores the Linear weight (out, in)
        return Source(("visual_projection.weight",), combine=lambda ts: ts[0].t(), split=lambda t: [t.t()],
                      shapes=lambda s: [(s[1], s[0])])
    m = re.match(r"transformer\.resblocks\.(\d+)\.(.*)", key)
    assert m, key
    layer, rest = f"vision_model.encoder.layers.{m.group(1)}.", m.group(2)
    if rest.startswith("attn.in_proj_"):  # fused q, k, v rows
        kind = rest.rsplit("_", 1)[1]
        return Source(tuple(f"{layer}self_attn.{p}_proj.{kind}" for p in "qkv"),
                      combine=lambda ts: torch.cat(ts, dim=0), split=lambda t: list(t.chunk(3, dim=0)),
                      shapes=lambda s: [(s[0] // 3, *s[1:])] * 3)
    module, param = rest.rsplit(".", 1)
    return _rename(f"{layer}{_CLIP_BLOCK[module]}.{param}")
