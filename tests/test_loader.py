"""The one loader: round trips through both layouts and dtypes, skipped tensors, and bad files."""

import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from svdcli.checkpoints.loader import load
from svdcli.checkpoints.safetensors_io import CheckpointError, SafetensorsFile
from svdcli.checkpoints.saving import save_diffusers, save_single_file

from .conftest import tiny_model


def assert_same_weights(loaded, original, dtype=None, stored=None):
    """dtype: the compute dtype loaded into; stored: the file's dtype, when it is not dtype."""
    for comp, module in loaded.components().items():  # nothing may be left on the meta device
        assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()]), comp
    for comp, module in original.components().items():
        got = loaded.components()[comp].state_dict()
        want = module.state_dict()
        assert got.keys() == want.keys(), comp
        for k, v in want.items():
            v = v if dtype is None else v.to(dtype)
            if comp == "vae":  # read into float32 whatever the compute dtype: the stored values, widened exactly
                v = (module.state_dict()[k].to(stored) if stored is not None else v).float()
            assert got[k].dtype == v.dtype and torch.equal(got[k], v), f"{comp}.{k}"


@pytest.mark.parametrize("name", ["svd", "svd_image_decoder", "sv3d_u", "sv3d_p"])
def test_single_file_round_trip(tmp_path, name):
    model = tiny_model(name)
    save_single_file(model, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert loaded.architecture == model.architecture
    assert loaded.layout == "single-file"
    assert_same_weights(loaded, model)


def test_single_file_fp16_loads_into_fp32_and_fp16(tmp_path):
    model = tiny_model("svd")
    save_single_file(model, tmp_path / "m.safetensors", dtype=torch.float16)
    assert_same_weights(load(tmp_path / "m.safetensors", dtype=torch.float16), model, torch.float16)
    loaded = load(tmp_path / "m.safetensors", dtype=torch.float32)
    assert loaded.stored_dtypes == ["float16"]
    for k, v in model.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[k], v.half().float()), k


def test_diffusers_round_trip_fp32_and_fp16_variant(tmp_path):
    model = tiny_model("svd")
    save_diffusers(model, tmp_path)
    save_diffusers(model, tmp_path, dtype=torch.float16, variant="fp16")
    full = load(tmp_path)
    assert full.layout == "diffusers" and full.architecture == model.architecture
    assert_same_weights(full, model)
    assert all(".fp16." not in f.name for f in full.files)
    half = load(tmp_path, dtype=torch.float16)  # half precision prefers the smaller files
    assert all(".fp16." in f.name for f in half.files)
    assert_same_weights(half, model, torch.float16)
    assert_same_weights(load(tmp_path, variant="fp32", dtype=torch.float16), model, torch.float16, torch.float32)


def test_diffusers_fp16_only_folder(tmp_path):
    model = tiny_model("svd")
    save_diffusers(model, tmp_path, dtype=torch.float16, variant="fp16")
    assert_same_weights(load(tmp_path, dtype=torch.float16), model, torch.float16)
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model.*safetensors in the fp32 variant"):
        load(tmp_path, variant="fp32")


def test_diffusers_and_single_file_give_identical_tensors(tmp_path):
    model = tiny_model("svd", seed=5)
    save_diffusers(model, tmp_path / "d")
    save_single_file(model, tmp_path / "s.safetensors")
    assert_same_weights(load(tmp_path / "d"), load(tmp_path / "s.safetensors"))


def test_unused_tensors_are_skipped_without_being_read(tmp_path, monkeypatch):
    model = tiny_model("svd")
    save_single_file(model, tmp_path / "m.safetensors")
    tensors = load_file(tmp_path / "m.safetensors")
    unused = {"conditioner.embedders.0.open_clip.model.token_embedding.weight": torch.zeros(10, 4),
              "conditioner.embedders.0.open_clip.model.logit_scale": torch.zeros(()),
              "conditioner.embedders.3.encoder.decoder.conv_in.weight": torch.zeros(2, 2),
              "conditioner.embedders.3.encoder.post_quant_conv.weight": torch.zeros(4, 4, 1, 1),
              "first_stage_model.encoder.conv_in.weight": torch.zeros(2)}
    meta = SafetensorsFile(tmp_path / "m.safetensors").metadata
    save_file({**tensors, **unused}, tmp_path / "full.safetensors", metadata=meta)
    read = []
    original = SafetensorsFile.read
    monkeypatch.setattr(SafetensorsFile, "read", lambda self, k: read.append(k) or original(self, k))
    loaded = load(tmp_path / "full.safetensors")
    assert loaded.skipped_tensors == len(unused)
    assert not set(read) & set(unused)
    assert_same_weights(loaded, model)


# --- bad files -----------------------------------------------------------------------------------------------------

@pytest.fixture
def good_file(tmp_path):
    save_single_file(tiny_model("svd"), tmp_path / "good.safetensors")
    return tmp_path / "good.safetensors"


def rewrite(src, dst, change):
    tensors = load_file(src)
    change(tensors)
    save_file(tensors, dst, metadata=SafetensorsFile(src).metadata)
    return dst


def bad_files(tmp_path, good_file):
    data = good_file.read_bytes()
    files = {}
    files["truncated"] = tmp_path / "truncated.safetensors"
    files["truncated"].write_bytes(data[: len(data) * 2 // 3])
    files["pickle"] = tmp_path / "model.safetensors"
    files["pickle"].write_bytes(pickle.dumps({"state_dict": [1, 2, 3]}))
    files["ckpt"] = tmp_path / "svd.ckpt"
    files["ckpt"].write_bytes(b"PK\x03\x04" + b"\0" * 100)
    files["empty"] = tmp_path / "empty.safetensors"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.safetensors"
    files["text"].write_text("these are not weights at all, just some text\n" * 20)
    files["not svd"] = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, files["not svd"])
    files["missing"] = rewrite(good_file, tmp_path / "missing.safetensors",
                               lambda t: t.pop("model.diffusion_model.middle_block.1.proj_out.weight"))
    files["shape"] = rewrite(good_file, tmp_path / "shape.safetensors",
                             lambda t: t.__setitem__("first_stage_model.decoder.conv_in.bias", torch.zeros(7)))
    return files


EXPECTED = {"truncated": "truncated", "pickle": "pickle", "ckpt": "pickle", "empty": "not a safetensors",
            "text": "not a safetensors", "not svd": "not an SVD", "missing": "middle_block.1.proj_out.weight",
            "shape": "conv_in.bias"}


def test_bad_files_raise_one_line_errors(tmp_path, good_file):
    for what, path in bad_files(tmp_path, good_file).items():
        with pytest.raises(CheckpointError) as e:
            load(path)
        message = str(e.value)
        assert EXPECTED[what] in message and "\n" not in message and str(path) in message, (what, message)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_single_file(tiny_model("sv3d_p"), tmp_path / "sv3d_p.safetensors")
    with pytest.raises(CheckpointError, match="holds an sv3d_p checkpoint, not svd"):
        load(tmp_path / "sv3d_p.safetensors", architecture="svd")
    assert load(tmp_path / "sv3d_p.safetensors", architecture="sv3d_p").architecture.name == "sv3d_p"


def test_cli_reports_bad_files_in_one_line(tmp_path, good_file):
    for what, path in bad_files(tmp_path, good_file).items():
        r = subprocess.run([sys.executable, "-m", "svdcli", "inspect", str(path)], capture_output=True, text=True)
        assert r.returncode == 2, (what, r.stderr)
        assert r.stdout == "" and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("svd: error: "), (what, r.stderr)


def test_cli_inspect_reports_the_checkpoint(tmp_path, good_file):
    r = subprocess.run([sys.executable, "-m", "svdcli", "inspect", str(good_file), "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == "svd" and info["layout"] == "single-file"
    assert info["parameters"]["unet"] == sum(p.numel() for p in tiny_model("svd").unet.parameters())


def test_a_header_length_starting_with_the_pickle_byte_is_still_safetensors(tmp_path):
    """The u64 header length of a safetensors file may begin with 0x80, pickle's first byte: not a pickle."""
    from safetensors.torch import save_file

    from svdcli.checkpoints.safetensors_io import SafetensorsFile

    path = tmp_path / "x.safetensors"
    for pad in range(400):
        save_file({"t": torch.arange(3.0)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(SafetensorsFile(path).read("t"), torch.arange(3.0))
