"""`svd multiview`: SV3D camera conditioning as the reference computes it, object preprocessing, camera poses for 3D
tools, one-line errors, and a tiny SV3D checkpoint end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from svdcli.cli import app
from svdcli.inference.generation import resolve_options
from svdcli.media.images import ImageError
from svdcli.inference.multiview import (Camera, OrbitError, camera_to_world, make_orbit, prepare_object, transforms,
                              view_names, write_orbit)
from svdcli.inference.pipeline import SamplingSettings, conditioning_vector
from svdcli.checkpoints.presets import load_preset
from svdcli.checkpoints.saving import save_single_file
from svdcli.checkpoints.architectures import ARCHITECTURES

from .conftest import tiny_model

FIXTURES = Path(__file__).parent / "fixtures"


def sinusoid(x: float, width: int) -> np.ndarray:
    """The reference's scalar embedding: cos then sin of x·10000^(-k/half), k < half, in float64."""
    half = width // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / half)
    return np.concatenate([np.cos(x * freqs), np.sin(x * freqs)])


def reference_vector(elevations_deg, azimuths_deg) -> np.ndarray:
    """§6.2: y[t] = [emb256(1e-5) | emb512(deg2rad(90 - e_t)) | emb512(deg2rad((a_t - a_last) mod 360))]."""
    az = np.asarray(azimuths_deg, dtype=np.float64)
    return np.stack([np.concatenate([sinusoid(1e-5, 256), sinusoid(np.deg2rad(90 - e), 512),
                                     sinusoid(np.deg2rad((a - az[-1]) % 360), 512)])
                     for e, a in zip(elevations_deg, az)])


def vector(arch: str, orbit=None) -> np.ndarray:
    s = SamplingSettings(frames=21, noise_aug=1e-5, polars_rad=orbit and orbit.polars_rad,
                         azimuths_rad=orbit and orbit.azimuths_rad)
    return conditioning_vector(SimpleNamespace(architecture=ARCHITECTURES[arch]), s).double().numpy()


def test_default_orbit_is_the_references_and_so_is_its_vector():
    orbit = make_orbit(21, conditioned=True)
    # §6.2: 10° elevation -> polar 80° = 1.3963 rad; azimuths 17.14°, 34.29°, ..., 342.86°, then 0° (input view).
    assert all(abs(p - 1.3963) < 5e-5 for p in orbit.polars_rad)
    assert [round(a, 2) for a in orbit.azimuths_deg[:2]] == [17.14, 34.29]
    assert round(orbit.azimuths_deg[19], 2) == 342.86 and orbit.azimuths_deg[20] == 0.0
    reference_az = np.linspace(0, 360, 22)[1:] % 360  # the reference's own construction
    y = vector("sv3d_p", orbit)
    assert y.shape == (21, 1280)
    np.testing.assert_allclose(y, reference_vector([10.0] * 21, reference_az), atol=2e-6)


def test_custom_trajectory_vector_follows_the_formulas():
    az = np.linspace(0, 360, 22)[:-1] + 5.5  # 5.5 ... 348.4, increasing
    el = np.linspace(-5, 30, 21)
    orbit = make_orbit(21, True, elevations=",".join(f"{e:g}" for e in el),
                       azimuths=" ".join(repr(float(a)) for a in az))
    assert orbit.azimuths_deg[-1] == 0.0 and orbit.kind == "custom"
    np.testing.assert_allclose(orbit.azimuths_deg, (az - az[-1]) % 360, atol=1e-9)  # re-referenced to the input view
    np.testing.assert_allclose(vector("sv3d_p", orbit), reference_vector(el, az), atol=2e-6)
    # The options carry the camera to the sampler (and into the metadata).
    o, _ = resolve_options(load_preset("sv3d-p"))
    s = orbit.condition(o).sampling()
    assert s.polars_rad == orbit.polars_rad and s.azimuths_rad == orbit.azimuths_rad
    assert (s.frames, s.steps, s.guidance, s.cfg_min, s.cfg_max, s.noise_aug) == (21, 50, "triangle", 1.0, 2.5, 1e-5)


def test_dynamic_orbit_wobbles_smoothly_and_ends_at_the_input_elevation():
    turn, dynamic = make_orbit(21, True, elevation=5), make_orbit(21, True, elevation=5, orbit="dynamic")
    assert dynamic.azimuths_deg == turn.azimuths_deg and set(turn.elevations_deg) == {5.0}
    el = np.array(dynamic.elevations_deg)
    assert el[-1] == pytest.approx(5.0) and el.max() > 12 and el.min() < -2 and np.all(np.abs(el - 5) <= 10 + 1e-9)
    assert np.abs(np.diff(np.r_[el, el[0]])).max() < 6  # smooth, including around the loop


def test_vector_widths_match_the_checkpoints():
    widths = {}
    for arch in ("sv3d_u", "sv3d_p"):
        keys = json.loads((FIXTURES / f"{arch}.json").read_text())
        widths[arch] = keys["model.diffusion_model.label_emb.0.0.weight"][1]  # what the U-Net's label_emb takes
        assert vector(arch, make_orbit(21, arch == "sv3d_p")).shape == (21, widths[arch])
    assert widths == {"sv3d_u": 256, "sv3d_p": 1280}
    np.testing.assert_allclose(vector("sv3d_u")[0], sinusoid(1e-5, 256), atol=1e-7)  # SV3D_u: noise level only


@pytest.mark.parametrize("kwargs, message", [
    ({"azimuths": "0, 90, 180"}, "21 values needed"),
    ({"azimuths": ",".join(["10"] * 21)}, "must increase"),
    ({"azimuths": ",".join(str(17.2 * i) for i in range(1, 22))}, "361.2 is outside [0, 360)"),
    ({"azimuths": "north"}, "expected numbers"),
    ({"elevation": 90.0}, "outside (-90, 90)"),
    ({"elevations": "10, 20"}, "21 values needed"),
    ({"elevation": 85.0, "orbit": "dynamic"}, "--orbit dynamic"),
    ({"elevation": 5.0, "elevations": ",".join(["5"] * 21)}, "give one"),
    ({"azimuths": ",".join(str(17 * i) for i in range(21)), "orbit": "turn"}, "give one"),
    ({"orbit": "spiral"}, "choose one of turn, dynamic"),
    ({"orbit": "dynamic", "elevations": ",".join(["5"] * 21)}, "makes its own elevations"),
])
def test_bad_camera_settings_are_one_line(kwargs, message):
    with pytest.raises(OrbitError) as e:
        make_orbit(21, True, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OrbitError, match="sv3d_u takes no camera input"):
        make_orbit(21, False, **kwargs)


def non_white_box(im: Image.Image) -> tuple[float, float, int, int]:
    """Centre x, centre y, width, height of the pixels that are not (nearly) white."""
    a = np.asarray(im).astype(int)
    ys, xs = np.nonzero((255 - a).max(-1) > 40)
    return (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2, xs.max() + 1 - xs.min(), \
        ys.max() + 1 - ys.min()


def test_rgba_object_is_centred_at_the_requested_ratio(tmp_path):
    a = np.zeros((200, 300, 4), np.uint8)  # transparent, with an off-centre 60x100 object
    a[10:110, 20:80] = (180, 40, 40, 255)
    Image.fromarray(a).save(tmp_path / "cut.png")
    for ratio in (0.6, 0.9):
        out = prepare_object(tmp_path / "cut.png", 576, ratio)
        assert out.size == (576, 576) and out.mode == "RGB"
        cx, cy, w, h = non_white_box(out)
        assert abs(cx - 288) <= 2 and abs(cy - 288) <= 2
        assert abs(h - ratio * 576) <= 3 and abs(w - 0.6 * h) <= 3  # longer side at the ratio, aspect kept
        assert np.asarray(out)[0, 0].tolist() == [255, 255, 255]  # composited on white


def test_rgb_on_uniform_background_is_keyed_and_centred(tmp_path):
    rng = np.random.default_rng(0)
    a = np.clip(rng.normal(150, 3, (160, 240, 3)), 0, 255).astype(np.uint8)  # grey, slightly noisy (a photo)
    a[90:150, 150:190] = (30, 60, 200)  # a 40x60 object near the corner...
    a[110:130, 160:180] = 150  # ...with a grey part in the middle, which is the object's, not background
    Image.fromarray(a).save(tmp_path / "photo.png")
    out = prepare_object(tmp_path / "photo.png", 256, 0.5)
    cx, cy, w, h = non_white_box(out)
    assert abs(cx - 128) <= 2 and abs(cy - 128) <= 2 and abs(h - 128) <= 3 and abs(w - 85) <= 3
    px = np.asarray(out).astype(int)
    assert np.abs(px[128, 128] - 150).max() <= 8  # the enclosed grey stays (not keyed out to white)
    assert (px[:40] == 255).all()  # the background became white

    busy = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(busy).save(tmp_path / "busy.jpg")
    with pytest.raises(ImageError, match="RGBA cut-out") as e:
        prepare_object(tmp_path / "busy.jpg", 256, 0.5)
    assert "\n" not in str(e.value)
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="alpha channel is empty"):
        prepare_object(tmp_path / "empty.png", 256, 0.5)


def project(pose: np.ndarray, point, focal: float, c: float) -> tuple[float, float]:
    """A world point to pixel (x right, y down) through an OpenGL camera-to-world pose."""
    p = np.linalg.inv(pose) @ np.r_[point, 1.0]
    return c + focal * p[0] / -p[2], c - focal * p[1] / -p[2]


def test_poses_are_orthonormal_look_at_the_origin_and_follow_the_angles():
    el = [10.0 * math.sin(i) for i in range(21)]
    az = np.linspace(0, 360, 22)[:-1] + 3
    orbit = make_orbit(21, True, elevations=",".join(map(str, el)), azimuths=",".join(map(str, az)))
    t = transforms(orbit, view_names(orbit), (576, 576), Camera(40.0, 3.0))
    assert t["w"] == t["h"] == 576 and t["cx"] == t["cy"] == 288
    assert t["camera_angle_x"] == t["camera_angle_y"] == pytest.approx(math.radians(40))
    assert t["fl_x"] == pytest.approx(288 / math.tan(math.radians(20)))
    for frame, a, e in zip(t["frames"], orbit.azimuths_deg, orbit.elevations_deg):
        m = np.array(frame["transform_matrix"])
        r, pos = m[:3, :3], m[:3, 3]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1) and m[3].tolist() == [0, 0, 0, 1]
        assert np.linalg.norm(pos) == pytest.approx(3.0)
        np.testing.assert_allclose(-r[:, 2], -pos / 3.0, atol=1e-12)  # looks (down -z) at the origin
        assert math.degrees(math.atan2(pos[1], pos[0])) % 360 == pytest.approx(a % 360, abs=1e-9)
        assert math.degrees(math.asin(pos[2] / 3.0)) == pytest.approx(e, abs=1e-9)
        assert abs(r[2, 0]) < 1e-12 and r[2, 1] > 0  # no roll: image x horizontal, image up towards world up
        f = t["fl_x"]
        assert project(m, (0, 0, 0), f, 288) == pytest.approx((288, 288))
        assert project(m, (0, 0, 0.2), f, 288)[1] < 288  # world up is image up
    # The input view (azimuth 0) sits on +x; the next views go counter-clockwise seen from above, towards +y, which
    # is the input camera's right.
    first = camera_to_world(0, 0, 2)
    assert first[:3, 3] == pytest.approx([2, 0, 0])
    assert project(first, (0, 0.3, 0), 300, 288)[0] > 288
    assert camera_to_world(90, 0, 2)[:3, 3] == pytest.approx([0, 2, 0])


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    from svdcli.inference import multiview

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(multiview, "contact_sheet", interrupted)  # after the video and the views are written
    orbit = make_orbit(3, True)
    with pytest.raises(KeyboardInterrupt):
        write_orbit(tmp_path / "out", np.zeros((3, 64, 64, 3), np.uint8), orbit, Camera(), "mp4", 10, 8, {})
    assert list(tmp_path.iterdir()) == []


# The command ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("mv")
    save_single_file(tiny_model("sv3d_p", seed=5), d / "p.safetensors")
    save_single_file(tiny_model("sv3d_u", seed=5), d / "u.safetensors")
    a = np.zeros((90, 120, 4), np.uint8)
    a[20:70, 60:100] = (40, 160, 60, 255)
    Image.fromarray(a).save(d / "object.png")
    return d


@pytest.fixture
def runner():
    """In-process runs for the checks that fail before any model is loaded."""
    return CliRunner()


def svd(setup, *args, cwd=None):
    cmd = [sys.executable, "-m", "svdcli", "multiview", str(setup / "object.png"), "--size", "64x64", "--steps", "2",
           "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or setup)


def test_sv3d_p_and_sv3d_u_end_to_end_on_cpu(setup, tmp_path, runner):
    out = tmp_path / "orbit"
    r = svd(setup, "--weights", str(setup / "p.safetensors"), "--elevation", "20", "--seed", "3", "--out", str(out),
            "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["output"] == str(out) and result["views"] == 21 and result["seed"] == 3
    names = sorted(p.name for p in (out / "views").iterdir())
    assert len(names) == 21 and names[0] == "00_az017.1_el+20.0.png" and names[-1] == "20_az000.0_el+20.0.png"
    reader = imageio_ffmpeg.read_frames(str(out / "orbit.mp4"))
    assert next(reader)["size"] == (64, 64) and sum(1 for _ in reader) == 21
    # The last view is the input view, exactly as preprocessed.
    expected = np.asarray(prepare_object(setup / "object.png", 64, 0.85)).astype(int)
    assert np.abs(np.asarray(Image.open(out / "views" / names[-1])).astype(int) - expected).max() <= 1
    meta = json.loads((out / "orbit.json").read_text())
    assert meta["architecture"] == "sv3d_p" and meta["seed"] == 3 and meta["multiview"]["conditioned"]
    assert meta["multiview"]["elevations_deg"] == [20.0] * 21 and meta["settings"]["guidance"] == "triangle"
    assert json.loads(Image.open(out / "views" / names[3]).text["svd"])["view"]["azimuth_deg"] == \
        pytest.approx(4 * 360 / 21)
    poses = json.loads((out / "transforms.json").read_text())
    assert [f["file_path"] for f in poses["frames"]] == [f"views/{n}" for n in names]
    synthetic = json.loads((out / "transforms_train.json").read_text())
    assert all((out / (f["file_path"] + ".png")).is_file() for f in synthetic["frames"])
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width == 7 * 192  # 21 views on a 7x3 grid
    assert not list(tmp_path.glob(".*partial*"))

    before = (out / "orbit.mp4").read_bytes()
    r = runner.invoke(app, ["multiview", str(setup / "object.png"), "--weights", str(setup / "u.safetensors"),
                            "--size", "64x64", "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.stderr and (out / "orbit.mp4").read_bytes() == before
    r = svd(setup, "--weights", str(setup / "u.safetensors"), "--frames", "3", "--seed", "4", "--out", str(out),
            "--overwrite", "--format", "gif")
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "orbit.json").read_text())
    assert meta["architecture"] == "sv3d_u" and not meta["multiview"]["conditioned"]
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "orbit.gif", "orbit.json", "transforms.json",
                                                     "transforms_test.json", "transforms_train.json",
                                                     "transforms_val.json", "views"]
    assert len(list((out / "views").iterdir())) == 3


@pytest.mark.parametrize("args, message", [
    (["--preset", "sv3d-u", "--elevation", "20"], "sv3d_u takes no camera input (--elevation)"),
    (["--azimuths", "1,2,3"], "--azimuths: 21 values needed"),
    (["--elevation", "120"], "outside (-90, 90)"),
    (["--size", "128x64"], "square"),
    (["--preset", "svd"], "svd multiview runs SV3D"),
    (["--format", "png"], "choose one of mp4, gif, webp"),
    (["--object-ratio", "1.5"], "--object-ratio 1.5"),
    (["--fov", "0"], "--fov 0"),
    (["--image", "busy.jpg"], "RGBA cut-out"),
])
def test_bad_input_is_one_line_and_exit_code_2(setup, tmp_path, runner, args, message):
    image = setup / "object.png"
    if args[0] == "--image":
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(tmp_path / args[1])
        image, args = tmp_path / args[1], []
    r = runner.invoke(app, ["multiview", str(image), "--weights", str(setup / "p.safetensors"), "--size", "64x64",
                            "--out", str(tmp_path / "o"), *args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("svd: error: ") and message in lines[0], \
        r.stderr
    assert not (tmp_path / "o").exists()


def test_generate_refuses_sv3d_p_in_one_line(setup, runner):
    r = runner.invoke(app, ["generate", str(setup / "object.png"), "--preset", "sv3d-p"])
    assert r.exit_code == 2 and "svd multiview" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_orbit_that_cannot_be_decoded_keeps_its_latents_and_svd_decode_writes_the_same_folder(setup, tmp_path,
                                                                                                  monkeypatch):
    from svdcli.models.vae import VAE

    args = ["multiview", str(setup / "object.png"), "--size", "64x64", "--steps", "2", "--frames", "5", "--quiet",
            "--weights", str(setup / "p.safetensors"), "--elevation", "10", "--seed", "4", "--format", "gif"]
    whole = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.stderr
    with monkeypatch.context() as patch:
        patch.setattr(VAE, "decode", lambda self, z, n: (_ for _ in ()).throw(torch_oom()))
        failed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "orbit")])
    kept = tmp_path / "orbit.latents.safetensors"
    assert failed.exit_code == 1 and f"svd decode {kept} --device cpu" in failed.stderr and kept.is_file()
    assert not (tmp_path / "orbit").exists()
    done = CliRunner().invoke(app, ["decode", str(kept), "--json"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["output"] == str(tmp_path / "orbit")
    made = sorted(p.relative_to(tmp_path / "orbit") for p in (tmp_path / "orbit").rglob("*"))
    assert made == sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*"))
    for view in (tmp_path / "whole" / "views").iterdir():
        assert np.array_equal(np.asarray(Image.open(view)), np.asarray(Image.open(tmp_path / "orbit" / "views" /
                                                                                  view.name)))
    assert (tmp_path / "orbit" / "transforms.json").read_text() == (tmp_path / "whole" / "transforms.json").read_text()
    assert json.loads((tmp_path / "orbit" / "orbit.json").read_text())["multiview"]["conditioned"]


def torch_oom():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
