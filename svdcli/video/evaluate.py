"""What a generated clip did: first-frame fidelity, motion, flicker, consistency and camera motion, measured with
the same flow code as curate."""

from pathlib import Path

import cv2
import numpy as np

from ..media.images import fit, load_image
from ..media.video_io import read_clip
from .motion import clip_motion, psnr, ssim


def evaluate(video: str | Path, image: str | Path | None = None, fps: float | None = None) -> dict:
    frames, video_fps = read_clip(video)
    reference = None
    if image is not None:
        reference = np.asarray(fit(load_image(image), frames.shape[2], frames.shape[1], "crop"))
    return {"video": str(video), **evaluate_frames(frames, fps or video_fps, reference)}


def evaluate_frames(frames: np.ndarray, fps: float, reference: np.ndarray | None = None) -> dict:
    """The measurements of evaluate for frames (T, H, W, 3) uint8 at fps; reference: the input image at the frames'
    size (uint8), for first-frame fidelity."""
    m = clip_motion(frames, fps)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float64) / 255
    means = grey.mean(axis=(1, 2))
    result = {
        "frames": len(frames), "fps": fps, "width": frames.shape[2], "height": frames.shape[1],
        "motion": m.score, "camera": m.label, "camera_confidence": m.confidence,
        "pan": m.pan, "tilt": m.tilt, "zoom": m.zoom, "roll": m.roll, "object_motion": m.object_motion,
        # flicker: frame-to-frame jumps of the mean brightness beyond the clip's slow trend
        "flicker": float(np.abs(np.diff(means, 2)).mean()) if len(means) > 2 else 0.0,
        "consistency_ssim": float(np.mean([ssim(a, b) for a, b in zip(frames, frames[1:])])) if len(frames) > 1
        else 1.0,
    }
    if reference is not None:
        result["first_frame_psnr"] = psnr(frames[0], reference)
        result["first_frame_ssim"] = ssim(frames[0], reference)
    return {k: (round(v, 5) if isinstance(v, float) and np.isfinite(v) else v) for k, v in result.items()}
