"""Training data for `svd train-lora`: which curated clips, which frame windows, and their cached encodings.

A window is `frames` frames of one clip taken every `stride` source frames, the stride chosen so that the sampled
rate comes closest to the preset's playback rate without going faster than the source; the model is conditioned on
the rate actually sampled (fps_id = round(fps / stride) − 1, the reference's convention).

The VAE latents of each window, the CLIP embedding of its first frame, and the conditioning latents of that frame
under a few noise-augmentation draws are computed once and cached, so that training holds only the U-Net on the
accelerator. The noise augmentation is log-normal, like the EDM noise level: σ_aug = exp(N(aug_mean, aug_std²)).
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..checkpoints.loader import LoadedModel
from ..media.images import fit, to_tensor
from ..media.video_io import VideoError, iter_frames
from ..models.vae import SCALE_FACTOR
from ..runtime.seeds import seed_of
from ..video.curate import ClipRecord
from ..video.motion import LABELS
from .settings import DataSettings

# --motion values: a group of curate's camera labels, a single label, or any.
MOTION_GROUPS = {"zoom": ("zoom-in", "zoom-out"), "pan": ("pan-left", "pan-right"), "tilt": ("tilt-up", "tilt-down"),
                 **{label: (label,) for label in LABELS}, "any": LABELS}

# --motion-bucket auto: the clip's motion score (fraction of the frame width moved per second, from curate's optical
# flow) mapped linearly so that this score lands on the default bucket 127. A heuristic: the reference's own mapping
# from optical flow to motion_bucket_id was never published.
MOTION_AT_BUCKET_127 = 0.1


class DataError(ValueError):
    """Training data that cannot be used; one line for the user."""


def motion_bucket_for(score: float) -> int:
    return int(min(255, max(1, round(127 * score / MOTION_AT_BUCKET_127))))


def select_clips(records: list[ClipRecord], motion: str) -> list[ClipRecord]:
    kept = [r for r in records if r.kept]
    chosen = [r for r in kept if r.label in MOTION_GROUPS[motion]]
    if not chosen:
        found = sorted({r.label for r in kept}) or ["none"]
        raise DataError(f"no kept clip is labelled {motion} (kept clips are: {', '.join(found)}); "
                        "check the curate manifest or choose another --motion")
    return chosen


@dataclass(frozen=True)
class Window:
    clip: str
    source: str
    first: int  # source frame index of the window's first frame
    stride: int
    fps: float  # the rate the window's frames were sampled at
    motion: float  # the clip's motion score

    @property
    def fps_id(self) -> int:
        return max(0, round(self.fps) - 1)


def plan_windows(clips: list[ClipRecord], frames: int, target_fps: float,
                 per_clip: int = 0) -> tuple[list[Window], list[tuple[str, str]]]:
    """Non-overlapping windows of each clip (at most per_clip of them, spread over the clip; 0: all).
    Returns the windows and the clips too short for one window, with the reason."""
    windows, skipped = [], []
    for r in clips:
        stride = max(1, round(r.fps / target_fps))
        while stride > 1 and (frames - 1) * stride + 1 > r.frames:
            stride -= 1  # a short clip: sample faster rather than drop it
        span = (frames - 1) * stride + 1
        if span > r.frames:
            skipped.append((r.clip, f"{r.frames} frames, fewer than the {frames} a window needs"))
            continue
        starts = list(range(r.start, r.end - span + 1, span))
        if per_clip and len(starts) > per_clip:
            starts = [starts[round(i * (len(starts) - 1) / max(per_clip - 1, 1))] for i in range(per_clip)]
        windows += [Window(r.clip, r.source, s, stride, r.fps / stride, r.motion) for s in starts]
    return windows, skipped


def window_frames(source: str, windows: list["Window"], frames: int, width: int, height: int):
    """(window, its frames fitted to width×height) for the windows of one source, each as soon as its last frame
    has been read: one pass over the source, holding one window's (already resized) frames at a time."""
    todo = sorted(windows, key=lambda w: w.first)
    wanted = {w.first + k * w.stride: (j, k) for j, w in enumerate(todo) for k in range(frames)}
    pending: dict[int, dict[int, Image.Image]] = {}
    done = 0
    for i, frame in iter_frames(source, max(wanted, default=-1)):
        if i in wanted:
            j, k = wanted[i]
            pending.setdefault(j, {})[k] = fit(Image.fromarray(frame), width, height, "crop")
            if len(pending[j]) == frames:
                done += 1
                got = pending.pop(j)
                yield todo[j], [got[k] for k in range(frames)]
    if done < len(todo):
        raise VideoError(f"{source}: has fewer frames than the curate manifest says; run curate again")


@dataclass
class WindowCache:
    """Everything training needs, for N windows of T frames; K noise-augmentation draws per window."""
    latents: Tensor  # (N, T, 4, h, w) float16, scaled latent space (what the sampler produces)
    clip: Tensor  # (N, D) CLIP embedding of the first frame, clean (as at inference)
    cond: Tensor  # (N, K, 4, h, w) float16, unscaled latents of the first frame + σ_aug·ε
    cond_aug: Tensor  # (N, K) the σ_aug of each draw (it is also a conditioning input)
    fps_id: Tensor  # (N,) int64
    motion: Tensor  # (N,) float32, the clip's motion score
    windows: list[Window]

    def __len__(self) -> int:
        return len(self.windows)


def cache_key(windows: list[Window], settings: DataSettings, weights_sha256: str) -> str:
    blob = json.dumps([[asdict(w) for w in windows], asdict(settings), weights_sha256], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def _encode(model: LoadedModel, pics: list[Image.Image], settings: DataSettings, device: torch.device, i: int,
            chunk: int = 8) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One window: (latents (T, 4, h, w) scaled, CLIP (D,), conditioning latents (K, 4, h, w), σ_aug (K,))."""
    vae, encoder = model.vae, model.image_encoder
    x = torch.cat([to_tensor(p) for p in pics]).to(device)  # (T, 3, H, W) in [-1, 1]
    z = torch.cat([vae.encode(part) for part in x.split(chunk)])
    first = x[:1]
    clip = encoder.encode_image(first.to(next(encoder.parameters()).dtype)).float().cpu()[0]
    g = torch.Generator("cpu").manual_seed(seed_of("aug", settings.seed, i))
    sigmas = torch.exp(settings.aug_mean + settings.aug_std * torch.randn(settings.aug_draws, generator=g))
    eps = torch.randn((settings.aug_draws, *first.shape[1:]), generator=g).to(device)
    cond = vae.encode(first + sigmas.view(-1, 1, 1, 1).to(device) * eps)
    return (z * SCALE_FACTOR).half().cpu(), clip, cond.half().cpu(), sigmas


def _cache(model: LoadedModel, windows: list[Window], settings: DataSettings, device: torch.device, window_pictures,
           progress) -> WindowCache:
    """window_pictures yields (window index, its frames) in any order."""
    model.vae.to(device, torch.float32)  # the reference runs the first stage in float32
    model.image_encoder.to(device)
    parts = {}
    for i, pics in window_pictures:
        parts[i] = _encode(model, pics, settings, device, i)
        if progress:
            progress("cache", len(parts), len(windows))
    latents, clips, cond, cond_aug = (torch.stack(x) for x in zip(*(parts[i] for i in range(len(windows)))))
    return WindowCache(latents, clips, cond, cond_aug, torch.tensor([w.fps_id for w in windows]),
                       torch.tensor([w.motion for w in windows]), windows)


def encode_windows(model: LoadedModel, windows: list[Window], settings: DataSettings, device: torch.device,
                   progress: Callable[[str, int, int], None] | None = None) -> WindowCache:
    """Encode every window with the VAE (float32, as the reference runs it) and its first frame with CLIP. Each
    source is read once, streamed, and each window encoded as soon as its frames are in."""
    index = {id(w): i for i, w in enumerate(windows)}

    def pictures():
        for source in dict.fromkeys(w.source for w in windows):
            mine = [w for w in windows if w.source == source]
            for w, pics in window_frames(source, mine, settings.frames, settings.width, settings.height):
                yield index[id(w)], pics
    return _cache(model, windows, settings, device, pictures(), progress)


def encode_arrays(model: LoadedModel, clips: list[np.ndarray], fps: list[float], motion: list[float],
                  settings: DataSettings, device: torch.device,
                  progress: Callable[[str, int, int], None] | None = None) -> WindowCache:
    """Clips already made at the window size (frames (T, H, W, 3) uint8 each), such as procedural ones."""
    windows = [Window(f"array#{i}", "array", 0, 1, float(f), float(m)) for i, (f, m) in enumerate(zip(fps, motion))]
    return _cache(model, windows, settings, device, ((i, [Image.fromarray(f) for f in c]) for i, c in enumerate(clips)),
                  progress)


def save_cache(cache: WindowCache, path: Path, key: str) -> None:
    from ..checkpoints.saving import write_safetensors

    tensors = {"latents": cache.latents, "clip": cache.clip, "cond": cache.cond, "cond_aug": cache.cond_aug,
               "fps_id": cache.fps_id, "motion": cache.motion}
    about = {"key": key, "windows": [asdict(w) for w in cache.windows]}
    write_safetensors(tensors, path, {"svdcli.cache": json.dumps(about)})


def load_cache(path: Path, key: str) -> WindowCache | None:
    """The cache at path if it was made from the same windows, settings and weights; else None."""
    from ..checkpoints.safetensors_io import CheckpointError, SafetensorsFile

    try:
        f = SafetensorsFile(path)
        meta = json.loads(f.metadata.get("svdcli.cache", "{}"))
        if meta.get("key") != key:
            return None
        t = {k: f.read(k) for k in ("latents", "clip", "cond", "cond_aug", "fps_id", "motion")}
    except (CheckpointError, OSError, json.JSONDecodeError):
        return None
    return WindowCache(**t, windows=[Window(**w) for w in meta["windows"]])


def summary(cache: WindowCache) -> dict:
    """What a LoRA was trained on, for its metadata."""
    clips = sorted({w.clip for w in cache.windows})
    return {"clips": len(clips), "sources": len({w.source for w in cache.windows}), "windows": len(cache),
            "fps": sorted({round(w.fps, 2) for w in cache.windows}),
            "motion_score_mean": round(float(cache.motion.mean()), 5) if len(cache) else 0.0,
            "frames": int(cache.latents.shape[1]), "height": int(cache.latents.shape[-2]) * 8,
            "width": int(cache.latents.shape[-1]) * 8}

