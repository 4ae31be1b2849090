"""Random weights for tests, benchmarks and full-size checks without the real checkpoints.

Every tensor gets fresh values, including those the reference zero-initialises (proj_out, mix factors): a parity
test on zeros would prove nothing. Matrices and convolutions are drawn N(0, 1/fan_in) so activations keep their
scale through the 1.5 B-parameter U-Net; a flat small std would give grey frames.
"""

import math

import torch
from torch import nn


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """A float32 value for the parameter `name` (its path in its module) of this shape, drawn from generator."""
    leaf = name.rsplit(".", 1)[-1]
    draw = torch.randn(shape, generator=generator, device=device)
    if name.endswith("proj") and len(shape) == 2 and "." not in name:  # open_clip's proj is stored (in, out)
        return draw / math.sqrt(shape[0])
    if len(shape) >= 2:
        return draw / math.sqrt(math.prod(shape[1:]))
    if leaf == "weight":  # 1-D weights are norm scales
        return 1 + 0.1 * draw
    return 0.1 * draw  # biases, mix factors, class embedding


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for a whole state dict, drawn in the sorted order of the names: the same weights for any module
    with these names, whatever order it defines them in (the reference fixtures' modules and ours)."""
    g = torch.Generator().manual_seed(seed)
    return {name: random_tensor(name, shapes[name], g) for name in sorted(shapes)}


@torch.no_grad()
def random_init(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        p.copy_(random_tensor(name, tuple(p.shape), g).to(p.dtype))
    return module
