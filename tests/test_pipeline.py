"""The whole image-to-video pipeline: parity with diffusers' StableVideoDiffusionPipeline on identical weights and
noise, the seed's draw order, and SV3D conditioning."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from svdcli.media.images import to_tensor
from svdcli.inference.pipeline import SamplingSettings, VideoPipeline, conditioning_vector
from svdcli.checkpoints.saving import save_diffusers

from .conftest import tiny_model
from .test_parity import reference_unet

H, W, T = 64, 128, 4


def random_image(seed=0, h=H, w=W) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8))


def reference_pipeline(folder):
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    # The hub's scheduler_config.json for SVD (diffusers-layout-and-hub.md §4.4).
    scheduler = diffusers.EulerDiscreteScheduler(
        prediction_type="v_prediction", timestep_type="continuous", use_karras_sigmas=True, sigma_min=0.002,
        sigma_max=700.0, timestep_spacing="leading", steps_offset=1, beta_schedule="scaled_linear",
        beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, interpolation_type="linear")
    return diffusers.StableVideoDiffusionPipeline(
        vae=diffusers.AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae"),
        image_encoder=transformers.CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder"),
        unet=reference_unet(folder), scheduler=scheduler,
        feature_extractor=transformers.CLIPImageProcessor(do_resize=False, do_center_crop=False))


@pytest.mark.parametrize("cfg", [(1.0, 2.5), (1.5, 3.0)])
def test_frames_equal_diffusers_pipeline(tmp_path, cfg):
    model = tiny_model("svd", seed=3)
    save_diffusers(model, tmp_path)
    ref = reference_pipeline(tmp_path)
    image = random_image()
    # diffusers: fps is the playback rate and the model gets fps - 1; the same CPU generator draws the image noise,
    # then the latent noise, in the reference's order.
    expected = ref(image, height=H, width=W, num_frames=T, num_inference_steps=3, min_guidance_scale=cfg[0],
                   max_guidance_scale=cfg[1], fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
                   decode_chunk_size=T, generator=torch.Generator().manual_seed(7), output_type="pt").frames[0]
    ours = VideoPipeline(model, torch.device("cpu"), torch.float32).generate(
        to_tensor(image), SamplingSettings(frames=T, steps=3, fps_id=6, cfg_min=cfg[0], cfg_max=cfg[1],
                                           decode_chunk=T), seed=7)
    assert ours.frames.shape == expected.shape == (T, 3, H, W)
    assert (ours.frames - expected).abs().max().item() <= 1e-4


def test_noise_is_drawn_on_the_cpu_in_the_reference_order():
    pipe = VideoPipeline(tiny_model("svd"), torch.device("cpu"), torch.float32)
    eps_image, eps_latent = pipe.draw_noise(23, (1, 3, H, W), T)
    torch.manual_seed(23)  # the reference script: one manual_seed, then randn_like(image), then randn(T, 4, h, w)
    assert torch.equal(eps_image, torch.randn(1, 3, H, W))
    assert torch.equal(eps_latent, torch.randn(T, 4, H // 8, W // 8))


def test_same_seed_same_frames_and_different_seed_different_frames():
    pipe = VideoPipeline(tiny_model("svd"), torch.device("cpu"), torch.float32)
    s = SamplingSettings(frames=3, steps=2, decode_chunk=3)
    x = to_tensor(random_image(1))
    a, b, c = (pipe.generate(x, s, seed=k).frames for k in (5, 5, 6))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_unit_guidance_skips_the_unconditional_pass_without_changing_frames():
    pipe = VideoPipeline(tiny_model("svd"), torch.device("cpu"), torch.float32)
    calls = []
    unet_forward = pipe.model.unet.forward
    pipe.model.unet.forward = lambda x, *a, **k: calls.append(len(x)) or unet_forward(x, *a, **k)
    x = to_tensor(random_image(2))
    single = pipe.generate(x, SamplingSettings(frames=3, steps=2, cfg_min=1.0, cfg_max=1.0), seed=1).frames
    assert calls == [3, 3]  # conditional branch only
    calls.clear()
    both = pipe.generate(x, SamplingSettings(frames=3, steps=2, cfg_min=1.0, cfg_max=1.0 + 1e-7), seed=1).frames
    assert calls == [3, 3, 3, 3]  # both halves, one after the other, at each step
    assert (single - both).abs().max().item() <= 1e-5  # the conditional half alike; a scale of 1 + 1e-7 on top


def test_sv3d_p_vector_holds_the_camera_and_the_last_frame_is_the_input():
    model = tiny_model("sv3d_p")
    frames = 3
    polars = (math.radians(80),) * frames
    azimuths = (math.radians(120), math.radians(240), 0.0)
    s = SamplingSettings(frames=frames, steps=2, noise_aug=1e-5, guidance="triangle", polars_rad=polars,
                         azimuths_rad=azimuths)
    y = conditioning_vector(model, s)
    assert y.shape == (frames, model.architecture.unet.adm_in_channels)
    assert not torch.equal(y[0], y[1])  # per-frame azimuths
    image = random_image(3, 64, 64)
    out = VideoPipeline(model, torch.device("cpu"), torch.float32).generate(to_tensor(image), s, seed=0).frames
    assert torch.allclose(out[-1], torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255, atol=1e-6)
    with pytest.raises(ValueError, match="one polar and one azimuth"):
        conditioning_vector(model, SamplingSettings(frames=frames))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_compute_stays_close_to_float32(dtype):
    s = SamplingSettings(frames=3, steps=3, decode_chunk=3)
    x = to_tensor(random_image(4))
    full = VideoPipeline(tiny_model("svd", seed=6), torch.device("cpu"), torch.float32).generate(x, s, seed=2).frames
    half_pipe = VideoPipeline(tiny_model("svd", seed=6), torch.device("cpu"), dtype)
    assert half_pipe.model.unet.out[2].weight.dtype == dtype and half_pipe.model.vae.decoder.conv_in.weight.dtype == \
        torch.float32  # the VAE stays in float32, as the reference runs it
    half = half_pipe.generate(x, s, seed=2).frames
    assert torch.isfinite(half).all()
    assert (half - full).abs().mean().item() < 0.02  # mean absolute error on [0, 1] frames
