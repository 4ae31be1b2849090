"""Finding the weights for a preset, and naming them in metadata by content hash."""

import hashlib
import json
import os
import re
from pathlib import Path

from .presets import Preset


class WeightsError(ValueError):
    """Weights that cannot be found; one line for the user."""


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    return home / "hub"


def cached_snapshot(repo: str) -> Path | None:
    """The snapshot folder of a hub repo in the local cache (the revision `main` points at, else the newest)."""
    root = hub_cache_dir() / ("models--" + repo.replace("/", "--"))
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = root / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return candidates[0] if candidates else None


def _from_snapshot(snapshot: Path, preset: Preset | None) -> Path | None:
    if preset and preset.single_file and (snapshot / preset.single_file).is_file():
        return snapshot / preset.single_file
    # The diffusers folders hold the temporal decoder: never a stand-in for the image-decoder presets.
    if (preset is None or preset.diffusers) and (snapshot / "model_index.json").is_file() and \
            (snapshot / "unet").is_dir():
        return snapshot
    files = sorted(snapshot.glob("*.safetensors"))
    return files[0] if len(files) == 1 else None


PACKAGE = "package:"  # a preset's weights shipped inside svdcli (the demo model)


def package_file(spec: str) -> Path:
    """package:demo/x.safetensors -> the file inside the installed svdcli package."""
    import importlib.resources

    path = Path(str(importlib.resources.files("svdcli"))) / spec.removeprefix(PACKAGE)
    if not path.is_file():
        raise WeightsError(f"{path}: not in this installation (the demo model is built by "
                           "`python -m svdcli.demo.recipe --out DIR --install`; see docs/demo-model.md)")
    return path


def resolve_weights(spec: str | None, preset: Preset) -> Path:
    """--weights as given (file, folder, or a hub repo id already in the cache), else the preset's own weights.
    For a preset of a U-Net alone (base_model), the U-Net's, once the base model's are known to be here too."""
    base_weights(preset)
    if spec:
        p = Path(spec).expanduser()
        if p.exists():
            return p
        if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and (snap := cached_snapshot(spec)):
            found = _from_snapshot(snap, preset)
            if found:
                return found
            raise WeightsError(f"{spec}: the cached snapshot {snap} has no weights svd can load")
        raise WeightsError(f"--weights {spec}: no such file or folder, and no hub repo of that name in the cache "
                           f"({hub_cache_dir()})")
    if preset.weights:
        if preset.weights.startswith(PACKAGE):
            return package_file(preset.weights)
        return Path(preset.weights).expanduser()
    if preset.repo and (snap := cached_snapshot(preset.repo)) and (found := _from_snapshot(snap, preset)):
        return found
    if preset.repo:
        raise WeightsError(f"the {preset.name} weights are not downloaded: run `svd download {preset.name}` "
                           f"(or pass --weights FILE|FOLDER)")
    raise WeightsError(f"no weights for preset {preset.name}: pass --weights FILE|FOLDER")


def base_weights(preset: Preset) -> Path | None:
    """The checkpoint whose VAE and image encoder a preset of a U-Net alone runs with (its base_model's weights);
    None for a preset of a whole model."""
    if not preset.base_model:
        return None
    from .presets import load_preset

    try:
        return resolve_weights(None, load_preset(preset.base_model))
    except WeightsError:
        raise WeightsError(f"the {preset.name} U-Net runs with the VAE and image encoder of {preset.base_model}, "
                           f"whose weights are not downloaded: run `svd download {preset.name}` (it fetches both)") \
            from None


def installed(preset: Preset) -> dict | None:
    """Where a preset's weights are in the hub cache (or the package): path, revision and size on disk; None if not
    there."""
    if preset.weights and preset.weights.startswith(PACKAGE):
        try:
            path = package_file(preset.weights)
        except WeightsError:
            return None
        return {"path": str(path), "revision": "built-in", "bytes": path.stat().st_size, "layout": "single-file"}
    if not preset.repo or not (snap := cached_snapshot(preset.repo)) or not (found := _from_snapshot(snap, preset)):
        return None
    files = [found] if found.is_file() else [p for p in found.rglob("*") if p.is_file()]
    return {"path": str(found), "revision": snap.name, "bytes": sum(p.resolve().stat().st_size for p in files),
            "layout": "single-file" if found.is_file() else "diffusers"}


def _file_sha256(path: Path) -> str:
    real = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", real.name) and real.parent.name == "blobs":
        return real.name  # the hub cache names large files by their sha256
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "svd" / "hashes.json"
    st = real.stat()
    key = f"{real}:{st.st_size}:{st.st_mtime_ns}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    known[key] = h.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return known[key]


def weights_sha256(files: list[Path]) -> str:
    """sha256 of a single file; for several (a diffusers folder) the sha256 of their names and hashes."""
    if len(files) == 1:
        return _file_sha256(files[0])
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: (p.parent.name, p.name)):
        h.update(f"{f.parent.name}/{f.name}:{_file_sha256(f)}\n".encode())
    return h.hexdigest()
