"""The clip-curation benchmark (issue 38): procedural clips with known transitions, non-cut events and camera moves,
encoded as H.264 and decoded again, on which a cut detector (motion.find_cuts by default) and the camera labeller
(motion.clip_motion) are scored against the issue's bars.

    cases = benchmark_cases(240)
    report = evaluate(cases, find_cuts, Path("out/curate-benchmark"))
    print(report.table(), report.bars())

A case is a recipe, not frames: shots (a scene, a camera move, slow sprites) laid on a timeline and joined by cuts,
dissolves (both shots keep moving through the blend) or fades through black, plus flashes, large fast sprites, sensor
noise and an encoding quality. render_case draws it deterministically; encode_case writes it once and reuses the file
while the recipe, kept in the sidecar JSON, is unchanged.
"""

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from . import procedural
from ..media.outputs import sidecar_path, write_video
from ..media.video_io import read_clip
from ..video.motion import Cut, clip_motion, find_cuts, segments

CAMERAS = ("static", "pan-left", "pan-right", "tilt-up", "tilt-down", "zoom-in", "zoom-out")
# (pan and tilt speeds, zoom speeds): random_clip's, and faster ones for the fast-motion cases
SPEEDS = {False: ((0.04, 0.08, 0.16), (0.1, 0.2, 0.4)), True: ((0.25, 0.35, 0.5), (0.6, 0.8))}
FPS = (8, 12, 24, 30)
QUALITIES = (4.5, 6.0, 8.0)  # write_video's quality: x264 CRF 28, 20 and 10
# Case types and their weights per 100 cases; the last five have no transition (cut-free, one shot).
TYPES = {"cut": 14, "cut-similar": 8, "dissolve": 14, "dissolve-similar": 8, "fade": 12, "issue-example": 4,
         "flash": 8, "fast-camera": 10, "fast-object": 8, "static-noise": 6, "one-shot": 8}
FAMILY = {"cut": "cut", "dissolve": "dissolve", "fade-out": "fade", "fade-in": "fade"}
LONG = 6  # the bars cover gradual transitions of at least this many frames


@dataclass(frozen=True)
class Shot:
    scene: str  # a procedural.SCENES kind, or an image's path
    seed: int  # the scene's and its slow sprites' randomness
    camera: str  # the shot's true label
    speed: float  # procedural.Motion's units
    objects: int  # slow sprites (procedural.render's)
    start: int  # visible frames [start, end) of the clip, its transitions' frames included
    end: int
    ramp_in: int = 0  # frames blended in at the start (dissolve, fade-in) and out at the end
    ramp_out: int = 0
    like: int = -1  # recoloured to the colour statistics of this earlier shot's scene (-1: not)


@dataclass(frozen=True)
class Span:
    kind: str  # transitions: cut, dissolve, fade-out, fade-in; events: flash, fast-camera, fast-object, noise
    start: int  # frames [start, end); a cut has start == end, the first frame of the new shot
    end: int
    detail: tuple = ()  # a flash's ("+", 150) or ("x", 3); a crossing sprite's (size, y0, y1, direction)


@dataclass(frozen=True)
class Case:
    id: str
    type: str
    fps: float
    size: tuple[int, int]
    frames: int
    shots: tuple[Shot, ...]
    transitions: tuple[Span, ...]
    events: tuple[Span, ...]  # what must not be cut
    noise: float  # sensor noise σ, grey levels
    quality: float  # write_video's
    seed: int  # the overlays' and the noise's randomness


def _types(count: int) -> list[str]:
    """Smooth weighted round robin: every prefix holds the types in about their shares, so a small count is a fair
    sample of the full set (and case i is the same whatever the count)."""
    current, out = dict.fromkeys(TYPES, 0), []
    for _ in range(count):
        current = {k: v + TYPES[k] for k, v in current.items()}
        out.append(max(current, key=current.get))
        current[out[-1]] -= sum(TYPES.values())
    return out


def _layout(lengths: list[int], joins: list[tuple]) -> tuple[list[list[int]], list[Span], int]:
    """Shots' [start, ramp_in, end, ramp_out], the true transitions and the frame count, for shots of `lengths`
    frames of their own and a join (kind, out, black, in) before each shot and after the last: none or cut (0, 0, 0),
    dissolve (d, 0, d: both shots visible for d frames), or fade: out frames to black, black ones, in from black."""
    t, spans, truth = 0, [], []
    for i, (kind, out, black, inn) in enumerate(joins):
        if i:
            spans[-1] += [t + out, out]
        if kind == "dissolve":
            truth.append(Span("dissolve", t, t + out))
        else:
            truth += [Span("fade-out", t, t + out)] if out else []
            t += out + black
            truth += [Span("fade-in", t, t + inn)] if inn else []
            truth += [Span("cut", t, t)] if kind == "cut" else []
        if i < len(lengths):
            spans.append([t, inn])
            t += inn + lengths[i]
    return spans, truth, t


def _case(index: int, seed: int, kind: str, images: list[Path] | None, size: tuple[int, int]) -> Case:
    rng = np.random.default_rng([seed, index])
    fps = 12 if kind == "issue-example" else int(rng.choice(FPS))
    secs = lambda lo, hi: round(rng.uniform(lo, hi) * fps)  # noqa: E731  (every shot lasts at least about 1 s)
    ramp = lambda: int(rng.integers(4, min(30, 3 * fps) + 1))  # noqa: E731

    def move(fast=False, cameras=CAMERAS):
        cam = str(rng.choice(cameras))
        pan, zoom = SPEEDS[fast]
        return cam, 0.0 if cam == "static" else float(rng.choice(zoom if cam.startswith("zoom") else pan))

    none = ("none", 0, 0, 0)
    if kind in ("cut", "cut-similar"):
        n = int(rng.integers(2, 4))
        moves, lengths = [move() for _ in range(n)], [secs(1.2, 2.5) for _ in range(n)]
        joins = [none] + [("cut", 0, 0, 0)] * (n - 1)
    elif kind == "issue-example":  # the issue's: 70 frames at 12 fps, a pan dissolving over 10 frames into a tilt
        la = int(rng.integers(24, 37))
        moves, lengths = [move(cameras=CAMERAS[1:3]), move(cameras=CAMERAS[3:5])], [la, 60 - la]
        joins = [none, ("dissolve", 10, 0, 10)]
    elif kind in ("dissolve", "dissolve-similar"):  # both shots moving: a blend of two moving pictures
        moves, lengths, d = [move(cameras=CAMERAS[1:]) for _ in range(2)], [secs(1.0, 2.0) for _ in range(2)], ramp()
        joins = [none, ("dissolve", d, 0, d)]
    elif kind == "fade":  # variant 0: through black between two shots; 1: from black at the start; 2: to black
        variant = int(rng.integers(3))
        black, n = int(rng.integers(int(variant > 0), fps // 2 + 1)), 2 if variant == 0 else 1
        moves, lengths = [move() for _ in range(n)], [secs(1.2, 2.5) for _ in range(n)]
        out, inn = (ramp(), ramp()) if variant == 0 else (0, ramp()) if variant == 1 else (ramp(), 0)
        joins = [("fade", out, black, inn)] if variant == 1 else [none, ("fade", out, black, inn)]
    else:  # one shot: a fast-camera one moves, a static-noise one does not
        cameras = {"fast-camera": CAMERAS[1:], "static-noise": CAMERAS[:1]}.get(kind, CAMERAS)
        moves = [move(kind == "fast-camera", cameras)]
        lengths, joins = [secs(1.2, 2.0) if kind == "fast-camera" else secs(2.0, 4.0)], [none]
    spans, truth, frames = _layout(lengths, joins + [none] * (len(lengths) + 1 - len(joins)))

    similar = kind in ("cut-similar", "dissolve-similar", "issue-example")
    shots, scene = [], None
    for k, ((camera, speed), (start, ramp_in, end, ramp_out)) in enumerate(zip(moves, spans)):
        others = [str(p) for p in images or () if str(p) != scene]  # never the same picture twice in a row
        if similar and k:  # the same scene kind (or another image), recoloured like the first shot's in render_case
            scene = scene if scene in procedural.SCENES else str(rng.choice(others))
        elif others and rng.random() < 0.5 and not (similar and len(others) < 2):
            scene = str(rng.choice(others))
        else:
            scene = str(rng.choice(procedural.SCENES))
        objects = 0 if kind == "static-noise" else int(rng.integers(3))
        shots.append(Shot(scene, int(rng.integers(2 ** 31)), camera, speed, objects, start, end, ramp_in, ramp_out,
                          0 if similar and k else -1))

    events = {"fast-camera": [Span("fast-camera", 0, frames)], "static-noise": [Span("noise", 0, frames)]}.get(kind, [])
    if kind == "flash":  # one or two over-exposed frames inside the shot
        k = int(rng.integers(3, frames - 4))
        events.append(Span("flash", k, k + int(rng.integers(1, 3)), ("+", 150) if rng.random() < 0.5 else ("x", 3)))
    for _ in range(int(rng.integers(1, 3)) if kind == "fast-object" else 0):  # 0.4-0.7 of the height, 0.5-1.2 s across
        cross = max(3, round(rng.uniform(0.5, 1.2) * fps))
        k = int(rng.integers(0, frames - cross + 1))
        events.append(Span("fast-object", k, k + cross, (round(float(rng.uniform(0.4, 0.7)), 3),
                           *(round(float(v), 3) for v in rng.random(2)), int(rng.choice((-1, 1))))))
    noise = float(rng.choice((3.0, 5.0, 8.0) if kind == "static-noise" else (0.0, 1.0, 2.0)))
    return Case(f"{index:04d}-{kind}", kind, float(fps), tuple(size), frames, tuple(shots), tuple(truth),
                tuple(events), noise, float(rng.choice(QUALITIES)), int(rng.integers(2 ** 31)))


def benchmark_cases(count: int = 240, seed: int = 0, images: list[Path] | None = None,
                    size: tuple[int, int] = (144, 256)) -> list[Case]:
    """A fixed set of `count` cases (case i depends on seed and i only, never on count)."""
    return [_case(i, seed, kind, images, size) for i, kind in enumerate(_types(count))]


def _background(shot: Shot, size: tuple[int, int], fps: float, rng: np.random.Generator) -> np.ndarray:
    """The shot's scene at twice the clip's size, as render expects, or larger where the move would otherwise run
    past its edge (render would show mirrored content, unlike any camera)."""
    h, w = size
    travel = shot.speed * max(shot.end - shot.start - 1, 1) / fps
    fx = max(2.0, 1.1 + 2 * travel) if shot.camera.startswith("pan") else 2.0
    fy = max(2.0, 1.1 + 2 * travel * w / h) if shot.camera.startswith("tilt") else 2.0
    if shot.camera == "zoom-out":
        fx = fy = max(2.0, 1.1 * math.exp(travel))
    bh, bw = round(h * fy), round(w * fx)
    if shot.scene in procedural.SCENES:
        return procedural.scene(rng, bh, bw, shot.scene)
    return procedural.image_scene(shot.scene, bh, bw)


def _recolour(img: np.ndarray, like: np.ndarray) -> np.ndarray:
    """img with like's per-channel mean and spread: another scene of similar colour statistics."""
    m, s = img.mean((0, 1)), img.std((0, 1)) + 1e-6
    return np.clip((img - m) / s * like.std((0, 1)) + like.mean((0, 1)), 0, 1)


def render_case(case: Case) -> np.ndarray:
    """(T, H, W, 3) uint8. Each shot is rendered over its whole visible range and weighted, so through a dissolve
    frame t is (1 − α)·A_t + α·B_t of two moving shots, α = k/(d + 1) at its k-th frame (no transition frame is pure
    A or B); a fade is the same ramp against black."""
    h, w = case.size
    rngs = [np.random.default_rng(s.seed) for s in case.shots]
    bgs = [_background(s, case.size, case.fps, r) for s, r in zip(case.shots, rngs)]
    bgs = [_recolour(b, bgs[s.like]) if s.like >= 0 else b for b, s in zip(bgs, case.shots)]
    canvas = np.zeros((case.frames, h, w, 3), np.float32)
    for s, bg, rng in zip(case.shots, bgs, rngs):
        n = s.end - s.start
        clip = procedural.render(bg, procedural.Motion(s.camera, s.speed, s.objects, s.scene), n, case.fps,
                                 case.size, rng)
        weight = np.ones(n, np.float32)
        weight[:s.ramp_in] = np.arange(1, s.ramp_in + 1) / (s.ramp_in + 1)
        weight[n - s.ramp_out:] = 1 - np.arange(1, s.ramp_out + 1) / (s.ramp_out + 1)
        canvas[s.start:s.end] += clip * weight[:, None, None, None]
    for j, e in enumerate(case.events):
        if e.kind == "fast-object":  # enters at one side and has left at the other: visible on exactly [start, end)
            size, y0, y1, direction = e.detail
            s = round(size * h)
            tex, mask = procedural.sprite(np.random.default_rng([case.seed, j]), s)
            for t in range(e.start, e.end):
                p = (t - e.start + 1) / (e.end - e.start + 1)
                x, y = -s + (w + s) * (p if direction > 0 else 1 - p), (y0 + (y1 - y0) * p) * (h - s)
                m = np.float32([[1, 0, x], [0, 1, y]])
                a = cv2.warpAffine(mask, m, (w, h))[..., None]  # the sprite moved into place, clipped by the frame
                canvas[t] = canvas[t] * (1 - a) + cv2.warpAffine(tex * 255, m, (w, h)) * a
        elif e.kind == "flash":
            op, v = e.detail
            canvas[e.start:e.end] = canvas[e.start:e.end] + v if op == "+" else canvas[e.start:e.end] * v
    noise = np.random.default_rng([case.seed, len(case.events)])
    for frame in canvas if case.noise else ():  # frame by frame: float32, and no second copy of the clip
        frame += noise.standard_normal(frame.shape, np.float32) * case.noise
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def encode_case(case: Case, folder: str | Path) -> Path:
    """FOLDER/ID.mp4 (H.264 at the case's quality; x264 is deterministic), kept while its sidecar's recipe matches."""
    path = Path(folder) / f"{case.id}.mp4"
    recipe = json.loads(json.dumps(asdict(case)))
    try:
        if path.exists() and json.loads(sidecar_path(path, "mp4").read_text()) == recipe:
            return path
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(render_case(case), path, "mp4", case.fps, recipe, case.quality)
    return path


def _families(kind: str) -> set[str]:
    """The true families a detection of this kind may be (a detector that says only "fade" for any gradual
    transition, as find_cuts once did, may mean either)."""
    return {FAMILY[kind]} if kind in FAMILY else {"dissolve", "fade"}


def match(truth: tuple[Span, ...], found: list[Cut]) -> tuple[list[tuple[int, int, float]], list[tuple[int, int]],
                                                              list[int]]:
    """One-to-one matches within the issue's tolerances, nearest first: (true i, detected j, mean frame error of the
    start, and of the end for a gradual transition), gradual transitions found as a cut inside [start − 3, end + 3]
    (i, j), and the unmatched detections j."""
    cand = []
    for i, t in enumerate(truth):
        for j, d in enumerate(found):
            errors = [abs(d.start - t.start)] + ([] if t.kind == "cut" else [abs(d.end - t.end)])
            if FAMILY[t.kind] in _families(d.kind) and max(errors) <= (1 if t.kind == "cut" else 3):
                cand.append((float(np.mean(errors)), i, j))
    pairs, as_cut, used_t, used_d = [], [], set(), set()
    for e, i, j in sorted(cand):
        if i not in used_t and j not in used_d:
            pairs.append((i, j, e))
            used_t.add(i), used_d.add(j)
    for i, t in enumerate(truth):
        inside = [j for j, d in enumerate(found) if j not in used_d and d.kind == "cut"
                  and t.start - 3 <= d.start <= t.end + 3]
        if t.kind != "cut" and i not in used_t and inside:
            as_cut.append((i, inside[0]))
            used_t.add(i), used_d.add(inside[0])
    return pairs, as_cut, [j for j in range(len(found)) if j not in used_d]


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


@dataclass
class Report:
    families: dict[str, dict]  # cut, dissolve, fade: true, long (≥ LONG frames), found (as cut included), long found,
    # as cut, error (summed over the other matches), detected (attributed to the family), correct
    types: dict[str, dict]  # per case type: clips, transitions, found, false, clips cut falsely, labelled, labels right
    cut_free: list[int]  # [cut-free clips given any transition, cut-free clips]
    labels: list[int]  # [right camera labels, one-shot clips]
    failures: list[str]  # "ID: what went wrong", to inspect
    cases: list[dict]  # per case: id, type, truth, detections, the detected shots and their labels
    seconds: dict[str, float]  # decode, detect, label

    def recall(self, family: str, long: bool = False) -> float:
        f = self.families[family]
        return _ratio(f["long found"], f["long"]) if long else _ratio(f["found"], f["true"])

    def precision(self, family: str) -> float:
        return _ratio(self.families[family]["correct"], self.families[family]["detected"])

    def mean_error(self, family: str) -> float:
        f = self.families[family]
        return _ratio(f["error"], f["found"] - f["as cut"])

    def bars(self) -> dict[str, bool]:
        """The issue's bars; one with nothing to measure (no such transition in the run) fails."""
        return {"cut recall >= 99% (±1 frame)": self.recall("cut") >= 0.99,
                f"dissolve recall >= 95% (>= {LONG} frames, ±3)": self.recall("dissolve", True) >= 0.95,
                f"fade recall >= 95% (>= {LONG} frames, ±3)": self.recall("fade", True) >= 0.95,
                "cut-free clips cut <= 1%": _ratio(*self.cut_free) <= 0.01,
                "camera labels >= 95% (one-shot clips)": _ratio(*self.labels) >= 0.95}

    def table(self) -> str:
        pct = lambda v: "–" if math.isnan(v) else f"{100 * v:.1f}%"  # noqa: E731
        lines = [f"| transition | true | found | as cut | recall | recall ≥ {LONG} f | precision | mean error (f) |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, f in self.families.items():
            err = self.mean_error(name)
            lines.append(f"| {name} | {f['true']} | {f['found']} | {f['as cut']} | {pct(self.recall(name))} | "
                         f"{pct(self.recall(name, True)) if name != 'cut' else ''} | {pct(self.precision(name))} | "
                         f"{'–' if math.isnan(err) else f'{err:.2f}'} |")
        lines += ["", "| case type | clips | transitions | found | false | clips cut falsely | labels right |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, t in self.types.items():
            right = f"{t['labels right']}/{t['labelled']}" if t["labelled"] else ""
            lines.append(f"| {name} | {t['clips']} | {t['transitions']} | {t['found']} | {t['false']} | "
                         f"{t['clips cut falsely']} | {right} |")
        return "\n".join(lines + ["", f"cut-free clips given a transition: {self.cut_free[0]}/{self.cut_free[1]} "
                                  f"({pct(_ratio(*self.cut_free))}); camera labels right on one-shot clips: "
                                  f"{self.labels[0]}/{self.labels[1]} ({pct(_ratio(*self.labels))})"])

    def to_json(self) -> dict:
        rates = {f: {"recall": self.recall(f), "recall_long": self.recall(f, True), "precision": self.precision(f),
                     "mean_error": self.mean_error(f)} for f in self.families}
        out = {**asdict(self), "rates": rates, "bars": self.bars()}
        return json.loads(json.dumps(out).replace("NaN", "null"))  # strict JSON: a rate of nothing is null


def evaluate(cases: list[Case], detect=find_cuts, folder: str | Path = "out/curate-benchmark",
             on_case=None) -> Report:
    """Encode (or reuse) each case, decode it with read_clip, detect transitions, label the detected shots with
    clip_motion and score them; on_case(case, i, n) before each case."""
    keys = ("true", "long", "found", "long found", "as cut", "error", "detected", "correct")
    fam = {f: Counter(dict.fromkeys(keys, 0)) for f in ("cut", "dissolve", "fade")}
    types, rows, failures, seconds, cut_free, labels = {}, [], [], Counter(), [0, 0], [0, 0]
    for n, case in enumerate(cases):
        if on_case:
            on_case(case, n, len(cases))
        t0 = time.perf_counter()
        frames, fps = read_clip(encode_case(case, folder))
        t1 = time.perf_counter()
        found = list(detect(frames, fps))
        t2 = time.perf_counter()
        shots = segments(len(frames), found)
        got = [clip_motion(frames[s:e], fps).label for s, e in shots]
        seconds.update(decode=t1 - t0, detect=t2 - t1, label=time.perf_counter() - t2)
        truth = case.transitions
        pairs, as_cut, false = match(truth, found)
        long = [int(t.kind == "cut" or t.end - t.start >= LONG) for t in truth]
        for i, t in enumerate(truth):
            fam[FAMILY[t.kind]].update({"true": 1, "long": long[i]})
        for i, j, e in pairs + [(i, j, None) for i, j in as_cut]:
            fam[FAMILY[truth[i].kind]].update({"found": 1, "long found": long[i], "detected": 1, "correct": 1,
                                               **({"as cut": 1} if e is None else {"error": e})})
        present = {FAMILY[t.kind] for t in truth}
        for j in false:  # counted against each family it could be (those of the clip's own transitions first)
            for f in (_families(found[j].kind) & present) or _families(found[j].kind):
                fam[f]["detected"] += 1
        matched = {i for i, *_ in pairs + as_cut}
        problems = [f"decoded {len(frames)} frames of {case.frames}"] if len(frames) != case.frames else []
        problems += [f"missed {t.kind} [{t.start}, {t.end})" for i, t in enumerate(truth) if i not in matched]
        problems += [f"false {found[j].kind} [{found[j].start}, {found[j].end})" for j in false]
        ty = types.setdefault(case.type, Counter({"labelled": 0, "labels right": 0}))
        ty.update({"clips": 1, "transitions": len(truth), "found": len(pairs) + len(as_cut), "false": len(false),
                   "clips cut falsely": int(bool(false))})
        if not truth:  # a one-shot clip: cut-free, and its longest detected shot carries the label
            label = got[int(np.argmax([e - s for s, e in shots]))] if shots else "none"
            right = int(label == case.shots[0].camera)
            cut_free, labels = [cut_free[0] + bool(found), cut_free[1] + 1], [labels[0] + right, labels[1] + 1]
            ty.update({"labelled": 1, "labels right": right})
            problems += [] if right else [f"label {label} (true {case.shots[0].camera})"]
        if problems:
            failures.append(f"{case.id}: " + "; ".join(problems))
        rows.append({"id": case.id, "type": case.type, "fps": case.fps, "frames": len(frames),
                     "truth": [[t.kind, t.start, t.end] for t in truth],
                     "found": [[c.kind, c.start, c.end] for c in found],
                     "shots": [[s, e, g] for (s, e), g in zip(shots, got)]})
    return Report({k: dict(v) for k, v in fam.items()}, {k: dict(types[k]) for k in TYPES if k in types}, cut_free,
                  labels, failures, rows, dict(seconds))
