"""Training the SVD autoencoder from scratch: the demo model's VAE, learnt on procedural clips.

Objective: the encoder runs frame-wise and quant_conv gives a diagonal Gaussian posterior (mean ⊕ logvar); a
reparameterised sample is decoded clip by clip by the temporal decoder, and the loss is

    L1 + l2_weight·L2 + edge_weight·L1(∇x̂ − ∇x) + flicker_weight·L1(∂ₜx̂ − ∂ₜx) + kl_weight·KL

on pixels in [-1, 1]. No perceptual (LPIPS) or adversarial term: they need pretrained networks we do not have, and
the demo only needs reconstructions good enough for a small diffusion model. The edge term keeps the detail that
pixel losses blur away; the flicker term is what the temporal decoder is there for (consistent frames). The KL is
summed over latent elements and divided by the pixel count, so kl_weight means what the reference's 1e-6 means
(there both terms are sums over the image): it only keeps the posterior from collapsing to a point, it does not
make latents unit-variance. `calibrate_latent_scale` does that afterwards, exactly.

Determinism: the data comes from `clips_fn(step)` and the reparameterisation noise of step k from a generator
seeded by (seed, k), so a run is a function of the initial weights, the settings and the data (on one machine and
thread count: CPU kernels may order float sums differently elsewhere).
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vae import SCALE_FACTOR, VAE, AE3DConv, AttnBlock, ResnetBlock, TemporalStack, VAEConfig
from ..runtime.seeds import seed_of
from ..training.trainer import TrainingError
from ..video.motion import psnr
from .procedural import random_clip


INIT_LOGVAR = -10.0  # posterior std ≈ 0.007 at the start
BOX_CONST = 8.0  # the constant channel of box_codec_start


@dataclass(frozen=True)
class VAETrainSettings:
    steps: int = 2000
    batch: int = 1  # clips per step
    frames: int = 14  # frames per clip: the temporal decoder decodes them together
    # Peak learning rate: linear warm-up, then cosine down to min_lr_ratio·lr (the budget is fixed in steps).
    # High for a VAE because CPU budgets allow only hundreds of steps: 2e-4 learnt clearly slower in those.
    lr: float = 1e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0  # a safety net at this learning rate: one odd batch must not undo the run
    l2_weight: float = 1.0  # "a little": in [-1, 1] the squared error is an order below L1 once errors are < 0.1
    edge_weight: float = 0.5  # L1 of the image gradients (x and y differences)
    flicker_weight: float = 0.5  # L1 of the frame-to-frame differences
    kl_weight: float = 1e-6
    seed: int = 0


@torch.no_grad()
def new_vae(cfg: VAEConfig, seed: int = 0) -> VAE:
    """A VAE to train: PyTorch's default initialisation from `seed` (the global RNG is left as it was), with the
    temporal parts starting as identities, so the untrained temporal decoder is exactly a frame-wise decoder:
    the temporal stacks' last convolutions are zero (as the reference's zero_module), conv_out's time_mix_conv
    passes the middle frame through. The posterior starts nearly deterministic (logvar INIT_LOGVAR): with
    PyTorch's initialisation its std would be 1 against a mean of std ≈ 0.4, and the decoder would spend the
    first hundreds of steps learning through noise (a trained SD VAE's posterior std is tiny anyway)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(cfg)
    for m in vae.modules():
        if isinstance(m, TemporalStack):
            conv = m.out_layers[-1]
            conv.weight.zero_()
            conv.bias.zero_()
        elif isinstance(m, AE3DConv):
            w = m.time_mix_conv.weight  # (C, C, 3, 1, 1)
            w.zero_()
            w[:, :, 1, 0, 0] = torch.eye(w.shape[0])
            m.time_mix_conv.bias.zero_()
    vae.quant_conv.bias[cfg.z_channels:] += INIT_LOGVAR
    return vae


def _identity_blocks(module: nn.Module) -> None:
    """Every residual branch and attention output in `module` to zero, so each block passes its input through."""
    for m in module.modules():
        if isinstance(m, ResnetBlock):
            m.conv2.weight.zero_()
            m.conv2.bias.zero_()
        elif isinstance(m, AttnBlock):
            m.proj_out.weight.zero_()
            m.proj_out.bias.zero_()
        elif isinstance(m, TemporalStack):
            m.out_layers[-1].weight.zero_()
            m.out_layers[-1].bias.zero_()


def _group_layout(norm: nn.GroupNorm) -> tuple[dict[int, tuple[int, int]], float]:
    """Where colour i goes before `norm`: its group i holds (x_i, −x_i, c, −c) in its first four channels, source
    channels 0..2 being the colours and 3 the constant c. Returns {channel: (source, sign)} and the group's std
    per unit of c (for E[x²] ≈ 0.25) that the layer after the SiLU multiplies back."""
    size = norm.num_channels // norm.num_groups
    if size < 4:
        raise ValueError(f"the box-codec start needs groups of ≥ 4 channels, not {size} (VAEConfig.norm_groups)")
    layout = {size * i + j: src for i in range(3) for j, src in enumerate(((i, 1), (i, -1), (3, 1), (3, -1)))}
    return layout, math.sqrt(2 * (1 + 0.25 / BOX_CONST ** 2) / size)


def _read_pairs(conv: nn.Conv2d, layout: dict[int, tuple[int, int]], scale: float) -> None:
    """conv reads SiLU(x) − SiLU(−x) = x for each colour (exact: SiLU(y) − SiLU(−y) = y)."""
    conv.weight.zero_()
    conv.bias.zero_()
    for ch, (src, sign) in layout.items():
        if src < 3:
            conv.weight[src, ch, 1, 1] = sign * scale * BOX_CONST


def _copy_channels(conv: nn.Conv2d) -> None:
    w = conv.weight
    w.zero_()
    n = min(w.shape[:2])
    w[:n, :n, 0, 0] = torch.eye(n)
    conv.bias.zero_()


@torch.no_grad()
def box_codec_start(vae: VAE) -> None:
    """Start the autoencoder as a box-filter codec: the encoder computes the 8×8 means of R, G, B (a zero fourth
    latent channel) and the decoder upsamples them (nearest ×4, then bilinear ×2): 28 dB on the demo's held-out
    images before any training.

    Why: from PyTorch's initialisation the autoencoder first learns to output the data mean and stays there for
    hundreds of steps (docs/demo-model.md); from a working codec, training only has to add detail.

    Every residual branch and attention output starts at zero, so each block is an identity; conv_in places the
    colours, downsampling averages 2×2 blocks, upsampling is nearest (the last one + a [1 2 1]/4 blur: bilinear),
    channel changes copy. Both networks end in GroupNorm → SiLU → conv: GroupNorm would remove each group's image
    mean (the mean colour) and divide by an image-dependent std, and SiLU is not linear. So each colour x enters the
    last GroupNorm's group as (x, −x, c, −c) for a constant c: the group mean is 0 at every pixel, the group
    variance is dominated by c (within 1 % for |x| ≤ 1), and the last conv reads SiLU(x) − SiLU(−x) = x exactly.
    This needs groups of ≥ 4 channels (VAEConfig.norm_groups)."""
    enc, dec, cfg = vae.encoder, vae.decoder, vae.cfg
    _identity_blocks(vae)

    # Encoder: (R, G, B, c) at the first level, spread to the final layout at the first channel change.
    enc_layout, enc_scale = _group_layout(enc.norm_out)
    enc.conv_in.weight.zero_()
    enc.conv_in.bias.zero_()
    for i in range(3):
        enc.conv_in.weight[i, i, 1, 1] = 1.0
    enc.conv_in.bias[3] = BOX_CONST
    spread = False
    for level in enc.down:
        for block in level.block:
            if hasattr(block, "nin_shortcut"):
                _copy_channels(block.nin_shortcut)
                if not spread:  # the first change rearranges instead of copying
                    block.nin_shortcut.weight.zero_()
                    for ch, (src, sign) in enc_layout.items():
                        block.nin_shortcut.weight[ch, src, 0, 0] = sign
                    spread = True
        if hasattr(level, "downsample"):
            conv = level.downsample.conv
            conv.weight.zero_()
            conv.weight[:, :, :2, :2] = torch.eye(conv.weight.shape[0])[:, :, None, None] / 4  # reads no padding
            conv.bias.zero_()
    if not spread:
        raise ValueError("the box-codec start needs a channel change in the encoder")
    enc.norm_out.weight.fill_(1.0)
    enc.norm_out.bias.zero_()
    _read_pairs(enc.conv_out, enc_layout, enc_scale)
    z = cfg.z_channels
    vae.quant_conv.weight.zero_()
    vae.quant_conv.weight[:, :, 0, 0] = torch.eye(2 * z)
    vae.quant_conv.bias.zero_()
    vae.quant_conv.bias[z:] = INIT_LOGVAR

    # Decoder: conv_in writes the final layout directly; channel changes copy it.
    dec_layout, dec_scale = _group_layout(dec.norm_out)
    if max(dec_layout) >= min(cfg.channels * m for m in cfg.channel_mult):
        raise ValueError("the box-codec layout does not fit the decoder's narrowest level")
    dec.conv_in.weight.zero_()
    dec.conv_in.bias.zero_()
    for ch, (src, sign) in dec_layout.items():
        if src < 3:
            dec.conv_in.weight[ch, src, 1, 1] = sign
        else:
            dec.conv_in.bias[ch] = sign * BOX_CONST
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = torch.outer(blur, blur) / 16  # after nearest ×2: bilinear interpolation (align_corners=False)
    # Only the last upsampling (to full resolution) blurs the colours, the coarser ones are nearest: a blur's zero
    # padding dims the border, and a coarse level's border is 2–8 pixels wide at full resolution (−2 dB).
    colour = {ch for ch, (src, _) in dec_layout.items() if src < 3}
    for level in dec.up:
        for block in level.block:
            if hasattr(block, "nin_shortcut"):
                _copy_channels(block.nin_shortcut)
        if hasattr(level, "upsample"):
            conv = level.upsample.conv
            conv.weight.zero_()
            conv.bias.zero_()
            for ch in range(conv.weight.shape[0]):  # the constants stay unblurred: zero padding would dim them
                if ch in colour and level is dec.up[1]:
                    conv.weight[ch, ch] = blur
                else:
                    conv.weight[ch, ch, 1, 1] = 1.0
    dec.norm_out.weight.fill_(1.0)
    dec.norm_out.bias.zero_()
    _read_pairs(dec.conv_out, dec_layout, dec_scale)


def box_latents(images: Tensor, factor: int = 8) -> Tensor:
    """(N, 3, H, W) -> (N, 4, H/f, W/f): the f×f means of R, G, B and a zero channel (box_codec_start's latents)."""
    means = F.avg_pool2d(images, factor)
    return torch.cat([means, torch.zeros_like(means[:, :1])], 1)


def procedural_clips(seeds: Iterable[int], frames: int, size: tuple[int, int], fps: float = 7.0,
                     crop: tuple[int, int] | None = None, **clip_kw) -> Tensor:
    """One procedural clip per seed (see procedural.random_clip): (B, T, 3, H, W) float32 in [-1, 1].

    crop (h, w): a window of each clip, at a place drawn from its seed. The networks are convolutional, so
    training on crops of full-size clips sees the full-size statistics at a fraction of the cost per clip,
    and more clips per step: a batch of one scene teaches the model that scene, not scenes."""
    out = []
    for s in seeds:
        clip = random_clip(s, frames, fps, size, **clip_kw)[0]  # (T, H, W, 3) uint8
        if crop:
            rng = np.random.default_rng([s, 1])  # not random_clip's stream: the crop must not correlate with it
            y, x = (int(rng.integers(n - c + 1)) for n, c in zip(size, crop))
            clip = clip[:, y:y + crop[0], x:x + crop[1]]
        out.append(clip)
    x = torch.from_numpy(np.stack(out)).permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
    return x.float() / 127.5 - 1


def lr_at(settings: VAETrainSettings, step: int) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    t = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def posterior(vae: VAE, images: Tensor) -> tuple[Tensor, Tensor]:
    """images (N, 3, H, W) -> mean, logvar (N, z, h, w) of the diagonal Gaussian posterior."""
    mean, logvar = vae.quant_conv(vae.encoder(images)).chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)  # the reference's clamp: exp() must not overflow early in training


def vae_loss(vae: VAE, x: Tensor, noise_gen: torch.Generator,
             settings: VAETrainSettings) -> tuple[Tensor, dict, Tensor]:
    """x (B, T, 3, H, W) in [-1, 1] -> (loss, its terms as floats, the reconstruction (B, T, 3, H, W))."""
    B, T = x.shape[:2]
    flat = x.flatten(0, 1)  # (B·T, 3, H, W): the encoder sees single frames
    mean, logvar = posterior(vae, flat)  # (B·T, z, h, w)
    noise = torch.randn(mean.shape, generator=noise_gen, device=noise_gen.device).to(mean)
    z = mean + torch.exp(0.5 * logvar) * noise
    rec = vae.decode(z, T).view_as(x)  # (B, T, 3, H, W): the decoder sees whole clips
    err = rec - x
    terms = {"l1": err.abs().mean(), "l2": err.pow(2).mean()}
    terms["edge"] = ((err[..., 1:, :] - err[..., :-1, :]).abs().mean()  # ∇x̂ − ∇x = ∇(x̂ − x)
                     + (err[..., :, 1:] - err[..., :, :-1]).abs().mean())
    terms["flicker"] = (err[:, 1:] - err[:, :-1]).abs().mean() if T > 1 else err.new_zeros(())
    terms["kl"] = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum() / x.numel()
    loss = (terms["l1"] + settings.l2_weight * terms["l2"] + settings.edge_weight * terms["edge"]
            + settings.flicker_weight * terms["flicker"] + settings.kl_weight * terms["kl"])
    return loss, {k: v.item() for k, v in terms.items()}, rec


def train_vae(vae: VAE, clips_fn: Callable[[int], Tensor], settings: VAETrainSettings,
              progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Train `vae` in place for s.steps on clips_fn(step) -> (s.batch, s.frames, 3, H, W) in [-1, 1]; H and W are
    the caller's choice (multiples of the VAE's downsampling), crops included.

    Returns a summary: the last step's loss and its terms, the PSNR of the last batch's reconstruction (of the
    sampled latent, as trained), the loss of every step, and the time taken."""
    device = next(vae.parameters()).device
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), weight_decay=0.0)
    vae.train()
    losses, t0 = [], time.perf_counter()
    for step in range(settings.steps):
        x = clips_fn(step).to(device=device, dtype=torch.float32)
        if x.dim() != 5 or x.shape[:3] != (settings.batch, settings.frames, 3):
            raise TrainingError(f"clips_fn({step}) gave shape {tuple(x.shape)}; "
                                f"expected ({settings.batch}, {settings.frames}, 3, H, W)")
        for group in opt.param_groups:
            group["lr"] = lr_at(settings, step)
        gen = torch.Generator(device=device).manual_seed(seed_of(settings.seed, step))
        loss, terms, rec = vae_loss(vae, x, gen, settings)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"the VAE loss became {value} at step {step + 1}; training stopped")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        opt.step()
        losses.append(value)
        if progress:
            progress("train", step + 1, settings.steps)
    vae.eval()
    seconds = time.perf_counter() - t0
    summary = {"steps": settings.steps, "seconds": seconds, "seconds_per_step": seconds / max(1, settings.steps),
               "losses": losses}
    if settings.steps:
        summary |= {"loss": losses[-1], **terms, "psnr": psnr(rec.detach().clamp(-1, 1), x, peak=2.0)}
    return summary


@torch.no_grad()
def reconstruct(vae: VAE, clips: Tensor) -> Tensor:
    """clips (B, T, 3, H, W) -> decode(encode(x)) of the posterior mean, one clip at a time, same shape."""
    out = [vae.decode(vae.encode(c), c.shape[0]) for c in clips]  # each (T, 3, H, W)
    return torch.stack(out).clamp(-1, 1)


@torch.no_grad()
def calibrate_latent_scale(vae: VAE, images: Tensor, chunk: int = 16) -> float:
    """Rescale the latent space so the posterior mean of `images` (N, 3, H, W) in [-1, 1] has standard deviation
    1/SCALE_FACTOR: the diffusion model sees latents multiplied by SCALE_FACTOR and expects them unit-variance.

    Exact: the mean rows of quant_conv are multiplied by k and the decoder's first layer that reads z divides by k,
    so decode(encode(x)) is unchanged up to float rounding; the logvar rows' bias moves by 2·ln k so the posterior
    (and its samples) scale with the mean. Returns k."""
    z_ch = vae.cfg.z_channels
    device = next(vae.parameters()).device
    latents = torch.cat([vae.encode(images[i:i + chunk].to(device)) for i in range(0, len(images), chunk)])
    std = latents.double().std(correction=0).item()
    if not (std > 0 and math.isfinite(std)):
        raise TrainingError(f"cannot calibrate the latent scale: the latents' standard deviation is {std}")
    k = (1 / SCALE_FACTOR) / std
    q = vae.quant_conv  # weight (2z, 2z, 1, 1): mean rows first, then logvar rows
    q.weight[:z_ch] *= k
    q.bias[:z_ch] *= k
    q.bias[z_ch:] += 2 * math.log(k)  # σ → k·σ
    first = getattr(vae, "post_quant_conv", vae.decoder.conv_in)  # the first layer to read z
    first.weight /= k  # its input columns (the whole conv_in, which reads z only); biases are unaffected
    return k
