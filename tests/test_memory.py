"""The memory engine: weight storage dtypes, offloading and seam-free chunked decoding, on tiny configs (CPU)."""

import pytest
import torch
from torch import nn

from svdcli.inference.decoding import decode_frames, temporal_windows
from svdcli.media.images import to_tensor
from svdcli.checkpoints.loader import load
from svdcli.runtime.offload import unet_blocks
from svdcli.inference.pipeline import SamplingSettings, VideoPipeline
from svdcli.runtime.quantize import FP8, Int8Linear, QuantizeError, check_int8, weight_bytes
from svdcli.checkpoints.saving import save_single_file

from .conftest import tiny_model
from .test_pipeline import random_image

SETTINGS = SamplingSettings(frames=3, steps=3, decode_chunk=3)
# Mean absolute error on [0, 1] frames against fp32 storage (tiny random models; stated in docs/memory.md).
TOLERANCE = {"fp16": 0.005, "bf16": 0.01, "fp8": 0.06, "int8": 0.03}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "m.safetensors"
    save_single_file(tiny_model("svd", seed=6), path)
    return path


def frames(model, offload="none", overlap=0, settings=SETTINGS):
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32, offload=offload, decode_overlap=overlap)
    return pipe.generate(to_tensor(random_image(4)), settings, seed=2).frames


@pytest.fixture(scope="module")
def reference(checkpoint):
    return frames(load(checkpoint))


@pytest.mark.parametrize("weights_dtype", ["fp16", "bf16", "fp8", "int8"])
def test_weight_dtypes_stay_within_tolerance_of_fp32(checkpoint, reference, weights_dtype):
    if weights_dtype == "int8":
        pytest.importorskip("bitsandbytes")
    out = frames(load(checkpoint, weights_dtype=weights_dtype))
    assert torch.isfinite(out).all()
    assert (out - reference).abs().mean().item() <= TOLERANCE[weights_dtype]


def big_matrices(module):
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)) or type(m).__name__ == "MultiheadAttention":
            yield m


def test_fp8_stores_one_byte_per_weight(checkpoint):
    model = load(checkpoint, weights_dtype="fp8")
    for component in (model.unet, model.image_encoder):
        for m in big_matrices(component):
            assert "weight" not in m._parameters and "in_proj_weight" not in m._parameters
            for name in m._stored_weights:
                stored = getattr(m, name + "_stored")
                assert stored.dtype == FP8 and stored.element_size() == 1
                assert getattr(m, name + "_scale").numel() == 1  # one scale per tensor
    full = load(checkpoint)
    assert weight_bytes(model.unet) < 0.3 * weight_bytes(full.unet)  # fp32 -> 1 byte, plus norms/biases in fp32


def test_int8_stores_one_byte_per_linear_weight(checkpoint):
    pytest.importorskip("bitsandbytes")
    model = load(checkpoint, weights_dtype="int8")
    layers = [m for m in model.unet.modules() if isinstance(m, Int8Linear)]
    assert layers and not any(type(m) is nn.Linear for m in model.unet.modules())
    assert all(m.weight.dtype == torch.int8 and m.weight.element_size() == 1 for m in layers)


def test_int8_is_refused_where_bitsandbytes_cannot_run():
    with pytest.raises(QuantizeError, match="use --weights-dtype fp8"):
        check_int8(torch.device("mps"))


def test_bad_weights_dtype(checkpoint):
    with pytest.raises(ValueError, match="choose one of"):
        load(checkpoint, weights_dtype="int4")


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_modes_give_the_same_frames(checkpoint, reference, mode):
    model = load(checkpoint)
    pipe = VideoPipeline(model, torch.device("cpu"), torch.float32, offload=mode)
    out = pipe.generate(to_tensor(random_image(4)), SETTINGS, seed=2).frames
    assert torch.equal(out, reference)
    if mode == "sequential":
        blocks = len(unet_blocks(model.unet))
        # every block of every U-Net call (two a step: the guidance halves) was copied in once (the wrap-around
        # prefetch adds one)
        assert pipe.streamer.uploads == 2 * SETTINGS.steps * blocks + 1


def test_windows_cover_every_frame_with_the_requested_overlap():
    for frames, chunk, overlap in [(25, 14, 4), (25, 8, 2), (21, 7, 3), (14, 14, 4), (9, 4, 1), (30, 6, 5)]:
        w = temporal_windows(frames, chunk, overlap)
        assert w[0][0] == 0 and w[-1][1] == frames and all(e - s == min(chunk, frames) for s, e in w)
        assert all(w[i][1] - w[i + 1][0] >= min(overlap, chunk - 1) for i in range(len(w) - 1))
    assert temporal_windows(25, 14, 0) == [(0, 14), (14, 25)]  # the reference's chunks


def test_overlapped_decoding_is_closer_to_whole_clip_than_reference_chunks():
    vae = tiny_model("svd", seed=9).vae
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 6, 6, generator=g) + torch.randn(12, 4, 6, 6, generator=g).cumsum(0) * 0.15
    cpu = torch.device("cpu")
    with torch.no_grad():
        whole = decode_frames(vae, latents, cpu, chunk=12)
        disjoint = decode_frames(vae, latents, cpu, chunk=5, overlap=0)
        overlapped = decode_frames(vae, latents, cpu, chunk=5, overlap=2)
    err_ref = (disjoint - whole).abs().mean(dim=(1, 2, 3))
    err_ours = (overlapped - whole).abs().mean(dim=(1, 2, 3))
    assert err_ours.max() < err_ref.max() and err_ours.mean() < err_ref.mean()


def test_spatial_tiles_blend_back_to_the_full_frame():
    vae = tiny_model("svd_image_decoder", seed=3).vae
    z = torch.randn(2, 4, 12, 16, generator=torch.Generator().manual_seed(1))
    cpu = torch.device("cpu")
    with torch.no_grad():
        whole = decode_frames(vae, z, cpu, chunk=2)
        one_tile = decode_frames(vae, z, cpu, chunk=2, tile=(12, 16))
        tiled = decode_frames(vae, z, cpu, chunk=2, tile=(8, 8), tile_overlap=4)
    assert torch.allclose(one_tile, whole, atol=1e-5)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    # Tiles see less context than the whole frame, but blending keeps them close to it.
    assert (tiled - whole).abs().mean() < 0.5 * whole.abs().mean()


def test_attention_slices_do_not_change_results():
    unet = tiny_model("svd", seed=1).unet
    t = 5
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2 * t, 8, 12, 10, generator=g), torch.randn(2 * t, generator=g),
            torch.randn(2 * t, 1, 48, generator=g), torch.randn(2 * t, 24, generator=g), t)
    with torch.no_grad():
        whole = unet(*args)
        unet.set_max_tokens(37)  # far smaller than any row count: many slices everywhere
        sliced = unet(*args)
    assert ((sliced - whole).abs().max() / whole.abs().max()).item() <= 1e-5
