"""`svd train-lora CLIPS/ --motion zoom`: a camera-motion LoRA from a folder of clips."""

import json
import os
import sys
from pathlib import Path

import typer

from ..training.settings import DataSettings, TrainSettings
from . import options
from .app import command, err, fail, note
from .launch import torchrun
from .progress import ProgressView


# Settings whose flag is not their name with dashes.
FLAGS = {"aug_mean": "--noise-aug-mean", "aug_std": "--noise-aug-std", "aug_draws": "--noise-aug-draws",
         "checkpointing": "--no-grad-checkpointing", "width": "--size", "height": "--size"}


@command("run the same command with --resume to go on from the newest checkpoint", name="train-lora")
def train_lora(
    clips: Path = typer.Argument(..., help="Folder of clips (videos, frame folders) or of a curate manifest."),
    motion: str = typer.Option(..., help="Camera motion to learn: zoom, pan, tilt, static, roll, any, or one label "
                                         "(zoom-in, pan-left, ...)."),
    out: Path = typer.Option(None, help="The LoRA file. Default: MOTION.safetensors in the current folder."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Checkpoints, cache, log, samples. Default: OUT's name "
                                                           "with -train."),
    preset: str = options.PRESET, weights: str = options.WEIGHTS,
    frames: int = typer.Option(None, help="Frames per training window (default: the preset's)."),
    size: str = typer.Option(None, help="WIDTHxHEIGHT of the windows, multiples of 64 (default: the preset's)."),
    fps: float = typer.Option(None, help="Rate to sample windows at (default: the preset's fps); the model is "
                                         "conditioned on the rate actually sampled."),
    steps: int = typer.Option(TrainSettings.steps, help="Optimizer steps."),
    rank: int = typer.Option(TrainSettings.rank, help="LoRA rank."),
    alpha: float = typer.Option(None, help="LoRA alpha (scale alpha/rank). Default: the rank."),
    targets: str = typer.Option(TrainSettings.targets, help="temporal (the paper's: temporal attention), spatial, "
                                "all (both attentions), or locon (every linear and convolution layer in the U-Net's "
                                "blocks: learns camera moves the model never made)."),
    lr: float = typer.Option(TrainSettings.lr, help="Learning rate after warm-up."),
    warmup: int = typer.Option(TrainSettings.warmup, help="Steps of linear learning-rate warm-up."),
    batch: int = typer.Option(TrainSettings.batch, help="Videos per GPU per micro-step."),
    accumulate: int = typer.Option(TrainSettings.accumulate, help="Micro-steps per optimizer step (gradient "
                                                                  "accumulation)."),
    seed: int = typer.Option(TrainSettings.seed, help="Seed of the LoRA init, the data order and every noise draw."),
    p_mean: float = typer.Option(TrainSettings.p_mean, "--p-mean", help="Mean of ln(sigma) of the training noise."),
    p_std: float = typer.Option(TrainSettings.p_std, "--p-std", help="Std of ln(sigma) of the training noise."),
    aug_mean: float = typer.Option(DataSettings.aug_mean, "--noise-aug-mean", help="Mean of ln(noise augmentation)."),
    aug_std: float = typer.Option(DataSettings.aug_std, "--noise-aug-std", help="Std of ln(noise augmentation)."),
    aug_draws: int = typer.Option(DataSettings.aug_draws, "--noise-aug-draws", help="Augmentation draws cached per "
                                  "window."),
    cond_dropout: float = typer.Option(TrainSettings.cond_dropout, "--cond-dropout", help="Probability of dropping "
                                       "the image conditioning (keeps guidance working)."),
    motion_bucket: str = typer.Option(None, "--motion-bucket", help="Motion bucket to condition on: a number, or "
                                      "auto (from each clip's measured motion). Default: the preset's."),
    windows_per_clip: int = typer.Option(DataSettings.windows_per_clip, "--windows-per-clip", help="At most this "
                                         "many windows per clip (0: all)."),
    checkpoint_every: int = typer.Option(TrainSettings.checkpoint_every, "--checkpoint-every", help="Steps between "
                                         "checkpoints."),
    keep_checkpoints: int = typer.Option(TrainSettings.keep_checkpoints, "--keep-checkpoints", help="Newest "
                                         "checkpoints kept."),
    sample_every: int = typer.Option(TrainSettings.sample_every, "--sample-every", help="Steps between validation "
                                     "samples (0: only at the end)."),
    sample_steps: int = typer.Option(25, "--sample-steps", help="Denoising steps of the validation samples."),
    validation_image: Path = typer.Option(None, "--validation-image", help="Image for the validation samples "
                                                                           "(default: a training window's first "
                                                                           "frame)."),
    optimizer: str = typer.Option(TrainSettings.optimizer, help="auto (8-bit AdamW on CUDA when bitsandbytes is "
                                  "installed), adamw, adamw8bit."),
    save_dtype: str = typer.Option(TrainSettings.save_dtype, "--save-dtype", help="The LoRA file's precision: fp32, "
                                   "fp16 or bf16 (half the size; training is unchanged)."),
    strength: float = typer.Option(TrainSettings.strength, "--strength", help="The strength the file applies at with "
                                   "a plain --lora (its alpha × this; training is unchanged)."),
    no_grad_checkpointing: bool = typer.Option(False, "--no-grad-checkpointing", help="Faster, more memory."),
    manifest: Path = typer.Option(None, help="A curate manifest to use (default: CLIPS/curate.jsonl, or curate "
                                             "now)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in the work folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    gpus: int = typer.Option(1, "--gpus", help="Launch torchrun with this many processes (one per GPU)."),
    device: str = options.DEVICE, dtype: str = options.DTYPE, quiet: bool = options.QUIET,
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result line on stdout."),
):
    """Train a camera-motion LoRA (the paper's recipe: LoRA in the temporal attention) on curated clips."""
    from ..video.curate import CurateSettings
    from ..inference.generation import OptionsError, parse_size
    from ..checkpoints.presets import PresetError, load_preset
    from ..checkpoints.weights import WeightsError, resolve_weights

    main_rank = os.environ.get("RANK", "0") == "0"
    quiet = quiet or not main_rank
    try:
        p = load_preset(preset or "svd-xt")
        if not clips.exists():
            raise ValueError(f"{clips}: no such folder")
        w, h = parse_size(size) if size else (p.width, p.height)
        bucket = p.motion_bucket if motion_bucket is None else None if motion_bucket == "auto" else motion_bucket
        if isinstance(bucket, str):
            if not bucket.isdigit() or int(bucket) > 255:
                raise ValueError(f"--motion-bucket {motion_bucket}: a number 0-255, or auto")
            bucket = int(bucket)
        if validation_image is not None:
            from ..media.images import load_image

            load_image(validation_image)  # a bad image fails now, not after hours of encoding
        if gpus < 1:
            raise ValueError("--gpus must be at least 1")
        import torch

        if gpus > 1 and device != "cpu" and torch.cuda.is_available() and gpus > torch.cuda.device_count():
            raise ValueError(f"--gpus {gpus}: this machine has {torch.cuda.device_count()} CUDA devices")
        out = out or Path(f"{motion}.safetensors")
        work = work_dir or out.with_name(out.stem + "-train")
        resumable = any((work / "checkpoints").glob("step-*.safetensors"))
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file name")
        if out.exists() and not (overwrite or (resume and resumable)):  # a resumed run rewrites its own output
            raise ValueError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
        if not resume and resumable:
            raise ValueError(f"{work} holds checkpoints of an earlier run; pass --resume to continue it, or "
                             "choose another --work-dir")
        data = DataSettings(frames=frames or p.frames, width=w, height=h, fps=fps or p.fps, aug_mean=aug_mean,
                            aug_std=aug_std, aug_draws=aug_draws, windows_per_clip=windows_per_clip, seed=seed)
        settings = TrainSettings(steps=steps, rank=rank, alpha=alpha or float(rank), targets=targets, lr=lr,
                                 batch=batch, accumulate=accumulate, warmup=warmup, seed=seed, p_mean=p_mean,
                                 p_std=p_std, cond_dropout=cond_dropout, motion_bucket=bucket, optimizer=optimizer,
                                 checkpointing=not no_grad_checkpointing, checkpoint_every=checkpoint_every,
                                 keep_checkpoints=keep_checkpoints, sample_every=sample_every,
                                 save_dtype=save_dtype, strength=strength)
        weights_path = resolve_weights(weights, p)
        from ..training.lora_job import Job, run

        job = Job(clips, motion, out, work, weights_path, p, data, settings, device, dtype, resume, manifest,
                  CurateSettings(), validation_image, sample_steps)
    except (PresetError, OptionsError, WeightsError, ValueError) as x:
        fail(options.user_message(x, FLAGS))
    if gpus > 1 and "WORLD_SIZE" not in os.environ:  # checked above, so a bad flag is one line, not one per rank
        raise typer.Exit(torchrun(gpus))

    from ..media.images import ImageError
    from ..inference.lora import LoraError
    from ..media.video_io import VideoError
    from ..checkpoints.safetensors_io import CheckpointError
    from ..training.trainer import TrainingError
    from ..training.data import DataError

    progress_view = ProgressView(err, quiet)
    on_step = lambda step, total, loss, lr: progress_view("train", step, total, loss=loss)  # noqa: E731
    try:
        with progress_view:
            result = run(job, note=lambda m: note(m, quiet), progress=progress_view, on_step=on_step)
    except (TrainingError, DataError, CheckpointError, VideoError, ImageError, LoraError, ValueError) as x:
        fail(str(x), 1)
    except torch.OutOfMemoryError:
        fail(f"out of memory on {device}; try a smaller --batch or --size, fewer --frames, or keep gradient "
             "checkpointing on (resume with --resume)", 1)
    except OSError as x:
        fail(f"{x.filename or work}: {x.strerror or x}", 1)
    if not main_rank:
        return
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        note(f"wrote {out} ({result['steps']} steps, final loss {result['loss']:.4f}, "
             f"{result['data']['windows']} windows of {result['data']['clips']} clips); log and samples in {work}",
             quiet)
