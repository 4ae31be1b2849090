"""The video U-Net of SVD, SVD-XT and SV3D (the reference's VideoUNet), and of SV4D and SV4D 2.0 (the reference's
SpatialUNetModelWithTime: the same network with a second, "motion" attention in every transformer).

Module names follow the single-file checkpoint under `model.diffusion_model.`, so its tensors load with no renaming.
Frames are folded into the batch axis, video-major: row = b·T + t. In SV4D a video is a window of T frames × V views,
frame-major: row = (b·T + t)·V + v.
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
    # SV4D family: every transformer adds motion attention (the frames of one view, cross-attending to that view's
    # reference latent), and the video blocks are named time_mix_* (time_stack and time_pos_embed in SVD).
    motion_attention: bool = False
    motion_context_dim: int = 4  # the reference view's VAE latent
    camera_embedding: bool = False  # SV4D 2.0: the view embedding is made from the U-Net's own (time + camera) one
    separate_motion_mixer: bool = False  # SV4D 2.0: time_mixer_motion blends the motion branch
    attention_3d: bool = False  # SV4D 2.0, 4 views: the reference's "3-D" view-attention layout (SpacetimeTransformer)

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
    over frames, blended by a learned α: α·spatial + (1−α)·temporal.

    SV4D's files name the temporal block time_mix_blocks; it convolves along the window's T·V latents in their
    frame-major order (neighbouring views, and across a frame boundary), as the reference does."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, temporal_name: str = "time_stack"):
        super().__init__(c_in, c_out, emb_dim, groups)
        self.temporal_name = temporal_name
        self.add_module(temporal_name, ResBlock(c_out, c_out, emb_dim, groups, temporal=True))
        self.time_mixer = MixFactor()

    def forward(self, x: Tensor, emb: Tensor, num_frames: int, image_only_indicator: Tensor | None) -> Tensor:
        s = super().forward(x, emb)  # (B·T, C, h, w)
        s = rearrange(s, "(b t) c h w -> b c t h w", t=num_frames)
        temporal = getattr(self, self.temporal_name)
        tau = temporal(s, rearrange(emb, "(b t) e -> b t e", t=num_frames))
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
        x = self.sequences(x, video_context, s, max_tokens, shortcut)
        return rearrange(x, "(b s) t c -> (b t) s c", s=s)

    def sequences(self, x: Tensor, context: Tensor, repeats: int = 1, max_tokens: int | None = None,
                  shortcut: bool = False) -> Tensor:
        """x (N, L, C): N independent sequences of L tokens; context (N / repeats, 1, D): one token for each run of
        `repeats` consecutive sequences."""
        if shortcut:  # one cross-attention output per context token, shared by its sequences
            cross = self.attn2.single_token(context).repeat_interleave(repeats, dim=0)  # (N, 1, C)
            return in_slices(self._sequences_shortcut, x, cross, max_tokens=max_tokens)
        return in_slices(self._sequences, x, context.repeat_interleave(repeats, dim=0), max_tokens=max_tokens)

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


class SpacetimeTransformer(nn.Module):
    """SV4D's transformer (the reference's PostHocSpatialTransformerWithTimeMixingAndMotion) over a window of
    T frames × V views: spatial attention within each latent; view attention (time_mix_blocks: the V views of one
    frame and pixel, cross-attending to that frame's CLIP token); motion attention (motion_blocks: the T frames of one
    view and pixel, cross-attending to that view's latent at the window's reference frame); each branch blended in
    with a learned α, as in SVD's temporal blocks."""

    def __init__(self, channels: int, heads: int, cfg: UNetConfig):
        super().__init__()
        self.norm = GroupNorm(cfg.norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, cfg.context_dim)])
        self.time_mix_blocks = nn.ModuleList([VideoTransformerBlock(channels, heads, cfg.context_dim)])
        self.motion_blocks = nn.ModuleList([VideoTransformerBlock(channels, heads, cfg.motion_context_dim)])
        view_in = cfg.time_embed_dim if cfg.camera_embedding else channels
        self.time_mix_time_embed = nn.Sequential(nn.Linear(view_in, channels * 4), nn.SiLU(),
                                                 nn.Linear(channels * 4, channels))
        self.time_mix_motion_embed = nn.Sequential(nn.Linear(channels, channels * 4), nn.SiLU(),
                                                   nn.Linear(channels * 4, channels))
        self.time_mixer = MixFactor()
        if cfg.separate_motion_mixer:
            self.time_mixer_motion = MixFactor()
        self.proj_out = nn.Linear(channels, channels)
        self.camera_embedding, self.attention_3d = cfg.camera_embedding, cfg.attention_3d
        self.max_tokens: int | None = None  # as in SpatialVideoTransformer
        self.shortcut = True

    def forward(self, x: Tensor, context: Tensor, emb: Tensor, view_latents: Tensor) -> Tensor:
        """x (B·T·V, C, h, w), frame-major; context (B, T, D): the CLIP token of each input frame; emb (B·T·V, E):
        the U-Net's embedding; view_latents (B·V, 4, h', w'): each view's latent at the window's reference frame."""
        n, c, h, w = x.shape
        b, t = context.shape[:2]
        v, hw, dtype = view_latents.shape[0] // b, h * w, x.dtype
        x_in = x
        x = self.proj_in(rearrange(self.norm(x), "n c h w -> n (h w) c"))
        frame_tokens = rearrange(context, "b t d -> (b t) 1 d")  # (B·T, 1, D)
        motion_tokens = rearrange(F.interpolate(view_latents.to(dtype), size=(h, w), mode="bilinear"),
                                  "n d h w -> (n h w) 1 d")  # (B·V·h·w, 1, 4)
        frames = torch.arange(t, device=x.device).repeat(b)
        motion_pos = self.time_mix_motion_embed(timestep_embedding(frames, c).to(dtype))[:, None]  # (B·T, 1, C)
        if self.camera_embedding:  # frame 0's embedding of each view: its camera (the vector y) and the noise level
            view_pos = self.time_mix_time_embed(rearrange(emb, "(b t v) e -> b t v e", t=t, v=v)[:, 0].flatten(0, 1))
        else:
            views = torch.arange(v, device=x.device).repeat(b)
            view_pos = self.time_mix_time_embed(timestep_embedding(views, c).to(dtype))
        view_pos = view_pos[:, None]  # (B·V, 1, C)
        motion_mixer = getattr(self, "time_mixer_motion", self.time_mixer)
        for spatial, view_block, motion_block in zip(self.transformer_blocks, self.time_mix_blocks,
                                                     self.motion_blocks):
            x = in_slices(spatial, x, frame_tokens.repeat_interleave(v, dim=0), self.shortcut,
                          max_tokens=self.max_tokens)  # (B·T·V, h·w, C)

            if self.attention_3d:
                x = rearrange(x, "(b t v) s c -> (b v s) t c", t=t, v=v)
                mixed = x + view_pos.repeat_interleave(hw, dim=0)
                # The reference splits its (b v s) rows into runs of V consecutive rows, which are V neighbouring
                # pixels of one view rather than the V views of one pixel; the trained weights expect exactly that.
                mixed = rearrange(mixed, "(g k) t c -> (g t) k c", k=v)
                mixed = view_block.sequences(mixed, frame_tokens, hw, self.max_tokens, self.shortcut)
                mixed = rearrange(mixed, "(g t) k c -> (g k) t c", t=t)
                x = self._blend(self.time_mixer, x, mixed)
                x = rearrange(x, "(b v s) t c -> (b t) (v s) c", v=v, s=hw)
            else:
                x = rearrange(x, "(b t v) s c -> (b v) (t s) c", t=t, v=v)
                mixed = rearrange(x + view_pos, "(b v) l c -> (b l) v c", v=v)  # sequences of V views, (t, pixel)
                mixed = view_block.sequences(mixed, frame_tokens, hw, self.max_tokens, self.shortcut)
                x = self._blend(self.time_mixer, x, rearrange(mixed, "(b l) v c -> (b v) l c", b=b))
                x = rearrange(x, "(b v) (t s) c -> (b t) (v s) c", v=v, t=t)

            mixed = rearrange(x + motion_pos, "(b t) l c -> (b l) t c", t=t)  # sequences of T frames, (view, pixel)
            mixed = motion_block.sequences(mixed, motion_tokens, 1, self.max_tokens, self.shortcut)
            x = self._blend(motion_mixer, x, rearrange(mixed, "(b l) t c -> (b t) l c", b=b))
            x = rearrange(x, "(b t) (v s) c -> (b t v) s c", t=t, v=v)
        x = rearrange(self.proj_out(x), "n (h w) c -> n c h w", h=h).contiguous()
        return x + x_in

    @staticmethod
    def _blend(mixer: MixFactor, x: Tensor, mixed: Tensor) -> Tensor:
        alpha = mixer.alpha()
        return alpha.to(x.dtype) * x + (1 - alpha).to(x.dtype) * mixed


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
                upsample_size: tuple[int, int] | None = None, checkpointed: bool = False,
                view_latents: Tensor | None = None) -> Tensor:
        # checkpointed (training): each layer keeps only its input and recomputes its inside during backward, so
        # the largest saved set is one layer's rather than the whole network's (about a third more compute).
        run = _checkpointed if checkpointed else _call
        for layer in self:
            if isinstance(layer, VideoResBlock):
                h = run(layer, h, emb, num_frames, indicator)
            elif isinstance(layer, SpatialVideoTransformer):
                h = run(layer, h, context, num_frames, indicator)
            elif isinstance(layer, SpacetimeTransformer):
                h = run(layer, h, context, emb, view_latents)
            elif isinstance(layer, Upsample):
                h = layer(h, upsample_size)
            else:
                h = layer(h)
        return h


def _call(layer: nn.Module, *args) -> Tensor:
    return layer(*args)


def _checkpointed(layer: nn.Module, *args) -> Tensor:
    return checkpoint(layer, *args, use_reentrant=False)


@dataclass
class DeepFeatureCache:
    """The U-Net's deep features, kept between calls (DeepCache, Ma et al., 2024): a refreshing call runs the whole
    network and keeps the input of its last `depth` output blocks (before their skip concatenation); a cached call
    runs only the first `depth` input blocks and the last `depth` output blocks, and takes the rest from the kept
    features. Adjacent sampling steps change the deep features little; the shallow blocks carry what does change
    (the noise level's fine detail). One cache per denoised clip (its batch: the guidance halves together)."""
    depth: int = 1
    refresh: bool = True
    features: Tensor | None = None


class VideoUNet(nn.Module):
    def __init__(self, cfg: UNetConfig = UNetConfig()):
        super().__init__()
        self.cfg = cfg
        mc, emb = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(cfg.adm_in_channels, emb), nn.SiLU(),
                                                     nn.Linear(emb, emb)))

        def transformer(ch):
            if cfg.motion_attention:
                return SpacetimeTransformer(ch, ch // cfg.head_dim, cfg)
            return SpatialVideoTransformer(ch, ch // cfg.head_dim, cfg.context_dim, cfg.norm_groups)

        temporal_name = "time_mix_blocks" if cfg.motion_attention else "time_stack"

        def resblock(c_in, c_out):
            return VideoResBlock(c_in, c_out, emb, cfg.norm_groups, temporal_name)

        self.input_blocks = nn.ModuleList([UNetBlock([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        skip_channels, ch = [mc], mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                block = [resblock(ch, mult * mc)]
                ch = mult * mc
                if cfg.attention_levels[level]:
                    block.append(transformer(ch))
                self.input_blocks.append(UNetBlock(block))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetBlock([Downsample(ch)]))
                skip_channels.append(ch)

        self.middle_block = UNetBlock([resblock(ch, ch), transformer(ch), resblock(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                block = [resblock(ch + skip_channels.pop(), mult * mc)]
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
            if isinstance(m, (SpatialVideoTransformer, SpacetimeTransformer)):
                m.shortcut = enabled

    def set_max_tokens(self, max_tokens: int | None) -> None:
        """Process the transformers' independent rows (frames, pixel sequences) in slices of at most this many
        tokens: bounds attention and feed-forward memory, same results."""
        for m in self.modules():
            if isinstance(m, (SpatialVideoTransformer, SpacetimeTransformer)):
                m.max_tokens = max_tokens

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor, num_frames: int,
                image_only_indicator: Tensor | None = None, view_latents: Tensor | None = None,
                cache: DeepFeatureCache | None = None) -> Tensor:
        """x (B·T, in, h, w); timesteps (B·T,) real-valued (c_noise); context (B·T, 1, context_dim);
        y (B·T, adm); image_only_indicator (B, T) or None (all video) -> (B·T, out, h, w).

        SV4D (cfg.motion_attention): x holds B windows of T frames × V views, frame-major, and num_frames = T·V (the
        temporal convolutions run along all of them); context (B, T, context_dim), one CLIP token per frame;
        view_latents (B·V, 4, h, w): each view's latent at the window's reference frame.
        cache: see DeepFeatureCache; a cached call needs the features of a refreshing call of the same shapes."""
        dtype = x.dtype  # the compute dtype: callers hand in x in the dtype they want the network to run in
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(dtype))
        emb = emb + self.label_emb(y.to(dtype))
        h, context = x, context.to(dtype)
        ckpt = self.checkpointing and torch.is_grad_enabled()
        skips = []
        cached = cache is not None and not cache.refresh
        shallow = len(self.output_blocks) - cache.depth if cache is not None else None  # first output block run
        for block in self.input_blocks[:cache.depth] if cached else self.input_blocks:
            h = block(h, emb, context, num_frames, image_only_indicator, checkpointed=ckpt, view_latents=view_latents)
            skips.append(h)
        if cached:
            h = cache.features
        else:
            h = self.middle_block(h, emb, context, num_frames, image_only_indicator, checkpointed=ckpt,
                                  view_latents=view_latents)
        for index, block in enumerate(self.output_blocks):
            if cached and index < shallow:
                continue
            if cache is not None and not cached and index == shallow:
                cache.features = h
            h = torch.cat([h, skips.pop()], dim=1)
            target = skips[-1].shape[-2:] if skips else None  # the next skip's size is where an upsample must land
            h = block(h, emb, context, num_frames, image_only_indicator, target, checkpointed=ckpt,
                      view_latents=view_latents)
        return self.out(h)
