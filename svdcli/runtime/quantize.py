"""Weights stored in fewer bytes than they compute in.

Storage dtypes for the convolution and linear weights (and the image encoder's fused attention projection), which
hold nearly all parameters:
  fp16, bf16  2 bytes; upcast to the compute dtype when the layer runs.
  fp8         1 byte: float8_e4m3fn with one float32 scale per tensor (scale = max|w| / 448, the format's largest
              value); upcast and rescaled when the layer runs. Any device, no extra library.
  int8        1 byte: LLM.int8 linear layers (Int8Linear: row-wise scales, outliers in 16 bits; bitsandbytes' matmul)
              on the devices bitsandbytes supports (CUDA, CPU); convolutions stay in the compute dtype.
Norms, biases and embeddings keep the compute dtype. The dequantised weight exists only while its layer runs, so
peak memory is the stored weights plus one layer's weight in the compute dtype.
"""

import logging

import torch
from torch import Tensor, nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": FP8, "int8": torch.int8}


class QuantizeError(ValueError):
    """A storage dtype the device cannot use; one line for the user."""


def storable(owner: nn.Module, name: str) -> bool:
    """Whether a parameter is one of the big matrices that a storage dtype applies to."""
    return (name == "weight" and isinstance(owner, (nn.Linear, nn.Conv2d, nn.Conv3d))) or name == "in_proj_weight"


def _upcast_hook(module: nn.Module, args):
    x = next((a for a in args if isinstance(a, Tensor) and a.is_floating_point()), None)
    dtype = x.dtype if x is not None else torch.float32
    for name in module._stored_weights:
        w = getattr(module, name + "_stored")
        w = w.to(dtype)
        scale = getattr(module, name + "_scale", None)
        module.__dict__[name] = w * scale.to(dtype) if scale is not None else w


def _drop_hook(module: nn.Module, args, output):
    for name in module._stored_weights:
        module.__dict__.pop(name, None)


def store_weight(owner: nn.Module, name: str, value: Tensor, storage: torch.dtype, device: torch.device) -> None:
    """Replace owner.<name> by a stored copy (fp16/bf16/fp8 with scale) that is upcast whenever owner runs."""
    if name in owner._parameters:
        del owner._parameters[name]
    if storage == FP8:
        value = value.float()
        scale = value.abs().max().clamp(min=1e-12) / FP8_MAX
        owner.register_buffer(name + "_scale", scale.to(device))
        value = (value / scale).to(device=device, dtype=FP8)
    else:
        value = value.to(device=device, dtype=storage)
    owner.register_buffer(name + "_stored", value.contiguous())
    if not hasattr(owner, "_stored_weights"):
        owner._stored_weights = []
        owner.register_forward_pre_hook(_upcast_hook)
        owner.register_forward_hook(_drop_hook)
    owner._stored_weights.append(name)


def check_int8(device: torch.device) -> None:
    if device.type not in ("cuda", "cpu"):
        raise QuantizeError(f"--weights-dtype int8 needs bitsandbytes, which does not support {device.type}; "
                            "use --weights-dtype fp8")
    if import_bitsandbytes() is None:
        raise QuantizeError("--weights-dtype int8 needs bitsandbytes (pip install bitsandbytes); "
                            "or use --weights-dtype fp8, which needs nothing")


def import_bitsandbytes():
    """The bitsandbytes module, or None if it is not installed."""
    # bitsandbytes logs a notice about its optional 4-bit CPU kernels at import and one per int8 matmul about
    # casting inputs to fp16 (which LLM.int8 always does); neither is actionable for our users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        return None
    return bitsandbytes


class Int8Linear(nn.Linear):
    """A linear layer in LLM.int8 (bitsandbytes' matmul): int8 weights with one scale per output row, input
    columns holding outliers (|x| > threshold) computed in 16 bits.

    Unlike bitsandbytes' own Linear8bitLt, which keeps its quantised weight and scales as attributes of a Parameter
    subclass and of a state object (so a parent's .to() leaves them behind, and pinning or offloading drops them),
    every tensor here is a buffer of the module: .to(), offloading and the meta device move them all."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, threshold: float = 6.0,
                 device: torch.device | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.threshold = in_features, out_features, threshold
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.empty(out_features, dtype=torch.float32, device=device))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_features, device=device)) if bias else None)

    @classmethod
    def quantized(cls, linear: nn.Linear, value: Tensor, device: torch.device) -> "Int8Linear":
        """A layer of linear's shape holding `value` (the full-precision weight) quantised on `device`; the bias is
        assigned by the caller."""
        bnb = import_bitsandbytes()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        weight, scale, _ = bnb.functional.int8_vectorwise_quant(value.to(device=device, dtype=torch.float16))
        layer.weight, layer.weight_scale = weight, scale.float()
        return layer

    def forward(self, x: Tensor) -> Tensor:
        bnb = import_bitsandbytes()
        state = bnb.MatmulLtState(CB=self.weight, SCB=self.weight_scale)
        state.threshold, state.has_fp16_weights, state.is_training = self.threshold, False, False
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return bnb.matmul(x, self.weight, bias=bias, state=state).to(x.dtype)


def has_stored_weights(module: nn.Module) -> bool:
    return any(hasattr(m, "_stored_weights") or isinstance(m, Int8Linear) for m in module.modules())


def weight_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers, as stored."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
