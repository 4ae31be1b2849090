"""Presets: the reference defaults, user presets, and one-line errors."""

import pytest

from svdcli.inference.generation import OptionsError, resolve_options
from svdcli.checkpoints.presets import PresetError, builtin_names, load_preset


def test_builtin_presets_hold_the_reference_defaults():
    assert builtin_names() == ["animatelcm-svd-xt", "animatelcm-svd-xt-1.1", "demo", "sv3d-p", "sv3d-u", "sv4d",
                               "sv4d2", "sv4d2-8views", "svd",
                               "svd-image-decoder", "svd-xt", "svd-xt-1.1", "svd-xt-image-decoder"]
    svd, xt, xt11, sv3d = (load_preset(n) for n in ("svd", "svd-xt", "svd-xt-1.1", "sv3d-p"))
    assert (svd.frames, svd.steps, svd.cfg_min, svd.cfg_max, svd.fps_id) == (14, 25, 1.0, 2.5, 6)
    assert (xt.frames, xt.steps, xt.cfg_min, xt.cfg_max) == (25, 30, 1.5, 3.0)
    # every preset decodes as many frames at once as fit (0: auto), not the reference's 14 (issue 33)
    assert all(load_preset(n).decode_chunk == 0 for n in builtin_names())
    assert (xt11.fps_id, xt11.motion_bucket, xt11.single_file) == (6, 127, "svd_xt_1_1.safetensors")
    assert (sv3d.frames, sv3d.steps, sv3d.guidance, sv3d.noise_aug, sv3d.width, sv3d.height) == \
        (21, 50, "triangle", 1e-5, 576, 576)
    assert all(load_preset(n).noise_aug == 0.02 for n in builtin_names() if n.startswith("svd"))
    assert load_preset("svd-xt-image-decoder").architecture == "svd_image_decoder"
    demo = load_preset("demo")  # the built-in demo model: weights inside the package, no hub repo
    assert demo.weights == "package:demo/svd-demo.safetensors" and demo.repo is None


def test_user_preset_by_path_with_base(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: svd-xt\nsteps: 12\nmotion_bucket: 180\n")
    p = load_preset(str(tmp_path / "mine.yaml"))
    assert (p.name, p.steps, p.motion_bucket, p.frames) == ("mine", 12, 180, 25)


def test_user_preset_from_the_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "svd" / "presets").mkdir(parents=True)
    (tmp_path / "svd" / "presets" / "fast.yaml").write_text("base: svd\nsteps: 8\n")
    assert load_preset("fast").steps == 8


@pytest.mark.parametrize("text,match", [
    ("base: svd\nstepz: 3\n", "unknown key 'stepz'"),
    ("base: svd\nsteps: many\n", "'steps' must be int"),
    ("base: svd\ncfg_max: [1, 2]\n", "'cfg_max' must be float"),
    ("base: svd\nwidth: 1000\n", "multiples of 64"),
    ("base: nope\n", "unknown preset 'nope'"),
    ("steps: 3\n", "missing key"),
    ("- a list\n", "mapping"),
    ("a: [unclosed\n", "not valid YAML"),
])
def test_bad_presets_name_the_key(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PresetError, match=match) as e:
        load_preset(str(tmp_path / "bad.yaml"))
    assert "\n" not in str(e.value)


def test_flags_override_presets_and_out_of_range_values_warn():
    p = load_preset("svd-xt")
    o, warnings = resolve_options(p, fps=10, motion=300, size="512x512")
    assert (o.fps, o.fps_id, o.motion_bucket, o.width, o.height, o.frames) == (10, 9, 300, 512, 512, 25)
    assert len(warnings) == 2 and "motion bucket 300" in warnings[0] and "trained size" in warnings[1]
    o, warnings = resolve_options(p, fps_id=40)
    assert o.fps_id == 40 and "fps conditioning 40" in warnings[0]
    for bad in ({"size": "100x64"}, {"size": "wide"}, {"frames": 0}, {"fmt": "avi"}, {"resize": "zoom"}):
        with pytest.raises(OptionsError):
            resolve_options(p, **bad)
