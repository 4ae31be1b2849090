"""`svd 4d`: a clip of an object made ready for SV4D, the first frame's SV3D orbit, and the output folder (a video
and the frames of every view, and the camera of every view at every time for 4D reconstruction tools).

    clip = read_frames_range("dancer.mp4")                              # 21 frames, evenly spaced
    pictures = prepare_clip(clip, 576, LAYOUTS["sv4d"].object_ratio, "dancer.mp4")
    orbit, _ = first_frame_orbit(lambda: open_engine(sv3d_u, path), pictures[0], options, seed)   # SV4D only
    meta = make(engine, pictures, FourDSettings.for_model("sv4d", 20), seed, Path("dancer_4d"), orbit)

Cameras are svd multiview's (see multiview.py): the input view at azimuth 0, azimuths counter-clockwise seen from
above, OpenGL camera axes, world z up.
"""

import datetime
import gc
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import __version__
from ..media.images import ImageError, load_image, to_tensor, to_uint8
from ..media.outputs import atomic_path, png_info, write_animation, write_mp4
from ..media.video_io import read_clip
from ..runtime.settings import SettingsError
from .four_d import FRAMES, SV3D_VIEWS, FourDSettings, sample_4d
from .generation import Engine, Options
from .multiview import (VIDEO_FORMATS, VIEWS, Camera, Orbit, centre_objects, check_object_ratio, contact_sheet,
                        cut_out, make_orbit, transforms)

SHEET_TIMES = (0, 5, 10, 15, 20)  # the frames shown on the contact sheet, one row each


class FourDError(ValueError):
    """Input that SV4D cannot use; one line for the user."""


@dataclass(frozen=True)
class ClipFrames:
    """The frames of a clip that a run uses."""
    frames: np.ndarray  # (21, H, W, 3) uint8, or (21, H, W, 4) for frame images with transparency
    indices: tuple[int, ...]  # which frames of the source, 0-based
    total: int  # frames in the source
    fps: float


def pick_frames(total: int, first: int | None = None, last: int | None = None) -> list[int]:
    """21 frame indices spread evenly over first..last (inclusive; default the whole clip), the ends included."""
    first = 0 if first is None else first
    last = total - 1 if last is None else last
    if not 0 <= first < total:
        raise SettingsError("frames_from", f"{first}: the clip's frames are 0 to {total - 1}")
    if not first <= last < total:
        raise SettingsError("frames_to", f"{last}: must be between the first frame used ({first}) and the clip's "
                            f"last ({total - 1})")
    n = last - first + 1
    if n < FRAMES:
        what = "the clip has" if n == total else f"frames {first} to {last} of the clip are"
        raise FourDError(f"{what} {n} frames; SV4D needs at least {FRAMES} (it takes {FRAMES} evenly spaced)")
    half = (FRAMES - 1) // 2  # integer rounding, half up: i·(n-1)/20 to the nearest frame; distinct as n ≥ 21
    return [first + (i * (n - 1) + half) // (FRAMES - 1) for i in range(FRAMES)]


def read_frames_range(source: str | Path, first: int | None = None, last: int | None = None) -> ClipFrames:
    """The 21 frames of a video or a frame folder that SV4D takes (pick_frames). Frame images keep their
    transparency. Raises VideoError for an unreadable clip."""
    frames, fps = read_clip(source, keep_alpha=True)
    indices = pick_frames(len(frames), first, last)
    return ClipFrames(frames[indices], tuple(indices), len(frames), fps)


def prepare_clip(clip: ClipFrames, size: int, ratio: float, name: str = "clip") -> list[Image.Image]:
    """The input view of every frame, size×size RGB: the object (the frames' transparency, or each frame keyed off
    its near-uniform background), cropped by one box for the whole clip, centred at `ratio` on white (svd multiview's
    preprocessing, with multiview.centre_objects). Raises ImageError with one line."""
    check_object_ratio(ratio)
    frames = clip.frames
    if frames.shape[-1] == 4 and (frames[..., 3] < 255).any():  # a cut-out clip: every frame by its alpha
        objects = [Image.fromarray(f, "RGBA") for f in frames]
    else:
        objects = [cut_out(Image.fromarray(np.ascontiguousarray(f[..., :3])), f"{name} frame {i}")
                   for i, f in zip(clip.indices, frames)]
    return centre_objects(objects, size, ratio, name)


# The first frame's views (SV4D) ------------------------------------------------------------------------------------

def sv4d_views(orbit: np.ndarray) -> Tensor:
    """SV3D's 21 views (21, H, W, 3) uint8, the input view last -> SV4D's 9 (9, 3, H, W) in [-1, 1]: the input view
    first, then the views at azimuths k·360/21 for k in SV3D_VIEWS (the reference rolls the orbit by one)."""
    if len(orbit) != VIEWS:
        raise ValueError(f"an SV3D orbit has {VIEWS} views, not {len(orbit)}")
    views = np.roll(orbit, 1, axis=0)[list(SV3D_VIEWS)]
    return torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2).float() / 255 * 2 - 1


def first_frame_orbit(open_sv3d: Callable[[], Engine], picture: Image.Image, options: Options, seed: int,
                      progress=None) -> tuple[Tensor, dict]:
    """SV4D's views of the first frame: an SV3D orbit of the prepared first frame (svd multiview's Engine.run, 21
    views, the same seed), as sv4d_views. The SV3D model is opened here and freed before returning, so that SV4D
    loads into the memory it held. Returns the views and the orbit run's metadata."""
    engine = open_sv3d()
    device = engine.pipe.device
    conditioned = engine.pipe.model.architecture.name == "sv3d_p"  # a companion preset of SV3D_p: the even turn
    frames, meta = engine.run(picture, make_orbit(options.frames, conditioned).condition(options), seed, progress)
    del engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return sv4d_views(frames), meta


def read_orbit(folder: str | Path, size: int) -> np.ndarray:
    """The 21 views (21, H, W, 3) uint8 of an `svd multiview` output folder (views/*.png in name order), checked:
    21 views of size×size, on SV3D's even turn."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FourDError(f"{folder}: no such folder (an `svd multiview` output folder of the clip's first frame)")
    files = sorted((folder / "views").glob("*.png"))
    if len(files) != VIEWS:
        raise FourDError(f"{folder}: {len(files)} views in views/; SV4D takes an orbit of {VIEWS} "
                         "(`svd multiview` of the first frame with its default --frames)")
    recorded = folder / "orbit.json"
    if recorded.is_file():
        try:
            azimuths = json.loads(recorded.read_text())["multiview"]["azimuths_deg"]
        except (OSError, ValueError, KeyError, TypeError):
            azimuths = None
        even = make_orbit(VIEWS, True).azimuths_deg
        if azimuths is not None and (len(azimuths) != VIEWS or
                                     any(abs(a - b) > 0.01 for a, b in zip(azimuths, even))):
            raise FourDError(f"{folder}: its views are not on SV3D's even turn (made with --azimuths); SV4D reads "
                             "the views at every 360/21 degrees")
    views = [load_image(f) for f in files]
    if any(v.size != (size, size) for v in views):
        w, h = next(v.size for v in views if v.size != (size, size))
        raise FourDError(f"{folder}: its views are {w}x{h}, this run's are {size}x{size}; make the orbit at the same "
                         "size")
    return np.stack([np.asarray(v) for v in views])


# The output folder ----------------------------------------------------------------------------------------------------

def view_cameras(settings: FourDSettings) -> list[dict]:
    """{view, azimuth_deg, elevation_deg} of each view, the input view (0, at azimuth 0) first."""
    azimuths = (0.0, *settings.azimuths_deg)
    return [{"view": i, "azimuth_deg": a, "elevation_deg": e}
            for i, (a, e) in enumerate(zip(azimuths, settings.elevations_deg))]


def frame_name(view: int, time: int) -> str:
    return f"v{view:02d}_t{time:02d}.png"


def grid_frames(frames: np.ndarray) -> np.ndarray:
    """(T, V, H, W, 3) -> (T, rows·H, cols·W, 3): the views side by side in view order, one row up to 5 views, two
    rows beyond (9 views at 576: 2880×1152), on white."""
    t, v, h, w = frames.shape[:4]
    rows = 1 if v <= 5 else 2
    cols = math.ceil(v / rows)
    out = np.full((t, rows * h, cols * w, 3), 255, np.uint8)
    for i in range(v):
        r, c = divmod(i, cols)
        out[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = frames[:, i]
    return out


def write_clip(frames: np.ndarray, path: Path, fmt: str, fps: float, meta: dict, quality: float) -> None:
    """A video inside a folder being written atomically (no sidecar: the folder's 4d.json is it)."""
    if fmt == "mp4":
        write_mp4(frames, path, fps, meta, quality)
    else:
        write_animation(frames, path, fps, meta, fmt)


def poses(cameras: list[dict], times: int, size: tuple[int, int], camera: Camera) -> dict:
    """nerfstudio's transforms.json (multiview.transforms) with one frame per view and time, view by view, each with
    its "time" in [0, 1] (as D-NeRF and 4D Gaussian splatting read it) and its view."""
    entries = [(c, t) for c in cameras for t in range(times)]
    orbit = Orbit("custom", tuple(c["azimuth_deg"] for c, _ in entries), tuple(c["elevation_deg"] for c, _ in entries),
                  conditioned=False)
    result = transforms(orbit, [f"frames/{frame_name(c['view'], t)}" for c, t in entries], size, camera)
    for frame, (c, t) in zip(result["frames"], entries):
        frame.update(time=t / (times - 1), view=c["view"])
    return result


def write_4d(target: Path, frames: np.ndarray, cameras: list[dict], camera: Camera, fmt: str, fps: float,
             quality: float, meta: dict) -> None:
    """frames: (T, V, H, W, 3) uint8, view 0 the input. Writes the folder target atomically: views/vNN.{fmt} (one
    video per view), grid.{fmt} (all views side by side), frames/vNN_tNN.png, contact_sheet.png (views as columns,
    a few times as rows), 4d.json (metadata), transforms.json (nerfstudio, with times) and transforms_{train,val,
    test}.json (the D-NeRF layout that 4D Gaussian splatting reads)."""
    t, v, h, w = frames.shape[:4]
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "views").mkdir()
        (tmp / "frames").mkdir()
        for c in cameras:
            i = c["view"]
            write_clip(frames[:, i], tmp / "views" / f"v{i:02d}.{fmt}", fmt, fps, {**meta, "view": c}, quality)
            for j in range(t):
                Image.fromarray(frames[j, i]).save(tmp / "frames" / frame_name(i, j),
                                                   pnginfo=png_info({**meta, "view": c, "time": j}))
        write_clip(grid_frames(frames), tmp / f"grid.{fmt}", fmt, fps, meta, quality)
        times = [j for j in SHEET_TIMES if j < t]
        labels = [f"t{j:02d} v{c['view']:02d} {c['azimuth_deg']:.0f}°" for j in times for c in cameras]
        sheet = contact_sheet(frames[times].reshape(-1, h, w, 3), labels, cols=v)
        sheet.save(tmp / "contact_sheet.png", pnginfo=png_info(meta))
        (tmp / "4d.json").write_text(json.dumps(meta, indent=2) + "\n")
        nerfstudio = poses(cameras, t, (w, h), camera)
        (tmp / "transforms.json").write_text(json.dumps(nerfstudio, indent=2) + "\n")
        # D-NeRF readers append ".png" themselves; there is no held-out view, so every split has them all.
        d_nerf = {"camera_angle_x": nerfstudio["camera_angle_x"],
                  "frames": [{"file_path": f["file_path"].removesuffix(".png"), "time": f["time"],
                              "transform_matrix": f["transform_matrix"]} for f in nerfstudio["frames"]]}
        for split in ("train", "val", "test"):
            (tmp / f"transforms_{split}.json").write_text(json.dumps(d_nerf, indent=2) + "\n")


def metadata(engine: Engine, settings: FourDSettings, seed: int, size: tuple[int, int], fmt: str, fps: float,
             quality: float, camera: Camera, about: dict) -> dict:
    return {"svd_version": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "seed": seed, "preset": engine.preset.name if engine.preset else None,
            "architecture": engine.pipe.model.architecture.name, "weights": str(engine.weights),
            "weights_sha256": engine.weights_sha256, "width": size[0], "height": size[1], **engine.info,
            "settings": {**asdict(settings), "format": fmt, "fps": fps, "quality": quality},
            "frames": FRAMES, "views": view_cameras(settings), "camera": asdict(camera), **about}


def make(engine: Engine, pictures: list[Image.Image], settings: FourDSettings, seed: int, target: Path,
         orbit: Tensor | None = None, fmt: str = "mp4", fps: float = 10, quality: float = 8.0,
         camera: Camera = Camera(), about: dict | None = None, progress=None) -> dict:
    """Sample the new views of a prepared clip (prepare_clip: 21 pictures) with a loaded SV4D model and write the
    folder target (write_4d); return the metadata. orbit: SV4D's first-frame views (first_frame_orbit, or
    sv4d_views(read_orbit(...))); about: more metadata (the input, its frames, where the orbit came from)."""
    if fmt not in VIDEO_FORMATS:
        raise FourDError(f"format {fmt}: choose one of {', '.join(VIDEO_FORMATS)} (the frames are PNGs anyway)")
    if len({p.size for p in pictures}) != 1:
        raise ImageError("the prepared frames differ in size")
    clip = torch.cat([to_tensor(p) for p in pictures])
    grid = sample_4d(engine.pipe, clip, settings, seed, orbit, progress)  # (21, V + 1, 3, H, W) in [0, 1]
    frames = to_uint8(grid.permute(0, 1, 3, 4, 2).numpy())
    meta = metadata(engine, settings, seed, pictures[0].size, fmt, fps, quality, camera, about or {})
    if progress:
        progress("write", 0, 1)
    write_4d(target, frames, view_cameras(settings), camera, fmt, fps, quality, meta)
    if progress:
        progress("write", 1, 1)
    return meta
