"""Finding weights: paths, hub repo ids in the local cache, the preset's repo; and their hashes."""

import hashlib

import pytest

from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.weights import WeightsError, resolve_weights, weights_sha256


def fake_hub_cache(root, repo, files: dict[str, bytes], revision="abc123"):
    """The hub cache layout: blobs named by sha256, snapshot files linking to them, refs/main naming the revision."""
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "blobs").mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(revision)
    snap = base / "snapshots" / revision
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (base / "blobs" / sha).write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(base / "blobs" / sha)
    return snap


def test_repo_id_and_preset_repo_resolve_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    preset = load_preset("svd-xt")
    snap = fake_hub_cache(tmp_path, preset.repo, {"svd_xt.safetensors": b"weights", "README.md": b"hi"})
    assert resolve_weights(preset.repo, preset) == snap / "svd_xt.safetensors"
    assert resolve_weights(None, preset) == snap / "svd_xt.safetensors"
    assert weights_sha256([snap / "svd_xt.safetensors"]) == hashlib.sha256(b"weights").hexdigest()


def test_diffusers_snapshot_resolves_to_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snap = fake_hub_cache(tmp_path, "someone/svd-diffusers", {"model_index.json": b"{}", "unet/config.json": b"{}"})
    assert resolve_weights("someone/svd-diffusers", load_preset("svd")) == snap


def test_missing_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="not downloaded: run `svd download svd-xt`"):
        resolve_weights(None, load_preset("svd-xt"))
    with pytest.raises(WeightsError, match="no such file or folder"):
        resolve_weights("nobody/nothing", load_preset("svd-xt"))


def test_local_file_hash_is_computed_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x" * 1000)
    assert weights_sha256([f]) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert (tmp_path / "cache" / "svd" / "hashes.json").is_file()
    g = tmp_path / "v.safetensors"
    g.write_bytes(b"y")
    combined = weights_sha256([f, g])
    assert len(combined) == 64 and combined != weights_sha256([f])
