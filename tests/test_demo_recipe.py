"""The demo model's recipe (python -m svdcli.demo.recipe) end to end at smoke scale: every stage runs, the files it
writes are what recipe.json records and load as the demo architecture, and a second run that resumes the video model
from the first run's checkpoint writes the same bytes (docs/demo-model.md: the shipped files were made that way)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from svdcli.demo.recipe import ARCH, Recipe, RecipeError, build, rebuild_zoom_lora, sha256
from svdcli.checkpoints.loader import load
from svdcli.inference.lora import apply_loras, read_lora

SMOKE = Recipe().scaled(0.004)  # 6 autoencoder steps, 2 + 8 clips, 20 video-model steps, 4 LoRA steps


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    return out, build(SMOKE, out)


def test_every_stage_runs_and_records_its_files(built):
    out, report = built
    recorded = json.loads((out / "recipe.json").read_text())
    assert recorded["device"] == "cpu" and recorded["recipe"]["unet_steps"] == SMOKE.unet_steps
    assert recorded["unet"]["resumed_from"] is None
    for name in ("svd-demo.safetensors", "demo-zoom.safetensors"):
        assert recorded["files"][name]["sha256"] == sha256(out / name)
        assert recorded["files"][name]["bytes"] == (out / name).stat().st_size
    assert report["lora"]["data"]["windows"] >= 1


def test_the_files_load_as_the_demo_architecture(built):
    out, _ = built
    model = load(out / "svd-demo.safetensors", device="cpu", dtype=torch.float32, architecture="svd")
    assert model.architecture.unet == ARCH.unet and model.architecture.vae == ARCH.vae
    assert all(p.dtype == torch.float32 for p in model.unet.parameters())
    lora = read_lora(out / "demo-zoom.safetensors", model.architecture, "demo")
    assert lora.rank == SMOKE.lora_rank and lora.meta["motion"] == "zoom"
    # written at the recipe's strength: a plain --lora demo-zoom applies it at 1.5× what it was trained at
    assert lora.alpha == SMOKE.lora_strength * SMOKE.lora_rank == 24.0
    # LoCon (SMOKE.lora_targets): attention, feed-forward and convolution pairs, spatial and temporal, in fp16
    assert any(".time_stack.0.attn1" in k for k in lora.pairs) and any(".transformer_blocks.0.ff" in k
                                                                         for k in lora.pairs)
    assert any(a.dim() == 4 for a, _ in lora.pairs.values()) and any(a.dim() == 5 for a, _ in lora.pairs.values())
    from safetensors import safe_open

    with safe_open(out / "demo-zoom.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    apply_loras(model.unet, model.architecture, [str(out / "demo-zoom.safetensors")], "demo")


def test_a_resumed_run_writes_the_same_bytes(built, tmp_path):
    out, first = built
    shutil.copytree(out / "unet-train", tmp_path / "unet-train")  # as if this run had stopped after that stage
    second = build(SMOKE, tmp_path)
    assert second["unet"]["resumed_from"] is not None
    assert second["files"] == first["files"]


def test_the_lora_stage_alone_on_the_base_writes_the_whole_runs_lora(built, tmp_path):
    out, first = built
    again = rebuild_zoom_lora(SMOKE, out / "svd-demo.safetensors", tmp_path / "lora", torch.device("cpu"))
    assert again["files"] == first["files"] and again["lora_stage_only"]["base_sha256"] == first["files"][
        "svd-demo.safetensors"]["sha256"]
    assert again["vae"] == first["vae"] and again["unet"] == first["unet"]  # stages 1-3: the earlier run's record
    assert json.loads((tmp_path / "lora" / "recipe.json").read_text())["files"] == first["files"]
    # Refused: a base its recipe.json does not record, or one made with other stage 1-3 settings.
    (tmp_path / "other").mkdir()
    shutil.copyfile(out / "recipe.json", tmp_path / "other" / "recipe.json")
    (tmp_path / "other" / "svd-demo.safetensors").write_bytes(b"not the base")
    with pytest.raises(RecipeError, match="not the svd-demo.safetensors its recipe.json records"):
        rebuild_zoom_lora(SMOKE, tmp_path / "other" / "svd-demo.safetensors", tmp_path / "x", torch.device("cpu"))
    from dataclasses import replace

    with pytest.raises(RecipeError, match="other settings for stages 1-3: unet_steps"):
        rebuild_zoom_lora(replace(SMOKE, unet_steps=21), out / "svd-demo.safetensors", tmp_path / "x",
                          torch.device("cpu"))
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_that_is_not_there_is_a_usage_error_not_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "svdcli.demo.recipe", "--out", str(tmp_path / "x"), "--device", "cuda"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("device cuda: no CUDA device is available")
    assert not (tmp_path / "x").exists()


def test_the_lora_stage_conditions_on_the_recipes_bucket_and_the_video_model_on_each_clips(built):
    from svdcli.checkpoints.safetensors_io import SafetensorsFile
    from svdcli.training.trainer import TRAIN_KEY

    out, _ = built

    def bucket(work):
        newest = sorted((out / work / "checkpoints").glob("step-*.safetensors"))[-1]
        return json.loads(SafetensorsFile(newest).metadata[TRAIN_KEY])["fingerprint"]["motion_bucket"]

    assert bucket("zoom-train") == SMOKE.lora_motion_bucket == 40
    assert bucket("unet-train") is None
