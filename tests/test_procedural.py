"""Procedural clips (the demo model's training data): known motion that curate's flow code measures back."""

import numpy as np
from PIL import Image

from svdcli.video.motion import clip_motion
from svdcli.demo.procedural import BASE_CAMERAS, SCENES, ZOOM_CAMERAS, Motion, random_clip, render, scene


def test_curate_measures_the_known_camera_motion():
    wrong = []
    for seed in range(40):
        frames, m = random_clip(seed, 14, 7, (128, 192), cameras=BASE_CAMERAS + ZOOM_CAMERAS)
        assert frames.shape == (14, 128, 192, 3) and frames.dtype == np.uint8
        label = clip_motion(frames, 7).label
        if label != m.camera:
            wrong.append((seed, m, label))
    assert len(wrong) <= 2, wrong  # ≥ 95 %


def test_speed_orders_the_motion_score_and_base_clips_never_zoom():
    rng = np.random.default_rng(0)
    background = scene(rng, 256, 384, "noise")
    scores = [clip_motion(render(background, Motion("pan-right", s, 0, "noise"), 14, 7, (128, 192),
                                 np.random.default_rng(1)), 7).score for s in (0.04, 0.08, 0.16)]
    assert scores[0] < scores[1] < scores[2]
    assert abs(scores[1] / 0.08 - 1) < 0.3  # the score is in the speed's own unit (width per second)
    cameras = {random_clip(seed, 2, 7, (64, 64))[1].camera for seed in range(60)}
    assert cameras == set(BASE_CAMERAS)


def test_clips_are_deterministic_and_use_given_images(tmp_path):
    a, ma = random_clip(5, 6, 7, (64, 96))
    b, mb = random_clip(5, 6, 7, (64, 96))
    assert ma == mb and np.array_equal(a, b)
    assert {random_clip(s, 2, 7, (64, 64))[1].scene for s in range(40)} == set(SCENES)
    photo = tmp_path / "p.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(photo)
    kinds = {random_clip(s, 2, 7, (64, 64), images=[photo])[1].scene for s in range(20)}
    assert "image" in kinds
