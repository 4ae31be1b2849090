"""Full-size structure: our modules, built on the meta device, have exactly the official names and shapes."""

import json
from pathlib import Path

import pytest
import torch

from svdcli.checkpoints.loader import meta_modules, infer_clip_config, infer_unet_config, infer_vae_config
from svdcli.checkpoints.architectures import ARCHITECTURES

FIXTURES = Path(__file__).parent / "fixtures"


def single_file_names(arch) -> dict[str, list[int]]:
    out = {}
    for comp, module in meta_modules(arch).items():
        for k, v in module.state_dict().items():
            out[arch.single_file_key(comp, k)] = list(v.shape)
    return out


@pytest.mark.parametrize("name", ["svd", "svd_image_decoder", "sv3d_u", "sv3d_p"])
def test_full_size_names_and_shapes_equal_the_official_files(name):
    arch = ARCHITECTURES[name]
    official = json.loads((FIXTURES / f"{name}.json").read_text())
    ours = single_file_names(arch)
    skipped = {k for k in official if k.startswith(arch.skipped_prefixes())}
    assert set(ours) == set(official) - skipped  # nothing missing, nothing extra
    assert {k: v for k, v in ours.items() if official[k] != v} == {}  # no shape differs
    # The documented skips are exactly the known-unused tensors (§1.2: text leftovers, conditioner decoder copy,
    # unused first-stage encoder and quant convs).
    expected_skips = {"svd": 6 + 140 + 106, "svd_image_decoder": 6 + 140 + 106 + 2, "sv3d_u": 6 + 140,
                      "sv3d_p": 6 + 140}[name]
    assert len(skipped) == expected_skips


@pytest.mark.parametrize("name", ["svd", "svd_image_decoder", "sv3d_u", "sv3d_p"])
def test_configs_inferred_from_official_shapes_are_the_official_configs(name):
    arch = ARCHITECTURES[name]
    official = {k: tuple(v) for k, v in json.loads((FIXTURES / f"{name}.json").read_text()).items()}
    pre = arch.single_file_prefixes()

    def sub(comp):
        return {o + k[len(f):]: s for o, f in pre[comp].items() for k, s in official.items() if k.startswith(f)}

    unet, vae, clip = sub("unet"), sub("vae"), sub("image_encoder")
    assert infer_unet_config(unet.get) == arch.unet
    assert infer_vae_config(vae.get, vae.keys()) == arch.vae
    assert infer_clip_config(clip.get, clip.keys(), None) == arch.clip


def test_parameter_counts_match_the_reference():
    counts = {c: sum(p.numel() for p in m.parameters()) for c, m in meta_modules(ARCHITECTURES["svd"]).items()}
    assert counts["unet"] == 1_524_623_082
    assert counts["image_encoder"] == 632_076_800
    assert counts["vae"] == 34_163_592 + 72 + 63_579_183
    assert sum(p.numel() for p in meta_modules(ARCHITECTURES["sv3d_p"])["unet"].parameters()) == 1_525_278_442
    assert all(p.device.type == "meta" for p in meta_modules(ARCHITECTURES["sv3d_u"])["unet"].parameters())
    assert torch.tensor(0).device.type == "cpu"  # building on meta left the default device alone
