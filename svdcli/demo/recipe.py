"""How the built-in demo model is made: the SVD architecture at small widths, trained from a fixed seed on
procedural clips (no downloads), in the paper's order where it helps: the autoencoder first, then the video model,
then a camera-motion LoRA with `svd train-lora`.

    python -m svdcli.demo.recipe --out demo-build              # the recipe (see docs/demo-model.md)
    python -m svdcli.demo.recipe --out /tmp/quick --scale 0.02  # a smoke run: every stage, few steps
    python -m svdcli.demo.recipe --out /tmp/lora --lora-on svdcli/demo/svd-demo.safetensors  # stage 4 alone

Stages:
1. Autoencoder: encoder + temporal decoder trained on procedural clips (vae_train.py), then its latent scale
   calibrated so latents × 0.18215 have unit variance, as the diffusion model expects.
2. Image encoder: the open_clip ViT layout at small width, randomly initialised from the seed and frozen (its
   features are a fixed random projection of the first frame; the conditioning latent carries the picture).
3. Video model: every U-Net parameter trained (with an EMA) by the train-lora trainer in full mode on procedural
   clips with pans, tilts, static shots and object motion — zoom is left out on purpose — conditioned on their
   frame rate and on the motion bucket of their motion as curate measures it.
4. Zoom LoRA: procedural zoom-in clips written as MP4s and given to `svd train-lora --motion zoom --targets locon`.
Files: svd-demo.safetensors (fp16), demo-zoom.safetensors, recipe.json (settings, timings, losses, sha256s).
"""

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.architectures import ARCHITECTURES
from ..checkpoints.loader import LoadedModel
from ..checkpoints.presets import Preset
from ..checkpoints.saving import save_single_file
from ..media.outputs import write_mp4
from ..models.clip import CLIPConfig, ImageEncoder
from ..models.init import random_init
from ..models.unet import VideoUNet
from ..models.vae import VAE, VAEConfig
from ..runtime.devices import resolve_device
from ..runtime.seeds import seed_of
from ..training.data import encode_arrays
from ..training.settings import DataSettings, TrainSettings
from ..training.trainer import Trainer
from ..video.motion import clip_motion
from .autoencoder import (VAETrainSettings, box_codec_start, calibrate_latent_scale, new_vae, procedural_clips,
                        train_vae)
from .procedural import BASE_CAMERAS, random_clip

# norm_groups 8: the reference's 32 GroupNorm groups at a quarter of its narrowest widths would hold one channel
# each and remove each channel's image mean (a flat colour could not be output); 8 keeps ≥ 4 channels per group.
ARCH = replace(ARCHITECTURES["svd"],
               unet=replace(ARCHITECTURES["svd"].unet, model_channels=32, channel_mult=(1, 2, 2),
                            attention_levels=(True, True, True), head_dim=32, context_dim=128, norm_groups=8),
               vae=VAEConfig(channels=32, channel_mult=(1, 2, 2, 4), num_res_blocks=1, norm_groups=8),
               clip=CLIPConfig(image_size=224, patch_size=32, width=64, layers=2, head_width=32, mlp_width=256,
                               embed_dim=128))


WEIGHTS, LORA = "svd-demo.safetensors", "demo-zoom.safetensors"


class RecipeError(ValueError):
    """A recipe run that cannot start; one line for the user."""


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    frames: int = 14
    width: int = 192
    height: int = 128
    fps: int = 7
    vae_steps: int = 1500  # from the box-filter codec start (vae_train.box_codec_start); curve in docs/demo-model.md
    vae_lr: float = 1e-4  # a higher rate first undoes the start's codec (docs/demo-model.md, the curve)
    vae_batch: int = 4
    vae_frames: int = 3  # frames per training clip: the temporal decoder's convolutions see 3 frames at a time
    vae_crop: tuple[int, int] = (64, 64)
    unet_clips: int = 300
    unet_steps: int = 5000
    unet_lr: float = 5e-4
    ema: float = 0.999
    p_mean: float = 0.4  # small latents need less of the high-resolution shift than SVD's 0.7
    p_std: float = 1.6
    # The zoom LoRA: zoom-ins of one speed with no sprites, so that at high noise the target is one exact zoom
    # rather than the blur of directions, speeds and object motion; σ drawn for high noise, where a sample's motion
    # is decided; fresh clips rather than a few seen often, which a network memorises; LoCon targets (every linear
    # and convolution layer in the blocks), which learn a camera move the base never made, where attention adapters
    # do not; and motion bucket 40 rather than the clips' measured one, since the model makes less motion than its
    # bucket asks for. What each choice measured: docs/demo-model.md, the LoRA table.
    lora_clips: int = 240
    lora_cameras: tuple[str, ...] = ("zoom-in",)
    lora_zoom_speeds: tuple[float, ...] = (0.2,)
    lora_objects: int = 0
    lora_steps: int = 2000
    lora_lr: float = 2e-3
    lora_rank: int = 16
    lora_targets: str = "locon"
    lora_p_mean: float = 1.5
    lora_p_std: float = 1.0
    lora_motion_bucket: int = 40
    # Written at 1.5× its trained strength (the file's alpha 24 for rank 16), the strength `--lora demo-zoom` applies:
    # at 1.0 the flat gradients zoom too little to be labelled (docs/demo-model.md, the LoRA table).
    lora_strength: float = 1.5
    lora_save_dtype: str = "fp16"  # 3.6 MB instead of 7.3: the two files stay within the 25 MB budget

    def scaled(self, f: float) -> "Recipe":
        """Every step and clip count × f (at least 2; at least 8 zoom clips, since curation drops the flattest and
        the most static of them): for smoke runs."""
        n = lambda v: max(2, round(v * f))  # noqa: E731
        return replace(self, vae_steps=n(self.vae_steps), unet_clips=n(self.unet_clips),
                       unet_steps=n(self.unet_steps), lora_clips=max(8, n(self.lora_clips)),
                       lora_steps=n(self.lora_steps))


def demo_preset(weights: Path | None = None) -> Preset:
    from ..checkpoints.presets import load_preset

    p = load_preset("demo")
    return replace(p, weights=str(weights)) if weights else p


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def autoencoder_start(r: Recipe) -> VAE:
    """The autoencoder before training: the box-filter codec (vae_train.box_codec_start)."""
    vae = new_vae(ARCH.vae, r.seed)
    box_codec_start(vae)
    return vae


def autoencoder_settings(r: Recipe) -> VAETrainSettings:
    return VAETrainSettings(steps=r.vae_steps, batch=r.vae_batch, frames=r.vae_frames, lr=r.vae_lr, warmup=20,
                            seed=r.seed)


def autoencoder_clips(r: Recipe, step: int) -> torch.Tensor:
    """Stage 1's batch for `step`: (vae_batch, vae_frames, 3, *vae_crop) crops of procedural clips in [-1, 1]."""
    return procedural_clips([seed_of(r.seed, "vae", step, j) for j in range(r.vae_batch)], r.vae_frames,
                            (r.height, r.width), r.fps, crop=r.vae_crop, cameras=BASE_CAMERAS)


def train_autoencoder(r: Recipe, vae: VAE, progress=None) -> dict:
    """Stage 1, in place: train on procedural clips, then calibrate the latent scale. progress("train", step,
    steps) is called after every training step (scripts/autoencoder_curve.py measures the autoencoder there)."""
    summary = train_vae(vae, lambda step: autoencoder_clips(r, step), autoencoder_settings(r), progress)
    calib = procedural_clips([seed_of(r.seed, "calibrate", i) for i in range(48)], 1, (r.height, r.width), r.fps)[:, 0]
    k = calibrate_latent_scale(vae, calib)
    return {"loss": summary.get("loss"), "train_psnr": summary.get("psnr"), "latent_scale": k}


def build(r: Recipe, out: Path, note=lambda _: None, progress=None,
          device: torch.device = torch.device("cpu")) -> dict:
    """Every stage runs on `device` in float32; the files are written from the CPU."""
    out.mkdir(parents=True, exist_ok=True)
    size = (r.height, r.width)
    report: dict = {"recipe": asdict(r), "device": str(device),
                    "architecture": {k: asdict(getattr(ARCH, k)) for k in ("unet", "vae", "clip")}}
    torch.manual_seed(r.seed)

    # 1. Autoencoder.
    t0 = time.perf_counter()
    note(f"autoencoder: {r.vae_steps} steps")
    vae = autoencoder_start(r).to(device)
    summary = train_autoencoder(r, vae, progress)
    report["vae"] = {"seconds": time.perf_counter() - t0, **summary}

    # 2. Image encoder: fixed random features.
    encoder = random_init(ImageEncoder(ARCH.clip), seed_of(r.seed, "clip") % 2**31).eval()
    model = LoadedModel(ARCH, random_init(VideoUNet(ARCH.unet), seed_of(r.seed, "unet") % 2**31), vae.eval(),
                        encoder, "demo", [], ["float32"])

    # 3. Video model.
    t0 = time.perf_counter()
    note(f"video model: {r.unet_clips} clips, {r.unet_steps} steps")
    clips, scores = [], []
    for i in range(r.unet_clips):
        frames, _ = random_clip(seed_of(r.seed, "unet-data", i), r.frames, r.fps, size, cameras=BASE_CAMERAS)
        clips.append(frames)
        scores.append(clip_motion(frames, r.fps).score)  # the motion bucket as curate would measure it
        if progress:
            progress("clips", i + 1, r.unet_clips)
    d = DataSettings(frames=r.frames, width=r.width, height=r.height, fps=r.fps, seed=r.seed)
    cache = encode_arrays(model, clips, [float(r.fps)] * len(clips), scores, d, device, progress)
    model.unet.to(device)
    s = TrainSettings(train="full", ema=r.ema, steps=r.unet_steps, lr=r.unet_lr, seed=r.seed,
                      p_mean=r.p_mean, p_std=r.p_std, cond_dropout=0.1, motion_bucket=None, optimizer="adamw",
                      checkpointing=False, checkpoint_every=max(1, r.unet_steps // 4), keep_checkpoints=1,
                      weight_decay=0.0, warmup=min(100, r.unet_steps // 10 + 1))
    trainer = Trainer(model, cache, s, out / "unet-train", device, torch.float32,
                      {"data_settings": asdict(d)},
                      on_step=(lambda i, n, loss, lr: progress("train", i, n)) if progress else None)
    found = trainer.checkpoints()  # a run interrupted or done before: go on from its newest checkpoint
    trainer.run(resume=bool(found))
    with torch.no_grad():
        for name, value in trainer.trained(ema=True).items():
            model.unet.get_parameter(name).copy_(value)
    log = [json.loads(x) for x in (out / "unet-train" / "log.jsonl").read_text().splitlines()]
    tail = [e["loss"] for e in log[-100:]]
    report["unet"] = {"seconds": time.perf_counter() - t0, "resumed_from": found[-1].name if found else None,
                      "final_loss_mean_100": float(np.mean(tail)),
                      "first_loss_mean_100": float(np.mean([e["loss"] for e in log[:100]])),
                      "motion_scores": [float(np.min(scores)), float(np.median(scores)), float(np.max(scores))]}
    weights = out / WEIGHTS
    model.unet.requires_grad_(False)
    for m in (model.unet, model.vae, model.image_encoder):
        m.to("cpu")
    save_single_file(model, weights, dtype=torch.float16)

    # 4. Zoom LoRA.
    report["lora"] = train_zoom_lora(r, weights, out, device, note)
    return record_files(report, out)


def record_files(report: dict, out: Path) -> dict:
    """The sha256 and size of both files into the report, and the report into out/recipe.json."""
    report["files"] = {name: {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size}
                       for name in (WEIGHTS, LORA)}
    (out / "recipe.json").write_text(json.dumps(report, indent=1))
    return report


def train_zoom_lora(r: Recipe, weights: Path, out: Path, device: torch.device, note=lambda _: None) -> dict:
    """Stage 4, with the train-lora command's own code path: procedural zoom clips written as MP4s, curated and
    trained on; writes out/demo-zoom.safetensors. Depends only on the base file's bytes and the lora_ settings."""
    from ..training.lora_job import Job, run

    t0 = time.perf_counter()
    size = (r.height, r.width)
    zoom_dir = out / "zoom-clips"
    zoom_dir.mkdir(exist_ok=True)
    for i in range(r.lora_clips):
        frames, motion = random_clip(seed_of(r.seed, "zoom", i), r.frames + 6, r.fps, size, cameras=r.lora_cameras,
                                     zoom_speeds=r.lora_zoom_speeds, max_objects=r.lora_objects)
        write_mp4(frames, zoom_dir / f"{i:03d}-{motion.camera}.mp4", r.fps, {"camera": motion.camera}, 9.0)
    note(f"zoom LoRA: {r.lora_clips} clips, {r.lora_steps} steps")
    job = Job(zoom_dir, "zoom", out / LORA, out / "zoom-train", weights, demo_preset(weights),
              DataSettings(frames=r.frames, width=r.width, height=r.height, fps=r.fps, seed=r.seed),
              TrainSettings(steps=r.lora_steps, rank=r.lora_rank, alpha=float(r.lora_rank), lr=r.lora_lr, warmup=20,
                            targets=r.lora_targets, seed=r.seed, p_mean=r.lora_p_mean, p_std=r.lora_p_std,
                            motion_bucket=r.lora_motion_bucket, optimizer="adamw", save_dtype=r.lora_save_dtype,
                            strength=r.lora_strength,
                            checkpointing=False, checkpoint_every=max(1, r.lora_steps // 2), keep_checkpoints=1),
              device=str(device), dtype="fp32", resume=(out / "zoom-train" / "checkpoints").exists(),
              sample_steps=12)
    lora = run(job, note=note)
    return {"seconds": time.perf_counter() - t0, "loss": lora["loss"], "data": lora["data"]}


def rebuild_zoom_lora(r: Recipe, base: Path, out: Path, device: torch.device, note=lambda _: None) -> dict:
    """Stage 4 alone, on the base an earlier run of this recipe made (its recipe.json beside it): what a whole run
    with these LoRA settings writes, since stage 4 depends only on the base file's bytes, without the hour and a
    half of stages 1-3. The report keeps the earlier run's stages 1-3 and says the LoRA stage was rerun."""
    import shutil

    prior_path = base.parent / "recipe.json"
    if not prior_path.exists():
        raise RecipeError(f"{base}: no recipe.json beside it; --lora-on takes a base this recipe made")
    prior = json.loads(prior_path.read_text())
    digest = sha256(base)
    if prior.get("files", {}).get(WEIGHTS, {}).get("sha256") != digest:
        raise RecipeError(f"{base}: not the {WEIGHTS} its recipe.json records (sha256 {digest[:12]}…)")
    now = json.loads(json.dumps(asdict(r)))
    changed = [k for k in now if not k.startswith("lora_") and prior["recipe"].get(k) != now[k]]
    if changed:
        raise RecipeError(f"{base} was made with other settings for stages 1-3: {', '.join(changed)}")
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS
    if weights.resolve() != base.resolve():
        shutil.copyfile(base, weights)
    report = {**prior, "recipe": now, "device": str(device), "lora_stage_only": {"base_sha256": digest}}
    report["lora"] = train_zoom_lora(r, weights, out, device, note)
    return record_files(report, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build the demo model from its recipe.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply every step and clip count (smoke runs).")
    ap.add_argument("--install", action="store_true", help="Copy the files into the package (svdcli/demo/).")
    ap.add_argument("--device", default="cpu",
                    help="cpu (the shipped files' bytes), cuda or auto: a GPU runs every stage much faster, with "
                         "other float rounding, so its files are close to the shipped ones but not the same bytes.")
    ap.add_argument("--lora-on", type=Path, metavar="BASE",
                    help="Only stage 4, the zoom LoRA, on a base an earlier run made (with its recipe.json beside "
                         "it), e.g. svdcli/demo/svd-demo.safetensors: a whole run's LoRA in a fraction of the time.")
    a = ap.parse_args(argv)
    try:
        device = resolve_device(a.device)
    except (RuntimeError, ValueError) as e:
        ap.error(str(e))
    torch.set_num_threads(torch.get_num_threads())
    r = Recipe(seed=a.seed)
    r = r.scaled(a.scale) if a.scale != 1.0 else r
    started = time.perf_counter()
    note = lambda m: print(f"[{time.perf_counter() - started:7.1f} s] {m}", flush=True)  # noqa: E731
    try:
        report = (rebuild_zoom_lora(r, a.lora_on, a.out, device, note) if a.lora_on else
                  build(r, a.out, note=note, device=device))
    except RecipeError as e:
        ap.error(str(e))
    report["total_seconds"] = time.perf_counter() - started
    (a.out / "recipe.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("vae", "unet", "lora", "files", "total_seconds")}, indent=1))
    if a.install:
        import shutil

        target = Path(__file__).parent / "demo"
        target.mkdir(exist_ok=True)
        for name in (WEIGHTS, LORA, "recipe.json"):
            shutil.copyfile(a.out / name, target / name)


if __name__ == "__main__":
    main()
