"""Print the measured parity errors of tests/test_parity.py (the figures in docs/architecture.md).

    python -m tests.parity_report
"""

import tempfile
from pathlib import Path

from . import test_parity as p

with tempfile.TemporaryDirectory() as tmp:
    svd = p.diffusers_copy("svd", 1, Path(tmp) / "svd")
    img = p.diffusers_copy("svd_image_decoder", 2, Path(tmp) / "img")
    rows = [(f"U-Net T={t} latent {h}x{w}", p.unet_error(*svd, t, h, w)) for t, h, w in p.UNET_CASES]
    for t in (1, 3, 5):
        dec, enc = p.temporal_vae_errors(*svd, t)
        rows += [(f"temporal decoder T={t}", dec), (f"encoder (posterior mean) T={t} batch", enc)]
    rows += [("frame-wise decoder + post_quant_conv", p.frame_wise_decoder_error(*img)),
             ("image tower", p.image_encoder_error(*svd))]
    rows += [(f"CLIP resize {h}x{w} (max abs)", p.resize_error((h, w))) for h, w in p.RESIZE_CASES]
for name, err in rows:
    print(f"{name:45s} {err:.2e}")
