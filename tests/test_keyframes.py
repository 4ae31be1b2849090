"""Clips between two keyframes, loops and clips longer than a window: the samplers as pure functions, and the
pipeline's windows and bounds on a tiny model."""

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


def random_images(seed: int, count: int = 2, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, size, size, generator=g) * 2 - 1 for _ in range(count)]


def bound_latents(model, *images) -> torch.Tensor:
    with torch.no_grad():
        return model.vae.encode(torch.cat(images)) * SCALE_FACTOR


def test_bidirectional_pins_the_first_frame_and_is_deterministic():
    model = tiny_model()
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    start, end = random_images(2)
    settings = SamplingSettings(frames=4, steps=3, keyframes="bidirectional")
    latents = pipe.sample(start, settings, seed=5, end=end)
    bounds = bound_latents(model, start, end)
    assert latents.shape == (4, 4, 8, 8)
    assert torch.equal(latents[0], bounds[0])
    assert (latents[-1] - bounds[1]).abs().max() < 0.05
    assert torch.equal(latents, pipe.sample(start, settings, seed=5, end=end))
    assert not torch.equal(latents, pipe.sample(start, settings, seed=6, end=end))


def test_fusion_lands_on_both_keyframes_and_a_loop_returns_to_its_first_frame():
    model = tiny_model()
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    start, end = random_images(3)
    settings = SamplingSettings(frames=5, steps=3)
    latents = pipe.sample(start, settings, seed=1, end=end)
    bounds = bound_latents(model, start, end)
    assert torch.allclose(latents[0], bounds[0], atol=1e-5) and torch.allclose(latents[-1], bounds[1], atol=1e-5)
    plain = pipe.sample(start, settings, seed=1)
    assert (latents[1:-1] - plain[1:-1]).abs().mean() > 1e-3  # the end pulls the frames between
    loop = pipe.sample(start, settings, seed=1, end=start)
    assert torch.allclose(loop[0], loop[-1], atol=1e-5) and torch.allclose(loop[0], bounds[0], atol=1e-5)


def test_pinned_frames_keep_their_latents_whatever_the_guidance():
    from svdcli.inference.sampling import guided, pin_frames

    g = torch.Generator().manual_seed(4)
    target, known = torch.randn(4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    x = torch.randn(6, 4, 3, 3, generator=g)
    d_cond, d_uncond = pin_frames(framewise_denoiser(target, []), [0, 5], known)(x, torch.tensor(2.0))
    cond, uncond = framewise_denoiser(target, [])(x, torch.tensor(2.0))
    estimate = guided(d_cond, d_uncond, torch.full((6,), 2.5))
    assert torch.equal(estimate[0], known[0]) and torch.equal(estimate[5], known[1])
    assert torch.equal(d_cond[1:5], cond[1:5]) and torch.equal(d_uncond[1:5], uncond[1:5])


class UnetCalls:
    """Records each U-Net call's batch, frames and whether it is an unconditional half (a zero CLIP context)."""

    def __init__(self, unet):
        self.calls = []
        unet.register_forward_pre_hook(
            lambda module, args: self.calls.append((len(args[0]), args[4], not args[2].any().item())))


def test_windows_are_blended_over_the_overlaps_and_each_call_sees_the_last_estimate():
    from svdcli.inference.decoding import window_weights
    from svdcli.inference.sampling import sample_euler, windowed

    g = torch.Generator().manual_seed(7)
    targets = torch.randn(2, 3, 2, 2, generator=g)
    windows, seen = [(0, 4), (2, 6)], []

    def window_denoiser(k, estimate):
        seen.append((k, None if estimate is None else estimate.clone()))
        return lambda x, sigma: (targets[k].expand_as(x), None)  # D: the window's target, whatever x

    noise = torch.randn(6, 3, 2, 2, generator=g)
    guidance = [torch.ones(4)] * 2
    x = sample_euler(windowed(window_denoiser, windows, window_weights(windows), guidance), noise,
                     torch.tensor([3.0, 1.0, 0.0]), torch.ones(6))
    # overlap frames 2, 3: the first window's weights fall 2/3, 1/3, the second's rise 1/3, 2/3
    expected = torch.stack([targets[0]] * 2 + [2 / 3 * targets[0] + 1 / 3 * targets[1],
                                                1 / 3 * targets[0] + 2 / 3 * targets[1]] + [targets[1]] * 2)
    assert torch.allclose(x, expected, atol=1e-6)  # the last step lands on the blend
    assert [k for k, _ in seen] == [0, 1, 0, 1] and seen[0][1] is None and seen[1][1] is None
    assert torch.allclose(seen[2][1], expected, atol=1e-6)  # the second step sees the first step's blend


def test_windows_are_denoised_together_the_first_guided_the_others_not_and_never_more_than_a_window():
    model = tiny_model()
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    image, = random_images(5, count=1)
    unet, reports = UnetCalls(model.unet), []
    settings = SamplingSettings(frames=10, steps=3, window=4, overlap=2)
    latents = pipe.sample(image, settings, seed=2, progress=lambda *r: reports.append(r))
    assert latents.shape == (10, 4, 8, 8)
    # windows at 0, 2, 4, 6 (spread evenly), each step: the first with its unconditional half, the others without
    # the first window's two halves, one after the other, then the others' conditional ones
    assert unet.calls == [(4, 4, True), (4, 4, False), (4, 4, False), (4, 4, False), (4, 4, False)] * 3
    assert pipe.unet_calls == 5 * 3  # U-Net evaluations, guidance halves apart: what --json reports
    assert [r for r in reports if r[0] == "sample"] == [("sample", i, 3) for i in (1, 2, 3)]
    assert torch.equal(latents, pipe.sample(image, settings, seed=2))
    assert not torch.equal(latents, pipe.sample(image, settings, seed=3))


def test_windows_end_on_the_keyframe_and_bidirectional_stays_within_one_window():
    import pytest

    model = tiny_model()
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    start, end = random_images(6)
    settings = SamplingSettings(frames=7, steps=2, window=4, overlap=1)
    latents = pipe.sample(start, settings, seed=3, end=end)
    assert torch.allclose(latents[-1], bound_latents(model, end)[0], atol=1e-5)
    with pytest.raises(ValueError, match="bidirectional"):
        pipe.sample(start, SamplingSettings(frames=7, steps=2, window=4, overlap=1, keyframes="bidirectional"), seed=3, end=end)
    with pytest.raises(ValueError, match="overlap"):
        pipe.sample(start, SamplingSettings(frames=7, steps=2, window=4, overlap=0), seed=3)


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
