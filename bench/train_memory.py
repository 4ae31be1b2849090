"""Peak memory and time of one `svd train-lora` optimizer step on the full-size SVD U-Net.

Only the U-Net is on the device during training (latents and CLIP embeddings are cached), so this builds the
full-size U-Net with random weights (or loads it from a checkpoint), adds the LoRA layers the trainer adds, and
times train steps of the trainer's objective on random latents. Each configuration runs in a fresh process.
GPU: peak torch.cuda.max_memory_allocated; CPU: peak RSS.

    python bench/train_memory.py --size 1024x576 --frames 14 --rank 16 --dtype bf16          # the 24 GB target
    python bench/train_memory.py --size 128x128 --frames 14 --dtype fp32 --device cpu        # CPU, reduced
    python bench/train_memory.py ... --no-checkpointing                                       # without recompute
    python bench/train_memory.py --size 1024x576 --frames 14 --estimate                       # no GPU needed
    python bench/train_memory.py --model demo --size 192x128 --dtype fp32 --device cpu --targets locon --merge off

--model demo times the shipped demo model's U-Net instead (the demo recipe's LoRA stage); --merge on/off applies
every LoRA pair merged into its layer's weight or factored beside it, instead of each in its cheaper form.

--estimate builds the U-Net on the meta device (no memory, about a second) and adds up, in the compute dtype, the
tensors autograd saves: those kept across the whole forward with layer checkpointing, and the largest set one layer
holds while it is recomputed during backward. Attention matrices are left out of the count, because fused
attention on GPUs (flash / memory-efficient SDPA) keeps only q, k, v, the output and one log-sum-exp per row.
Temporaries that live within a single op (and the activation gradients in flight) are not counted, so the figure
is a floor to check against a real measurement, not a substitute for one.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from svdcli.models.init import random_init
from svdcli.models.unet import VideoUNet
from svdcli.runtime.devices import DTYPES
from svdcli.training.settings import TrainSettings
from svdcli.training.trainer import add_lora, edm_loss, make_optimizer
from svdcli.checkpoints.architectures import ARCHITECTURES
a = json.loads(sys.argv[1])
dev, dtype = torch.device(a["device"]), DTYPES[a["dtype"]]
cfg = ARCHITECTURES["svd"].unet
if a["model"] == "demo" or a["weights"]:
    from pathlib import Path
    from svdcli.checkpoints.presets import load_preset
    from svdcli.checkpoints.weights import resolve_weights
    from svdcli.inference.generation import EngineSettings, open_engine
    preset = load_preset("demo") if a["model"] == "demo" else None
    weights = resolve_weights(None, preset) if preset else Path(a["weights"])
    loaded = open_engine(preset, weights, EngineSettings(str(dev), a["dtype"], attention_slice="none")).pipe.model
    unet, cfg = loaded.unet, loaded.architecture.unet
else:
    with torch.device("meta"):
        unet = VideoUNet(cfg)
    unet = random_init(unet.to_empty(device="cpu"), 0).to(dev, dtype)
unet.checkpointing = a["checkpointing"]
merge = {"auto": None, "on": True, "off": False}[a["merge"]]
layers = add_lora(unet, a["targets"], a["rank"], float(a["rank"]), 0, merge)
params = [p for p in unet.parameters() if p.requires_grad]
opt, kind = make_optimizer(params, TrainSettings(optimizer=a["optimizer"]), dev)
t, h, w = a["frames"], a["height"] // 8, a["width"] // 8
g = torch.Generator().manual_seed(0)
x0 = torch.randn(t, 4, h, w, generator=g).to(dev)
noise = torch.randn(t, 4, h, w, generator=g).to(dev)
cond = torch.randn(1, 4, h, w, generator=g).to(dev)
clip = torch.randn(1, cfg.context_dim, generator=g).to(dev)
y = torch.randn(t, cfg.adm_in_channels, generator=g).to(dev)
auto = torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else torch.autocast(dev.type, enabled=False)
weights = sum(p.numel() * p.element_size() for p in unet.parameters())
if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
times = []
for i in range(a["steps"]):
    t0 = time.perf_counter()
    with auto:
        loss = edm_loss(unet, x0, torch.tensor([1.0], device=dev), noise, cond, clip, y, t, dtype)
    loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "weights": weights, "lora_params": sum(p.numel() for p in params),
                  "merged": sum(p.merged for p in layers.values()), "pairs": len(layers),
                  "step_s": min(times), "first_step_s": times[0], "optimizer": kind, "loss": loss.item()}))
"""


ESTIMATE = r"""
import json, sys
import torch
from svdcli.models.unet import SpatialVideoTransformer, VideoResBlock, VideoUNet
from svdcli.runtime.devices import DTYPES
from svdcli.training.trainer import add_lora, edm_loss
from svdcli.checkpoints.architectures import ARCHITECTURES
a = json.loads(sys.argv[1])
dtype = DTYPES[a["dtype"]]
cfg = ARCHITECTURES["svd"].unet
with torch.device("meta"):
    unet = VideoUNet(cfg).to(dtype)
add_lora(unet, a["targets"], a["rank"], float(a["rank"]), 0)
t, h, w = a["frames"], a["height"] // 8, a["width"] // 8
token_counts = {(h >> k) * (w >> k) for k in range(len(cfg.channel_mult))}

def saved(fn):
    seen = {}
    def pack(x):
        attention_matrix = x.dim() >= 2 and x.shape[-1] == x.shape[-2] and x.shape[-1] in token_counts
        if not isinstance(x, torch.nn.Parameter) and not attention_matrix:
            seen[id(x)] = x.numel() * x.element_size()
        return x
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn()
    return sum(seen.values()), out

def step():
    m = lambda *shape: torch.randn(*shape, device="meta")  # noqa: E731
    x0 = m(t, 4, h, w)
    return edm_loss(unet, x0, torch.ones(1, device="meta"), m(t, 4, h, w), m(1, 4, h, w), m(1, cfg.context_dim),
                    m(t, cfg.adm_in_channels), t, dtype)

unet.checkpointing = True
kept, _ = saved(step)
unet.checkpointing = False
per_layer = {}
for i, block in enumerate([*unet.input_blocks, unet.middle_block, *unet.output_blocks]):
    for j, layer in enumerate(block):
        if isinstance(layer, (VideoResBlock, SpatialVideoTransformer)):
            def wrapped(*args, _f=layer.forward, _name=f"block {i} layer {j} ({type(layer).__name__})", **kw):
                b, out = saved(lambda: _f(*args, **kw))
                per_layer[_name] = max(per_layer.get(_name, 0), b)
                return out
            layer.forward = wrapped
saved(step)
largest = max(per_layer, key=per_layer.get)
weights = sum(p.numel() * p.element_size() for p in unet.parameters())
lora = sum(p.numel() for p in unet.parameters() if p.requires_grad)
print(json.dumps({"weights": weights, "kept": kept, "largest_layer": per_layer[largest], "largest_name": largest,
                  "lora_params": lora}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="A checkpoint; default: random full-size weights.")
    ap.add_argument("--model", choices=("svd", "demo"), default="svd", help="demo: the shipped demo model's U-Net.")
    ap.add_argument("--merge", choices=("auto", "on", "off"), default="auto",
                    help="LoRA pairs merged into the weights (on), factored (off), or each in its cheaper form.")
    ap.add_argument("--size", default="1024x576")
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--targets", default="temporal")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--optimizer", default="auto")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--estimate", action="store_true", help="Count saved tensors on the meta device instead.")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    args = {"weights": a.weights, "width": w, "height": h, "frames": a.frames, "rank": a.rank, "targets": a.targets,
            "dtype": a.dtype, "device": a.device, "optimizer": a.optimizer, "steps": a.steps,
            "checkpointing": not a.no_checkpointing, "model": a.model, "merge": a.merge}
    r = subprocess.run([sys.executable, "-c", ESTIMATE if a.estimate else CHILD, json.dumps(args)],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    gb = 1024 ** 3
    if a.estimate:
        # LoRA weights, their gradients and two AdamW moments, all float32.
        lora = out["lora_params"] * 4 * 4
        floor = out["weights"] + out["kept"] + out["largest_layer"] + lora
        print(f"estimate {a.dtype} {w}x{h}x{a.frames} rank {a.rank} {a.targets}, layer checkpointing: U-Net "
              f"weights {out['weights'] / gb:.2f} GiB + kept activations {out['kept'] / gb:.2f} GiB + largest "
              f"recompute {out['largest_layer'] / gb:.2f} GiB ({out['largest_name']}) + LoRA and AdamW "
              f"{lora / gb:.3f} GiB = {floor / gb:.2f} GiB before temporaries")
        return
    print(f"{a.model} {a.device} {a.dtype} {w}x{h}x{a.frames} rank {a.rank} {a.targets} (merge {a.merge}: "
          f"{out['merged']} of {out['pairs']} pairs merged) checkpointing "
          f"{'off' if a.no_checkpointing else 'on'} {out['optimizer']}: peak {out['peak'] / gb:.2f} GiB "
          f"(U-Net weights {out['weights'] / gb:.2f} GiB, {out['lora_params'] / 1e6:.2f} M LoRA parameters), "
          f"{out['step_s']:.2f} s/step (first {out['first_step_s']:.2f} s), loss {out['loss']:.3f}")


if __name__ == "__main__":
    main()
