"""The OpenCLIP ViT-H/14 vision tower that embeds the conditioning image, in open_clip's key layout
(`conditioner.embedders.0.open_clip.model.visual.`), plus the reference's preprocessing.

Our own module rather than open-clip-torch: that package pulls torchvision, which does not import with the CPU torch
wheels we pin (see docs/architecture.md).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .layers import LayerNorm, attention

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    head_width: int = 80  # 16 heads
    mlp_width: int = 5120
    embed_dim: int = 1024

    @property
    def heads(self) -> int:
        return self.width // self.head_width


class MultiheadAttention(nn.Module):
    """Fused q/k/v projection (rows ordered q, k, v), as nn.MultiheadAttention stores it."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(attention(q, k, v, self.heads))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # exact GELU, not QuickGELU


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.width)
        self.attn = MultiheadAttention(cfg.width, cfg.heads)
        self.ln_2 = LayerNorm(cfg.width)
        self.mlp = MLP(cfg.width, cfg.mlp_width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(cfg) for _ in range(cfg.layers)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ImageEncoder(nn.Module):
    """Vision tower: patches + CLS token -> 32 pre-LN blocks -> ln_post on CLS -> proj. Not L2-normalised."""

    def __init__(self, cfg: CLIPConfig = CLIPConfig()):
        super().__init__()
        self.cfg = cfg
        grid = cfg.image_size // cfg.patch_size
        self.conv1 = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, cfg.width))
        self.ln_pre = LayerNorm(cfg.width)
        self.transformer = Transformer(cfg)
        self.ln_post = LayerNorm(cfg.width)
        self.proj = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels: CLIP-normalised (N, 3, 224, 224) -> (N, embed_dim)."""
        x = rearrange(self.conv1(pixels), "n c gh gw -> n (gh gw) c")
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj.to(x.dtype)

    def preprocess(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) in [-1, 1] -> CLIP input (N, 3, 224, 224): the whole frame squashed to a square."""
        x = antialiased_resize(images.float(), (self.cfg.image_size, self.cfg.image_size))
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return ((x + 1) / 2 - mean) / std

    def encode_image(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) in [-1, 1] -> image embedding (N, embed_dim) in the encoder's dtype."""
        return self(self.preprocess(images).to(self.class_embedding.dtype))  # the compute dtype


def _gaussian_kernel(size: int, sigma: float, device) -> Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def antialiased_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize with align_corners=True after a Gaussian prefilter, kornia's antialias rule (the reference
    resizes with kornia): per axis f = in/out, σ = max((f−1)/2, 0.001), kernel int(max(4σ, 3)) made odd,
    reflect padding; no prefilter when no axis shrinks."""
    h, w = x.shape[-2:]
    factors = (h / size[0], w / size[1])
    if max(factors) > 1:
        sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
        ks = [int(max(4.0 * s, 3)) for s in sigmas]
        ks = [k if k % 2 else k + 1 for k in ks]
        ks = [1 if n == 1 else k for n, k in zip((h, w), ks)]
        c = x.shape[1]
        ky = _gaussian_kernel(ks[0], sigmas[0], x.device).view(1, 1, -1, 1).repeat(c, 1, 1, 1)
        kx = _gaussian_kernel(ks[1], sigmas[1], x.device).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
        x = F.pad(x, (ks[1] // 2, ks[1] // 2, ks[0] // 2, ks[0] // 2), mode="reflect")
        x = F.conv2d(F.conv2d(x, ky, groups=c), kx, groups=c)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)

