"""Golden fixtures for SV4D and SV4D 2.0, made by the reference code itself (Stability-AI/generative-models).

The reference is never a dependency of svdcli: run this in an environment of its own, then commit what it writes.

    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0 einops omegaconf numpy safetensors packaging fsspec pillow scipy tqdm
    git clone https://github.com/Stability-AI/generative-models /tmp/generative-models  # checked at 0ad7de9
    PYTHONPATH=. /tmp/refenv/bin/python scripts/sv4d_reference_fixtures.py /tmp/generative-models

Only the reference's model modules are imported (its package __init__ files, which pull in the training stack, are
bypassed). Weights are random, N(0, 1/fan_in), drawn by svdcli.models.init.random_state from a seed in the sorted
order of the tensor names, so the tests rebuild the same weights without storing them; a checksum in each fixture
says if they did not. Attention runs the reference's "softmax" path (its default "softmax-xformers" needs xformers
and computes the same function). Everything is float32 on the CPU.

Writes tests/fixtures/sv4d/<model>_transformer.safetensors (one SV4D transformer: inputs, output),
<model>_unet.safetensors (a tiny U-Net of the real layout: inputs, output), guidance.safetensors (each model's
guidance scales over its window) and <model>_procedure.safetensors: the reference script's own `sample()`
(scripts/sampling/simple_video_sample_4d.py, 4d2.py) run end to end on a tiny model (tests/sv4d_tiny.py) and a
synthetic 21-frame clip, its outputs captured where it saves its videos. Around it, only what cannot run here is
replaced: file reading and writing, model loading (a stand-in engine holding the reference's own U-Net, denoiser,
conditioner embedders and decoder), the SV3D orbit (an input of the fixture; SV3D has its own parity tests), moving
modules to "cuda", the U-Net's cast to fp16 (everything stays float32), and the CLIP image encoder (ours: open_clip
cannot be installed beside this project; its parity with transformers is tested elsewhere). The conditioner's noise
draws run on a forked CPU generator, as on a GPU they come from the device's generator and leave the CPU stream,
from which the latent noise is drawn, untouched.
"""

import argparse
import contextlib
import importlib
import json
import math
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

from svdcli.models.init import random_state

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sv4d"

# The three released models' switches (scripts/sampling/configs/sv4d*.yaml) and their window: T frames x V views.
MODELS = {
    "sv4d": dict(use_camera_emb=False, use_3d_attention=False, separate_motion_merge_factor=False, frames=5, views=8),
    "sv4d2": dict(use_camera_emb=True, use_3d_attention=True, separate_motion_merge_factor=True, frames=12, views=4),
    "sv4d2_8views": dict(use_camera_emb=True, use_3d_attention=False, separate_motion_merge_factor=True, frames=5,
                         views=8),
}
# A tiny U-Net of the real layout: four levels, transformers at the first three, heads of 16 channels. Its window is
# smaller than the real one (the network takes any T and V; the transformer fixtures use the real ones) and its
# latents are 16 x 16, so that the narrowest level's GroupNorms (32 groups, as the reference fixes) still see 8
# values each: at 1 x 1 a group of two values turns float32 rounding into visible differences.
TINY = dict(model_channels=32, channel_mult=[1, 2, 2, 2], attention_resolutions=[4, 2, 1], num_head_channels=16,
            context_dim=32, frames=2, views=3, size=16)


def import_reference(root: Path):
    """The reference's modules, without running its package __init__ files. Modules the sampling scripts import
    for what this script replaces (video files, background removal, the text encoders, training) are stand-ins."""
    sys.path.insert(0, str(root))
    for package in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules", "sgm.models", "scripts", "scripts.demo",
                    "scripts.sampling", "scripts.util", "scripts.util.detection"):
        module = types.ModuleType(package)
        module.__path__ = [str(root / package.replace(".", "/"))]
        sys.modules[package] = module

    class Unused:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("not used by the fixtures")

    def stand_in(name, **attributes):
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
        return module

    for name in ("cv2", "imageio", "kornia", "open_clip", "fire"):
        stand_in(name, Fire=Unused)
    stand_in("rembg", remove=Unused)
    stand_in("torchvision").transforms = stand_in("torchvision.transforms", ToTensor=Unused)
    stand_in("transformers", **{n: Unused for n in ("ByT5Tokenizer", "CLIPTextModel", "CLIPTokenizer",
                                                     "T5EncoderModel", "T5Tokenizer")})
    stand_in("scripts.util.detection.nsfw_and_watermark_dectection", DeepFloydDataFiltering=Unused)
    stand_in("pytorch_lightning", LightningModule=torch.nn.Module)
    return (importlib.import_module("sgm.modules.spacetime_attention"),
            importlib.import_module("sgm.modules.diffusionmodules.video_model"),
            importlib.import_module("sgm.modules.diffusionmodules.guiders"))


def randomise(module: torch.nn.Module, seed: int) -> float:
    state = module.state_dict()
    values = random_state({k: tuple(v.shape) for k, v in state.items()}, seed)
    module.load_state_dict(values)
    return checksum(values)


def checksum(values: dict[str, torch.Tensor]) -> float:
    return float(sum(v.double().abs().sum() for v in values.values()))


def transformer_fixture(spacetime, name: str, switches: dict, seed: int) -> dict:
    channels, head_dim, context_dim, emb_dim = 32, 16, 32, 128
    block = spacetime.PostHocSpatialTransformerWithTimeMixingAndMotion(
        channels, channels // head_dim, head_dim, depth=1, context_dim=context_dim, use_linear=True,
        use_spatial_context=True, use_camera_emb=switches["use_camera_emb"],
        use_3d_attention=switches["use_3d_attention"],
        separate_motion_merge_factor=switches["separate_motion_merge_factor"], adm_in_channels=emb_dim,
        merge_strategy="learned_with_images", merge_factor=0.0, motion_context_dim=4, ff_in=True,
        attn_mode="softmax", time_mix_legacy=False).eval()
    weights = randomise(block, seed)
    g = torch.Generator().manual_seed(seed + 1)
    b, t, v, h, w = 2, switches["frames"], switches["views"], 3, 4  # 2: both halves of guidance
    x = torch.randn(b * t * v, channels, h, w, generator=g)
    context = torch.randn(b, t, context_dim, generator=g)
    emb = torch.randn(b * t * v, emb_dim, generator=g)
    view_latents = torch.randn(b * v, 4, 7, 9, generator=g)  # another size: the block resizes it bilinearly
    indicator = torch.zeros(b, t * v)
    with torch.no_grad():
        out = block(x, context, emb, None, t * v, indicator, view_latents, None)
    return {"x": x, "context": context, "emb": emb, "view_latents": view_latents, "out": out,
            "config": dict(channels=channels, head_dim=head_dim, context_dim=context_dim, emb_dim=emb_dim,
                           seed=seed, weights_checksum=weights, **switches)}


def reference_unet(video_model, switches: dict, channels: int, mult: list[int], attention: list[int], head: int,
                   context_dim: int, adm: int) -> torch.nn.Module:
    """The reference's SV4D U-Net as its configs build it (scripts/sampling/configs/sv4d*.yaml), at other widths."""
    return video_model.SpatialUNetModelWithTime(
        in_channels=8, model_channels=channels, out_channels=4, num_res_blocks=2, attention_resolutions=attention,
        channel_mult=mult, num_classes="sequential", adm_in_channels=adm, num_head_channels=head,
        use_spatial_transformer=True, transformer_depth=1, context_dim=context_dim, motion_context_dim=4,
        extra_ff_mix_layer=True, use_spatial_context=True, time_block_merge_strategy="learned_with_images",
        time_block_merge_factor=0.0, spatial_transformer_attn_type="softmax", time_kernel_size=[3, 1, 1],
        use_linear_in_transformer=True, legacy=False, time_mix_legacy=False, replicate_time_mix_bug=True,
        use_motion_attention=True, use_camera_emb=switches["use_camera_emb"],
        use_3d_attention=switches["use_3d_attention"],
        separate_motion_merge_factor=switches["separate_motion_merge_factor"]).eval()


def unet_fixture(video_model, name: str, switches: dict, seed: int) -> dict:
    emb_dim = 4 * TINY["model_channels"]  # the camera embedding reads the U-Net's embedding: adm = its width
    unet = reference_unet(video_model, switches, TINY["model_channels"], TINY["channel_mult"],
                          TINY["attention_resolutions"], TINY["num_head_channels"], TINY["context_dim"], emb_dim)
    weights = randomise(unet, seed)
    g = torch.Generator().manual_seed(seed + 1)
    b, t, v, h, w = 2, TINY["frames"], TINY["views"], TINY["size"], TINY["size"]
    x = torch.randn(b * t * v, 8, h, w, generator=g)
    timesteps = 0.25 * torch.log(torch.tensor([3.0, 3.0])).repeat_interleave(t * v)  # c_noise of sigma 3
    context = torch.randn(b, t, TINY["context_dim"], generator=g)
    y = torch.randn(b * t * v, emb_dim, generator=g)
    view_latents = torch.randn(b * v, 4, h, w, generator=g)
    indicator = torch.ones(b, t * v)  # as the reference's sampling passes it (it changes nothing in this network)
    with torch.no_grad():
        out = unet(x, timesteps, context=context, y=y, num_video_frames=t * v, image_only_indicator=indicator,
                   cond_view=view_latents, cond_motion=None)
    return {"x": x, "timesteps": timesteps, "context": context, "y": y, "view_latents": view_latents, "out": out,
            "config": dict(switches, **TINY, emb_dim=emb_dim, seed=seed, weights_checksum=weights)}


def guidance_fixture(guiders) -> dict:
    """The scales of each model's guider, configured as simple_video_sample_4d.py and 4d2.py configure them."""
    return {"sv4d": guiders.SpatiotemporalPredictionGuider(max_scale=2.0, num_frames=40, num_views=8).scale[0],
            "sv4d2": guiders.LinearPredictionGuider(max_scale=2.0, num_frames=48).scale[0],
            "sv4d2_8views": guiders.SpatiotemporalPredictionGuider(max_scale=2.5, min_scale=1.5, num_frames=40,
                                                                   num_views=8).scale[0],
            "config": {}}


# The procedure fixtures: the tiny model of tests/sv4d_tiny.py, a 32 x 32 clip (4 x 4 latents), few steps (SV4D 3,
# so that its dense pass goes backward, forward and backward again; 4d2 2). The saved views are stored as 8-bit
# frames, as a video holds them: the tests allow 2/255 and the rounding is within it.
PROCEDURE = dict(size=32, seed=23, weights_seed=40, steps={"sv4d": 3, "sv4d2": 2, "sv4d2_8views": 2})


def synthetic_clip(size: int, frames: int = 21) -> torch.Tensor:
    """(frames, 3, size, size) uint8: a two-coloured ball moving across a white frame, a quarter turn of its
    stripe; the images the reference reads as they are (uint8, as a video file would give them)."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for t in range(frames):
        cx, cy, r = size * (0.35 + 0.3 * t / (frames - 1)), size * 0.5, size * 0.22
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        angle = math.pi / 2 * t / (frames - 1)
        stripe = ((x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)) > 0
        image = torch.full((3, size, size), 255, dtype=torch.uint8)
        image[:, inside & stripe] = torch.tensor([200, 40, 30], dtype=torch.uint8)[:, None]
        image[:, inside & ~stripe] = torch.tensor([30, 60, 190], dtype=torch.uint8)[:, None]
        out.append(image)
    return torch.stack(out)


def synthetic_orbit(size: int, views: int = 21) -> torch.Tensor:
    """(views, 3, size, size) uint8: SV3D's orbit stand-in, smooth random colour fields, the input view last."""
    g = torch.Generator().manual_seed(5)
    coarse = torch.rand(views, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 255).round().byte()


def procedure_fixture(root: Path, name: str) -> dict:
    """The reference script's sample() on a tiny model: every view of every frame it saves."""
    from tests.sv4d_tiny import CLIP, UNET, VAE_CONFIG, VECTOR_WIDTHS, checksum, tiny_file_tensors
    from svdcli.models.clip import ImageEncoder

    encoders = importlib.import_module("sgm.modules.encoders.modules")
    video_model = importlib.import_module("sgm.modules.diffusionmodules.video_model")
    denoisers = importlib.import_module("sgm.modules.diffusionmodules.denoiser")
    wrappers = importlib.import_module("sgm.modules.diffusionmodules.wrappers")
    decoders = importlib.import_module("sgm.modules.diffusionmodules.model")
    helpers = importlib.import_module("scripts.demo.sv4d_helpers")
    script = importlib.import_module("scripts.sampling.simple_video_sample_4d" if name == "sv4d" else
                                     "scripts.sampling.simple_video_sample_4d2")
    frames, views = MODELS[name]["frames"], MODELS[name]["views"]
    tensors = tiny_file_tensors(name, PROCEDURE["weights_seed"])

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    switches = MODELS[name]
    unet = reference_unet(video_model, switches, UNET["model_channels"], list(UNET["channel_mult"]),
                          [2 ** i for i, on in enumerate(UNET["attention_levels"]) if on], UNET["head_dim"],
                          UNET["context_dim"], UNET["adm_in_channels"])
    unet.load_state_dict(part("model.diffusion_model."))

    ddconfig = dict(attn_resolutions=[], attn_type="vanilla", ch=VAE_CONFIG.channels,
                    ch_mult=list(VAE_CONFIG.channel_mult), double_z=True, dropout=0.0, in_channels=3,
                    num_res_blocks=VAE_CONFIG.num_res_blocks, out_ch=3, resolution=256, z_channels=4)
    autoencoder = {"target": "sgm.models.autoencoder.AutoencoderKLModeOnly",
                   "params": {"embed_dim": 4, "ddconfig": ddconfig, "lossconfig": {"target": "torch.nn.Identity"}}}
    zero = {"target": "sgm.modules.diffusionmodules.sigma_sampling.ZeroSampler"}

    def encoder_embedder(key: str, n: int, **more) -> dict:
        return {"input_key": key, "target": "sgm.modules.encoders.modules.VideoPredictionEmbedderWithEncoder",
                "params": {"is_ae": True, "n_cond_frames": n, "n_copies": 1, "encoder_config": autoencoder,
                           "sigma_sampler_config": zero, **more}}

    def angle(key: str, width: int) -> dict:
        return {"input_key": key, "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
                "params": {"outdim": width}}

    class OurImageEncoder(encoders.AbstractEmbModel):
        """FrozenOpenCLIPImagePredictionEmbedder with our CLIP tower in place of open_clip's."""

        def __init__(self, n_cond_frames: int):
            super().__init__()
            self.n_cond_frames, self.tower = n_cond_frames, ImageEncoder(CLIP).eval()
            self.tower.load_state_dict(part("conditioner.embedders.0.open_clip.model.visual."))

        def forward(self, vid):
            out = self.tower.encode_image(vid)
            return out.view(-1, self.n_cond_frames, out.shape[-1])

    sys.modules[__name__].OurImageEncoder = OurImageEncoder  # instantiate_from_config finds it by name
    conditioner = encoders.GeneralConditioner([
        {"input_key": "cond_frames_without_noise", "target": f"{__name__}.OurImageEncoder",
         "params": {"n_cond_frames": frames}},
        encoder_embedder("cond_frames", frames * views, sigma_cond_config={
            "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
            "params": {"outdim": VECTOR_WIDTHS[0]}}),
        angle("polar_rad", VECTOR_WIDTHS[1]), angle("azimuth_rad", VECTOR_WIDTHS[2]),
        encoder_embedder("cond_view", views), encoder_embedder("cond_motion", frames)])
    for i in (1, 4, 5):
        missing = conditioner.embedders[i].encoder.load_state_dict(part(f"conditioner.embedders.{i}.encoder."),
                                                                   strict=False).missing_keys
        assert all(k.startswith(("decoder.", "post_quant_conv.")) for k in missing)  # the unused decoder
    decoder = decoders.Decoder(**ddconfig).eval()
    decoder.load_state_dict(part("first_stage_model.decoder."))
    forked = conditioner.get_unconditional_conditioning

    def conditioning(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):  # a GPU draws these from its own generator
            return forked(*args, **kwargs)
    conditioner.get_unconditional_conditioning = conditioning

    class Engine:
        """What the script uses of the DiffusionEngine that load_model builds from the YAML."""
        scale_factor, en_and_decode_n_samples_a_time = 0.18215, None

        def __init__(self):
            self.conditioner, self.model = conditioner, wrappers.OpenAIWrapper(unet)
            self.denoiser = denoisers.Denoiser({"target": "sgm.modules.diffusionmodules.denoiser_scaling."
                                                          "VScalingWithEDMcNoise"})
            self.first_stage_model = types.SimpleNamespace(decoder=decoder, decode=decoder)

        @contextlib.contextmanager
        def ema_scope(self):
            yield

        def decode_first_stage(self, z):  # DiffusionEngine's, for a frame-wise decoder
            z = z / self.scale_factor
            n = self.en_and_decode_n_samples_a_time or len(z)
            return torch.cat([self.first_stage_model.decode(z[i:i + n]) for i in range(0, len(z), n)])

    size = PROCEDURE["size"]
    clip_uint8, orbit_uint8 = synthetic_clip(size), synthetic_orbit(size)
    clip = clip_uint8.float() / 255 * 2 - 1
    orbit = orbit_uint8.float() / 255 * 2 - 1
    saved = {}
    script.preprocess_video = lambda *args, **kwargs: "clip"
    script.read_video = lambda path, n_frames, device: [frame[None] for frame in clip]
    script.load_model = lambda *args, **kwargs: (Engine(), None)
    script.save_video = lambda file_name, images, fps=10: saved.update({Path(file_name).stem[7:]: torch.cat(images)})
    if name == "sv4d":
        script.sample_sv3d = lambda *args, **kwargs: orbit.clone()
        script.initial_model_load = lambda model: model  # the U-Net stays float32
    helpers.load_module_gpu = helpers.unload_module_gpu = lambda module: None
    sampler = helpers.EulerEDMSampler
    helpers.EulerEDMSampler = lambda *args, **kwargs: sampler(*args, **kwargs, device="cpu")
    to = torch.Tensor.to
    torch.Tensor.to = lambda self, *args, **kwargs: to(self, *("cpu" if a == "cuda" else a for a in args), **kwargs)
    try:
        with torch.no_grad(), tempfile.TemporaryDirectory() as out:
            common = dict(input_path="clip.mp4", output_folder=out, num_steps=PROCEDURE["steps"][name], img_size=size,
                          seed=PROCEDURE["seed"], device="cuda")
            if name == "sv4d":
                script.sample(**common, elevations_deg=10.0)
            else:
                script.sample(**common, model_path=f"checkpoints/{name}.safetensors", elevations_deg=0.0)
    finally:
        torch.Tensor.to, helpers.EulerEDMSampler = to, sampler
    grid = torch.stack([clip] + [saved[f"v{v:03d}"] for v in range(1, views + 1)], dim=1)  # (21, V + 1, 3, H, W)
    out = ((grid + 1) / 2 * 255).round().clamp(0, 255).byte()
    return {"clip": clip_uint8, "orbit": orbit_uint8, "out": out.contiguous(),
            "config": dict(model=name, **{k: v for k, v in PROCEDURE.items() if k != "steps"},
                           steps=PROCEDURE["steps"][name], weights_checksum=checksum(tensors),
                           tiny=dict(unet=UNET, vae=str(VAE_CONFIG), clip=str(CLIP)))}


def save(fixture: dict, path: Path) -> None:
    config = fixture.pop("config")
    save_file({k: v.contiguous() for k, v in fixture.items()}, str(path), metadata={"config": json.dumps(config)})
    print(f"{path.relative_to(OUT.parent.parent.parent)}: {path.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path, help="a checkout of Stability-AI/generative-models")
    args = parser.parse_args()
    spacetime, video_model, guiders = import_reference(args.reference.resolve())
    OUT.mkdir(parents=True, exist_ok=True)
    save(guidance_fixture(guiders), OUT / "guidance.safetensors")
    for i, (name, switches) in enumerate(MODELS.items()):
        save(transformer_fixture(spacetime, name, switches, seed=10 + i), OUT / f"{name}_transformer.safetensors")
        save(unet_fixture(video_model, name, switches, seed=20 + i), OUT / f"{name}_unet.safetensors")
    for name in MODELS:
        save(procedure_fixture(args.reference.resolve(), name), OUT / f"{name}_procedure.safetensors")


if __name__ == "__main__":
    main()
