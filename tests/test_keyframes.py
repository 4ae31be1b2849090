"""Clips between two keyframes (and loops): the bidirectional sampler as a pure function, and the pipeline's
sample_between on a tiny model."""

import torch

from svdcli.inference.pipeline import SamplingSettings, VideoPipeline
from svdcli.inference.sampling import edm_sigmas, sample_bidirectional
from svdcli.models.vae import SCALE_FACTOR

from .conftest import tiny_model


def framewise_denoiser(target: torch.Tensor, calls: list):
    """A stand-in D(x; σ) acting on each frame alone: conditional pulls towards `target`, unconditional shrinks."""
    def denoise(x, sigma):
        calls.append((target, x.clone()))
        s2 = float(sigma) ** 2 + 1
        return x / s2 + target * (1 - 1 / s2), 0.5 * x / s2
    return denoise


def test_the_first_frame_lands_on_the_start_and_each_step_makes_two_calls():
    g = torch.Generator().manual_seed(0)
    frames, shape = 5, (4, 3, 3)
    start, end = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    calls = []
    sigmas = edm_sigmas(6)
    x = sample_bidirectional(framewise_denoiser(start, calls), framewise_denoiser(end, calls),
                             torch.randn((frames, *shape), generator=g), sigmas, start, end, 1.0,
                             lambda: torch.randn((frames, *shape), generator=g))
    assert torch.equal(x[0], start)  # σ = 0 at the last step: the backward pass's pinned frame is the first
    assert (x[-1] - end).abs().max() < 0.02  # pinned forwards, then re-noised by σ = 0.002 and denoised once more
    assert len(calls) == 2 * 6 and [c[0] is start for c in calls] == [True, False] * 6  # start, end, start, ...


def test_one_step_is_the_forward_pass_the_renoising_and_the_reversed_backward_pass():
    """One step from σ = 2 to 1, written out from the method (CFG++ along the unconditional estimate, the bound in
    the last frame, fresh noise back to σ, the same on the reversed clip with the other bound)."""
    g = torch.Generator().manual_seed(1)
    shape, scale = (6, 2, 2, 2), 0.8
    start, end, noise, fresh = (torch.randn(s, generator=g) for s in (shape[1:], shape[1:], shape, shape))
    den_start, den_end = framewise_denoiser(start, []), framewise_denoiser(end, [])
    x = sample_bidirectional(den_start, den_end, noise, torch.tensor([2.0, 1.0]), start, end, scale, lambda: fresh)

    x0 = noise * 5 ** 0.5  # the initial latents at σ = 2
    cond, uncond = den_start(x0, torch.tensor(2.0))
    d = uncond + scale * (cond - uncond)
    d[-1] = end
    x1 = d + 0.5 * (x0 - uncond) + 3 ** 0.5 * fresh  # to σ = 1, then back to σ = 2: sqrt(2² - 1²)
    y = x1.flip(0)
    cond, uncond = den_end(y, torch.tensor(2.0))
    d = uncond + scale * (cond - uncond)
    d[-1] = start
    expected = (d + 0.5 * (y - uncond)).flip(0)
    assert torch.allclose(x, expected, atol=1e-6)


def test_sample_between_pins_the_first_frame_and_is_deterministic():
    model = tiny_model()
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(2)
    start, end = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    settings = SamplingSettings(frames=4, steps=3)
    latents = pipe.sample_between(start, end, settings, seed=5)
    with torch.no_grad():
        bounds = model.vae.encode(torch.cat([start, end])) * SCALE_FACTOR
    assert latents.shape == (4, 4, 8, 8)
    assert torch.equal(latents[0], bounds[0])
    assert (latents[-1] - bounds[1]).abs().max() < 0.05
    assert torch.equal(latents, pipe.sample_between(start, end, settings, seed=5))
    assert not torch.equal(latents, pipe.sample_between(start, end, settings, seed=6))


def test_fusion_takes_the_first_frame_from_the_start_and_the_last_from_the_reversed_end():
    from svdcli.inference.sampling import time_reversal_fusion

    g = torch.Generator().manual_seed(3)
    frames, shape = 5, (2, 3, 3)
    start, end, x = torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn((frames, *shape))
    scales = torch.linspace(1.0, 2.0, frames)
    den_start, den_end = framewise_denoiser(start, []), framewise_denoiser(end, [])
    fused, none = time_reversal_fusion(den_start, den_end, scales)(x, torch.tensor(3.0))
    cond, uncond = den_start(x, torch.tensor(3.0))
    forward = uncond + scales.view(-1, 1, 1, 1) * (cond - uncond)
    cond, uncond = den_end(x.flip(0), torch.tensor(3.0))
    backward = (uncond + scales.view(-1, 1, 1, 1) * (cond - uncond)).flip(0)  # its ramp in its own frame order
    assert none is None
    assert torch.allclose(fused[0], forward[0]) and torch.allclose(fused[-1], backward[-1])
    assert torch.allclose(fused[2], (forward[2] + backward[2]) / 2)  # the middle frame: half of each
