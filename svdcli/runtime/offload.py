"""Keeping weights off the accelerator until they are needed.

  none        every component on the accelerator throughout.
  model       each component (image encoder, VAE encoder, U-Net, VAE decoder) is moved to the accelerator for its
              phase only; the others wait in CPU memory.
  sequential  as model for the small components; each of the U-Net's blocks lives in one flat page-locked CPU
              buffer and is copied to the accelerator one block ahead of use on a separate CUDA stream, so copies
              overlap compute. Peak accelerator memory is the activations plus two blocks.
Without an accelerator the modes have nothing to save and change nothing.
"""

import math
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

MODES = ("none", "model", "sequential")


def _tensors(module: nn.Module):
    """(owner, kind, name) of every parameter and buffer below module."""
    for m in module.modules():
        for name in m._parameters:
            if m._parameters[name] is not None:
                yield m, "_parameters", name
        for name in m._buffers:
            if m._buffers[name] is not None:
                yield m, "_buffers", name


class ModelOffload:
    """Moves whole components to the accelerator for their phase and back afterwards."""

    def __init__(self, device: torch.device, home: torch.device = torch.device("cpu")):
        self.device, self.home = device, home
        self.resident: set[nn.Module] = set()  # components that stay on the device (a U-Net being trained)

    @contextmanager
    def phase(self, *modules: nn.Module):
        modules = [m for m in modules if m not in self.resident]
        for m in modules:
            m.to(self.device)
        try:
            yield
        finally:
            for m in modules:
                m.to(self.home)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


ALIGN = 64  # bytes; every tensor of a block starts on this boundary of the block's flat buffer


def page_lock(buffer: Tensor) -> Tensor:
    """Pin a CPU buffer where it lies (cudaHostRegister), so that copies from it run asynchronously at full speed.

    Not pin_memory(): it copies into the CUDA caching host allocator, which rounds every allocation up to a power of
    two; pinned per tensor, a 2.8 GiB U-Net took about 3.7 GiB of page-locked memory. Registered in place, a block
    costs its own bytes. Where registering is not possible, pin_memory() is the fallback."""
    try:
        cudart = torch.cuda.cudart()
        torch.cuda.check_error(cudart.cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0))
    except (RuntimeError, AttributeError):
        return buffer.pin_memory()
    return buffer


def page_unlock(buffer: Tensor) -> None:
    try:
        torch.cuda.check_error(torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr()))
    except (RuntimeError, AttributeError):
        pass  # a pin_memory() copy, freed with the tensor


def _view(buffer: Tensor, offset: int, dtype: torch.dtype, shape: torch.Size) -> Tensor:
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return buffer[offset:offset + nbytes].view(dtype).view(shape)


def _put(owner: nn.Module, kind: str, name: str, value: Tensor) -> None:
    """Point a parameter (kept as the same Parameter object, so nothing that holds it goes stale and no new
    Parameter is built per call) or a buffer at `value`."""
    param = owner._parameters.get(name) if kind == "_parameters" else None
    if param is not None and torch._has_compatible_shallow_copy_type(param, value):
        param.data = value
    elif kind == "_parameters":  # CPU <-> meta (the tests' stand-in device): a tensor type .data cannot take
        owner._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[name] = value


class SequentialOffload:
    """Streams a module's blocks to the device one block ahead of use.

    blocks: the module's children in the order they run (every forward runs them all, in this order). Each block's
    tensors live in one flat buffer in home memory (page-locked when streaming to a GPU), so a block is one copy;
    block k+1 is copied while block k computes, and block k's device copy is dropped when it finishes. On CUDA the
    copies run on their own stream and compute waits on an event."""

    def __init__(self, blocks: list[nn.Module], device: torch.device, home: torch.device = torch.device("cpu"),
                 pin: bool | None = None):
        self.blocks, self.device, self.home = blocks, device, home
        cuda = device.type == "cuda"
        pin = cuda if pin is None else pin
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.ready: dict[int, torch.cuda.Event | None] = {}
        self.home_buffers: list[Tensor] = []  # one flat buffer of bytes per block
        self.layouts: list[list[tuple]] = []  # per block: (owner, kind, name, offset, dtype, shape)
        self.on_device: dict[int, Tensor] = {}  # block -> its buffer on the device, while it is there
        self.pinned = pin
        for block in blocks:
            layout, size = [], 0
            for owner, kind, name in _tensors(block):
                t = getattr(owner, kind)[name]
                layout.append((owner, kind, name, size, t.dtype, t.shape))
                size += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
            buffer = torch.empty(size, dtype=torch.uint8, device=home)
            if pin:
                buffer = page_lock(buffer)
            for owner, kind, name, offset, dtype, shape in layout:
                view = _view(buffer, offset, dtype, shape)
                view.copy_(getattr(owner, kind)[name])
                _put(owner, kind, name, view)
            self.home_buffers.append(buffer)
            self.layouts.append(layout)
        self.handles = []
        for k, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(lambda m, a, k=k: self._before(k)))
            self.handles.append(block.register_forward_hook(lambda m, a, o, k=k: self._after(k)))
        self.uploads = 0  # blocks copied so far (for tests and benchmarks)

    @property
    def pinned_bytes(self) -> int:
        return sum(b.numel() for b in self.home_buffers) if self.pinned else 0

    def _upload(self, k: int) -> None:
        if k in self.ready:
            return
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            on_device = self.home_buffers[k].to(self.device, non_blocking=True)
            for owner, kind, name, offset, dtype, shape in self.layouts[k]:
                _put(owner, kind, name, _view(on_device, offset, dtype, shape))
            self.on_device[k] = on_device
            self.ready[k] = torch.cuda.Event() if self.stream is not None else None
            if self.ready[k] is not None:
                self.ready[k].record(self.stream)
        self.uploads += 1

    def _before(self, k: int) -> None:
        self._upload(k)
        event = self.ready[k]
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            # memory made on the copy stream, used on this one: not to be recycled before this stream is done
            self.on_device[k].record_stream(torch.cuda.current_stream(self.device))
        self._upload((k + 1) % len(self.blocks))  # the next block (wrapping to the next step's first)

    def _after(self, k: int) -> None:
        for owner, kind, name, offset, dtype, shape in self.layouts[k]:
            _put(owner, kind, name, _view(self.home_buffers[k], offset, dtype, shape))
        self.on_device.pop(k, None)
        self.ready.pop(k, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        if self.pinned:
            for buffer in self.home_buffers:
                page_unlock(buffer)


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The U-Net's children in the order its forward runs them."""
    return [unet.time_embed, unet.label_emb, *unet.input_blocks, unet.middle_block, *unet.output_blocks, unet.out]
