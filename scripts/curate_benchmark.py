"""The clip-curation benchmark (issue 38): svdcli/demo/curate_benchmark.py's cases, encoded into --out (files
already there are reused while their recipe is unchanged), scored with the current motion.find_cuts.

    python scripts/curate_benchmark.py [--count 240] [--seed 0] [--images DIR] [--out out/curate-benchmark]
        [--subset N] [--json FILE]

--subset N: the set's first N cases, a quick run on the full run's files (the case types are interleaved so that
every prefix of the set holds them in about their shares). A bar with nothing to measure in the run fails.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from svdcli.media.video_io import FRAME_SUFFIXES
from svdcli.demo.curate_benchmark import benchmark_cases, encode_case, evaluate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=Path, help="a folder of images to use as scenes (about half the shots)")
    ap.add_argument("--out", type=Path, default=Path("out/curate-benchmark"))
    ap.add_argument("--subset", type=int, default=0, help="only the first N cases")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    t0 = time.perf_counter()
    images = sorted(p for p in a.images.iterdir() if p.suffix.lower() in FRAME_SUFFIXES) if a.images else None
    cases = benchmark_cases(a.count, a.seed, images)
    cases = cases[:a.subset] if a.subset > 0 else cases
    for i, case in enumerate(cases):
        print(f"\rencoding {i + 1}/{len(cases)} {case.id}  ", end="", file=sys.stderr, flush=True)
        encode_case(case, a.out)
    t1 = time.perf_counter()
    report = evaluate(cases, folder=a.out, on_case=lambda c, i, n: print(
        f"\rdetecting {i + 1}/{n} {c.id}  ", end="", file=sys.stderr, flush=True))
    t2 = time.perf_counter()
    print(file=sys.stderr)
    print(report.table())
    print("\nBars:")
    for name, ok in report.bars().items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"\nFailures ({len(report.failures)}):")
    for line in report.failures:
        print(f"  {line}")
    s = {k: report.seconds.get(k, 0.0) for k in ("decode", "detect", "label")}
    print(f"\n{len(cases)} cases: render+encode {t1 - t0:.1f} s, evaluate {t2 - t1:.1f} s (decode {s['decode']:.1f}, "
          f"detect {s['detect']:.1f}, label {s['label']:.1f}), wall {t2 - t0:.1f} s")
    if a.json:
        a.json.write_text(json.dumps(report.to_json(), indent=1))


if __name__ == "__main__":
    main()
