"""The one place where devices and dtypes are decided."""

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(name: str | None = None) -> torch.device:
    """"auto"/None: the first CUDA device if there is one, else Apple's MPS, else the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is available")
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute dtype. Default: bf16 on GPUs that support it, else fp16 on accelerators; fp32 on the CPU, where
    half-precision compute is emulated and slow (keep half precision for storage there)."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name!r}: choose one of fp32, fp16, bf16") from None


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on device: the CUDA allocator's view, else the system's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 * 1024**3  # unknown: assume a modest machine


def attention_slice_for(free_bytes: int) -> int | None:
    """Tokens per transformer slice: unsliced where memory is plentiful, else 2^17 tokens, which bounds the
    largest intermediate (the first level's GEGLU, 2560 features) to about 0.7 GB in half precision."""
    return None if free_bytes > 40 * 1024**3 else 1 << 17
