"""Random weights for tests, benchmarks and full-size checks without the real checkpoints.

Every tensor gets fresh values, including those the reference zero-initialises (proj_out, mix factors): a parity
test on zeros would prove nothing. Matrices and convolutions are drawn N(0, 1/fan_in) so activations keep their
scale through the 1.5 B-parameter U-Net; a flat small std would give grey frames.
"""

import math

import torch
from torch import nn


@torch.no_grad()
def random_init(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("proj") and p.dim() == 2 and "." not in name:  # open_clip's proj is stored (in, out)
            std = 1 / math.sqrt(p.shape[0])
            value = torch.randn(p.shape, generator=g) * std
        elif p.dim() >= 2:
            value = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
        elif leaf == "weight":  # 1-D weights are norm scales
            value = 1 + 0.1 * torch.randn(p.shape, generator=g)
        else:  # biases, mix factors, class embedding
            value = 0.1 * torch.randn(p.shape, generator=g)
        p.copy_(value.to(p.dtype))
    return module
