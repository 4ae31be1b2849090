"""Numerical parity with the reference implementations (diffusers, transformers, kornia) on identical random
weights. The weights reach the reference through our diffusers writer and their own from_pretrained, so these tests
also prove the key tables."""

import pytest
import torch

from svdcli.models.clip import antialiased_resize
from svdcli.models.layers import timestep_embedding
from svdcli.saving import save_diffusers

from .conftest import tiny_model

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(scope="module")
def svd_pair(tmp_path_factory):
    model = tiny_model("svd", seed=1)
    folder = tmp_path_factory.mktemp("diffusers")
    save_diffusers(model, folder)
    return model, folder


def reference_unet(folder):
    unet = diffusers.UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet").eval()
    # diffusers uses GroupNorm eps 1e-6 in most resnets; the reference (sgm) uses 1e-5 everywhere.
    for block in unet.modules():
        if isinstance(block, diffusers.models.resnet.SpatioTemporalResBlock):
            for norm in (block.spatial_res_block.norm1, block.spatial_res_block.norm2,
                         block.temporal_res_block.norm1, block.temporal_res_block.norm2):
                norm.eps = 1e-5
    return unet


@pytest.mark.parametrize("frames,h,w", [(1, 8, 8), (3, 7, 9), (5, 5, 6)])
def test_unet_matches_diffusers(svd_pair, frames, h, w):
    model, folder = svd_pair
    ref = reference_unet(folder)
    cfg = model.architecture.unet
    b = 2
    g = torch.Generator().manual_seed(frames)
    sample = torch.randn(b, frames, cfg.in_channels, h, w, generator=g)
    sigma = torch.tensor([700.0, 0.5])
    c_noise = sigma.log() / 4
    context = torch.randn(b, 1, cfg.context_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02], [20.0, 30.0, 0.5]])
    with torch.no_grad():
        expected = ref(sample, c_noise, context, ids).sample  # (B, T, 4, h, w)
        width = cfg.adm_in_channels // 3
        y = torch.cat([timestep_embedding(ids[:, i], width) for i in range(3)], dim=1)
        got = model.unet(sample.flatten(0, 1), c_noise.repeat_interleave(frames),
                         context.repeat_interleave(frames, 0), y.repeat_interleave(frames, 0), frames)
    assert got.shape == (b * frames, cfg.out_channels, h, w)
    assert rel_err(got, expected.flatten(0, 1)) <= TOL


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_temporal_vae_matches_diffusers(svd_pair, frames):
    model, folder = svd_pair
    ref = diffusers.AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae").eval()
    g = torch.Generator().manual_seed(frames)
    z = torch.randn(2 * frames, 4, 5, 7, generator=g)
    images = torch.rand(2, 3, 40, 56, generator=g) * 2 - 1
    with torch.no_grad():
        assert rel_err(model.vae.decode(z, frames), ref.decode(z, num_frames=frames).sample) <= TOL
        assert rel_err(model.vae.encode(images), ref.encode(images).latent_dist.mode()) <= TOL


def test_frame_wise_decoder_matches_diffusers(tmp_path):
    model = tiny_model("svd_image_decoder", seed=2)
    save_diffusers(model, tmp_path)
    ref = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 6, 5, generator=g)
    with torch.no_grad():
        assert rel_err(model.vae.decode(z, 3), ref.decode(z).sample) <= TOL


def test_image_encoder_matches_transformers(svd_pair):
    model, folder = svd_pair
    ref = transformers.CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").eval()
    pixels = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(model.image_encoder(pixels), ref(pixel_values=pixels).image_embeds) <= TOL


@pytest.mark.parametrize("size", [(576, 1024), (576, 576), (320, 448), (100, 224), (224, 300), (123, 77)])
def test_resize_matches_kornia(size):
    kornia = pytest.importorskip("kornia")
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = kornia.geometry.transform.resize(x, (224, 224), interpolation="bicubic", align_corners=True,
                                                antialias=True)
    assert (antialiased_resize(x, (224, 224)) - expected).abs().max().item() <= 1e-5
