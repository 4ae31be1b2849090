"""What a first GPU run would meet, checked on the CPU: device and dtype choices with mocked CUDA capabilities,
tensors that `.to()` must move (the meta device stands in for the GPU), the CUDA grid limit of fused attention,
pinned-memory accounting, and decoding that runs out of memory (simulated)."""

import pytest
import torch

from svdcli.runtime import devices


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with four CUDA devices of the given capabilities (index -> (major, minor))."""
    state = {"current": None, "capability": {0: (7, 5), 1: (9, 0), 2: (8, 6), 3: (6, 1)}}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: state.update(current=torch.device(d)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what emulation claims

    def capability(device=None):
        index = torch.device(device).index if device is not None else None
        return state["capability"][index if index is not None else (state["current"] or torch.device("cuda", 0)).index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return state


def test_the_compute_dtype_follows_the_chosen_devices_capability(fake_cuda):
    # bf16 from compute capability 8.0; the T4 (7.5) and the P100 class (6.x) get fp16 whatever
    # is_bf16_supported() says, and each device is judged on its own, not on the current one.
    expected = {0: torch.float16, 1: torch.bfloat16, 2: torch.bfloat16, 3: torch.float16}
    for index, dtype in expected.items():
        fake_cuda["current"] = torch.device("cuda", 1)  # a bf16 device is current
        assert devices.resolve_dtype("auto", torch.device("cuda", index)) == dtype
    assert devices.resolve_dtype("fp32", torch.device("cuda", 0)) == torch.float32  # an explicit choice stands


@pytest.mark.parametrize("asked", ["auto", "cuda"])
def test_each_torchrun_rank_takes_its_own_gpu(fake_cuda, monkeypatch, asked):
    monkeypatch.setenv("RANK", "6")  # the global rank of a second node's third process
    monkeypatch.setenv("LOCAL_RANK", "2")
    device = devices.resolve_device(asked)
    assert device == torch.device("cuda", 2)
    assert fake_cuda["current"] == torch.device("cuda", 2)  # and made current, so streams and caches land there


def test_an_explicit_gpu_index_is_kept_and_checked(fake_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="4 CUDA device"):
        devices.resolve_device("cuda:7")


def test_batch_under_torchrun_maps_ranks_to_gpus(fake_cuda, monkeypatch):
    """svd batch's engine settings put rank r on cuda:LOCAL_RANK for --device cuda too (it did for auto only)."""
    from svdcli.cli.options import engine_settings

    monkeypatch.setattr(devices, "free_memory", lambda device: 80 * 1024**3)
    for local in range(4):
        monkeypatch.setenv("LOCAL_RANK", str(local))
        run = engine_settings("cuda", "auto", "none", None, "auto", 4, quiet=True).resolve()
        assert run.device == torch.device("cuda", local)
        assert run.dtype == (torch.bfloat16 if fake_cuda["capability"][local] >= (8, 0) else torch.float16)


def test_free_memory_honours_the_per_process_fraction(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * gib)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 1.0)
    cuda = torch.device("cuda", 0)
    assert devices.free_memory(cuda) == 72 * gib  # free on the card + the allocator's cached blocks
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 0.1)
    assert devices.free_memory(cuda) == 8 * gib - 1 * gib  # an emulated 8 GB card, 1 GB of it in use


def test_out_of_memory_errors_are_recognised():
    assert devices.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert devices.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not devices.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not devices.is_out_of_memory(ValueError("out of memory"))


def test_temporal_attention_never_launches_more_sequences_than_the_cuda_grid_holds(monkeypatch):
    """2 videos × 33,000 pixel sequences of 2 frames: 66,000 sequences, more than a grid axis's 65,535, with no
    slicing asked for (plenty of free memory). Same results as one call."""
    from svdcli.models import layers
    from svdcli.models.init import random_init
    from svdcli.models.unet import VideoTransformerBlock

    block = random_init(VideoTransformerBlock(16, 1, 8)).eval()
    x = torch.randn(2 * 2, 33_000, 16)
    context = torch.randn(2, 1, 8)
    sizes = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(q, k, v, *args, **kwargs):
        sizes.append(q.shape[0])
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    with torch.no_grad():
        out = block(x, context, num_frames=2, max_tokens=None)
        assert sizes and max(sizes) <= 65_535 and sum(sizes) == 2 * 66_000  # self- and cross-attention
        monkeypatch.setattr(layers, "MAX_ATTENTION_BATCH", 10**9)
        whole = block(x, context, num_frames=2, max_tokens=None)
    assert sizes[-2:] == [66_000, 66_000]
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)


# --- every tensor the model uses moves with it (the meta device stands in for the GPU) -----------------------------

from torch import nn  # noqa: E402

from svdcli.runtime import offload  # noqa: E402
from svdcli.media.images import to_tensor  # noqa: E402
from svdcli.checkpoints.loader import load  # noqa: E402
from svdcli.inference.lora import apply_loras, lora_targets, save_lora  # noqa: E402
from svdcli.models.unet import UNetConfig, VideoUNet  # noqa: E402
from svdcli.runtime.offload import SequentialOffload, unet_blocks  # noqa: E402
from svdcli.inference.pipeline import SamplingSettings, VideoPipeline  # noqa: E402
from svdcli.checkpoints.saving import save_single_file  # noqa: E402

from .conftest import tiny_model  # noqa: E402
from .test_pipeline import random_image  # noqa: E402

SETTINGS = SamplingSettings(frames=3, steps=2, cfg_min=1.0, cfg_max=2.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-paths")
    model = tiny_model("svd", seed=5)
    save_single_file(model, folder / "m.safetensors")
    g = torch.Generator().manual_seed(0)
    pairs = {}
    for name in lora_targets(model.unet, "locon")[::7]:  # linear and convolution layers alike
        layer = model.unet.get_submodule(name)
        a_shape = (4, layer.in_features) if isinstance(layer, nn.Linear) else (4, layer.in_channels,
                                                                             *layer.kernel_size)
        b_shape = (layer.out_features, 4) if isinstance(layer, nn.Linear) else (layer.out_channels, 4,
                                                                              *[1] * len(layer.kernel_size))
        pairs[name] = (torch.randn(a_shape, generator=g) * 0.1, torch.randn(b_shape, generator=g) * 0.1)
    save_lora(pairs, folder / "lora.safetensors", model.architecture, alpha=4.0)
    return folder


def stray_tensors(module: nn.Module, device_type: str) -> list[str]:
    """Tensors the module uses that are not on device_type: its parameters and buffers, tensors kept as plain
    attributes (of the module, of a state object it holds, or of a Parameter subclass), and tensors captured by its
    hooks' closures."""
    found = []

    def check(where, value):
        if isinstance(value, torch.Tensor) and value.device.type != device_type:
            found.append(where)

    for name, m in module.named_modules():
        for key, value in vars(m).items():
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            check(f"{name}.{key}", value)
            if hasattr(value, "__dict__") and not callable(value):
                for sub, v in vars(value).items():
                    check(f"{name}.{key}.{sub}", v)
        for key, value in [*m._parameters.items(), *m._buffers.items()]:
            check(f"{name}.{key}", value)
            for sub, v in (vars(value).items() if value is not None and hasattr(value, "__dict__") else ()):
                check(f"{name}.{key}.{sub}", v)
        for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()):
            for cell in getattr(hook, "__closure__", None) or ():
                check(f"{name} (a hook's closure)", cell.cell_contents)
    return found


@pytest.mark.parametrize("mode", ["none", "model", "sequential"])
@pytest.mark.parametrize("weights_dtype", [None, "fp8"])
def test_a_pipeline_with_a_lora_runs_wholly_on_the_device(checkpoint, mode, weights_dtype):
    """Sampling with the meta device as the accelerator: any tensor left on the CPU (a LoRA pair captured in a
    hook's closure, a quantisation scale) would make an operation mix devices and fail."""
    model = load(checkpoint / "m.safetensors", weights_dtype=weights_dtype)
    apply_loras(model.unet, model.architecture, [str(checkpoint / "lora.safetensors")])
    pipe = VideoPipeline(model, torch.device("meta"), torch.float32, offload=mode)
    if pipe.mover:
        pipe.mover.home = torch.device("meta")  # a meta tensor cannot be copied back to the CPU
    latents = pipe.sample(to_tensor(random_image(1)), SETTINGS, seed=3)
    assert latents.device.type == "meta" and latents.shape == (3, 4, 8, 16)
    if mode == "none":
        assert stray_tensors(model.unet, "meta") == []


@pytest.mark.parametrize("mode", ["none", "model"])
def test_int8_layers_move_with_their_quantisation_state(checkpoint, mode):
    pytest.importorskip("bitsandbytes")
    model = load(checkpoint / "m.safetensors", weights_dtype="int8")
    apply_loras(model.unet, model.architecture, [str(checkpoint / "lora.safetensors")])
    pipe = VideoPipeline(model, torch.device("meta"), torch.float32, offload=mode)
    if pipe.mover:
        pipe.mover.home = torch.device("meta")
    with pipe.phase(model.unet, model.image_encoder):
        assert stray_tensors(model.unet, "meta") == [] and stray_tensors(model.image_encoder, "meta") == []


@pytest.mark.parametrize("weights_dtype", ["fp8", "int8"])
def test_streamed_blocks_with_a_lora_give_the_frames_of_a_resident_model(checkpoint, weights_dtype):
    """Sequential offload on the CPU (the same copies into and out of each block's flat buffer as on a GPU)."""
    if weights_dtype == "int8":
        pytest.importorskip("bitsandbytes")
    frames = {}
    for mode in ("none", "sequential"):
        model = load(checkpoint / "m.safetensors", weights_dtype=weights_dtype)
        apply_loras(model.unet, model.architecture, [str(checkpoint / "lora.safetensors")])
        pipe = VideoPipeline(model, torch.device("cpu"), torch.float32, offload=mode)
        frames[mode] = pipe.generate(to_tensor(random_image(1)), SETTINGS, seed=3).frames
    assert torch.equal(frames["none"], frames["sequential"])


def test_each_streamed_block_is_one_page_locked_buffer_of_its_own_bytes(monkeypatch):
    """SVD's full-size U-Net (on the meta device): one page-locked buffer per block, within 5% of the block's bytes
    (pinned tensor by tensor, CUDA's host allocator rounded each to a power of two: about 1.3x)."""
    locked = []
    monkeypatch.setattr(offload, "page_lock", lambda buffer: locked.append(buffer.numel()) or buffer)
    with torch.device("meta"):
        unet = VideoUNet(UNetConfig()).to(torch.bfloat16)
    blocks = unet_blocks(unet)
    block_bytes = [sum(t.numel() * t.element_size() for t in (*b.parameters(), *b.buffers())) for b in blocks]
    streamer = SequentialOffload(blocks, torch.device("meta"), home=torch.device("meta"), pin=True)
    assert len(locked) == len(blocks)
    assert all(b <= n <= 1.05 * b for n, b in zip(locked, block_bytes))
    assert streamer.pinned_bytes == sum(locked) and sum(block_bytes) > 2.8 * 1024**3


def test_the_vae_is_read_straight_into_float32_whatever_the_compute_dtype(checkpoint):
    """An fp32 file loaded for bf16 compute: the U-Net takes bf16, the VAE keeps the file's exact fp32 values (it
    was rounded through bf16 before the pipeline widened it back)."""
    from svdcli.checkpoints.safetensors_io import SafetensorsFile

    model = load(checkpoint / "m.safetensors", dtype=torch.bfloat16)
    stored = SafetensorsFile(checkpoint / "m.safetensors")
    weight = model.vae.decoder.conv_in.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, stored.read("first_stage_model.decoder.conv_in.weight"))
    assert model.unet.input_blocks[0][0].weight.dtype == torch.bfloat16


def test_the_lora_update_computes_in_the_layers_dtype(checkpoint, monkeypatch):
    """bf16 compute: the pairs are cast to the activation's dtype, never the activation to float32 (a float32 copy
    of every targeted activation)."""
    from svdcli.inference import lora

    model = load(checkpoint / "m.safetensors", dtype=torch.bfloat16, weights_dtype="fp8")  # pairs stay float32
    apply_loras(model.unet, model.architecture, [str(checkpoint / "lora.safetensors")])
    seen = []
    update = lora.low_rank_update

    def recorded(x, a, b, layer):
        seen.append((x.dtype, a.dtype, b.dtype))
        return update(x, a, b, layer)

    monkeypatch.setattr(lora, "low_rank_update", recorded)
    pipe = VideoPipeline(model, torch.device("cpu"), torch.bfloat16)
    pipe.sample(to_tensor(random_image(1)), SamplingSettings(frames=2, steps=1), seed=1)
    assert seen and set(seen) == {(torch.bfloat16,) * 3}


def test_compile_with_sequential_offload_is_refused_before_loading(tmp_path):
    from typer.testing import CliRunner

    from svdcli.cli import app

    r = CliRunner().invoke(app, ["generate", str(tmp_path / "missing.png"), "--compile", "--offload", "sequential",
                                 "--quiet"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "--compile cannot be combined with --offload sequential" in r.stderr and "--offload model" in r.stderr
    with pytest.raises(ValueError, match="compile cannot be combined with offload sequential"):
        VideoPipeline(tiny_model(), torch.device("cpu"), torch.float32, offload="sequential", compile=True)


def test_the_printed_step_time_excludes_compiling_and_waits_for_the_device(monkeypatch):
    """The pipeline reports a step once the device has finished it, and marks the compiling first step; the view
    times the first step after compiling."""
    import io

    from rich.console import Console

    from svdcli.inference import pipeline
    from svdcli.cli.progress import ProgressView

    synced = []
    monkeypatch.setattr(pipeline, "synchronize", lambda device: synced.append(device))
    pipe = VideoPipeline(tiny_model(), torch.device("cpu"), torch.float32)
    pipe.compiled = True  # as torch.compile would run it, without minutes of compiling on this CPU
    events = []
    pipe.sample(to_tensor(random_image(1)), SamplingSettings(frames=2, steps=3), seed=1,
                progress=lambda *e: events.append(e[0] if e[0] != "sample" else e[:2]))
    assert events[events.index("compile"):] == ["compile", "sample-work", "compile", ("sample", 1), "sample-work",
                                                ("sample", 2), "sample-work", ("sample", 3)]
    assert len(synced) >= 4  # after encoding and after each step

    clock = iter([0.0, 100.0, 101.5, 103.0, 104.5])  # sample-flops, compiled, steps 1 (100 s: compiling) and 2, 3
    monkeypatch.setattr("svdcli.cli.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    with ProgressView(Console(file=out, force_terminal=True, width=200, color_system=None), quiet=False) as view:
        view("sample-flops", 4 * 3 * 10**12, 4)
        view("compile", 0, 1)
        view("sample-work", 3 * 10**12, 4 * 3 * 10**12)
        view("compile", 1, 1)
        for step in (1, 2, 3):
            if step > 1:
                view("sample-work", step * 3 * 10**12, 4 * 3 * 10**12)
            view("sample", step, 4)
    text = out.getvalue()
    assert "compiling the U-Net" in text
    assert "first step after compiling 1.5 s (2.000 TFLOP/s): about 3 s of denoising to go" in text
