"""Feature caching (svd generate --cache N, DeepCache's idea): the U-Net's deep features kept by a refreshing call and
reused by the cached calls after it; the pipeline's schedule, the work it counts, and the settings it refuses."""

import pytest
import torch

from svdcli.inference.flops import unet_call_flops
from svdcli.inference.pipeline import CACHE_DEPTH, SamplingSettings, VideoPipeline, cached_call
from svdcli.models.unet import DeepFeatureCache

from .conftest import TINY_UNET, tiny_model

FRAMES = 3


def unet_inputs(seed: int, sigma_noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    cfg = TINY_UNET
    return (torch.randn(FRAMES, cfg.in_channels, 8, 8, generator=g), torch.full((FRAMES,), sigma_noise),
            torch.randn(FRAMES, 1, cfg.context_dim, generator=g), torch.randn(FRAMES, cfg.adm_in_channels, generator=g),
            FRAMES)


@torch.no_grad()
def test_a_refreshing_call_is_the_plain_call_and_a_cached_call_on_the_same_input_too():
    unet = tiny_model(seed=3).unet
    args = unet_inputs(1)
    plain = unet(*args)
    for depth in (1, 2, 3):
        cache = DeepFeatureCache(depth)
        assert torch.equal(unet(*args, cache=cache), plain) and cache.features is not None
        cache.refresh = False
        assert torch.equal(unet(*args, cache=cache), plain), depth  # the deep features are those it would compute


@torch.no_grad()
def test_a_cached_call_reuses_the_deep_features_and_runs_only_the_shallow_blocks():
    unet = tiny_model(seed=3).unet
    ran = []
    for name, block in [("middle", unet.middle_block), *[(f"in{i}", b) for i, b in enumerate(unet.input_blocks)],
                        *[(f"out{i}", b) for i, b in enumerate(unet.output_blocks)]]:
        block.register_forward_pre_hook(lambda module, args, name=name: ran.append(name))
    cache = DeepFeatureCache(2)
    unet(*unet_inputs(1), cache=cache)
    last = len(unet.output_blocks)
    assert len(ran) == 1 + len(unet.input_blocks) + last
    ran.clear()
    cache.refresh = False
    later = unet_inputs(1, sigma_noise=0.1)  # the next step: another noise level, a slightly different x
    cached = unet(*later, cache=cache)
    assert ran == ["in0", "in1", f"out{last - 2}", f"out{last - 1}"]
    plain = unet(*later)
    assert not torch.equal(cached, plain) and torch.isfinite(cached).all()
    # the deep features of a nearby noise level stand in for this one's: close, not equal
    assert (cached - plain).norm() < 0.5 * plain.norm()


def test_cached_calls_cost_fewer_flops_at_full_size():
    from svdcli.models.unet import UNetConfig

    full = unet_call_flops(UNetConfig(), 2, 25, 72, 128)
    cached = unet_call_flops(UNetConfig(), 2, 25, 72, 128, CACHE_DEPTH)
    assert 0 < cached < full / 3  # the shallow blocks are a fraction of SVD-XT's work (docs/speed.md gives it)
    assert unet_call_flops(TINY_UNET, 1, FRAMES, 8, 8, 1) < unet_call_flops(TINY_UNET, 1, FRAMES, 8, 8)


def test_the_pipeline_refreshes_every_n_calls_counts_the_work_and_states_it_before_sampling():
    model = tiny_model(seed=2)
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    middle = []
    model.unet.middle_block.register_forward_pre_hook(lambda module, args: middle.append(1))
    steps, every = 7, 3
    reports = []
    cached = pipe.sample(image, SamplingSettings(frames=FRAMES, steps=steps, cache=every), seed=1,
                         progress=lambda *r: reports.append(r))
    refreshes = [i for i in range(steps) if not cached_call(every, i)]
    assert refreshes == [0, 3, 6] and len(middle) == 2 * len(refreshes)  # both guidance halves at each refresh
    full_call, cached_call_flops = pipe.call_flops(2, FRAMES, 8, 8), pipe.call_flops(2, FRAMES, 8, 8, CACHE_DEPTH)
    assert pipe.unet_calls == 2 * steps
    assert pipe.unet_flops == len(refreshes) * full_call + (steps - len(refreshes)) * cached_call_flops
    # the work is stated up front and weighed step by step, so the ETA knows a cached step is cheaper
    assert ("sample-flops", pipe.unet_flops, steps) in reports
    works = [done for stage, done, _ in reports if stage == "sample-work"]
    assert works[:4] == [full_call, full_call + cached_call_flops, full_call + 2 * cached_call_flops,
                         2 * full_call + 2 * cached_call_flops]
    plain = pipe.sample(image, SamplingSettings(frames=FRAMES, steps=steps), seed=1)
    assert not torch.equal(cached, plain) and torch.isfinite(cached).all()
    assert torch.equal(cached, pipe.sample(image, SamplingSettings(frames=FRAMES, steps=steps, cache=every), seed=1))
    assert torch.equal(plain, pipe.sample(image, SamplingSettings(frames=FRAMES, steps=steps, cache=1), seed=1))


def test_cache_settings_that_cannot_work_are_refused():
    from svdcli.checkpoints.presets import load_preset
    from svdcli.inference.generation import OptionsError, resolve_options

    with pytest.raises(OptionsError, match="cache"):
        resolve_options(load_preset("animatelcm-svd-xt"), cache=3)  # its sampler is lcm
    with pytest.raises(OptionsError, match="cache"):
        resolve_options(load_preset("demo"), cache=-1)
    o, _ = resolve_options(load_preset("demo"), cache=3, sampler="heun")
    assert o.sampling().cache == 3
