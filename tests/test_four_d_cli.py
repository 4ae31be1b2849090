"""`svd 4d`: frames taken from a clip, the clip's object preparation, the first frame's orbit (SV3D run, or an `svd
multiview` folder), the output folder, one-line errors, and tiny SV4D files end to end."""

import json
import weakref
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from svdcli.checkpoints.architectures import ARCHITECTURES
from svdcli.checkpoints.loader import model_metadata
from svdcli.checkpoints.saving import save_single_file
from svdcli.cli import app
from svdcli.inference.four_d import FRAMES, SV3D_VIEWS
from svdcli.inference.four_d_output import (ClipFrames, FourDError, grid_frames, pick_frames, prepare_clip,
                                            read_frames_range, sv4d_views)
from svdcli.inference.multiview import Camera, centre_object, centre_objects, make_orbit, write_orbit
from svdcli.media.video_io import read_clip
from svdcli.models.clip import CLIPConfig, ImageEncoder
from svdcli.models.init import random_state
from svdcli.models.unet import VideoUNet
from svdcli.models.vae import VAE, VAEConfig
from svdcli.runtime.settings import SettingsError

from .conftest import tiny_model


def tiny_architecture(name: str):
    """A few-MB model of an SV4D architecture. The vector (160) splits as the real one's 256 + 512 + 512 and is as
    wide as the U-Net's embedding (4 × 40), which SV4D 2.0's camera embedding needs; 8 norm groups fit 40 channels."""
    arch = ARCHITECTURES[name]
    return replace(arch, unet=replace(arch.unet, model_channels=40, channel_mult=(1, 2), num_res_blocks=1,
                                      attention_levels=(True, False), head_dim=20, context_dim=16,
                                      adm_in_channels=160, norm_groups=8),
                   vae=VAEConfig(channels=16, channel_mult=(1, 2, 2, 2), num_res_blocks=1, temporal_decoder=False,
                                 norm_groups=8),
                   clip=CLIPConfig(image_size=28, patch_size=14, width=32, layers=1, head_width=16, mlp_width=64,
                                   embed_dim=16))


def write_random_file(path: Path, name: str, seed: int = 0) -> None:
    """A single file with the official names of a tiny model of this architecture, random N(0, 1/fan_in) weights
    (so frames are not grey), the conditioner's three autoencoder encoders equal, as in the released files."""
    from safetensors.torch import save_file

    arch = tiny_architecture(name)
    with torch.device("meta"):
        modules = {"unet": VideoUNet(arch.unet), "vae": VAE(arch.vae), "image_encoder": ImageEncoder(arch.clip)}
    tensors = random_state({arch.single_file_key(comp, k): tuple(v.shape)
                            for comp, module in modules.items() for k, v in module.state_dict().items()}, seed)
    first = arch.vae_encoder_prefix
    for copy in arch.encoder_copies:
        if copy != first:
            tensors.update({copy + k[len(first):]: v.clone() for k, v in list(tensors.items()) if k.startswith(first)})
    save_file(tensors, str(path), metadata=model_metadata(arch))


def disc_frames(n: int, size: int = 64) -> list[np.ndarray]:
    """RGBA frames of a disc moving right, changing colour, on a transparent background."""
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for i in range(n):
        a = np.zeros((size, size, 4), np.uint8)
        a[(xx - 16 - i) ** 2 + (yy - 30 - 4 * np.sin(i / 4)) ** 2 < 64] = (200, 60 + 6 * i, 40, 255)
        frames.append(a)
    return frames


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("4d")
    write_random_file(d / "sv4d.safetensors", "sv4d", seed=1)
    write_random_file(d / "sv4d2_8views.safetensors", "sv4d2_8views", seed=2)
    save_single_file(tiny_model("sv3d_u", seed=5), d / "sv3d_u.safetensors")
    write_frames(d / "clip", disc_frames(25))
    return d


def svd(setup, *args, clip=None):
    return CliRunner().invoke(app, ["4d", str(clip or setup / "clip"), "--size", "64x64", "--steps", "2", "--quiet",
                                    *args])


def frames_in(video: Path, size: tuple[int, int] = (64, 64)) -> int:
    reader = imageio_ffmpeg.read_frames(str(video))
    assert next(reader)["size"] == size
    return sum(1 for _ in reader)


def check_folder(out: Path, views: int, fmt: str) -> dict:
    """Every file of the output folder, and what they say; returns 4d.json."""
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["4d.json", "contact_sheet.png", "frames", f"grid.{fmt}", "transforms.json", "transforms_test.json",
         "transforms_train.json", "transforms_val.json", "views"])
    assert sorted(p.name for p in (out / "views").iterdir()) == [f"v{v:02d}.{fmt}" for v in range(views)]
    names = [f"v{v:02d}_t{t:02d}.png" for v in range(views) for t in range(FRAMES)]
    assert sorted(p.name for p in (out / "frames").iterdir()) == names
    meta = json.loads((out / "4d.json").read_text())
    assert len(meta["views"]) == views and meta["frames"] == FRAMES and meta["width"] == meta["height"] == 64
    poses = json.loads((out / "transforms.json").read_text())
    assert [f["file_path"] for f in poses["frames"]] == [f"frames/{n}" for n in names]
    assert [f["time"] for f in poses["frames"][:FRAMES]] == [t / 20 for t in range(FRAMES)]
    for f in poses["frames"]:
        camera = meta["views"][f["view"]]
        assert (f["azimuth_deg"], f["elevation_deg"]) == (camera["azimuth_deg"], camera["elevation_deg"])
    position = np.array(poses["frames"][0]["transform_matrix"])[:3, 3]  # the input view's camera: azimuth 0, on +x
    elevation = np.radians(meta["views"][0]["elevation_deg"])
    assert position == pytest.approx([2 * np.cos(elevation), 0, 2 * np.sin(elevation)])
    d_nerf = json.loads((out / "transforms_train.json").read_text())
    assert len(d_nerf["frames"]) == views * FRAMES and all((out / (f["file_path"] + ".png")).is_file()
                                                           for f in d_nerf["frames"])
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width == views * 192  # the views as columns
    with Image.open(out / "frames" / "v01_t07.png") as frame:
        assert json.loads(frame.text["svd"])["time"] == 7 and json.loads(frame.text["svd"])["view"]["view"] == 1
    assert not list(out.parent.glob(".*partial*"))
    return meta


def prepared_input(setup, ratio: float) -> np.ndarray:
    clip = read_frames_range(setup / "clip")
    return np.stack([np.asarray(p) for p in prepare_clip(clip, 64, ratio)])


# The pieces ---------------------------------------------------------------------------------------------------------

def test_21_frames_are_taken_evenly_with_both_ends():
    assert pick_frames(21) == list(range(21))
    assert pick_frames(41) == list(range(0, 41, 2))
    picked = pick_frames(100, 10, 60)
    assert picked[0] == 10 and picked[-1] == 60 and len(set(picked)) == 21
    assert np.abs(np.diff(picked) - 2.5).max() <= 0.5
    with pytest.raises(FourDError, match="the clip has 12 frames; SV4D needs at least 21"):
        pick_frames(12)
    with pytest.raises(FourDError, match="frames 10 to 24 of the clip are 15 frames"):
        pick_frames(25, 10)
    for first, last, setting in ((-1, None, "frames_from"), (0, 25, "frames_to"), (10, 5, "frames_to")):
        with pytest.raises(SettingsError) as e:
            pick_frames(25, first, last)
        assert e.value.setting == setting


def test_folders_of_cut_outs_keep_their_alpha_and_plain_reads_do_not_change(tmp_path):
    frames = disc_frames(3)
    frames[1][..., 3] = 255  # an opaque frame among transparent ones
    write_frames(tmp_path / "f", frames)
    kept, _ = read_clip(tmp_path / "f", keep_alpha=True)
    assert kept.shape == (3, 64, 64, 4) and (kept[1, ..., 3] == 255).all()
    assert np.array_equal(kept[0], frames[0])
    plain, _ = read_clip(tmp_path / "f")
    assert plain.shape == (3, 64, 64, 3) and np.array_equal(plain[0], frames[0][..., :3])


def test_one_box_for_the_clip_so_the_object_moves_and_does_not_jitter():
    frames = [Image.fromarray(f) for f in disc_frames(25)]
    centred = centre_objects(frames, 128, 0.5)
    boxes = []
    for im in centred:
        ys, xs = np.nonzero((255 - np.asarray(im).astype(int)).max(-1) > 40)
        boxes.append((xs.min(), xs.max(), ys.max() - ys.min()))
    assert boxes[-1][0] - boxes[0][0] > 30  # it moves right as in the clip
    assert max(b[2] for b in boxes) - min(b[2] for b in boxes) <= 2  # same scale in every frame
    # the union box (x 8..48, 16 disc widths + 24 of motion) spans 0.5 of the side: 64 px
    assert boxes[-1][1] - boxes[0][0] == pytest.approx(64, abs=3)
    # one frame alone is centre_object exactly
    assert np.array_equal(np.asarray(centre_objects(frames[:1], 96, 0.8)[0]),
                          np.asarray(centre_object(frames[0], 96, 0.8)))


def test_an_rgb_clip_on_a_plain_background_is_keyed_frame_by_frame():
    frames = np.stack([np.where(f[..., 3:] > 0, f[..., :3], 120).astype(np.uint8) for f in disc_frames(21)])
    rgb = prepare_clip(ClipFrames(frames, tuple(range(21)), 21, 24.0), 64, 0.9)
    rgba = prepare_clip(ClipFrames(np.stack(disc_frames(21)), tuple(range(21)), 21, 24.0), 64, 0.9)
    assert np.abs(np.asarray(rgb[10]).astype(int) - np.asarray(rgba[10]).astype(int)).mean() < 8
    assert (np.asarray(rgb[0])[:8] == 255).all()  # the grey background became white


def test_the_orbit_is_rolled_so_the_input_view_comes_first():
    orbit = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(21)])  # view i filled with i; 20 is the input
    views = sv4d_views(orbit)
    assert views.shape == (9, 3, 4, 4)
    assert [round(float((v[0, 0, 0] + 1) / 2 * 255)) for v in views] == [(k - 1) % 21 for k in SV3D_VIEWS]
    assert [(k - 1) % 21 for k in SV3D_VIEWS][:2] == [20, 1]  # the input, then SV3D's view at 2·360/21


def test_grid_puts_up_to_5_views_in_a_row_and_more_in_two():
    assert grid_frames(np.zeros((2, 5, 8, 8, 3), np.uint8)).shape == (2, 8, 40, 3)
    nine = grid_frames(np.zeros((2, 9, 8, 8, 3), np.uint8))
    assert nine.shape == (2, 16, 40, 3) and (nine[:, 8:, 32:] == 255).all()  # the empty cell is white


# The command --------------------------------------------------------------------------------------------------------

def test_sv4d_runs_sv3d_on_the_first_frame_frees_it_and_writes_every_view_and_frame(setup, tmp_path, monkeypatch):
    from svdcli.cli import options
    from svdcli.inference import four_d_output

    opened, orbits = [], []
    open_engine, sample_4d = options.open_engine, four_d_output.sample_4d

    def recording_open(preset, *args, **kwargs):
        assert all(ref() is None for ref in opened)  # the SV3D model is gone before SV4D loads
        engine = open_engine(preset, *args, **kwargs)
        opened.append(weakref.ref(engine))
        return engine

    def recording_sample(pipe, clip, settings, seed, orbit=None, progress=None):
        orbits.append((clip.clone(), orbit.clone()))
        return sample_4d(pipe, clip, settings, seed, orbit, progress)

    monkeypatch.setattr(options, "open_engine", recording_open)
    monkeypatch.setattr(four_d_output, "sample_4d", recording_sample)
    out = tmp_path / "run"
    r = svd(setup, "--weights", str(setup / "sv4d.safetensors"), "--orbit-weights", str(setup / "sv3d_u.safetensors"),
            "--seed", "3", "--out", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["output"] == str(out) and result["views"] == 9 and result["frames"] == 21 and result["seed"] == 3
    assert len(opened) == 2
    meta = check_folder(out, 9, "mp4")
    assert meta["architecture"] == "sv4d" and meta["preset"] == "sv4d" and meta["seed"] == 3
    assert [v["azimuth_deg"] for v in meta["views"]] == pytest.approx([k * 360 / 21 for k in SV3D_VIEWS])
    assert {v["elevation_deg"] for v in meta["views"]} == {10.0}
    assert meta["orbit"]["source"] == "sv3d" and meta["orbit"]["preset"] == "sv3d-u"
    assert meta["object_ratio"] == 0.917 and meta["input_frames"] == pick_frames(25)
    assert meta["settings"]["steps"] == 2 and meta["orbit"]["settings"]["steps"] == 2
    for video in (out / "views").iterdir():
        assert frames_in(video) == 21
    assert frames_in(out / "grid.mp4", (5 * 64, 2 * 64)) == 21  # 9 views on two rows
    # SV3D's last view is the input itself: rolled to the front, SV4D's view 0 of frame 0 is the first frame
    clip, orbit = orbits[0]
    assert orbit.shape == (9, 3, 64, 64) and (orbit[0] - clip[0]).abs().max() <= 1 / 255
    # view 0 is the prepared input, exactly
    expected = prepared_input(setup, 0.917)
    for t in (0, 9, 20):
        assert np.array_equal(np.asarray(Image.open(out / "frames" / f"v00_t{t:02d}.png")), expected[t])
    new = np.stack([np.asarray(Image.open(out / "frames" / f"v03_t{t:02d}.png")) for t in range(21)]).astype(float)
    assert new.std() > 10  # not grey frames


def test_sv4d2_8views_with_chosen_cameras_and_gifs(setup, tmp_path):
    out = tmp_path / "eight"
    azimuths = [20, 60, 100, 140, 180, 220, 260, 300]
    r = svd(setup, "--preset", "sv4d2-8views", "--weights", str(setup / "sv4d2_8views.safetensors"), "--seed", "5",
            "--azimuths", ",".join(map(str, azimuths)), "--elevation", "5", "--format", "gif", "--frames-from", "2",
            "--out", str(out))
    assert r.exit_code == 0, r.stderr
    meta = check_folder(out, 9, "gif")
    assert meta["architecture"] == "sv4d2_8views" and "orbit" not in meta and meta["object_ratio"] == 0.9
    assert [v["azimuth_deg"] for v in meta["views"]] == [0, *azimuths]
    assert {v["elevation_deg"] for v in meta["views"]} == {5.0}
    assert meta["input_frames"][0] == 2 and meta["input_frames"][-1] == 24
    with Image.open(out / "views" / "v04.gif") as gif:
        assert gif.n_frames == 21


def test_an_svd_multiview_folder_replaces_the_sv3d_run(setup, tmp_path, monkeypatch):
    from svdcli.inference import four_d_output

    orbit = np.stack([np.full((64, 64, 3), 10 * i, np.uint8) for i in range(21)])
    write_orbit(tmp_path / "mv", orbit, make_orbit(21, False), Camera(), "mp4", 10, 8, {})
    given = []
    sample_4d = four_d_output.sample_4d

    def recording_sample(pipe, clip, settings, seed, orbit=None, progress=None):
        given.append(orbit.clone())
        return sample_4d(pipe, clip, settings, seed, orbit, progress)

    monkeypatch.setattr(four_d_output, "sample_4d", recording_sample)
    out = tmp_path / "reuse"
    # no --orbit-weights and none downloaded: the SV3D model is not needed
    r = svd(setup, "--weights", str(setup / "sv4d.safetensors"), "--orbit", str(tmp_path / "mv"), "--seed", "1",
            "--out", str(out))
    assert r.exit_code == 0, r.stderr
    meta = check_folder(out, 9, "mp4")
    assert meta["orbit"] == {"source": str(tmp_path / "mv")}
    assert [round(float((v.mean() + 1) / 2 * 255)) for v in given[0]] == [10 * ((k - 1) % 21) for k in SV3D_VIEWS]


@pytest.mark.parametrize("args, message", [
    (["--clip", "missing.mp4"], "missing.mp4: no such file"),
    (["--clip", "broken.mp4"], "not a video ffmpeg can read"),
    (["--clip", "short"], "the clip has 12 frames; SV4D needs at least 21"),
    (["--frames-from", "10"], "frames 10 to 24 of the clip are 15 frames; SV4D needs at least 21"),
    (["--frames-to", "30"], "--frames-to 30: must be between"),
    (["--clip", "busy"], "RGBA cut-out"),
    (["--elevations", "1,2,3"], "--elevations 3 values: sv4d takes 9"),
    (["--elevation", "95"], "--elevation every elevation must be between -90 and 90"),
    (["--elevation", "5", "--elevations", ",".join(["5"] * 9)], "give one"),
    (["--azimuths", ",".join(["90"] * 8)], "--azimuths SV4D's views are those of its SV3D orbit"),
    (["--preset", "sv4d2-8views", "--azimuths", "10,20,30,40"], "--azimuths 4 values: sv4d2_8views makes 8"),
    (["--preset", "sv4d2-8views", "--azimuths", "0,20,30,40,50,60,70,80"], "(0, 360)"),
    (["--preset", "sv4d2-8views", "--azimuths", "north"], "expected numbers"),
    (["--no-sv3d"], "run `svd download sv4d` (it fetches both)"),
    (["--orbit-weights", "nowhere.safetensors"], "--orbit-weights nowhere.safetensors: no such file"),
    (["--preset", "svd"], "preset svd is svd; svd 4d runs sv4d, sv4d2 or sv4d2-8views"),
    (["--size", "128x64"], "--size 128x64: SV4D frames are square"),
    (["--size", "100x100"], "multiples of 64"),
    (["--format", "png"], "--format png: choose one of mp4, gif, webp"),
    (["--object-ratio", "1.5"], "--object-ratio 1.5"),
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--cfg-min", "0"], "--cfg-min 0"),
    (["--preset", "sv4d2-8views", "--orbit", "mv"], "--orbit: sv4d2-8views makes its own first-frame views"),
    (["--orbit", "few"], "5 views in views/; SV4D takes an orbit of 21"),
    (["--orbit", "big"], "its views are 128x128, this run's are 64x64"),
    (["--orbit", "turned"], "not on SV3D's even turn"),
    (["--existing"], "--overwrite"),
])
def test_bad_input_is_one_line_and_exit_code_2(setup, tmp_path, args, message):
    clip, out = setup / "clip", tmp_path / "o"
    if args[0] == "--clip":
        clip, args = tmp_path / args[1], []
        if clip.name == "broken.mp4":
            clip.write_bytes(b"not a video at all")
        elif clip.name == "short":
            write_frames(clip, disc_frames(12))
        elif clip.name == "busy":
            rng = np.random.default_rng(1)
            write_frames(clip, [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(21)])
    if "--orbit" in args and args[-1] != "mv":
        views, size, orbit = {"few": (5, 64, make_orbit(5, False)), "big": (21, 128, make_orbit(21, False)),
                              "turned": (21, 64, make_orbit(21, True, azimuths=",".join(str(10 + 17 * i)
                                                                                   for i in range(21))))}[args[-1]]
        write_orbit(tmp_path / args[-1], np.zeros((views, size, size, 3), np.uint8), orbit, Camera(), "gif", 10, 8,
                    {"multiview": {"azimuths_deg": list(orbit.azimuths_deg)}})
        args = ["--orbit", str(tmp_path / args[-1])]
    sv3d = ["--orbit-weights", str(setup / "sv3d_u.safetensors")]
    if args == ["--no-sv3d"]:
        args, sv3d = [], []
    existing = args == ["--existing"]
    if existing:
        out.mkdir()
        args = []
    if "--orbit" in args or "--orbit-weights" in args or "sv4d2-8views" in args:
        sv3d = []
    r = CliRunner().invoke(app, ["4d", str(clip), "--weights", str(setup / "sv4d.safetensors"), *sv3d,
                                 "--size", "64x64", "--out", str(out), *args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("svd: error: ") and message in lines[0], \
        r.stderr
    assert (out.is_dir() and not any(out.iterdir())) if existing else not out.exists()


@pytest.mark.parametrize("where", ["sample_4d", "contact_sheet"])
def test_an_interrupted_run_leaves_nothing(setup, tmp_path, monkeypatch, where):
    """Ctrl-C while sampling, or while writing the folder (after the videos and frames): one line, exit 130, and no
    output folder nor any partial one."""
    from svdcli.inference import four_d_output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(four_d_output, where, interrupted)
    out = tmp_path / "o"
    r = svd(setup, "--preset", "sv4d2-8views", "--weights", str(setup / "sv4d2_8views.safetensors"), "--seed", "1",
            "--out", str(out))
    assert r.exit_code == 130 and r.stderr.strip().splitlines() == ["svd: error: interrupted; no output was written"]
    assert list(tmp_path.iterdir()) == []
