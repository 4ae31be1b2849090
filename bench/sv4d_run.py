"""Time and memory of SV4D's sampling on a device, with random full-size weights drawn there (no download).

The model is assembled by open_engine as `svd 4d` assembles it (offload mode, weights dtype, attention slice), and
`four_d.sample_4d` runs on a random clip (and, for sv4d, a random first-frame orbit: SV3D's own cost is `svd bench
--preset sv3d-u`'s). Prints one JSON line: seconds, U-Net calls, peak allocated and reserved bytes (CUDA).

    python bench/sv4d_run.py --preset sv4d2-8views --steps 2                     # 576x576 on cuda
    python bench/sv4d_run.py --preset sv4d --offload sequential --weights-dtype fp8
    python bench/sv4d_run.py --preset sv4d2 --size 64 --steps 1 --device cpu     # a check of the script, minutes
"""

import argparse
import json
import time

import torch

from svdcli.checkpoints.presets import load_preset
from svdcli.inference.four_d import FRAMES, FourDSettings, sample_4d
from svdcli.inference.generation import EngineSettings, open_engine
from svdcli.runtime.devices import synchronize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="sv4d2-8views")
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--offload", default="none")
    ap.add_argument("--weights-dtype", default=None)
    ap.add_argument("--attention-slice", default="auto")
    args = ap.parse_args()
    preset = load_preset(args.preset)
    started = time.perf_counter()
    engine = open_engine(preset, None, EngineSettings(device=args.device, dtype=args.dtype, offload=args.offload,
                                                      weights_dtype=args.weights_dtype,
                                                      attention_slice=args.attention_slice))
    loaded = time.perf_counter() - started
    pipe = engine.pipe
    settings = FourDSettings.for_model(preset.architecture, args.steps, preset.cfg_min, preset.cfg_max,
                                       preset.guidance)
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(FRAMES, 3, args.size, args.size, generator=g) * 2 - 1
    orbit = torch.rand(settings.layout.views + 1, 3, args.size, args.size, generator=g) * 2 - 1 \
        if preset.architecture == "sv4d" else None
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pipe.device)
    calls = []
    started = time.perf_counter()
    grid = sample_4d(pipe, clip, settings, seed=0, orbit=orbit,
                     progress=lambda phase, done, total: calls.append(done) if phase == "sample" and done else None)
    synchronize(pipe.device)
    seconds = time.perf_counter() - started
    result = {"preset": preset.name, "size": args.size, "steps": args.steps, **engine.info,
              "unet_calls": len(calls), "load_seconds": round(loaded, 1), "seconds": round(seconds, 1),
              "seconds_per_step_with_coding": round(seconds / max(len(calls), 1), 2), "views": list(grid.shape[:2])}
    if cuda:
        result.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated(pipe.device) / 1024**3, 2),
                      peak_reserved_gib=round(torch.cuda.max_memory_reserved(pipe.device) / 1024**3, 2),
                      device_name=torch.cuda.get_device_name(pipe.device))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
