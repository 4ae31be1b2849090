"""LoRA files: applied at run time, exact at scale 0, the diffusers/peft naming, and refusals."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from svdcli.checkpoints.diffusers_keys import unet_source
from svdcli.inference.lora import LoraError, LoraPair, _pair_shapes, apply_loras, lora_targets, save_lora
from svdcli.checkpoints.saving import save_single_file, write_safetensors

from .conftest import tiny_model
from .test_speed import unet_inputs


def random_pairs(unet, rank=4, seed=0, targets="temporal"):
    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for name in lora_targets(unet, targets):
        a, b = _pair_shapes(unet.get_submodule(name), rank)
        pairs[name] = (torch.randn(a, generator=g) * 0.1, torch.randn(b, generator=g) * 0.1)
    return pairs


@pytest.fixture
def model():
    return tiny_model("svd", seed=1)


def test_targets_are_the_attention_projections(model):
    targets = lora_targets(model.unet)
    transformers = sum(1 for n, _ in model.unet.named_modules() if n.endswith(".time_stack.0"))
    assert len(targets) == 6 * transformers  # attn1: to_q, to_k, to_v, to_out.0; attn2 (one token): to_v, to_out.0
    assert all(".time_stack.0.attn" in t for t in targets)
    spatial = lora_targets(model.unet, "spatial")
    assert len(spatial) == len(targets) and all(".transformer_blocks.0.attn" in t for t in spatial)
    assert sorted(lora_targets(model.unet, "all")) == sorted(targets + spatial)
    with pytest.raises(LoraError):
        lora_targets(model.unet, "everything")
    # locon: every weight layer in the blocks: the attentions, feed-forwards, res-block convolutions (3×3 spatial,
    # 3×1×1 temporal), their embedding projections, the samplers; never the no-op attn2 to_q/to_k or the stem/head.
    locon = lora_targets(model.unet, "locon")
    in_blocks = [n for n, m in model.unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d))
                 and n.startswith(("input_blocks", "middle_block", "output_blocks")) and n != "input_blocks.0.0"
                 and not n.endswith(("attn2.to_q", "attn2.to_k"))]
    assert set(targets + spatial) < set(locon) and sorted(locon) == sorted(in_blocks)
    kinds = {type(model.unet.get_submodule(n)) for n in locon}
    assert kinds == {nn.Linear, nn.Conv2d, nn.Conv3d}
    assert any(n.endswith(".ff.net.2") for n in locon) and any(n.endswith("time_stack.in_layers.2") for n in locon)


def test_lora_changes_output_scale_zero_is_exact_and_hooks_equal_merged_weights(model, tmp_path):
    pairs = random_pairs(model.unet)
    save_lora(pairs, tmp_path / "l.safetensors", model.architecture, alpha=2.0, motion="zoom")
    args = unet_inputs()
    with torch.no_grad():
        base = model.unet(*args)
        handles = apply_loras(model.unet, model.architecture, [str(tmp_path / "l.safetensors") + ":0"])
        assert handles == [] and torch.equal(model.unet(*args), base)
        handles = apply_loras(model.unet, model.architecture, [str(tmp_path / "l.safetensors") + ":0.5"])
        hooked = model.unet(*args)
        for h in handles:
            h.remove()
        assert (hooked - base).abs().max() > 1e-3
        for name, (a, b) in pairs.items():  # merge ΔW = 0.5 · (alpha / rank) · B·A into the weights instead
            model.unet.get_submodule(name).weight += 0.5 * (2.0 / 4) * b @ a
        merged = model.unet(*args)
    assert ((hooked - merged).abs().max() / merged.abs().max()).item() < 1e-5


def test_locon_hooks_equal_merged_weights_and_peft_layers(model, tmp_path):
    """A LoRA on convolutions: A applied as a convolution with the layer's kernel, stride and padding, B as a 1×1,
    is ΔW = B·A merged into the kernel, and what peft's Conv2d/Conv3d LoRA layers compute."""
    peft = pytest.importorskip("peft")

    pairs = random_pairs(model.unet, seed=5, targets="locon")
    save_lora(pairs, tmp_path / "l.safetensors", model.architecture, alpha=2.0, targets="locon")
    args = unet_inputs()
    with torch.no_grad():
        base = model.unet(*args)
        handles = apply_loras(model.unet, model.architecture, [str(tmp_path / "l.safetensors")])
        hooked = model.unet(*args)
        [h.remove() for h in handles]
        assert torch.equal(model.unet(*args), base)
        theirs = tiny_model("svd", seed=1)
        peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=2.0, target_modules=list(pairs)), theirs.unet)
        for name, (a, b) in pairs.items():
            theirs.unet.get_submodule(name).lora_A["default"].weight.copy_(a)
            theirs.unet.get_submodule(name).lora_B["default"].weight.copy_(b)
        peft_out = theirs.unet(*args)
        for name, (a, b) in pairs.items():  # ΔW[o, i, k...] = (alpha / rank) · Σ_r B[o, r] · A[r, i, k...]
            w = model.unet.get_submodule(name).weight
            w += (2.0 / 4) * torch.einsum("or,ri...->oi...", b.flatten(1), a)
        merged = model.unet(*args)
    assert (hooked - base).abs().max() > 1e-2
    assert ((hooked - merged).abs().max() / merged.abs().max()).item() < 1e-5
    assert ((hooked - peft_out).abs().max() / merged.abs().max()).item() < 1e-5


def test_trained_pairs_merged_or_factored_are_the_same_function_and_gradients(tmp_path):
    """train-lora applies each pair merged into the weight or factored beside it, whichever costs less: both are
    the hooks' function, with the same gradients for A and B."""
    from svdcli.training.trainer import add_lora

    pairs = random_pairs(tiny_model("svd", seed=1).unet, seed=5, targets="locon")
    save_lora(pairs, tmp_path / "l.safetensors", tiny_model("svd", seed=1).architecture, alpha=2.0)
    args = unet_inputs()
    hooked_model = tiny_model("svd", seed=1)
    with torch.no_grad():
        apply_loras(hooked_model.unet, hooked_model.architecture, [str(tmp_path / "l.safetensors")])
        hooked = hooked_model.unet(*args)
    outs, grads = [], []
    for merge in (True, False):
        m = tiny_model("svd", seed=1)
        layers = add_lora(m.unet, "locon", 4, 2.0, 0, merge=merge)
        assert layers.keys() == pairs.keys() and all(p.merged == merge for p in layers.values())
        with torch.no_grad():
            for name, (a, b) in pairs.items():
                layers[name].lora_A.copy_(a)
                layers[name].lora_B.copy_(b)
        out = m.unet(*args)
        (out ** 2).mean().backward()
        outs.append(out.detach())
        grads.append(torch.cat([g for n in sorted(layers) for g in (layers[n].lora_A.grad.flatten(),
                                                                   layers[n].lora_B.grad.flatten())]))
    for out in outs:
        assert ((out - hooked).abs().max() / hooked.abs().max()).item() < 1e-5
    assert grads[0].abs().max() > 0
    assert ((grads[0] - grads[1]).abs().max() / grads[0].abs().max()).item() < 1e-4
    # The cheaper form at rank 16: a 64-wide projection (the demo model's) merges, a 1280-wide one (SVD's) does not.
    assert LoraPair(nn.Linear(64, 64), 16, 16.0, torch.Generator()).merged
    assert not LoraPair(nn.Linear(1280, 1280), 16, 16.0, torch.Generator()).merged


def test_diffusers_and_peft_names_are_accepted(model, tmp_path):
    pairs = random_pairs(model.unet, seed=3, targets="locon")  # convolutions too
    save_lora(pairs, tmp_path / "ours.safetensors", model.architecture, alpha=4.0)
    cfg = model.architecture.unet
    theirs = {}
    for name, (a, b) in pairs.items():
        path = unet_source(name + ".weight", cfg).keys[0].removesuffix(".weight")
        theirs[f"base_model.model.{path}.lora_A.weight"], theirs[f"base_model.model.{path}.lora_B.weight"] = a, b
    write_safetensors(theirs, tmp_path / "peft.safetensors")  # no metadata: alpha defaults to the rank
    args = unet_inputs()
    with torch.no_grad():
        hs = apply_loras(model.unet, model.architecture, [str(tmp_path / "ours.safetensors")])
        ours = model.unet(*args)
        [h.remove() for h in hs]
        apply_loras(model.unet, model.architecture, [str(tmp_path / "peft.safetensors")])
        peft = model.unet(*args)
    assert torch.allclose(ours, peft, atol=1e-6)  # alpha 4 = rank 4 in both


def test_mismatched_loras_are_refused(model, tmp_path):
    pairs = random_pairs(model.unet)
    save_lora(pairs, tmp_path / "sv3d.safetensors", tiny_model("sv3d_p").architecture, alpha=1.0)
    with pytest.raises(LoraError, match="made for sv3d_p, not svd"):
        apply_loras(model.unet, model.architecture, [str(tmp_path / "sv3d.safetensors")])
    name = next(iter(pairs))
    bad = {name: (torch.zeros(4, 7), torch.zeros(3, 4))}
    save_lora(bad, tmp_path / "size.safetensors", model.architecture, alpha=1.0)
    with pytest.raises(LoraError, match="another model size"):
        apply_loras(model.unet, model.architecture, [str(tmp_path / "size.safetensors")])
    save_lora({"nowhere.to_q": pairs[name]}, tmp_path / "name.safetensors", model.architecture, alpha=1.0)
    with pytest.raises(LoraError, match="not a layer"):
        apply_loras(model.unet, model.architecture, [str(tmp_path / "name.safetensors")])


def test_generate_with_lora(model, tmp_path):
    from PIL import Image

    save_single_file(model, tmp_path / "w.safetensors")
    save_lora(random_pairs(model.unet), tmp_path / "zoom.safetensors", model.architecture, alpha=4.0)
    Image.new("RGB", (128, 64), (90, 120, 200)).save(tmp_path / "in.png")
    base = [sys.executable, "-m", "svdcli", "generate", str(tmp_path / "in.png"), "--weights",
            str(tmp_path / "w.safetensors"), "--preset", "svd", "--size", "128x64", "--frames", "2", "--steps", "1",
            "--seed", "1", "--quiet"]
    r = subprocess.run(base + ["--lora", f"{tmp_path / 'zoom.safetensors'}:0.7", "--out", str(tmp_path / "o.mp4")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o.json").read_text())["loras"] == [f"{tmp_path / 'zoom.safetensors'}:0.7"]
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    r = subprocess.run(base + ["--lora", str(tmp_path / "junk.safetensors"), "--out", str(tmp_path / "p.mp4")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.mp4").exists()


def test_the_shipped_lora_file_is_read_with_its_metadata():
    """The file format's metadata key is fixed: the LoRA shipped with the package (written by an earlier version)
    is read with its motion, rank and alpha."""
    from svdcli.checkpoints.loader import architecture_of
    from svdcli.checkpoints.weights import package_file
    from svdcli.inference.lora import parse_spec, read_lora

    arch = architecture_of(package_file("package:demo/svd-demo.safetensors"))
    lora = read_lora(parse_spec("demo-zoom")[0], arch, "demo")
    assert lora.meta["motion"] == "zoom" and lora.meta["architecture"] == "svd"
    assert (lora.rank, lora.alpha) == (16, 24.0)
