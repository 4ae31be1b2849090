"""Decoding after sampling: windows sized from the decoder's measured peak, retries in less memory (simulated
out-of-memory errors), the latents kept when nothing fits, and `svd decode` finishing the job with the same frames."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from svdcli.cli import app
from svdcli.inference.decoding import (DECODE_MEMORY_SHARE, DECODER_MAPS_PER_FRAME, DecodeOutOfMemory, auto_chunk,
                             decode_frames, decode_latents, fallback_plans)
from svdcli.models.vae import VAE, VAEConfig
from svdcli.runtime.peak_memory import TensorBytes
from svdcli.checkpoints.saving import save_single_file

from .conftest import tiny_model


def decoder_peak(vae: VAE, frames: int, h: int, w: int, device: str) -> int:
    z = torch.randn(frames, 4, h, w, device=device)
    with torch.no_grad(), TensorBytes() as counted:
        vae.decode(z, frames)
    return counted.peak


def test_the_full_size_decoders_peak_is_what_auto_chunk_plans_for():
    """SVD's temporal decoder, built on the meta device (shapes only), at the sizes users decode."""
    with torch.device("meta"):
        vae = VAE(VAEConfig())
    for (width, height), frames in [((1024, 576), 1), ((1024, 576), 4), ((1024, 576), 14), ((512, 512), 25),
                                    ((2048, 1152), 2)]:
        peak = decoder_peak(vae, frames, height // 8, width // 8, "meta")
        assert peak <= DECODER_MAPS_PER_FRAME * 128 * height * width * 4 * frames + 2**20  # + scalars
        assert peak >= 0.9 * DECODER_MAPS_PER_FRAME * 128 * height * width * 4 * frames  # the figure is not slack
    gib = 1024**3
    for free in (6 * gib, 20 * gib, 70 * gib):  # what auto plans fits its share of free memory
        chunk = auto_chunk(25, 576, 1024, free)
        assert decoder_peak(vae, chunk, 72, 128, "meta") <= DECODE_MEMORY_SHARE * free
        if chunk < 25:
            assert decoder_peak(vae, chunk + 1, 72, 128, "meta") > DECODE_MEMORY_SHARE * free * 0.9


def test_counted_bytes_on_the_meta_device_equal_those_of_a_real_run():
    torch.manual_seed(0)
    cfg = VAEConfig(channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1)
    real = VAE(cfg).eval()
    with torch.device("meta"):
        shapes_only = VAE(cfg)
    for frames, h, w in [(1, 8, 8), (3, 8, 16)]:
        assert decoder_peak(real, frames, h, w, "cpu") == decoder_peak(shapes_only, frames, h, w, "meta")


@pytest.fixture(scope="module")
def vae():
    return tiny_model("svd", seed=3).vae.eval()


def out_of_memory_above(monkeypatch, vae, frames: int, width: int = 10**9):
    """vae.decode raises CUDA's out-of-memory error for more than `frames` frames or latents wider than `width`."""
    decode = vae.decode
    calls = []

    def limited(z, num_frames):
        calls.append(tuple(z.shape))
        if z.shape[0] > frames or z.shape[-1] > width:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return decode(z, num_frames)

    monkeypatch.setattr(vae, "decode", limited)
    return calls


def test_out_of_memory_retries_with_half_the_frames(vae, monkeypatch):
    latents = torch.randn(8, 4, 16, 16)
    expected = decode_frames(vae, latents, torch.device("cpu"), chunk=2, overlap=1)
    calls = out_of_memory_above(monkeypatch, vae, frames=2)
    events = []
    decoded = decode_latents(vae, latents, torch.device("cpu"), chunk=8, overlap=1,
                             progress=lambda *e: events.append(e))
    assert (decoded.plan.chunk, decoded.plan.tile, decoded.retries) == (2, None, 2)  # 8, then 4, then 2 frames
    assert [c[0] for c in calls[:2]] == [8, 4]
    assert ("decode-retry-chunk", 4, 8) in events and ("decode-retry-chunk", 2, 8) in events
    torch.testing.assert_close(decoded.frames, ((expected + 1) / 2).clamp(0, 1), rtol=0, atol=0)


def test_then_one_frame_at_a_time_in_tiles(vae, monkeypatch):
    latents = torch.randn(3, 4, 16, 32)
    out_of_memory_above(monkeypatch, vae, frames=1, width=16)
    events = []
    decoded = decode_latents(vae, latents, torch.device("cpu"), chunk=3, progress=lambda *e: events.append(e))
    assert decoded.plan.chunk == 1 and decoded.plan.tile == (8, 16)  # half the frame each way
    assert ("decode-retry-tiles", 16 * 8, 8 * 8) in events
    assert decoded.frames.shape == (3, 3, 128, 256) and torch.isfinite(decoded.frames).all()


def test_when_nothing_fits_decoding_says_so(vae, monkeypatch):
    out_of_memory_above(monkeypatch, vae, frames=0)
    with pytest.raises(DecodeOutOfMemory, match="even 1 frame"):
        decode_latents(vae, torch.randn(4, 4, 32, 32), torch.device("cpu"), chunk=4)
    assert [(p.chunk, p.tile) for p in fallback_plans(4, 4, (32, 32), None)] == \
        [(4, None), (2, None), (1, None), (1, (16, 16)), (1, (8, 8))]


def test_other_errors_are_not_retried(vae, monkeypatch):
    monkeypatch.setattr(vae, "decode", lambda z, n: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        decode_latents(vae, torch.randn(2, 4, 8, 8), torch.device("cpu"), chunk=2)


# --- end to end: generate keeps its latents, svd decode finishes the job --------------------------------------------

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    save_single_file(tiny_model("svd", seed=4), d / "tiny.safetensors")
    a = np.zeros((64, 128, 3), np.uint8)
    a[..., 1] = np.linspace(0, 255, 128)[None]
    Image.fromarray(a).save(d / "photo.png")
    return d


def generate(setup, out, *args):
    return CliRunner().invoke(app, ["generate", str(setup / "photo.png"), "--weights", str(setup / "tiny.safetensors"),
                                    "--preset", "svd", "--size", "128x64", "--frames", "4", "--steps", "2", "--seed",
                                    "9", "--format", "png", "--out", str(out), *args])


def frames_of(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_decoding_out_of_memory_keeps_the_latents_and_svd_decode_gives_the_runs_frames(setup, tmp_path,
                                                                                       monkeypatch):
    whole = generate(setup, tmp_path / "whole")
    assert whole.exit_code == 0, whole.stderr
    with monkeypatch.context() as patch:
        def no_memory(self, z, num_frames):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

        patch.setattr(VAE, "decode", no_memory)
        failed = generate(setup, tmp_path / "clip")
    kept = tmp_path / "clip.latents.safetensors"
    assert failed.exit_code == 1
    *notes, last = failed.stderr.splitlines()
    assert "svd: decoding ran out of memory; retrying 2 frame(s) at a time" in notes  # auto chose all 4 first
    assert last.startswith("svd: error: decoding ran out of memory even 1 frame(s) at a time")
    assert f"svd decode {kept} --device cpu" in last
    assert kept.is_file() and not (tmp_path / "clip").exists()  # no half-written output, the sampling kept
    again = generate(setup, tmp_path / "clip")  # a new run there would replace the kept latents: refused
    assert again.exit_code == 2 and "holds the latents of an earlier run" in again.stderr
    from svdcli.media.outputs import numbered_path

    (tmp_path / "photo_0001.latents.safetensors").write_bytes(b"")  # nor does a numbered name take their place
    assert numbered_path(tmp_path, "photo", ".mp4").name == "photo_0002.mp4"
    finished = CliRunner().invoke(app, ["decode", str(kept), "--device", "cpu"])
    assert finished.exit_code == 0, finished.stderr
    assert np.array_equal(frames_of(tmp_path / "clip"), frames_of(tmp_path / "whole"))
    meta = json.loads((tmp_path / "clip.json").read_text())
    assert meta["seed"] == 9 and meta["decoded_from"] == str(kept) and meta["decode"]["retries"] == 0
    again = CliRunner().invoke(app, ["decode", str(kept)])  # the output exists now: nothing is overwritten
    assert again.exit_code == 2 and "exists" in again.stderr


def test_save_latents_lets_a_clip_be_decoded_again_with_other_settings(setup, tmp_path):
    r = generate(setup, tmp_path / "clip", "--save-latents", "--decode-chunk", "2")
    assert r.exit_code == 0, r.stderr
    kept = tmp_path / "clip.latents.safetensors"
    same = CliRunner().invoke(app, ["decode", str(kept), "--out", str(tmp_path / "same")])
    assert same.exit_code == 0, same.stderr
    assert np.array_equal(frames_of(tmp_path / "same"), frames_of(tmp_path / "clip"))
    gif = CliRunner().invoke(app, ["decode", str(kept), "--decode-chunk", "auto", "--format", "gif", "--json"])
    assert gif.exit_code == 0, gif.stderr
    result = json.loads(gif.stdout)
    assert result["output"] == str(tmp_path / "clip.gif") and result["frames"] == 4


@pytest.mark.parametrize("args, says", [
    (["{dir}/missing.latents.safetensors"], "No such file"),
    (["{setup}/tiny.safetensors"], "not a latents file"),
    (["{kept}", "--format", "avi"], "--format avi"),
    (["{kept}", "--decode-chunk", "0"], "--decode-chunk 0"),
    (["{kept}", "--weights", "{dir}/gone.safetensors", "--out", "{dir}/new"], "gone.safetensors"),
])
def test_bad_decode_input_is_one_line_and_exit_2(setup, tmp_path, args, says):
    r = generate(setup, tmp_path / "clip", "--save-latents")
    assert r.exit_code == 0, r.stderr
    names = {"dir": tmp_path, "setup": setup, "kept": tmp_path / "clip.latents.safetensors"}
    bad = CliRunner().invoke(app, ["decode", *(a.format(**names) for a in args)])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and says in bad.stderr, bad.stderr


def test_a_batch_stops_at_a_clip_it_cannot_decode_and_keeps_its_latents(setup, tmp_path, monkeypatch):
    images = tmp_path / "in"
    images.mkdir()
    for name in ("a", "b"):
        Image.open(setup / "photo.png").save(images / f"{name}.png")
    args = ["batch", str(images), "--out", str(tmp_path / "out"), "--weights", str(setup / "tiny.safetensors"),
            "--preset", "svd", "--size", "128x64", "--frames", "4", "--steps", "2", "--format", "png", "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(VAE, "decode", lambda self, z, n: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA OOM")))
        stopped = CliRunner().invoke(app, args)
    kept = tmp_path / "out" / "a.latents.safetensors"
    assert stopped.exit_code == 1 and stopped.stderr.count("\n") == 1
    assert f"svd decode {kept} --device cpu" in stopped.stderr and "run the same command again" in stopped.stderr
    assert kept.is_file() and not (tmp_path / "out" / "a").exists() and not (tmp_path / "out" / "b").exists()
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.stderr
    assert len(list((tmp_path / "out" / "a").glob("*.png"))) == 4 and (tmp_path / "out" / "b").is_dir()
