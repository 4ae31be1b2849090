"""`svd download` and `svd models` against a stand-in hub served on 127.0.0.1 by the test itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import resolve_weights

from .hub_server import COMMIT, Hub

REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
TOKEN = "hf_secretTOKEN_do_not_leak_123"


def files() -> dict[str, bytes]:
    rnd = lambda n, k: bytes((i * 31 + k) % 251 for i in range(n))  # noqa: E731
    f = {"svd_xt.safetensors": rnd(5000, 1), "svd_xt_image_decoder.safetensors": rnd(4000, 2),
         "LICENSE.md": b"STABILITY AI COMMUNITY LICENSE AGREEMENT\n", "README.md": b"# card\n",
         "model_index.json": b'{"_class_name": "StableVideoDiffusionPipeline"}',
         "feature_extractor/preprocessor_config.json": b"{}", "scheduler/scheduler_config.json": b"{}"}
    for i, stem in enumerate(("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "image_encoder/model")):
        f[stem + ".safetensors"] = rnd(3000, 10 + i)
        f[stem + ".fp16.safetensors"] = rnd(1500, 20 + i)
        f[stem.split("/")[0] + "/config.json"] = b"{}"
    return f


@pytest.fixture
def hub(monkeypatch):
    h = Hub({REPO: files()})
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield h
    h.close()


def svd(*args, env=None):
    return subprocess.run([sys.executable, "-m", "svdcli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_default_download_is_the_fp16_diffusers_set_and_verifies(hub):
    r = svd("download", "svd-xt", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    names = {Path(f).relative_to(out["path"]).as_posix() for f in out["files"]}
    assert names == {"model_index.json", "unet/config.json", "vae/config.json", "image_encoder/config.json",
                     "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
                     "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
                     "image_encoder/model.fp16.safetensors", "LICENSE.md"}
    served = files()
    assert all((Path(out["path"]) / n).read_bytes() == served[n] for n in names)
    assert out["revision"] == COMMIT and out["licence"] == "svd-community"
    # svd generate and svd models find it by themselves
    assert resolve_weights(None, load_preset("svd-xt")) == Path(out["path"])
    models = {m["preset"]: m for m in map(json.loads, svd("models", "--json").stdout.splitlines())}
    assert models["svd-xt"]["downloaded"] and models["svd-xt"]["revision"] == COMMIT
    assert models["svd-xt"]["bytes"] == sum(len(served[n]) for n in names)
    assert not models["svd"]["downloaded"] and not models["svd-xt-image-decoder"]["downloaded"]


def test_single_layout_and_image_decoder_presets(hub):
    r = svd("download", "svd-xt", "--layout", "single", "--json")
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["path"]).name == "svd_xt.safetensors"
    r = svd("download", "svd-xt-image-decoder", "--json")  # the repo's diffusers folders are not this model
    assert Path(json.loads(r.stdout)["path"]).name == "svd_xt_image_decoder.safetensors"
    assert svd("download", "svd-xt-image-decoder", "--layout", "diffusers").returncode == 2


def test_connection_dropped_mid_file_resumes(hub):
    # Larger than huggingface_hub's 10 MB read chunk, so part of the file is on disk when the connection drops.
    big = bytes(range(256)) * (24 * 4096)
    hub.repos[REPO]["svd_xt.safetensors"] = big
    hub.drop_once = {"svd_xt.safetensors"}
    r = svd("download", "svd-xt", "--layout", "single", "--json")
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["path"]).read_bytes() == big
    assert any(x.startswith("svd_xt.safetensors:bytes=") for x in hub.range_requests)  # resumed, not restarted


def test_corrupted_file_is_detected_and_fetched_again(hub):
    path = Path(json.loads(svd("download", "svd-xt", "--layout", "single", "--json").stdout)["path"])
    blob = path.resolve()
    blob.write_bytes(b"\0" * blob.stat().st_size)  # same size, wrong content
    r = svd("download", "svd-xt", "--layout", "single", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["refetched"] == ["svd_xt.safetensors"]
    assert path.read_bytes() == files()["svd_xt.safetensors"]


def test_gated_repo_gives_one_line_with_the_licence_url(hub):
    hub.gated = {REPO}
    r = svd("download", "svd-xt")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gated" in lines[0] and f"{hub.url}/{REPO}" in lines[0]


def test_token_is_used_but_never_printed_or_written(hub, tmp_path):
    r = svd("download", "svd-xt", "--dir", str(tmp_path / "plain"), env={"HF_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    assert f"Bearer {TOKEN}" in hub.authorizations
    assert TOKEN not in r.stdout + r.stderr
    hub.gated = {REPO}
    r = svd("download", "svd-xt", "--token", TOKEN)
    assert r.returncode == 2 and TOKEN not in r.stdout + r.stderr
    roots = [tmp_path, Path(os.environ["HF_HUB_CACHE"]), Path(os.environ["XDG_CACHE_HOME"])]
    for root in roots:
        for f in root.rglob("*") if root.exists() else []:
            if f.is_file():
                assert TOKEN.encode() not in f.read_bytes(), f
    record = json.loads((tmp_path / "plain" / ".svd-download.json").read_text())
    assert record["revision"] == COMMIT and (tmp_path / "plain" / "LICENSE.md").is_file()


def test_licence_notice_is_printed_once(hub):
    first, second = svd("download", "svd-xt", "--layout", "single"), svd("download", "svd-xt", "--layout", "single")
    assert "licence: svd-community" in first.stderr and "revenue" in first.stderr
    assert "licence:" not in second.stderr


def test_missing_model_names_the_download_command(hub, tmp_path):
    (tmp_path / "p.png").write_bytes(b"")
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    r = svd("generate", str(tmp_path / "p.png"), "--preset", "svd-xt-1.1")
    assert r.returncode == 2 and "run `svd download svd-xt-1.1`" in r.stderr


def test_sv4d_fetches_the_sv3d_model_it_runs_with(hub, tmp_path):
    hub.repos["stabilityai/sv4d"] = {"sv4d.safetensors": bytes(range(200)), "LICENSE.md": b"licence\n"}
    hub.repos["stabilityai/sv3d"] = {"sv3d_u.safetensors": bytes(range(150)), "sv3d_p.safetensors": b"p" * 90}
    r = svd("download", "sv4d", "--json")
    assert r.returncode == 0, r.stderr
    assert [Path(json.loads(line)["path"]).name for line in r.stdout.splitlines()] == ["sv4d.safetensors",
                                                                                       "sv3d_u.safetensors"]
    assert "sv4d runs with sv3d-u: fetching it too" in svd("download", "sv4d").stderr
    r = svd("download", "sv4d", "--dir", str(tmp_path / "models"), "--json")  # each in a folder of its own
    assert [json.loads(line)["path"] for line in r.stdout.splitlines()] == [
        str(tmp_path / "models" / "sv4d.safetensors"), str(tmp_path / "models" / "sv3d-u" / "sv3d_u.safetensors")]


def test_animatelcm_fetches_its_unet_and_the_model_whose_vae_and_encoder_it_runs_with(hub, tmp_path):
    hub.repos["wangfuyun/AnimateLCM-SVD-xt"] = {"AnimateLCM-SVD-xt.safetensors": bytes(range(220)),
                                                "AnimateLCM-SVD-xt-1.1.safetensors": bytes(range(230)),
                                                "README.md": b"# card\n"}
    r = svd("download", "animatelcm-svd-xt-1.1", "--json")
    assert r.returncode == 0, r.stderr
    paths = [Path(json.loads(line)["path"]) for line in r.stdout.splitlines()]
    assert paths[0].name == "AnimateLCM-SVD-xt-1.1.safetensors" and (paths[1] / "model_index.json").is_file()
    assert "animatelcm-svd-xt-1.1 runs with svd-xt: fetching it too" in svd("download", "animatelcm-svd-xt-1.1").stderr
    assert resolve_weights(None, load_preset("animatelcm-svd-xt-1.1")) == paths[0]


def test_animatelcm_without_its_base_model_names_the_download(hub, tmp_path, monkeypatch):
    hub.repos["wangfuyun/AnimateLCM-SVD-xt"] = {"AnimateLCM-SVD-xt.safetensors": bytes(range(220))}
    assert svd("download", "wangfuyun/AnimateLCM-SVD-xt").returncode == 0  # the U-Net alone
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    r = svd("generate", str(tmp_path / "p.png"), "--preset", "animatelcm-svd-xt")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "runs with the VAE and image encoder of svd-xt" in r.stderr
    assert "run `svd download animatelcm-svd-xt`" in r.stderr
