"""The reference sampler: EDM σ schedule, v-prediction with EDM c_noise, per-frame guidance on the denoised
estimate, plain Euler steps (no churn) down to σ = 0."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def edm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0) -> Tensor:
    """steps σ values from σ_max down to σ_min (Karras ρ-spacing), then a final 0: (steps + 1,), float32 as the
    reference computes it (so σ_0 = 700.0001)."""
    ramp = torch.linspace(0, 1, steps)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@dataclass(frozen=True)
class Scalings:
    """v-parameterisation with σ_data = 1: D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise)."""
    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor

    @classmethod
    def at(cls, sigma: Tensor) -> "Scalings":
        s2 = sigma ** 2 + 1
        return cls(1 / s2, -sigma / s2.sqrt(), 1 / s2.sqrt(), sigma.log() / 4)


@dataclass(frozen=True)
class LinearFrameGuidance:
    """Guidance scale rising linearly from the first frame (min) to the last (max): SVD, SVD-XT."""
    min_scale: float
    max_scale: float

    def scales(self, frames: int) -> Tensor:
        return torch.linspace(self.min_scale, self.max_scale, frames)


@dataclass(frozen=True)
class TriangleFrameGuidance:
    """min at both ends, max in the middle frame: SV3D orbits."""
    min_scale: float
    max_scale: float

    def scales(self, frames: int) -> Tensor:
        v = torch.arange(frames, dtype=torch.float32) / max(frames - 1, 1)
        tri = 2 * (v - torch.floor(v + 0.5)).abs()
        return self.min_scale + (self.max_scale - self.min_scale) * tri


@dataclass(frozen=True)
class SpacetimeGuidance:
    """For a window of T frames × V views, frame-major (SV4D, SV4D 2.0 8-view): half a linear rise over the frames
    plus half a triangle over the views (0 at the first and last view, 1 in the middle), from min to max."""
    min_scale: float
    max_scale: float
    views: int

    def scales(self, latents: int) -> Tensor:
        frames = latents // self.views
        over_views = torch.linspace(0, 1, self.views)
        triangle = 2 * (over_views - torch.floor(over_views + 0.5)).abs()
        share = 0.5 * torch.linspace(0, 1, frames)[:, None] + 0.5 * triangle[None, :]  # (T, V)
        return share.flatten() * (self.max_scale - self.min_scale) + self.min_scale


Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]  # (x, σ) -> (D_cond, D_uncond or None)
StepCallback = Callable[[int, int], None]


def sample_euler(denoise: Denoiser, noise: Tensor, sigmas: Tensor, guidance: Tensor,
                 on_step: StepCallback | None = None) -> Tensor:
    """Euler sampling from σ_0 to 0. noise: (T, C, h, w) standard normal; guidance: (T,) per-frame scales.

    The guided estimate is D_u + s_t·(D_c − D_u) on the denoised outputs; the last step lands on σ = 0, so the
    result is the last guided estimate (in the 0.18215-scaled latent space)."""
    x = initial_latents(noise, sigmas)
    n = len(sigmas) - 1
    for i in range(n):
        x = euler_step(denoise, x, sigmas[i].item(), sigmas[i + 1].item(), guidance)
        if on_step:
            on_step(i + 1, n)
    return x


def initial_latents(noise: Tensor, sigmas: Tensor) -> Tensor:
    """Standard normal noise at the first σ of the schedule."""
    return noise.float() * math.sqrt(1 + sigmas[0].item() ** 2)


def euler_step(denoise: Denoiser, x: Tensor, sigma: float, sigma_next: float, guidance: Tensor) -> Tensor:
    """One guided Euler step from σ to σ_next (SV4D's dense pass changes its conditioning between steps)."""
    denoised = guided(*denoise(x, torch.tensor(sigma)), guidance)
    return x + (sigma_next - sigma) * (x - denoised) / sigma


def guided(d_cond: Tensor, d_uncond: Tensor | None, guidance: Tensor) -> Tensor:
    """The guided estimate D_u + s_t·(D_c − D_u), per frame t; D_c where there is no unconditional one."""
    if d_uncond is None:
        return d_cond
    return d_uncond + guidance.float().view(-1, 1, 1, 1).to(d_cond.device) * (d_cond - d_uncond)


WindowDenoiser = Callable[[int, Tensor | None], Denoiser]  # (window, the clip's last estimate or None) -> D


def sample_windows(window_denoiser: WindowDenoiser, noise: Tensor, sigmas: Tensor, windows: list[tuple[int, int]],
                   weights: list[Tensor], guidance: list[Tensor], on_step: StepCallback | None = None) -> Tensor:
    """A clip longer than the model's window: all windows denoised together (MultiDiffusion along time). At every
    step each [start, end) window gets its guided estimate (with its own per-frame guidance), the estimates are
    blended over the overlaps with `weights` (decoding.window_weights: ramps, normalised here), and one Euler step
    moves the whole clip along the blend. Overlapping frames have one value for all windows at every σ, so the
    joins are as continuous as the inside of a window.

    window_denoiser(k, estimate) gives window k's D for this step; estimate is the blended clip estimate of the step
    before (None at the first step), from which a window may take its conditioning. One window covering the clip
    is sample_euler exactly. noise: (N, C, h, w) standard normal."""
    x = initial_latents(noise, sigmas)
    total = torch.zeros(len(x))
    for (start, end), w in zip(windows, weights):
        total[start:end] += w
    n, estimate = len(sigmas) - 1, None
    for i in range(n):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        blend = torch.zeros_like(x)
        for k, (start, end) in enumerate(windows):
            d = guided(*window_denoiser(k, estimate)(x[start:end], torch.tensor(sigma)), guidance[k])
            blend[start:end] += (weights[k] / total[start:end]).view(-1, 1, 1, 1).to(d) * d
        estimate = blend
        x = x + (sigma_next - sigma) * (x - estimate) / sigma
        if on_step:
            on_step(i + 1, n)
    return x


def sample_bidirectional(denoise_start: Denoiser, denoise_end: Denoiser, noise: Tensor, sigmas: Tensor,
                         start_latent: Tensor, end_latent: Tensor, scale: float, renoise: Callable[[], Tensor],
                         on_step: StepCallback | None = None) -> Tensor:
    """A clip from a first frame to a last one (and a loop, when they are the same image), without training:
    ViBiDSampler's sequential bidirectional sampling (Yang et al., ICLR 2025), in our Euler/EDM terms.

    Each step runs two passes at the same σ. Forwards, conditioned on the start (denoise_start): the guided estimate
    with its last frame replaced by the end's latent, then a step to σ_next along the *unconditional* estimate's
    direction (CFG++, with one scale for all frames); fresh noise (renoise(), standard normal of x's shape) brings it
    back up to σ. Backwards, on the time-reversed clip conditioned on the end (denoise_end): the same, with the
    start's latent in its last frame, i.e. the clip's first. So every step is pulled towards both bounds, and at σ = 0
    the first frame is the start's latent exactly. start_latent, end_latent: (C, h, w) in the scaled latent space
    of x. Two denoiser calls per step."""
    x = initial_latents(noise, sigmas)
    n = len(sigmas) - 1

    def half_step(denoise: Denoiser, x: Tensor, sigma: float, sigma_next: float, bound: Tensor) -> Tensor:
        d_cond, d_uncond = denoise(x, torch.tensor(sigma))
        denoised = d_uncond + scale * (d_cond - d_uncond)
        denoised[-1] = bound  # the one-frame data-consistency step: its least-squares solution is the bound itself
        return denoised + (sigma_next / sigma) * (x - d_uncond)

    for i in range(n):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        x = half_step(denoise_start, x, sigma, sigma_next, end_latent.to(x))
        x = x + math.sqrt(sigma ** 2 - sigma_next ** 2) * renoise().to(x)
        x = half_step(denoise_end, x.flip(0), sigma, sigma_next, start_latent.to(x)).flip(0)
        if on_step:
            on_step(i + 1, n)
    return x


def time_reversal_fusion(denoise_start: Denoiser, denoise_end: Denoiser, guidance: Tensor,
                         guidance_end: Tensor | None = None) -> Denoiser:
    """A clip between two keyframes by fusing two denoised estimates at every step: Time Reversal Fusion (Feng et
    al., 2024). The start's, guided with the per-frame scales, and the end's on the time-reversed clip (its own
    guidance in its own frame order), blended with a weight falling linearly from 1 at the first frame to 0 at the
    last. Returns the fused estimate as the conditional one with no unconditional one, so sample_euler steps along
    it as it is. Two denoiser calls per step. The bounds are not pinned here (the first frame comes from the
    start's estimate alone, the last from the end's); pin_frames pins them (docs/generate.md measures both).
    guidance_end: the end's scales, in its own frame order (default: guidance)."""
    def denoise(x: Tensor, sigma: Tensor) -> tuple[Tensor, None]:
        weight = torch.linspace(1, 0, len(x), device=x.device).view(-1, 1, 1, 1)
        forward = guided(*denoise_start(x, sigma), guidance)
        backward = guided(*denoise_end(x.flip(0), sigma), guidance if guidance_end is None else guidance_end)
        return weight * forward + (1 - weight) * backward.flip(0), None
    return denoise


def pin_frames(denoise: Denoiser, frames: list[int], latents: Tensor) -> Denoiser:
    """D with the estimates of some frames replaced by known latents, conditional and unconditional alike (so any
    guidance leaves them as they are): the data-consistency step of inpainting along the frame axis. An Euler step
    then moves those frames as the known clip's noisy versions move, and at σ = 0 they are the known latents.
    frames: indices into the clip; latents: (len(frames), C, h, w) in the scaled latent space."""
    def pinned(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor | None]:
        d_cond, d_uncond = denoise(x, sigma)
        d_cond = d_cond.clone()
        d_cond[frames] = latents.to(d_cond)
        if d_uncond is not None:
            d_uncond = d_uncond.clone()
            d_uncond[frames] = latents.to(d_uncond)
        return d_cond, d_uncond
    return pinned
