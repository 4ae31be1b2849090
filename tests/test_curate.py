"""Curation and evaluation on synthetic clips made by the tests: camera labels, cuts, fades, filters."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from svdcli.video.motion import clip_motion, find_cuts
from svdcli.media.outputs import write_mp4
from svdcli.demo.procedural import Motion, render, scene

from .synthetic_clips import camera_clip, fade

KINDS = ["static", "pan-left", "pan-right", "tilt-up", "tilt-down", "zoom-in", "zoom-out", "roll"]


def test_camera_labels_on_synthetic_clips():
    results = [(k, clip_motion(camera_clip(k, seed=seed, speed=speed), 12.0).label)
               for k in KINDS for seed in (10, 11) for speed in (0.7, 1.6)]
    correct = sum(k == label for k, label in results)
    assert correct / len(results) >= 0.95, [r for r in results if r[0] != r[1]]


def test_every_cut_and_fade_is_found():
    a, b, c, d = (camera_clip(k, seed=s) for k, s in (("pan-right", 1), ("zoom-in", 2), ("static", 3), ("roll", 5)))
    cuts = find_cuts(np.concatenate([a, b, d]), 12.0)
    assert [(x.kind, x.start) for x in cuts] == [("cut", 24), ("cut", 48)]
    faded = find_cuts(fade(a, c, 10), 12.0)  # dissolve frames 24..33
    assert len(faded) == 1 and faded[0].kind == "dissolve" and abs(faded[0].start - 24) <= 1 and \
        abs(faded[0].end - 34) <= 1
    both = find_cuts(np.concatenate([fade(a, c, 8), d]), 12.0)  # a dissolve, then an abrupt cut at 56
    assert [x.kind for x in both] == ["dissolve", "cut"] and both[1].start == 56


@pytest.mark.parametrize("kind", ["pan-right", "pan-left", "tilt-down", "zoom-in", "zoom-out", "roll", "static"])
def test_no_false_cut_in_smooth_motion(kind):
    assert find_cuts(camera_clip(kind, frames=60, seed=4, speed=2.0), 12.0) == []


def test_zoom_into_soft_texture_is_not_a_fade():
    # Over a few frames a zoom into a blurry noise field changes a thumbnail almost linearly, as a dissolve does;
    # the fade test once cut a third of such clips short at frame 13 of 20.
    rng = np.random.default_rng(4)
    for seed in range(6):
        background = scene(np.random.default_rng(seed), 256, 384, "noise")
        frames = render(background, Motion("zoom-in", 0.2, 0, "noise"), 20, 7.0, (128, 192), rng)
        assert find_cuts(frames, 7.0) == [], seed


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_mp4(camera_clip("pan-right", seed=20), root / "pan.mp4", 12, {})
    write_mp4(np.concatenate([camera_clip("zoom-in", seed=21), camera_clip("tilt-up", seed=22)]), root / "cut.mp4",
              12, {})
    write_mp4(camera_clip("static", seed=23), root / "still.mp4", 12, {})
    (root / "frames").mkdir()
    for i, f in enumerate(camera_clip("pan-left", seed=24)):
        Image.fromarray(f).save(root / "frames" / f"{i:03d}.png")
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


def test_curate_splits_labels_and_filters(clips, tmp_path):
    r = subprocess.run([sys.executable, "-m", "svdcli", "curate", str(clips), "--out", str(tmp_path / "m.jsonl"),
                        "--json", "--static-quantile", "0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "broken.mp4" in r.stderr and "Traceback" not in r.stderr  # reported and skipped
    records = {x["clip"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert set(records) == {"pan.mp4#0", "cut.mp4#0", "cut.mp4#1", "still.mp4#0", "frames#0"}
    assert records["cut.mp4#0"]["end"] == 24 and records["cut.mp4#1"]["start"] == 24
    labels = {k: v["label"] for k, v in records.items()}
    assert labels == {"pan.mp4#0": "pan-right", "cut.mp4#0": "zoom-in", "cut.mp4#1": "tilt-up",
                      "still.mp4#0": "static", "frames#0": "pan-left"}
    assert not records["still.mp4#0"]["kept"] and "static" in records["still.mp4#0"]["dropped"]
    assert all(v["kept"] for k, v in records.items() if k != "still.mp4#0")
    assert (tmp_path / "m.jsonl").read_text().count("\n") == 5


def test_eval_reports_fidelity_and_camera(clips, tmp_path):
    first = camera_clip("pan-right", seed=20)[0]
    Image.fromarray(first).save(tmp_path / "input.png")
    r = subprocess.run([sys.executable, "-m", "svdcli", "eval", str(clips / "pan.mp4"), "--image",
                        str(tmp_path / "input.png"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["camera"] == "pan-right" and m["frames"] == 24 and m["first_frame_psnr"] > 30
    assert m["first_frame_ssim"] > 0.9 and m["consistency_ssim"] > 0.3 and m["motion"] > 0.05
    r = subprocess.run([sys.executable, "-m", "svdcli", "eval", str(clips / "broken.mp4")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
