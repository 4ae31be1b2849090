"""Building blocks shared by the U-Net, the VAE and the image encoder.

Normalisation layers compute in float32 whatever the storage and compute dtype, as the reference's GroupNorm32 and
open_clip's LayerNorm do: this is what keeps fp16/bf16 compute stable.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class GroupNorm(nn.GroupNorm):
    """GroupNorm in float32. Works on 4-D (per frame) and 5-D (B, C, T, h, w) inputs; on 5-D the statistics of each
    group are taken over all frames jointly, as the reference's temporal blocks do.

    The reference fixes 32 groups; the configs' norm_groups can say fewer. A model at a fraction of the reference's
    widths (the demo model) keeps the reference's channels per group with fewer groups, or its narrowest GroupNorms
    would have one channel per group and remove each channel's image mean: a decoder could then not output a flat
    colour."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm in float32 (autocast runs layer_norm in float32 in the reference)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding, cosine half first, in float32: (N,) -> (N, dim).

    The one embedding of the reference: diffusion time (c_noise), fps_id, motion bucket, noise augmentation,
    camera angles and frame indices all go through it."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


# The fused attention kernels put the batch on an axis of the CUDA grid, which holds at most 65,535 blocks: SVD's
# temporal attention, one sequence per pixel of both guidance halves (2·h·w), passes that from about 2048×1152, and a
# larger batch fails to launch. Sequences beyond it go in further calls.
MAX_ATTENTION_BATCH = 65535


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Softmax attention over token sequences: q (B, Nq, H·D), k/v (B, Nk, H·D) -> (B, Nq, H·D), scale 1/√D.

    The single attention function of the project; scaled_dot_product_attention picks the flash or
    memory-efficient kernel where the device has one, at most MAX_ATTENTION_BATCH sequences a call."""
    q, k, v = (rearrange(x, "b n (h d) -> b h n d", h=heads) for x in (q, k, v))
    if q.shape[0] <= MAX_ATTENTION_BATCH:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = torch.cat([F.scaled_dot_product_attention(*parts) for parts in
                         zip(q.split(MAX_ATTENTION_BATCH), k.split(MAX_ATTENTION_BATCH), v.split(MAX_ATTENTION_BATCH))])
    return rearrange(out, "b h n d -> b n (h d)")


class CrossAttention(nn.Module):
    """Multi-head attention with the reference's names: to_q/to_k/to_v without bias, to_out.0 with bias."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Identity())  # index 1 is the reference's Dropout(0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        return self.to_out(attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads))

    def single_token(self, context: Tensor) -> Tensor:
        """The output for a context of one token, whatever the queries: softmax over one key is exactly 1, so every
        query gets that token's value. (N, 1, D) -> (N, 1, C), to be broadcast over the queries."""
        return self.to_out(self.to_v(context))


class GEGLU(nn.Module):
    """Linear to twice the inner width; first half is the value, second half the gate (exact GELU)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward C -> 4C -> C; keys net.0.proj and net.2."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MixFactor(nn.Module):
    """A learned blend between a spatial and a temporal branch: α = sigmoid(mix_factor).

    The U-Net blends α·spatial + (1−α)·temporal, the VAE decoder α·temporal + (1−α)·spatial; callers say which."""

    def __init__(self):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def alpha(self, image_only_indicator: Tensor | None = None) -> Tensor:
        alpha = torch.sigmoid(self.mix_factor.float())
        if image_only_indicator is not None:  # frames flagged as images are purely spatial (image training mode)
            alpha = torch.where(image_only_indicator.bool(), torch.ones_like(alpha), alpha)
        return alpha


def in_slices(fn, x: Tensor, *args, max_tokens: int | None) -> Tensor:
    """fn applied to slices of x along dim 0, each at most max_tokens tokens (rows × sequence length).

    For blocks whose rows are independent (the spatial transformer's frames, the temporal transformer's pixel
    sequences), slicing bounds the memory of their attention and GEGLU intermediates without changing results."""
    rows = x.shape[0] if not max_tokens else max(1, max_tokens // max(1, x.shape[1]))
    if rows >= x.shape[0]:
        return fn(x, *args)
    return torch.cat([fn(part, *(a[i:i + rows] if isinstance(a, Tensor) and a.shape[0] == x.shape[0] else a
                                   for a in args)) for i, part in zip(range(0, x.shape[0], rows), x.split(rows))])
