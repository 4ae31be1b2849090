"""AnimateLCM-SVD-xt: a U-Net published alone, run with a base model's VAE and image encoder. Tiny U-Nets written
by the test in each layout it is published in (wangfuyun/AnimateLCM-SVD-xt: diffusers' names, the U-Net alone;
Kijai/AnimateLCM-SVD-Comfy: a whole single-file checkpoint in fp16, and a diffusers unet/ folder) load to identical
tensors; its presets run it with the lcm sampler."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from svdcli.checkpoints.loader import load
from svdcli.checkpoints.safetensors_io import CheckpointError
from svdcli.checkpoints.saving import diffusers_state_dicts, save_diffusers, save_single_file, write_safetensors

from .conftest import tiny_model


@pytest.fixture
def files(tmp_path):
    base, distilled = tiny_model("svd", seed=1), tiny_model("svd", seed=7)
    save_single_file(base, tmp_path / "base.safetensors")
    unet_alone = diffusers_state_dicts(distilled)["unet"]
    write_safetensors(unet_alone, tmp_path / "AnimateLCM-SVD-xt.safetensors", {"format": "pt"})
    save_single_file(distilled, tmp_path / "comfy_fp16.safetensors", dtype=torch.float16)
    write_safetensors(dict(distilled.unet.state_dict()), tmp_path / "bare.safetensors")
    save_diffusers(distilled, tmp_path / "kijai", dtype=torch.float16, variant="fp16")
    return base, distilled, tmp_path


def test_a_unet_alone_loads_in_each_published_layout_to_identical_tensors(files):
    base, distilled, folder = files
    expected = distilled.unet.state_dict()
    for name, half in [("AnimateLCM-SVD-xt.safetensors", False), ("comfy_fp16.safetensors", True),
                       ("bare.safetensors", False), ("kijai/unet", True)]:
        model = load(folder / "base.safetensors", unet=folder / name)
        for key, value in model.unet.state_dict().items():
            want = expected[key].half().float() if half else expected[key]
            assert torch.equal(value, want), (name, key)
        for component in ("vae", "image_encoder"):  # the base model's
            got, want = model.components()[component].state_dict(), base.components()[component].state_dict()
            assert all(torch.equal(got[k], want[k]) for k in want), (name, component)
        assert model.files[-1].name in (name.split("/")[-1], "diffusion_pytorch_model.fp16.safetensors")
        assert model.skipped_tensors > 0  # the base's own U-Net is not read


def test_a_unet_that_does_not_fit_the_base_or_is_not_a_unet_is_one_error(files, tmp_path):
    from dataclasses import replace

    from svdcli.checkpoints.loader import LoadedModel
    from svdcli.models.init import random_init
    from svdcli.models.unet import VideoUNet

    base, _, folder = files
    wider_cfg = replace(base.architecture.unet, model_channels=64)
    wider = LoadedModel(replace(base.architecture, unet=wider_cfg), random_init(VideoUNet(wider_cfg), 0), base.vae,
                        base.image_encoder, "memory", [], ["float32"])
    save_single_file(wider, tmp_path / "wider.safetensors")
    with pytest.raises(CheckpointError, match="wider.safetensors: tensor .* has shape"):
        load(folder / "base.safetensors", unet=tmp_path / "wider.safetensors")
    write_safetensors({"encoder.conv_in.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match="not a video U-Net"):
        load(folder / "base.safetensors", unet=tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match="holds a U-Net alone"):
        load(folder / "AnimateLCM-SVD-xt.safetensors")


def test_the_presets_follow_the_repositorys_app():
    from svdcli.checkpoints.presets import load_preset
    from svdcli.inference.generation import resolve_options

    for name, file in [("animatelcm-svd-xt", "AnimateLCM-SVD-xt.safetensors"),
                       ("animatelcm-svd-xt-1.1", "AnimateLCM-SVD-xt-1.1.safetensors")]:
        preset = load_preset(name)
        assert (preset.repo, preset.single_file, preset.base_model) == ("wangfuyun/AnimateLCM-SVD-xt", file, "svd-xt")
        o, warnings = resolve_options(preset)
        assert (o.sampler, o.steps, o.cfg_min, o.cfg_max, o.motion_bucket, o.fps, o.fps_id, o.frames) == (
            "lcm", 4, 1.0, 1.2, 80, 8, 6, 25) and not warnings
        o, warnings = resolve_options(preset, sampler="euler")
        assert "consistency-distilled" in warnings[0]
        assert resolve_options(preset, fps=10)[0].fps_id == 9  # a chosen rate conditions as it does elsewhere


def svd(*args, env=None):
    return subprocess.run([sys.executable, "-m", "svdcli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_generate_runs_a_user_preset_of_a_unet_alone_with_the_lcm_sampler(files, tmp_path):
    _, _, folder = files
    presets = tmp_path / "config" / "svd" / "presets"
    presets.mkdir(parents=True)
    common = {"width": 64, "height": 64, "frames": 3}
    (presets / "tinybase.yaml").write_text(yaml.safe_dump(
        {"base": "svd-xt", "repo": None, "single_file": None, "weights": str(folder / "base.safetensors"), **common}))
    (presets / "tinylcm.yaml").write_text(yaml.safe_dump(
        {"base": "animatelcm-svd-xt", "repo": None, "single_file": None, "base_model": "tinybase",
         "weights": str(folder / "AnimateLCM-SVD-xt.safetensors"), **common}))
    Image.new("RGB", (64, 64), (30, 160, 90)).save(tmp_path / "g.png")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    r = svd("generate", str(tmp_path / "g.png"), "--preset", "tinylcm", "--no-watermark", "--format", "gif",
            "--out", str(tmp_path / "lcm.gif"), "--json", "--seed", "2", env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["unet_calls"] == 4 * 2  # 4 steps, guidance 1.0 -> 1.2: two halves each
    meta = json.loads((tmp_path / "lcm.json").read_text())
    assert (meta["settings"]["sampler"], meta["settings"]["steps"], meta["settings"]["fps_id"]) == ("lcm", 4, 6)
    r = svd("generate", str(tmp_path / "g.png"), "--preset", "tinylcm", "--cache", "2", "--out",
            str(tmp_path / "c.gif"), "--format", "gif", env=env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--cache 2: not with the lcm sampler" in r.stderr
    r = svd("generate", str(tmp_path / "g.png"), "--preset", "svd-xt", "--weights",
            str(folder / "AnimateLCM-SVD-xt.safetensors"), "--format", "gif", "--size", "64x64", "--frames", "3",
            "--out", str(tmp_path / "d.gif"), "--quiet", env=env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "holds a U-Net alone" in r.stderr
    assert not any((tmp_path / n).exists() for n in ("c.gif", "d.gif"))
