"""One generation job, from a preset and overrides to the frames and the metadata that goes with them.
Shared by `svd generate` and (later) `svd batch`, which load the model once and call `render` per item."""

import dataclasses
import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from .decoding import auto_chunk
from .images import RESIZE_MODES, auto_size, fit, load_image, to_tensor
from .interpolate import MAX_RATIO, interpolate
from .outputs import FORMATS, apply_watermark, can_watermark, ping_pong, write_video
from .pipeline import GenerateResult, SamplingSettings, VideoPipeline
from .presets import Preset
from .runtime import free_memory


class OptionsError(ValueError):
    """Settings that cannot work; one line for the user."""


@dataclass(frozen=True)
class Options:
    frames: int
    steps: int
    fps: int  # playback rate of the file
    fps_id: int  # conditioning value, fps - 1 unless set
    motion_bucket: int
    noise_aug: float
    cfg_min: float
    cfg_max: float
    guidance: str
    width: int | None  # None: --size auto
    height: int | None
    resize: str
    decode_chunk: int  # 0: auto
    format: str
    loop: bool
    watermark: bool
    quality: float
    polars_rad: tuple[float, ...] | None = None  # SV3D_p's camera, one angle per frame (svd multiview)
    azimuths_rad: tuple[float, ...] | None = None
    interpolate: int = 1  # frames out per generated frame (svd interpolate); the file plays at fps * interpolate

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(frames=self.frames, steps=self.steps, fps_id=self.fps_id,
                                motion_bucket_id=self.motion_bucket, noise_aug=self.noise_aug, cfg_min=self.cfg_min,
                                cfg_max=self.cfg_max, guidance=self.guidance, decode_chunk=self.decode_chunk,
                                polars_rad=self.polars_rad, azimuths_rad=self.azimuths_rad)


def parse_size(text: str) -> tuple[int, int] | None:
    if text == "auto":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise OptionsError(f"--size {text}: expected WIDTHxHEIGHT, e.g. 1024x576, or auto") from None
    if w <= 0 or h <= 0 or w % 64 or h % 64:
        raise OptionsError(f"--size {text}: width and height must be positive multiples of 64")
    return w, h


def resolve_options(preset: Preset, *, frames=None, steps=None, fps=None, fps_id=None, motion=None, noise_aug=None,
                    cfg_min=None, cfg_max=None, size=None, resize="crop", decode_chunk=None, fmt="mp4", loop=False,
                    watermark=True, quality=8.0, interpolate=None) -> tuple[Options, list[str]]:
    """Flags override preset values. Returns the options and warnings (settings outside the trained range)."""
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    if decode_chunk == "auto":
        decode_chunk = 0
    elif isinstance(decode_chunk, str):
        try:
            decode_chunk = int(decode_chunk)
        except ValueError:
            raise OptionsError(f"--decode-chunk {decode_chunk}: a number of frames, or auto") from None
        if decode_chunk < 1:
            raise OptionsError(f"--decode-chunk {decode_chunk}: must be at least 1, or auto")
    w, h = (preset.width, preset.height) if size is None else (parse_size(size) or (None, None))
    o = Options(frames=pick(frames, preset.frames), steps=pick(steps, preset.steps), fps=pick(fps, preset.fps),
                fps_id=pick(fps_id, pick(fps, preset.fps) - 1), motion_bucket=pick(motion, preset.motion_bucket),
                noise_aug=pick(noise_aug, preset.noise_aug), cfg_min=pick(cfg_min, preset.cfg_min),
                cfg_max=pick(cfg_max, preset.cfg_max), guidance=preset.guidance, width=w, height=h,
                resize=resize, decode_chunk=pick(decode_chunk, preset.decode_chunk), format=fmt, loop=loop,
                watermark=watermark, quality=quality, interpolate=pick(interpolate, 1))
    for name, value in (("--frames", o.frames), ("--steps", o.steps), ("--fps", o.fps)):
        if value < 1:
            raise OptionsError(f"{name} {value}: must be at least 1")
    if o.noise_aug < 0 or o.motion_bucket < 0:
        raise OptionsError("--noise-aug and --motion must not be negative")
    if o.resize not in RESIZE_MODES:
        raise OptionsError(f"--resize {o.resize}: choose one of {', '.join(RESIZE_MODES)}")
    if o.format not in FORMATS:
        raise OptionsError(f"--format {o.format}: choose one of {', '.join(FORMATS)}")
    if not 0 <= o.quality <= 10:
        raise OptionsError(f"--quality {o.quality}: must be between 0 and 10")
    if not 1 <= o.interpolate <= MAX_RATIO:
        raise OptionsError(f"--interpolate {o.interpolate}: 1 (off) or a whole number up to {MAX_RATIO}")
    if o.cfg_min <= 0 or o.cfg_max <= 0:
        raise OptionsError("--cfg-min and --cfg-max must be positive")
    warnings = []
    if o.motion_bucket > 255:
        warnings.append(f"motion bucket {o.motion_bucket} is above the trained range 0-255")
    if not 5 <= o.fps_id <= 30:
        warnings.append(f"fps conditioning {o.fps_id} (fps - 1) is outside the trained range 5-30")
    if w is not None and (w, h) != (preset.width, preset.height):
        warnings.append(f"{w}x{h} is not the trained size {preset.width}x{preset.height}; "
                        "results may degrade (consider raising --noise-aug)")
    return o, warnings


def prepare_image(path: str | Path, o: Options, preset: Preset) -> Image.Image:
    im = load_image(path)
    w, h = (o.width, o.height) if o.width else auto_size(im, preset.width * preset.height)
    return fit(im, w, h, o.resize)


def to_uint8(frames) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    return (frames.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def render(pipe: VideoPipeline, image: Image.Image, o: Options, seed: int, progress=None) -> tuple[np.ndarray,
                                                                                                  GenerateResult]:
    result = pipe.generate(to_tensor(image), o.sampling(), seed, progress)
    frames = to_uint8(result.frames)
    if o.interpolate > 1:  # before the watermark, so that the new frames carry it too
        frames = interpolate(frames, o.fps, factor=o.interpolate, progress=progress).frames
    if o.watermark:
        frames = apply_watermark(frames)
    return (ping_pong(frames) if o.loop else frames), result


def metadata(o: Options, preset: Preset, seed: int, image_path: str, size: tuple[int, int], weights: Path,
             weights_sha256: str, architecture: str, **engine) -> dict:
    """engine: how it ran (device, dtype, weights_dtype, offload, decode_overlap, ...), recorded as given."""
    return {"svd_version": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "input": str(image_path), "seed": seed, "preset": preset.name, "architecture": architecture,
            "weights": str(weights), "weights_sha256": weights_sha256, "width": size[0], "height": size[1],
            **engine, "settings": dataclasses.asdict(o)}


@dataclass
class Engine:
    """A loaded pipeline and how it runs, making one output per call (svd generate makes one, svd batch many)."""
    preset: Preset
    pipe: VideoPipeline
    weights: Path
    weights_sha256: str
    info: dict  # how it runs, recorded in every output's metadata (device, dtype, weights_dtype, offload, ...)

    def make(self, image_path: str | Path, o: Options, seed: int, target: Path, progress=None,
             picture: Image.Image | None = None) -> dict:
        """Fit the image (unless the caller already did: picture), generate, write target (and its sidecar)
        atomically; return the metadata. Raises ImageError/OptionsError for the item's own faults."""
        picture = picture if picture is not None else prepare_image(image_path, o, self.preset)
        frames, o = self.run(picture, o, seed, progress)
        meta = metadata(o, self.preset, seed, str(image_path), picture.size, self.weights, self.weights_sha256,
                        self.pipe.model.architecture.name, **self.info)
        meta["frames_written"], meta["fps_written"] = len(frames), o.fps * o.interpolate
        if progress:
            progress("write", 0, 1)
        write_video(frames, target, o.format, meta["fps_written"], meta, o.quality)
        if progress:
            progress("write", 1, 1)
        return meta

    def run(self, picture: Image.Image, o: Options, seed: int, progress=None) -> tuple[np.ndarray, Options]:
        """Frames (T, H, W, 3) uint8 for a fitted picture, and the options as they ran."""
        if o.watermark and not can_watermark(*picture.size):
            o = dataclasses.replace(o, watermark=False)  # invisible-watermark refuses frames under 256x256
        # Sizes beyond the trained one are decoded in tiles of the trained size (blended over 8 latent pixels).
        w, h = picture.size
        if o.decode_chunk == 0:  # auto: the most frames whose decoder activations fit in free memory
            o = dataclasses.replace(o, decode_chunk=auto_chunk(o.frames, h, w, free_memory(self.pipe.device)))
        beyond = w > self.preset.width or h > self.preset.height
        self.pipe.decode_tile = (self.preset.height // 8, self.preset.width // 8) if beyond else None
        frames, _ = render(self.pipe, picture, o, seed, progress)
        return frames, o
