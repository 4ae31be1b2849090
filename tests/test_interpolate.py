"""`svd interpolate` on synthetic clips made here: a textured picture translating, zooming and rotating, and a
textured disc moving over a textured background. Every other frame is dropped, the clip is interpolated x2, and
each reconstructed frame is compared with the dropped original, against plain blending of its neighbours."""

import functools
import json
import math
import subprocess
import sys
from fractions import Fraction

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svdcli.video.interpolate import between, interpolate, pair_flow, resolve_ratio, schedule
from svdcli.video.motion import psnr
from svdcli.media.outputs import write_video

from .synthetic_clips import texture

H, W = 128, 192


@functools.cache
def detailed(seed: int, h: int, w: int) -> np.ndarray:
    """The shared test texture drawn 3x larger and shrunk: detail at every scale, like a photo."""
    return cv2.resize(texture(seed, 3 * h, 3 * w), (w, h), interpolation=cv2.INTER_AREA)


def camera(kind: str, frames: int = 9, seed: int = 0, step: float = 1.0) -> np.ndarray:
    """(T, H, W, 3): a window into a larger picture that translates (5, 2 px per frame), zooms (4% per frame) or
    rotates (3° per frame, about 5 px at the corners)."""
    big = detailed(seed, 2 * H, 2 * W)
    out = []
    for i in range(frames):
        s = i * step
        dx, dy = (5 * s, 2 * s) if kind == "translate" else (0, 0)
        m = cv2.getRotationMatrix2D((W + dx, H + dy), 3.0 * s if kind == "rotate" else 0,
                                    math.exp(0.04 * s) if kind == "zoom" else 1)
        m[:, 2] += (W / 2 - W - dx, H / 2 - H - dy)
        out.append(cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def moving_object(frames: int = 9, seed: int = 0, speed: int = 1) -> np.ndarray:
    """A textured disc 48 px across moving (6, 2)·speed px per frame over a still textured background."""
    background, disc = detailed(seed, H, W), detailed(seed + 1, 48, 48)
    yy, xx = np.mgrid[:48, :48]
    inside = (yy - 23.5) ** 2 + (xx - 23.5) ** 2 <= 23 ** 2
    out = []
    for i in range(frames):
        f = background.copy()
        y, x = 40 + 2 * speed * i, 20 + 6 * speed * i
        f[y:y + 48, x:x + 48][inside] = disc[inside]
        out.append(f)
    return np.stack(out)


def blend(a: np.ndarray, b: np.ndarray, t: float = 0.5) -> np.ndarray:
    return ((1 - t) * a.astype(np.float32) + t * b.astype(np.float32) + 0.5).astype(np.uint8)


CLIPS = {"translate": lambda: camera("translate"), "zoom": lambda: camera("zoom"),
         "rotate": lambda: camera("rotate"), "moving object": moving_object,
         # 24 px between the kept frames, half the disc's size: DIS alone loses it (phase correlation finds it)
         "fast object": lambda: moving_object(frames=7, speed=2)}


@pytest.mark.parametrize("motion", list(CLIPS))
def test_every_reconstructed_frame_beats_blending_by_3_db(motion):
    clip = CLIPS[motion]()  # (9, H, W, 3)
    kept = clip[::2]
    result = interpolate(kept, 6.0, factor=2)
    assert result.frames.shape == clip.shape and result.fps == 12.0
    assert np.array_equal(result.frames[::2], kept)  # the originals, untouched
    ours = [psnr(result.frames[i], clip[i]) for i in range(1, len(clip), 2)]
    blended = [psnr(blend(clip[i - 1], clip[i + 1]), clip[i]) for i in range(1, len(clip), 2)]
    print(f"\n{motion:14s} interpolated {' '.join(f'{p:5.1f}' for p in ours)} dB | blended "
          f"{' '.join(f'{p:5.1f}' for p in blended)} dB")
    for p, q in zip(ours, blended):  # per reconstructed frame, not on average
        assert p >= q  # never below blending
        assert p >= q + 3.0


def test_factors_keep_every_original_and_space_new_frames_evenly():
    clip = camera("translate", frames=4, step=0.5)
    for n in (3, 4, 8):
        out = interpolate(clip, 7.0, factor=n).frames
        assert len(out) == 3 * n + 1 and np.array_equal(out[::n], clip)
    # A frame at t = 1/4 sits where a quarter of the motion has happened: compare with the true picture.
    fine = camera("translate", frames=13, step=0.125)  # positions 0, 1/8, ..., 3/2 of a step
    out = interpolate(fine[::4], 7.0, factor=4).frames
    assert len(out) == len(fine)
    assert min(psnr(out[i], fine[i]) for i in range(len(fine))) > 35


def test_loop_interpolates_from_the_last_frame_back_to_the_first():
    clip = camera("translate", frames=4)  # positions 0, 1, 2, 3
    out = interpolate(clip, 6.0, factor=2, loop=True).frames
    assert len(out) == 2 * len(clip) and np.array_equal(out[::2], clip)
    truth = camera("translate", frames=4, step=0.5)[3]  # halfway from the last frame back to the first: 1.5
    assert psnr(out[-1], truth) > 35 and psnr(out[-1], truth) > psnr(blend(clip[-1], clip[0]), truth) + 3


def test_target_rate_resamples_times_exactly_and_keeps_the_duration():
    plan = schedule(25, resolve_ratio(25, 7.0, None, 24.0), loop=False)  # 7 fps -> exactly 24 fps
    times = [i + t for i, t in plan]
    assert times[0] == 0 and times[-1] <= 24 and 24 - times[-1] < 7 / 24  # ends at the last source frame
    assert all(b - a == Fraction(7, 24) for a, b in zip(times, times[1:]))  # one output frame every 1/24 s
    by_rate, by_factor = (schedule(25, resolve_ratio(25, 6.0, f, r), False) for f, r in ((None, 24.0), (4, None)))
    assert by_rate == by_factor and len(by_factor) == 97  # SVD-XT at 6 fps -> 24 fps: 4 s
    assert len(schedule(25, resolve_ratio(25, 6.0, 4, None), True)) == 100
    clip = camera("zoom", frames=5)
    r = interpolate(clip, 7.0, target_fps=24.0)
    assert r.fps == 24.0 and len(r.frames) == 14 and np.array_equal(r.frames[0], clip[0])
    truth = [camera("zoom", frames=2, step=k * 7 / 24)[1] for k in range(14)]  # the picture at source time k·7/24
    assert min(psnr(f, g) for f, g in zip(r.frames, truth)) > 35


def test_a_cut_is_blended_and_reported():
    a, b = detailed(1, H, W), detailed(2, H, W)
    r = interpolate(np.stack([a, b]), 6.0, factor=2)
    assert r.record["blended_pairs"] == 1 and np.array_equal(r.frames[1], blend(a, b))


def test_threads_do_not_change_the_result():
    clip = moving_object(frames=5)
    one, two = (interpolate(clip, 6.0, factor=3, workers=w).frames for w in (1, 2))
    assert np.array_equal(one, two)


def test_identical_frames_stay_identical():
    a = detailed(3, H, W)
    pf = pair_flow(a, a)
    assert np.array_equal(between(a, a, pf, 0.5), a)


# --- the command -----------------------------------------------------------------------------------------------------

def svd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "svdcli", "interpolate", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_mp4_in_mp4_out_with_rate_frames_and_metadata(tmp_path):
    clip = moving_object(frames=5)
    write_video(clip, tmp_path / "clip.mp4", "mp4", 6, {"svd_version": "0", "seed": 11})
    r = svd(tmp_path / "clip.mp4", "--factor", 4, "--out", tmp_path / "smooth.mp4", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["frames"], result["source_frames"], result["fps"]) == (17, 5, 24.0)
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "smooth.mp4"))
    meta = next(reader)
    assert meta["fps"] == 24.0 and meta["size"] == (W, H) and sum(1 for _ in reader) == 17
    side = json.loads((tmp_path / "smooth.json").read_text())
    assert side["interpolation"]["factor"] == 4 and side["fps_written"] == 24.0 and side["frames_written"] == 17
    assert side["source_metadata"]["seed"] == 11  # what svd knew about the input travels with it


def test_frame_folder_keeps_originals_bit_exact_and_its_recorded_rate(tmp_path):
    clip = camera("rotate", frames=4)
    write_video(clip, tmp_path / "frames", "png", 7, {"svd_version": "0", "fps_written": 7})
    r = svd(tmp_path / "frames", "--fps", 14, "--loop", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["output"]
    assert out.endswith("frames_14fps_0001")  # a numbered name in the current folder, in the input's format
    pngs = sorted((tmp_path / out).glob("*.png"))
    assert len(pngs) == 8
    frames = np.stack([np.asarray(Image.open(p)) for p in pngs])
    assert np.array_equal(frames[::2], clip)
    r = svd(tmp_path / "frames", "--out", tmp_path / "smooth.gif")  # the format follows --out's extension
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "smooth.gif") as im:
        assert im.n_frames == 7 and im.size == (W, H)


@pytest.mark.parametrize("case", ["unreadable video", "one frame", "mixed sizes", "factor 1", "factor and fps",
                                  "fps below the clip's", "exists"])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, case):
    (tmp_path / "junk.mp4").write_text("not a video")
    (tmp_path / "one").mkdir()
    Image.fromarray(detailed(0, 32, 48)).save(tmp_path / "one" / "a.png")
    (tmp_path / "mixed").mkdir()
    Image.fromarray(detailed(0, 32, 48)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(detailed(0, 34, 48)).save(tmp_path / "mixed" / "b.png")
    write_video(camera("zoom", frames=3), tmp_path / "ok.mp4", "mp4", 6, {})
    (tmp_path / "taken.mp4").write_bytes(b"mine")
    args = {"unreadable video": ["junk.mp4"], "one frame": ["one"], "mixed sizes": ["mixed"],
            "factor 1": ["ok.mp4", "--factor", 1], "factor and fps": ["ok.mp4", "--factor", 2, "--fps", 24],
            "fps below the clip's": ["ok.mp4", "--fps", 5], "exists": ["ok.mp4", "--out", "taken.mp4"]}[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = svd(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert (tmp_path / "taken.mp4").read_bytes() == b"mine"


def test_generate_interpolate_writes_the_smooth_clip_and_records_it(tmp_path):
    from svdcli.checkpoints.saving import save_single_file

    from .conftest import tiny_model

    save_single_file(tiny_model("svd", seed=4), tmp_path / "tiny.safetensors")
    Image.fromarray(detailed(5, 90, 160)).save(tmp_path / "photo.png")
    base = [sys.executable, "-m", "svdcli", "generate", str(tmp_path / "photo.png"), "--weights",
            str(tmp_path / "tiny.safetensors"), "--preset", "svd", "--size", "128x64", "--frames", "4", "--steps", "1",
            "--seed", "1", "--fps", "8"]
    r = subprocess.run(base + ["--interpolate", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--interpolate" in r.stderr
    r = subprocess.run(base + ["--interpolate", "3", "--pingpong", "--format", "png", "--out", str(tmp_path / "o"),
                               "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["frames"], json.loads(r.stdout)["fps"]) == (18, 24)  # (4 - 1)·3 + 1, ping-pong
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "o").glob("*.png"))])
    assert len(frames) == 18 and np.array_equal(frames[1:9], frames[:9:-1])  # forward, then back
    meta = json.loads((tmp_path / "o.json").read_text())
    assert meta["settings"]["interpolate"] == 3 and meta["settings"]["fps"] == 8 and meta["fps_written"] == 24
    r = subprocess.run(base + ["--interpolate", "3", "--loop", "--format", "png", "--out", str(tmp_path / "l"),
                               "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 9  # a generated loop: (4 - 1)·3, the repeated first frame left out


def test_batch_interpolates_with_a_per_item_factor(tmp_path):
    from svdcli.checkpoints.saving import save_single_file

    from .conftest import tiny_model

    save_single_file(tiny_model("svd", seed=4), tmp_path / "tiny.safetensors")
    for name in ("a.png", "b.png"):
        Image.fromarray(detailed(len(name) + ord(name[0]), 64, 96)).save(tmp_path / name)
    (tmp_path / "jobs.jsonl").write_text('{"image": "a.png", "interpolate": 3}\n{"image": "b.png"}\n')
    r = subprocess.run([sys.executable, "-m", "svdcli", "batch", str(tmp_path / "jobs.jsonl"), "--out",
                        str(tmp_path / "out"), "--weights", str(tmp_path / "tiny.safetensors"), "--preset", "svd",
                        "--size", "128x64", "--frames", "2", "--steps", "1", "--fps", "6", "--interpolate", "2",
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((tmp_path / "out" / f"{n}.json").read_text()) for n in "ab")
    assert (a["frames_written"], a["fps_written"]) == (4, 18)  # the item's own factor: (2 - 1)·3 + 1 frames
    assert (b["frames_written"], b["fps_written"]) == (3, 12)  # the batch-wide --interpolate 2
