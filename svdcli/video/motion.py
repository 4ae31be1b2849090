"""Measuring clips' motion: optical flow, camera-motion labels, cuts, and clip quality (clips are read by
media.video_io).

Shared by `svd curate` (which clips to train on) and `svd eval` (what a generated clip did).

Camera motion: dense optical flow (OpenCV DIS) between frames sampled at about 2 fps, on a grey copy 256 px wide.
A least-squares similarity transform fitted to each flow field, x' = s·R(θ)·x + t about the frame centre, gives pan
and tilt (t, as a fraction of the frame width per second), zoom (log s per second) and roll (θ per second); the
flow left unexplained is object motion. Sign conventions: a camera panning right moves the content left.
"""

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

ANALYSIS_WIDTH = 256
LABELS = ("static", "pan-left", "pan-right", "tilt-up", "tilt-down", "zoom-in", "zoom-out", "roll")


def grey_small(frame: np.ndarray, width: int = ANALYSIS_WIDTH) -> np.ndarray:
    h, w = frame.shape[:2]
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (width, max(8, round(h * width / w))), interpolation=cv2.INTER_AREA)


_DIS = threading.local()  # one DIS object per thread and preset: calc keeps buffers, so it is not reentrant


def flow(a: np.ndarray, b: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
         start: np.ndarray | None = None) -> np.ndarray:
    """Dense flow from grey frame a to b: (h, w, 2) pixels; start: a flow to refine instead of starting from 0."""
    dis = _DIS.__dict__.get(preset)
    if dis is None:
        dis = _DIS.__dict__[preset] = cv2.DISOpticalFlow_create(preset)
    return dis.calc(a, b, None if start is None else start.copy())


@dataclass
class PairMotion:
    tx: float  # content translation, fraction of the width (+: moves right)
    ty: float  # content translation, fraction of the width (+: moves down)
    zoom: float  # log scale change (+: content grows, zoom in)
    roll: float  # rotation, radians
    residual: float  # flow not explained by the camera, fraction of the width
    magnitude: float  # mean flow magnitude, fraction of the width


def fit_camera(f: np.ndarray, border: float = 0.08) -> PairMotion:
    """Least-squares similarity transform of a flow field (ignoring a border where flow is unreliable)."""
    h, w = f.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = x - (w - 1) / 2, y - (h - 1) / 2
    by, bx = int(h * border), int(w * border)
    sl = (slice(by, h - by), slice(bx, w - bx))
    x, y, u, v = x[sl].ravel(), y[sl].ravel(), f[..., 0][sl].ravel().astype(np.float64), f[..., 1][sl].ravel()
    # x' = a·x − b·y + tx ; y' = b·x + a·y + ty ; unknowns (a, b, tx, ty), flow = x' − x
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    m = np.block([[x[:, None], -y[:, None], ones[:, None], zeros[:, None]],
                  [y[:, None], x[:, None], zeros[:, None], ones[:, None]]])
    rhs = np.concatenate([x + u, y + v])
    (a, b, tx, ty), *_ = np.linalg.lstsq(m, rhs, rcond=None)
    pred = m @ np.array([a, b, tx, ty]) - np.concatenate([x, y])
    res = np.sqrt(np.mean((np.concatenate([u, v]) - pred) ** 2))
    scale = math.hypot(a, b)
    return PairMotion(tx / w, ty / w, math.log(max(scale, 1e-6)), math.atan2(b, a), res / w,
                      float(np.mean(np.hypot(u, v))) / w)


@dataclass
class ClipMotion:
    label: str
    confidence: float
    score: float  # mean flow magnitude per second, fraction of the width
    pan: float  # per second, as in PairMotion
    tilt: float
    zoom: float
    roll: float
    object_motion: float  # residual per second


# Thresholds per second below which a component counts as no motion, and the weights that put the components on
# a common scale (a zoom of log 1.1/s moves the frame edge about as much as a pan of 5% of the width/s).
STILL = 0.012
WEIGHTS = {"pan": 1.0, "tilt": 1.0, "zoom": 0.5, "roll": 0.5}


def clip_motion(frames: np.ndarray, fps: float, sample_fps: float = 2.0) -> ClipMotion:
    """Camera label and motion score of a clip, from frame pairs about 1/sample_fps seconds apart."""
    step = max(1, round(fps / sample_fps))
    idx = list(range(0, len(frames), step))
    if len(idx) < 2:
        idx = [0, len(frames) - 1] if len(frames) > 1 else [0, 0]
    greys = [grey_small(frames[i]) for i in idx]
    pairs = [fit_camera(flow(a, b)) for a, b in zip(greys, greys[1:])]
    dt = max(idx[1] - idx[0], 1) / fps
    mean = lambda k: float(np.mean([getattr(p, k) for p in pairs])) / dt  # noqa: E731
    pan, tilt, zoom, roll = mean("tx"), mean("ty"), mean("zoom"), mean("roll")
    parts = {"pan": abs(pan) * WEIGHTS["pan"], "tilt": abs(tilt) * WEIGHTS["tilt"],
             "zoom": abs(zoom) * WEIGHTS["zoom"], "roll": abs(roll) * WEIGHTS["roll"]}
    top = max(parts, key=parts.get)
    total = sum(parts.values())
    if parts[top] < STILL:
        label, confidence = "static", 1.0 - parts[top] / STILL
    else:
        label = {"pan": "pan-left" if pan > 0 else "pan-right", "tilt": "tilt-up" if tilt > 0 else "tilt-down",
                 "zoom": "zoom-in" if zoom > 0 else "zoom-out", "roll": "roll"}[top]
        confidence = parts[top] / total
    return ClipMotion(label, round(confidence, 3), mean("magnitude"), pan, tilt, zoom, roll, mean("residual"))


# --- cuts ------------------------------------------------------------------------------------------------------------

def _thumb(frame: np.ndarray) -> np.ndarray:
    """A 32×18 colour thumbnail in [0, 1]: blind to small motion, not to a change of scene."""
    return cv2.resize(frame, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@dataclass
class Cut:
    start: int  # first frame of the transition
    end: int  # first frame after it (start + 1... for a fade; start == end for an abrupt cut)
    kind: str  # "cut" or "fade"


def find_cuts(frames: np.ndarray, fps: float, cheap_fps: float = 4.0, cut_min: float = 0.06, spike: float = 3.0,
              fade_min: float = 0.06, fade_seconds: float = 1.5) -> list[Cut]:
    """The paper's cascade. A cheap pass at a low frame rate looks for abrupt cuts: a thumbnail change that is a
    spike (several times the changes around it; a smooth pan changes steadily), then located at the full rate.
    Only the segments between cuts are examined at the full rate for gradual transitions: a window whose frames are
    all blends of its end frames (a dissolve or fade; a pan's frames are not blends) with a rising blend weight."""
    n = len(frames)
    if n < 3:
        return []
    thumbs: dict[int, np.ndarray] = {}

    def th(i):
        if i not in thumbs:
            thumbs[i] = _thumb(frames[i])
        return thumbs[i]

    step = max(1, round(fps / cheap_fps))
    sampled = list(range(0, n, step)) + ([n - 1] if (n - 1) % step else [])
    d = [_change(th(a), th(b)) for a, b in zip(sampled, sampled[1:])]
    cuts = []
    for k, (a, b) in enumerate(zip(sampled, sampled[1:])):
        around = d[max(0, k - 3):k] + d[k + 1:k + 4]
        level = float(np.median(around)) if around else 0.0
        if d[k] > cut_min and d[k] > spike * level:
            full = [_change(th(i), th(i + 1)) for i in range(a, b)]
            j = int(np.argmax(full))
            if full[j] > 0.6 * d[k]:  # one frame holds the change: abrupt (else a fast fade, found below)
                cuts.append(Cut(a + j + 1, a + j + 1, "cut"))
    bounds = [0] + [c.start for c in cuts] + [n]
    win = max(4, round(fade_seconds * fps))
    for s, e in zip(bounds, bounds[1:]):
        i = s
        while i + 2 < e:
            j = min(i + win, e - 1)
            fade_range = _blend(th, i, j, fade_min)
            if fade_range and not _moved(frames[i], frames[j]):
                cuts.append(Cut(*fade_range, "fade"))
                i = fade_range[1]
            else:
                i += max(1, win // 3)
    merged: list[Cut] = []
    for c in sorted(cuts, key=lambda c: c.start):  # a long fade can be found as adjacent pieces
        if merged and c.kind == merged[-1].kind == "fade" and c.start <= merged[-1].end + 1:
            merged[-1] = Cut(merged[-1].start, max(merged[-1].end, c.end), "fade")
        else:
            merged.append(c)
    return merged


def _blend(th, i: int, j: int, minimum: float) -> tuple[int, int] | None:
    """If frames i..j hold a dissolve from (near) th(i) to (near) th(j), its [start, end) frames."""
    a, b = th(i), th(j)
    direction = b - a
    size = float(np.abs(direction).mean())
    if size < minimum:
        return None
    dd = float((direction * direction).sum())
    alphas, worst = [], 0.0
    for m in range(i + 1, j):
        alpha = float(((th(m) - a) * direction).sum()) / dd
        worst = max(worst, _change(th(m), a + alpha * direction) / size)
        alphas.append(alpha)
    if worst > 0.2 or not alphas or np.any(np.diff(alphas) < -0.05):
        return None  # intermediate frames are not blends of the ends (motion), or not a one-way blend
    seq = [0.0] + alphas + [1.0]
    moving = [k for k in range(len(seq) - 1) if seq[k + 1] - seq[k] > 0.02]
    if not moving or seq[-1] - seq[0] < 0.9:
        return None
    return i + moving[0] + 1, i + moving[-1] + 1


def _moved(a: np.ndarray, b: np.ndarray, width: int = 128) -> bool:
    """Whether frame b is frame a moved by the camera: one similarity transform (fitted to the optical flow)
    explains most of their difference. Small motion of soft texture (a zoom into a blurry field) changes a
    thumbnail almost linearly, as a dissolve does; a dissolve's end frame is no warp of its start. (The flow alone
    would not tell: it can match one texture onto an unrelated one.)"""
    ga, gb = grey_small(a, width), grey_small(b, width)
    f = flow(ga, gb)  # a(x) moves to x + f(x) in b
    h, w = ga.shape
    ys, xs = np.mgrid[2:h - 2:4, 2:w - 2:4].reshape(2, -1).astype(np.float32)
    src = np.stack([xs, ys], 1)
    m, _ = cv2.estimateAffinePartial2D(src, src + f[ys.astype(int), xs.astype(int)], method=cv2.RANSAC,
                                       ransacReprojThreshold=1.0)
    if m is None:
        return False
    warped = cv2.warpAffine(ga, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inner = (slice(h // 8, h - h // 8), slice(w // 8, w - w // 8))  # content entering at the borders has no source
    before = np.abs(gb.astype(np.float32) - ga)[inner].mean()
    after = np.abs(gb.astype(np.float32) - warped)[inner].mean()
    return bool(after < 0.5 * before)


def segments(n: int, cuts: list[Cut]) -> list[tuple[int, int]]:
    """[start, end) frame ranges between transitions (transition frames belong to no clip)."""
    out, pos = [], 0
    for c in cuts:
        if c.start > pos:
            out.append((pos, c.start))
        pos = max(pos, c.end)
    if pos < n:
        out.append((pos, n))
    return out


# --- quality ---------------------------------------------------------------------------------------------------------

def brightness_and_contrast(frames: np.ndarray) -> tuple[float, float]:
    g = np.stack([grey_small(f, 128) for f in frames[:: max(1, len(frames) // 8)]]).astype(np.float32) / 255
    return float(g.mean()), float(g.std())


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR in dB of two images or stacks of them: uint8 arrays with the default peak, or [-1, 1] arrays or CPU
    tensors with peak 2 (the same value as on 0..255 before rounding)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on grey images, Gaussian window σ 1.5 (Wang et al. 2004 constants)."""
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
