"""Frame interpolation from optical flow, offline: raise a clip's frame rate without learned weights.

For each pair of neighbouring frames a, b and each time t in (0, 1) between them:

1. Dense flow both ways (OpenCV DIS, medium preset, on grey copies shrunk by a factor chosen from the clip's
   size, to at most 0.1 megapixels): f_ab (h, w, 2) and f_ba. DIS searches coarse to fine and loses objects that
   move about their own size per frame: phase correlation on tiles finds such motions, they are offered where
   they match better, and DIS refines from there. DIS also smooths flow across motion edges: each pixel then
   takes, of its own, its neighbours' and the reversed other-direction flow, the one under which the other frame
   matches best (sharp edges around moving objects).
2. Forward-backward consistency: a pixel's flow, followed by the other frame's flow from where it lands, should
   come back (within a tolerance that grows with the motion, as in Sundaram et al. 2010). A pixel of a that fails
   where it lands on a pixel of b that passes is hidden in b (something has moved over it); one that leaves the
   picture is hidden too. Failing where b fails as well is a lost match, not an occlusion.
3. Flow at time t, from both: every pixel of a moves by t·f_ab and every pixel of b by (1 − t)·f_ba; each is
   splatted (bilinear forward splatting) at its position at time t, carrying its motion (as a → b motion) and the
   frames it is seen in. Where deposits collide, consistent ones outweigh inconsistent ones 100:1, so a moving
   object covers the background it moves over. Holes are filled from coarser scales (push-pull).
4. Backward warping of both frames (bicubic, full size) along the motion at time t.
5. Blending weighted by closeness in time and visibility: where one frame cannot see a point (occluded, or outside
   the picture), the other frame alone supplies it.
6. Fallback to plain blending, (1 − t)·a + t·b, where flow is unreliable: where both frames see a point but the
   motion explains the pair no better than no motion (the two warps agree no better than the unmoved frames), and
   for a whole pair of which little is consistent (a cut, a flash).

Output times: a clip of T frames at `fps`, raised by a ratio r (an integer factor, or target_fps / fps), gets the
frames at source times k / r, kept as exact fractions: with an integer factor every original frame is kept
unchanged and the new frames fall evenly between them. Frame k plays at k / (r·fps) seconds, the time its source
time had: motion keeps its speed and the clip its length.

All of it is whole-array numpy/OpenCV work; pairs run in parallel threads. The library never prints; progress goes
through a callback (stage, done, total).
"""

import datetime
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .. import __version__
from ..media.images import to_uint8
from ..media.outputs import sidecar_path
from ..media.video_io import read_clip
from .motion import flow

MAX_RATIO = 16  # more than 16 new frames per source frame: slow motion, not smoothing, and memory grows with it
WORK_PIXELS = 100_000  # flow is computed on a copy of the frames shrunk to at most this many pixels
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM  # patches 8 px, stride 3, variational refinement; ~10 ms at 0.1 MP
MIN_CONSISTENT = 0.2  # below this share of consistent pixels a pair is taken as unrelated (a cut): plain blending


class InterpolateError(ValueError):
    """A request that cannot work (bad factor or rate, too few frames); one line for the user."""


# --- one pair of frames --------------------------------------------------------------------------------------------

def work_scale(height: int, width: int) -> int:
    """Flow work (DIS, matching, consistency, splatting) runs on the frames shrunk by this whole factor, to at most
    WORK_PIXELS (576×1024 works at 192×341); the frames themselves are always warped at full size. This is how the
    clip's size sets the flow's cost: medium DIS on the small copy rebuilds frames as well as DIS on the full frames
    in a fraction of the time (docs/benchmarks.md); motion edges are sharpened on the copy."""
    return max(1, math.ceil(math.sqrt(height * width / WORK_PIXELS)))


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates x, y: (H, W) float32 each."""
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _inside(x: np.ndarray, y: np.ndarray, h: int, w: int) -> np.ndarray:
    """1 inside the picture, 0 from half a pixel beyond its edge: (H, W) float32."""
    margin = np.minimum(np.minimum(x + 0.5, w - 0.5 - x), np.minimum(y + 0.5, h - 0.5 - y))
    return np.clip(margin + 0.5, 0, 1)


def consistency(f_ab: np.ndarray, f_ba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward check of f_ab: f_ba, from where a's pixel lands in b, should lead back (within 0.7 px plus
    10% of the motion). Returns (H, W) each: how well a's pixel passes in [0, 1], and where it lands in b (x, y)."""
    h, w = f_ab.shape[:2]
    gx, gy = _grid(h, w)
    x, y = gx + f_ab[..., 0], gy + f_ab[..., 1]
    back = _sample(f_ba, x, y)  # (H, W, 2)
    err2 = ((f_ab + back) ** 2).sum(-1)
    tol2 = 0.01 * ((f_ab ** 2).sum(-1) + (back ** 2).sum(-1)) + 0.5
    return np.exp(-err2 / tol2) * _inside(x, y, h, w), x, y


def hidden(passes_a: np.ndarray, passes_b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: how surely a's pixel is hidden in b. It is when it lands outside the picture, or fails
    the check where it lands on a pixel of b that passes (something else, seen in both, has moved over it). Failing
    where b's pixel fails too is a failed match (flow lost on a fast object), not an occlusion: seen in both."""
    h, w = passes_a.shape
    return np.maximum((1 - passes_a) * _sample(passes_b, x, y), 1 - _inside(x, y, h, w))


class BestFlow:
    """Per pixel, the best of the flows offered: the one under which b matches a best over a 5×5 window (colour
    difference; a flow leading out of the picture costs most). a, b: (H, W, 3) uint8; f (H, W, 2) from a to b."""

    def __init__(self, f: np.ndarray, a: np.ndarray, b: np.ndarray):
        self.a, self.b = a, b
        self.gx, self.gy = _grid(*a.shape[:2])
        self.flow, self.cost = f.copy(), self.cost_of(f)

    def cost_of(self, g: np.ndarray) -> np.ndarray:
        h, w = self.a.shape[:2]
        x, y = self.gx + g[..., 0], self.gy + g[..., 1]
        inside = _inside(x, y, h, w)
        d = _channel_sum(cv2.absdiff(_sample(self.b, x, y), self.a).astype(np.float32))
        return cv2.boxFilter(d * inside + 765 * (1 - inside), -1, (5, 5))

    def offer(self, g: np.ndarray, margin: float = 0.0) -> None:
        """g (H, W, 2) wins where it matches better by a fraction `margin` of the current cost."""
        c = self.cost_of(g)
        better = c < (1 - margin) * self.cost
        np.copyto(self.flow, g, where=better[..., None])
        np.copyto(self.cost, c, where=better)


def lost_motions(ga: np.ndarray, gb: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Translations (K, 2) from grey a to b that DIS's flow f lost. DIS searches coarse to fine and loses an object
    that moves more than about its own size between frames; phase correlation over a whole tile (64 and 128 px,
    half-overlapping) does not. A clear peak that almost no pixel of the tile's flow is near is a lost motion."""
    h, w = ga.shape
    found = []
    for size in (64, 128):
        if size > min(h, w):
            break
        window = cv2.createHanningWindow((size, size), cv2.CV_32F)
        for y in range(0, h - size + 1, size // 2):
            for x in range(0, w - size + 1, size // 2):
                ta, tb = (g[y:y + size, x:x + size].astype(np.float32) for g in (ga, gb))
                # less the mean: else the window's own edges correlate, at zero shift
                shift, peak = cv2.phaseCorrelate(ta - ta.mean(), tb - tb.mean(), window)
                if peak < 0.2:
                    continue
                near = np.abs(f[y:y + size, x:x + size] - np.float32(shift)).max(-1) < 1.5
                if near.mean() < 0.1 and all(abs(shift[0] - u) >= 1 or abs(shift[1] - v) >= 1 for u, v in found):
                    found.append(shift)
    return np.float32(found).reshape(-1, 2)


def refine_flow(f: np.ndarray, reverse: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Sharpen DIS's flow f (H, W, 2) from a to b at motion edges. DIS smooths flow across them: a rim of background
    moves partly with the object, and the reverse. Each pixel takes the best (BestFlow) of its own flow; −reverse
    (DIS's flow from b to a, reversed: right inside a moving region, and one direction sometimes keeps what the
    other lost); and then its neighbours' flow, radius/2 and radius away in 8 directions."""
    best = BestFlow(f, a, b)
    best.offer(-reverse)
    base = best.flow.copy()
    h, w = f.shape[:2]
    for r in (radius / 2, radius):
        for angle in np.arange(8) * np.pi / 4:  # the flow of the neighbour at p + offset, for every p at once
            shift = np.float32([[1, 0, -r * np.cos(angle)], [0, 1, -r * np.sin(angle)]])
            best.offer(cv2.warpAffine(base, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return best.flow


def _channel_sum(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 -> (H, W): OpenCV's per-pixel transform, much faster than numpy's sum over a short axis."""
    return cv2.transform(x, np.ones((1, 3), np.float32))


@dataclass
class PairFlow:
    """Flow between frames a and b, on the frames shrunk by `scale`."""
    scale: int
    f_ab: np.ndarray  # (h, w, 2) flow from a to b, working pixels
    f_ba: np.ndarray  # (h, w, 2)
    k_a: np.ndarray  # (h, w) how well a's pixel passes the forward-backward check
    k_b: np.ndarray  # (h, w)
    hidden_a: np.ndarray  # (h, w) how surely a's pixel is hidden in b
    hidden_b: np.ndarray  # (h, w)

    @property
    def related(self) -> bool:
        """False for a pair that shares little (a cut, a flash): flow means nothing there."""
        return float(np.mean(self.k_a > 0.5)) >= MIN_CONSISTENT


def grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def shrink(frame: np.ndarray, scale: int) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame if scale == 1 else cv2.resize(frame, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


def pair_flow(a: np.ndarray, b: np.ndarray) -> PairFlow:
    """a, b: (H, W, 3) uint8."""
    scale = work_scale(*a.shape[:2])
    a, b = shrink(a, scale), shrink(b, scale)
    ga, gb = grey(a), grey(b)
    f_ab, f_ba = flow(ga, gb, DIS_PRESET), flow(gb, ga, DIS_PRESET)
    lost = np.concatenate([lost_motions(ga, gb, f_ab), -lost_motions(gb, ga, f_ba)])  # (K, 2), a -> b
    if len(lost):  # offer them where they match clearly better, then let DIS refine from there
        start_ab, start_ba = BestFlow(f_ab, a, b), BestFlow(f_ba, b, a)
        for m in lost:
            start_ab.offer(np.broadcast_to(m, f_ab.shape), margin=0.3)
            start_ba.offer(np.broadcast_to(-m, f_ba.shape), margin=0.3)
        f_ab = flow(ga, gb, DIS_PRESET, start=cv2.medianBlur(start_ab.flow, 5))
        f_ba = flow(gb, ga, DIS_PRESET, start=cv2.medianBlur(start_ba.flow, 5))
    # how far to look across an edge: about the largest motion relative to the rest of the frame
    rel = np.abs(f_ab[::4, ::4] - np.median(f_ab[::4, ::4], axis=(0, 1))).max(-1)
    spread = float(np.percentile(rel, 99)) + 2
    f_ab, f_ba = refine_flow(f_ab, f_ba, a, b, spread), refine_flow(f_ba, f_ab, b, a, spread)
    (k_a, xa, ya), (k_b, xb, yb) = consistency(f_ab, f_ba), consistency(f_ba, f_ab)
    return PairFlow(scale, f_ab, f_ba, k_a, k_b, hidden(k_a, k_b, xa, ya), hidden(k_b, k_a, xb, yb))


def _splat(x: np.ndarray, y: np.ndarray, values: np.ndarray, weight: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear forward splatting of N points at (x, y) (N,) carrying values (N, C) with weight (N,).
    Returns (C + 2, H, W): the weighted sums of the values, the summed weights, and the coverage (summed shares)."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.astype(np.intp), y0.astype(np.intp)
    c = values.shape[1]
    out = np.zeros((c + 2, h * w))
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        where, share = yi[ok] * w + xi[ok], share[ok]
        k = share * weight[ok]
        for i in range(c):
            out[i] += np.bincount(where, k * values[ok, i], minlength=h * w)
        out[c] += np.bincount(where, k, minlength=h * w)
        out[c + 1] += np.bincount(where, share, minlength=h * w)
    return out.reshape(c + 2, h, w)


def _fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Push-pull: values (H, W, C) trusted as much as known (H, W) in [0, 1]; the rest from coarser scales."""
    h, w = known.shape
    if known.min() >= 1 or min(h, w) < 2:
        return values
    size = ((w + 1) // 2, (h + 1) // 2)
    k = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
    v = cv2.resize(values * known[..., None], size, interpolation=cv2.INTER_AREA) / np.maximum(k, 1e-6)[..., None]
    coarse = cv2.resize(_fill(v, np.minimum(4 * k, 1)), (w, h), interpolation=cv2.INTER_LINEAR)
    return known[..., None] * values + (1 - known[..., None]) * coarse.reshape(values.shape)


def motion_at(pf: PairFlow, t: float) -> np.ndarray:
    """(h, w, 4) at time t on the working grid: the a -> b motion of what is there (2, working pixels), and
    whether a sees it and whether b sees it (each in [0, 1])."""
    h, w = pf.k_a.shape
    gx, gy = _grid(h, w)
    # Deposits: a's pixels at time t, then b's. Each carries its a -> b motion and where it is seen (in a, in b).
    x = np.concatenate([gx + t * pf.f_ab[..., 0], gx + (1 - t) * pf.f_ba[..., 0]], axis=None)  # (2N,)
    y = np.concatenate([gy + t * pf.f_ab[..., 1], gy + (1 - t) * pf.f_ba[..., 1]], axis=None)
    motion = np.concatenate([pf.f_ab.reshape(-1, 2), -pf.f_ba.reshape(-1, 2)])  # (2N, 2)
    ones = np.ones(h * w, np.float32)
    seen_a = np.concatenate([ones, 1 - pf.hidden_b.ravel()])  # a's own pixels, and b's not hidden in a: (2N,)
    seen_b = np.concatenate([1 - pf.hidden_a.ravel(), ones])
    # Consistent deposits win collisions; the nearer frame's deposits count more (less extrapolated).
    weight = (0.01 + np.concatenate([pf.k_a.ravel(), pf.k_b.ravel()])) * np.repeat([1 - t + 1e-3, t + 1e-3], h * w)
    s = _splat(x, y, np.column_stack([motion, seen_a, seen_b]), weight, h, w)  # (6, h, w)
    est = (s[:4] / np.maximum(s[4], 1e-12)).transpose(1, 2, 0).astype(np.float32)  # (h, w, 4)
    return _fill(est, np.clip(s[5], 0, 1).astype(np.float32))


def between(a: np.ndarray, b: np.ndarray, pf: PairFlow, t: float) -> np.ndarray:
    """The frame at time t in (0, 1) between a and b: (H, W, 3) uint8."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    blend = (1 - t) * a32 + t * b32
    if not pf.related:
        return to_uint8(blend, scale=1)
    h, w = a.shape[:2]
    est = motion_at(pf, t)
    if pf.scale > 1:
        est = cv2.resize(est, (w, h), interpolation=cv2.INTER_LINEAR)
    hs, ws = pf.k_a.shape
    m, seen_a, seen_b = est[..., :2] * np.float32([w / ws, h / hs]), est[..., 2], est[..., 3]
    # Backward warping of both frames along the motion at time t.
    gx, gy = _grid(h, w)
    xa, ya = gx - t * m[..., 0], gy - t * m[..., 1]
    xb, yb = gx + (1 - t) * m[..., 0], gy + (1 - t) * m[..., 1]
    wa = cv2.remap(a32, xa, ya, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)  # bicubic: as sharp as the frames
    wb = cv2.remap(b32, xb, yb, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    seen_a = seen_a * _inside(xa, ya, h, w)
    seen_b = seen_b * _inside(xb, yb, h, w)
    ka, kb = (1 - t) * seen_a + 1e-3, t * seen_b + 1e-3
    warped = (ka[..., None] * wa + kb[..., None] * wb) / (ka + kb)[..., None]
    # Unreliable flow: where both frames see the point, the warps should agree better than the frames do
    # unmoved (a static point agrees both ways). Where they do not, the motion explains nothing: blend instead.
    box = lambda p, q: cv2.boxFilter(_channel_sum(cv2.absdiff(p, q)) / 3, -1, (7, 7))  # noqa: E731
    gain = box(a32, b32) - box(wa, wb)  # how much better the motion explains the pair, grey levels
    trust = 1 - seen_a * seen_b * (1 - np.clip(gain / 4, 0, 1))
    trust = cv2.GaussianBlur(trust, (0, 0), 1.5)[..., None]
    return to_uint8(trust * warped + (1 - trust) * blend, scale=1)


# --- a clip ----------------------------------------------------------------------------------------------------------

def schedule(frames: int, ratio: Fraction, loop: bool) -> list[tuple[int, Fraction]]:
    """Output frames as (i, t): source frame i when t == 0, else the time t between frames i and i + 1 (with loop,
    the last frame's partner is the first). T frames give (T − 1)·r + 1, or T·r with loop (for a fractional
    ratio: the times up to the last frame, or before the first frame comes round again)."""
    count = math.ceil(frames * ratio) if loop else math.floor((frames - 1) * ratio) + 1
    out = []
    for k in range(count):
        s = k / ratio  # source time, exact
        out.append((math.floor(s), s - math.floor(s)))
    return out


def resolve_ratio(frames: int, fps: float, factor: int | None, target_fps: float | None) -> Fraction:
    """The rate ratio from factor or target_fps (one of them; neither: 2), checked along with the clip length."""
    if frames < 2:
        raise InterpolateError(f"a clip of {frames} frame{'s' * (frames != 1)}: interpolation needs at least 2")
    if factor is not None and target_fps is not None:
        raise InterpolateError("give --factor or --fps, not both")
    if target_fps is None:
        factor = 2 if factor is None else factor
        if not 2 <= factor <= MAX_RATIO:
            raise InterpolateError(f"--factor {factor}: must be a whole number from 2 to {MAX_RATIO}")
        return Fraction(factor)
    if not fps > 0:
        raise InterpolateError("the clip has no frame rate; give it with --source-fps")
    ratio = Fraction(target_fps / fps).limit_denominator(1001)  # 24 / 7 stays 24/7; 59.94 / 29.97 becomes 2
    if not 1 < ratio <= MAX_RATIO:
        raise InterpolateError(f"--fps {target_fps:g}: must be above the clip's {fps:g} fps and at most "
                               f"{MAX_RATIO} times it")
    return ratio


@dataclass
class Interpolated:
    frames: np.ndarray  # (T', H, W, 3) uint8
    fps: float  # playback rate of frames
    record: dict  # how they were made, for the metadata


def interpolate(frames: np.ndarray, fps: float, factor: int | None = None, target_fps: float | None = None,
                loop: bool = False, progress: Callable | None = None, workers: int | None = None) -> Interpolated:
    """frames (T, H, W, 3) uint8 at fps -> the clip at fps·factor (every original frame kept) or at exactly
    target_fps. loop: also interpolate from the last frame to the first (a seamless loop). Pairs run in parallel
    threads (OpenCV and numpy release the GIL for the heavy work). progress(stage, done, total) per pair."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InterpolateError("frames must be (T, H, W, 3) uint8")
    n = len(frames)
    ratio = resolve_ratio(n, fps, factor, target_fps)
    plan = schedule(n, ratio, loop)
    pairs = sorted({i for i, t in plan if t})  # pairs with new frames between them
    times = {i: sorted({t for j, t in plan if j == i and t}) for i in pairs}

    def run(i):
        a, b = frames[i], frames[(i + 1) % n]
        pf = pair_flow(a, b)
        return i, {t: between(a, b, pf, float(t)) for t in times[i]}, pf.related

    made, unrelated = {}, 0
    if progress:
        progress("interpolate", 0, len(pairs))
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for done, (i, new, related) in enumerate(pool.map(run, pairs), 1):
            made[i], unrelated = new, unrelated + (not related)
            if progress:
                progress("interpolate", done, len(pairs))
    out = np.stack([frames[i] if not t else made[i][t] for i, t in plan])
    out_fps = fps * ratio if target_fps is None else float(target_fps)
    record = {"method": "optical flow (OpenCV DIS medium, forward-backward occlusion check)",
              "work_scale": work_scale(*frames.shape[1:3]),
              "factor": int(ratio) if ratio.denominator == 1 else float(ratio), "source_fps": fps, "fps": out_fps,
              "loop": loop, "source_frames": n, "frames": len(out), "blended_pairs": unrelated}
    return Interpolated(out, float(out_fps), record)


# --- files -----------------------------------------------------------------------------------------------------------

def svd_metadata(source: str | Path) -> dict | None:
    """What svd wrote with a clip: its sidecar JSON, or for a folder of frames the first PNG's text chunk."""
    p = Path(source)
    sidecar = sidecar_path(p, "png" if p.is_dir() else p.suffix.lstrip("."))
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            if isinstance(meta, dict) and "svd_version" in meta:
                return meta
        except (OSError, ValueError):
            pass
    if p.is_dir():
        for png in sorted(p.glob("*.png"))[:1]:
            try:
                with Image.open(png) as im:
                    meta = json.loads(im.text.get("svd", "null"))
            except (OSError, ValueError):
                return None
            return meta if isinstance(meta, dict) else None
    return None


def read_source(source: str | Path, source_fps: float | None = None) -> tuple[np.ndarray, float, dict | None]:
    """(frames (T, H, W, 3) uint8, fps, svd's metadata or None) of a video file or a folder of frames. The rate:
    source_fps if given; else a video's own; else, for a folder, the rate svd recorded for it, or 24."""
    frames, fps = read_clip(source)
    meta = svd_metadata(source)
    if source_fps is not None:
        if not source_fps > 0:
            raise InterpolateError(f"--source-fps {source_fps:g}: must be positive")
        fps = source_fps
    elif Path(source).is_dir() and meta:  # the file's rate; older outputs only have generate's --fps
        fps = float(meta.get("fps_written") or (meta.get("settings") or {}).get("fps") or fps)
    return frames, fps, meta


def metadata(source: str | Path, result: Interpolated, source_meta: dict | None) -> dict:
    t, h, w, _ = result.frames.shape
    return {"svd_version": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "input": str(source), "width": w, "height": h, "frames_written": t, "fps_written": result.fps,
            "interpolation": result.record, "source_metadata": source_meta}
