"""Seconds per interpolated frame of `svd interpolate` at SVD-XT's size (576×1024): a synthetic clip of a textured
picture panning and zooming with a textured disc moving across it, interpolated by --factor, end to end in memory
(flow, splatting, warping; no file I/O). Also the quality on the same clip: every other frame dropped, rebuilt x2,
PSNR against the dropped originals and against plain blending.

    python bench/interpolate.py --frames 9 --factor 4 --workers 2
    python bench/interpolate.py --frames 7 --scales 1 2 3 4   # the working size's effect on quality and time
"""

import argparse
import math
import os
import time

import cv2
import numpy as np

from svdcli.video import interpolate as lib
from svdcli.video.interpolate import interpolate
from svdcli.video.motion import psnr


def picture(seed: int, h: int, w: int) -> np.ndarray:
    """Noise at several scales plus discs, like a photo: (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale in (2, 8, 32, 128):
        small = rng.random((h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w] * math.sqrt(scale)
    img = img / img.max() * 220
    for _ in range(60):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(6, 60)), colour, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def clip(frames: int, h: int = 576, w: int = 1024) -> np.ndarray:
    """A camera panning 8 px and zooming 1% per frame over a large picture, and a disc 160 px across crossing it
    at 20 px per frame: (T, h, w, 3) uint8, motion about as fast as SVD-XT's at 6 fps."""
    big = picture(0, 2 * h, 2 * w)
    disc = cv2.resize(picture(1, 480, 480), (160, 160), interpolation=cv2.INTER_AREA)  # detail at every scale
    yy, xx = np.mgrid[:160, :160]
    inside = (yy - 79.5) ** 2 + (xx - 79.5) ** 2 <= 79 ** 2
    out = []
    for i in range(frames):
        m = cv2.getRotationMatrix2D((w + 8 * i, h), 0, 1.01 ** i)
        m[:, 2] += (w / 2 - w - 8 * i, h / 2 - h)
        f = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        y, x = 200 + 4 * i, 100 + 20 * i
        f[y:y + 160, x:x + 160][inside] = disc[inside]
        out.append(f)
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=9, help="source frames")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="pairs in parallel (default: all cores)")
    ap.add_argument("--size", default="1024x576", help="WIDTHxHEIGHT")
    ap.add_argument("--scales", type=int, nargs="*", default=[], help="also rebuild with the flow computed on "
                    "copies shrunk by these factors (1: full size) instead of the one chosen from the size")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    frames = clip(args.frames, h, w)
    interpolate(frames[:2], 6.0, factor=2, workers=1)  # warm up OpenCV (first DIS call, thread pools)
    t0 = time.perf_counter()
    out = interpolate(frames, 6.0, factor=args.factor, workers=args.workers)
    seconds = time.perf_counter() - t0
    new = len(out.frames) - len(frames)
    print(f"{args.frames} frames {w}x{h} x{args.factor} -> {len(out.frames)} ({new} new), {args.workers} workers, "
          f"cv2 threads {cv2.getNumThreads()}, {os.cpu_count()} cores: {seconds:.1f} s, "
          f"{seconds / new:.3f} s per interpolated frame (flow on a {out.record['work_scale']}x smaller copy)")
    blended = [psnr(((frames[i - 1].astype(np.float32) + frames[i + 1]) / 2 + 0.5).astype(np.uint8), frames[i])
               for i in range(1, len(frames) - 1, 2)]
    print(f"plain blending of the neighbours of dropped frames: PSNR {np.mean(blended):.1f} dB "
          f"(worst {min(blended):.1f})")
    chosen = lib.work_scale(h, w)
    for scale in [chosen] + [s for s in args.scales if s != chosen]:
        lib.work_scale = lambda height, width, s=scale: s  # the library picks it from the size; forced to compare
        t0 = time.perf_counter()
        rebuilt = interpolate(frames[::2], 6.0, factor=2, workers=args.workers).frames
        seconds = (time.perf_counter() - t0) / (len(frames) // 2)
        ours = [psnr(rebuilt[i], frames[i]) for i in range(1, len(frames) - 1, 2)]
        print(f"dropped frames rebuilt x2, flow {w // scale}x{h // scale}{' (chosen)' * (scale == chosen)}: PSNR "
              f"{np.mean(ours):.1f} dB (worst {min(ours):.1f}), {seconds:.3f} s per frame")


if __name__ == "__main__":
    main()
