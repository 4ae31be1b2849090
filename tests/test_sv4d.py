"""SV4D and SV4D 2.0: full-size structure, loader detection, and parity with the reference code's own modules
(fixtures made by scripts/sv4d_reference_fixtures.py in an environment with the reference checkout)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from svdcli.checkpoints.architectures import ARCHITECTURES
from svdcli.checkpoints.loader import load, meta_modules
from svdcli.checkpoints.safetensors_io import CheckpointError
from svdcli.models.init import random_state
from svdcli.models.unet import SpacetimeTransformer, UNetConfig, VideoUNet

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = ["sv4d", "sv4d2", "sv4d2_8views"]


def read_fixture(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["config"])


def with_reference_weights(module: torch.nn.Module, config: dict) -> torch.nn.Module:
    values = random_state({k: tuple(v.shape) for k, v in module.state_dict().items()}, config["seed"])
    # the reference module got the same draws for the same names: the checksum says the names and shapes agree
    assert float(sum(v.double().abs().sum() for v in values.values())) == pytest.approx(config["weights_checksum"],
                                                                                         rel=1e-12)
    module.load_state_dict(values)
    return module.eval()


def max_relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("name", MODELS)
def test_full_size_names_and_shapes_equal_the_reference_key_lists(name):
    arch = ARCHITECTURES[name]
    official = json.loads((FIXTURES / f"{name}.json").read_text())
    modules = meta_modules(arch)
    ours = {arch.single_file_key(comp, k): list(v.shape) for comp, m in modules.items()
            for k, v in m.state_dict().items()}
    skipped = {k for k in official if k.startswith(arch.skipped_prefixes())}
    assert sorted(set(official) - skipped - set(ours)) == []  # nothing missing
    assert sorted(set(ours) - set(official)) == []  # nothing extra
    assert {k: v for k, v in ours.items() if official[k] != v} == {}  # no shape differs
    # the documented unused tensors: the text tower's leftovers (6), the conditioner autoencoder's decoder and
    # post-quant conv (140), and the two further copies of that autoencoder (cond_view's, cond_motion's: 2 × 248)
    assert len(skipped) == 6 + 140 + 2 * 248
    unet_parameters = sum(p.numel() for p in modules["unet"].parameters())
    assert unet_parameters == {"sv4d": 1_996_625_322}.get(name, 2_010_961_338)  # 1996.6 M, 2011.0 M (sv4d.md)


def write_random_file(path: Path, name: str, drop: tuple[str, ...] = ()) -> None:
    """A single file with the official names of a tiny model of this architecture (as scripts/
    make_random_checkpoint.py writes one, without our metadata), less the tensors under `drop`."""
    from safetensors.torch import save_file

    arch = ARCHITECTURES[name]
    tiny = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_levels=(True, False), head_dim=16,
                      context_dim=32, adm_in_channels=128, **{k: getattr(arch.unet, k) for k in (
                          "motion_attention", "camera_embedding", "separate_motion_mixer", "attention_3d")})
    with torch.device("meta"):
        unet = VideoUNet(tiny)
    from svdcli.models.vae import VAE, VAEConfig
    from svdcli.models.clip import CLIPConfig, ImageEncoder
    with torch.device("meta"):
        vae = VAE(VAEConfig(channels=32, channel_mult=(1, 2), temporal_decoder=False))
        clip = ImageEncoder(CLIPConfig(image_size=28, patch_size=14, width=64, layers=1, head_width=32,
                                       mlp_width=128, embed_dim=32))
    tensors = {}
    for comp, module in (("unet", unet), ("vae", vae), ("image_encoder", clip)):
        for k, v in module.state_dict().items():
            tensors[arch.single_file_key(comp, k)] = torch.zeros(v.shape)
    for copy in arch.encoder_copies[1:]:  # the file holds all three copies of the conditioner's autoencoder
        tensors.update({copy + k[len(arch.vae_encoder_prefix):]: t.clone() for k, t in list(tensors.items())
                        if k.startswith(arch.vae_encoder_prefix)})
    save_file({k: v for k, v in tensors.items() if not k.startswith(drop)}, str(path))


@pytest.mark.parametrize("name", MODELS)
def test_the_loader_tells_each_model_by_its_tensors_and_released_name(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    write_random_file(path, name)
    model = load(path)
    assert model.architecture.name == name
    assert model.unet.cfg.attention_3d == (name == "sv4d2")
    assert model.unet.cfg.camera_embedding == (name != "sv4d")
    assert model.skipped_tensors > 0  # the autoencoder copies were planned around, not read


def test_sv4d2_files_under_another_name_need_the_preset_to_say_which(tmp_path):
    path = tmp_path / "my-finetune.safetensors"
    write_random_file(path, "sv4d2")
    with pytest.raises(CheckpointError, match="sv4d2-8views preset") as err:
        load(path)
    assert "\n" not in str(err.value)
    assert load(path, architecture="sv4d2_8views").architecture.name == "sv4d2_8views"
    assert load(path, architecture="sv4d2").unet.cfg.attention_3d
    assert load(tmp_path / "my-finetune.safetensors", architecture="sv4d2").architecture.encoder_copies


def test_the_vae_encoder_is_read_from_whichever_copy_the_file_has(tmp_path):
    path = tmp_path / "sv4d.safetensors"
    write_random_file(path, "sv4d", drop=("conditioner.embedders.1.",))
    model = load(path)
    assert model.architecture.vae_encoder_prefix == "conditioner.embedders.4.encoder."


@pytest.mark.parametrize("name", MODELS)
def test_the_spacetime_transformer_equals_the_reference_block(name):
    tensors, config = read_fixture(FIXTURES / "sv4d" / f"{name}_transformer.safetensors")
    cfg = UNetConfig(model_channels=config["emb_dim"] // 4, context_dim=config["context_dim"], motion_attention=True,
                     camera_embedding=config["use_camera_emb"], attention_3d=config["use_3d_attention"],
                     separate_motion_mixer=config["separate_motion_merge_factor"])
    block = with_reference_weights(SpacetimeTransformer(config["channels"], config["channels"] // config["head_dim"],
                                                        cfg), config)
    for shortcut, max_tokens in ((False, None), (True, None), (True, 64)):  # the exact shortcuts change nothing
        block.shortcut, block.max_tokens = shortcut, max_tokens
        with torch.no_grad():
            out = block(tensors["x"], tensors["context"], tensors["emb"], tensors["view_latents"])
        print(f"{name} transformer, shortcut {shortcut}, slices {max_tokens}: relative error "
              f"{max_relative_error(out, tensors['out']):.2e}")
        assert max_relative_error(out, tensors["out"]) <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_a_tiny_unet_equals_the_reference_network(name):
    tensors, config = read_fixture(FIXTURES / "sv4d" / f"{name}_unet.safetensors")
    mult = tuple(config["channel_mult"])
    cfg = UNetConfig(model_channels=config["model_channels"], channel_mult=mult,
                     attention_levels=tuple(2 ** i in config["attention_resolutions"] for i in range(len(mult))),
                     head_dim=config["num_head_channels"], context_dim=config["context_dim"],
                     adm_in_channels=config["emb_dim"], motion_attention=True,
                     camera_embedding=config["use_camera_emb"], attention_3d=config["use_3d_attention"],
                     separate_motion_mixer=config["separate_motion_merge_factor"])
    unet = with_reference_weights(VideoUNet(cfg), config)
    with torch.no_grad():
        out = unet(tensors["x"], tensors["timesteps"], tensors["context"], tensors["y"],
                   config["frames"] * config["views"], view_latents=tensors["view_latents"])
    error = max_relative_error(out, tensors["out"])
    print(f"{name} tiny U-Net: relative error {error:.2e}")
    assert error <= 1e-5


def test_presets_hold_the_reference_scripts_defaults():
    from svdcli.checkpoints.presets import load_preset

    sv4d, sv4d2, eight = (load_preset(n) for n in ("sv4d", "sv4d2", "sv4d2-8views"))
    assert [p.architecture for p in (sv4d, sv4d2, eight)] == MODELS
    assert (sv4d.repo, sv4d.single_file, sv4d.companion) == ("stabilityai/sv4d", "sv4d.safetensors", "sv3d-u")
    assert {(p.repo, p.single_file) for p in (sv4d2, eight)} == {("stabilityai/sv4d2.0", "sv4d2.safetensors"),
                                                                  ("stabilityai/sv4d2.0", "sv4d2_8views.safetensors")}
    # simple_video_sample_4d.py: 20 steps, cfg 2.0 with guider 5 (spatiotemporal, min 1.0); 4d2.py: 50 steps,
    # guider 2 (linear, whose min the script leaves at 1.0) with cfg 2.0 / guider 5 with cfg 2.5, min_cfg 1.5
    assert [(p.steps, p.guidance, p.cfg_min, p.cfg_max) for p in (sv4d, sv4d2, eight)] == [
        (20, "spacetime", 1.0, 2.0), (50, "linear", 1.0, 2.0), (50, "spacetime", 1.5, 2.5)]
    assert all((p.frames, p.width, p.height, p.noise_aug) == (21, 576, 576, 0.0) for p in (sv4d, sv4d2, eight))


def test_guidance_scales_equal_the_reference_guiders():
    """The reference guiders' scales (SpatiotemporalPredictionGuider, LinearPredictionGuider over the flattened
    window), as the fixture script read them from the reference code."""
    from svdcli.inference.sampling import LinearFrameGuidance, SpacetimeGuidance

    tensors, config = read_fixture(FIXTURES / "sv4d" / "guidance.safetensors")
    ours = {"sv4d": SpacetimeGuidance(1.0, 2.0, views=8).scales(40),
            "sv4d2": LinearFrameGuidance(1.0, 2.0).scales(48),
            "sv4d2_8views": SpacetimeGuidance(1.5, 2.5, views=8).scales(40)}
    for name in MODELS:
        print(f"{name}: reference {[round(x, 4) for x in tensors[name].tolist()]}\n{' ' * len(name)}  ours      "
              f"{[round(x, 4) for x in ours[name].tolist()]}")
        assert torch.equal(ours[name], tensors[name])


def test_svd_generate_refuses_an_sv4d_preset_in_one_line():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "svdcli", "generate", "missing.png", "--preset", "sv4d"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SV4D" in r.stderr


@pytest.mark.parametrize("name", MODELS)
def test_the_procedure_equals_the_reference_scripts_on_a_tiny_model(tmp_path, name):
    """The reference script's own sample() (its windows, noise order, per-step alternation, guidance, sampler,
    decoding) on a tiny model and a synthetic clip; ours loads the same weights from an official-name file."""
    from safetensors.torch import save_file

    from svdcli.checkpoints.loader import model_metadata
    from svdcli.checkpoints.presets import load_preset
    from svdcli.inference.four_d import SV3D_VIEWS, FourDSettings, sample_4d
    from svdcli.inference.pipeline import VideoPipeline

    from .sv4d_tiny import checksum, tiny_architecture, tiny_file_tensors

    tensors, config = read_fixture(FIXTURES / "sv4d" / f"{name}_procedure.safetensors")
    weights = tiny_file_tensors(name, config["weights_seed"])
    assert checksum(weights) == pytest.approx(config["weights_checksum"], rel=1e-12)
    path = tmp_path / f"{name}.safetensors"
    save_file(weights, str(path), metadata=model_metadata(tiny_architecture(name)))
    model = load(path)
    assert model.architecture.name == name
    preset = load_preset(name.replace("_", "-"))
    settings = FourDSettings.for_model(name, config["steps"], preset.cfg_min, preset.cfg_max, preset.guidance)
    clip = tensors["clip"].float() / 255 * 2 - 1
    # SV3D's orbit puts the input view last; the reference rolls it to the front and picks SV4D's views
    orbit = torch.roll(tensors["orbit"].float() / 255 * 2 - 1, 1, 0)[list(SV3D_VIEWS)] if name == "sv4d" else None
    grid = sample_4d(VideoPipeline(model, torch.device("cpu"), torch.float32), clip, settings, config["seed"], orbit)
    reference = tensors["out"].float() / 255
    difference = (grid - reference).abs()
    print(f"{name}: {tuple(grid.shape)} frames, max |difference| {difference.max() * 255:.3f}/255, mean "
          f"{difference.mean() * 255:.4f}/255 (the reference's frames stored in 8 bits)")
    assert grid.shape == reference.shape
    assert float(difference.max()) <= 2 / 255
    assert float(grid[:, 1:].std()) > 0.05  # not grey frames


def test_window_schedule_and_anchors_equal_the_reference_scripts():
    from svdcli.inference.four_d import FRAMES, LAYOUTS, anchor_frames

    ours = {name: layout.window_starts(name) for name, layout in LAYOUTS.items()}
    # simple_video_sample_4d.py: anchors np.arange(T - 1, n_frames, T - 1), dense t0 in np.arange(0, n_frames - 1,
    # T - 1); 4d2.py: range(0, n_frames, T) for sv4d2 (a window past the end moved back to n_frames - T), else
    # range(0, n_frames - T + 1, T - 1)
    reference = {"sv4d": list(range(0, FRAMES - 1, 4)),
                 "sv4d2": [min(t0, FRAMES - 12) for t0 in range(0, FRAMES, 12)],
                 "sv4d2_8views": list(range(0, FRAMES - 5 + 1, 4))}
    print("window starts, ours:", ours, "reference:", reference)
    print("SV4D anchors, ours:", anchor_frames(LAYOUTS["sv4d"]), "reference:", list(range(4, FRAMES, 4)))
    assert ours == reference == {"sv4d": [0, 4, 8, 12, 16], "sv4d2": [0, 9], "sv4d2_8views": [0, 4, 8, 12, 16]}
    assert anchor_frames(LAYOUTS["sv4d"]) == list(range(4, FRAMES, 4)) == [4, 8, 12, 16, 20]


@pytest.mark.parametrize("name", MODELS)
def test_the_unet_config_inferred_from_the_full_size_shapes_is_the_models(name):
    """At full size the middle block is as wide as the U-Net's embedding (1280), so SV4D's view embedding there
    looks like SV4D 2.0's camera embedding: the loader must tell them apart where the widths differ."""
    from dataclasses import replace

    from svdcli.checkpoints.architectures import UNET_PREFIX
    from svdcli.checkpoints.loader import infer_unet_config

    official = json.loads((FIXTURES / f"{name}.json").read_text())
    inferred = infer_unet_config(lambda key: tuple(official[UNET_PREFIX + key]) if UNET_PREFIX + key in official
                                 else None)
    arch = ARCHITECTURES[name].unet
    assert replace(inferred, attention_3d=arch.attention_3d) == arch  # the 3-D layout: the file's name says


def test_every_offload_mode_with_fp8_weights_gives_the_same_views(tmp_path):
    """svd 4d runs on the engine of svd generate: the offload modes move the same weights in and out (on the CPU the
    library honours them too: the same phases, the same streamed copies as on a GPU), so the views are equal."""
    from safetensors.torch import save_file

    from svdcli.checkpoints.loader import model_metadata
    from svdcli.inference.four_d import FourDSettings, sample_4d
    from svdcli.inference.pipeline import VideoPipeline

    from .sv4d_tiny import tiny_architecture, tiny_file_tensors

    tensors, config = read_fixture(FIXTURES / "sv4d" / "sv4d2_procedure.safetensors")
    path = tmp_path / "sv4d2.safetensors"
    save_file(tiny_file_tensors("sv4d2", config["weights_seed"]), str(path),
              metadata=model_metadata(tiny_architecture("sv4d2")))
    clip = tensors["clip"].float() / 255 * 2 - 1
    settings = FourDSettings.for_model("sv4d2", steps=1, guidance="linear", decode_chunk=5)
    views = {}
    for mode in ("none", "model", "sequential"):
        pipe = VideoPipeline(load(path, weights_dtype="fp8"), torch.device("cpu"), torch.float32, offload=mode)
        views[mode] = sample_4d(pipe, clip, settings, seed=1)
    assert views["none"].shape == (21, 5, 3, 32, 32) and float(views["none"][:, 1:].std()) > 0.05
    assert torch.equal(views["none"], views["model"]) and torch.equal(views["none"], views["sequential"])


def test_model_offload_moves_the_unet_once_per_window_not_per_step(tmp_path):
    from contextlib import contextmanager

    from safetensors.torch import save_file

    from svdcli.checkpoints.loader import model_metadata
    from svdcli.inference.four_d import FourDSettings, sample_4d
    from svdcli.inference.pipeline import VideoPipeline

    from .sv4d_tiny import tiny_architecture, tiny_file_tensors

    tensors, config = read_fixture(FIXTURES / "sv4d" / "sv4d2_procedure.safetensors")
    path = tmp_path / "sv4d2.safetensors"
    save_file(tiny_file_tensors("sv4d2", config["weights_seed"]), str(path),
              metadata=model_metadata(tiny_architecture("sv4d2")))
    pipe = VideoPipeline(load(path), torch.device("cpu"), torch.float32, offload="model")
    moves, phase = [], pipe.mover.phase

    @contextmanager
    def counted(*modules):
        moves.extend(m is pipe.model.unet for m in modules)
        with phase(*modules):
            yield
    pipe.mover.phase = counted
    sample_4d(pipe, tensors["clip"].float() / 255 * 2 - 1, FourDSettings.for_model("sv4d2", steps=3), seed=1)
    assert sum(moves) == 2  # sv4d2's two windows, 3 steps each
