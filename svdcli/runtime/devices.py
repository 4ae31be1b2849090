"""The one place where devices and dtypes are decided."""

import os

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(name: str | None = None) -> torch.device:
    """"auto"/None: the first CUDA device if there is one, else Apple's MPS, else the CPU.

    Under torchrun (LOCAL_RANK set) "auto" and "cuda" mean this process's own GPU, cuda:LOCAL_RANK; an explicit
    index is kept. A CUDA device with an index also becomes the current device, so that work placed on "the" GPU
    (streams, the allocator's cache, bitsandbytes' kernels) lands on it and not on GPU 0."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            name = "cuda"
        else:
            return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA device is available")
    local_rank = os.environ.get("LOCAL_RANK")
    if device.index is None and local_rank is not None:
        device = torch.device("cuda", int(local_rank))
    if device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(device)
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute dtype. Default: bf16 on GPUs of compute capability 8.0 (Ampere) and later, fp16 on older ones
    and on other accelerators; fp32 on the CPU, where half-precision compute is emulated and slow (keep half
    precision for storage there).

    The capability is the chosen device's own. torch.cuda.is_bf16_supported() would not do: it looks at the current
    device, and counts bf16 that runs emulated, where scaled_dot_product_attention has neither the flash nor the
    memory-efficient kernel and its math path materialises every attention matrix (about 12 GB at SVD-XT's size)."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name!r}: choose one of fp32, fp16, bf16") from None


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on device: the CUDA allocator's view, within the process's memory fraction
    (torch.cuda.set_per_process_memory_fraction, which `svd bench --vram` uses to stand in for a smaller card);
    else the system's available memory."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        available = free + torch.cuda.memory_reserved(device) - allocated
        allowed = int(torch.cuda.get_per_process_memory_fraction(device) * total) - allocated
        return max(0, min(available, allowed))
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 * 1024**3  # unknown: assume a modest machine


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read afterwards times the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation that failed: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def attention_slice_for(free_bytes: int) -> int | None:
    """Tokens per transformer slice: unsliced where memory is plentiful, else 2^17 tokens, which bounds the
    largest intermediate (the first level's GEGLU, 2560 features) to about 0.7 GB in half precision."""
    return None if free_bytes > 40 * 1024**3 else 1 << 17
