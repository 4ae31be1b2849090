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


SCHEDULES = ("karras", "exponential")


def sigma_schedule(schedule: str, steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0) -> Tensor:
    """The σ grid of a schedule, then a final 0: "karras" (edm_sigmas, the reference's) or "exponential" (σ evenly
    spaced in log σ, as k-diffusion's and diffusers' exponential schedules)."""
    if schedule == "karras":
        return edm_sigmas(steps, sigma_min, sigma_max)
    if schedule == "exponential":
        sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp()
        return torch.cat([sigmas, sigmas.new_zeros(1)])
    raise ValueError(f"schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


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


def windowed(window_denoiser: WindowDenoiser, windows: list[tuple[int, int]], weights: list[Tensor],
             guidance: list[Tensor]) -> Denoiser:
    """D of a clip longer than the model's window, for any sampler: all windows denoised together (MultiDiffusion
    along time). Each [start, end) window gives its guided estimate (with its own per-frame guidance), and the
    estimates are blended over the overlaps with `weights` (decoding.window_weights: ramps, normalised here), so that
    overlapping frames have one value for every window at every σ and the joins are as continuous as the inside of
    a window. Returns the blend as the conditional estimate with no unconditional one.

    window_denoiser(k, estimate) gives window k's D for a call; estimate is the blend of the call before (None at the
    first), from which a window may take its conditioning. One window covering the clip is its guided D exactly."""
    total = torch.zeros(max(end for _, end in windows))
    for (start, end), w in zip(windows, weights):
        total[start:end] += w
    shares = [(w / total[start:end]).view(-1, 1, 1, 1) for (start, end), w in zip(windows, weights)]  # sum to 1
    last = None

    def denoise(x: Tensor, sigma: Tensor) -> tuple[Tensor, None]:
        nonlocal last
        blend = torch.zeros_like(x)
        for k, (start, end) in enumerate(windows):
            d = guided(*window_denoiser(k, last)(x[start:end], sigma), guidance[k])
            blend[start:end] += shares[k].to(d) * d
        last = blend
        return blend, None
    return denoise


Noise = Callable[[], Tensor]  # fresh standard normal noise of the clip's shape, from the run's CPU generator


def sample_euler_ancestral(denoise: Denoiser, noise: Tensor, sigmas: Tensor, guidance: Tensor, renoise: Noise,
                           on_step: StepCallback | None = None) -> Tensor:
    """Euler ancestral (η = 1): each step goes down to σ_down along the estimate's direction, then adds fresh noise
    of σ_up, where σ_up² + σ_down² = σ_next² and σ_up = σ_next·√(1 − σ_next²/σ²). The last step (to 0) adds none."""
    x = initial_latents(noise, sigmas)
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        denoised = guided(*denoise(x, torch.tensor(sigma)), guidance)
        sigma_up = min(sigma_next, (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
        sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
        x = x + (sigma_down - sigma) * (x - denoised) / sigma
        if sigma_up > 0:
            x = x + sigma_up * renoise().to(x)
        if on_step:
            on_step(i + 1, n)
    return x


def sample_heun(denoise: Denoiser, noise: Tensor, sigmas: Tensor, guidance: Tensor,
                on_step: StepCallback | None = None) -> Tensor:
    """Heun's second-order method (EDM's deterministic sampler): an Euler step, then the slope at its end averaged
    with the slope at its start; the last step (to 0) is Euler's. 2·steps − 1 denoiser calls."""
    x = initial_latents(noise, sigmas)
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        slope = (x - guided(*denoise(x, torch.tensor(sigma)), guidance)) / sigma
        euler = x + (sigma_next - sigma) * slope
        if sigma_next == 0:
            x = euler
        else:
            slope_next = (euler - guided(*denoise(euler, torch.tensor(sigma_next)), guidance)) / sigma_next
            x = x + (sigma_next - sigma) * (slope + slope_next) / 2
        if on_step:
            on_step(i + 1, n)
    return x


def sample_dpmpp_2m(denoise: Denoiser, noise: Tensor, sigmas: Tensor, guidance: Tensor,
                    renoise: Noise | None = None, on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022), multistep, data prediction, midpoint form; with renoise, its SDE variant
    (DPM-Solver++(2M) SDE). In λ = −log σ, a step of h = λ_next − λ uses the estimate D and the previous step's D'
    (r = h'/h): D̂ = D + (D − D')/(2r) from the second step on, D alone on the first and on the last (to σ = 0, where
    the result is D). ODE: x ← (σ_next/σ)·x + (1 − e^(−h))·D̂. SDE: x ← (σ_next/σ)·e^(−h)·x + (1 − e^(−2h))·D̂ +
    σ_next·√(1 − e^(−2h))·ε."""
    x = initial_latents(noise, sigmas)
    n = len(sigmas) - 1
    previous = previous_h = None
    for i in range(n):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        denoised = guided(*denoise(x, torch.tensor(sigma)), guidance)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            estimate = denoised if previous is None else denoised + (denoised - previous) * h / (2 * previous_h)
            if renoise is None:
                x = (sigma_next / sigma) * x + (1 - math.exp(-h)) * estimate
            else:
                x = ((sigma_next / sigma) * math.exp(-h) * x + (1 - math.exp(-2 * h)) * estimate
                     + sigma_next * math.sqrt(1 - math.exp(-2 * h)) * renoise().to(x))
            previous, previous_h = denoised, h
        if on_step:
            on_step(i + 1, n)
    return x


LCM_TRAINING_LEVELS = 40  # AnimateLCM-SVD's consistency distillation: 40 Karras levels from 700 down to 0.002


def lcm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0,
               levels: int = LCM_TRAINING_LEVELS) -> Tensor:
    """The σ of a few-step consistency sampler, then a final 0: every (levels // steps)-th of the levels the model
    was distilled on (Karras ρ = 7 from σ_max to σ_min), from the top, as AnimateLCM-SVD's scheduler picks them;
    4 steps: 700, 128.56, 13.678, 0.49688. (steps + 1,), float32."""
    if not 1 <= steps <= levels:
        raise ValueError(f"steps {steps}: a consistency model samples at 1 to {levels} of its levels")
    picked = torch.arange(steps, dtype=torch.float64) * (levels // steps) / (levels - 1)  # ramp positions
    max_inv, min_inv = sigma_max ** (1 / 7), sigma_min ** (1 / 7)
    sigmas = ((max_inv + picked * (min_inv - max_inv)) ** 7).float()
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sample_lcm(denoise: Denoiser, noise: Tensor, sigmas: Tensor, guidance: Tensor, renoise: Noise,
               on_step: StepCallback | None = None) -> Tensor:
    """Multistep consistency sampling (Song et al., 2023), as AnimateLCM-SVD runs it: at each σ the (guided)
    estimate D is taken as the clean clip, and the next step starts from it noised afresh to the next level,
    x ← D + σ_next·ε; the last estimate is the result. For consistency-distilled models only (lcm_sigmas): an
    undistilled model's estimate at high σ is a blur, which this sampler keeps rather than refines. The scalings
    are the same v-parameterisation as the other samplers' (AnimateLCM-SVD's scheduler keeps SVD's)."""
    x = initial_latents(noise, sigmas)
    n = len(sigmas) - 1
    for i in range(n):
        sigma_next = sigmas[i + 1].item()
        x = guided(*denoise(x, sigmas[i]), guidance)
        if sigma_next > 0:
            x = x + sigma_next * renoise().to(x)
        if on_step:
            on_step(i + 1, n)
    return x


SAMPLERS = ("euler", "euler-a", "heun", "dpmpp-2m", "dpmpp-2m-sde", "lcm")


def sample_with(sampler: str, denoise: Denoiser, noise: Tensor, sigmas: Tensor, guidance: Tensor, renoise: Noise,
                on_step: StepCallback | None = None) -> Tensor:
    """Run the named sampler (SAMPLERS); renoise feeds the stochastic ones (euler-a, dpmpp-2m-sde, lcm)."""
    if sampler == "euler":
        return sample_euler(denoise, noise, sigmas, guidance, on_step)
    if sampler == "euler-a":
        return sample_euler_ancestral(denoise, noise, sigmas, guidance, renoise, on_step)
    if sampler == "heun":
        return sample_heun(denoise, noise, sigmas, guidance, on_step)
    if sampler in ("dpmpp-2m", "dpmpp-2m-sde"):
        return sample_dpmpp_2m(denoise, noise, sigmas, guidance, renoise if sampler.endswith("sde") else None,
                               on_step)
    if sampler == "lcm":
        return sample_lcm(denoise, noise, sigmas, guidance, renoise, on_step)
    raise ValueError(f"sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")


def calls_per_step(sampler: str, steps: int) -> list[int]:
    """Denoiser calls at each step of a run: Heun's 2 per step but the last, 1 for the others."""
    return [2] * (steps - 1) + [1] if sampler == "heun" else [1] * steps


def denoiser_calls(sampler: str, steps: int) -> int:
    """Denoiser calls of a run of `steps` steps."""
    return sum(calls_per_step(sampler, steps))


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
