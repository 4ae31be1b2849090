"""Operating-point presets: which model, and the reference's sampling defaults for it.

A preset is a YAML file: a built-in one (`presets/` in the repository, `svdcli.preset_files` in the package), one in the
user config dir (`$XDG_CONFIG_HOME/svd/presets/NAME.yaml`, default `~/.config/svd/presets/`), or any path. A user
preset may start from another with `base: NAME`. Unknown keys and wrong types are errors naming the key.
"""

import dataclasses
import importlib.resources
import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from .architectures import ARCHITECTURES


class PresetError(ValueError):
    """A preset that cannot be used; one line for the user."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    architecture: str
    repo: str | None  # hub repo id the weights come from
    single_file: str | None  # file name of the single-file checkpoint in that repo
    diffusers: bool  # whether the repo also has the diffusers folders
    frames: int
    steps: int
    width: int
    height: int
    cfg_min: float
    cfg_max: float
    guidance: str
    fps: int  # playback rate of the written file; the model is conditioned on fps - 1
    motion_bucket: int
    noise_aug: float
    decode_chunk: int  # frames decoded at once; `auto` in YAML, 0 here: the most that fit in free memory
    weights: str | None = None  # a path, for presets of local models
    companion: str | None = None  # another preset this one runs with (SV4D: the SV3D model of its first frame)
    # a U-Net distributed alone (AnimateLCM-SVD-xt): the preset whose VAE and image encoder it runs with
    base_model: str | None = None
    sampler: str = "euler"  # the default sampler; "lcm" marks a consistency-distilled U-Net (inference/sampling.py)
    fps_conditioning: int | None = None  # the fps value the model is conditioned on, where it is not fps - 1

    @property
    def fps_id(self) -> int:
        return self.fps - 1 if self.fps_conditioning is None else self.fps_conditioning


_TYPES = {f.name: f.type for f in fields(Preset)}
_OPTIONAL = {"weights", "repo", "single_file", "name", "companion", "base_model", "fps_conditioning"}


def _check_type(key: str, value, where: str):
    t = _TYPES[key]
    if value is None and (key in _OPTIONAL or "None" in str(t)):
        return None
    base = {"int": int, "float": float, "str": str, "bool": bool}
    want = next(b for n, b in base.items() if str(t).startswith(n) or str(t) == f"<class '{n}'>" or t is b)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise PresetError(f"{where}: '{key}' must be {want.__name__}, got {value!r}")
    return value


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in importlib.resources.files("svdcli.preset_files").iterdir()
                  if p.name.endswith(".yaml"))


def user_preset_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "svd" / "presets"


def _find(name_or_path: str) -> tuple[str, str]:
    """(preset name, YAML text) for a path, a user preset or a built-in one, in that order."""
    p = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        if not p.is_file():
            raise PresetError(f"preset file {p} does not exist")
        return p.stem, p.read_text()
    user = user_preset_dir() / f"{name_or_path}.yaml"
    if user.is_file():
        return name_or_path, user.read_text()
    res = importlib.resources.files("svdcli.preset_files") / f"{name_or_path}.yaml"
    if res.is_file():
        return name_or_path, res.read_text()
    raise PresetError(f"unknown preset '{name_or_path}' (built-in: {', '.join(builtin_names())})")


def load_preset(name_or_path: str, _seen: tuple[str, ...] = ()) -> Preset:
    name, text = _find(name_or_path)
    where = f"preset {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise PresetError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PresetError(f"{where}: expected a mapping of settings")
    values = {}
    if "base" in data:
        base = data.pop("base")
        if not isinstance(base, str) or base in _seen + (name,):
            raise PresetError(f"{where}: 'base' must name another preset")
        values = dataclasses.asdict(load_preset(base, _seen + (name,)))
    for key, value in data.items():
        if key not in _TYPES or key == "name":
            raise PresetError(f"{where}: unknown key '{key}'")
        values[key] = 0 if key == "decode_chunk" and value == "auto" else _check_type(key, value, where)
    values["name"] = name
    missing = [f.name for f in fields(Preset) if f.name not in values and f.default is dataclasses.MISSING]
    if missing:
        raise PresetError(f"{where}: missing key '{missing[0]}'")
    preset = Preset(**values)
    validate(preset, where)
    return preset


def validate(p: Preset, where: str) -> None:
    """Values that cannot work (as opposed to values outside the trained range, which only warn)."""
    if p.architecture not in ARCHITECTURES:
        raise PresetError(f"{where}: 'architecture' must be one of {', '.join(ARCHITECTURES)}")
    if p.guidance not in ("linear", "triangle", "spacetime"):
        raise PresetError(f"{where}: 'guidance' must be linear, triangle or spacetime")
    for key in ("frames", "steps", "fps"):
        if getattr(p, key) < 1:
            raise PresetError(f"{where}: '{key}' must be at least 1")
    if p.decode_chunk < 0:
        raise PresetError(f"{where}: 'decode_chunk' must be auto or at least 1")
    if p.width % 64 or p.height % 64 or p.width <= 0 or p.height <= 0:
        raise PresetError(f"{where}: 'width' and 'height' must be positive multiples of 64")
    if p.noise_aug < 0 or p.motion_bucket < 0:
        raise PresetError(f"{where}: 'noise_aug' and 'motion_bucket' must not be negative")
