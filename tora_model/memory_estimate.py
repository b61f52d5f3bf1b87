"""Activation memory of each GPU stage of a generation, from the size being generated (pure arithmetic, no torch ops).

Source: issue 16. ComfyUI's `load_models_gpu(memory_required=..., minimum_memory_required=...)` unloads other models
until the weights *and* this much working memory fit; core's own sampling passes such an estimate, and so do the
pack's nodes (nodes/runtime.py). Every function returns bytes of activations on the compute device at the stage's
peak, weights excluded. The coefficients were measured with a live-tensor trace of the real forward passes on the
meta device (each tensor's storage counted from the op that creates it until its last reference dies; weights not
counted; attention by a memory-efficient kernel — output plus log-sum-exp, as CUDA SDPA / flash attention do):

    stage (720×480×49, bf16)                           trace      estimate
    sampler step, CFG batch 2, no motion              2.649 GiB   2.682 GiB (incl. 0.034 sampler state)
    motion features (42 × [13, 128, 30, 45])          0.176 GiB   0.176 GiB
    flow encode, diffusers tiles, one pass (SAT)      2.779 GiB   2.786 GiB + 0.142 input video
    flow encode, tiles, 8-frame chunks (diffusers)    0.886 GiB   0.893 GiB + 0.142 input video
    decode, tiles, official 2-latent chunks           1.598 GiB   1.612 GiB
    (480×320×33: decode 1.318 / 1.364, encode one pass 1.794 / 1.794, 8-frame chunks 0.816 / 0.816 + input)

The VAE figures are for contiguous activations (CUDA; `vae_blocks.padded_layout`). The VAE coefficients are those of
the CogVideoX VAE topology (channel_mult (1, 2, 2, 4), 3 resnets per level) and scale with its first level's width;
other VAE shapes (the tiny test presets) get the same formula as an approximation. Layouts as in `pipeline.py`:
latents [B, T, 16, h, w], T = (F − 1) / 4 + 1, h = H / c, w = W / c.
"""

from __future__ import annotations

import math

import torch

from .config import LATENT_CHANNELS, ToraConfig
from .vae import Tiling, VAEConfig, chunk_bounds

# Sampler step: live [B, L + N, D] tensors at the MLP's GELU, in units of hidden-sized tensors: the block's input
# residual, the residual after attention, the attention output (its text/video views are still referenced), the
# norm2 output, the MLP input (concatenated tokens) = 5, plus the MLP's projection and its GELU = 2 × mlp_ratio.
SAMPLER_HIDDEN_TENSORS = 5
SAMPLER_MLP_TENSORS = 2
# Sampler state beside the network: x, denoised, the previous denoised, noise, the CFG batch in and out (float32
# latent-sized tensors); an allowance, small next to the block (4.5 MiB each at 720×480×49).
SAMPLER_LATENT_TENSORS = 8
# VAE encoder pass over f frames: peak = (a·f + b) full-resolution first-level frames ([C0, H, W] each), for f ≥ 5;
# a single frame (the I2V start image) measures ENCODE_ONE_FRAME. Later temporal chunks also hold the causal caches
# of every convolution: ENCODE_CACHE more.
ENCODE_PER_FRAME, ENCODE_BASE, ENCODE_ONE_FRAME, ENCODE_CACHE = 4.0, 14.05, 20.61, 20.4
# VAE decoder, official schedule (first chunk 3 latents, then 2 with the cache), in the same units: by latents in the
# chunk being decoded (1 = an image alone), plus the frames already decoded (3 channels × 4 frames per latent).
DECODE_CHUNK = {1: 36.75, 2: 71.75, 3: 76.75}
DECODE_LATER_CHUNK = 103.72
FLOAT32 = 4


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def latent_grid(width: int, height: int, num_frames: int, compression: int) -> tuple[int, int, int]:
    """(T, h, w) latent frames and latent height/width of a generation."""
    return (num_frames - 1) // 4 + 1, height // compression, width // compression


def sampler_step_bytes(
    config: ToraConfig,
    width: int,
    height: int,
    num_frames: int,
    batch: int = 2,
    dtype: torch.dtype = torch.bfloat16,
    *,
    motion: bool = False,
    weight_upcast: bool = False,
) -> int:
    """Peak activations of one denoising step (one transformer forward of `batch` rows: 2 with CFG).

    = batch · (L + N) · D · s · (5 + 2 · mlp_ratio)       the block's live hidden-sized tensors (see above)
    + 2 · N · head_dim · s                                 RoPE cos/sin tables
    + 8 · T · 16 · h · w · 4                               sampler state (float32 latents)
    + motion_feature_bytes(...)             if motion      the 42 features, on the device for the whole run
    + 2 · mlp_ratio · D² · s                if weight_upcast   one fp8 weight upcast to the compute dtype (+ grad-free copy)
    with L = max_text_len text tokens, N = T · (h / p) · (w / p) video tokens, D = hidden width, s = dtype bytes.
    """
    s = _itemsize(dtype)
    frames, h, w = latent_grid(width, height, num_frames, config.vae_spatial_compression)
    tokens = frames * (h // config.patch_size) * (w // config.patch_size)
    hidden = batch * (config.max_text_len + tokens) * config.hidden_dim * s
    total = hidden * (SAMPLER_HIDDEN_TENSORS + SAMPLER_MLP_TENSORS * config.mlp_ratio)
    total += 2 * tokens * config.head_dim * s
    total += SAMPLER_LATENT_TENSORS * frames * LATENT_CHANNELS * h * w * FLOAT32
    if motion:
        total += motion_feature_bytes(config, width, height, num_frames, dtype)
    if weight_upcast:
        total += 2 * config.mlp_ratio * config.hidden_dim**2 * s
    return int(total)


def motion_feature_bytes(
    config: ToraConfig, width: int, height: int, num_frames: int, dtype: torch.dtype = torch.bfloat16
) -> int:
    """The extractor's output: num_layers × [T, motion_channels, ⌈h/2⌉, ⌈w/2⌉] in the compute dtype (batch 1)."""
    frames, h, w = latent_grid(width, height, num_frames, config.vae_spatial_compression)
    per_block = frames * config.motion_channels * math.ceil(h / 2) * math.ceil(w / 2)
    return config.num_layers * per_block * _itemsize(dtype)


def extractor_bytes(
    config: ToraConfig, width: int, height: int, num_frames: int, dtype: torch.dtype = torch.bfloat16
) -> int:
    """Running the trajectory extractor: its output features, plus four feature-sized maps of the residual block
    being computed, plus the flow latents ([T, 16, h, w] float32 and in the compute dtype)."""
    features = motion_feature_bytes(config, width, height, num_frames, dtype)
    frames, h, w = latent_grid(width, height, num_frames, config.vae_spatial_compression)
    latents = frames * LATENT_CHANNELS * h * w * (FLOAT32 + _itemsize(dtype))
    return int(features + 4 * features // config.num_layers + latents)


def _tile_pixels(vae: VAEConfig, height: int, width: int, tiling: Tiling | None) -> int:
    """Pixels of the largest spatial tile a tiled VAE pass runs on (the whole frame untiled), as `vae._axis_tiles`."""
    if tiling is None:
        return height * width
    c = vae.spatial_compression

    def longest(size: int, tile: int, overlap: int) -> int:
        n = math.ceil((size - overlap) / (tile - overlap)) if size > tile else 1
        return min(size, math.ceil((size + (n - 1) * overlap) / n))

    return (
        longest(height // c, tiling.height, tiling.overlap_height)
        * c
        * longest(width // c, tiling.width, tiling.overlap_width)
        * c
    )


def flow_encode_bytes(
    vae: VAEConfig,
    width: int,
    height: int,
    num_frames: int,
    dtype: torch.dtype = torch.bfloat16,
    *,
    tiling: Tiling | None = None,
    frames_per_chunk: int | None = None,
) -> int:
    """Encoding an F-frame video (the flow video, or one start image with num_frames=1) with the VAE encoder.

    = u · max over temporal chunks of (4 · f + 14.05, + 20.4 for chunks after the first)   (f = frames in the chunk;
      20.61 when f = 1), u = C0 · tile_pixels · s one full-resolution first-level frame of one tile
    + 3 · F · H · W · (s + 1)                          the input video in the compute dtype and as uint8
    + 2 · 32 · T · h · w · 4                           moments and the tiled output accumulator (float32)
    """
    s = _itemsize(dtype)
    unit = vae.channels * _tile_pixels(vae, height, width, tiling) * s
    worst = 0.0
    for index, (start, stop) in enumerate(chunk_bounds(num_frames, frames_per_chunk)):
        frames = stop - start
        peak = ENCODE_ONE_FRAME if frames == 1 else ENCODE_PER_FRAME * frames + ENCODE_BASE
        worst = max(worst, peak + (ENCODE_CACHE if index else 0.0))
    frames_out, h, w = latent_grid(width, height, num_frames, vae.spatial_compression)
    video = vae.in_channels * num_frames * height * width * (s + 1)
    moments = 2 * 2 * vae.latent_channels * frames_out * h * w * FLOAT32
    return int(worst * unit + video + moments)


def vae_decode_bytes(
    vae: VAEConfig,
    width: int,
    height: int,
    num_frames: int,
    dtype: torch.dtype = torch.bfloat16,
    *,
    tiling: Tiling | None = None,
) -> int:
    """Decoding T latents to F = 4T − 3 frames with the official chunk schedule ([0:3], [3:5], …).

    = u · (36.75 | 71.75 | 76.75 by latents in a lone first chunk; 103.72 once a later chunk runs)
      + u · 0.094 · (T − 5)    earlier chunks' frames, kept for the final concatenation
    + 3 · F · H · W · 4 + 3 · F · tile_pixels · (4 + s)   tiled only: the float32 blend accumulator; one tile's
                                                      output and its float32 copy
    + 3 · F · H · W · 4 · 3             afterwards: the frames in float32 while they are scaled to [0, 1]
    with u = C0 · tile_pixels · s as for `flow_encode_bytes`.
    """
    s = _itemsize(dtype)
    latents, _, _ = latent_grid(width, height, num_frames, vae.spatial_compression)
    tile = _tile_pixels(vae, height, width, tiling)
    unit = vae.channels * tile * s
    frame_units = (
        vae.out_channels * vae.temporal_compression / vae.channels
    )  # one latent's frames, in units u
    if latents <= 3:
        peak = DECODE_CHUNK[latents]
    else:
        peak = DECODE_LATER_CHUNK + frame_units * max(0, latents - 5)
    output = vae.out_channels * num_frames * height * width
    blend = output * FLOAT32 + vae.out_channels * num_frames * tile * (FLOAT32 + s) if tiling else 0
    return int(max(peak * unit + blend, output * FLOAT32 * 3))
