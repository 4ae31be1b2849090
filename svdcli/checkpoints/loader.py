"""The one loader: sgm single files and diffusers folders, in any stored dtype, into our modules.

Steps: find the files; tell the architecture from tensor names and shapes; infer the component configs from the
shapes; build the modules on the meta device (no memory); check every needed tensor is present with the right
shape before reading anything; then read tensors one at a time, converting each straight into the target dtype and
device. Peak memory is the loaded weights plus one tensor. Known-unused tensors are never read.
"""

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..models.clip import CLIPConfig, ImageEncoder
from ..models.init import random_tensor
from ..models.unet import UNetConfig, VideoUNet
from ..models.vae import VAE, VAEConfig
from ..runtime.progress import Progress
from ..runtime.quantize import WEIGHT_DTYPES, Int8Linear, check_int8, storable, store_weight
from . import diffusers_keys
from .architectures import ARCHITECTURES, RELEASED_FILES, UNET_PREFIX, Architecture
from .safetensors_io import CheckpointError, SafetensorsFile, refuse_pickle

META_KEY = "svdcli.config"  # our own files record what shapes cannot say (attention head widths, architecture)


@dataclass
class LoadedModel:
    architecture: Architecture
    unet: VideoUNet
    vae: VAE
    image_encoder: ImageEncoder
    layout: str  # "single-file" or "diffusers"
    files: list[Path]
    stored_dtypes: list[str]
    release: str | None = None  # e.g. "svd_xt_1_1.safetensors" when the file name is a released one
    skipped_tensors: int = 0
    weights_dtype: str | None = None  # storage dtype of the U-Net's and image encoder's big matrices

    def components(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "image_encoder": self.image_encoder}


# --- one table entry per parameter -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    component: str
    key: str  # our parameter name inside the component
    shape: tuple[int, ...]
    sources: tuple[tuple[SafetensorsFile, str], ...]
    combine: Callable


class Shapes:
    """Tensor names -> shapes across one or more files, with the file that holds each."""

    def __init__(self, files: list[SafetensorsFile]):
        self.where = {k: f for f in files for k in f.keys()}

    def __contains__(self, k: str) -> bool:
        return k in self.where

    def __getitem__(self, k: str) -> tuple[int, ...]:
        return self.where[k].shape(k)

    def keys(self):
        return self.where.keys()


# --- config inference from shapes (our names) ----------------------------------------------------------------------

def _count(keys, pattern: str) -> int:
    return len({m.group(1) for k in keys if (m := re.match(pattern, k))})


def infer_unet_config(shape_of: Callable[[str], tuple[int, ...] | None], head_dim: int = 64) -> UNetConfig:
    mc, in_ch = shape_of("input_blocks.0.0.weight")[:2]
    widths, attention, i = [[]], [False], 1
    while (w := shape_of(f"input_blocks.{i}.0.in_layers.2.weight")) or shape_of(f"input_blocks.{i}.0.op.weight"):
        if w:
            widths[-1].append(w[0])
            attention[-1] = attention[-1] or shape_of(f"input_blocks.{i}.1.norm.weight") is not None
        else:
            widths.append([]), attention.append(False)
        i += 1
    ctx = shape_of("middle_block.1.transformer_blocks.0.attn2.to_k.weight")
    # SV4D family; whether its view attention is the "3-D" one no shape tells (the architecture's name does)
    motion_ctx = shape_of("middle_block.1.motion_blocks.0.attn2.to_k.weight")
    # the first level's: its width (model_channels) differs from the U-Net's embedding; at the middle block the
    # released files' are equal (1280), so an SV4D view embedding would look like SV4D 2.0's camera embedding there
    view_embed = shape_of("input_blocks.1.1.time_mix_time_embed.0.weight")
    return UNetConfig(in_channels=in_ch, out_channels=shape_of("out.2.weight")[0], model_channels=mc,
                      channel_mult=tuple(lv[0] // mc for lv in widths), num_res_blocks=len(widths[0]),
                      attention_levels=tuple(attention), head_dim=head_dim,
                      context_dim=ctx[1] if ctx else 1024, adm_in_channels=shape_of("label_emb.0.0.weight")[1],
                      motion_attention=motion_ctx is not None, motion_context_dim=motion_ctx[1] if motion_ctx else 4,
                      camera_embedding=bool(view_embed) and view_embed[1] == shape_of("time_embed.0.weight")[0],
                      separate_motion_mixer=shape_of("middle_block.1.time_mixer_motion.mix_factor") is not None)


def infer_vae_config(shape_of: Callable[[str], tuple[int, ...] | None], keys) -> VAEConfig:
    ch, image_ch = shape_of("encoder.conv_in.weight")[:2]
    levels = _count(keys, r"encoder\.down\.(\d+)\.")
    mult = tuple(shape_of(f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in range(levels))
    return VAEConfig(channels=ch, channel_mult=mult, num_res_blocks=_count(keys, r"encoder\.down\.0\.block\.(\d+)\."),
                     z_channels=shape_of("decoder.conv_in.weight")[1], image_channels=image_ch,
                     temporal_decoder=shape_of("decoder.conv_out.time_mix_conv.weight") is not None,
                     post_quant_conv=shape_of("post_quant_conv.weight") is not None)


def infer_clip_config(shape_of: Callable[[str], tuple[int, ...] | None], keys, head_width: int | None) -> CLIPConfig:
    width, _, patch, _ = shape_of("conv1.weight")
    grid = math.isqrt(shape_of("positional_embedding")[0] - 1)
    return CLIPConfig(image_size=grid * patch, patch_size=patch, width=width,
                      layers=_count(keys, r"transformer\.resblocks\.(\d+)\."), head_width=head_width or 80,
                      mlp_width=shape_of("transformer.resblocks.0.mlp.c_fc.weight")[0], embed_dim=shape_of("proj")[1])


# --- finding files and telling the layout --------------------------------------------------------------------------

def _diffusers_files(folder: Path, component: str, stem: str, variant: str | None,
                     prefer_half: bool) -> tuple[list[SafetensorsFile], str]:
    d = folder / component
    if not d.is_dir():
        raise CheckpointError(f"{folder}: diffusers folder without {component}/")
    choices = {v: d / f"{stem}{'.' + v if v else ''}.safetensors" for v in ("", "fp16")}
    for v in ("", "fp16"):  # sharded files
        idx = d / f"{stem}{'.' + v if v else ''}.safetensors.index.json"
        if idx.exists() and not choices[v].exists():
            choices[v] = idx
    order = [variant] if variant is not None else (["fp16", ""] if prefer_half else ["", "fp16"])
    for v in order:
        p = choices.get(v)
        if p is not None and p.exists():
            if p.name.endswith(".index.json"):
                try:
                    shards = sorted(set(json.loads(p.read_text())["weight_map"].values()))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CheckpointError(f"{p}: unreadable shard index") from None
                return [SafetensorsFile(d / s) for s in shards], v or "fp32"
            return [SafetensorsFile(p)], v or "fp32"
    pickles = [p for p in d.iterdir() if p.suffix in (".bin", ".ckpt", ".pt")]
    if pickles:
        refuse_pickle(pickles[0])
    want = "" if variant is None else f" in the {variant or 'fp32'} variant"
    raise CheckpointError(f"{d}: no {stem}*.safetensors{want}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _plan_single_file(path: Path, want: str | None) -> tuple[Architecture, list[Entry], list[SafetensorsFile], int]:
    f = SafetensorsFile(path)
    keys = set(f.keys())
    motion = UNET_PREFIX + "input_blocks.1.1.motion_blocks.0.attn1.to_q.weight" in keys
    probe = UNET_PREFIX + f"input_blocks.1.0.{'time_mix_blocks' if motion else 'time_stack'}.in_layers.2.weight"
    if probe not in keys and ("conv_in.weight" in keys or "input_blocks.0.0.weight" in keys):
        raise CheckpointError(f"{path}: holds a U-Net alone, without a VAE or image encoder: use it with a preset "
                              "that names the model it runs with (base_model), e.g. --preset animatelcm-svd-xt")
    if probe not in keys:
        raise CheckpointError(f"{path}: not an SVD/SV3D/SV4D checkpoint (no video U-Net under {UNET_PREFIX})")
    meta = json.loads(f.metadata.get(META_KEY, "{}"))
    temporal = "first_stage_model.decoder.conv_out.time_mix_conv.weight" in keys
    post_quant = "first_stage_model.post_quant_conv.weight" in keys
    sv3d_encoder = any(k.startswith("conditioner.embedders.1.encoder.") for k in keys)
    adm = f.shape(UNET_PREFIX + "label_emb.0.0.weight")[1]
    if meta.get("architecture") in ARCHITECTURES:
        name = meta["architecture"]
    elif motion:
        name = _sv4d_name(f, path, want)
    elif temporal:
        name = "svd"
    elif post_quant:
        name = "svd_image_decoder"
    elif sv3d_encoder:
        name = {256: "sv3d_u", 1280: "sv3d_p"}.get(adm, "sv3d_p" if adm > 256 else "sv3d_u")
    else:
        raise CheckpointError(f"{path}: unrecognised first stage (neither the temporal decoder of SVD nor the "
                              "frame-wise decoder of the image-decoder or SV3D files)")
    arch = ARCHITECTURES[name]
    if want is not None and want != name:
        raise CheckpointError(f"{path}: holds an {name} checkpoint, not {want}")
    # SV4D's conditioner holds three copies of one autoencoder: the first one the file has is read
    present = [p for p in (arch.vae_encoder_prefix, *arch.encoder_copies) if p + "encoder.conv_in.weight" in keys]
    if present:
        arch = replace(arch, vae_encoder_prefix=present[0])
    prefixes = arch.single_file_prefixes()

    def shape_in(component):
        table = prefixes[component]
        return {op + k[len(fp):]: f.shape(k) for op, fp in table.items() for k in keys if k.startswith(fp)}

    def getter(d):
        return lambda k: d.get(k)

    unet_s, vae_s, clip_s = shape_in("unet"), shape_in("vae"), shape_in("image_encoder")
    for comp, s, probe_key in (("vae", vae_s, "encoder.conv_in.weight"), ("vae", vae_s, "decoder.conv_in.weight"),
                               ("image_encoder", clip_s, "conv1.weight")):
        if probe_key not in s:
            raise CheckpointError(f"{path}: missing tensor {arch.single_file_key(comp, probe_key)}")
    try:
        groups = meta.get("norm_groups", {})  # our own small models only; shapes cannot tell them
        cfgs = {"unet": replace(infer_unet_config(getter(unet_s), meta.get("unet_head_dim", 64)),
                                norm_groups=int(groups.get("unet", 32)), attention_3d=arch.unet.attention_3d),
                "vae": replace(infer_vae_config(getter(vae_s), vae_s.keys()), temporal_decoder=temporal,
                               post_quant_conv=arch.vae.post_quant_conv, norm_groups=int(groups.get("vae", 32))),
                "image_encoder": infer_clip_config(getter(clip_s), clip_s.keys(), meta.get("clip_head_width"))}
    except (TypeError, IndexError, ZeroDivisionError, ValueError, AttributeError):
        raise CheckpointError(f"{path}: tensors of the {name} architecture are missing or misshapen") from None
    arch = replace(arch, unet=cfgs["unet"], vae=cfgs["vae"], clip=cfgs["image_encoder"])
    entries = []
    for comp, module in meta_modules(arch).items():
        for k, t in module.state_dict().items():
            file_key = arch.single_file_key(comp, k)
            entries.append(Entry(comp, k, tuple(t.shape), ((f if file_key in f else None, file_key),),
                                 diffusers_keys.same))
    used = {e.sources[0][1] for e in entries}
    skipped = sum(1 for k in keys if k not in used)
    return arch, entries, [f], skipped


def _sv4d_name(f: SafetensorsFile, path: Path, want: str | None) -> str:
    """sv4d, or which SV4D 2.0: its two files have the same tensors and differ in the view attention's layout, so the
    released file name or the requested architecture decides."""
    view_embed = f.shape(UNET_PREFIX + "input_blocks.1.1.time_mix_time_embed.0.weight")
    if view_embed[1] != f.shape(UNET_PREFIX + "time_embed.0.weight")[0]:
        return "sv4d"  # the view embedding is a sinusoid of the view index, not the camera
    if RELEASED_FILES.get(path.name, "").startswith("sv4d2"):
        return RELEASED_FILES[path.name]
    if want in ("sv4d2", "sv4d2_8views"):
        return want
    raise CheckpointError(f"{path}: an SV4D 2.0 checkpoint, whose 4-view and 8-view models have the same tensors: "
                          "name the file sv4d2.safetensors or sv4d2_8views.safetensors as released, or choose the "
                          "sv4d2 or sv4d2-8views preset")


def _plan_diffusers(folder: Path, want: str | None, variant: str | None,
                    prefer_half: bool) -> tuple[Architecture, list[Entry], list[SafetensorsFile], int]:
    index = _read_json(folder / "model_index.json")
    if index and index.get("_class_name") not in ("StableVideoDiffusionPipeline", None):
        raise CheckpointError(f"{folder}: a diffusers {index.get('_class_name')} folder, not Stable Video Diffusion")
    files = {c: _diffusers_files(folder, c, stem, variant, prefer_half)[0]
             for c, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                             ("image_encoder", "model"))}
    unet_json = _read_json(folder / "unet" / "config.json")
    clip_json = _read_json(folder / "image_encoder" / "config.json")
    vae_json = _read_json(folder / "vae" / "config.json")
    shapes = {c: Shapes(fs) for c, fs in files.items()}

    # Shapes in our names, through the tables, for config inference.
    def ours_getter(comp, source_fn, cfg_guess):
        def get(k):
            try:
                src = source_fn(k, cfg_guess)
            except (AssertionError, KeyError, AttributeError):
                return None
            if src.keys[0] not in shapes[comp]:
                return None
            s = shapes[comp][src.keys[0]]
            return tuple(src.combine([torch.empty(s, device="meta") for _ in src.keys]).shape)
        return get

    # The U-Net table depends on the level structure, which the diffusers config states.
    blocks = unet_json.get("down_block_types") or ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"]
    widths = unet_json.get("block_out_channels") or [320, 640, 1280, 1280]
    heads = unet_json.get("num_attention_heads", [5, 10, 20, 20])
    heads = heads if isinstance(heads, list) else [heads] * len(widths)
    guess = UNetConfig(channel_mult=tuple(w // widths[0] for w in widths),
                       num_res_blocks=unet_json.get("layers_per_block", 2),
                       attention_levels=tuple(b.startswith("CrossAttn") for b in blocks),
                       head_dim=widths[0] // heads[0])
    s = ours_getter("unet", diffusers_keys.unet_source, guess)
    try:
        unet_cfg = replace(infer_unet_config(s, guess.head_dim), num_res_blocks=guess.num_res_blocks)
        temporal = vae_json.get("_class_name", "AutoencoderKLTemporalDecoder") == "AutoencoderKLTemporalDecoder"
        vae_keys = _vae_level_keys(shapes["vae"].keys())
        vae_guess = VAEConfig(channel_mult=(1,) * _count(vae_keys, r"encoder\.down\.(\d+)\."),
                              temporal_decoder=temporal)
        vae_cfg = replace(infer_vae_config(ours_getter("vae", diffusers_keys.vae_source, vae_guess), vae_keys),
                          temporal_decoder=temporal)
        clip_heads = clip_json.get("num_attention_heads", 16)
        clip_keys = [re.sub(r"vision_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1.", k)
                     for k in shapes["image_encoder"].keys()]
        clip_s = ours_getter("image_encoder", diffusers_keys.clip_source, CLIPConfig())
        width = clip_s("conv1.weight")[0]
        clip_cfg = infer_clip_config(clip_s, clip_keys, width // clip_heads)
    except (TypeError, IndexError, ZeroDivisionError):
        raise CheckpointError(f"{folder}: tensors of the SVD diffusers layout are missing or misshapen") from None
    name = "svd" if temporal else ("svd_image_decoder" if vae_cfg.post_quant_conv else "sv3d_u")
    if want is not None and want != name:
        raise CheckpointError(f"{folder}: holds an {name} checkpoint, not {want}")
    arch = replace(ARCHITECTURES[name], unet=unet_cfg, vae=vae_cfg, clip=clip_cfg)
    tables = {"unet": diffusers_keys.unet_source, "vae": diffusers_keys.vae_source,
              "image_encoder": diffusers_keys.clip_source}
    entries = []
    for comp, module in meta_modules(arch).items():
        cfg = {"unet": arch.unet, "vae": arch.vae, "image_encoder": arch.clip}[comp]
        for k, t in module.state_dict().items():
            src = tables[comp](k, cfg)
            sources = tuple((shapes[comp].where.get(sk), sk) for sk in src.keys)
            entries.append(Entry(comp, k, tuple(t.shape), sources, src.combine))
    used = {sk for e in entries for _, sk in e.sources}
    all_files = [f for fs in files.values() for f in fs]
    skipped = sum(1 for f in all_files for k in f.keys() if k not in used)
    return arch, entries, all_files, skipped


def _vae_level_keys(keys) -> list[str]:
    """diffusers VAE names -> just enough of ours for counting levels and blocks."""
    out = []
    for k in keys:
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", k):
            out.append(f"encoder.down.{m.group(1)}.block.{m.group(2)}.")
    return out


def _plan_unet(path: Path, arch: Architecture, entries: list[Entry],
               prefer_half: bool) -> tuple[list[Entry], list[SafetensorsFile], int]:
    """The entries with the U-Net's read from a U-Net of the same architecture distributed alone (AnimateLCM-SVD-xt)
    instead of the checkpoint's own: a file with the single-file names (under model.diffusion_model. or bare; a
    whole single-file checkpoint gives its U-Net), or with diffusers' names, or a diffusers unet/ folder.
    Returns the entries, the U-Net's files and how many of their tensors go unread."""
    if path.is_dir():
        files = _diffusers_files(path.parent, path.name, "diffusion_pytorch_model", None, prefer_half)[0]
    else:
        files = [SafetensorsFile(path)]
    shapes = Shapes(files)
    if UNET_PREFIX + "input_blocks.0.0.weight" in shapes:
        def source(key):
            return (UNET_PREFIX + key,), diffusers_keys.same
    elif "input_blocks.0.0.weight" in shapes:
        def source(key):
            return (key,), diffusers_keys.same
    elif "conv_in.weight" in shapes:
        def source(key):
            src = diffusers_keys.unet_source(key, arch.unet)
            return src.keys, src.combine
    else:
        raise CheckpointError(f"{path}: not a video U-Net (neither the single-file names, as under {UNET_PREFIX}, "
                              "nor diffusers' names)")
    planned = []
    for e in entries:
        if e.component == "unet":
            keys, combine = source(e.key)
            e = Entry("unet", e.key, e.shape, tuple((shapes.where.get(k), k) for k in keys), combine)
        planned.append(e)
    used = {k for e in planned if e.component == "unet" for _, k in e.sources}
    return planned, files, sum(1 for k in shapes.keys() if k not in used)


def meta_modules(arch: Architecture) -> dict[str, nn.Module]:
    with torch.device("meta"):
        return {"unet": VideoUNet(arch.unet), "vae": VAE(arch.vae), "image_encoder": ImageEncoder(arch.clip)}


def _check(entries: list[Entry], where: Path) -> None:
    missing = [src for e in entries for f, src in e.sources if f is None]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{where}: missing tensors {', '.join(missing[:3])}{more}")
    for e in entries:
        got = [f.shape(k) for f, k in e.sources]
        shape = tuple(e.combine([torch.empty(s, device="meta") for s in got]).shape)
        if shape != e.shape:
            raise CheckpointError(f"{where}: tensor {e.sources[0][1]} has shape {list(got[0])}, "
                                  f"expected {list(e.shape)}")


def _owner(module: nn.Module, key: str) -> tuple[nn.Module, str, str]:
    owner_path, _, name = key.rpartition(".")
    return (module.get_submodule(owner_path) if owner_path else module), owner_path, name


def _assign(module: nn.Module, key: str, value: torch.Tensor) -> None:
    owner, _, name = _owner(module, key)
    if name in owner._parameters:
        owner._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[name] = value


def _store(module: nn.Module, key: str, value: torch.Tensor, storage: torch.dtype, device: torch.device) -> bool:
    """Put a big matrix into its storage dtype (see quantize.py); False if this tensor is not one."""
    owner, owner_path, name = _owner(module, key)
    if not storable(owner, name):
        return False
    if storage == torch.int8:
        if not isinstance(owner, nn.Linear):
            return False  # LLM.int8 covers linear layers; convolutions keep the compute dtype
        parent_path, _, child = owner_path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        setattr(parent, child, Int8Linear.quantized(owner, value, device))
        return True
    store_weight(owner, name, value, storage, device)
    return True


def _place(arch: Architecture, values, total: int, device: str | torch.device, dtype: torch.dtype,
           weights_dtype: str | None, progress: Progress | None) -> dict[str, nn.Module]:
    """The components built on the meta device, then given each (component, key, value) in turn, converted
    straight into its storage (weights_dtype: see load), compute dtype (float32 for the VAE) and device."""
    modules = meta_modules(arch)
    device = torch.device(device)
    if weights_dtype is not None and weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype {weights_dtype!r}: choose one of {', '.join(WEIGHT_DTYPES)}")
    storage = WEIGHT_DTYPES.get(weights_dtype)
    if storage == dtype:
        storage = None  # stored as computed: plain parameters
    if storage == torch.int8:
        check_int8(device)
    for i, (component, key, value) in enumerate(values):
        if storage is None or component == "vae" or not _store(modules[component], key, value, storage, device):
            # every other tensor takes the compute dtype; the VAE float32, in which the reference runs it
            target = torch.float32 if component == "vae" else dtype
            _assign(modules[component], key, value.to(device=device, dtype=target).contiguous())
        del value
        if progress and (i % 64 == 0 or i == total - 1):
            progress("load", i + 1, total)
    for m in modules.values():
        m.eval().requires_grad_(False)
    return modules


def load(source: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         architecture: str | None = None, variant: str | None = None, weights_dtype: str | None = None,
         components: tuple[str, ...] | None = None, unet: str | Path | None = None,
         progress: Progress | None = None) -> LoadedModel:
    """Load a single-file checkpoint or a diffusers folder.

    dtype: the compute dtype of the U-Net and image encoder, and the dtype of their tensors unless weights_dtype
    says otherwise. The VAE is read straight into float32, as the reference runs it (a round trip through a half
    precision compute dtype would lose the file's bits).
    weights_dtype: "fp32", "fp16", "bf16", "fp8" or "int8": how the U-Net's and image encoder's convolution and
    linear weights are stored (converted tensor by tensor while loading; see quantize.py). The VAE is never
    quantised (it is small and runs in float32 in the pipeline).

    architecture: if given (a name in checkpoints.architectures.ARCHITECTURES), a file of another one is refused;
    it also tells the two SV4D 2.0 models apart when the file's name does not.
    variant: diffusers only; "fp16" or "fp32" picks those files (default: fp16 files for half-precision dtypes).
    components: read only these ("unet", "vae", "image_encoder"; default all); the others stay on the meta device,
    without memory (svd decode needs the VAE alone).
    unet: a U-Net of the checkpoint's architecture distributed alone (a file in the single-file or diffusers names,
    or a diffusers unet/ folder: _plan_unet), read in place of the checkpoint's own U-Net, whose tensors then go
    unread: AnimateLCM-SVD-xt runs with SVD-XT's VAE and image encoder. Its shapes are checked against the
    checkpoint's before anything is read.
    Raises CheckpointError with a one-line message for any unusable input."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        layout = "diffusers"
        v = None if variant is None else ("" if variant == "fp32" else variant)
        arch, entries, files, skipped = _plan_diffusers(path, architecture, v, dtype in (torch.float16, torch.bfloat16))
    else:
        layout = "single-file"
        arch, entries, files, skipped = _plan_single_file(path, architecture)
    if unet is not None:
        unet_path = Path(unet).expanduser()
        if not unet_path.exists():
            raise CheckpointError(f"{unet_path}: no such file or folder")
        base_unet = sum(len(e.sources) for e in entries if e.component == "unet")
        entries, unet_files, unread = _plan_unet(unet_path, arch, entries, dtype in (torch.float16, torch.bfloat16))
        files = [f for f in files if any(f is src for e in entries for src, _ in e.sources)] + unet_files
        skipped += base_unet + unread  # the checkpoint's own U-Net is not read
        path = unet_path  # what a shape error names
    if components is not None:
        entries = [e for e in entries if e.component in components]
    _check(entries, path)

    def values():
        for e in entries:
            yield e.component, e.key, e.combine([f.read(k) for f, k in e.sources])

    modules = _place(arch, values(), len(entries), device, dtype, weights_dtype, progress)
    stored = sorted({str(f.dtype(k)).removeprefix("torch.") for e in entries for f, k in e.sources})
    release = path.name if path.name in RELEASED_FILES else None
    return LoadedModel(arch, modules["unet"], modules["vae"], modules["image_encoder"], layout,
                       [f.path for f in files], stored, release, skipped, weights_dtype)


def model_metadata(arch: Architecture) -> dict[str, str]:
    """What our own single files record beside the tensors (shapes cannot tell head widths)."""
    return {META_KEY: json.dumps({"architecture": arch.name, "unet_head_dim": arch.unet.head_dim,
                                  "clip_head_width": arch.clip.head_width,
                                  "norm_groups": {"unet": arch.unet.norm_groups, "vae": arch.vae.norm_groups},
                                  "configs": {"unet": asdict(arch.unet), "vae": asdict(arch.vae),
                                              "clip": asdict(arch.clip)}})}


def architecture_of(source: str | Path) -> Architecture:
    """The architecture of a checkpoint, with the component configs its shapes give; no tensor is read."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    plan = _plan_diffusers(path, None, None, False) if path.is_dir() else _plan_single_file(path, None)
    return plan[0]


def random_model(arch: Architecture, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 weights_dtype: str | None = None, seed: int = 0, progress: Progress | None = None) -> LoadedModel:
    """The architecture with random weights, N(0, 1/fan_in) as models/init.py draws them, drawn on `device` tensor
    by tensor and placed exactly as load() places a checkpoint's (storage dtypes included): what `svd bench`
    measures a card with, before any download. The same seed on the same device gives the same weights."""
    generator = torch.Generator(torch.device(device)).manual_seed(seed)
    shapes = [(comp, k, tuple(t.shape)) for comp, m in meta_modules(arch).items() for k, t in m.state_dict().items()]
    values = ((comp, k, random_tensor(k, shape, generator, device)) for comp, k, shape in shapes)
    modules = _place(arch, values, len(shapes), device, dtype, weights_dtype, progress)
    return LoadedModel(arch, modules["unet"], modules["vae"], modules["image_encoder"], "random", [], ["float32"],
                       weights_dtype=weights_dtype)
