"""One generation job, from a preset and overrides to the frames and the metadata that goes with them.
Shared by `svd generate`, `svd batch` and `svd multiview`, which load the model once (Engine) and make one output
per call, and by `svd decode`, which finishes a clip from its saved latents.

The sampled latents are the expensive part of a clip. They are written to NAME.latents.safetensors beside the
output when decoding fails for memory (the command then names the `svd decode` that finishes the job), or always
when asked (save_latents), so a clip can be decoded again with other settings or on another device."""

import dataclasses
import datetime
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..checkpoints.presets import Preset
from ..checkpoints.safetensors_io import CheckpointError, SafetensorsFile
from ..checkpoints.saving import write_safetensors
from ..media.images import RESIZE_MODES, auto_size, fit, load_image, to_tensor, to_uint8
from ..media.outputs import FORMATS, apply_watermark, can_watermark, latents_path, ping_pong, write_video
from ..runtime.settings import SettingsError, at_least, one_of
from ..video.interpolate import MAX_RATIO, interpolate
from .decoding import DecodeOutOfMemory
from .pipeline import KEYFRAME_METHODS, GenerateResult, SamplingSettings, VideoPipeline, with_input_view
from .sampling import LCM_TRAINING_LEVELS, SAMPLERS, SCHEDULES

LATENTS_KEY = "svdcli.latents"  # the run's metadata inside a latents file


class OptionsError(SettingsError):
    """Generation settings that cannot work; one line for the user, naming the setting."""


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
    decode_chunk: int  # 0: auto (the most frames that fit in free memory)
    format: str
    loop: bool  # a generated loop: the clip is sampled back to its first frame (written without the repeat)
    watermark: bool
    quality: float
    polars_rad: tuple[float, ...] | None = None  # SV3D_p's camera, one angle per frame (svd multiview)
    azimuths_rad: tuple[float, ...] | None = None
    interpolate: int = 1  # frames out per generated frame (svd interpolate); the file plays at fps * interpolate
    end: str | None = None  # the last frame's image (a keyframe), as given
    keyframes: str = "fusion"  # how a clip with an end (or a loop) is sampled: pipeline.KEYFRAME_METHODS
    window: int = 0  # frames sampled at once (the model's trained length); 0: all of them
    overlap: int = 4  # frames a window shares with the one before
    pingpong: bool = False  # play forward then backward
    sampler: str = "euler"  # sampling.SAMPLERS
    schedule: str = "karras"  # sampling.SCHEDULES
    cache: int = 0  # the whole U-Net every this many calls, its deep features reused in between; 0 or 1: off

    def __post_init__(self):  # settings that cannot work (those outside the trained range only warn)
        try:
            self._check()
        except SettingsError as error:
            raise OptionsError(error.setting, error.detail) from None

    def _check(self) -> None:
        at_least(self, ("frames",), 2)
        at_least(self, ("steps", "fps"))
        at_least(self, ("noise_aug", "motion_bucket", "decode_chunk"), 0)
        one_of("resize", self.resize, RESIZE_MODES)
        one_of("format", self.format, FORMATS)
        if not 0 <= self.quality <= 10:
            raise SettingsError("quality", f"{self.quality}: must be between 0 and 10")
        if not 1 <= self.interpolate <= MAX_RATIO:
            raise SettingsError("interpolate", f"{self.interpolate}: 1 (off) or a whole number up to {MAX_RATIO}")
        for name in ("cfg_min", "cfg_max"):
            if not getattr(self, name) > 0:
                raise SettingsError(name, f"{getattr(self, name)}: must be positive")
        one_of("keyframes", self.keyframes, KEYFRAME_METHODS)
        one_of("sampler", self.sampler, SAMPLERS)
        one_of("schedule", self.schedule, SCHEDULES)
        at_least(self, ("cache",), 0)
        if self.sampler == "lcm":
            if self.schedule != "karras":
                raise SettingsError("schedule", f"{self.schedule}: the lcm sampler steps through the noise levels its "
                                    "model was distilled on (a subset of the karras grid)")
            if self.steps > LCM_TRAINING_LEVELS:
                raise SettingsError("steps", f"{self.steps}: the lcm sampler takes at most {LCM_TRAINING_LEVELS} "
                                    "(the noise levels its model was distilled on; 2 to 8 are its use)")
            if self.cache > 1:
                raise SettingsError("cache", f"{self.cache}: not with the lcm sampler, whose few steps are far apart "
                                    "(4 steps: σ 700, 129, 14, 0.5): the deep features of one say little of the next")
        if self.keyframes == "bidirectional" and (self.end or self.loop) and self.sampler != "euler":
            raise SettingsError("sampler", f"{self.sampler}: keyframes bidirectional has its own sampler (euler)")
        if self.loop and self.pingpong:
            raise SettingsError("loop", "(a generated loop) and pingpong (forward then backward) exclude each other: "
                                "choose one")
        if self.loop and self.end:
            raise SettingsError("end", "and loop exclude each other (a loop ends on its first frame): give one")
        if self.windows:
            if not 1 <= self.overlap < self.window:
                raise SettingsError("overlap", f"{self.overlap}: windows of {self.window} frames share 1 to "
                                    f"{self.window - 1} frames")
            if self.keyframes == "bidirectional" and (self.end or self.loop):
                raise SettingsError("keyframes", f"bidirectional samples one window ({self.window} frames): use "
                                    "fusion for longer clips")

    @property
    def windows(self) -> bool:
        """Whether the clip is longer than one window (sampled in overlapping windows)."""
        return 0 < self.window < self.frames

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(frames=self.frames, steps=self.steps, fps_id=self.fps_id,
                                motion_bucket_id=self.motion_bucket, noise_aug=self.noise_aug, cfg_min=self.cfg_min,
                                cfg_max=self.cfg_max, guidance=self.guidance, decode_chunk=self.decode_chunk,
                                polars_rad=self.polars_rad, azimuths_rad=self.azimuths_rad, window=self.window,
                                overlap=self.overlap, keyframes=self.keyframes, sampler=self.sampler,
                                schedule=self.schedule, cache=self.cache)


def parse_size(text: str) -> tuple[int, int] | None:
    if text == "auto":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise OptionsError("size", f"{text}: expected WIDTHxHEIGHT, e.g. 1024x576, or auto") from None
    if w <= 0 or h <= 0 or w % 64 or h % 64:
        raise OptionsError("size", f"{text}: width and height must be positive multiples of 64")
    return w, h


def resolve_options(preset: Preset, *, frames=None, steps=None, fps=None, fps_id=None, motion=None, noise_aug=None,
                    cfg_min=None, cfg_max=None, size=None, resize="crop", decode_chunk=None, fmt="mp4", loop=False,
                    watermark=True, quality=8.0, interpolate=None, end=None, keyframes=None, overlap=None,
                    pingpong=False, sampler=None, schedule=None, cache=None) -> tuple[Options, list[str]]:
    """Flags override preset values. Returns the options and warnings (settings outside the trained range).
    Clips longer than the preset's frames are sampled in windows of that many (the trained length)."""
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    if isinstance(decode_chunk, str):
        decode_chunk = parse_decode_chunk(decode_chunk)
    w, h = (preset.width, preset.height) if size is None else (parse_size(size) or (None, None))
    o = Options(frames=pick(frames, preset.frames), steps=pick(steps, preset.steps), fps=pick(fps, preset.fps),
                fps_id=pick(fps_id, preset.fps_id if fps is None else fps - 1),
                motion_bucket=pick(motion, preset.motion_bucket),
                noise_aug=pick(noise_aug, preset.noise_aug), cfg_min=pick(cfg_min, preset.cfg_min),
                cfg_max=pick(cfg_max, preset.cfg_max), guidance=preset.guidance, width=w, height=h,
                resize=resize, decode_chunk=pick(decode_chunk, preset.decode_chunk), format=fmt, loop=loop,
                watermark=watermark, quality=quality, interpolate=pick(interpolate, 1),
                end=None if end is None else str(end), keyframes=pick(keyframes, "fusion"), window=preset.frames,
                overlap=pick(overlap, default_overlap(preset.frames)), pingpong=pingpong,
                sampler=pick(sampler, preset.sampler), schedule=pick(schedule, "karras"), cache=pick(cache, 0))
    distilled = preset.sampler == "lcm"  # a consistency-distilled U-Net
    if o.sampler == "lcm" and not distilled:
        raise OptionsError("sampler", f"lcm: the {preset.name} model is not consistency-distilled, and the lcm "
                           "sampler keeps each step's estimate as it is, which for such a model is a blur; use a "
                           "distilled model (preset animatelcm-svd-xt) or another sampler")
    if preset.architecture.startswith("sv3d") and (o.end or o.loop or o.windows):
        what = "an end frame" if o.end else "a generated loop" if o.loop else f"more than {preset.frames} frames"
        raise OptionsError("preset", f"{preset.name} makes orbits of {preset.frames} views, not {what}: use an "
                           "SVD preset (an orbit can play as a ping-pong loop)")
    warnings = []
    if distilled and o.sampler != "lcm":
        warnings.append(f"{preset.name} is consistency-distilled for the lcm sampler; {o.sampler} at {o.steps} "
                        "steps is outside what it was trained for")
    if o.motion_bucket > 255:
        warnings.append(f"motion bucket {o.motion_bucket} is above the trained range 0-255")
    if not 5 <= o.fps_id <= 30:
        warnings.append(f"fps conditioning {o.fps_id} (fps - 1) is outside the trained range 5-30")
    if w is not None and (w, h) != (preset.width, preset.height):
        warnings.append(f"{w}x{h} is not the trained size {preset.width}x{preset.height}; "
                        "results may degrade (consider raising --noise-aug)")
    return o, warnings


def default_overlap(window: int) -> int:
    """Frames neighbouring windows share unless set: 4 for the released models' 14 and 25 (docs/generate.md), a
    third of shorter windows."""
    return max(1, min(4, window // 3))


def parse_decode_chunk(text: str) -> int:
    """--decode-chunk: a number of frames, or auto (0)."""
    if text == "auto":
        return 0
    try:
        chunk = int(text)
    except ValueError:
        raise OptionsError("decode_chunk", f"{text}: a number of frames, or auto") from None
    if chunk < 1:
        raise OptionsError("decode_chunk", f"{text}: must be at least 1, or auto")
    return chunk


def prepare_image(path: str | Path, options: Options, preset: Preset) -> Image.Image:
    im = load_image(path)
    w, h = (options.width, options.height) if options.width else auto_size(im, preset.width * preset.height)
    return fit(im, w, h, options.resize)


def prepare_end(path: str | Path, size: tuple[int, int], options: Options) -> Image.Image:
    """The end keyframe, fitted to the start's fitted size (width, height) the way the start was (options.resize)."""
    return fit(load_image(path), *size, options.resize)


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    return to_uint8(frames.permute(0, 2, 3, 1).numpy())


def finish_frames(frames, options: Options, progress=None) -> np.ndarray:
    """Decoded frames (T, 3, H, W) in [0, 1] -> what is written: uint8, interpolated, watermarked, looped."""
    frames = frames_to_uint8(frames)
    if options.interpolate > 1:  # before the watermark, so that the new frames carry it too
        frames = interpolate(frames, options.fps, factor=options.interpolate, progress=progress).frames
    if options.watermark:
        frames = apply_watermark(frames)
    if options.loop:  # the last frame is the first again: left out, so that playing it on repeat has no stall
        frames = frames[:-1]
    return ping_pong(frames) if options.pingpong else frames


def render(pipe: VideoPipeline, image: Image.Image, options: Options, seed: int,
           progress=None) -> tuple[np.ndarray, GenerateResult]:
    result = pipe.generate(to_tensor(image), options.sampling(), seed, progress)
    return finish_frames(result.frames, options, progress), result


def metadata(options: Options, preset: Preset, seed: int, image_path: str, size: tuple[int, int], weights: Path,
             weights_sha256: str, architecture: str, **engine) -> dict:
    """engine: how it ran (device, dtype, weights_dtype, offload, decode_overlap, ...), recorded as given."""
    return {"svd_version": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "input": str(image_path), "seed": seed, "preset": preset.name, "architecture": architecture,
            "weights": str(weights), "weights_sha256": weights_sha256, "width": size[0], "height": size[1],
            **engine, "settings": dataclasses.asdict(options)}


class LatentsKept(RuntimeError):
    """Decoding failed after sampling; the latents were written for `svd decode`. One line for the user."""

    def __init__(self, reason: str, path: Path):
        self.path = path
        super().__init__(f"{reason}; the sampled latents are in {path}: finish with `svd decode {path} --device cpu`")


class LatentsError(ValueError):
    """A file that is not a latents file of svd; one line for the user."""


def write_latents(path: Path, latents: torch.Tensor, picture: Image.Image, meta: dict) -> None:
    """The sampled latents (T, 4, h, w), the fitted input picture (SV3D's last view is the input itself) and the
    run's metadata, written atomically."""
    tensors = {"latents": latents.detach().float().cpu().contiguous(),
               "picture": torch.from_numpy(np.array(picture.convert("RGB")))}
    write_safetensors(tensors, path, {LATENTS_KEY: json.dumps(meta)})


def read_latents(path: str | Path) -> tuple[torch.Tensor, Image.Image, dict]:
    """(latents, picture, the run's metadata) of a file write_latents wrote; LatentsError for anything else."""
    try:
        f = SafetensorsFile(path)
        meta = json.loads(f.metadata[LATENTS_KEY])
        latents, picture = f.read("latents").float(), Image.fromarray(f.read("picture").numpy())
    except (CheckpointError, KeyError, json.JSONDecodeError, TypeError, ValueError) as e:
        reason = str(e) if isinstance(e, CheckpointError) else f"{path}: not a latents file of svd"
        raise LatentsError(reason) from None
    if latents.dim() != 4 or not isinstance(meta.get("settings"), dict):
        raise LatentsError(f"{path}: not a latents file of svd")
    return latents, picture, meta


def options_of(meta: dict) -> Options:
    """The Options a run recorded in its metadata."""
    known = {f.name for f in dataclasses.fields(Options)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items() if k in known}
    try:
        return Options(**values)
    except (TypeError, SettingsError):
        raise LatentsError("the file's settings are not those of this svd version") from None


@dataclass
class Engine:
    """A loaded pipeline and how it runs, making one output per call (svd generate makes one, svd batch many).
    Made by open_engine."""
    preset: Preset | None
    pipe: VideoPipeline
    weights: Path
    info: dict  # how it runs, recorded in every output's metadata (device, dtype, weights_dtype, offload, ...)

    @functools.cached_property
    def weights_sha256(self) -> str:
        """The weights' hash for the metadata, computed when first asked (svd inspect never asks): cached per file
        by checkpoints.weights; "random" for random weights."""
        from ..checkpoints.weights import weights_sha256

        files = self.pipe.model.files
        return weights_sha256(files) if files else "random"

    def make(self, image_path: str | Path, options: Options, seed: int, target: Path, progress=None,
             picture: Image.Image | None = None, save_latents: bool = False,
             end_picture: Image.Image | None = None) -> dict:
        """Fit the image and the end keyframe, if any (unless the caller already did: picture, end_picture),
        generate, write target (and its sidecar) atomically; return the metadata. Raises ImageError/OptionsError
        for the item's own faults, LatentsKept when decoding failed (the latents then wait beside target).
        save_latents: write them there in any case."""
        picture = picture if picture is not None else prepare_image(image_path, options, self.preset)
        if options.end and end_picture is None:
            end_picture = prepare_end(options.end, picture.size, options)
        frames, meta = self.run(picture, options, seed, progress, image_path, latents_path(target), save_latents,
                                end_picture=end_picture)
        options = options_of(meta)
        meta["frames_written"], meta["fps_written"] = len(frames), options.fps * options.interpolate
        if progress:
            progress("write", 0, 1)
        write_video(frames, target, options.format, meta["fps_written"], meta, options.quality)
        if progress:
            progress("write", 1, 1)
        return meta

    def sample(self, picture: Image.Image, options: Options, seed: int, progress=None,
               end_picture: Image.Image | None = None) -> torch.Tensor:
        """The denoised latents of a fitted picture (on the CPU): the expensive part of run, and all that the second
        process of a guidance split does (split_guidance)."""
        if options.end and (end_picture is None or end_picture.size != picture.size):
            raise ValueError("options.end needs the end keyframe fitted to the picture's size (prepare_end)")
        image = to_tensor(picture)
        end = to_tensor(end_picture) if options.end else image if options.loop else None
        latents = self.pipe.sample(image, options.sampling(), seed, progress, end=end).cpu()
        if self.pipe.guidance_split is not None:
            self._leave_split()
        return latents

    def _leave_split(self) -> None:
        """Both processes leave the group once sampled (rank 0 before it decodes): a process that exits with the
        group open can abort in its teardown (gloo: "terminate called without an active exception"), and torchrun
        then stops the other, losing the output. The barrier first: neither closes while the other still gathers."""
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        self.pipe.guidance_split = None

    def split_guidance(self) -> int:
        """Join the process group of torchrun's two processes (NCCL between GPUs, gloo on the CPU) and evaluate
        one half of guidance in each for the next sampling (pipeline.GuidanceSplit; the group is left after it);
        returns this process's rank. Rank 0 runs the job as one process would; rank 1 only samples alongside it."""
        import torch.distributed as dist

        from .pipeline import GuidanceSplit

        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.pipe.device.type == "cuda" else "gloo")
        if dist.get_world_size() != 2:
            raise ValueError(f"a guidance split runs in 2 processes, not {dist.get_world_size()}")
        self.pipe.guidance_split = GuidanceSplit(dist.get_rank())
        self.info["guidance_split"] = True
        return dist.get_rank()

    def run(self, picture: Image.Image, options: Options, seed: int, progress=None, image_path: str | Path = "",
            keep_latents: Path | None = None, save_latents: bool = False, about: dict | None = None,
            end_picture: Image.Image | None = None) -> tuple[np.ndarray, dict]:
        """Frames (T, H, W, 3) uint8 for a fitted picture, and the run's metadata (its settings as they ran).
        end_picture: the fitted end keyframe, where options.end names one (prepare_end).

        keep_latents: where the sampled latents are written if decoding runs out of memory in every plan (then
        LatentsKept is raised), and always with save_latents. Without it such a failure raises DecodeOutOfMemory.
        about: more metadata for the output and the latents (svd multiview's orbit)."""
        if options.watermark and not can_watermark(*picture.size):
            options = dataclasses.replace(options, watermark=False)  # invisible-watermark refuses frames under 256x256
        # Sizes beyond the trained one are decoded in tiles of the trained size (blended over 8 latent pixels).
        w, h = picture.size
        down = self.pipe.downscale
        beyond = w > self.preset.width or h > self.preset.height
        tile = (self.preset.height // down, self.preset.width // down) if beyond else None
        meta = metadata(options, self.preset, seed, str(image_path), picture.size, self.weights, self.weights_sha256,
                        self.pipe.model.architecture.name, **self.info, decode_tile=list(tile) if tile else None)
        meta.update(about or {})
        image = to_tensor(picture)
        latents = self.sample(picture, options, seed, progress, end_picture)
        meta["unet_calls"], meta["flops"] = self.pipe.unet_calls, self.pipe.unet_flops
        if save_latents:
            write_latents(keep_latents, latents, picture, meta)
        try:
            decoded = self.pipe.decode(latents, options.decode_chunk, progress, tile, most=decode_most(options))
        except DecodeOutOfMemory as e:
            if keep_latents is None:
                raise
            if not save_latents:
                write_latents(keep_latents, latents, picture, meta)
            raise LatentsKept(str(e), keep_latents) from None
        frames = finish_frames(with_input_view(meta["architecture"], decoded.frames, image), options, progress)
        return frames, decoded_metadata(meta, options, decoded)


@dataclass(frozen=True)
class EngineSettings:
    """How a model runs. Checked when made (SettingsError, naming the setting); resolve() decides what depends on
    the machine (device, dtype, whether offloading has anything to do, the attention slice)."""
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    dtype: str = "auto"  # compute dtype: auto (runtime.devices.resolve_dtype), fp32, fp16, bf16
    offload: str = "none"  # none, model, sequential (runtime/offload.py)
    weights_dtype: str | None = None  # storage of the U-Net's and image encoder's matrices; None: the compute dtype
    attention_slice: str = "auto"  # tokens per transformer slice: auto, none, or a number
    decode_overlap: int = 4  # frames shared by neighbouring decode windows
    compile: bool = False
    loras: tuple[str, ...] = ()  # FILE[:SCALE] or a shipped LoRA's name
    seed: int = 0  # of the random weights, when there is no checkpoint (svd bench)

    def __post_init__(self):
        from ..runtime.offload import MODES
        from ..runtime.quantize import WEIGHT_DTYPES

        one_of("offload", self.offload, MODES)
        if self.compile and self.offload == "sequential":  # refused on every machine, so a script fails alike
            raise SettingsError("compile", "cannot be combined with offload sequential (the U-Net's weights change "
                                "at every block); use offload model with compile, or sequential without it")
        if self.weights_dtype is not None:
            one_of("weights_dtype", self.weights_dtype, WEIGHT_DTYPES)
        if self.decode_overlap < 0:
            raise SettingsError("decode_overlap", "must not be negative")
        if self.attention_slice not in ("auto", "none") and not (str(self.attention_slice).isdigit() and
                                                                 int(self.attention_slice) > 0):
            raise SettingsError("attention_slice", f"{self.attention_slice}: auto, none, or a positive number of "
                                "tokens")

    def resolve(self) -> "ResolvedEngine":
        from ..runtime.devices import attention_slice_for, free_memory, resolve_device, resolve_dtype
        from ..runtime.quantize import check_int8

        device = resolve_device(self.device)
        if self.weights_dtype == "int8":
            check_int8(device)
        if self.attention_slice == "auto":
            tokens = attention_slice_for(free_memory(device))
        else:
            tokens = None if self.attention_slice == "none" else int(self.attention_slice)
        # without an accelerator there is nothing to offload to: the modes would only add bookkeeping
        offload = self.offload if device.type != "cpu" else "none"
        return ResolvedEngine(device, resolve_dtype(self.dtype, device), offload, tokens)


@dataclass(frozen=True)
class ResolvedEngine:
    device: torch.device
    dtype: torch.dtype
    offload: str  # "none" on the CPU whatever was asked
    max_tokens: int | None


def open_engine(preset: Preset | None, weights: Path | None, settings: EngineSettings = EngineSettings(),
                progress=None, components: tuple[str, ...] | None = None, architecture: str | None = None) -> Engine:
    """The one place a model is assembled: the checkpoint loaded (or, with weights None, the preset's architecture
    with random weights drawn on the device: svd bench), its LoRAs attached (before the pipeline, so that a compiled
    U-Net includes them), the pipeline on its device, and how it runs recorded for every output's metadata.

    preset None: the checkpoint's architecture, which must be `architecture` if given (svd inspect, svd decode).
    components: load only these (svd decode needs the VAE); the others stay on the meta device. Raises
    CheckpointError, LoraError, QuantizeError."""
    from ..checkpoints.loader import load, random_model
    from ..checkpoints.weights import base_weights
    from .lora import apply_loras

    run = settings.resolve()
    home = run.device if run.offload == "none" else torch.device("cpu")
    if weights is None:
        model = random_model(_architecture(preset), device=run.device, dtype=run.dtype,
                             weights_dtype=settings.weights_dtype, seed=settings.seed, progress=progress)
        if home != run.device:  # drawn on the accelerator (fast), kept where the offload mode keeps weights
            for module in model.components().values():
                module.to(home)
    else:
        base = base_weights(preset) if preset else None  # a U-Net alone runs with its base model's VAE and encoder
        model = load(base or weights, device=home, dtype=run.dtype, weights_dtype=settings.weights_dtype,
                     architecture=preset.architecture if preset else architecture, components=components,
                     unet=weights if base else None, progress=progress)
    apply_loras(model.unet, model.architecture, list(settings.loras), preset.name if preset else None)
    pipe = VideoPipeline(model, run.device, run.dtype, offload=run.offload, decode_overlap=settings.decode_overlap,
                         attention_slice=run.max_tokens, compile=settings.compile)
    name = str(run.dtype).removeprefix("torch.")
    info = {"device": str(run.device), "dtype": name, "weights_dtype": model.weights_dtype or name,
            "offload": run.offload, "decode_overlap": settings.decode_overlap, "compile": settings.compile,
            "loras": list(settings.loras)}
    return Engine(preset, pipe, Path(weights) if weights is not None else Path("random"), info)


def _architecture(preset: Preset):
    """The architecture random weights are drawn for: the released one, or, for a preset of a local model (the demo
    model), the one its file's shapes give."""
    from ..checkpoints.architectures import ARCHITECTURES
    from ..checkpoints.loader import architecture_of
    from ..checkpoints.weights import resolve_weights

    return ARCHITECTURES[preset.architecture] if preset.weights is None else \
        architecture_of(resolve_weights(None, preset))


def decode_most(options: Options) -> int:
    """The most frames an automatic decode takes at once: a window's, for clips sampled in windows (so that their
    peak memory is a window's, however long the clip); 0 (no bound) otherwise."""
    return options.window if options.windows else 0


def decoded_metadata(meta: dict, options: Options, decoded) -> dict:
    """The run's metadata once decoded: the frames per window it came to, and any retries on the way."""
    options = dataclasses.replace(options, decode_chunk=decoded.plan.chunk)
    return {**meta, "settings": dataclasses.asdict(options),
            "decode": {"chunk": decoded.plan.chunk, "tile": list(decoded.plan.tile) if decoded.plan.tile else None,
                       "retries": decoded.retries}}


def decode_saved(latents: torch.Tensor, picture: Image.Image, meta: dict, engine: Engine, chunk: int | None = None,
                 progress=None) -> tuple[np.ndarray, dict]:
    """Frames and metadata from saved latents (read_latents) with an engine holding the model's VAE (open_engine
    with components=("vae",)), on any device: the same frames the run that sampled them would have written.
    chunk: the run's own unless given (0: auto); the overlap is the engine's."""
    o = options_of(meta)
    chunk = o.decode_chunk if chunk is None else chunk
    tile = tuple(meta["decode_tile"]) if meta.get("decode_tile") else None
    decoded = engine.pipe.decode(latents, chunk, progress, tile, most=decode_most(o))
    frames = finish_frames(with_input_view(meta["architecture"], decoded.frames, to_tensor(picture)), o, progress)
    meta = decoded_metadata({**meta, "decode_device": engine.info["device"],
                             "decode_overlap": engine.pipe.decode_overlap}, o, decoded)
    meta["frames_written"], meta["fps_written"] = len(frames), o.fps * o.interpolate
    return frames, meta
