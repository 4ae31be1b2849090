"""Measuring clips' motion: optical flow, camera-motion labels, cuts, and clip quality (clips are read by
media.video_io).

Shared by `svd curate` (which clips to train on) and `svd eval` (what a generated clip did).

Camera motion: dense optical flow (OpenCV DIS) between frames sampled at about 2 fps (closer where the picture moves
far between them), on a grey copy 256 px wide. A least-squares similarity transform fitted to each flow field,
x' = s·R(θ)·x + t about the frame centre, gives pan and tilt (t, as a fraction of the frame width per second), zoom
(log s per second) and roll (θ per second); the flow left unexplained is object motion. Sign conventions: a camera
panning right moves the content left.
"""

import math
import threading
from dataclasses import astuple, dataclass

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
    """Similarity transform of a flow field (ignoring a border where flow is unreliable), fitted by least squares
    reweighted (Huber's) so that an object crossing the frame does not pull the camera's move with it."""
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
    weights = np.ones(len(x))
    for _ in range(4):  # points moving unlike the fit (beyond twice the typical miss, or half a pixel) count less
        weighted = m * np.concatenate([weights, weights])[:, None]
        params = np.linalg.solve(weighted.T @ m, weighted.T @ rhs)  # the normal equations: 4 × 4
        miss = np.hypot(*(m @ params - rhs).reshape(2, -1))
        limit = max(2.0 * float(np.median(miss)), 0.5)
        weights = np.minimum(1.0, limit / np.maximum(miss, 1e-9))
    a, b, tx, ty = params
    pred = m @ params - np.concatenate([x, y])
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
# Mean flow (a share of the width) above which a pair of frames is measured in halves: DIS loses track of moves of
# more than about a tenth of the picture on repetitive texture, and reads a fast pan as one the other way or a zoom.
FAR = 0.04
OUTLIER = 3.0  # a pair whose unexplained flow is this many times the clip's typical one is left out


def clip_motion(frames: np.ndarray, fps: float, sample_fps: float = 2.0) -> ClipMotion:
    """Camera label and motion score of a clip, from frame pairs about 1/sample_fps seconds apart (the mean over
    them, leaving out a pair the camera's move explains far worse than the others: a flash frame, an object
    crossing the whole frame)."""
    step = max(1, round(fps / sample_fps))
    idx = list(range(0, len(frames), step))
    if len(idx) < 2:
        idx = [0, len(frames) - 1] if len(frames) > 1 else [0, 0]
    greys: dict[int, np.ndarray] = {}

    def motion(i: int, j: int) -> PairMotion:
        """Frame i to frame j; in halves, summed, where the picture moves more than FAR between them."""
        for k in (i, j):
            if k not in greys:
                greys[k] = grey_small(frames[k])
        pair = fit_camera(flow(greys[i], greys[j]))
        if pair.magnitude <= FAR or j - i < 2:
            return pair
        halves = motion(i, (i + j) // 2), motion((i + j) // 2, j)
        return PairMotion(*(sum(values) for values in zip(*map(astuple, halves))))

    pairs = [motion(a, b) for a, b in zip(idx, idx[1:])]
    if len(pairs) >= 3:
        typical = float(np.median([p.residual for p in pairs]))
        pairs = [p for p in pairs if p.residual <= OUTLIER * typical + 0.002]
    dt = max(idx[1] - idx[0], 1) / fps
    rate = lambda k: float(np.mean([getattr(p, k) for p in pairs])) / dt  # noqa: E731
    pan, tilt, zoom, roll = rate("tx"), rate("ty"), rate("zoom"), rate("roll")
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
    return ClipMotion(label, round(confidence, 3), rate("magnitude"), pan, tilt, zoom, roll, rate("residual"))


# --- transitions -----------------------------------------------------------------------------------------------------
#
# Two frames of one shot are one camera move apart: a similarity transform (fitted to the optical flow between
# neighbouring frames, and composed over longer spans) maps one onto the other, leaving a small residual. Frames of two
# shots leave a residual of the order of the pictures' own contrast, whatever transform is tried. Every test below is
# that one comparison (`_Frames.unrelated`), at different spans: consecutive frames for cuts, spans of 2 to 32 frames
# for gradual transitions. Through a dissolve frame t is (1 − α)·A_t + α·B_t, so its residual against shot A carried
# to t is α·|B − A|, linear in α (a fade is a dissolve with black): the blend weight of every frame is measured, and a
# ramp fitted to them gives the transition's first and last frames.

TRANSITION_WIDTH = 96  # grey copies this wide: the flow and the residuals of whole pictures need no more
UNRELATED = 0.5  # unrelatedness above which two frames are of two shots, whatever the clip
MIN_CHANGE = 0.08  # below this, never (compression and noise)
SPIKE = 8.0  # and between the two, when this many times the level of the same comparison around it
MIN_BLEND = 3  # frames: shorter blends (a soft cut) are left in the clips, whose frames they hardly change
BLEND = 0.35  # a blend's frames differ from (1 − α)·A + α·B by under this share of |B − A|
UNIFORM = 0.2  # and the blocks of a dissolve's middle frame have weights within this of α (the median of them)
ISOLATED = 3.0  # a cut's change is this many times those of the frames before and after it
AROUND = (2, 4, 8, 16)  # frames before and after a cut compared, to tell a crossing object from one
SPANS = (2, 4, 8, 16, 32)  # frames between the compared frames, for gradual transitions of up to about 30 frames
DARK_LEVEL = 0.06  # mean brightness under which a frame is black (with compression noise)
DARK = 0.25  # a gradual transition whose darkest frame keeps less than this of its ends' brightness is a fade
TRUSTED = 0.5  # share of the flow between neighbouring frames a camera move must explain to be taken as theirs
FLASH = 0.15  # a frame this much brighter (mean, 0-1) than the one before it may be a flash, if the shot is back soon
FLAT = 0.01  # a frame whose brightness varies less than this (standard deviation) has no texture for flow to follow


@dataclass
class Cut:
    start: int  # first frame of the transition
    end: int  # first frame after it (start == end for an abrupt cut)
    kind: str  # "cut", "dissolve", "fade-out" (to black) or "fade-in" (from black)


class _Frames:
    """A clip's grey copies, the camera transform from each frame to the next, and comparisons between frames."""

    def __init__(self, frames: np.ndarray):
        self.grey = [grey_small(f, TRANSITION_WIDTH).astype(np.float32) / 255 for f in frames]
        h, w = self.grey[0].shape
        self.inner = (slice(h // 8, h - h // 8), slice(w // 8, w - w // 8))  # content entering at the borders
        self.contrast = [max(float(g[self.inner].std()), 0.02) for g in self.grey]
        self.level = [float(g[self.inner].mean()) for g in self.grey]
        ys, xs = np.mgrid[2:h - 2:3, 2:w - 2:3].reshape(2, -1).astype(np.float32)
        self.points = np.stack([xs, ys], 1)
        fits = [self._transform(a, b) for a, b in zip(self.grey, self.grey[1:])]
        textured = [float(g[self.inner].std()) >= FLAT for g in self.grey]
        trusted = [k for k, (_, share) in enumerate(fits) if share >= TRUSTED and textured[k] and textured[k + 1]]
        # a step to or from a flat frame (black, a burnt-out flash), or whose flow the fit does not explain (across
        # a cut: the flow is noise there), takes the nearest trusted step's move instead: cameras move smoothly
        self.steps = [fits[min(trusted, key=lambda t: abs(t - k))][0] if trusted else m for k, (m, _) in
                      enumerate(fits)]
        self.fits = [m for m, _ in fits]  # as fitted: a large object crossing a smooth scene can win the fit
        # the transform from frame 0 to frame t, so that frame i's to frame j's is totals[j]·totals[i]⁻¹
        self.totals = [np.eye(3)]
        for step in self.steps:
            self.totals.append(step @ self.totals[-1])

    def _transform(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
        """The similarity transform from frame a to frame b (3 × 3), and the share of the flow it explains."""
        f = flow((a * 255).astype(np.uint8), (b * 255).astype(np.uint8))  # a(x) moves to x + f(x) in b
        src = self.points
        m, inliers = cv2.estimateAffinePartial2D(src, src + f[src[:, 1].astype(int), src[:, 0].astype(int)],
                                                 method=cv2.RANSAC, ransacReprojThreshold=1.0)
        return (np.vstack([m, [0, 0, 1]]), float(inliers.mean())) if m is not None else (np.eye(3), 0.0)

    def carried(self, i: int, j: int, move: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frame i carried to frame j by the camera (or by `move`, 3 × 3), and where it has content."""
        m = (self.totals[j] @ np.linalg.inv(self.totals[i]) if move is None else move)[:2]
        h, w = self.grey[i].shape
        warped = cv2.warpAffine(self.grey[i], m, (w, h), flags=cv2.INTER_LINEAR)
        valid = cv2.warpAffine(np.ones((h, w), np.float32), m, (w, h), flags=cv2.INTER_NEAREST) > 0.5
        return warped, cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0

    def residual(self, i: int, j: int) -> float | None:
        """The median absolute difference between frame j and frame i carried to it, over the inner region where
        it has content; None where less than a tenth of it does."""
        carried, valid = self.carried(i, j) if i != j else (self.grey[i], np.ones_like(self.grey[i], bool))
        valid = valid[self.inner]
        if valid.mean() < 0.1:
            return None
        return float(np.median(np.abs(self.grey[j] - carried)[self.inner][valid]))

    def unrelated(self, i: int, j: int, direct: bool = False) -> float | None:
        """How unlike two frames are once the camera's move is undone: 1 − their correlation in a 3 × 4 grid of
        blocks where both have content, the lower quartile over the blocks (about 1 for two shots, or a shot and
        black: every block changes; near 0 within one shot, whatever the gain between them, as through a fade, and
        whatever an object covers, up to a quarter of the blocks), or None where the move leaves too little overlap
        to tell. Neighbouring frames are also compared under the move fitted to their own flow, and with `direct`
        any two under the move fitted to the flow between them (one more flow), the lowest value kept: where a large
        object crossing a smooth scene won the fits, the camera's move leaves the object's blocks unlike and the
        object's move the scene's, and moves composed through such frames are wrong for both."""
        moves = [None] + ([self.fits[i]] if j == i + 1 else []) + ([self._transform(self.grey[i], self.grey[j])[0]]
                                                                  if direct else [])
        values = [v for v in (self._unrelated(i, j, move) for move in moves) if v is not None]
        return min(values) if values else None

    def _unrelated(self, i: int, j: int, move: np.ndarray | None) -> float | None:
        carried, valid = self.carried(i, j, move)
        valid, carried, target = valid[self.inner], carried[self.inner], self.grey[j][self.inner]
        if valid.mean() < 0.4:
            return None
        values = []
        for block in _grid(valid.shape):
            ok = valid[block]
            if ok.mean() < 0.5:
                continue
            x, y = carried[block][ok], target[block][ok]
            sx, sy = float(x.std()), float(y.std())
            if min(sx, sy) < 0.004:  # a flat block (black) is like another flat one and unlike any other
                values.append(0.0 if max(sx, sy) < 0.004 else 1.0)
                continue
            values.append(1.0 - float(((x - x.mean()) * (y - y.mean())).mean()) / (sx * sy))
        return float(np.clip(np.quantile(values, 0.25), 0, 2)) if values else None


def _grid(shape: tuple[int, int]) -> list[tuple]:
    """The 3 × 4 grid of blocks that frames are compared in, as np.ix_ indices."""
    return [np.ix_(rows, cols) for rows in np.array_split(np.arange(shape[0]), 3)
            for cols in np.array_split(np.arange(shape[1]), 4)]


def find_cuts(frames: np.ndarray, fps: float) -> list[Cut]:
    """The transitions of a clip: abrupt cuts, then dissolves and fades in the segments between them.

    Whether two frames are of two shots is judged against the clip itself: their unrelatedness (_Frames.unrelated)
    is a change when it is large (UNRELATED), or well above (SPIKE times) the same comparison's level around it, so
    two shots of similar pictures are told apart as long as the shots themselves hold still relative to that. A cut
    at c: frames c − 1 and c changed, and frame c − 1 is still unlike c + 1 and c + 2 (a flash, one to three
    over-exposed frames after which the picture is the shot's again, is no cut). Gradual transitions: pairs of
    frames 32, 16, ... 2 frames apart that changed, without a cut between them, bracket a candidate; within it each
    frame's blend weight is measured against both sides and a ramp fitted, which must rise from 0 to 1 and fit
    well; dark frames make it a fade to and from black, otherwise it is a dissolve. fps is not needed: spans are in
    frames, as transitions are (kept for the callers)."""
    n = len(frames)
    if n < 3:
        return []
    clip = _Frames(frames)
    steps = [None] + [clip.unrelated(c - 1, c) for c in range(1, n)]  # steps[c]: frame c − 1 to c
    flashes = _flash_frames(clip, steps)
    cuts = [Cut(c, c, "cut") for c in range(1, n)
            if c not in flashes and c - 1 not in flashes and _is_cut(clip, c, steps, flashes)]
    found = list(cuts)
    bounds = [0] + [c.start for c in cuts] + [n]
    for s, e in zip(bounds, bounds[1:]):
        found += _gradual(clip, s, e, flashes)
    out: list[Cut] = []
    for c in sorted(found, key=lambda c: c.start):  # one transition once, where two brackets found it
        if not out or c.start >= out[-1].end or c.end == c.start:
            out.append(c)
    return out


def _changed(value: float | None, level: float) -> bool:
    """Whether an unrelatedness is a change of shot, given the level of the same comparison around it."""
    return value is not None and (value > UNRELATED or (value > MIN_CHANGE and value > SPIKE * max(level, 0.002)))


def _level(values: list[float | None], around: int, skip: int = 1) -> float:
    """The median of the values near index `around` (up to 6 on each side), leaving out `skip` on each side."""
    near = [v for k, v in enumerate(values) if v is not None and skip < abs(k - around) <= 6 + skip]
    return float(np.median(near)) if near else 0.0


def _flash_frames(clip: _Frames, steps: list[float | None]) -> set[int]:
    """Frames changed from the frame before them, in picture or (a flash that leaves the picture's pattern, which
    `unrelated` does not see) by brightening more than FLASH, after which (within three frames) the shot comes back,
    at its brightness where it was the brightness that changed."""
    n, out = len(clip.grey), set()
    for f in range(1, n - 1):
        level = _level(steps, f, 3)
        brighter = clip.level[f] - clip.level[f - 1] > FLASH
        if not (brighter or _changed(steps[f], level)):
            continue
        for k in range(1, min(4, n - f)):
            back = not brighter or abs(clip.level[f + k] - clip.level[f - 1]) < FLASH / 2
            if back and not _changed(clip.unrelated(f - 1, f + k), level):
                out.update(range(f, f + k))
                break
    return out


def _is_cut(clip: _Frames, c: int, steps: list[float | None], flashes: set[int]) -> bool:
    """Frames c − 1 and c changed, and the shot before is unlike the one after (c + 1, c + 2 against c − 1): a
    change that lasts; and no frame before it is like the one as far after it (AROUND): an object that crossed the
    frame, covering more of it than `unrelated` looks past, has gone on both sides. Inside a dissolve or fade
    consecutive frames stay alike."""
    around = max(clip.level[max(0, c - 6):c + 6])
    if min(clip.level[c - 1], clip.level[c]) < max(DARK_LEVEL, DARK * around) or _fading(clip, c):
        return False  # into or out of black: a fade, found (as a ramp, or a step if abrupt) with the gradual ones
    level = _level(steps, c)
    if not _changed(steps[c], level):
        return False
    neighbours = [v for v in (steps[c - 1], steps[c + 1] if c + 1 < len(steps) else None) if v is not None]
    if neighbours and steps[c] < ISOLATED * max(neighbours):
        return False  # a change at every frame: an object passing fast, a camera move the flow could not follow
    pairs = [(c - 1, c + 1), (c - 1, c + 2)] + [(c - 1 - span, c + span) for span in AROUND]
    pairs = [(i, j) for i, j in pairs if 0 <= i and j < len(clip.grey) and i not in flashes and j not in flashes]
    return all(v is None or _changed(v, level) for v in (clip.unrelated(i, j, direct=True) for i, j in pairs))


def _fading(clip: _Frames, c: int) -> bool:
    """Whether frame c lies in a fade: the brightness changing by the same sign, by more than 3%, from each frame to
    the next around it (a cut changes it once; a fade at every frame)."""
    ratios = [clip.level[k] / max(clip.level[k - 1], 1e-3) for k in range(max(1, c - 1), min(len(clip.level), c + 2))]
    return len(ratios) == 3 and (all(r < 0.97 for r in ratios) or all(r > 1.03 for r in ratios))


def _gradual(clip: _Frames, start: int, end: int, flashes: set[int]) -> list[Cut]:
    """Dissolves and fades in frames [start, end), a segment with no cut."""
    found: list[Cut] = []
    for span in reversed(SPANS):  # the widest brackets first: a fit needs both shots' pure frames around the blend
        values = [clip.unrelated(t, t + span) if t not in flashes and t + span not in flashes else None
                  for t in range(start, end - span)]
        level = float(np.median([v for v in values if v is not None] or [0.0]))  # most spans lie within a shot
        flagged = [start + k for k, v in enumerate(values) if _changed(v, level)]
        for run in _runs(flagged):
            a, b = run[0], run[-1] + span  # the change lies within [a, b]: a is before it, b after it
            if any(c.start <= b and a < c.end + 1 for c in found):
                continue  # a transition already found (at a shorter span)
            if _changed(clip.unrelated(a, b), level):  # the same shot at both ends: a passing object, a flash
                # where the bracket begins or ends inside the blend (wider spans lost the overlap to a fast move),
                # the fit is tried again a span further out on each side, for the pure frames it needs
                found += (_fit(clip, a, b, flashes, start, end)
                          or _fit(clip, max(start, a - span), min(end - 1, b + span), flashes, start, end))
    return found


def _runs(ts: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for t in ts:
        if runs and t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _fit(clip: _Frames, a: int, b: int, flashes: set[int], start: int, end: int) -> list[Cut]:
    """The transition between frames a (before it) and b (after it), if the frames between are blends: a dissolve,
    or a fade out to black and/or in from black where the frames are dark. [start, end): the segment, which a
    fade's bracket may grow to: a fade changes the picture's gain, which the relatedness test does not see, so the
    bracket (found where the black frames differ from the shot) is grown while the brightness keeps changing."""
    level = max(clip.level[a], clip.level[b])

    def dark_frames(a: int, b: int) -> list[int]:
        return [m for m in range(a, b + 1) if clip.level[m] < max(DARK_LEVEL, DARK * level)]

    if not dark_frames(a, b):
        ramp = _ramp(clip, a, b, flashes, "dissolve")
        return [Cut(*ramp, "dissolve" if ramp[1] > ramp[0] else "cut")] if ramp else []
    # a fade out to the darkest frames, and one in from them (either end may be dark itself); the first frames of a
    # fade in are as dark as black ones, so each fit runs through all the darkest frames, where the ramp is found,
    # and no further: a fade in straight after a fade out brightens again
    out, top = [], DARK * level / 10  # a fade's brightness steps: at least a 1/(d + 1) share of it, d <= 30 or so
    while a > start and abs(clip.level[a - 1] - clip.level[a]) > top:
        a -= 1
    while b < end - 1 and abs(clip.level[b + 1] - clip.level[b]) > top:
        b += 1
    a, b = max(start, a - 3), min(end - 1, b + 3)
    dark = dark_frames(a, b)
    lowest = min(clip.level[m] for m in dark)
    black = [m for m in dark if clip.level[m] <= lowest + DARK_LEVEL / 2]
    if dark[0] > a:
        ramp = _ramp(clip, a, black[-1], flashes, "fade-out")
        out += [Cut(*ramp, "fade-out")] if ramp else []
    if dark[-1] < b:
        ramp = _ramp(clip, black[0], b, flashes, "fade-in")
        out += [Cut(*ramp, "fade-in")] if ramp else []
    return out


def _ramp(clip: _Frames, a: int, b: int, flashes: set[int], kind: str) -> tuple[int, int] | None:
    """The [first, end) frames of a blend from frame a's shot to frame b's (black for a fade), fitted again between
    nearer pure frames until it settles: far from the blend, camera transforms composed over many frames drift, and
    the measured weights with them."""
    ramp = _fit_ramp(clip, a, b, flashes, kind)
    for _ in range(4):
        if ramp is None or ramp[1] == ramp[0] or kind != "dissolve":
            return ramp  # a fade's weights come from the brightness, which does not drift
        near = (max(a, ramp[0] - 3), min(b, ramp[1] + 2))  # two pure frames before it, and its first one after
        if near == (a, b):
            break
        a, b = near
        settled = _fit_ramp(clip, a, b, flashes, kind)
        if settled is None or settled == ramp:
            break
        ramp = settled
    return ramp


def _fit_ramp(clip: _Frames, a: int, b: int, flashes: set[int], kind: str) -> tuple[int, int] | None:
    """The [first, end) frames of a blend from frame a's shot to frame b's (black for a fade), fitted as the
    weight k/(d + 1) of its k-th of d frames; None unless the frames between are one.

    A dissolve's frames are measured against both ends: the residual against shot A carried to the frame is
    α·|B − A|, against shot B (1 − α)·|B − A|, so α is their ratio, whatever |B − A| is. A fade's weight is the
    frame's brightness against the shot's, carried to it (so that a camera move that brightens the shot does not
    pass for the fade). Flash frames are left out."""
    xs, ys = [], []
    for m in range(a, b + 1):
        if m in flashes:
            continue
        if kind != "dissolve":  # a fade scales the picture: (1 − α) of the shot's brightness there, or α of it
            shot, valid = clip.carried(a, m) if kind == "fade-out" else clip.carried(b, m)
            valid = valid[clip.inner]
            if valid.mean() > 0.1:
                ratio = float(clip.grey[m][clip.inner][valid].mean()) / max(float(shot[clip.inner][valid].mean()),
                                                                             DARK_LEVEL)
                xs.append(m), ys.append(1 - ratio if kind == "fade-out" else ratio)
            continue
        from_a, from_b = clip.residual(a, m), clip.residual(b, m)
        if from_a is not None and from_b is not None and from_a + from_b > 0:
            xs.append(m), ys.append(from_a / (from_a + from_b))
    xs, ys = np.array(xs, np.float64), np.clip(np.array(ys), 0, 1)
    if len(xs) < 3 or ys[:2].mean() > 0.3 or ys[-2:].mean() < 0.7:
        return None
    pairs = np.array([(first, length) for first in range(a + 1, b + 1) for length in range(0, b - first + 1)])
    # α = (m − first + 1)/(d + 1) on [first, first + d), 0 before, 1 after; length 0: a step (a missed cut)
    ramps = np.clip((xs[None] - pairs[:, :1] + 1) / (pairs[:, 1:] + 1), 0, 1)
    err = ((ys[None] - ramps) ** 2).mean(1)
    k = int(np.argmin(err))
    first, last = int(pairs[k, 0]), int(pairs[k].sum())
    # pure frames of each shot around it (not of black, which is pure by itself): a bracket that begins or ends
    # inside the blend misplaces it
    pure = (kind == "fade-in" or first - a >= 2) and (kind == "fade-out" or b - last >= 1)
    if err[k] >= 0.02 or not pure or 0 < last - first < MIN_BLEND:
        return None
    return (first, last) if _blended(clip, first, last, kind) else None


def _blended(clip: _Frames, first: int, last: int, kind: str) -> bool:
    """Whether the middle frames of [first, last) are the blends the ramp says, (1 − α)·A + α·B with shot A carried
    from frame first − 1 and B from frame last (black for a fade), where the two differ: an object passing, or a
    flash, gives weights that rise from one end to the other without any frame being such a blend. A dissolve's
    middle frame must also be one blend of the whole picture: in each block where the shots differ, the weight that
    best mixes them into it is the ramp's (a large object crossing the frame matches in some blocks only)."""
    if last == first:
        return True  # a step: the cut test's business
    black = np.zeros_like(clip.grey[first])
    scores = []
    for m in sorted({(first + last) // 2, first + (last - first) // 3, first + 2 * (last - first) // 3}):
        if not first <= m < last:
            continue
        before, valid_a = (black, None) if kind == "fade-in" else clip.carried(first - 1, m)
        after, valid_b = (black, None) if kind == "fade-out" else clip.carried(last, m)
        alpha = (m - first + 1) / (last - first + 1)
        apart = np.abs(after - before)
        mask = apart > max(0.03, 0.25 * clip.contrast[m])
        for valid in (valid_a, valid_b):
            mask &= True if valid is None else valid
        mask = mask[clip.inner]
        if kind == "dissolve" and m == (first + last) // 2:
            frame, a, b = (x[clip.inner] for x in (clip.grey[m], before, after))
            weights = []
            for block in _grid(mask.shape):
                k = mask[block]
                if k.mean() >= 0.3:  # least squares: frame ≈ a + w·(b − a) over the block's differing pixels
                    d = (b[block] - a[block])[k]
                    weights.append(float(((frame[block] - a[block])[k] * d).sum() / (d * d).sum()))
            if len(weights) < 3 or float(np.median(np.abs(np.array(weights) - alpha))) > UNIFORM:
                return False
        if mask.mean() < 0.05:
            continue
        miss = np.abs(clip.grey[m] - (1 - alpha) * before - alpha * after)[clip.inner][mask]
        scores.append(float(np.median(miss) / np.median(apart[clip.inner][mask])))
    return bool(scores) and float(np.median(scores)) < BLEND


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
