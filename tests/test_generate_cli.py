"""`svd generate` end to end on a tiny checkpoint: files that decode back, metadata, seeds, interruption, and
one-line errors for bad input."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svdcli.checkpoints.saving import save_single_file

from .conftest import tiny_model

FRAMES, SIZE = 4, "128x64"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    save_single_file(tiny_model("svd", seed=4), d / "tiny.safetensors")
    save_single_file(tiny_model("sv3d_u", seed=4), d / "sv3d.safetensors")
    a = np.zeros((90, 160, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, 160)[None]
    a[30:60, 60:100] = 255
    Image.fromarray(a).save(d / "photo.jpg")
    return d


def svd(setup, *args, cwd=None):
    cmd = [sys.executable, "-m", "svdcli", "generate", str(setup / "photo.jpg"), "--weights",
           str(setup / "tiny.safetensors"), "--preset", "svd", "--size", SIZE, "--frames", str(FRAMES), "--steps", "2",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or setup)


def test_mp4_decodes_back_with_frames_size_fps_and_metadata(setup, tmp_path):
    r = svd(setup, "--seed", "7", "--fps", "8", "--out", str(tmp_path / "clip.mp4"), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["output"] == str(tmp_path / "clip.mp4") and result["seed"] == 7 and result["frames"] == FRAMES
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "clip.mp4"))
    meta = next(reader)
    assert meta["size"] == (128, 64) and meta["fps"] == 8.0 and meta["codec"].startswith("h264")
    assert "yuv420p" in meta["pix_fmt"]
    assert sum(1 for _ in reader) == FRAMES
    dump = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "clip.mp4"), "-f",
                           "ffmetadata", "-"], capture_output=True, text=True).stdout
    comment = json.loads(next(line for line in dump.splitlines() if line.startswith("comment="))[8:])
    sidecar = json.loads((tmp_path / "clip.json").read_text())
    sha = hashlib.sha256((setup / "tiny.safetensors").read_bytes()).hexdigest()
    for m in (comment, sidecar):
        assert m["seed"] == 7 and m["preset"] == "svd" and m["architecture"] == "svd"
        assert m["weights_sha256"] == sha and m["svd_version"] and m["settings"]["fps_id"] == 7
    moov, mdat = (open(tmp_path / "clip.mp4", "rb").read().find(tag) for tag in (b"moov", b"mdat"))
    assert 0 < moov < mdat  # +faststart: the index comes first, so browsers play while downloading


def test_gif_webp_and_png_outputs(setup, tmp_path):
    for fmt in ("gif", "webp"):
        r = svd(setup, "--seed", "1", "--format", fmt, "--out", str(tmp_path / f"c.{fmt}"), "--pingpong")
        assert r.returncode == 0, r.stderr
        with Image.open(tmp_path / f"c.{fmt}") as im:
            assert im.size == (128, 64) and im.n_frames == 2 * FRAMES - 2  # ping-pong
            if fmt == "gif":
                assert json.loads(im.info["comment"])["seed"] == 1
        assert json.loads((tmp_path / f"c.json").read_text())["settings"]["format"] == fmt
    r = svd(setup, "--seed", "1", "--format", "png", "--out", str(tmp_path / "frames"))
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert len(pngs) == FRAMES and json.loads(Image.open(pngs[0]).text["svd"])["seed"] == 1
    assert (tmp_path / "frames.json").is_file()


def frames_of(folder):
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_same_seed_same_frames_different_seed_different_frames(setup, tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert svd(setup, "--seed", seed, "--format", "png", "--out", str(tmp_path / name)).returncode == 0
    a, b, c = (frames_of(tmp_path / n) for n in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_default_names_are_numbered_and_nothing_is_overwritten(setup, tmp_path):
    for _ in range(2):
        assert svd(setup, "--seed", "2", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo_0001.json", "photo_0001.mp4", "photo_0002.json",
                                                          "photo_0002.mp4"]
    before = (tmp_path / "photo_0001.mp4").read_bytes()
    r = svd(setup, "--seed", "9", "--out", str(tmp_path / "photo_0001.mp4"))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (tmp_path / "photo_0001.mp4").read_bytes() == before
    assert svd(setup, "--seed", "9", "--out", str(tmp_path / "photo_0001.mp4"), "--overwrite").returncode == 0
    assert (tmp_path / "photo_0001.mp4").read_bytes() != before


def test_interrupted_run_leaves_no_partial_file(setup, tmp_path):
    cmd = [sys.executable, "-m", "svdcli", "generate", str(setup / "photo.jpg"), "--weights",
           str(setup / "tiny.safetensors"), "--preset", "svd", "--size", SIZE, "--frames", str(FRAMES),
           "--steps", "5000", "--out", str(tmp_path / "never.mp4")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert os.listdir(tmp_path) == []


def test_interrupted_write_removes_the_temporary_file(setup, tmp_path, monkeypatch):
    from svdcli.media import outputs

    def half_written(frames, path, *a, **k):
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_mp4", half_written)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_video(np.zeros((2, 64, 64, 3), np.uint8), tmp_path / "x.mp4", "mp4", 7, {})
    assert os.listdir(tmp_path) == []


def test_memory_flags_run_and_are_recorded(setup, tmp_path):
    r = svd(setup, "--seed", "5", "--weights-dtype", "fp8", "--offload", "sequential", "--decode-chunk", "auto",
            "--decode-overlap", "2", "--attention-slice", "512", "--out", str(tmp_path / "m.mp4"))
    assert r.returncode == 0, r.stderr
    assert "--offload sequential has no effect without an accelerator" in r.stderr
    meta = json.loads((tmp_path / "m.json").read_text())
    assert (meta["weights_dtype"], meta["offload"], meta["decode_overlap"]) == ("fp8", "none", 2)
    assert meta["settings"]["decode_chunk"] >= 1


@pytest.mark.parametrize("case", ["missing image", "not an image", "empty image", "size", "format", "preset",
                                  "preset key", "weights", "architecture", "frames", "truncated weights", "resize",
                                  "weights dtype", "offload", "decode chunk", "attention slice",
                                  "one frame", "unreadable end", "end with sv3d", "loop and pingpong",
                                  "loop and end", "overlap", "keyframes", "bidirectional windows"])
def test_bad_input_is_one_line_and_exit_code_2(setup, tmp_path, case):
    (tmp_path / "junk.png").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bad.yaml").write_text("base: svd\nsteps: lots\n")
    data = (setup / "tiny.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    args = {"missing image": ["--weights", str(setup / "tiny.safetensors")],
            "size": ["--size", "100x64"], "format": ["--format", "avi"], "preset": ["--preset", "nope"],
            "preset key": ["--preset", str(tmp_path / "bad.yaml")], "weights": ["--weights", "/no/such/file"],
            "architecture": ["--weights", str(setup / "sv3d.safetensors")], "frames": ["--frames", "0"],
            "truncated weights": ["--weights", str(tmp_path / "cut.safetensors")], "resize": ["--resize", "zoom"],
            "weights dtype": ["--weights-dtype", "int4"], "offload": ["--offload", "disk"],
            "decode chunk": ["--decode-chunk", "lots"], "attention slice": ["--attention-slice", "-3"],
            "not an image": [], "empty image": [], "one frame": ["--frames", "1"],
            "unreadable end": ["--end", str(tmp_path / "junk.png")],
            "end with sv3d": ["--preset", "sv3d-u", "--weights", str(setup / "sv3d.safetensors"), "--end",
                              str(setup / "photo.jpg")],
            "loop and pingpong": ["--loop", "--pingpong"], "loop and end": ["--loop", "--end", str(setup / "photo.jpg")],
            "overlap": ["--frames", "30", "--overlap", "14"], "keyframes": ["--keyframes", "sideways", "--loop"],
            "bidirectional windows": ["--frames", "30", "--loop", "--keyframes", "bidirectional"]}[case]
    image = {"missing image": tmp_path / "nope.png", "not an image": tmp_path / "junk.png",
             "empty image": tmp_path / "empty.png"}.get(case, setup / "photo.jpg")
    cmd = [sys.executable, "-m", "svdcli", "generate", str(image), "--weights", str(setup / "tiny.safetensors"),
           "--preset", "svd", "--size", SIZE, "--frames", "2", "--steps", "1", "--quiet", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, (case, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("svd: error: ") and r.stdout == "", (case, r.stderr)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob("*.partial*"))
