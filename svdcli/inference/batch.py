"""Many images, one model load: job lists, stable per-item seeds, sharding, resume, and a manifest.

An item is done when its output and its sidecar JSON both exist (the sidecar is written after the output is renamed
into place), so a run killed at any moment, even with SIGKILL, and run again ends with exactly one complete output
per item. The manifest (`manifest.jsonl` in the output folder) gets one line per finished or failed item, appended
with a single O_APPEND write; an item that finished but was killed before its line was written gets a line
recovered from its sidecar on the next run.
"""

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..media.outputs import remove_partials, sidecar_path
from ..runtime.seeds import digest64

IMAGE_GLOBS = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.bmp", "*.tif", "*.tiff", "*.gif")
# Per-item settings a job file may override, with their types (CLI flag names with dashes as underscores).
OVERRIDES = {"frames": int, "steps": int, "fps": int, "fps_id": int, "motion": int, "noise_aug": float,
             "cfg_min": float, "cfg_max": float, "size": str, "resize": str, "decode_chunk": str, "seed": int,
             "name": str, "format": str, "loop": bool, "interpolate": int, "pingpong": bool, "keyframes": str,
             "overlap": int, "sampler": str, "schedule": str, "cache": int}


class BatchError(ValueError):
    """Input that stops the whole batch (unreadable job file, bad template); one line for the user."""


@dataclass
class Item:
    key: str  # stable identity: the path relative to the input folder or job file
    image: Path
    overrides: dict = field(default_factory=dict)


def _coerce(key: str, value, where: str):
    if key not in OVERRIDES:
        raise BatchError(f"{where}: unknown setting '{key}' (known: {', '.join(OVERRIDES)})")
    want = OVERRIDES[key]
    if value is None or value == "":
        return None
    if want is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "0", "false", "no"):
            return str(value).lower() in ("1", "true", "yes")
    elif not isinstance(value, bool):
        try:
            return want(value)
        except (TypeError, ValueError):
            pass
    raise BatchError(f"{where}: '{key}' must be {want.__name__}, got {value!r}")


def read_items(source: str | Path, recursive: bool = False, globs: tuple[str, ...] = IMAGE_GLOBS) -> list[Item]:
    """A folder of images, or a job file: .txt (one image path per line), .csv (an `image` column plus any
    settings), .jsonl (objects with `image` plus any settings). An `end` column names an item's end keyframe (as
    `end` in the overrides). Relative paths are relative to the job file."""
    src = Path(source).expanduser()
    if src.is_dir():
        found = set()
        for pattern in globs:
            for p in (src.rglob(pattern) if recursive else src.glob(pattern)):
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts):
                    found.add(p)
        return [Item(p.relative_to(src).as_posix(), p) for p in sorted(found)]
    if not src.is_file():
        raise BatchError(f"{src}: no such folder or job file")
    base, suffix = src.parent, src.suffix.lower()
    items = []
    try:
        if suffix == ".csv":
            with open(src, newline="") as f:
                rows = list(csv.DictReader(f))
        elif suffix in (".jsonl", ".ndjson"):
            rows = []
            for n, line in enumerate(src.read_text().splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise BatchError(f"{src}:{n}: each line must be a JSON object")
                    rows.append(row)
        else:
            rows = [{"image": line.strip()} for line in src.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise BatchError(f"{src}: unreadable job file ({e})") from None
    for n, row in enumerate(rows, 1):
        where = f"{src} item {n}"
        image = row.pop("image", None)
        if not image:
            raise BatchError(f"{where}: no 'image'")
        path = (base / image) if not Path(image).is_absolute() else Path(image)
        end = row.pop("end", None)
        overrides = {k: v for k, v in ((k, _coerce(k, v, where)) for k, v in row.items()) if v is not None}
        if end:
            overrides["end"] = str(base / end if not Path(end).is_absolute() else Path(end))
        items.append(Item(str(image), path, overrides))
    return items


def item_seed(base_seed: int, key: str) -> int:
    """Depends on the base seed and the item's key only: not on folder order, other items or sharding."""
    return digest64(f"{base_seed}:{key}", "big") % 2**31


def in_shard(key: str, index: int, count: int) -> bool:
    """Stable assignment by the key's hash: shards are disjoint and complete, and an item keeps its shard when
    other items come and go."""
    return count <= 1 or digest64(f"shard:{key}", "big") % count == index


def output_name(template: str, item: Item, seed: int, index: int, fmt: str) -> str:
    stem = Path(item.key).with_suffix("").as_posix().replace("/", "_")
    ext = "" if fmt == "png" else fmt
    try:
        name = template.format(stem=stem, seed=seed, index=index, ext=ext, format=fmt)
    except (KeyError, IndexError, ValueError) as e:
        raise BatchError(f"--name {template}: unknown field {e} (use {{stem}}, {{seed}}, {{index}}, {{ext}})") \
            from None
    if os.sep in name or name in ("", ".", ".."):
        raise BatchError(f"--name {template}: gives {name!r}, not a file name")
    return name.rstrip(".") if fmt == "png" else name


def is_complete(output: Path, fmt: str) -> bool:
    return output.exists() and sidecar_path(output, fmt).is_file()


class Manifest:
    def __init__(self, folder: Path):
        self.path = folder / "manifest.jsonl"

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write (cannot happen with one small write, but be lenient)
        return out

    def done_outputs(self) -> set[str]:
        return {r["output"] for r in self.records() if r.get("status") == "done"}

    def append(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write on an O_APPEND descriptor: whole lines, even with several writers
        finally:
            os.close(fd)


@dataclass
class Outcome:
    item: Item
    status: str  # done, skipped, failed
    output: Path | None
    seed: int | None
    seconds: float = 0.0
    error: str | None = None


def run_batch(items: list[Item], out_dir: Path, template: str, base_seed: int, force: bool, default_format: str,
              generate: Callable[[Item, int, Path], dict], on_item: Callable[[Outcome, int, int], None],
              rank: int = 0) -> list[Outcome]:
    """generate(item, seed, output) writes one output and returns its metadata, or raises ValueError (the item's
    fault: bad image, bad override). Other exceptions stop the batch."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()  # the manifest records absolute paths
    manifest = Manifest(out_dir)
    recorded = manifest.done_outputs()
    outcomes = []
    for n, item in enumerate(items):
        fmt = item.overrides.get("format", default_format)
        seed = item.overrides.get("seed", item_seed(base_seed, item.key))
        started = time.perf_counter()
        try:
            name = item.overrides.get("name") or output_name(template, item, seed, n, fmt)
            output = out_dir / name
            if is_complete(output, fmt) and not force:
                if str(output) not in recorded:  # finished, but killed before its manifest line
                    meta = json.loads(sidecar_path(output, fmt).read_text())
                    manifest.append({"input": str(item.image.resolve()), "output": str(output), "seed": meta.get("seed"),
                                     "status": "done", "recovered": True, "settings": meta.get("settings"),
                                     "rank": rank})
                outcome = Outcome(item, "skipped", output, seed)
            else:
                remove_partials(output, fmt)
                meta = generate(item, seed, output)
                outcome = Outcome(item, "done", output, seed, time.perf_counter() - started)
                manifest.append({"input": str(item.image.resolve()), "output": str(output), "seed": seed, "status": "done",
                                 "settings": meta.get("settings"), "seconds": round(outcome.seconds, 2),
                                 "rank": rank})
        except (ValueError, BatchError) as e:
            outcome = Outcome(item, "failed", None, seed, time.perf_counter() - started, str(e))
            manifest.append({"input": str(item.image.resolve()), "output": None, "seed": seed, "status": "failed",
                             "error": str(e), "rank": rank})
        outcomes.append(outcome)
        on_item(outcome, n + 1, len(items))
    return outcomes

