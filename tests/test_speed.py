"""Speed paths must not change results: each optimisation on and off, on tiny configs."""

import torch

from svdcli.models.layers import CrossAttention

from .conftest import tiny_model


def unet_inputs(t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2 * t, 8, 12, 10, generator=g), torch.randn(2 * t, generator=g),
            torch.randn(2 * t, 1, 48, generator=g), torch.randn(2 * t, 24, generator=g), t)


def test_single_token_cross_attention_is_exact():
    attn = CrossAttention(64, heads=4, context_dim=48)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, ctx = torch.randn(3, 17, 64), torch.randn(3, 1, 48)
    with torch.no_grad():
        full, short = attn(x, ctx), attn.single_token(ctx).expand(-1, 17, -1)
    assert ((full - short).abs().max() / full.abs().max()).item() <= 1e-6


def test_cross_attention_shortcut_on_and_off_give_the_same_unet_output():
    unet = tiny_model("svd", seed=1).unet
    args = unet_inputs()
    with torch.no_grad():
        on = unet(*args)
        unet.set_cross_attention_shortcut(False)
        off = unet(*args)
    assert ((on - off).abs().max() / off.abs().max()).item() <= 1e-6


def test_compiled_pipeline_gives_the_same_frames():
    from svdcli.media.images import to_tensor
    from svdcli.inference.pipeline import SamplingSettings, VideoPipeline

    from .test_pipeline import random_image

    s = SamplingSettings(frames=2, steps=2, decode_chunk=2)
    x = to_tensor(random_image(5))
    eager = VideoPipeline(tiny_model("svd", seed=2), torch.device("cpu"), torch.float32).generate(x, s, seed=3)
    compiled = VideoPipeline(tiny_model("svd", seed=2), torch.device("cpu"), torch.float32, compile=True)
    out = compiled.generate(x, s, seed=3)
    assert (out.frames - eager.frames).abs().max().item() <= 1e-4


def test_progress_states_the_work_before_sampling_and_an_eta_after_the_first_step():
    import io
    import re
    import time

    from rich.console import Console

    from svdcli.cli.progress import ProgressView
    from svdcli.media.images import to_tensor
    from svdcli.inference.pipeline import SamplingSettings, VideoPipeline

    from .test_pipeline import random_image

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    pipe = VideoPipeline(tiny_model("svd", seed=2), torch.device("cpu"), torch.float32)
    calls = []

    def slow(stage, done, total, **fields):  # the first step takes at least 0.2 s, so its speed is measurable
        calls.append((stage, done, total))
        view(stage, done, total, **fields)
        if stage == "sample-flops":
            time.sleep(0.2)

    with ProgressView(console, quiet=False) as view:
        pipe.generate(to_tensor(random_image(5)), SamplingSettings(frames=3, steps=4, decode_chunk=3), seed=1,
                      progress=slow)
    text = out.getvalue()
    flops = next(done for stage, done, _ in calls if stage == "sample-flops")  # all four steps'
    assert flops > 0 and calls.index(("sample-flops", flops, 4)) < calls.index(("sample", 1, 4))
    assert calls.index(("sample-work", flops // 4, flops)) == calls.index(("sample", 1, 4)) - 1
    assert f"denoising: 4 steps, {flops / 1e12:.2f} TFLOP" in text
    eta = re.search(r"first step ([\d.]+) s \(([\d.]+) TFLOP/s\): about (\d+) s of denoising to go", text)
    assert eta, text
    first, remaining = float(eta.group(1)), int(eta.group(3))
    assert first >= 0.2 and abs(remaining - first * 3) <= 0.5 + 3 * 0.05
