"""Training the autoencoder: it learns, it is reproducible, and the latent calibration is exact."""

from dataclasses import replace

import pytest
import torch

from svdcli.models.vae import SCALE_FACTOR, VAEConfig
from svdcli.demo.autoencoder import (TrainingError, VAETrainSettings, box_codec_start, box_latents, calibrate_latent_scale,
                              new_vae, procedural_clips, psnr, reconstruct, train_vae, vae_loss)

CFG = VAEConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1)
SIZE, FRAMES, BATCH = (32, 32), 4, 1
SETTINGS = VAETrainSettings(steps=40, batch=BATCH, frames=FRAMES, lr=1e-3, warmup=5)
HELD_OUT = range(10_000, 10_004)  # seeds never used for training


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a shared CPU OpenMP's waiting threads made this
    file take minutes instead of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clips_fn(step: int) -> torch.Tensor:
    return procedural_clips(range(step * BATCH, (step + 1) * BATCH), FRAMES, SIZE)


def held_out_loss(vae, clips) -> float:
    """The training objective on clips never trained on, with fixed noise."""
    with torch.no_grad():
        return vae_loss(vae, clips, torch.Generator().manual_seed(0), SETTINGS)[0].item()


def test_reconstruction_improves_on_held_out_clips():
    vae, held_out = new_vae(CFG), procedural_clips(HELD_OUT, FRAMES, SIZE)
    before, psnr_before = held_out_loss(vae, held_out), psnr(reconstruct(vae, held_out), held_out)
    seen = []
    summary = train_vae(vae, clips_fn, SETTINGS, progress=lambda *a: seen.append(a))
    assert seen[-1] == ("train", 40, 40) and len(summary["losses"]) == 40
    assert held_out_loss(vae, held_out) < 0.7 * before
    assert psnr(reconstruct(vae, held_out), held_out) > psnr_before + 2  # dB (≈ 12 -> 15.5 on this data)


def test_same_seed_same_weights():
    s = replace(SETTINGS, steps=3)
    a, b, c = new_vae(CFG), new_vae(CFG), new_vae(CFG)
    train_vae(a, clips_fn, s), train_vae(b, clips_fn, s), train_vae(c, clips_fn, replace(s, seed=1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # the seed drives the reparameterisation noise


def test_calibration_is_exact():
    for cfg in (CFG, replace(CFG, temporal_decoder=False, post_quant_conv=True)):
        vae = new_vae(cfg, seed=3)  # untrained: its latents' scale is as arbitrary as a trained one's
        clips = procedural_clips(HELD_OUT, FRAMES, SIZE)
        images = clips.flatten(0, 1)  # (N, 3, H, W)
        with torch.no_grad():
            before, logvar_before = reconstruct(vae, clips), vae.quant_conv(vae.encoder(images))[:, 4:]
        k = calibrate_latent_scale(vae, images)
        with torch.no_grad():
            latents, logvar = vae.encode(images), vae.quant_conv(vae.encoder(images))[:, 4:]
        assert abs(latents.double().std(correction=0).item() * SCALE_FACTOR - 1) < 1e-3
        assert abs(k - 1) > 0.1  # a real rescaling happened
        torch.testing.assert_close(reconstruct(vae, clips), before, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logvar, logvar_before + 2 * torch.log(torch.tensor(k)), atol=1e-4, rtol=1e-4)


def test_clips_of_the_wrong_shape_are_refused():
    with pytest.raises(TrainingError, match=r"expected \(1, 4, 3, H, W\)"):
        train_vae(new_vae(CFG), lambda step: torch.zeros(1, 3, 3, 32, 32), replace(SETTINGS, steps=1))


def test_box_codec_start_is_a_box_filter_codec():
    """The start that skips the grey phase: the encoder gives the block means of R, G, B (and a zero channel), the
    decoder their bilinear upsampling, and both survive the networks' closing GroupNorm → SiLU → conv."""
    cfg = replace(CFG, norm_groups=8)
    vae = new_vae(cfg)
    box_codec_start(vae)
    clips = procedural_clips(HELD_OUT, FRAMES, (64, 64))  # (4, 4, 3, 64, 64)
    images = clips.flatten(0, 1)
    with torch.no_grad():
        latents = vae.encode(images)
        assert (latents - box_latents(images, 2)).abs().max() < 0.01
        rec = vae.decode(latents, FRAMES)
    bilinear = torch.nn.functional.interpolate(box_latents(images, 2)[:, :3], scale_factor=2, mode="bilinear")
    inner = (..., slice(1, -1), slice(1, -1))  # zero padding dims the outermost pixels a little
    assert (rec - bilinear)[inner].abs().max() < 0.02
    assert psnr(rec.clamp(-1, 1), images) > psnr(torch.zeros_like(images), images) + 10


def test_box_codec_start_needs_groups_of_four():
    """At 32 channels the reference's 32 groups hold one channel each: each channel's image mean would be lost."""
    with pytest.raises(ValueError, match="groups of ≥ 4"):
        box_codec_start(new_vae(CFG))


def test_norm_groups_are_recorded_and_loaded(tmp_path):
    """A model with fewer GroupNorm groups than the reference's 32 loads back with them (shapes cannot tell)."""
    from svdcli.checkpoints.loader import load
    from svdcli.checkpoints.saving import save_single_file
    from tests.conftest import tiny_model

    model = tiny_model("svd", seed=1)
    arch = replace(model.architecture, unet=replace(model.architecture.unet, norm_groups=8),
                   vae=replace(model.architecture.vae, norm_groups=8))
    from svdcli.checkpoints.loader import LoadedModel
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import VAE

    unet, vae = VideoUNet(arch.unet), VAE(arch.vae)
    unet.load_state_dict(model.unet.state_dict())
    vae.load_state_dict(model.vae.state_dict())
    assert {m.num_groups for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)} == {8}
    save_single_file(LoadedModel(arch, unet, vae, model.image_encoder, "memory", [], ["float32"]),
                     tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert (loaded.architecture.unet.norm_groups, loaded.architecture.vae.norm_groups) == (8, 8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.vae.encode(x), vae.encode(x), atol=1e-5)
        default = VAE(replace(arch.vae, norm_groups=32))
        default.load_state_dict(vae.state_dict())
        assert not torch.allclose(default.encode(x), vae.encode(x), atol=1e-3)  # the groups matter
