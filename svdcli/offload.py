"""Keeping weights off the accelerator until they are needed.

  none        every component on the accelerator throughout.
  model       each component (image encoder, VAE encoder, U-Net, VAE decoder) is moved to the accelerator for its
              phase only; the others wait in CPU memory.
  sequential  as model for the small components; the U-Net's blocks live in pinned CPU memory and are copied to the
              accelerator one block ahead of use on a separate CUDA stream, so copies overlap compute. Peak
              accelerator memory is the activations plus two blocks.
Without an accelerator the modes have nothing to save and change nothing.
"""

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

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


class SequentialOffload:
    """Streams a module's blocks to the device one block ahead of use.

    blocks: the module's children in the order they run (every forward runs them all, in this order). Each block's
    tensors are kept in (pinned) home memory; block k+1 is copied while block k computes and block k's device copies
    are dropped when it finishes. On CUDA the copies run on their own stream and compute waits on an event."""

    def __init__(self, blocks: list[nn.Module], device: torch.device, home: torch.device = torch.device("cpu")):
        self.blocks, self.device, self.home = blocks, device, home
        cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.ready: dict[int, torch.cuda.Event | None] = {}
        self.home_copies = []
        for block in blocks:
            copies = []
            for owner, kind, name in _tensors(block):
                t = getattr(owner, kind)[name].to(home)
                if cuda:
                    t = t.pin_memory()
                getattr(owner, kind)[name] = t if kind == "_buffers" else nn.Parameter(t, requires_grad=False)
                copies.append((owner, kind, name, t))
            self.home_copies.append(copies)
        self.handles = []
        for k, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(lambda m, a, k=k: self._before(k)))
            self.handles.append(block.register_forward_hook(lambda m, a, o, k=k: self._after(k)))
        self.uploads = 0  # blocks copied so far (for tests and benchmarks)

    def _upload(self, k: int) -> None:
        if k in self.ready:
            return
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            for owner, kind, name, t in self.home_copies[k]:
                d = t.to(self.device, non_blocking=True)
                getattr(owner, kind)[name] = d if kind == "_buffers" else nn.Parameter(d, requires_grad=False)
            self.ready[k] = torch.cuda.Event() if self.stream is not None else None
            if self.ready[k] is not None:
                self.ready[k].record(self.stream)
        self.uploads += 1

    def _before(self, k: int) -> None:
        self._upload(k)
        event = self.ready[k]
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            for owner, kind, name, _ in self.home_copies[k]:  # memory made on the copy stream, used on this one
                getattr(owner, kind)[name].record_stream(torch.cuda.current_stream(self.device))
        self._upload((k + 1) % len(self.blocks))  # the next block (wrapping to the next step's first)

    def _after(self, k: int) -> None:
        for owner, kind, name, t in self.home_copies[k]:
            getattr(owner, kind)[name] = t if kind == "_buffers" else nn.Parameter(t, requires_grad=False)
        self.ready.pop(k, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The U-Net's children in the order its forward runs them."""
    return [unet.time_embed, unet.label_emb, *unet.input_blocks, unet.middle_block, *unet.output_blocks, unet.out]
