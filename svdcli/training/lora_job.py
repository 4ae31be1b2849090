"""What `svd train-lora CLIPS/ --motion zoom` does, end to end: curate (or read the manifest), pick the clips and
windows, cache their encodings, train, sample, and write the LoRA file.

Under torchrun every process runs this; rank 0 curates, builds the cache, writes checkpoints, samples and the
output, the others wait for it at barriers.
"""

import datetime
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..checkpoints.presets import Preset
from ..inference.generation import EngineSettings, frames_to_uint8, open_engine
from ..inference.pipeline import SamplingSettings, VideoPipeline
from ..media.images import fit, load_image, to_tensor
from ..media.outputs import write_video
from ..media.video_io import read_frames
from ..runtime.devices import resolve_device, resolve_dtype
from ..runtime.seeds import seed_of
from ..runtime.settings import at_least, one_of
from ..video.curate import MANIFEST, ClipRecord, CurateSettings, curate, read_manifest, write_manifest
from .data import (MOTION_GROUPS, cache_key, encode_windows, load_cache, motion_bucket_for, plan_windows,
                       save_cache, select_clips, summary)
from .settings import DataSettings, TrainSettings
from .trainer import Dist, Trainer, TrainingError

@dataclass(frozen=True)
class Job:
    clips: Path
    motion: str
    out: Path
    work_dir: Path
    weights: Path
    preset: Preset
    data: DataSettings
    train: TrainSettings
    device: str = "auto"
    dtype: str = "auto"
    resume: bool = False
    manifest: Path | None = None  # default: CLIPS/curate.jsonl if there is one, else curate now
    curate: CurateSettings = field(default_factory=CurateSettings)
    validation_image: Path | None = None
    sample_steps: int = 25

    def __post_init__(self):
        one_of("motion", self.motion, MOTION_GROUPS)
        at_least(self, ("sample_steps",))


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the torchrun group if there is one (NCCL on GPUs, gloo on the CPU); each process takes its local GPU
    (resolve_device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world == 1:
        return Dist(), dev
    import torch.distributed as dist

    if not dist.is_initialized():
        # The other ranks wait at a barrier while rank 0 curates and encodes the clips, which can take hours on a
        # large folder: the default 10-minute collective timeout would abort them.
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=12))
    return Dist(dist.get_rank(), world), dev


def clip_records(job: Job, dist: Dist, note: Callable[[str], None]) -> list[ClipRecord]:
    """The manifest given, or CLIPS/curate.jsonl, or a fresh curation written to the work folder."""
    given = job.manifest or (job.clips / MANIFEST if job.clips.is_dir() and (job.clips / MANIFEST).exists() else None)
    if given:
        return read_manifest(given)
    target = job.work_dir / MANIFEST
    if dist.main and not target.exists():
        settings = replace(job.curate, keep_static=job.curate.keep_static or job.motion == "static")
        note(f"curating {job.clips} ...")
        records, errors = curate(job.clips, settings)
        for src, e in errors:
            note(f"skipped: {e}")
        write_manifest(records, target)
    dist.barrier()
    return read_manifest(target)


def first_frame(window, width: int, height: int):
    frame = read_frames(window.source, [window.first])[window.first]
    from PIL import Image

    return fit(Image.fromarray(frame), width, height, "crop")


def run(job: Job, note: Callable[[str], None] = lambda _: None, progress=None, on_step=None) -> dict:
    """Train; returns a summary (the output file, steps, final loss, data). Raises TrainingError, DataError,
    CheckpointError, VideoError, ImageError with one-line messages."""
    d, device = init_distributed(job.device)
    dtype = resolve_dtype(job.dtype, device)
    records = clip_records(job, d, note)
    clips = select_clips(records, job.motion)
    windows, skipped = plan_windows(clips, job.data.frames, job.data.fps, job.data.windows_per_clip)
    for clip, why in skipped:
        note(f"skipped {clip}: {why}")
    if not windows:
        raise TrainingError(f"no {job.motion} clip is long enough for a {job.data.frames}-frame window")

    # Only the U-Net stays on the accelerator; the VAE and image encoder visit it for validation samples.
    engine = open_engine(job.preset, job.weights, EngineSettings(str(device), job.dtype, "model",
                                                                 attention_slice="none"))
    model, pipe = engine.pipe.model, engine.pipe
    sha = engine.weights_sha256
    key = cache_key(windows, job.data, sha)
    cache_path = job.work_dir / f"cache-{key}.safetensors"
    if d.main and load_cache(cache_path, key) is None:
        note(f"encoding {len(windows)} windows of {len(clips)} clips (cached in {cache_path})")
        cache = encode_windows(model, windows, job.data, device, progress)
        save_cache(cache, cache_path, key)
    d.barrier()
    cache = load_cache(cache_path, key)
    if cache is None:
        raise TrainingError(f"{cache_path}: the encoded windows could not be read back")
    data_summary = summary(cache)

    pipe.keep_on_device(model.unet)
    for m in (model.vae, model.image_encoder):
        m.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()

    lora_meta = {"motion": job.motion, "variant": job.preset.name, "base_weights": job.weights.name,
                 "base_sha256": sha, "data": data_summary, "data_settings": asdict(job.data)}
    sampler = None
    if d.main:
        image = (fit(load_image(job.validation_image), job.data.width, job.data.height, "crop")
                 if job.validation_image else first_frame(windows[0], job.data.width, job.data.height))
        job.work_dir.mkdir(parents=True, exist_ok=True)
        image.save(job.work_dir / "validation.png")
        bucket = (job.train.motion_bucket if job.train.motion_bucket is not None
                  else motion_bucket_for(float(cache.motion.median())))
        fps_id = int(cache.fps_id.mode().values)  # the rate most windows were trained at
        settings = SamplingSettings(frames=job.data.frames, steps=job.sample_steps, fps_id=fps_id,
                                    motion_bucket_id=bucket, noise_aug=job.preset.noise_aug,
                                    cfg_min=job.preset.cfg_min, cfg_max=job.preset.cfg_max,
                                    decode_chunk=job.preset.decode_chunk)
        sampler = validation_sampler(pipe, to_tensor(image), settings, job.work_dir / "samples",
                                     seed_of(job.train.seed, "validation") % 2**31, fps_id + 1, note)

    trainer = Trainer(model, cache, job.train, job.work_dir, device, dtype, lora_meta, d, sampler, on_step)
    if sampler and job.train.sample_every and not job.resume:
        sampler(0)  # the base model, to compare against
    steps = trainer.run(resume=job.resume)
    if d.main:
        trainer.save_lora(job.out, steps)  # before the last sample: a sample that fails loses nothing
        if sampler:
            trainer.sample(steps)
    d.barrier()
    log = job.work_dir / "log.jsonl"
    last = json.loads(log.read_text().splitlines()[-1]) if d.main and log.exists() and log.read_text() else {}
    return {"out": str(job.out), "steps": steps, "loss": last.get("loss"), "data": data_summary, "rank": d.rank,
            "world": d.world, "optimizer": trainer.optimizer_kind, "dtype": str(dtype).removeprefix("torch."),
            "device": str(device), "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None}


def validation_sampler(pipe: VideoPipeline, image, settings: SamplingSettings, folder: Path, seed: int, fps: int,
                       note: Callable[[str], None] = lambda _: None):
    """A sample video from the fixed validation image with a fixed seed: samples/step-NNNNNN.mp4. A sample that
    fails (out of memory, most likely, next to the training state) is a warning through `note`: training goes on
    and its result is kept."""
    def sample(step: int) -> Path | None:
        unet = pipe.model.unet
        was_training = unet.training
        unet.eval()
        try:
            result = pipe.generate(image, settings, seed)
        except Exception as error:  # noqa: BLE001  (whatever it was, the trained weights are worth more)
            note(f"warning: the validation sample at step {step} failed ({str(error).splitlines()[0]}); "
                 "training and its output are not affected")
            if pipe.device.type == "cuda":
                torch.cuda.empty_cache()
            return None
        finally:
            unet.train(was_training)
        target = folder / f"step-{step:06d}.mp4"
        folder.mkdir(parents=True, exist_ok=True)
        write_video(frames_to_uint8(result.frames), target, "mp4", fps, {"step": step, "seed": seed,
                                                                   "settings": asdict(settings)})
        return target
    return sample
