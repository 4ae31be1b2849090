"""The KL-f8 autoencoder of SVD/SV3D: the encoder that makes the conditioning latent, and the decoders.

Three decoders exist in the released files: the temporal decoder of SVD/SVD-XT (every ResnetBlock gets a temporal
Conv3d stack and a learned blend, conv_out gets a temporal Conv3d), the frame-wise decoder of the `*_image_decoder`
files (with post_quant_conv) and of SV3D (without). Names follow the reference's Encoder/Decoder.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .layers import GroupNorm, attention

SCALE_FACTOR = 0.18215  # diffused latents live in scaled space; the conditioning latent does not


@dataclass(frozen=True)
class VAEConfig:
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    image_channels: int = 3
    temporal_decoder: bool = True  # SVD/SVD-XT; False: frame-wise decoder (image-decoder variants, SV3D)
    post_quant_conv: bool = False  # only the SVD image-decoder variants have one
    norm_groups: int = 32  # the reference's; fewer only for models at a fraction of its widths (layers.GroupNorm)


def norm(channels: int, groups: int) -> GroupNorm:
    return GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class TemporalStack(nn.Module):
    """Two Conv3d (3,1,1) over frames with a residual; GroupNorm (eps 1e-5) over all frames of the chunk."""

    def __init__(self, channels: int, groups: int):
        super().__init__()

        def conv():
            return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

        self.in_layers = nn.Sequential(GroupNorm(groups, channels, eps=1e-5), nn.SiLU(), conv())
        self.out_layers = nn.Sequential(GroupNorm(groups, channels, eps=1e-5), nn.SiLU(), nn.Identity(), conv())

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, h, w)
        return x + self.out_layers(self.in_layers(x))


class VideoResnetBlock(ResnetBlock):
    """Decoder block: α·temporal + (1−α)·spatial. Note the reverse of the U-Net's blend."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__(c_in, c_out, groups)
        self.time_stack = TemporalStack(c_out, groups)
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        s = rearrange(super().forward(x), "(b t) c h w -> b c t h w", t=num_frames)
        alpha = torch.sigmoid(self.mix_factor.float()).to(s.dtype)
        out = alpha * self.time_stack(s) + (1 - alpha) * s
        return rearrange(out, "b c t h w -> (b t) c h w")


class AttnBlock(nn.Module):
    """Single-head self-attention over the h·w positions of a frame, 1×1-conv projections."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        h = self.norm(x)
        q, k, v = (rearrange(f(h), "n c y x -> n (y x) c") for f in (self.q, self.k, self.v))
        # contiguous NCHW again: a channels-last view here would make every later convolution reorder its weights
        out = rearrange(attention(q, k, v, heads=1), "n (y x) c -> n c y x", y=x.shape[2]).contiguous()
        return x + self.proj_out(out)


class EncoderDownsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as the reference


class DecoderUpsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: `block.j` and an optional `downsample`/`upsample`."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, resample_name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(resample_name, resample)


class Mid(nn.Module):
    def __init__(self, block_1: nn.Module, attn_1: nn.Module, block_2: nn.Module):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = block_1, attn_1, block_2

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x, num_frames)), num_frames)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        widths = [ch * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.image_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c, g = ch, cfg.norm_groups
        for i, w in enumerate(widths):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(c, w, g))
                c = w
            last = i == len(widths) - 1
            self.down.append(Level(blocks, None if last else EncoderDownsample(c), "downsample"))
        self.mid = Mid(ResnetBlock(c, c, g), AttnBlock(c, g), ResnetBlock(c, c, g))
        self.norm_out = norm(c, g)
        self.conv_out = nn.Conv2d(c, 2 * cfg.z_channels, 3, padding=1)  # mean ⊕ logvar

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AE3DConv(nn.Conv2d):
    """conv_out of the temporal decoder: a 2-D conv, then a Conv3d over frames (no residual)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1)
        self.time_mix_conv = nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        x = rearrange(super().forward(x), "(b t) c h w -> b c t h w", t=num_frames)
        return rearrange(self.time_mix_conv(x), "b c t h w -> (b t) c h w")


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        widths = [ch * m for m in cfg.channel_mult]
        block = VideoResnetBlock if cfg.temporal_decoder else ResnetBlock
        c, g = widths[-1], cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = Mid(block(c, c, g), AttnBlock(c, g), block(c, c, g))
        up = []
        for i, w in reversed(list(enumerate(widths))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(block(c, w, g))
                c = w
            up.insert(0, Level(blocks, DecoderUpsample(c) if i else None, "upsample"))
        self.up = nn.ModuleList(up)  # up.0 is the finest level, run last
        self.norm_out = norm(c, g)
        self.conv_out = AE3DConv(c, cfg.image_channels) if cfg.temporal_decoder else \
            nn.Conv2d(c, cfg.image_channels, 3, padding=1)

    def forward(self, z: Tensor, num_frames: int) -> Tensor:
        h = self.mid(self.conv_in(z), num_frames)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h, num_frames)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        h = F.silu(self.norm_out(h))
        return self.conv_out(h, num_frames) if isinstance(self.conv_out, AE3DConv) else self.conv_out(h)


class VAE(nn.Module):
    """Encoder + quant_conv (the conditioner's copy) and the first stage's decoder (+ post_quant_conv)."""

    def __init__(self, cfg: VAEConfig = VAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.decoder = Decoder(cfg)
        if cfg.post_quant_conv:
            self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def encode(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) in [-1, 1] -> posterior mean (N, z, H/8, W/8), unscaled (the conditioning latent)."""
        moments = self.quant_conv(self.encoder(images))
        return moments[:, : self.cfg.z_channels]

    def decode(self, z: Tensor, num_frames: int) -> Tensor:
        """z (B·T, z, h, w) in VAE space (already divided by the scale factor) -> (B·T, 3, 8h, 8w) in ≈[-1, 1].

        The temporal decoder treats the B·T rows as B clips of num_frames frames."""
        if hasattr(self, "post_quant_conv"):
            z = self.post_quant_conv(z)
        return self.decoder(z, num_frames)
