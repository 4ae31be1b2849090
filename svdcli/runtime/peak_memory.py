"""Peak bytes of the tensors a computation keeps alive, on any device, the meta device included.

A CUDA run reads its peak from the caching allocator; a CPU run has no such counter, and a run on the meta device
(shapes only, no memory, no time) allocates nothing at all. `TensorBytes` counts instead: every tensor an operation
creates inside the block adds its storage's bytes until the last tensor using that storage is freed. That is what
the CUDA allocator reports as allocated, less its 512-byte rounding and the kernels' workspaces; measured on the
meta device it gives the full-size decoder's peak in a second on a CPU (bench/decode_memory.py).

Attention is counted as the fused kernels of a GPU run it (the output only): on the meta device
scaled_dot_product_attention would otherwise fall back to the math path, which materialises the attention matrix.
"""

import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


class _FusedAttention(TorchFunctionMode):
    """scaled_dot_product_attention on meta tensors: an output of the right shape, as a fused kernel writes it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args[0].device.type == "meta":
            q, v = args[0], args[2]
            return q.new_empty((*q.shape[:-1], v.shape[-1]))
        return func(*args, **kwargs)


class TensorBytes(TorchDispatchMode):
    """Context manager counting the bytes of live tensors created inside it: `.peak`, `.current` (bytes), and
    `mark()` to start a new peak (per phase). Tensors that existed before (weights, inputs) are not counted, nor are
    views of them."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._refs: dict[int, int] = {}  # storage -> live tensors using it
        self._sizes: dict[int, int] = {}
        self._attention = _FusedAttention()

    def mark(self) -> None:
        self.peak = self.current

    def __enter__(self):
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._attention.__exit__(*exc)

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if not self._refs[key]:
            del self._refs[key]
            self.current -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in _tensors(args) if _has_storage(t)}
        for t in _tensors(out):
            if not _has_storage(t):
                continue
            key = t.untyped_storage()._cdata
            if key not in self._refs:
                if key in inputs:
                    continue  # a view of a tensor from outside the block
                self._refs[key] = 0
                self._sizes[key] = t.untyped_storage().nbytes()
                self.current += self._sizes[key]
                self.peak = max(self.peak, self.current)
            self._refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def _has_storage(t: torch.Tensor) -> bool:
    try:
        t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return False
    return True


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
