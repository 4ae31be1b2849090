"""The demo model's checks (issue 7) in full: svdcli/demo/checks.py, with the seed counts of the issue.

    python scripts/eval_demo.py [--weights svdcli/demo/svd-demo.safetensors] [--seeds 20] [--json out.json]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from svdcli.demo.checks import DemoChecker, monotonic, share


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--motion-seeds", type=int, default=10)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    t0 = time.perf_counter()
    c = DemoChecker(a.weights, a.images)
    autoencoder = c.autoencoder_fidelity()
    fidelity = c.fidelity()
    motion = c.motion(a.motion_seeds)
    base = c.cameras(a.seeds)
    c.use_zoom_lora()
    zoom = c.cameras(a.seeds)
    result = {
        "weights": str(c.weights), "psnr_first_frame": fidelity, "psnr_natural_photo": fidelity[0],
        "psnr_min": min(fidelity), "psnr_mean": float(np.mean(fidelity)),
        "autoencoder_psnr": autoencoder, "autoencoder_psnr_mean": float(np.mean(autoencoder)),
        "motion_by_bucket": motion, "motion_monotonic": monotonic(motion),
        "base_labels": base, "base_pan_tilt_static": share(base, ("pan", "tilt", "static")),
        "base_zoom": share(base, ("zoom",)), "lora_labels": zoom, "lora_zoom": share(zoom, ("zoom",)),
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("labels")}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
