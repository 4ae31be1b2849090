"""LoRA files: applying low-rank updates to the U-Net's linear and convolution layers at run time.

Each targeted layer gets y += scale · (alpha / rank) · B(A(x)) through a forward hook (LowRankUpdate), so the base
weights are not touched (whatever their storage dtype, fp8 and int8 included), scale 0 is exactly the base model, and
several LoRAs add up. Our files name each pair after the module in the single-file layout (`<module>.lora_A.weight`,
shape (rank, in) for a Linear, (rank, in, *kernel) for a convolution, which A applies with the layer's stride and
padding; `<module>.lora_B.weight`, (out, rank) or (out, rank, 1, ...)) and record what they were made for in the
`svdcli.lora` metadata. Files in the diffusers/peft naming of the SVD U-Net (`unet.<path>.lora_A.weight`,
`base_model.model.<path>.lora_A.weight`, `.lora.down/.lora.up`) are accepted too.
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize
from torch import Tensor, nn

from ..checkpoints import diffusers_keys
from ..checkpoints.architectures import Architecture
from ..checkpoints.safetensors_io import CheckpointError, SafetensorsFile

META_KEY = "svdcli.lora"
# Cross-attention attends to a single CLIP token, so its softmax is exactly 1 whatever the query and key: attn2's
# to_q and to_k have no effect (and would get no gradient), and are never targets.
_PROJECTIONS = r"\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_v|to_out\.0))$"
# "locon" (LoRA for convolutions too, as LyCORIS calls it): every weight layer inside the U-Net's blocks: the
# attention projections, the feed-forward layers, the res blocks' 3×3 (spatial) and 3×1×1 (temporal) convolutions,
# their embedding projections and skips, and the down/upsampling convolutions. Attention adapters re-weight what
# the blocks already compute; for a camera move the base never made (the demo model's zoom), adapters that reach the
# convolutions and feed-forwards learn more of it (docs/demo-model.md).
TARGETS = {"temporal": re.compile(r"\.time_stack\.0" + _PROJECTIONS),  # the paper's choice
           "spatial": re.compile(r"\.transformer_blocks\.0" + _PROJECTIONS),
           "all": re.compile(r"\.(time_stack|transformer_blocks)\.0" + _PROJECTIONS),
           "locon": re.compile(r"^(input_blocks\.[1-9]\d*|middle_block|output_blocks)\.(?!.*attn2\.to_[qk]$)")}
_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)


class LoraError(ValueError):
    """A LoRA that does not fit the model; one line for the user."""


@dataclass
class Lora:
    path: Path
    pairs: dict[str, tuple[Tensor, Tensor]]  # our module path -> (A (rank, in), B (out, rank))
    alpha: float
    rank: int
    meta: dict


# LoRAs shipped with the package, usable by name (--lora demo-zoom).
SHIPPED = {"demo-zoom": "package:demo/demo-zoom.safetensors"}


def parse_spec(spec: str) -> tuple[str, float]:
    """FILE or FILE:SCALE; FILE may be the name of a shipped LoRA."""
    path, sep, scale = spec.rpartition(":")
    path, scale = (path, float(scale)) if sep and re.fullmatch(r"-?\d+(\.\d+)?", scale) else (spec, 1.0)
    if path in SHIPPED and not Path(path).exists():
        from ..checkpoints.weights import WeightsError, package_file

        try:
            path = str(package_file(SHIPPED[path]))
        except WeightsError as e:
            raise LoraError(str(e)) from None
    return path, scale


def _diffusers_to_ours(arch: Architecture) -> dict[str, str]:
    """diffusers module path -> our module path, for every Linear and convolution of the U-Net (from the one key
    table)."""
    from ..checkpoints.loader import meta_modules

    out = {}
    unet = meta_modules(arch)["unet"]
    for name, m in unet.named_modules():
        if isinstance(m, _LAYERS):
            theirs = diffusers_keys.unet_source(name + ".weight", arch.unet).keys[0]
            out[theirs.removesuffix(".weight")] = name
    return out


def read_lora(path: str | Path, arch: Architecture, preset: str | None = None) -> Lora:
    """preset: the name of the preset in use; a LoRA trained with another built-in preset of the architecture (svd
    vs svd-xt, ...) is refused. (Our files record that name under "variant", a key kept for the files written.)"""
    from ..checkpoints.presets import builtin_names

    f = SafetensorsFile(path)
    meta = json.loads(f.metadata.get(META_KEY, "{}"))
    if meta.get("architecture") and meta["architecture"] != arch.name:
        raise LoraError(f"{path}: made for {meta['architecture']}, not {arch.name}")
    made_for = meta.get("variant")
    if preset and made_for and made_for != preset and {made_for, preset} <= set(builtin_names()):
        raise LoraError(f"{path}: made for {made_for}, not {preset}")
    renames = None
    a_keys = {}
    for k in f.keys():
        m = re.match(r"^(?:base_model\.model\.|unet\.|lora_unet\.)?(.+?)\.(lora_A|lora_down|lora\.down)\.weight$", k)
        if m:
            a_keys[m.group(1)] = k
    if not a_keys:
        raise LoraError(f"{path}: no LoRA pairs found (expected *.lora_A.weight / *.lora_B.weight)")
    pairs, alpha, rank = {}, None, None
    for module, a_key in a_keys.items():
        b_key = a_key.replace("lora_A", "lora_B").replace("lora_down", "lora_up").replace("lora.down", "lora.up")
        if b_key not in f:
            raise LoraError(f"{path}: {a_key} has no matching up/B matrix")
        ours = module
        if ours.startswith(("down_blocks", "up_blocks", "mid_block", "conv_in", "time_embedding", "add_embedding")):
            renames = renames or _diffusers_to_ours(arch)
            if ours not in renames:
                raise LoraError(f"{path}: {module} is not a linear or convolution layer of the {arch.name} U-Net")
            ours = renames[ours]
        a, b = f.read(a_key).float(), f.read(b_key).float()
        pairs[ours] = (a, b)
        rank = a.shape[0]
        alpha_key = a_key.rsplit(".", 2)[0] + ".alpha"
        if alpha_key in f:
            alpha = float(f.read(alpha_key).float())
    alpha = float(meta.get("alpha", alpha if alpha is not None else rank))
    return Lora(Path(path), pairs, alpha, int(meta.get("rank", rank)), meta)


def low_rank_update(x: Tensor, a: Tensor, b: Tensor, layer: nn.Module) -> Tensor:
    """B(A(x)) for a pair on `layer`: A is a linear map, or a convolution like the layer's (its kernel, stride,
    padding), and B a 1×1 convolution across channels."""
    if a.dim() == 2:
        return (x @ a.T) @ b.T
    conv = F.conv2d if a.dim() == 4 else F.conv3d
    return conv(conv(x, a, None, layer.stride, layer.padding, layer.dilation), b)


class LowRankUpdate(nn.Module):
    """One LoRA pair applied beside its layer at run time: the layer's output + factor · B(A(x)).

    A and B belong to this module, which becomes a child of the layer (`layer.loras`), so `.to()`, offloading and
    the meta device move them with the layer. The update computes in the layer's dtype: A and B (small) are cast to
    the activation's dtype, never the activation to theirs."""

    def __init__(self, a: Tensor, b: Tensor, factor: float):
        super().__init__()
        self.register_buffer("lora_A", a, persistent=False)  # not part of the U-Net's own weights
        self.register_buffer("lora_B", b, persistent=False)
        self.factor = factor

    def add_to(self, layer: nn.Module, x: Tensor, output: Tensor) -> Tensor:
        update = low_rank_update(x, self.lora_A.to(x.dtype), self.lora_B.to(x.dtype), layer)
        return output + (self.factor * update).to(output.dtype)


def _add_updates(layer: nn.Module, args, output: Tensor) -> Tensor:
    """The one forward hook of a layer with run-time LoRAs; it holds no tensors of its own."""
    for update in layer.loras:
        output = update.add_to(layer, args[0], output)
    return output


class AttachedUpdate:
    """What attach_update returns: remove() takes the update off its layer again."""

    def __init__(self, layer: nn.Module, update: nn.Module):
        self.layer, self.update = layer, update

    def remove(self) -> None:
        loras = self.layer.loras
        loras._modules = {str(i): m for i, m in enumerate(m for m in loras if m is not self.update)}
        if not len(loras):
            self.layer._lora_hook.remove()
            del self.layer.loras, self.layer._lora_hook


def attach_update(layer: nn.Module, update: nn.Module) -> AttachedUpdate:
    """Add `update` (anything with add_to(layer, x, output)) to the layer's run-time LoRAs; several add up."""
    if not hasattr(layer, "loras"):
        layer.loras = nn.ModuleList()
        layer._lora_hook = layer.register_forward_hook(_add_updates)
    layer.loras.append(update)
    return AttachedUpdate(layer, update)


class LoraPair(LowRankUpdate):
    """A trainable pair on one frozen layer: ΔW = (alpha / rank) · B·A, A drawn as peft draws it (uniform within
    ±1/√fan_in), B zero, so training starts at the base model. It is applied in whichever of two equal forms costs
    fewer operations (`attach`): merged into the weight, the layer computing once with W + ΔW (and the full weight
    gradient, from which A's and B's follow), or factored, the layer's output plus B(A(x)) (two thin products, three
    times over with their gradients). Per output position that is in·out against 3·rank·(in + out) (in counting the
    kernel), so a small layer (the demo model's) merges and a wide one (SVD's, 320-1280 channels) stays factored.
    merge: True or False to choose the form (the tests compare them)."""

    def __init__(self, layer: nn.Module, rank: int, alpha: float, generator: torch.Generator,
                 merge: bool | None = None):
        nn.Module.__init__(self)
        a_shape, b_shape = _pair_shapes(layer, rank)
        fan_in = math.prod(a_shape[1:])
        bound = 1 / math.sqrt(fan_in)
        self.lora_A = nn.Parameter(torch.rand(a_shape, generator=generator) * 2 * bound - bound)
        self.lora_B = nn.Parameter(torch.zeros(b_shape))
        self.factor = alpha / rank
        self.merged = fan_in * b_shape[0] <= 3 * rank * (fan_in + b_shape[0]) if merge is None else merge

    def delta(self) -> Tensor:
        """ΔW, shaped like the layer's weight."""
        a = self.lora_A
        return self.factor * (self.lora_B.flatten(1) @ a.flatten(1)).view(self.lora_B.shape[0], *a.shape[1:])

    def forward(self, weight: Tensor) -> Tensor:  # the merged form, as a parametrization of layer.weight
        return (weight.float() + self.delta()).to(weight.dtype)

    def attach(self, layer: nn.Module) -> None:
        if self.merged:
            torch.nn.utils.parametrize.register_parametrization(layer, "weight", self)
        else:
            attach_update(layer, self)


def _pair_shapes(layer: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The shapes of A and B that fit the layer, or None for a layer a LoRA cannot change."""
    if isinstance(layer, nn.Linear):  # bitsandbytes' int8 and 4-bit layers are Linears too
        return (rank, layer.in_features), (layer.out_features, rank)
    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
        ones = (1,) * len(layer.kernel_size)
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, *ones)
    return None


def apply_loras(unet: nn.Module, arch: Architecture, specs: list[str],
                preset: str | None = None) -> list[AttachedUpdate]:
    """Attach each LoRA (FILE[:SCALE]) to the U-Net's layers; returns handles (remove() takes a pair off again).
    preset: the name of the preset in use, checked against the one a LoRA was trained with."""
    handles = []
    for spec in specs:
        path, scale = parse_spec(spec)
        try:
            lora = read_lora(path, arch, preset)
        except CheckpointError as e:
            raise LoraError(str(e)) from None
        if scale == 0:
            continue  # exactly the base model
        for name, (a, b) in lora.pairs.items():
            try:
                layer = unet.get_submodule(name)
            except AttributeError:
                raise LoraError(f"{path}: {name} is not a layer of the {arch.name} U-Net") from None
            want = _pair_shapes(layer, a.shape[0])
            if want is None:
                raise LoraError(f"{path}: {name} is not a linear or convolution layer of the {arch.name} U-Net")
            if (tuple(a.shape), tuple(b.shape)) != want:
                raise LoraError(f"{path}: {name} has A {tuple(a.shape)} and B {tuple(b.shape)}; the model's layer "
                                f"takes {want[0]} and {want[1]} — a LoRA for another model size")
            device = next(t.device for t in (*layer.parameters(), *layer.buffers()))
            handles.append(attach_update(layer, LowRankUpdate(a.to(device), b.to(device),
                                                              scale * lora.alpha / lora.rank)))
    return handles


def save_lora(pairs: dict[str, tuple[Tensor, Tensor]], path: str | Path, arch: Architecture, alpha: float,
              **meta) -> None:
    """Our file format (used by train-lora and the tests)."""
    from ..checkpoints.saving import write_safetensors

    tensors = {}
    for name, (a, b) in pairs.items():
        tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = a, b
    rank = next(iter(pairs.values()))[0].shape[0]
    about = {"architecture": arch.name, "rank": rank, "alpha": alpha, **meta}
    write_safetensors(tensors, Path(path), {META_KEY: json.dumps(about)})


def lora_targets(unet: nn.Module, which: str = "temporal") -> list[str]:
    """Module paths of the layers a LoRA trains: "temporal" (the paper's choice: the temporal attention blocks),
    "spatial", "all" (both kinds of attention) or "locon" (every linear and convolution layer in the blocks)."""
    if which not in TARGETS:
        raise LoraError(f"targets {which!r}: choose one of {', '.join(TARGETS)}")
    return [n for n, m in unet.named_modules() if isinstance(m, _LAYERS) and TARGETS[which].search(n)]
