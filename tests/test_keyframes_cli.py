"""`svd generate --end`, `--loop`, `--pingpong` and `--frames` beyond the preset's length, end to end on a tiny
checkpoint (a preset file with 4-frame windows), and `svd batch` with an `end` column."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from svdcli.checkpoints.saving import save_single_file

from .conftest import tiny_model

WINDOW = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("keyframes")
    save_single_file(tiny_model("svd", seed=4), d / "tiny.safetensors")
    (d / "short.yaml").write_text(f"base: svd\nframes: {WINDOW}\nsteps: 2\nwidth: 128\nheight: 64\n")
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(d / "start.png")
    Image.fromarray(g.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(d / "end.png")  # another size
    return d


def svd(setup, *args, command="generate", source="start.png"):
    cmd = [sys.executable, "-m", "svdcli", command, str(setup / source), "--weights", str(setup / "tiny.safetensors"),
           "--preset", str(setup / "short.yaml"), "--format", "png", "--no-watermark", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=setup)


def frames_of(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), np.float32) for p in sorted(folder.glob("*.png"))])


def test_end_goes_to_an_image_of_another_size_fitted_like_the_start(setup, tmp_path):
    r = svd(setup, "--end", str(setup / "end.png"), "--seed", "3", "--out", str(tmp_path / "clip"))
    assert r.returncode == 0, r.stderr
    frames = frames_of(tmp_path / "clip")
    assert frames.shape == (WINDOW, 64, 128, 3)
    meta = json.loads((tmp_path / "clip.json").read_text())
    settings = meta["settings"]
    assert settings["end"] == str(setup / "end.png") and settings["keyframes"] == "fusion"
    assert (settings["window"], settings["loop"], settings["pingpong"]) == (WINDOW, False, False)
    plain = svd(setup, "--seed", "3", "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    assert np.abs(frames[-1] - frames_of(tmp_path / "plain")[-1]).mean() > 1  # the end changed the clip


def test_loop_is_written_without_its_repeated_last_frame_and_pingpong_is_unchanged(setup, tmp_path):
    r = svd(setup, "--loop", "--seed", "2", "--out", str(tmp_path / "loop"))
    assert r.returncode == 0, r.stderr
    assert len(frames_of(tmp_path / "loop")) == WINDOW - 1
    meta = json.loads((tmp_path / "loop.json").read_text())
    assert meta["settings"]["loop"] and meta["frames_written"] == WINDOW - 1
    r = svd(setup, "--pingpong", "--seed", "2", "--out", str(tmp_path / "pp"))
    assert r.returncode == 0, r.stderr
    plain = svd(setup, "--seed", "2", "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    forward = frames_of(tmp_path / "plain")
    assert np.array_equal(frames_of(tmp_path / "pp"), np.concatenate([forward, forward[-2:0:-1]]))


def test_frames_beyond_the_window_are_sampled_in_windows_with_progress_over_the_clip(setup, tmp_path):
    r = svd(setup, "--frames", "10", "--overlap", "2", "--seed", "1", "--out", str(tmp_path / "long"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 10 and len(frames_of(tmp_path / "long")) == 10
    meta = json.loads((tmp_path / "long.json").read_text())
    assert (meta["settings"]["window"], meta["settings"]["overlap"]) == (WINDOW, 2)
    assert meta["decode"]["chunk"] <= WINDOW  # decoded a window at a time at most
    r = svd(setup, "--frames", "10", "--end", str(setup / "end.png"), "--seed", "1", "--out", str(tmp_path / "to"))
    assert r.returncode == 0, r.stderr
    r = svd(setup, "--frames", "10", "--loop", "--seed", "1", "--out", str(tmp_path / "round"))
    assert r.returncode == 0, r.stderr
    assert len(frames_of(tmp_path / "round")) == 9


def test_batch_end_column(setup, tmp_path):
    (setup / "again.png").write_bytes((setup / "start.png").read_bytes())
    (setup / "jobs.csv").write_text("image,end,loop\nstart.png,end.png,\nagain.png,,true\n")
    r = svd(setup, "--out", str(tmp_path / "out"), "--seed", "4", command="batch", source="jobs.csv")
    assert r.returncode == 0, r.stderr
    sidecars = sorted((tmp_path / "out").glob("*.json"))
    settings = [json.loads(p.read_text())["settings"] for p in sidecars]
    assert sorted((s["end"] or "", s["loop"]) for s in settings) == [("", True), (str(setup / "end.png"), False)]
