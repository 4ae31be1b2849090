"""Image to video, as the reference samples it (generative-models' simple_video_sample.py and its sampler).

    pipe = VideoPipeline(svdcli.load(...), device, dtype)
    result = pipe.generate(image, settings, seed=7)       # image: (1, 3, H, W) in [-1, 1]
    result.frames                                           # (T, 3, H, W) float32 in [0, 1], on the CPU

generate = sample (encode the image, denoise: the expensive part) + decode (latents to frames, which retries in less
memory rather than fail; decoding.py).
"""

from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..checkpoints.loader import LoadedModel
from ..models.layers import timestep_embedding
from ..models.unet import DeepFeatureCache
from ..models.vae import SCALE_FACTOR
from ..runtime.devices import synchronize
from ..runtime.offload import MODES, ModelOffload, SequentialOffload, unet_blocks
from ..runtime.progress import Progress
from ..runtime.quantize import has_stored_weights
from .decoding import Decoded, decode_latents, temporal_windows, window_weights
from .flops import unet_call_flops
from .sampling import (Denoiser, LinearFrameGuidance, Scalings, TriangleFrameGuidance, calls_per_step, lcm_sigmas,
                       pin_frames, sigma_schedule, sample_bidirectional, sample_with, time_reversal_fusion, windowed)



def _loaded(module: torch.nn.Module) -> bool:
    return not any(t.is_meta for t in module.parameters())


@dataclass(frozen=True)
class SamplingSettings:
    frames: int = 14
    steps: int = 25
    fps_id: int = 6  # the conditioning value; the reference's videos play at fps_id + 1
    motion_bucket_id: int = 127
    noise_aug: float = 0.02
    cfg_min: float = 1.0
    cfg_max: float = 2.5
    guidance: str = "linear"  # "linear" (SVD) or "triangle" (SV3D)
    decode_chunk: int = 0  # frames decoded at once; 0: the most that fit in free memory
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    polars_rad: tuple[float, ...] | None = None  # SV3D_p camera, one per frame
    azimuths_rad: tuple[float, ...] | None = None
    window: int = 0  # frames sampled at once; 0: all of them (one window)
    overlap: int = 4  # frames a window shares with the one before
    keyframes: str = "fusion"  # how a clip with an end frame is sampled: fusion or bidirectional
    sampler: str = "euler"  # sampling.SAMPLERS
    schedule: str = "karras"  # sampling.SCHEDULES (the lcm sampler has its own: sampling.lcm_sigmas)
    cache: int = 0  # the whole U-Net every this many calls, deep features reused between (DeepFeatureCache); 0: off


KEYFRAME_METHODS = ("fusion", "bidirectional")
CACHE_DEPTH = 2  # blocks at each end a cached call runs: DeepCache's choice for SVD (its cache_branch 0)


@dataclass
class CachedCalls:
    """One denoiser's feature caches (one per guidance half) and their schedule: the whole U-Net at calls 0, every,
    2·every, ... (DeepCache's uniform schedule), the shallow blocks over the kept deep features at the others."""
    every: int
    calls: int = 0
    refresh: bool = True
    halves: dict[int, DeepFeatureCache] = field(default_factory=dict)

    def next_call(self) -> None:
        self.refresh = not cached_call(self.every, self.calls)
        self.calls += 1

    def half(self, half: int) -> DeepFeatureCache:
        cache = self.halves.setdefault(half, DeepFeatureCache(CACHE_DEPTH))
        cache.refresh = self.refresh
        return cache


def cached_call(every: int, index: int) -> bool:
    """Whether a denoiser's call `index` runs on cached features under a refresh every `every` calls (0, 1: none)."""
    return every > 1 and index % every != 0


@dataclass(frozen=True)
class GuidanceSplit:
    """The two halves of guidance in two processes (svd generate --gpus 2: torchrun, one GPU each, in one process
    group): rank 0 evaluates the unconditional half, rank 1 the conditional one, and an all-gather gives both
    processes both halves, in the order one process batches them: the same estimate in each, so they step alike."""
    rank: int

    def gather(self, half: Tensor) -> Tensor:
        import torch.distributed as dist

        halves = [torch.empty_like(half) for _ in range(2)]
        dist.all_gather(halves, half.contiguous())
        return torch.cat(halves)


@dataclass
class GenerateResult:
    frames: Tensor  # (T, 3, H, W) in [0, 1]
    seed: int
    latents: Tensor  # (T, 4, h, w), scaled latent space


def with_input_view(architecture: str, frames: Tensor, image: Tensor) -> Tensor:
    """SV3D's last view is the input view by construction: it is replaced by the input image itself (frames in
    [0, 1], image (1, 3, H, W) in [-1, 1]). Other models' frames are returned as they are."""
    if architecture.startswith("sv3d"):
        frames[-1] = ((image[0].float().cpu() + 1) / 2).clamp(0, 1)
    return frames


def vector_widths(model: LoadedModel) -> list[tuple[str, int]]:
    """The pieces of the vector conditioning with their embedding widths, scaled to the model's vector width (the
    released models use 256 per scalar and 512 per camera angle)."""
    layout = model.architecture.vector_layout
    total = sum(w for _, w in layout)
    adm = model.architecture.unet.adm_in_channels
    return [(name, w * adm // total) for name, w in layout]


def conditioning_vector(model: LoadedModel, settings: SamplingSettings) -> Tensor:
    """y for every frame: (T, adm). Scalars are embedded with the same sinusoid as time, then concatenated."""
    t = settings.frames
    values = {"fps_id": [float(settings.fps_id)] * t, "motion_bucket_id": [float(settings.motion_bucket_id)] * t,
              "cond_aug": [float(settings.noise_aug)] * t}
    if model.architecture.name == "sv3d_p":
        cameras = (settings.polars_rad, settings.azimuths_rad)
        if any(angles is None or len(angles) != t for angles in cameras):
            raise ValueError(f"sv3d_p needs one polar and one azimuth angle per frame ({t})")
        values.update(polar_rad=list(settings.polars_rad), azimuth_rad=list(settings.azimuths_rad))
    pieces = [timestep_embedding(torch.tensor(values[name], dtype=torch.float64), width)
              for name, width in vector_widths(model)]
    return torch.cat(pieces, dim=1)


class VideoPipeline:
    """Holds a loaded model for one device. The image encoder and U-Net compute in `dtype`; the VAE runs in float32,
    as the reference runs it (autocast disabled for the first stage).

    offload: "none", "model" or "sequential" (see offload.py). The library honours the mode on any device (on the
    CPU it only adds bookkeeping); the CLI turns it off where there is no accelerator.
    decode_overlap: frames shared by neighbouring decode windows (decoding.py).
    attention_slice: tokens per slice in the transformers (None: unsliced); same results, bounded memory.
    compile: run the U-Net through torch.compile (not with sequential offload, whose streaming hooks would break the
    compiled graph at every block)."""

    def __init__(self, model: LoadedModel, device: torch.device, dtype: torch.dtype, offload: str = "none",
                 decode_overlap: int = 0, attention_slice: int | None = None, compile: bool = False):
        if offload not in MODES:
            raise ValueError(f"offload {offload!r}: choose one of {', '.join(MODES)}")
        if compile and offload == "sequential":
            raise ValueError("compile cannot be combined with offload sequential (the U-Net's weights change at every "
                             "block); use offload model with compile, or sequential without it")
        self.model, self.device, self.dtype, self.offload = model, torch.device(device), dtype, offload
        self.decode_overlap, self.compiled = decode_overlap, compile
        # the last clip's work: U-Net evaluations (guidance halves counted apart, both processes' with a guidance
        # split) and their counted FLOPs
        self.unet_calls, self.unet_flops, self.flops_by_shape = 0, 0, {}
        self.guidance_split: GuidanceSplit | None = None
        model.unet.set_max_tokens(attention_slice)
        place = self.device if offload == "none" else torch.device("cpu")
        for module in (model.unet, model.image_encoder):  # stored (quantised) weights keep their storage dtype
            if not _loaded(module):
                continue  # a component left on the meta device (an engine that only decodes)
            module.to(device=place) if has_stored_weights(module) else module.to(place, dtype)
        model.vae.to(device=place, dtype=torch.float32)
        self.mover = ModelOffload(self.device) if offload != "none" else None
        self.streamer = SequentialOffload(unet_blocks(model.unet), self.device) if offload == "sequential" else None
        # torch.compile: shapes are static within a clip, so one compilation serves every step (and every clip of a
        # batch with the same settings); the first step pays for it.
        self.unet = torch.compile(model.unet, dynamic=False) if compile else model.unet

    def phase(self, *modules):
        """Context in which `modules` are on the device (a no-op without offloading)."""
        return self.mover.phase(*modules) if self.mover else nullcontext()

    def keep_on_device(self, module: torch.nn.Module) -> None:
        """Move `module` to the device and keep it there through every phase (a U-Net being trained)."""
        module.to(self.device)
        if self.mover:
            self.mover.resident.add(module)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.model.architecture.vae.channel_mult) - 1)

    def draw_noise(self, seed: int, image_shape: tuple[int, ...], frames: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The reference's two draws from one CPU generator: ε for the conditioning image (1, 3, H, W), then the
        initial latent noise (T, 4, h, w). CPU draws make one seed give the same video on every device.
        generator: the seeded generator to draw from, where the caller draws more after these."""
        g = generator or torch.Generator("cpu").manual_seed(seed)
        eps_image = torch.randn(image_shape, generator=g)
        h, w = image_shape[-2] // self.downscale, image_shape[-1] // self.downscale
        eps_latent = torch.randn((frames, self.model.architecture.vae.z_channels, h, w), generator=g)
        return eps_image, eps_latent

    @torch.no_grad()
    def encode_condition(self, image: Tensor, eps_image: Tensor, settings: SamplingSettings) -> tuple[Tensor, Tensor]:
        """CLIP embedding of the clean image (1, 1, D) and the unscaled VAE mean of image + noise_aug·ε (1, 4, h, w)."""
        image = image.to(self.device, torch.float32)
        with self.phase(self.model.image_encoder):
            clip = self.model.image_encoder.encode_image(image)
        vae = self.model.vae
        with self.phase(vae.encoder, vae.quant_conv):
            latent = vae.encode(image + settings.noise_aug * eps_image.to(self.device))
        return clip[:, None].float(), latent

    @torch.no_grad()
    def decode(self, latents: Tensor, chunk: int = 0, progress: Progress | None = None,
               tile: tuple[int, int] | None = None, most: int = 0) -> Decoded:
        """(T, 4, h, w) scaled latents -> frames (T, 3, H, W) in [0, 1]: windows of `chunk` frames (0: as many as
        fit, up to `most` if given) overlapping by decode_overlap frames, in latent tiles of `tile` (h, w) if given;
        fewer frames or smaller tiles when memory runs out (decoding.decode_latents, which raises DecodeOutOfMemory
        at the end)."""
        vae = self.model.vae
        parts = [vae.decoder] + ([vae.post_quant_conv] if hasattr(vae, "post_quant_conv") else [])
        with self.phase(*parts):
            decoded = decode_latents(vae, latents, self.device, chunk, self.decode_overlap, tile, progress, most)
        return decoded

    def frame_denoiser(self, clip: Tensor, latent: Tensor, y: Tensor, frames: int, unconditional: bool = True,
                       cache: CachedCalls | None = None) -> Denoiser:
        """D(x; σ) of a clip conditioned on one image, (conditional, unconditional or None): clip (1, 1, D) and
        latent (1, 4, h, w) from encode_condition, y (T, adm). The unconditional branch zeroes only the CLIP token
        and the conditioning latent; y is the same. cache: the U-Net's deep features reused between calls.

        The halves go through the U-Net one after the other, each a batch of T frames, rather than as one batch of
        2·T: the same work, half the activations' memory, and the same batch shapes as in the two processes of a
        guidance split (self.guidance_split), so that those give the very frames one process gives (a matrix
        product's rounding can depend on its batch size)."""
        context = clip.to(self.dtype).expand(frames, -1, -1)  # (T, 1, D)
        concat = latent.to(self.dtype).expand(frames, -1, -1, -1)  # (T, 4, h, w)
        conditions = {0: (torch.zeros_like(context), torch.zeros_like(concat)), 1: (context, concat)}
        split = self.guidance_split if unconditional else None
        here = ([0, 1] if unconditional else [1]) if split is None else [split.rank]  # 0: unconditional, 1: cond.
        unet, dtype, t, total = self.unet, self.dtype, frames, 1 + int(unconditional)

        def denoise(x: Tensor, sigma: Tensor):
            sc = Scalings.at(sigma.float())
            x_in, c_noise = (sc.c_in * x).to(dtype), sc.c_noise.expand(t).to(self.device)
            if cache:
                cache.next_call()
            outs = []
            for half in here:
                half_context, half_concat = conditions[half]
                net_in = torch.cat([x_in, half_concat], dim=1)  # (T, 8, h, w)
                outs.append(unet(net_in, c_noise, half_context, y, t, cache=cache.half(half) if cache else None))
            out = torch.cat(outs).float()
            self.count_call(total, t, *x.shape[-2:], 0 if not cache or cache.refresh else CACHE_DEPTH)
            if split:
                out = split.gather(out)
            d = sc.c_skip * x.repeat(total, 1, 1, 1) + sc.c_out * out
            return (d[t:], d[:t]) if unconditional else (d, None)
        return denoise

    def call_flops(self, halves: int, frames: int, height: int, width: int, cached_depth: int = 0) -> int:
        """FLOPs of one U-Net forward over `halves` clips of `frames` latent frames (a cached call of that depth if
        given), counted once per shape on the meta device."""
        key = (halves, frames, height, width, cached_depth)
        if key not in self.flops_by_shape:
            self.flops_by_shape[key] = unet_call_flops(self.model.architecture.unet, halves, frames, height, width,
                                                       cached_depth)
        return self.flops_by_shape[key]

    def count_call(self, halves: int, frames: int, height: int, width: int, cached_depth: int = 0) -> None:
        """Add U-Net forwards over `halves` clips of `frames` latent frames (cached ones of that depth, if given)
        to the clip's work."""
        self.unet_calls += halves
        self.unet_flops += self.call_flops(halves, frames, height, width, cached_depth)

    @torch.no_grad()
    def generate(self, image: Tensor, settings: SamplingSettings, seed: int, progress: Progress | None = None,
                 tile: tuple[int, int] | None = None) -> GenerateResult:
        latents = self.sample(image, settings, seed, progress).cpu()
        frames = self.decode(latents, settings.decode_chunk, progress, tile).frames
        return GenerateResult(with_input_view(self.model.architecture.name, frames, image), seed, latents)

    @torch.no_grad()
    def sample(self, image: Tensor, settings: SamplingSettings, seed: int, progress: Progress | None = None,
               end: Tensor | None = None) -> Tensor:
        """The denoised latents (N, 4, h, w) of a clip whose first frame is `image`, on the device.

        One window, the reference's sampling, unless settings.window is below settings.frames: then windows of that
        many frames, spread evenly, each sharing at least settings.overlap frames with the next, all denoised
        together (sampling.windowed). The first window is conditioned on the image; each later one on the
        image's CLIP embedding and on the latest estimate of its own first frame, without guidance (cfg_min for all
        its frames): guidance towards a frame that is itself generated compounds, window after window, into
        drifting colours (docs/generate.md, "Long clips").

        end: the last frame ((1, 3, H, W) in [-1, 1]; `image` itself for a loop): the last window runs between its
        start and the end, by settings.keyframes: "fusion" (time_reversal_fusion with the end, and the image where
        the window starts the clip, pinned) or "bidirectional" (sample_bidirectional; one window only).

        Noise from one CPU generator, in this order: the image's ε and the first window's noise (as the reference
        draws them, so one window of a seed starts from the reference's noise), the end's ε, the noise of the
        frames after the first window, and the stochastic samplers' fresh noise at each step (settings.sampler:
        sampling.SAMPLERS; the bidirectional sampler's re-noising)."""
        n = settings.frames
        t = min(settings.window or n, n)
        windows = temporal_windows(n, t, settings.overlap)
        self.unet_calls = self.unet_flops = 0
        if len(windows) > 1 and not 1 <= settings.overlap < t:
            raise ValueError(f"overlap {settings.overlap}: windows must share at least one frame and fewer than {t}")
        bidirectional = end is not None and settings.keyframes == "bidirectional"
        if bidirectional and len(windows) > 1:
            raise ValueError("keyframes bidirectional samples one window: use fusion for clips longer than the window")
        if bidirectional and settings.sampler != "euler":
            raise ValueError("keyframes bidirectional has its own sampler: use sampler euler with it")
        g = torch.Generator("cpu").manual_seed(seed)
        eps_image, noise = self.draw_noise(seed, tuple(image.shape), t, generator=g)  # noise: the first window's
        eps_end = torch.randn(tuple(end.shape), generator=g) if end is not None else None
        if n > t:
            noise = torch.cat([noise, torch.randn((n - t, *noise.shape[1:]), generator=g)])
        noise = noise.to(self.device)
        if progress:
            progress("encode", 0, 1)
        clip, latent = self.encode_condition(image, eps_image, settings)
        if end is not None:
            clip_end, latent_end = self.encode_condition(end, eps_end, settings)
            vae = self.model.vae
            with self.phase(vae.encoder, vae.quant_conv):  # the bounds themselves, in the sampled latents' space
                bounds = vae.encode(torch.cat([image, end]).to(self.device, torch.float32)) * SCALE_FACTOR
        if progress:
            synchronize(self.device)
            progress("encode", 1, 1)
        y = conditioning_vector(self.model, replace(settings, frames=t)).to(self.device, self.dtype)
        guidance = TriangleFrameGuidance if settings.guidance == "triangle" else LinearFrameGuidance
        ramp = guidance(settings.cfg_min, settings.cfg_max).scales(t)
        scales = [ramp] + [torch.full_like(ramp, settings.cfg_min)] * (len(windows) - 1)
        guides = [bidirectional or not torch.all(s == 1.0) for s in scales]  # scales all 1: no unconditional pass
        last = len(windows) - 1
        denoisers = [1 + int(guide) for guide in guides] + ([1 + int(guides[0])] if end is not None else [])
        every = settings.cache
        caches = [CachedCalls(every) if every > 1 else None for _ in denoisers]  # each window's, then the end's
        if settings.sampler == "lcm":
            sigmas = lcm_sigmas(settings.steps, settings.sigma_min, settings.sigma_max)
        else:
            sigmas = sigma_schedule(settings.schedule, settings.steps, settings.sigma_min, settings.sigma_max)
        on_step = self.steps_to(progress, self.step_flops(settings, denoisers, t, *latent.shape[-2:]))
        if bidirectional:
            with self.phase(self.model.unet) if self.offload == "model" else nullcontext():
                return sample_bidirectional(self.frame_denoiser(clip, latent, y, t, True, caches[0]),
                                            self.frame_denoiser(clip_end, latent_end, y, t, True, caches[1]), noise,
                                            sigmas, bounds[0], bounds[1], 1.0,
                                            lambda: torch.randn(noise.shape, generator=g), on_step=on_step)

        first_window = self.frame_denoiser(clip, latent, y, t, guides[0], caches[0])
        end_window = self.frame_denoiser(clip_end, latent_end, y, t, guides[0], caches[-1]) if end is not None \
            else None

        def window_denoiser(k: int, estimate: Tensor | None) -> Denoiser:
            if k == 0:
                denoise = first_window
            else:  # conditioned on the estimate of its first frame (unscaled, as encoded), the image before one
                start = windows[k][0]
                condition = latent if estimate is None else estimate[start:start + 1] / SCALE_FACTOR
                denoise = self.frame_denoiser(clip, condition, y, t, guides[k], caches[k])
            if end is None or k < last:
                return denoise
            fused = time_reversal_fusion(denoise, end_window, scales[k], ramp)
            return pin_frames(fused, [0, t - 1] if k == 0 else [t - 1], bounds if k == 0 else bounds[1:])

        denoise = windowed(window_denoiser, windows, window_weights(windows), scales)
        with self.phase(self.model.unet) if self.offload == "model" else nullcontext():  # guidance is in denoise
            return sample_with(settings.sampler, denoise, noise, sigmas, torch.ones(n),
                               lambda: torch.randn(noise.shape, generator=g), on_step)

    def step_flops(self, settings: SamplingSettings, denoisers: list[int], frames: int, height: int,
                   width: int) -> list[int]:
        """The FLOPs this process will spend at each step, before any is run: every denoiser (`denoisers`: the
        guidance halves of each) calls the U-Net once per step (Heun: twice but at the last), on cached features
        at the calls the cache schedule gives, and with a guidance split this process evaluates one half."""
        split = self.guidance_split is not None
        flops, index = [], 0
        for calls in calls_per_step(settings.sampler, settings.steps):
            depths = [CACHE_DEPTH if cached_call(settings.cache, index + j) else 0 for j in range(calls)]
            flops.append(sum(self.call_flops(1 if split and halves == 2 else halves, frames, height, width, depth)
                             for halves in denoisers for depth in depths))
            index += calls
        return flops

    def steps_to(self, progress: Progress | None, step_flops: list[int]):
        """The sampler's step callback reporting to progress (None without one): before the first step the FLOPs
        of all of them ("sample-flops"), then each step once the device has finished it, preceded by the FLOPs
        done so far ("sample-work"), so that an ETA can weigh the steps ahead by their work (a cached step is
        cheaper than a full one); the compiling first step marked as such."""
        if not progress:
            return None
        total = sum(step_flops)
        progress("sample-flops", total, len(step_flops))
        if self.compiled:
            progress("compile", 0, 1)  # the first call compiles: its time is not a step's

        def on_step(i: int, n: int) -> None:
            synchronize(self.device)  # the step is done, not just queued, when the callback reads its clock
            progress("sample-work", sum(step_flops[:i]), total)
            if i == 1 and self.compiled:
                progress("compile", 1, 1)
            progress("sample", i, n)
        return on_step
