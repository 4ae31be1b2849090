"""What `svd generate` and `svd batch` share: the option definitions and opening the engine."""

import re

import typer

from .app import fail, note

# Sampling settings (None: the preset's value).
PRESET = typer.Option(None, help="Preset name (svd, svd-xt, svd-xt-1.1, demo, ...) or a YAML file. Default: "
                                  "svd-xt when its weights are downloaded or --weights is given, else the built-in "
                                  "demo model.")
WEIGHTS = typer.Option(None, help="Checkpoint file, diffusers folder, or hub repo id in the local cache. "
                                  "Default: the preset's weights from the hub cache.")
FRAMES = typer.Option(None, help="Number of frames (preset: 14 for SVD, 25 for SVD-XT). More than the preset's are "
                      "sampled in windows of the preset's length that share --overlap frames, so the motion runs "
                      "on across the joins; memory stays that of one window.")
STEPS = typer.Option(None, help="Denoising steps.")
FPS = typer.Option(None, help="Playback rate of the file. The model is conditioned on fps - 1 (the reference's "
                              "convention; diffusers uses it too).")
FPS_ID = typer.Option(None, "--fps-id", help="Raw fps conditioning value, for experts (default fps - 1).")
MOTION = typer.Option(None, help="Motion bucket id: more motion when higher (trained 0-255; default 127).")
NOISE_AUG = typer.Option(None, "--noise-aug", help="Noise added to the conditioning image (0.02).")
CFG_MIN = typer.Option(None, "--cfg-min", help="Guidance scale of the first frame.")
CFG_MAX = typer.Option(None, "--cfg-max", help="Guidance scale of the last frame.")
SIZE = typer.Option(None, help="WIDTHxHEIGHT in multiples of 64, or auto (keep the image's aspect at the preset's "
                               "pixel count). Default: the preset's trained size.")
RESIZE = typer.Option("crop", help="Fit the image by crop (cover, centre-crop), pad or stretch.")
DECODE_CHUNK = typer.Option(None, "--decode-chunk", help="Frames decoded at once (lower: less memory), or auto: "
                            "the most that fit in free memory (the presets' default). Out of memory, decoding "
                            "retries with fewer frames, then in tiles.")
FORMAT = typer.Option("mp4", "--format", help="mp4, gif, webp, or png (a folder of frames).")
QUALITY = typer.Option(8.0, help="MP4 quality, 0-10.")
LOOP = typer.Option(False, "--loop", help="A seamless loop: the clip is sampled to return to its first frame, and "
                    "written without the repeated frame, so it plays on repeat with no cut.")
PINGPONG = typer.Option(False, "--pingpong", help="Play forward then backward (the clip as generated, then "
                        "reversed).")
END = typer.Option(None, "--end", help="Last frame: an image the clip goes to from the input image (keyframe "
                   "in-betweening). Fitted like the input (--size, --resize), to the input's size.")
KEYFRAMES = typer.Option(None, "--keyframes", help="How a clip with --end or --loop is sampled: fusion (default: "
                         "the input's and the end's estimates blended over the frames, both ends held) or "
                         "bidirectional (ViBiDSampler; one window only). docs/generate.md compares them.")
SAMPLER = typer.Option(None, "--sampler", help="euler (the reference's, default), euler-a (Euler ancestral), heun "
                       "(2 U-Net passes a step), dpmpp-2m, dpmpp-2m-sde (DPM++ 2M and its SDE), lcm (consistency "
                       "sampling, for distilled models: the animatelcm presets' default). Stochastic ones draw from "
                       "the seed too. docs/speed.md compares them.")
CACHE = typer.Option(None, "--cache", help="Run the whole U-Net every N steps and reuse its deep features in "
                     "between (DeepCache; 3 is its setting for SVD): fewer FLOPs, some fidelity (docs/speed.md). "
                     "Default off.")
SCHEDULE = typer.Option(None, "--schedule", help="The noise levels of the steps: karras (the reference's, "
                        "default) or exponential (evenly spaced in log sigma).")
OVERLAP = typer.Option(None, "--overlap", help="Frames shared by neighbouring windows of a clip longer than the "
                       "preset's length (default 4; a third of windows shorter than 12).")
INTERPOLATE = typer.Option(None, "--interpolate", help="Raise the frame rate N times by optical-flow interpolation "
                           "(svd interpolate): 25 frames at --fps 6 with N = 4 become 97 at 24 fps. The model is "
                           "still conditioned on --fps.")
NO_WATERMARK = typer.Option(False, "--no-watermark", help="Skip the reference's invisible watermark.")
# How it runs.
DEVICE = typer.Option("auto", help="auto, cpu, cuda, cuda:1, mps.")
DTYPE = typer.Option("auto", help="Compute dtype: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16.")
DECODE_OVERLAP = typer.Option(4, "--decode-overlap", help="Frames shared by neighbouring decode chunks, "
                              "cross-faded to hide the seams; 0 decodes disjoint chunks like the reference.")
OFFLOAD = typer.Option("none", help="none, model (each component on the GPU only for its phase) or sequential "
                                    "(U-Net blocks streamed to the GPU one ahead of use).")
ATTENTION_SLICE = typer.Option("auto", "--attention-slice", help="Tokens per transformer slice: auto (sliced when "
                               "memory is short), none, or a number. Same results.")
COMPILE = typer.Option(False, "--compile", help="Compile the U-Net with torch.compile: minutes once per shape, "
                                                "then faster steps on GPUs. Not with --offload sequential.")
WEIGHTS_DTYPE = typer.Option(None, "--weights-dtype", help="How the U-Net and image encoder weights are stored: "
                             "fp32, fp16, bf16, fp8 (1 byte, any device) or int8 (bitsandbytes). Default: the "
                             "compute dtype.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress, notes or warnings on stderr.")
LORA = typer.Option(None, "--lora", help="A LoRA file, optionally with a scale (FILE:0.8); repeatable.")
SAVE_LATENTS = typer.Option(False, "--save-latents", help="Also write the sampled latents to "
                            "NAME.latents.safetensors beside the output, to decode again with `svd decode` (other "
                            "settings, another device). Written anyway when decoding runs out of memory.")


def default_preset(name: str | None, weights: str | None, quiet: bool):
    """The preset to use: the one named; else svd-xt when its weights are here (or --weights is given); else the
    built-in demo model, said in one line with the command that fetches the real one."""
    from ..checkpoints.architectures import ARCHITECTURES
    from ..checkpoints.presets import PresetError, load_preset
    from ..checkpoints.weights import WeightsError, installed, package_file

    if name:
        preset = load_preset(name)
        if preset.architecture == "sv3d_p":  # it needs a camera path, which only multiview makes
            raise PresetError(f"preset {name} is camera-conditioned SV3D: use `svd multiview IMAGE --preset {name}`")
        if ARCHITECTURES[preset.architecture].unet.motion_attention:
            raise PresetError(f"preset {name} is a video-to-4D model (SV4D), which svd generate does not run")
        return preset
    real = load_preset("svd-xt")
    if weights or installed(real):
        return real
    try:
        package_file(load_preset("demo").weights)
    except WeightsError:
        return real  # an installation without the demo model: the error says how to get the real one
    note("using the built-in demo model (tiny, trained on procedural clips); `svd download svd-xt` fetches the "
         "real SVD-XT", quiet)
    return load_preset("demo")


def engine_settings(device: str, dtype: str, offload: str, weights_dtype: str | None, attention_slice: str,
                    decode_overlap: int, quiet: bool, compile: bool = False, loras: list[str] | None = None):
    """The engine flags as EngineSettings, checked and resolved on this machine now, before anything loads (raises
    ValueError with a one-line message); says when offloading has nothing to do here."""
    from ..inference.generation import EngineSettings

    settings = EngineSettings(device, dtype, offload, weights_dtype, attention_slice, decode_overlap, compile,
                              tuple(loras or ()))
    if settings.resolve().offload != offload:
        note(f"note: --offload {offload} has no effect without an accelerator", quiet)
    return settings


OPTION_FLAGS = {"motion_bucket": "--motion"}  # the generation settings whose flag is not their name
ENGINE_FLAGS = {"weights dtype": "--weights-dtype", "decode overlap": "--decode-overlap",
                "attention slice": "--attention-slice", "offload": "--offload", "compile": "--compile"}


def as_flags(message: str) -> str:
    """A library message about EngineSettings, with each setting named by its flag."""
    return re.sub(r"\b(" + "|".join(ENGINE_FLAGS) + r")\b", lambda m: ENGINE_FLAGS[m.group(1)], message)


def user_message(error: Exception, renamed: dict[str, str] | None = None) -> str:
    """The one line for an error: a settings dataclass's (which names its field) with the field's flag instead
    (--frames, --noise-aug; `renamed` for flags that are not the field's name), anything else as it is."""
    from ..runtime.settings import SettingsError

    if not isinstance(error, SettingsError):
        return str(error)
    flag = (renamed or {}).get(error.setting) or ENGINE_FLAGS.get(error.setting.replace("_", " ")) or \
        "--" + error.setting.replace("_", "-")
    return f"{flag} {as_flags(error.detail)}"


def open_engine(preset, weights_path, settings, progress, components: tuple[str, ...] | None = None,
                architecture: str | None = None):
    """The library's open_engine; a bad checkpoint or LoRA ends the command with one line."""
    from ..checkpoints.safetensors_io import CheckpointError
    from ..checkpoints.weights import WeightsError
    from ..inference.generation import open_engine
    from ..inference.lora import LoraError

    try:
        return open_engine(preset, weights_path, settings, progress, components, architecture)
    except (CheckpointError, LoraError, WeightsError) as err:
        fail(str(err))


def announce(warnings: list[str], o, picture_size: tuple[int, int], no_watermark: bool, seed: int | None,
             quiet: bool) -> int:
    """What generate and multiview say before the model loads: the warnings, why frames go without the invisible
    watermark, and the seed (drawn here when not given, so a run can be repeated). Returns the seed."""
    from ..media.outputs import can_watermark

    for w in warnings:
        note(f"warning: {w}", quiet)
    if not no_watermark and not o.watermark:
        note("note: invisible-watermark is not installed; writing without the watermark", quiet)
    elif o.watermark and not can_watermark(*picture_size):
        note("note: frames under 256x256 pixels cannot carry the invisible watermark; writing without it", quiet)
    return seed_or_drawn(seed, quiet)


def seed_or_drawn(seed: int | None, quiet: bool) -> int:
    """The seed given, or one drawn now and said, so that a run can be repeated."""
    import secrets

    if seed is None:
        seed = secrets.randbelow(2**31)
        note(f"seed {seed}", quiet)
    return seed
