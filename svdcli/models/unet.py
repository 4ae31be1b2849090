"""The video U-Net of SVD, SVD-XT and SV3D (the reference's VideoUNet).

Module names follow the single-file checkpoint under `model.diffusion_model.`, so its tensors load with no renaming.
Frames are folded into the batch axis, video-major: row = b·T + t.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import (CrossAttention, FeedForward, GroupNorm, LayerNorm, MixFactor, in_slices,
                     timestep_embedding)


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 8  # noisy latent (4) + conditioning latent (4)
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (True, True, True, False)  # transformers at ds 1, 2, 4; none at ds 8
    head_dim: int = 64
    context_dim: int = 1024  # CLIP image embedding
    adm_in_channels: int = 768  # vector conditioning: 768 SVD family, 256 SV3D_u, 1280 SV3D_p
    norm_groups: int = 32  # the reference's; fewer only for models at a fraction of its widths (layers.GroupNorm)

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4


def norm(channels: int, groups: int) -> GroupNorm:
    return GroupNorm(groups, channels, eps=1e-5)


class ResBlock(nn.Module):
    """Pre-activation residual block with an additive embedding; 2-D per frame, or 3-D along time only."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, temporal: bool = False):
        super().__init__()
        conv = (lambda a, b: nn.Conv3d(a, b, (3, 1, 1), padding=(1, 0, 0))) if temporal else \
            (lambda a, b: nn.Conv2d(a, b, 3, padding=1))
        self.temporal = temporal
        self.in_layers = nn.Sequential(norm(c_in, groups), nn.SiLU(), conv(c_in, c_out))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.out_layers = nn.Sequential(norm(c_out, groups), nn.SiLU(), nn.Identity(), conv(c_out, c_out))
        self.skip_connection = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # x: (N, C, h, w) with emb (N, E); temporal: x (B, C, T, h, w) with emb (B, T, E)
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)
        h = h + (rearrange(e, "b t c -> b c t 1 1") if self.temporal else e[:, :, None, None])
        return self.skip_connection(x) + self.out_layers(h)


class VideoResBlock(ResBlock):
    """Spatial ResBlock (its tensors at the top level, as in the reference), then a temporal ResBlock convolving
    over frames, blended by a learned α: α·spatial + (1−α)·temporal."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__(c_in, c_out, emb_dim, groups)
        self.time_stack = ResBlock(c_out, c_out, emb_dim, groups, temporal=True)
        self.time_mixer = MixFactor()

    def forward(self, x: Tensor, emb: Tensor, num_frames: int, image_only_indicator: Tensor | None) -> Tensor:
        s = super().forward(x, emb)  # (B·T, C, h, w)
        s = rearrange(s, "(b t) c h w -> b c t h w", t=num_frames)
        tau = self.time_stack(s, rearrange(emb, "(b t) e -> b t e", t=num_frames))
        alpha = self.time_mixer.alpha(image_only_indicator)
        if alpha.dim() == 2:
            alpha = rearrange(alpha, "b t -> b 1 t 1 1")
        alpha = alpha.to(s.dtype)
        return rearrange(alpha * s + (1 - alpha) * tau, "b c t h w -> (b t) c h w")


class BasicTransformerBlock(nn.Module):
    """Spatial block: self-attention over the h·w tokens of a frame, cross-attention to the CLIP token, GEGLU."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads)
        self.attn2 = CrossAttention(dim, heads, context_dim)
        self.ff = FeedForward(dim)
        self.norm1, self.norm2, self.norm3 = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor, shortcut: bool = False) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        # shortcut: the CLIP context is a single token, so the cross-attention output does not depend on x.
        x = x + (self.attn2.single_token(context) if shortcut else self.attn2(self.norm2(x), context))
        return x + self.ff(self.norm3(x))


class VideoTransformerBlock(nn.Module):
    """Temporal block: each spatial position becomes a sequence of T frames."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm_in = LayerNorm(dim)
        self.ff_in = FeedForward(dim)
        self.attn1 = CrossAttention(dim, heads)
        self.attn2 = CrossAttention(dim, heads, context_dim)
        self.ff = FeedForward(dim)
        self.norm1, self.norm2, self.norm3 = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)

    def forward(self, x: Tensor, video_context: Tensor, num_frames: int, max_tokens: int | None = None,
                shortcut: bool = False) -> Tensor:
        """x (B·T, S, C); video_context (B, 1, D): the first frame's CLIP token of each video."""
        s = x.shape[1]
        x = rearrange(x, "(b t) s c -> (b s) t c", t=num_frames)
        if shortcut:  # one cross-attention output per video, shared by its S sequences
            cross = self.attn2.single_token(video_context).repeat_interleave(s, dim=0)  # (B·S, 1, C)
        else:
            cross = video_context.repeat_interleave(s, dim=0)  # (B·S, 1, D)
        fn = self._sequences_shortcut if shortcut else self._sequences
        x = in_slices(fn, x, cross, max_tokens=max_tokens)  # the B·S sequences are independent
        return rearrange(x, "(b s) t c -> (b t) s c", s=s)

    def _sequences(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.ff_in(self.norm_in(x))
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))

    def _sequences_shortcut(self, x: Tensor, cross: Tensor) -> Tensor:
        x = x + self.ff_in(self.norm_in(x))
        x = x + self.attn1(self.norm1(x))
        x = x + cross
        return x + self.ff(self.norm3(x))


class SpatialVideoTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim)])
        self.time_stack = nn.ModuleList([VideoTransformerBlock(channels, heads, context_dim)])
        self.time_pos_embed = nn.Sequential(nn.Linear(channels, channels * 4), nn.SiLU(),
                                            nn.Linear(channels * 4, channels))
        self.time_mixer = MixFactor()
        self.proj_out = nn.Linear(channels, channels)
        self.max_tokens: int | None = None  # tokens per slice in both blocks; None: no slicing
        self.shortcut = True  # single-token cross-attention computed once per frame / video

    def forward(self, x: Tensor, context: Tensor, num_frames: int, image_only_indicator: Tensor | None) -> Tensor:
        n, c, h, w = x.shape
        x_in = x
        x = rearrange(self.norm(x), "n c h w -> n (h w) c")
        x = self.proj_in(x)
        video_context = context[::num_frames]  # the temporal blocks attend to each video's first-frame context
        frames = torch.arange(num_frames, device=x.device).repeat(n // num_frames)
        pos = self.time_pos_embed(timestep_embedding(frames, c).to(x.dtype))[:, None]  # (B·T, 1, C)
        for spatial, temporal in zip(self.transformer_blocks, self.time_stack):
            x = in_slices(spatial, x, context, self.shortcut, max_tokens=self.max_tokens)  # frames are independent
            x_mix = temporal(x + pos, video_context, num_frames, self.max_tokens, self.shortcut)
            alpha = self.time_mixer.alpha(image_only_indicator)
            if alpha.dim() == 2:
                alpha = rearrange(alpha, "b t -> (b t) 1 1")
            x = alpha.to(x.dtype) * x + (1 - alpha.to(x.dtype)) * x_mix
        # Back to contiguous NCHW: a permuted (channels-last) activation would make every following convolution
        # reorder its weights on each call.
        x = rearrange(self.proj_out(x), "n (h w) c -> n c h w", h=h).contiguous()
        return x + x_in


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        # Upsampling to the skip's size equals ×2 for even sizes and keeps odd latent sizes working.
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNetBlock(nn.ModuleList):
    """One entry of input_blocks/output_blocks, or the middle block: its layers run in order, each given what it
    needs. A module of its own so that offloading can hook whole blocks."""

    def forward(self, h: Tensor, emb: Tensor, context: Tensor, num_frames: int, indicator: Tensor | None,
                upsample_size: tuple[int, int] | None = None, checkpointed: bool = False) -> Tensor:
        # checkpointed (training): each layer keeps only its input and recomputes its inside during backward, so
        # the largest saved set is one layer's rather than the whole network's (about a third more compute).
        run = _checkpointed if checkpointed else _call
        for layer in self:
            if isinstance(layer, VideoResBlock):
                h = run(layer, h, emb, num_frames, indicator)
            elif isinstance(layer, SpatialVideoTransformer):
                h = run(layer, h, context, num_frames, indicator)
            elif isinstance(layer, Upsample):
                h = layer(h, upsample_size)
            else:
                h = layer(h)
        return h


def _call(layer: nn.Module, *args) -> Tensor:
    return layer(*args)


def _checkpointed(layer: nn.Module, *args) -> Tensor:
    return checkpoint(layer, *args, use_reentrant=False)


class VideoUNet(nn.Module):
    def __init__(self, cfg: UNetConfig = UNetConfig()):
        super().__init__()
        self.cfg = cfg
        mc, emb = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(cfg.adm_in_channels, emb), nn.SiLU(),
                                                     nn.Linear(emb, emb)))

        def transformer(ch):
            return SpatialVideoTransformer(ch, ch // cfg.head_dim, cfg.context_dim, cfg.norm_groups)

        self.input_blocks = nn.ModuleList([UNetBlock([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        skip_channels, ch = [mc], mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                block = [VideoResBlock(ch, mult * mc, emb, cfg.norm_groups)]
                ch = mult * mc
                if cfg.attention_levels[level]:
                    block.append(transformer(ch))
                self.input_blocks.append(UNetBlock(block))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetBlock([Downsample(ch)]))
                skip_channels.append(ch)

        self.middle_block = UNetBlock([VideoResBlock(ch, ch, emb, cfg.norm_groups), transformer(ch),
                                       VideoResBlock(ch, ch, emb, cfg.norm_groups)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                block = [VideoResBlock(ch + skip_channels.pop(), mult * mc, emb, cfg.norm_groups)]
                ch = mult * mc
                if cfg.attention_levels[level]:
                    block.append(transformer(ch))
                if level and i == cfg.num_res_blocks:
                    block.append(Upsample(ch))
                self.output_blocks.append(UNetBlock(block))

        self.out = nn.Sequential(norm(ch, cfg.norm_groups), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self.checkpointing = False  # training: recompute each layer's activations in the backward pass

    def set_cross_attention_shortcut(self, enabled: bool) -> None:
        """Every cross-attention in SVD attends to a single CLIP token, so its output is to_out(to_v(token)) for
        every query: computed once per frame (spatial) or per video (temporal) instead of per position. Exact."""
        for m in self.modules():
            if isinstance(m, SpatialVideoTransformer):
                m.shortcut = enabled

    def set_max_tokens(self, max_tokens: int | None) -> None:
        """Process the transformers' independent rows (frames, pixel sequences) in slices of at most this many
        tokens: bounds attention and feed-forward memory, same results."""
        for m in self.modules():
            if isinstance(m, SpatialVideoTransformer):
                m.max_tokens = max_tokens

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor, num_frames: int,
                image_only_indicator: Tensor | None = None) -> Tensor:
        """x (B·T, in, h, w); timesteps (B·T,) real-valued (c_noise); context (B·T, 1, context_dim);
        y (B·T, adm); image_only_indicator (B, T) or None (all video) -> (B·T, out, h, w)."""
        dtype = x.dtype  # the compute dtype: callers hand in x in the dtype they want the network to run in
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(dtype))
        emb = emb + self.label_emb(y.to(dtype))
        h, context = x, context.to(dtype)
        ckpt = self.checkpointing and torch.is_grad_enabled()
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context, num_frames, image_only_indicator, checkpointed=ckpt)
            skips.append(h)
        h = self.middle_block(h, emb, context, num_frames, image_only_indicator, checkpointed=ckpt)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            target = skips[-1].shape[-2:] if skips else None  # the next skip's size is where an upsample must land
            h = block(h, emb, context, num_frames, image_only_indicator, target, checkpointed=ckpt)
        return self.out(h)
