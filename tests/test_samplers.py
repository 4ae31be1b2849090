"""The samplers people run SVD with (Euler ancestral, Heun, DPM++ 2M and its SDE) and the σ schedules, against
diffusers' schedulers on the same denoiser, the same starting latents and (for the stochastic ones) the same CPU generator: every step's
update, to 1e-5. The denoiser is a stand-in network output run through our v-prediction scalings, as the U-Net's is."""

import pytest
import torch

from svdcli.inference.sampling import (SAMPLERS, Scalings, denoiser_calls, edm_sigmas, guided, initial_latents,
                                      lcm_sigmas, sample_lcm, sample_with)

diffusers = pytest.importorskip("diffusers")

STEPS, SHAPE = 8, (3, 4, 5, 5)


def network(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for the U-Net's v output at (x, σ): depends on both, differs per frame."""
    frames = torch.arange(len(x), dtype=x.dtype).view(-1, 1, 1, 1)
    return torch.tanh(0.3 * x * Scalings.at(sigma).c_in + 0.1 * frames) - 0.2 * torch.log(sigma) / 4


def denoiser(calls: list):
    def denoise(x, sigma):
        calls.append(float(sigma))
        sc = Scalings.at(sigma.float())
        return sc.c_skip * x + sc.c_out * network(x, sigma), None
    return denoise


def ours(sampler: str, start_noise: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, list]:
    calls, g = [], torch.Generator().manual_seed(seed)
    out = sample_with(sampler, denoiser(calls), start_noise, edm_sigmas(STEPS), torch.ones(SHAPE[0]),
                      lambda: torch.randn(SHAPE, generator=g))
    return out, calls


def denoised(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sc = Scalings.at(sigma.float())
    return sc.c_skip * x + sc.c_out * network(x, sigma)


def start() -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(11))
    return noise, initial_latents(noise, edm_sigmas(STEPS))


def test_every_sampler_is_listed_and_counts_its_calls():
    assert SAMPLERS == ("euler", "euler-a", "heun", "dpmpp-2m", "dpmpp-2m-sde", "lcm")
    noise, _ = start()
    for sampler in SAMPLERS:
        _, calls = ours(sampler, noise)
        assert len(calls) == denoiser_calls(sampler, STEPS), sampler


@pytest.mark.parametrize("algorithm,sampler", [("dpmsolver++", "dpmpp-2m"), ("sde-dpmsolver++", "dpmpp-2m-sde")])
def test_dpmpp_2m_and_its_sde_equal_diffusers_edm_dpmsolver(algorithm, sampler):
    scheduler = diffusers.EDMDPMSolverMultistepScheduler(
        sigma_min=0.002, sigma_max=700.0, sigma_data=1.0, rho=7.0, prediction_type="v_prediction",
        algorithm_type=algorithm, solver_order=2, final_sigmas_type="zero")
    scheduler.set_timesteps(STEPS)
    assert torch.allclose(scheduler.sigmas.float(), edm_sigmas(STEPS), rtol=1e-5, atol=0)  # the same grid
    noise, x = start()
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i].float()
        x = scheduler.step(network(x, sigma), t, x, generator=g).prev_sample
    expected, _ = ours(sampler, noise)
    assert torch.allclose(x.float(), expected, atol=1e-5), (x.float() - expected).abs().max()


def test_euler_ancestral_equals_diffusers():
    scheduler = diffusers.EulerAncestralDiscreteScheduler(prediction_type="epsilon")
    scheduler.set_timesteps(STEPS)
    scheduler.sigmas = edm_sigmas(STEPS)  # diffusers' grid comes from training betas; the update is what is checked
    noise, x = start()
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        epsilon = (x - denoised(x, sigma)) / sigma  # the noise the estimate implies (it takes no x0 prediction)
        x = scheduler.step(epsilon, t, x, generator=g).prev_sample
    expected, _ = ours("euler-a", noise)
    assert torch.allclose(x, expected, atol=1e-5), (x - expected).abs().max()


def test_heun_equals_diffusers():
    scheduler = diffusers.HeunDiscreteScheduler(prediction_type="sample")
    scheduler.set_timesteps(STEPS)
    grid = edm_sigmas(STEPS)
    scheduler.sigmas = torch.cat([grid[:1], grid[1:-1].repeat_interleave(2), grid[-1:]])  # its interleaved layout
    noise, x = start()
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(denoised(x, scheduler.sigmas[i]), t, x).prev_sample
    expected, calls = ours("heun", noise)
    assert len(scheduler.timesteps) == len(calls) == 2 * STEPS - 1
    assert torch.allclose(x, expected, atol=1e-5), (x - expected).abs().max()


def test_euler_equals_diffusers_edm_euler():
    scheduler = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=700.0, sigma_data=1.0, rho=7.0,
                                           prediction_type="v_prediction", final_sigmas_type="zero")
    scheduler.set_timesteps(STEPS)
    assert torch.allclose(scheduler.sigmas.float(), edm_sigmas(STEPS), rtol=1e-5, atol=0)
    noise, x = start()
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(network(x, scheduler.sigmas[i].float()), t, x).prev_sample
    expected, _ = ours("euler", noise)
    assert torch.allclose(x.float(), expected, atol=1e-5), (x.float() - expected).abs().max()


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 40])
def test_lcm_grid_is_animatelcm_svds_and_diffusers_consistency_grid(steps):
    """AnimateLCM-SVD's scheduler (animatelcm_svd/animatelcm_scheduler.py, configured by its app: 40 training
    levels, σ 0.002-700, ρ 7) picks every (40 // steps)-th of its Karras levels as diffusers'
    CMStochasticIterativeScheduler does; it then appends 0 where diffusers appends σ_min."""
    scheduler = diffusers.CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=700.0,
                                                         sigma_data=1.0, rho=7.0)
    scheduler.set_timesteps(steps)
    grid = lcm_sigmas(steps)
    assert len(grid) == steps + 1 and grid[-1] == 0
    assert torch.equal(scheduler.sigmas[:-1].float(), grid[:-1])
    if steps == 4:  # the repository's four levels
        assert torch.allclose(grid[:-1], torch.tensor([700.0, 128.5637, 13.67844, 0.49688]), rtol=1e-5)
    with pytest.raises(ValueError, match="steps 41"):
        lcm_sigmas(41)


def test_lcm_equals_animatelcm_svds_scheduler_on_fixed_inputs():
    """The repository's sampling loop written out from its code (its pipeline, a copy of diffusers' SVD pipeline,
    and its scheduler): the latents start at ε·√(σ_max² + 1); at each level the U-Net sees x/√(σ² + 1) and
    c_noise = ¼·ln σ; guidance mixes the two v outputs per frame; the estimate is c_skip·x + c_out·v with SVD's
    v-scalings (its scheduler's "boundary condition" scalings are these, not diffusers' CM ones); the next x is
    the estimate plus z·σ_next, with z drawn at every step (and unused at the last, σ_next = 0). Our sampler draws
    the same noise in the same order from the same generator."""
    frames = 3
    scales = torch.linspace(1.0, 1.2, frames).view(-1, 1, 1, 1)  # the app's guidance 1.0 -> 1.2

    def v_output(scaled: torch.Tensor, c_noise: torch.Tensor, branch: float) -> torch.Tensor:
        offsets = torch.arange(frames, dtype=scaled.dtype).view(-1, 1, 1, 1)
        return torch.tanh(0.3 * scaled + 0.1 * offsets + branch) - 0.2 * c_noise

    for steps in (1, 2, 4, 8):
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
        grid = lcm_sigmas(steps).double()
        g = torch.Generator().manual_seed(9)
        sample = noise.double() * (700.0 ** 2 + 1) ** 0.5
        for i in range(steps):
            sigma, sigma_next = grid[i], grid[i + 1]
            scaled = sample / (sigma ** 2 + 1) ** 0.5
            c_noise = 0.25 * torch.log(sigma + 1e-44)
            v_uncond, v_cond = v_output(scaled, c_noise, -0.5), v_output(scaled, c_noise, 0.0)
            v = v_uncond + scales * (v_cond - v_uncond)
            denoised = -sigma / (sigma ** 2 + 1) ** 0.5 * v + sample / (sigma ** 2 + 1)
            z = torch.randn(SHAPE, generator=g).double()
            sample = denoised + z * sigma_next.clamp(min=0, max=700.0)

        def denoise(x, sigma):
            sc = Scalings.at(sigma.float())
            d = [sc.c_skip * x + sc.c_out * v_output(sc.c_in * x, sc.c_noise, branch) for branch in (0.0, -0.5)]
            return d[0], d[1]
        g = torch.Generator().manual_seed(9)
        ours = sample_lcm(denoise, noise, lcm_sigmas(steps), scales.flatten(), lambda: torch.randn(SHAPE, generator=g))
        assert torch.allclose(ours.double(), sample, atol=1e-5), (steps, (ours.double() - sample).abs().max())


def test_lcm_returns_the_last_estimate_and_renoises_to_the_next_level():
    """Each call sees the previous estimate plus σ_next·z exactly; the result is the last estimate."""
    seen, estimates = [], iter([torch.full(SHAPE, 0.5), torch.full(SHAPE, -0.25), torch.full(SHAPE, 2.0)])

    def denoise(x, sigma):
        seen.append((x.clone(), float(sigma)))
        return next(estimates), None
    z = torch.full(SHAPE, 3.0)
    out = sample_lcm(denoise, torch.zeros(SHAPE), lcm_sigmas(3), torch.ones(3), lambda: z)
    grid = lcm_sigmas(3)
    assert [s for _, s in seen] == grid[:-1].tolist()
    assert torch.allclose(seen[1][0], 0.5 + grid[1] * 3.0) and torch.allclose(seen[2][0], -0.25 + grid[2] * 3.0)
    assert torch.equal(out, torch.full(SHAPE, 2.0))
    assert torch.equal(guided(torch.ones(SHAPE), None, torch.ones(3)), torch.ones(SHAPE))


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
def test_schedules_equal_diffusers_edm_grids(schedule):
    from svdcli.inference.sampling import SCHEDULES, sigma_schedule

    assert schedule in SCHEDULES
    scheduler = diffusers.EDMDPMSolverMultistepScheduler(sigma_min=0.002, sigma_max=700.0, sigma_data=1.0,
                                                         sigma_schedule=schedule, final_sigmas_type="zero")
    scheduler.set_timesteps(25)
    ours = sigma_schedule(schedule, 25)
    assert len(ours) == 26 and ours[-1] == 0
    assert torch.allclose(scheduler.sigmas.float(), ours, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="schedule"):
        sigma_schedule("cosine", 25)


def test_a_seed_gives_the_same_stochastic_clip_and_another_seed_another():
    noise, _ = start()
    for sampler in ("euler-a", "dpmpp-2m-sde"):
        a, b, c = ours(sampler, noise, 1)[0], ours(sampler, noise, 1)[0], ours(sampler, noise, 2)[0]
        assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)
    with pytest.raises(ValueError, match="sampler"):
        sample_with("plms", denoiser([]), noise, edm_sigmas(2), torch.ones(3), lambda: torch.zeros(SHAPE))


def test_the_pipeline_runs_each_sampler_on_a_tiny_model_and_windows_too():
    from svdcli.inference.pipeline import SamplingSettings, VideoPipeline

    from .conftest import tiny_model

    model = tiny_model()
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    calls = []
    model.unet.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    results = {}
    for sampler in SAMPLERS:
        calls.clear()
        results[sampler] = pipe.sample(image, SamplingSettings(frames=3, steps=3, sampler=sampler), seed=4)
        # two U-Net passes (the guidance halves) per denoiser call
        assert len(calls) == 2 * denoiser_calls(sampler, 3) and torch.isfinite(results[sampler]).all(), sampler
    assert len({tuple(r.flatten()[:8].tolist()) for r in results.values()}) == len(SAMPLERS)  # all different
    long = SamplingSettings(frames=7, steps=2, window=4, overlap=1, sampler="heun")
    calls.clear()
    assert pipe.sample(image, long, seed=4).shape == (7, 4, 8, 8)
    # per call of the clip's denoiser: the first window's two guidance halves, the second's one (unguided)
    assert len(calls) == 3 * denoiser_calls("heun", 2)


def test_svd_generate_records_the_sampler_and_schedule_and_refuses_an_unknown_sampler(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    from svdcli.checkpoints.saving import save_single_file

    from .conftest import tiny_model

    save_single_file(tiny_model("svd", seed=4), tmp_path / "tiny.safetensors")
    Image.new("RGB", (64, 64), (200, 30, 90)).save(tmp_path / "red.png")
    base = [sys.executable, "-m", "svdcli", "generate", str(tmp_path / "red.png"), "--weights",
            str(tmp_path / "tiny.safetensors"), "--preset", "svd", "--size", "64x64", "--frames", "2", "--steps", "2",
            "--no-watermark", "--quiet", "--format", "gif"]
    r = subprocess.run([*base, "--sampler", "dpmpp-2m-sde", "--schedule", "exponential", "--out",
                        str(tmp_path / "a.gif")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "a.json").read_text())["settings"]
    assert (settings["sampler"], settings["schedule"]) == ("dpmpp-2m-sde", "exponential")
    r = subprocess.run([*base, "--sampler", "heun", "--json", "--out", str(tmp_path / "h.gif")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    from svdcli.inference.flops import unet_call_flops

    from .conftest import tiny_architecture

    result, call = json.loads(r.stdout), unet_call_flops(tiny_architecture("svd").unet, 2, 2, 8, 8)
    assert (result["unet_calls"], result["flops"]) == (2 * 3, 3 * call)  # Heun, 2 steps: 3 guided calls of 2 halves
    meta = json.loads((tmp_path / "h.json").read_text())
    assert (meta["unet_calls"], meta["flops"]) == (6, 3 * call)
    r = subprocess.run([*base, "--sampler", "plms", "--out", str(tmp_path / "b.gif")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == ("svd: error: --sampler plms: choose one of euler, euler-a, "
                                                      "heun, dpmpp-2m, dpmpp-2m-sde, lcm")
    assert not (tmp_path / "b.gif").exists()
    r = subprocess.run([*base, "--sampler", "lcm", "--out", str(tmp_path / "b.gif")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("svd: error: --sampler lcm: the svd model is not consistency-distilled")
    assert not (tmp_path / "b.gif").exists()
