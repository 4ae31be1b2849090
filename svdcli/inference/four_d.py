"""Stable Video 4D: a video of an object becomes the same motion seen from new viewpoints (SV4D, SV4D 2.0 and its
8-view model), by the procedures of the reference scripts (generative-models' simple_video_sample_4d.py, 4d2.py).

    settings = FourDSettings.for_model("sv4d", steps=20)
    grid = sample_4d(engine.pipe, clip, settings, seed, orbit)   # clip (21, 3, H, W) in [-1, 1]
    grid                                                          # (21, V + 1, 3, H, W) in [0, 1]: time × view

View 0 is the input video; views 1..V are new. A window is T frames × V views sampled together, frame-major. Every
window is conditioned on its T input frames (CLIP tokens and the concatenated latent of each frame, the same for
every view) and on the V views at one reference frame (their latents, read by the motion attention):
- SV4D (T 5, V 8): the reference frame-0 views come from an SV3D orbit of the first frame (its views 2, 5, 7, ... of
  21). An anchor pass samples frames 4, 8, 12, 16, 20 conditioned on them; then a dense pass samples the windows
  starting at 0, 4, 8, 12, 16, alternating every step between the window read backwards (conditioned on the views
  at its last frame, an anchor) and forwards (on the views at its first frame).
- SV4D 2.0 (T 12, V 4) and 8-view (T 5, V 8): windows one after the other, each conditioned on the views that the
  previous ones made at its first frame (the first window on none: zero latents).
Noise comes from one CPU generator seeded once, in the reference's order (SV4D: the anchor window's, then a
(21, V + 1) grid per dense window, of which the window's cells are used; SV4D 2.0: one window's per window), so a
seed gives the same views on every device."""

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from ..models.layers import timestep_embedding
from ..runtime.devices import synchronize
from ..runtime.progress import Progress
from ..runtime.settings import SettingsError, at_least, one_of
from .pipeline import VideoPipeline, vector_widths
from .sampling import LinearFrameGuidance, Scalings, SpacetimeGuidance, edm_sigmas, euler_step, initial_latents

FRAMES = 21  # every model makes 21 frames per view
SV3D_VIEWS = (0, 2, 5, 7, 9, 12, 14, 16, 19)  # SV4D's views in SV3D's 21-view orbit, the input view first
# Frames encoded at once: the encoder's activations take 0.64 GiB a frame at 576 x 576 in fp32 (bench/sv4d_memory.py),
# less than a window's U-Net call for 4 frames; frames are encoded independently, so the chunk changes no result.
ENCODE_FRAMES = 4


@dataclass(frozen=True)
class Layout:
    """What a model samples at once, and the reference script's cameras and object framing."""
    frames: int  # T: frames of a window
    views: int  # V: new views of a window
    elevation_deg: float
    azimuths_deg: tuple[float, ...]  # of the V new views, relative to the input view
    object_ratio: float  # the object's box / the frame's side (preprocess_video's image_frame_ratio)

    def window_starts(self, model: str) -> list[int]:
        """First frame of each window: SV4D's dense pass and the 8-view model step by T - 1 (neighbours share a
        frame); SV4D 2.0 steps by T, its last window moved back to end at the last frame."""
        if model == "sv4d2":
            return [min(t0, FRAMES - self.frames) for t0 in range(0, FRAMES, self.frames)]
        return list(range(0, FRAMES - self.frames + 1, self.frames - 1))


LAYOUTS = {
    "sv4d": Layout(5, 8, 10.0, tuple(v * 360 / 21 for v in SV3D_VIEWS[1:]), 0.917),
    "sv4d2": Layout(12, 4, 0.0, (60.0, 120.0, 180.0, 240.0), 0.9),
    "sv4d2_8views": Layout(5, 8, 0.0, (30.0, 75.0, 120.0, 165.0, 210.0, 255.0, 300.0, 330.0), 0.9),
}


def anchor_frames(layout: Layout) -> list[int]:
    """SV4D's anchor pass: every (T - 1)-th frame after the first."""
    return list(range(layout.frames - 1, FRAMES, layout.frames - 1))


@dataclass(frozen=True)
class FourDSettings:
    model: str  # sv4d, sv4d2 or sv4d2_8views
    steps: int
    cfg_min: float
    cfg_max: float
    guidance: str  # "spacetime" or "linear"
    elevations_deg: tuple[float, ...]  # the input view's first, then the V new views'
    azimuths_deg: tuple[float, ...]  # the V new views', relative to the input view
    decode_chunk: int = 0  # frames decoded at once; 0: as many as fit in free memory
    sigma_min: float = 0.002
    sigma_max: float = 700.0

    def __post_init__(self):
        one_of("model", self.model, tuple(LAYOUTS))
        at_least(self, ("decode_chunk",), 0)
        one_of("guidance", self.guidance, ("spacetime", "linear"))
        at_least(self, ("steps",))
        views = self.layout.views
        if len(self.elevations_deg) != views + 1:
            raise SettingsError("elevations", f"{len(self.elevations_deg)} values: {self.model} takes {views + 1} "
                                "(the input view's, then one per new view)")
        if any(not -90 < e < 90 for e in self.elevations_deg):
            raise SettingsError("elevations", "every elevation must be between -90 and 90 degrees")
        if len(self.azimuths_deg) != views:
            raise SettingsError("azimuths", f"{len(self.azimuths_deg)} values: {self.model} makes {views} new views")
        if any(not 0 < a < 360 for a in self.azimuths_deg):
            raise SettingsError("azimuths", "each new view's azimuth must be in (0, 360) degrees from the input view "
                                "(0 is the input view itself)")
        if self.model == "sv4d" and self.azimuths_deg != LAYOUTS["sv4d"].azimuths_deg:
            raise SettingsError("azimuths", "SV4D's views are those of its SV3D orbit and cannot be chosen; "
                                "sv4d2 and sv4d2-8views take azimuths")
        for name in ("cfg_min", "cfg_max"):
            if not getattr(self, name) > 0:
                raise SettingsError(name, f"{getattr(self, name)}: must be positive")

    @classmethod
    def for_model(cls, model: str, steps: int, cfg_min: float = 1.0, cfg_max: float = 2.0,
                  guidance: str = "spacetime", elevation: float | None = None,
                  elevations: tuple[float, ...] | None = None, azimuths: tuple[float, ...] | None = None,
                  decode_chunk: int = 0):
        layout = LAYOUTS[model] if model in LAYOUTS else LAYOUTS["sv4d"]  # an unknown model fails in the check
        if elevations is None:
            elevations = (layout.elevation_deg if elevation is None else elevation,) * (layout.views + 1)
        return cls(model, steps, cfg_min, cfg_max, guidance, tuple(elevations),
                   tuple(layout.azimuths_deg if azimuths is None else azimuths), decode_chunk)

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.model]

    def view_angles(self) -> tuple[list[float], list[float]]:
        """The (polar, azimuth) the model is conditioned on for each new view, radians, as the reference computes
        them: SV4D takes the polar angle from +z (90° − elevation); SV4D 2.0 takes it relative to the input view's,
        around π/2; azimuths are relative to the input view."""
        polar = [math.radians(90 - e) for e in self.elevations_deg]
        if self.model != "sv4d":
            polar = [(p - polar[0] + math.pi / 2) % (2 * math.pi) for p in polar]
        return polar[1:], [math.radians(a) % (2 * math.pi) for a in self.azimuths_deg]


@dataclass
class Window:
    """The conditioning of one window, both halves of guidance: unconditional first, as the reference's guider
    concatenates them."""
    context: Tensor  # (2, T, D): CLIP tokens of the window's input frames, zero for the unconditional half
    concat: Tensor  # (2·T·V, 4, h, w): each frame's latent for each of its views
    vector: Tensor  # (2·T·V, adm): the conditioning's noise level (zero in the unconditional half) and camera
    view_latents: Tensor  # (2·V, 4, h, w): the views at the reference frame (zero in the unconditional half)


class FourD:
    """Denoising SV4D windows with a loaded pipeline (its device, dtype and offload mode)."""

    def __init__(self, pipe: VideoPipeline, settings: FourDSettings):
        self.pipe, self.settings, self.layout = pipe, settings, settings.layout
        latents = self.layout.frames * self.layout.views
        if settings.guidance == "spacetime":
            self.scales = SpacetimeGuidance(settings.cfg_min, settings.cfg_max, self.layout.views).scales(latents)
        else:
            self.scales = LinearFrameGuidance(settings.cfg_min, settings.cfg_max).scales(latents)
        self.sigmas = edm_sigmas(settings.steps, settings.sigma_min, settings.sigma_max)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Unscaled VAE means (N, 4, h, w) of images (N, 3, H, W) in [-1, 1], ENCODE_FRAMES at a time."""
        vae = self.pipe.model.vae
        with self.pipe.phase(vae.encoder, vae.quant_conv):
            return torch.cat([vae.encode(chunk.to(self.pipe.device, torch.float32))
                              for chunk in images.split(ENCODE_FRAMES)])

    @torch.no_grad()
    def window(self, motion: Tensor, views: Tensor | None) -> Window:
        """motion (T, 3, H, W): the window's input frames, in its order; views (V, 3, H, W) at its reference frame,
        or None for no views (SV4D 2.0's first window). Both in [-1, 1]."""
        t, v = self.layout.frames, self.layout.views
        pipe, dtype = self.pipe, self.pipe.dtype
        with pipe.phase(pipe.model.image_encoder):
            clip = pipe.model.image_encoder.encode_image(motion.to(pipe.device, torch.float32)).float()  # (T, D)
        frame_latents = repeat(self.encode(motion), "t c h w -> (t v) c h w", v=v)
        view_latents = self.encode(views) if views is not None else \
            frame_latents.new_zeros((v, *frame_latents.shape[1:]))
        polar, azimuth = self.settings.view_angles()
        values = {"cond_aug": [0.0] * (t * v), "polar_rad": polar * t, "azimuth_rad": azimuth * t}  # view fastest
        pieces = [timestep_embedding(torch.tensor(values[name], dtype=torch.float64), width)
                  for name, width in vector_widths(pipe.model)]
        vector = torch.cat(pieces, dim=1)
        unconditional = vector.clone()
        unconditional[:, : pieces[0].shape[1]] = 0  # the conditioning frames' embedder, noise level included
        return Window(context=torch.stack([torch.zeros_like(clip), clip]).to(dtype),
                      concat=torch.cat([torch.zeros_like(frame_latents), frame_latents]).to(dtype),
                      vector=torch.cat([unconditional, vector]).to(pipe.device, dtype),
                      view_latents=torch.cat([torch.zeros_like(view_latents), view_latents]).to(dtype))

    def denoiser(self, window: Window) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
        n = self.layout.frames * self.layout.views
        unet, dtype = self.pipe.unet, self.pipe.dtype

        def denoise(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
            sc = Scalings.at(sigma.float())
            net_in = torch.cat([(sc.c_in * x).to(dtype).repeat(2, 1, 1, 1), window.concat], dim=1)  # (2·T·V, 8, h, w)
            c_noise = sc.c_noise.expand(2 * n).to(self.pipe.device)
            out = unet(net_in, c_noise, window.context, window.vector, n, view_latents=window.view_latents).float()
            denoised = sc.c_skip * x.repeat(2, 1, 1, 1) + sc.c_out * out
            return denoised[n:], denoised[:n]
        return denoise

    def sampling(self):
        """Context of a pass's steps: with model offload the U-Net is on the device through all of them (moved per
        pass, not per step; the conditioning before and the decoding after have the device to themselves)."""
        return self.pipe.phase(self.pipe.model.unet) if self.pipe.offload == "model" else nullcontext()

    def step(self, window: Window, x: Tensor, i: int) -> Tensor:
        return euler_step(self.denoiser(window), x, self.sigmas[i].item(), self.sigmas[i + 1].item(), self.scales)

    def decode(self, latents: Tensor, progress: Progress | None = None) -> Tensor:
        """(N, 4, h, w) scaled latents -> (N, 3, H, W) in [0, 1], frame by frame (the SV4D files' decoder), in
        chunks of decode_chunk frames (fewer when memory runs out: decoding.decode_latents)."""
        return self.pipe.decode(latents.cpu(), self.settings.decode_chunk, progress).frames


def sample_4d(pipe: VideoPipeline, clip: Tensor, settings: FourDSettings, seed: int, orbit: Tensor | None = None,
              progress: Progress | None = None) -> Tensor:
    """The new views of a clip: (21, V + 1, 3, H, W) in [0, 1], view 0 the input clip itself.

    clip: (21, 3, H, W) in [-1, 1], the prepared object. orbit (SV4D only): (V + 1, 3, H, W) in [-1, 1], the views
    of the first frame (SV3D's, at SV3D_VIEWS; the first is not used)."""
    layout = settings.layout
    if clip.shape[0] != FRAMES:
        raise ValueError(f"SV4D models take {FRAMES} frames, not {clip.shape[0]}")
    if (settings.model == "sv4d") != (orbit is not None):
        raise ValueError("SV4D needs the orbit of the first frame; SV4D 2.0 makes its own")
    four_d = FourD(pipe, settings)
    generator = torch.Generator("cpu").manual_seed(seed)
    grid = torch.zeros(FRAMES, layout.views + 1, *clip.shape[1:])
    grid[:, 0] = (clip + 1) / 2
    h, w = clip.shape[-2] // pipe.downscale, clip.shape[-1] // pipe.downscale
    latent_shape = (pipe.model.architecture.vae.z_channels, h, w)
    starts = layout.window_starts(settings.model)
    passes = len(starts) + (1 if settings.model == "sv4d" else 0)
    total, done = passes * settings.steps, 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            synchronize(pipe.device)
            progress("sample", done, total)

    def views_at(t: int) -> Tensor:
        return grid[t, 1:] * 2 - 1

    def run_window(frames: list[int], views: Tensor | None) -> None:
        """One window sampled through every step (the anchor pass, SV4D 2.0's windows), decoded into the grid."""
        window = four_d.window(clip[frames], views)
        noise = torch.randn((layout.frames * layout.views, *latent_shape), generator=generator)
        x = initial_latents(noise.to(pipe.device), four_d.sigmas)
        with four_d.sampling():
            for i in range(settings.steps):
                x = four_d.step(window, x, i)
                tick()
        grid[frames, 1:] = rearrange(four_d.decode(x, progress), "(t v) c h w -> t v c h w", v=layout.views)

    if progress:
        progress("sample", 0, total)
    if settings.model == "sv4d":
        grid[0, 1:] = (orbit[1:].float().cpu() + 1) / 2
        run_window(anchor_frames(layout), views_at(0))
        for t0 in starts:
            forward = list(range(t0, t0 + layout.frames))
            backward = forward[::-1]
            # the window's conditioning before any of it is resampled: the views at its first and last frames
            conditions = {"forward": four_d.window(clip[forward], views_at(forward[0])),
                          "backward": four_d.window(clip[backward], views_at(backward[0]))}
            cells = torch.randn((FRAMES, layout.views + 1, *latent_shape), generator=generator)
            latents = initial_latents(cells[:, 1:], four_d.sigmas).to(pipe.device)  # scaled as its first step reads it
            with four_d.sampling():
                for i in range(settings.steps):
                    order = backward if i % 2 == 0 else forward  # the reference begins backwards
                    window = conditions["backward" if i % 2 == 0 else "forward"]
                    x = latents[order].flatten(0, 1)
                    latents[order] = four_d.step(window, x, i).view(len(order), layout.views, *latent_shape)
                    tick()
            grid[order, 1:] = rearrange(four_d.decode(latents[order].flatten(0, 1), progress),
                                        "(t v) c h w -> t v c h w", v=layout.views)
    else:
        for t0 in starts:
            run_window(list(range(t0, t0 + layout.frames)), views_at(t0) if t0 > 0 else None)
    return grid
