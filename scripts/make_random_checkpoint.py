"""Write a full-size random-weight checkpoint in the official single-file layout, from the official key lists.

For checks that need the real sizes without the real weights (load memory, full-size sampling time). Weights are
drawn N(0, 1/fan_in) (norm scales near 1, small biases) so activations keep their scale through the network. The file
is streamed tensor by tensor, so writing it needs little memory.

    python scripts/make_random_checkpoint.py --keys tests/fixtures/svd.json --dtype fp16 --out /tmp/svd_xt.safetensors
"""

import argparse
import json
import math
import os
import struct
import time

import torch

NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def random_tensor(name: str, shape: list[int], g: torch.Generator) -> torch.Tensor:
    if not shape:
        return torch.randn((), generator=g) * 0.1
    if name.endswith(".proj") and len(shape) == 2:  # open_clip's proj is stored (in, out)
        return torch.randn(shape, generator=g) / math.sqrt(shape[0])
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if name.endswith(".weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", required=True, help="a checkpoint-keys JSON (name -> shape)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    keys = json.load(open(args.keys))
    size = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for name, shape in keys.items():
        n = math.prod(shape) * size
        header[name] = {"dtype": NAMES[dtype], "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    tmp = args.out + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in keys.items():
            f.write(random_tensor(name, shape, g).to(dtype).reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(keys)} tensors, {offset / 1e9:.2f} GB of tensor data, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
