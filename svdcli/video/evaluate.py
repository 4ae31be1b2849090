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
    fps = fps or video_fps
    m = clip_motion(frames, fps)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float64) / 255
    means = grey.mean(axis=(1, 2))
    result = {
        "video": str(video), "frames": len(frames), "fps": fps, "width": frames.shape[2], "height": frames.shape[1],
        "motion": m.score, "camera": m.label, "camera_confidence": m.confidence,
        "pan": m.pan, "tilt": m.tilt, "zoom": m.zoom, "roll": m.roll, "object_motion": m.object_motion,
        # flicker: frame-to-frame jumps of the mean brightness beyond the clip's slow trend
        "flicker": float(np.abs(np.diff(means, 2)).mean()) if len(means) > 2 else 0.0,
        "consistency_ssim": float(np.mean([ssim(a, b) for a, b in zip(frames, frames[1:])])) if len(frames) > 1
        else 1.0,
    }
    if image is not None:
        ref = np.asarray(fit(load_image(image), frames.shape[2], frames.shape[1], "crop"))
        result["first_frame_psnr"] = psnr(frames[0], ref)
        result["first_frame_ssim"] = ssim(frames[0], ref)
    return {k: (round(v, 5) if isinstance(v, float) and np.isfinite(v) else v) for k, v in result.items()}
