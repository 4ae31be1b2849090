"""The sampler's numbers against the reference (svd-architecture.md §4.4, §4.6) and its arithmetic."""

import pytest
import torch

from svdcli.inference.sampling import LinearFrameGuidance, Scalings, TriangleFrameGuidance, edm_sigmas, sample_euler


@pytest.mark.parametrize("steps,head,tail", [
    (25, [700.0001, 545.729, 421.569, 322.454], [0.024803, 0.0078825, 0.0020000]),
    (30, [700.0001, 570.027, 461.313, 370.878], [0.017056, 0.0063379, 0.0020000]),
    (50, [700.0001, 620.328, 548.558, 484.027], [0.0076843, 0.0040490, 0.0020000]),
])
def test_sigma_grid_equals_the_reference(steps, head, tail):
    s = edm_sigmas(steps)
    assert s.dtype == torch.float32 and len(s) == steps + 1 and s[-1] == 0
    assert torch.allclose(s[:4], torch.tensor(head), rtol=2e-6, atol=0)
    assert torch.allclose(s[-4:-1], torch.tensor(tail), rtol=2e-5, atol=0)
    assert torch.all(s[:-1][1:] < s[:-1][:-1])  # strictly decreasing


def test_sigma_grid_matches_diffusers_karras_schedule():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.EulerDiscreteScheduler(prediction_type="v_prediction", timestep_type="continuous",
                                             use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0)
    sched.set_timesteps(25)
    assert torch.allclose(edm_sigmas(25), sched.sigmas.float(), rtol=2e-5, atol=0)


def test_linear_guidance_vectors():
    svd = LinearFrameGuidance(1.0, 2.5).scales(14)
    assert torch.allclose(svd[:3], torch.tensor([1.0, 1.1154, 1.2308]), atol=1e-4)
    assert torch.allclose(svd[-2:], torch.tensor([2.3846, 2.5]), atol=1e-4)
    xt = LinearFrameGuidance(1.5, 3.0).scales(25)
    assert torch.allclose(xt, 1.5 + 0.0625 * torch.arange(25), atol=1e-6)


def test_triangle_guidance_vector():
    s = TriangleFrameGuidance(1.0, 2.5).scales(21)
    expected = torch.tensor([1.00, 1.15, 1.30, 1.45, 1.60, 1.75, 1.90, 2.05, 2.20, 2.35, 2.50,
                             2.35, 2.20, 2.05, 1.90, 1.75, 1.60, 1.45, 1.30, 1.15, 1.00])
    assert torch.allclose(s, expected, atol=1e-5)


def test_scalings_are_v_prediction_with_edm_c_noise():
    sigma = torch.tensor([0.002, 1.0, 700.0])
    sc = Scalings.at(sigma)
    assert torch.allclose(sc.c_skip, 1 / (sigma ** 2 + 1))
    assert torch.allclose(sc.c_out, -sigma / (sigma ** 2 + 1).sqrt())
    assert torch.allclose(sc.c_in, 1 / (sigma ** 2 + 1).sqrt())
    assert torch.allclose(sc.c_noise, sigma.log() / 4)
    # A network that predicts v exactly recovers x0: x_σ = x0 + σ·n, v = (n − σ·x0)/√(σ²+1) (σ_data = 1).
    x0, n, s = torch.randn(4), torch.randn(4), torch.tensor(3.0)
    x = x0 + s * n
    v = (n - s * x0) / (s ** 2 + 1).sqrt()
    one = Scalings.at(s)
    assert torch.allclose(one.c_skip * x + one.c_out * v, x0, atol=1e-5)


def test_euler_sampler_lands_on_the_last_guided_estimate():
    noise = torch.randn(3, 4, 2, 2)
    sigmas = edm_sigmas(5)
    target_c, target_u = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    scales = torch.tensor([1.0, 2.0, 3.0])
    seen = []
    out = sample_euler(lambda x, s: (target_c, target_u), noise, sigmas, scales, lambda i, n: seen.append((i, n)))
    expected = target_u + scales.view(-1, 1, 1, 1) * (target_c - target_u)
    assert torch.allclose(out, expected, atol=1e-5)
    assert seen == [(i, 5) for i in range(1, 6)]


def test_euler_sampler_starts_from_noise_times_sqrt_one_plus_sigma_squared():
    noise, sigmas, first = torch.randn(2, 4, 2, 2), edm_sigmas(3), []

    def denoise(x, s):
        first.append(x.clone()) if not first else None
        return torch.zeros_like(x), None

    sample_euler(denoise, noise, sigmas, torch.ones(2))
    assert torch.allclose(first[0], noise * (1 + sigmas[0] ** 2).sqrt())
