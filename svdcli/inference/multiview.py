"""Stable Video 3D: the orbit of views around an object, and what a 3D reconstruction tool needs from it.

    orbit = make_orbit(21, conditioned=True, elevation=10)        # SV3D_p's camera path, validated
    picture = prepare_object("mug.png", 576, OBJECT_RATIO)         # the reference's object preprocessing
    meta = make(engine, "mug.png", picture, o, orbit, seed, Path("mug_orbit"), Camera())

World frame (the reference's, whose polar angle is measured from +z): z up, the object at the origin. The camera of
a view at azimuth a and elevation e sits at radius·(cos e·cos a, cos e·sin a, sin e) and looks at the origin, so
azimuth grows counter-clockwise seen from above (from +x towards +y) and elevation is positive above the object's
equator. The input photo is the last view, at azimuth 0. Camera axes are OpenGL's, as nerfstudio, NeRF and 3D
Gaussian splatting read them: the camera looks down its -z, +y is image up, +x image right.
"""

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..media.images import ImageError, load_image
from ..media.outputs import atomic_path, latents_path, png_info, write_video
from .generation import Engine, Options

VIEWS = 21  # SV3D was trained on 21-view orbits
ELEVATION_DEG = 10.0  # the reference's default camera elevation
ORBITS = ("turn", "dynamic")
WOBBLE_DEG, WOBBLE_CYCLES = 10.0, 2  # --orbit dynamic: elevation ± 10° in two smooth swings per turn
# Not stated by the reference. 33.8° at distance 2 is what SV3D reconstruction scripts built on the released
# model write into their transforms (see docs/multiview.md); --fov and --radius override it.
FOV_DEG, RADIUS = 33.8, 2.0
OBJECT_RATIO = 0.85  # longer side of the object / side of the view
VIDEO_FORMATS = ("mp4", "gif", "webp")
KEY_TOLERANCE = 24  # 0-255: how far from the background colour a pixel may be and still be background
KEY_BORDER_SHARE = 0.9  # share of the border that must be background-coloured for an RGB image to be keyed
THUMBNAIL = 768  # RGB inputs are shrunk to fit this before keying, as the reference shrinks them for its remover


class OrbitError(ValueError):
    """Camera settings that cannot work; one line for the user."""


@dataclass(frozen=True)
class Orbit:
    """One camera per view. Azimuths are relative to the input view (the last one, at 0°), in [0, 360)."""
    kind: str  # "turn", "dynamic" or "custom"
    azimuths_deg: tuple[float, ...]
    elevations_deg: tuple[float, ...]
    conditioned: bool  # SV3D_p sees these angles; SV3D_u makes its own fixed orbit, which the poses assume

    @property
    def polars_rad(self) -> tuple[float, ...]:
        """The polar angle from +z that SV3D_p is conditioned on: 90° - elevation."""
        return tuple(math.radians(90 - e) for e in self.elevations_deg)

    @property
    def azimuths_rad(self) -> tuple[float, ...]:
        return tuple(math.radians(a) for a in self.azimuths_deg)

    def condition(self, options: Options) -> Options:
        """o with SV3D_p's camera in it (unchanged for SV3D_u, which has no camera input)."""
        if not self.conditioned:
            return options
        return replace(options, polars_rad=self.polars_rad, azimuths_rad=self.azimuths_rad)


def parse_angles(text: str, flag: str) -> list[float]:
    """'0, 17.1, 34.3' or '0 17.1 34.3' -> [0.0, 17.1, 34.3]."""
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise OrbitError(f"{flag} {text}: expected numbers in degrees, separated by commas") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise OrbitError(f"{flag} {text}: expected numbers in degrees, separated by commas")
    return values


def _check_elevations(values: list[float], flag: str) -> None:
    for e in values:
        if not -90 < e < 90:  # at the poles "up" is undefined and the orbit degenerates to a point
            raise OrbitError(f"{flag}: elevation {e:g}° is outside (-90, 90)")


def make_orbit(views: int, conditioned: bool, elevation: float | None = None, elevations: str | None = None,
               azimuths: str | None = None, orbit: str | None = None) -> Orbit:
    """The camera path, as the reference defines it: one elevation for all views (default 10°) or one per view;
    azimuths evenly spaced (the default: 360/views, 2·360/views, ..., 0) or given, increasing in [0, 360), then
    re-referenced to the last, which is the input view. orbit "dynamic" adds a smooth elevation wobble."""
    given = [flag for flag, v in (("--elevation", elevation), ("--elevations", elevations),
                                  ("--azimuths", azimuths), ("--orbit", orbit)) if v is not None]
    if not conditioned and given:
        raise OrbitError(f"sv3d_u takes no camera input ({', '.join(given)}); use --preset sv3d-p for camera control")
    if elevation is not None and elevations is not None:
        raise OrbitError("--elevation and --elevations: give one (a single elevation, or one per view)")
    if azimuths is not None and orbit is not None:
        raise OrbitError("--azimuths and --orbit: give one (your own azimuths, or a preset orbit)")
    kind = orbit or ("custom" if azimuths is not None or elevations is not None else "turn")
    if orbit is not None and orbit not in ORBITS:
        raise OrbitError(f"--orbit {orbit}: choose one of {', '.join(ORBITS)}")
    if kind == "dynamic" and elevations is not None:
        raise OrbitError("--orbit dynamic makes its own elevations; give --elevation (the input view's) instead of "
                         "--elevations")
    if azimuths is None:
        # numpy.linspace(0, 360, views + 1)[1:] % 360, as the reference builds it: the last is 360 = 0, the input view
        az = [(i + 1) * (360 / views) for i in range(views - 1)] + [0.0]
    else:
        az = parse_angles(azimuths, "--azimuths")
        if len(az) != views:
            raise OrbitError(f"--azimuths: {views} values needed (one per view), got {len(az)}")
        if not all(0 <= a < 360 for a in az):
            raise OrbitError(f"--azimuths: {next(a for a in az if not 0 <= a < 360):g} is outside [0, 360)")
        for i in range(1, views):
            if az[i] <= az[i - 1]:
                raise OrbitError(f"--azimuths: values must increase (view {i}: {az[i]:g} after {az[i - 1]:g})")
        az = [(a - az[-1]) % 360 for a in az]  # the input view (the last) becomes azimuth 0
    if elevations is not None:
        el = parse_angles(elevations, "--elevations")
        if len(el) != views:
            raise OrbitError(f"--elevations: {views} values needed (one per view), got {len(el)}")
    else:
        base = ELEVATION_DEG if elevation is None else elevation
        _check_elevations([base], "--elevation")
        # A whole number of sine cycles per turn: smooth around the loop, and 0 at the input view (azimuth 0).
        wobble = WOBBLE_DEG if kind == "dynamic" else 0.0
        el = [base + wobble * math.sin(WOBBLE_CYCLES * math.radians(a)) for a in az]
    _check_elevations(el, "--orbit dynamic" if kind == "dynamic" else "--elevations")
    return Orbit(kind, tuple(az), tuple(el), conditioned)


# Object preprocessing ----------------------------------------------------------------------------------------------

def _dilate(mask: np.ndarray) -> np.ndarray:
    """3×3 dilation of a boolean mask (separable: rows, then columns)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _connected(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of `allowed` connected to `seed` (8-neighbourhood), grown one ring at a time."""
    region = seed & allowed
    while True:
        grown = _dilate(region) & allowed
        if np.array_equal(grown, region):
            return region
        region = grown


def key_background(im: Image.Image, name: str) -> Image.Image:
    """RGB with a near-uniform background -> RGBA with the background transparent. The background colour is the
    median of the image border; the background is the region of that colour connected to the border, so parts of the
    object in the same colour stay opaque. Pixels along its edge get partial alpha (anti-aliased outlines)."""
    a = np.asarray(im.convert("RGB"), dtype=np.int16)  # (H, W, 3)
    b = max(2, min(a.shape[:2]) // 100)
    border = np.concatenate([a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3), a[:, :b].reshape(-1, 3),
                             a[:, -b:].reshape(-1, 3)])
    colour = np.median(border, axis=0)
    if (np.abs(border - colour).max(-1) <= KEY_TOLERANCE).mean() < KEY_BORDER_SHARE:
        raise ImageError(f"{name}: the background is not uniform enough to remove; give an RGBA cut-out of the object "
                         "(transparent background, e.g. from an image editor or rembg)")
    distance = np.abs(a - colour).max(-1)  # (H, W): largest channel difference from the background colour
    near = distance <= KEY_TOLERANCE
    edge_seed = np.zeros_like(near)
    edge_seed[:b], edge_seed[-b:], edge_seed[:, :b], edge_seed[:, -b:] = True, True, True, True
    background = _connected(edge_seed, near)
    if background.all():
        raise ImageError(f"{name}: no object found; the image is all background")
    alpha = np.where(background, 0, 255).astype(np.float32)
    rim = _dilate(background) & ~background
    alpha[rim] = np.clip(distance[rim] / (3 * KEY_TOLERANCE), 0, 1) * 255
    return Image.fromarray(np.dstack([a.astype(np.uint8), (alpha + 0.5).astype(np.uint8)]), "RGBA")


def _object_box(im: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box (left, top, right, bottom) of alpha > 0 of an RGBA image; None when all is transparent."""
    ys, xs = np.nonzero(np.asarray(im)[..., 3] > 0)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _place(im: Image.Image, box: tuple[int, int, int, int], size: int, ratio: float) -> Image.Image:
    """The box of im scaled to make its longer side ratio·size, centred on a white size×size square. RGBA -> RGB."""
    w, h = box[2] - box[0], box[3] - box[1]
    scale = size * ratio / max(w, h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    obj = im.crop(box).resize((sw, sh), Image.LANCZOS)  # Pillow resamples RGBA premultiplied: no dark fringes
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(obj, ((size - sw) // 2, (size - sh) // 2))
    return canvas.convert("RGB")


def centre_object(im: Image.Image, size: int, ratio: float, name: str = "image") -> Image.Image:
    """The reference's recentring: the bounding box of alpha > 0, centred on a transparent square whose side is the
    box's longer side / ratio, at size×size, composited on white. RGBA -> RGB. (The reference pastes on a canvas of
    that side and resizes the canvas; scaling the box straight to its final size is the same up to rounding, and
    keeps the object centred to half an output pixel rather than half an input pixel.)"""
    box = _object_box(im)
    if box is None:
        raise ImageError(f"{name}: the alpha channel is empty; there is no object to centre")
    return _place(im, box, size, ratio)


def centre_objects(images: list[Image.Image], size: int, ratio: float, name: str = "clip") -> list[Image.Image]:
    """centre_object for the frames of a clip (RGBA, one size) with one box for all: the union of the frames' object
    boxes, so the object moves as it did in the clip instead of being re-centred (and re-scaled) frame by frame."""
    boxes = [b for b in map(_object_box, images) if b is not None]
    if not boxes:
        raise ImageError(f"{name}: the alpha channel is empty in every frame; there is no object to centre")
    box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    return [_place(im, box, size, ratio) for im in images]


def cut_out(im: Image.Image, name: str) -> Image.Image:
    """The object as RGBA: an image's own transparency, else its near-uniform background keyed out (the reference
    runs a background-removal model it downloads; we don't). Images without transparency are first shrunk to fit
    THUMBNAIL, as the reference shrinks them for its remover."""
    if im.mode == "RGBA" and np.asarray(im)[..., 3].min() < 255:
        return im
    im = im.convert("RGB")
    im.thumbnail((THUMBNAIL, THUMBNAIL), Image.LANCZOS)
    return key_background(im, name)


def check_object_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise ImageError(f"--object-ratio {ratio:g}: must be in (0, 1] (the object's longer side / the view's side)")


def prepare_object(path: str | Path, size: int, ratio: float = OBJECT_RATIO) -> Image.Image:
    """The SV3D input view, size×size RGB: the object from the alpha channel of an RGBA image, or keyed off the
    near-uniform background of an RGB one (cut_out), centred at `ratio` on white. Raises ImageError with one line."""
    check_object_ratio(ratio)
    return centre_object(cut_out(load_image(path, keep_alpha=True), str(path)), size, ratio, str(path))


# Camera poses -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Camera:
    """The pinhole camera of every view, for the poses file (the model never sees it)."""
    fov_deg: float = FOV_DEG  # horizontal = vertical: the views are square
    radius: float = RADIUS  # distance from the object's centre

    def check(self) -> None:
        if not 0 < self.fov_deg < 180:
            raise OrbitError(f"--fov {self.fov_deg:g}: must be between 0 and 180 degrees")
        if not self.radius > 0:
            raise OrbitError(f"--radius {self.radius:g}: must be positive")


def camera_to_world(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """(4, 4) pose of a camera on the orbit looking at the origin, OpenGL axes, world z up."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    back = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])  # camera +z, away from origin
    right = np.cross([0.0, 0.0, 1.0], back)  # camera +x: horizontal, so the camera does not roll
    right /= np.linalg.norm(right)
    up = np.cross(back, right)  # camera +y
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, radius * back
    return pose


def view_names(orbit: Orbit) -> list[str]:
    """'00_az017.1_el+10.0.png', ...: orbit order, azimuth and elevation in degrees."""
    return [f"{i:02d}_az{a:05.1f}_el{e:+05.1f}.png"
            for i, (a, e) in enumerate(zip(orbit.azimuths_deg, orbit.elevations_deg))]


def transforms(orbit: Orbit, files: list[str], size: tuple[int, int], camera: Camera) -> dict:
    """nerfstudio's transforms.json: pinhole intrinsics (principal point at the centre, no distortion) and one
    camera-to-world matrix per view. camera_angle_x is there too, for instant-ngp and NeRF-synthetic readers."""
    w, h = size
    fov = math.radians(camera.fov_deg)
    focal = 0.5 * w / math.tan(fov / 2)
    frames = [{"file_path": f, "transform_matrix": camera_to_world(a, e, camera.radius).tolist(),
               "azimuth_deg": a, "elevation_deg": e}
              for f, a, e in zip(files, orbit.azimuths_deg, orbit.elevations_deg)]
    return {"camera_model": "OPENCV", "w": w, "h": h, "fl_x": focal, "fl_y": focal, "cx": w / 2, "cy": h / 2,
            "camera_angle_x": fov, "camera_angle_y": 2 * math.atan(0.5 * h / focal), "frames": frames}


def contact_sheet(frames: np.ndarray, labels: list[str], tile: int = 192, cols: int | None = None) -> Image.Image:
    """The views in orbit order on a grid about 16:9 (or of `cols` columns), each `tile` pixels wide with its label
    below."""
    n, h, w = frames.shape[:3]
    cols = cols or math.ceil(math.sqrt(n * 16 / 9))
    rows = math.ceil(n / cols)
    th = round(h * tile / w)
    font = ImageFont.load_default()
    label_h = font.getbbox("Ag0")[3] + 6
    sheet = Image.new("RGB", (cols * tile, rows * (th + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (f, text) in enumerate(zip(frames, labels)):
        r, c = divmod(i, cols)
        x, y = c * tile, r * (th + label_h)
        sheet.paste(Image.fromarray(f).resize((tile, th), Image.LANCZOS), (x, y))
        draw.text((x + 4, y + th + 2), text, fill=(0, 0, 0), font=font)
    return sheet


def write_orbit(target: Path, frames: np.ndarray, orbit: Orbit, camera: Camera, fmt: str, fps: float, quality: float,
                meta: dict) -> None:
    """frames: (T, H, W, 3) uint8. Writes the folder target atomically:
    orbit.{fmt} and orbit.json (metadata), views/NN_az…_el….png, contact_sheet.png, transforms.json (nerfstudio) and
    transforms_{train,val,test}.json (the NeRF-synthetic layout that the original 3D Gaussian splatting reads)."""
    h, w = frames.shape[1:3]
    names = view_names(orbit)
    with atomic_path(target, is_dir=True) as tmp:
        write_video(frames, tmp / f"orbit.{fmt}", fmt, fps, meta, quality)
        (tmp / "views").mkdir()
        for i, (f, name) in enumerate(zip(frames, names)):
            view = {"index": i, "azimuth_deg": orbit.azimuths_deg[i], "elevation_deg": orbit.elevations_deg[i]}
            Image.fromarray(f).save(tmp / "views" / name, pnginfo=png_info({**meta, "view": view}))
        labels = [f"{a:.1f}° {e:+.1f}°" for a, e in zip(orbit.azimuths_deg, orbit.elevations_deg)]
        contact_sheet(frames, labels).save(tmp / "contact_sheet.png", pnginfo=png_info(meta))
        poses = transforms(orbit, [f"views/{n}" for n in names], (w, h), camera)
        (tmp / "transforms.json").write_text(json.dumps(poses, indent=2) + "\n")
        # NeRF-synthetic readers append ".png" themselves; there is no held-out view, so every split has them all.
        synthetic = {"camera_angle_x": poses["camera_angle_x"],
                     "frames": [{"file_path": f["file_path"].removesuffix(".png"),
                                 "transform_matrix": f["transform_matrix"]} for f in poses["frames"]]}
        for split in ("train", "val", "test"):
            (tmp / f"transforms_{split}.json").write_text(json.dumps(synthetic, indent=2) + "\n")


def make(engine: Engine, image_path: str | Path, picture: Image.Image, options: Options, orbit: Orbit, seed: int,
         target: Path, camera: Camera = Camera(), object_ratio: float = OBJECT_RATIO, progress=None) -> dict:
    """Generate the orbit from a prepared picture (prepare_object) and write the folder target; return the metadata."""
    if options.format not in VIDEO_FORMATS:
        raise OrbitError(f"--format {options.format}: choose one of {', '.join(VIDEO_FORMATS)} (the views are PNGs "
                         "anyway)")
    about = {"multiview": {**asdict(orbit), **asdict(camera), "object_ratio": object_ratio,
                           "views": view_names(orbit)}}  # in the latents too: svd decode writes the same folder
    frames, meta = engine.run(picture, orbit.condition(options), seed, progress, image_path, latents_path(target),
                              about=about)
    meta["frames_written"] = len(frames)
    if progress:
        progress("write", 0, 1)
    write_orbit(target, frames, orbit, camera, options.format, options.fps, options.quality, meta)
    if progress:
        progress("write", 1, 1)
    return meta


def write_orbit_of(target: Path, frames: np.ndarray, meta: dict) -> None:
    """The orbit folder of a run from its metadata (svd decode of a multiview run's latents)."""
    recorded, o = meta["multiview"], meta["settings"]
    orbit = Orbit(recorded["kind"], tuple(recorded["azimuths_deg"]), tuple(recorded["elevations_deg"]),
                  recorded["conditioned"])
    camera = Camera(recorded["fov_deg"], recorded["radius"])
    write_orbit(target, frames, orbit, camera, o["format"], o["fps"], o["quality"], meta)
