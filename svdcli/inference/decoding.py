"""Decoding latents to frames in bounded memory: temporal chunks that overlap and are cross-faded, and spatial tiles
for sizes beyond the trained one.

Why overlap: the reference decodes each chunk of frames as an unrelated clip, so the temporal layers see a hard cut
(zero padding, and GroupNorm statistics of that chunk alone) at every chunk boundary, and the video flickers there.
The decoder's temporal receptive field is ±29 frames (14 blocks of two kernel-3 Conv3d, plus conv_out's) and its
GroupNorms take statistics over the whole chunk, so only a whole-clip decode is exact; but the temporal paths are
blended with learned weights and their influence decays fast with distance, so decoding windows that overlap by a few
frames and cross-fading the overlaps removes the cut. `tests/test_decoding.py` and `bench/decode_seams.py` measure
both schemes against the whole-clip decode.

Why a fallback: decoding comes after all the sampling, so running out of memory there must not lose the clip.
`decode_latents` sizes its windows from free memory (`auto_chunk`) and, on an out-of-memory error, retries with half
the frames per window down to one, then one frame in spatial tiles; only when even that fails does it give up
(DecodeOutOfMemory), and the caller keeps the latents for `svd decode`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.vae import SCALE_FACTOR, VAE
from ..runtime.devices import free_memory, is_out_of_memory

# Peak bytes of the temporal decoder, in full-resolution maps of the decoder's finest width (128 channels for SVD)
# per decoded frame: live tensors at their peak, measured at 256x256 to 2048x1152 and 1 to 25 frames, the same at
# every size and chunk length (bench/decode_memory.py; docs/memory.md). The frame-wise decoders of the
# image-decoder and SV3D files peak lower.
DECODER_MAPS_PER_FRAME = 6
# The share of free memory a decode plans to use: the rest covers the allocator's rounding and fragmentation and
# the convolutions' workspaces, which live-tensor counts do not see.
DECODE_MEMORY_SHARE = 0.75


def temporal_windows(frames: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of `chunk` frames covering 0..frames, neighbours sharing at least `overlap` frames, spread
    evenly. overlap 0 gives the reference's disjoint chunks (the last one shorter)."""
    if chunk >= frames:
        return [(0, frames)]
    if overlap <= 0:
        return [(s, min(s + chunk, frames)) for s in range(0, frames, chunk)]
    overlap = min(overlap, chunk - 1)
    n = -(-(frames - overlap) // (chunk - overlap))  # windows needed
    starts = [round(i * (frames - chunk) / (n - 1)) for i in range(n)]
    return [(s, s + chunk) for s in starts]


def window_weights(windows: list[tuple[int, int]]) -> list[Tensor]:
    """Per-frame weights of each [start, end) window of temporal_windows, for blending their overlaps: rising over
    the overlap with the window before, falling over the overlap with the next (never 0, so every frame is covered).
    Frames outside overlaps weigh 1."""
    return [_ramp_weights(s, e, windows[i - 1][1] if i else s, windows[i + 1][0] if i + 1 < len(windows) else e)
            for i, (s, e) in enumerate(windows)]


def _ramp_weights(start: int, end: int, prev_end: int, next_start: int) -> Tensor:
    """Per-frame weights of one window: rising over the overlap with the previous window, falling over the overlap
    with the next, 1 elsewhere (never 0, so every frame is covered)."""
    w = torch.ones(end - start)
    if prev_end > start:  # overlap with the previous window: frames start..prev_end
        n = prev_end - start
        w[:n] = torch.arange(1, n + 1) / (n + 1)
    if next_start < end:  # overlap with the next window: frames next_start..end
        n = end - next_start
        w[-n:] = torch.minimum(w[-n:], torch.arange(n, 0, -1) / (n + 1))
    return w


def decode_frames(vae: VAE, latents: Tensor, device: torch.device, chunk: int, overlap: int = 0,
                  tile: tuple[int, int] | None = None, tile_overlap: int = 8, progress=None) -> Tensor:
    """(T, 4, h, w) scaled latents -> (T, 3, H, W) float32 frames in [-1, 1], on the CPU.

    chunk: frames per window; overlap: frames shared by neighbouring windows (0: the reference's disjoint chunks);
    tile: latent tile size (h, w) for spatial tiling, None for whole frames."""
    dtype = vae.decoder.conv_in.weight.dtype
    z = latents / SCALE_FACTOR
    t = len(z)
    windows = temporal_windows(t, max(1, chunk), max(0, overlap))
    weights = window_weights(windows)
    out = weight = None
    if progress:
        progress("decode", 0, t)
    for i, (s, e) in enumerate(windows):
        part = z[s:e].to(device, dtype)
        frames = _decode_tiled(vae, part, tile, tile_overlap) if tile else vae.decode(part, e - s)
        frames = frames.float().cpu()
        if out is None:
            out = torch.zeros(t, *frames.shape[1:])
            weight = torch.zeros(t)
        out[s:e] += frames * weights[i].view(-1, 1, 1, 1)
        weight[s:e] += weights[i]
        if progress:
            progress("decode", e, t)
    return out / weight.view(-1, 1, 1, 1)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    step = max(1, tile - overlap)
    return list(dict.fromkeys(list(range(0, size - tile, step)) + [size - tile]))


def _decode_tiled(vae: VAE, z: Tensor, tile: tuple[int, int], overlap: int) -> Tensor:
    """Decode latent tiles that overlap by `overlap` latent pixels and blend them with linear ramps."""
    t, _, h, w = z.shape
    th, tw = min(tile[0], h), min(tile[1], w)
    f = 2 ** (len(vae.cfg.channel_mult) - 1)
    out = weight = None
    ys, xs = _tile_starts(h, th, overlap), _tile_starts(w, tw, overlap)
    for y in ys:
        for x in xs:
            dec = vae.decode(z[:, :, y:y + th, x:x + tw], t).float()
            if out is None:
                out = torch.zeros(t, dec.shape[1], h * f, w * f, device=dec.device)
                weight = torch.zeros(1, 1, h * f, w * f, device=dec.device)
            wy = _edge_ramp(th * f, overlap * f if y > 0 else 0, overlap * f if y + th < h else 0, dec.device)
            wx = _edge_ramp(tw * f, overlap * f if x > 0 else 0, overlap * f if x + tw < w else 0, dec.device)
            wt = wy[:, None] * wx[None, :]
            out[:, :, y * f:(y + th) * f, x * f:(x + tw) * f] += dec * wt
            weight[:, :, y * f:(y + th) * f, x * f:(x + tw) * f] += wt
    return out / weight


def _edge_ramp(n: int, rise: int, fall: int, device) -> Tensor:
    r = torch.ones(n, device=device)
    if rise:
        r[:rise] = torch.arange(1, rise + 1, device=device) / (rise + 1)
    if fall:
        r[-fall:] = torch.minimum(r[-fall:], torch.arange(fall, 0, -1, device=device) / (fall + 1))
    return r


def auto_chunk(frames: int, height: int, width: int, free_bytes: int, channels: int = 128,
               dtype_bytes: int = 4) -> int:
    """The most frames per window whose decoder activations fit in a share of free_bytes (height, width: output
    pixels; channels: the decoder's finest width)."""
    per_frame = DECODER_MAPS_PER_FRAME * channels * height * width * dtype_bytes
    return max(1, min(frames, int(free_bytes * DECODE_MEMORY_SHARE) // per_frame))


@dataclass(frozen=True)
class DecodePlan:
    chunk: int  # frames per window
    tile: tuple[int, int] | None  # latent tile (h, w), None for whole frames


class DecodeOutOfMemory(RuntimeError):
    """Decoding ran out of memory in every plan, down to one frame in small tiles."""

    def __init__(self, plan: DecodePlan, downscale: int):
        where = f" in tiles of {plan.tile[1] * downscale}x{plan.tile[0] * downscale} pixels" if plan.tile else ""
        super().__init__(f"decoding ran out of memory even {plan.chunk} frame(s) at a time{where}")


def fallback_plans(frames: int, chunk: int, latent_size: tuple[int, int],
                   tile: tuple[int, int] | None) -> list[DecodePlan]:
    """The plans tried in order: chunk, then half as many frames per window down to one, then one frame in
    tiles of half and a quarter of the (tile or frame) size."""
    plans, c = [], min(chunk, frames)
    while True:
        plans.append(DecodePlan(c, tile))
        if c == 1:
            break
        c = max(1, c // 2)
    th, tw = tile or latent_size
    for _ in range(2):
        th, tw = math.ceil(th / 2), math.ceil(tw / 2)
        if min(th, tw) < 8:
            break
        plans.append(DecodePlan(1, (th, tw)))
    return plans


@dataclass
class Decoded:
    frames: Tensor  # (T, 3, H, W) float32 in [0, 1], on the CPU
    plan: DecodePlan  # how they were decoded in the end
    retries: int  # out-of-memory errors on the way


def decode_latents(vae: VAE, latents: Tensor, device: torch.device, chunk: int = 0, overlap: int = 0,
                   tile: tuple[int, int] | None = None,
                   progress: Callable[[str, int, int], None] | None = None, most: int = 0) -> Decoded:
    """(T, 4, h, w) scaled latents -> frames in [0, 1], in bounded memory, never failing for memory alone before
    the last fallback plan: raises DecodeOutOfMemory then.

    chunk: frames per window, 0 for the most that fit in free memory now (auto_chunk), and no more than `most` if
    given; overlap: frames shared by neighbouring windows; tile: latent tile size for sizes beyond the trained one.
    progress gets ("decode", done, frames) and, before a retry, ("decode-retry-chunk", frames per window, frames)
    or ("decode-retry-tiles", tile width, tile height) in pixels."""
    frames, _, h, w = latents.shape
    down = 2 ** (len(vae.cfg.channel_mult) - 1)
    if chunk == 0:
        th, tw = tile or (h, w)
        chunk = auto_chunk(min(frames, most or frames), th * down, tw * down, free_memory(device), vae.cfg.channels)
    plans = fallback_plans(frames, chunk, (h, w), tile)
    for retries, plan in enumerate(plans):
        if retries:  # the failed attempt's tensors are gone with its exception; hand their blocks back
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if progress:
                progress(*(("decode-retry-tiles", plan.tile[1] * down, plan.tile[0] * down) if plan.tile != tile else
                           ("decode-retry-chunk", plan.chunk, frames)))
        try:
            out = decode_frames(vae, latents, device, plan.chunk, overlap, plan.tile,
                                min(8, min(plan.tile) // 4) if plan.tile else 8, progress)
        except Exception as error:  # noqa: BLE001  (only allocation failures are retried)
            if not is_out_of_memory(error):
                raise
            continue
        return Decoded(((out + 1) / 2).clamp(0, 1), plan, retries)
    raise DecodeOutOfMemory(plans[-1], down)
