"""svd generate --gpus 2: the two halves of guidance in two processes. Under torchrun with gloo on this CPU, the
two processes write the very frames one process writes; what cannot work is refused in one line."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

SMALL = ["--preset", "demo", "--frames", "4", "--steps", "5", "--seed", "3", "--format", "png", "--no-watermark",
         "--quiet", "--device", "cpu"]


def svd(*args, launcher=(), env=None):
    return subprocess.run([sys.executable, *launcher, "-m", "svdcli", "generate", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_two_processes_over_gloo_write_the_frames_of_one(tmp_path):
    image = "examples/photo.jpg"
    one = svd(image, *SMALL, "--out", str(tmp_path / "one"), "--json")
    assert one.returncode == 0, one.stderr
    # what --gpus 2 launches (without its check for two CUDA devices): torchrun, two processes, gloo on the CPU
    two = svd(image, *SMALL, "--out", str(tmp_path / "two"), "--json",
              launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"))
    assert two.returncode == 0, two.stderr
    assert len(two.stdout.splitlines()) == 1  # the second process writes and says nothing
    assert np.array_equal(frames(tmp_path / "one"), frames(tmp_path / "two")) and len(frames(tmp_path / "one")) == 4
    meta = json.loads((tmp_path / "two.json").read_text())
    assert meta["guidance_split"] is True and json.loads(one.stdout)["unet_calls"] == meta["unet_calls"] == 2 * 5
    assert json.loads(one.stdout)["flops"] == meta["flops"]


def test_gpus_that_cannot_split_guidance_are_refused_in_one_line(tmp_path):
    image = "examples/photo.jpg"
    for flags, message in [(["--gpus", "2"], "--gpus 2 needs two CUDA devices; this machine has 0"),
                           (["--gpus", "3"], "--gpus 3: 1, or 2"),
                           (["--gpus", "2", "--cfg-max", "1"], "--gpus 2 splits guidance, and cfg 1 has none")]:
        r = svd(image, *SMALL, *flags, "--out", str(tmp_path / "x"))
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and message in r.stderr, (flags, r.stderr)
        assert not (tmp_path / "x").exists()
