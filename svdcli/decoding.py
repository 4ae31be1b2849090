"""Decoding latents to frames in bounded memory: temporal chunks that overlap and are cross-faded, and spatial tiles
for sizes beyond the trained one.

Why overlap: the reference decodes each chunk of frames as an unrelated clip, so the temporal layers see a hard cut
(zero padding, and GroupNorm statistics of that chunk alone) at every chunk boundary, and the video flickers there.
The decoder's temporal receptive field is ±29 frames (14 blocks of two kernel-3 Conv3d, plus conv_out's) and its
GroupNorms take statistics over the whole chunk, so only a whole-clip decode is exact; but the temporal paths are
blended with learned weights and their influence decays fast with distance, so decoding windows that overlap by a few
frames and cross-fading the overlaps removes the cut. `tests/test_decoding.py` and `bench/decode_seams.py` measure
both schemes against the whole-clip decode.
"""

import torch
from torch import Tensor

from .models.vae import SCALE_FACTOR, VAE


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
    out = weight = None
    for i, (s, e) in enumerate(windows):
        part = z[s:e].to(device, dtype)
        frames = _decode_tiled(vae, part, tile, tile_overlap) if tile else vae.decode(part, e - s)
        frames = frames.float().cpu()
        if out is None:
            out = torch.zeros(t, *frames.shape[1:])
            weight = torch.zeros(t)
        prev_end = windows[i - 1][1] if i else s
        next_start = windows[i + 1][0] if i + 1 < len(windows) else e
        w = _ramp_weights(s, e, prev_end, next_start)
        out[s:e] += frames * w.view(-1, 1, 1, 1)
        weight[s:e] += w
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


def auto_chunk(frames: int, height: int, width: int, free_bytes: int, dtype_bytes: int = 4) -> int:
    """The largest chunk whose decoder activations fit in free_bytes. Peak activation memory is dominated by the
    full-resolution 128-channel feature maps: about five of them live at once per frame."""
    per_frame = 5 * 128 * height * width * dtype_bytes
    return max(1, min(frames, int(free_bytes * 0.8) // per_frame))
