"""`svd bench`: how fast, and in how much memory, each way of running runs on this machine, before any download.

The preset's architecture at full size with random weights (loader.random_model: N(0, 1/fan_in), drawn on the
device, no file), or the weights given, goes through the engine `svd generate` uses (generation.open_engine and
Engine.run) for a few steps in each configuration: offload mode × weights storage × compute dtype × compile. Per
configuration it measures seconds per step after the first (warm-up, compiling), encode and decode seconds, the
end-to-end time at the preset's step count, peak memory per phase, TFLOP/s and the share of the card's dense
16-bit peak, and the largest frame difference from the first configuration (offload modes must be exact). Then it
recommends the fastest configuration, and the fastest for each memory budget.
"""

import dataclasses
import datetime
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..checkpoints.loader import LoadedModel
from ..checkpoints.presets import Preset
from ..runtime.devices import DTYPES, is_out_of_memory, synchronize
from ..runtime.offload import MODES
from ..runtime.peak_memory import TensorBytes
from ..runtime.quantize import WEIGHT_DTYPES, import_bitsandbytes, weight_bytes
from .generation import Engine, EngineSettings, open_engine, resolve_options

GIB = 1024**3
# Dense (no sparsity) tensor-core peak for 16-bit inputs with float32 accumulation, TFLOP/s, from the vendors' data
# sheets: bf16 where the card has it, else fp16. The first name contained in the device's name counts.
DENSE_PEAK_TFLOPS = {"H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "GH200": 989, "B200": 2250,
                     "A100": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125, "RTX 4090": 165,
                     "RTX 6000 Ada": 365, "V100": 125, "T4": 65}
BUDGETS_GB = (6, 8, 12, 16, 24, 40, 80)


class BenchError(ValueError):
    """Settings the benchmark cannot run; one line for the user."""


@dataclass(frozen=True)
class BenchConfig:
    """One way of running: offload mode, how the U-Net's and image encoder's weights are stored, compute dtype,
    torch.compile. Written OFFLOAD:WEIGHTS:DTYPE[:compile], e.g. sequential:fp8:bf16."""
    offload: str = "none"
    weights_dtype: str = "bf16"
    dtype: str = "bf16"
    compile: bool = False

    @classmethod
    def parse(cls, text: str) -> "BenchConfig":
        parts = text.split(":")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "compile"):
            raise BenchError(f"configuration {text!r}: expected OFFLOAD:WEIGHTS:DTYPE[:compile], e.g. model:fp8:bf16")
        offload, weights, dtype = parts[:3]
        if offload not in MODES:
            raise BenchError(f"configuration {text}: offload {offload}: choose one of {', '.join(MODES)}")
        if weights not in WEIGHT_DTYPES:
            raise BenchError(f"configuration {text}: weights {weights}: choose one of {', '.join(WEIGHT_DTYPES)}")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise BenchError(f"configuration {text}: dtype {dtype}: choose one of fp32, fp16, bf16")
        return cls(offload, weights, dtype, len(parts) == 4)

    @property
    def name(self) -> str:
        return f"{self.offload}:{self.weights_dtype}:{self.dtype}" + (":compile" if self.compile else "")


def default_configs(device: torch.device) -> list[BenchConfig]:
    """A matrix that answers the usual questions: the fastest way, what offloading and 8-bit storage cost, and
    whether compiling pays. On a CPU: fp32 compute (half precision is emulated there) and the storage dtypes."""
    if device.type != "cuda":  # nothing to offload to: the storage dtypes alone
        return [BenchConfig.parse(c) for c in ("none:fp32:fp32", "none:fp16:fp32", "none:bf16:fp32", "none:fp8:fp32")]
    half = "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    names = [f"none:{half}:{half}", "none:fp16:fp16" if half == "bf16" else None, f"model:{half}:{half}",
             f"sequential:{half}:{half}", f"none:fp8:{half}", f"model:fp8:{half}", f"sequential:fp8:{half}",
             f"model:int8:{half}", f"none:{half}:{half}:compile"]
    return [BenchConfig.parse(n) for n in names if n]


@dataclass(frozen=True)
class BenchSettings:
    preset: Preset
    device: torch.device
    width: int
    height: int
    frames: int
    steps: int = 3  # steps run per configuration; the first is warm-up
    weights: Path | None = None  # None: random weights
    seed: int = 0
    vram_gb: float | None = None  # emulate a card with this much memory (CUDA only)
    decode_overlap: int = 4

    def __post_init__(self):
        if self.steps < 2:
            raise BenchError("steps must be at least 2: the first step is a warm-up")
        if self.vram_gb is not None and (self.device.type != "cuda" or self.vram_gb <= 0):
            raise BenchError("vram: a positive number of GB, on a CUDA device")


@dataclass
class Phase:
    seconds: float = 0.0
    allocated: int = 0  # peak bytes of tensors (weights included)
    reserved: int | None = None  # peak bytes the CUDA allocator held (None on the CPU)


@dataclass
class Row:
    config: BenchConfig
    status: str = "ok"  # ok, out of memory, skipped: ..., failed: ...
    load_s: float = 0.0
    step_s: float = 0.0  # after the first step
    first_step_s: float = 0.0  # warm-up: kernel selection, compiling
    estimate_s: float = 0.0  # encode + the preset's steps + decode
    step_tflops: float = 0.0
    peak_share: float | None = None  # of the card's dense 16-bit peak
    phases: dict[str, Phase] = field(default_factory=dict)
    decode_chunk: int = 0
    ran_as: str | None = None  # how it ran, where not as configured
    max_diff: float | None = None  # largest |frame difference| from the first configuration, in [0, 1]
    frames: np.ndarray | None = None

    @property
    def peak(self) -> int:
        """Bytes the whole run needs: the largest reserved (or allocated) peak of any phase."""
        return max(((p.reserved if p.reserved is not None else p.allocated) for p in self.phases.values()), default=0)

    def to_json(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("frames", "config", "phases")}
        out.update(config=self.config.name, peak_gib=round(self.peak / GIB, 3),
                   phases={n: {"seconds": round(p.seconds, 4), "allocated_gib": round(p.allocated / GIB, 3),
                               "reserved_gib": None if p.reserved is None else round(p.reserved / GIB, 3)}
                           for n, p in self.phases.items()})
        return out


@dataclass
class Report:
    device: str
    settings: dict
    rows: list[Row]
    fastest: str | None = None
    within_budget: dict[str, str | None] = field(default_factory=dict)  # "8 GB" -> the fastest config that fits
    diffusers: dict | None = None

    def to_json(self) -> dict:
        return {"svd_version": __version__, "torch": torch.__version__, "device": self.device,
                "date": datetime.date.today().isoformat(), "settings": self.settings,
                "rows": [r.to_json() for r in self.rows], "fastest": self.fastest,
                "within_budget": self.within_budget, "diffusers": self.diffusers}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / GIB:.1f} GiB, compute capability {p.major}.{p.minor}"
    return f"{device.type}, {torch.get_num_threads()} threads"


def dense_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DENSE_PEAK_TFLOPS.items() if k in name), None)


def test_picture(width: int, height: int) -> Image.Image:
    """A picture with structure (gradients and a block), so that the frames differ where settings differ."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    rgb = np.stack([x, y, 1 - x * y], -1)
    rgb[height // 3: height // 2, width // 3: width // 2] = 1.0
    return Image.fromarray((rgb * 255).astype(np.uint8))


class PhaseMeter:
    """The engine's progress callback: times each phase (the pipeline reports a phase's end once the device has
    finished it) and takes its peak memory, from the CUDA allocator or, on the CPU, by counting live tensors."""

    def __init__(self, device: torch.device, resident: int, counter: TensorBytes | None):
        self.device, self.resident, self.counter = device, resident, counter
        self.phases: dict[str, Phase] = {}
        self.started: dict[str, float] = {}
        self.steps: list[float] = []
        self.step_flops = 0
        self.decode_chunk = 0

    def _begin(self, phase: str) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.counter is not None:
            self.counter.mark()
        self.started[phase] = time.perf_counter()

    def end(self, phase: str) -> None:
        synchronize(self.device)
        seconds = time.perf_counter() - self.started[phase]
        if self.device.type == "cuda":
            self.phases[phase] = Phase(seconds, torch.cuda.max_memory_allocated(self.device),
                                       torch.cuda.max_memory_reserved(self.device))
        else:
            self.phases[phase] = Phase(seconds, self.resident + (self.counter.peak if self.counter else 0))

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "encode":
            self._begin("encode") if done == 0 else self.end("encode")
        elif stage == "sample-flops":  # bench runs every step alike (no cache): the mean is each step's
            self.step_flops = done // total
            self._begin("sample")
            self.steps = [self.started["sample"]]
        elif stage == "sample":
            self.steps.append(time.perf_counter())
            if done == total:
                self.end("sample")
        elif stage == "decode" and "decode" not in self.started:
            self._begin("decode")


def run_config(settings: BenchSettings, config: BenchConfig,
               note: Callable[[str], None]) -> tuple[Row, LoadedModel | None]:
    """One configuration end to end; the model is returned for the diffusers comparison (None if it failed)."""
    row = Row(config)
    device = settings.device
    gc.collect()  # the previous configuration's model and caches, before this one's are drawn
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if config.weights_dtype == "int8" and import_bitsandbytes() is None:
        row.status = "skipped: bitsandbytes is not installed"
        return row, None
    if config.compile and config.offload == "sequential":
        row.status = "skipped: compile cannot be combined with sequential offload"
        return row, None
    engine = None
    try:
        started = time.perf_counter()
        engine = open_engine(settings.preset, settings.weights, EngineSettings(
            str(device), config.dtype, config.offload, None if config.weights_dtype == config.dtype else
            config.weights_dtype, "auto", settings.decode_overlap, config.compile, seed=settings.seed))
        model = engine.pipe.model
        synchronize(device)
        row.load_s = time.perf_counter() - started
        if engine.info["offload"] != config.offload:
            row.ran_as = f"offload {engine.info['offload']}: nothing to offload to without an accelerator"
        frames, meta = _measured_run(engine, settings, row, model)
        row.frames = frames
        row.decode_chunk = meta["decode"]["chunk"]
        return row, model
    except Exception as error:  # noqa: BLE001  (a configuration that fails is a row of the table)
        if is_out_of_memory(error) or type(error).__name__ == "DecodeOutOfMemory":
            row.status = "out of memory"
        else:
            row.status = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        note(f"{config.name}: {row.status}")
        return row, None
    finally:
        del engine
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _measured_run(engine: Engine, settings: BenchSettings, row: Row, model: LoadedModel):
    """Time a run; the memory columns come from the CUDA allocator during it, or on the CPU from a second run that
    counts live tensors (counting slows small operations, so it does not run while the clock does)."""
    device = settings.device
    o, _ = resolve_options(settings.preset, frames=settings.frames, steps=settings.steps,
                           size=f"{settings.width}x{settings.height}", watermark=False)
    picture = test_picture(settings.width, settings.height)
    resident = sum(weight_bytes(m) for m in model.components().values())
    meter = PhaseMeter(device, resident, None)
    frames, meta = engine.run(picture, o, settings.seed, meter)
    meter.end("decode")
    row.phases = meter.phases
    if device.type != "cuda":
        counter = TensorBytes()
        counted = PhaseMeter(device, resident, counter)
        with counter:
            engine.run(picture, o, settings.seed, counted)
        counted.end("decode")
        for name, phase in row.phases.items():
            phase.allocated = counted.phases[name].allocated
    steps = np.diff(meter.steps)
    row.first_step_s = float(steps[0])
    row.step_s = float(steps[1:].mean())
    row.estimate_s = (row.phases["encode"].seconds + settings.preset.steps * row.step_s +
                      row.phases["decode"].seconds)
    row.step_tflops = meter.step_flops / row.step_s / 1e12
    peak = dense_peak(device)
    row.peak_share = row.step_tflops / peak if peak else None
    return frames, meta


def recommend(report: Report, total_memory: int | None) -> None:
    ok = [r for r in report.rows if r.status == "ok"]
    if not ok:
        return
    report.fastest = min(ok, key=lambda r: r.estimate_s).config.name
    if total_memory is None:
        return  # a CPU: no card to fit
    for budget in BUDGETS_GB:
        if budget * GIB > total_memory * 1.02:
            break
        fits = [r for r in ok if r.peak <= budget * GIB]
        report.within_budget[f"{budget} GB"] = min(fits, key=lambda r: r.estimate_s).config.name if fits else None


def run_bench(settings: BenchSettings, configs: list[BenchConfig], note: Callable[[str], None] = lambda _: None,
              compare_diffusers: bool = False, on_row: Callable[[Report], None] | None = None) -> Report:
    """Every configuration in turn; on_row gets the report so far after each (a run cut short keeps its rows)."""
    device = settings.device
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    if settings.vram_gb is not None:
        torch.cuda.set_per_process_memory_fraction(min(1.0, settings.vram_gb * GIB / total), device)
        total = int(settings.vram_gb * GIB)
    report = Report(device_name(device), {"preset": settings.preset.name, "width": settings.width,
                                          "height": settings.height, "frames": settings.frames,
                                          "steps": settings.steps, "preset_steps": settings.preset.steps,
                                          "weights": str(settings.weights) if settings.weights else "random",
                                          "vram_gb": settings.vram_gb}, [])
    baseline = None
    for config in configs:
        note(f"running {config.name}")
        row, model = run_config(settings, config, note)
        if row.frames is not None:
            if baseline is None:
                baseline = row.frames
            row.max_diff = float(np.abs(row.frames.astype(np.int16) - baseline.astype(np.int16)).max()) / 255
        plain = config.offload == "none" and config.weights_dtype == config.dtype and not config.compile
        if compare_diffusers and model is not None and report.diffusers is None and plain:
            report.diffusers = compare_with_diffusers(model, settings, row, note)
        row.frames = None
        del model
        report.rows.append(row)
        recommend(report, total)
        if on_row:
            on_row(report)
    return report


def diffusers_pipeline(model: LoadedModel):
    """diffusers' StableVideoDiffusionPipeline holding our very tensors (no second copy), with the hub's scheduler
    configuration for SVD and the reference's GroupNorm eps in the U-Net's res blocks."""
    import diffusers
    import transformers

    from ..checkpoints.saving import diffusers_configs, diffusers_state_dicts

    diffusers.utils.logging.set_verbosity_error()  # notices about casting and processors: not the user's concern
    transformers.utils.logging.set_verbosity_error()
    cfgs, sds = diffusers_configs(model.architecture), diffusers_state_dicts(model)
    with torch.device("meta"):
        unet = diffusers.UNetSpatioTemporalConditionModel.from_config(cfgs["unet"])
        vae = diffusers.AutoencoderKLTemporalDecoder.from_config(cfgs["vae"])
        clip = cfgs["image_encoder"]
        encoder = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
            **{k: v for k, v in clip.items() if k not in ("architectures", "model_type")}))
    for module, sd in ((unet, sds["unet"]), (vae, sds["vae"]), (encoder, sds["image_encoder"])):
        module.load_state_dict(sd, assign=True)
    embeddings = encoder.vision_model.embeddings  # its one buffer that is not in a checkpoint
    embeddings.register_buffer("position_ids", torch.arange(embeddings.num_positions)[None], persistent=False)
    for block in unet.modules():
        if isinstance(block, diffusers.models.resnet.SpatioTemporalResBlock):
            for norm in (block.spatial_res_block.norm1, block.spatial_res_block.norm2,
                         block.temporal_res_block.norm1, block.temporal_res_block.norm2):
                norm.eps = 1e-5
    scheduler = diffusers.EulerDiscreteScheduler(
        prediction_type="v_prediction", timestep_type="continuous", use_karras_sigmas=True, sigma_min=0.002,
        sigma_max=700.0, timestep_spacing="leading", steps_offset=1, beta_schedule="scaled_linear",
        beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, interpolation_type="linear")
    pipe = diffusers.StableVideoDiffusionPipeline(
        vae=vae.eval(), image_encoder=encoder.eval(), unet=unet.eval(), scheduler=scheduler,
        feature_extractor=transformers.CLIPImageProcessor(do_resize=False, do_center_crop=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compare_with_diffusers(model: LoadedModel, settings: BenchSettings, ours: Row,
                           note: Callable[[str], None]) -> dict:
    """diffusers' pipeline on the same weights, size, steps and decode chunk, timed in the same process."""
    import_bitsandbytes()  # diffusers imports it; this quiets its notices
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return {"status": "skipped: diffusers is not installed"}
    arch = model.architecture
    if arch.unet.norm_groups != 32 or arch.vae.norm_groups != 32 or arch.name not in ("svd", "svd_image_decoder"):
        return {"status": "skipped: diffusers has no layout for this architecture"}
    device, preset = settings.device, settings.preset
    note("running diffusers' StableVideoDiffusionPipeline on the same weights")
    try:
        pipe = diffusers_pipeline(model).to(device, DTYPES[ours.config.dtype])
        pipe.vae.to(torch.float32)  # as ours, and as the reference, decodes
        pipe.vae.config.force_upcast = True
        steps = []

        def on_step(pipeline, i, t, kwargs):
            synchronize(device)
            steps.append(time.perf_counter())
            return kwargs

        synchronize(device)
        started = time.perf_counter()
        with torch.no_grad():
            pipe(test_picture(settings.width, settings.height), height=settings.height, width=settings.width,
                 num_frames=settings.frames, num_inference_steps=settings.steps, min_guidance_scale=preset.cfg_min,
                 max_guidance_scale=preset.cfg_max, fps=preset.fps, motion_bucket_id=preset.motion_bucket,
                 noise_aug_strength=preset.noise_aug, decode_chunk_size=ours.decode_chunk or settings.frames,
                 generator=torch.Generator().manual_seed(settings.seed), output_type="np",
                 callback_on_step_end=on_step)
        synchronize(device)
        whole = time.perf_counter() - started
    except Exception as error:  # noqa: BLE001
        if not is_out_of_memory(error):
            return {"status": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        return {"status": "out of memory"}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    step_s = float(np.diff(steps).mean()) if len(steps) > 1 else float("nan")  # from the end of the first step
    ours_whole = sum(p.seconds for p in ours.phases.values())
    return {"status": "ok", "config": ours.config.name, "step_s": step_s, "run_s": whole,
            "step_ratio": step_s / ours.step_s, "run_ratio": whole / ours_whole, "ours_run_s": ours_whole}
