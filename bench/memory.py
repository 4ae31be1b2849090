"""Peak memory and time of each offload mode × weight dtype, and how far each one's frames are from the baseline.

Full architecture with random weights (a checkpoint written by scripts/make_random_checkpoint.py). Each combination
runs in a fresh process. On a GPU: peak torch.cuda.max_memory_allocated; on the CPU: peak RSS (offload modes
change nothing there and are skipped).

    python bench/memory.py /tmp/svd_xt.safetensors --size 128x128 --frames 3 --steps 2            # CPU, reduced
    python bench/memory.py /tmp/svd_xt.safetensors --size 1024x576 --frames 25 --steps 25 --dtype bf16   # GPU
"""

import argparse
import json
import math
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from svdcli.loader import load
from svdcli.pipeline import SamplingSettings, VideoPipeline
from svdcli.runtime import DTYPES
a = json.loads(sys.argv[1])
dev = torch.device(a["device"])
weights_dtype = None if a["weights_dtype"] == a["dtype"] else a["weights_dtype"]
t0 = time.perf_counter()
model = load(a["weights"], device=dev if a["offload"] == "none" else "cpu", dtype=DTYPES[a["dtype"]],
             weights_dtype=weights_dtype)
load_s = time.perf_counter() - t0
pipe = VideoPipeline(model, dev, DTYPES[a["dtype"]], offload=a["offload"], decode_overlap=0)
w, h = a["width"], a["height"]
g = torch.Generator().manual_seed(0)
image = torch.rand(1, 3, h, w, generator=g) * 2 - 1
s = SamplingSettings(frames=a["frames"], steps=a["steps"], decode_chunk=a["frames"], cfg_min=1.5, cfg_max=3.0)
marks = {}
def progress(stage, done, total):
    marks.setdefault(stage, []).append((done, time.perf_counter()))
if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t1 = time.perf_counter()
frames = pipe.generate(image, s, seed=1, progress=progress).frames
if dev.type == "cuda":
    torch.cuda.synchronize()
clip_s = time.perf_counter() - t1
steps = [t for d, t in marks["sample"]]
step_s = (steps[-1] - steps[0]) / max(1, len(steps) - 1) if len(steps) > 1 else steps[0] - t1
peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
np.save(a["out"], frames.numpy())
print(json.dumps({"peak": peak, "load_s": load_s, "step_s": step_s, "clip_s": clip_s}))
"""


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dtype", default=None, help="compute dtype (default: bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--weights-dtypes", nargs="+", default=["fp32", "fp16", "bf16", "fp8", "int8"])
    ap.add_argument("--offloads", nargs="+", default=["none", "model", "sequential"])
    args = ap.parse_args()
    import numpy as np
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if device == "cuda" else "fp32")
    offloads = args.offloads if device == "cuda" else ["none"]
    w, h = (int(v) for v in args.size.split("x"))
    print(f"device {device}, compute {dtype}, {args.frames} frames at {w}x{h}, {args.steps} steps (2x batch for "
          "guidance)")
    print(f"{'offload':11s} {'weights':8s} {'peak GB':>8s} {'load s':>7s} {'s/step':>7s} {'clip s':>7s} "
          f"{'PSNR vs base':>13s}")
    base = None
    for offload in offloads:
        for wd in args.weights_dtypes:
            out = f"/tmp/svd_bench_{offload}_{wd}.npy"
            spec = {"weights": args.weights, "device": device, "dtype": dtype, "weights_dtype": wd,
                    "offload": offload, "width": w, "height": h, "frames": args.frames, "steps": args.steps,
                    "out": out}
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
            if r.returncode:
                print(f"{offload:11s} {wd:8s} failed: {r.stderr.strip().splitlines()[-1]}")
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            frames = np.load(out)
            if base is None:
                base = frames
            print(f"{offload:11s} {wd:8s} {m['peak'] / 1e9:8.2f} {m['load_s']:7.1f} {m['step_s']:7.2f} "
                  f"{m['clip_s']:7.1f} {psnr(frames, base):13.1f}")


if __name__ == "__main__":
    main()
