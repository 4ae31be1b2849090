"""How the library reports progress: a callback (stage, done, total), never a print. The CLI draws it
(cli/progress.py); benchmarks time phases with it (inference/bench.py).

Stages: "load" (tensors), "encode" (0 then 1), "sample-flops" (once before sampling: done = this process's FLOPs
over all steps, total = steps), "compile" (0 then 1 around a compiled U-Net's first step), "sample-work" (before each
step's report: the FLOPs done, of all), "sample" (steps), "decode" (frames),
"decode-retry-chunk" (frames per window, frames) and "decode-retry-tiles" (tile width, height in pixels) before a
decode retried in less memory, "interpolate", "write", and the training stages "cache" and "train". A phase's end is
reported once the device has finished its work."""

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
