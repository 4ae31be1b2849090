"""Peak memory and time of loading a checkpoint on the CPU, each run in a fresh process.

    python scripts/make_random_checkpoint.py --keys tests/fixtures/svd.json --dtype fp16 --out /tmp/svd_xt.safetensors
    python bench/load.py /tmp/svd_xt.safetensors --dtype fp16
    python bench/load.py /tmp/svd_xt.safetensors --dtype fp16 --weights-dtype fp8

Peak RSS is the process's maximum resident set (ru_maxrss), which includes the Python/torch baseline (measured
separately and printed) and any touched pages of memory-mapped files.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from pathlib import Path
from svdcli.inference.generation import EngineSettings, open_engine
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
settings = EngineSettings("cpu", sys.argv[2], weights_dtype=sys.argv[3] if sys.argv[3] != "-" else None)
model = open_engine(None, Path(sys.argv[1]), settings).pipe.model
seconds = time.perf_counter() - t0
weights = sum(t.numel() * t.element_size() for m in model.components().values()
              for t in [*m.parameters(), *m.buffers()])
print(json.dumps({"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "baseline_rss": base, "loaded_bytes": weights}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="compute dtype")
    ap.add_argument("--weights-dtype", default=None, choices=["fp16", "bf16", "fp32", "fp8", "int8"],
                    help="storage of the big matrices (default: the compute dtype)")
    args = ap.parse_args()
    from svdcli.checkpoints.safetensors_io import SafetensorsFile

    f = SafetensorsFile(args.weights)
    tensor_bytes = sum(f.nbytes(k) for k in f.keys())
    out = subprocess.run([sys.executable, "-c", CHILD, args.weights, args.dtype, args.weights_dtype or "-"],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    gb = 1e9
    stored = args.weights_dtype or args.dtype
    print(f"file tensor bytes {tensor_bytes / gb:.2f} GB; loaded weights ({stored} storage, {args.dtype} compute) "
          f"{r['loaded_bytes'] / gb:.2f} GB")
    print(f"load time {r['seconds']:.1f} s; peak RSS {r['peak_rss'] / gb:.2f} GB "
          f"(= {r['peak_rss'] / tensor_bytes:.2f}x the file's tensor bytes; "
          f"python+torch baseline {r['baseline_rss'] / gb:.2f} GB)")


if __name__ == "__main__":
    main()
