"""CogVideoX 3-D causal VAE (the `first_stage_model` of Tora): 16 latent channels, ×8 in space, ×4 in time.

Source: `tora_spec.md` §1.4 (config: ch 128, ch_mult [1, 2, 2, 4], 3 res blocks, z 16; latent scale 0.7), §2.6
(encoding the flow video: posterior *sample*, then ×0.7), §6.1 item 7 (decoding: z/0.7, latent chunks [0:3], [3:5],
…, [11:13] with a causal cache), §7.2 (SAT ↔ diffusers names). Layers are in `vae_blocks.py`, loaders in
`vae_loading.py` (which imports this module, never the other way round).

Layout: video [B, 3, F, H, W] in [-1, 1] with F = 4k + 1 frames (frame 0 alone, then groups of 4);
latent [B, 16, T, H/8, W/8] with T = k + 1 (49 frames ↔ 13 latents).

Scale: `encode(...).sample()` and `decode(z)` work on *unscaled* latents. The transformer sees `z · SCALE`;
use `decode_scaled` (or divide by SCALE yourself) for latents that come from the sampler.

Temporal chunking and numerics. The causal cache makes every convolution exact across chunk borders, the temporal
up/down-sampling is local in time, and the latent→feature frame mapping of the spatial norms is the same per chunk
as for the whole clip when every chunk after the first has an even length. What does change is each group norm's
statistics, which are taken over all frames of one call. So:
* `encode(video)` defaults to one pass over the clip, as SAT encodes (§2.6); `frames_per_chunk=8` reproduces
  diffusers' `_encode` (chunks [0:9], [9:17], …) instead.
* `decode(z)` defaults to the official schedule, `latents_per_chunk=2`: [0:3], [3:5], … — SAT and diffusers decode
  this way, so this *is* the reference output, and memory stays bounded; `latents_per_chunk=None` is one pass.
* `decode_chunk(z_chunk, cache)` is the streaming primitive: feeding the chunks of the schedule one by one with the
  returned cache gives `decode(z)` bit for bit, and decoding a prefix of the latents gives a prefix of the video.
Spatial tiling (`Tiling`) decodes/encodes overlapping tiles with linear blending; it is not exact either (per-tile
norm statistics and zero padding at tile borders); see tests/test_vae.py for the measured deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .vae_blocks import Cache, Decoder3D, Encoder3D

# Tora / CogVideoX-5B latent scale; diffusers' class default 1.15258426 is the CogVideoX-2B value.
SCALE = 0.7


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a CogVideoX VAE. Defaults are the CogVideoX-5B / Tora VAE (SAT `first_stage_config`)."""

    in_channels: int = 3  # RGB
    out_channels: int = 3
    latent_channels: int = 16  # z_channels
    channels: int = 128  # ch: width of the first level
    channel_mult: tuple[int, ...] = (
        1,
        2,
        2,
        4,
    )  # one level per entry; each level but the last halves H and W
    layers_per_block: int = 3  # num_res_blocks (the decoder has one more per level)
    norm_groups: int = 32
    norm_eps: float = 1e-6
    temporal_compression: int = 4  # the first log2(4) = 2 levels also halve T (frame 0 kept alone)

    def __post_init__(self) -> None:
        if not self.channel_mult or self.layers_per_block < 1:
            raise ConfigError(f"channel_mult must be non-empty and layers_per_block ≥ 1, got {self}")
        bad = [c for c in self.block_channels if c % self.norm_groups]
        if bad:
            raise ConfigError(
                f"every level width must be divisible by norm_groups={self.norm_groups}, not {bad}"
            )
        levels = self.time_levels
        if 2**levels != self.temporal_compression or levels > len(self.channel_mult) - 1:
            raise ConfigError(
                f"temporal_compression must be a power of two ≤ 2^{len(self.channel_mult) - 1}, "
                f"got {self.temporal_compression}"
            )

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.channels * m for m in self.channel_mult)

    @property
    def time_levels(self) -> int:
        return int(math.log2(self.temporal_compression))

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @classmethod
    def preset(cls, name: str) -> VAEConfig:
        """`cogvideox_5b` (the Tora VAE) or `tiny` (CPU tests: same topology, 8/16 channels, 1 resnet/level)."""
        presets = {
            "cogvideox_5b": cls(),
            "tiny": cls(channels=8, channel_mult=(1, 1, 2, 2), layers_per_block=1, norm_groups=4),
        }
        if name not in presets:
            raise ConfigError(f"unknown VAE preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]


@dataclass(frozen=True)
class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)); tensors [B, 16, T, h, w]."""

    mean: Tensor
    logvar: Tensor  # clamped to [-30, 20] like the reference

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)  # [B, 2·Cz, ...] -> 2 × [B, Cz, ...]
        return cls(mean, logvar.clamp(-30.0, 20.0))

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Tensor:
        """mean + std·ε. ε is drawn on the generator's device (a CPU generator gives the same ε for a CUDA model)
        in the latent dtype, then moved; a list holds one generator per batch item."""
        shape, dtype, device = self.mean.shape, self.mean.dtype, self.mean.device
        if isinstance(generator, Sequence):
            if len(generator) != shape[0]:
                raise ConfigError(
                    f"got {len(generator)} generators for a batch of {shape[0]}; pass one per item"
                )
            eps = torch.cat([_randn((1, *shape[1:]), g, dtype, device) for g in generator])
        else:
            eps = _randn(shape, generator, dtype, device)
        return self.mean + self.std * eps


def _randn(shape: Sequence[int], generator: torch.Generator | None, dtype: torch.dtype, device: torch.device):
    draw_on = device if generator is None else generator.device
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=draw_on).to(device)


@dataclass(frozen=True)
class Tiling:
    """Spatial tiles in latent units (×8 for pixels). Defaults match diffusers' tile (240×360 px) and overlap."""

    height: int = 30
    width: int = 45
    overlap_height: int = 5
    overlap_width: int = 9

    def __post_init__(self) -> None:
        if not (0 <= self.overlap_height < self.height and 0 <= self.overlap_width < self.width):
            raise ConfigError(f"tile overlaps must be ≥ 0 and smaller than the tile, got {self}")


def chunk_bounds(length: int, per_chunk: int | None) -> list[tuple[int, int]]:
    """Temporal chunks: the first takes the remainder (so the odd frame 0 goes with it), the rest `per_chunk`."""
    if per_chunk is None or length <= per_chunk:
        return [(0, length)]
    first = per_chunk + length % per_chunk
    return [(0, first)] + [(s, s + per_chunk) for s in range(first, length, per_chunk)]


def _axis_tiles(size: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, end, ramp in, ramp out) per tile along one axis, in latent units: the fewest tiles of at most
    `tile` that overlap by `overlap`, made equally long so that no thin sliver is left at the end."""
    n = math.ceil((size - overlap) / (tile - overlap)) if size > tile else 1
    length = math.ceil((size + (n - 1) * overlap) / n)
    spans = [(i * (length - overlap), min(i * (length - overlap) + length, size)) for i in range(n)]
    for i, (s, e) in enumerate(spans):
        ramp_in = spans[i - 1][1] - s if i else 0
        ramp_out = e - spans[i + 1][0] if i + 1 < n else 0
        yield s, e, ramp_in, ramp_out


def _ramp(length: int, ramp_in: int, ramp_out: int, device: torch.device) -> Tensor:
    """Blend weights along one axis of a tile: linear in over `ramp_in`, out over `ramp_out`, 1 between."""
    w = torch.ones(length, device=device)
    if ramp_in:
        w[:ramp_in] = (torch.arange(ramp_in, device=device) + 0.5) / ramp_in
    if ramp_out:
        w[length - ramp_out :] = torch.minimum(
            w[length - ramp_out :], (torch.arange(ramp_out, 0, -1, device=device) - 0.5) / ramp_out
        )
    return w


class CogVideoXVAE(nn.Module):
    """CogVideoX causal video VAE; state-dict names are diffusers' `AutoencoderKLCogVideoX` names."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder3D(self.config)
        self.decoder = Decoder3D(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_out.conv.weight.dtype

    # ---- streaming primitives ------------------------------------------------------------------------------------
    def encode_chunk(self, video: Tensor, cache: Cache | None = None) -> tuple[Tensor, Cache]:
        """Moments [B, 32, t, h, w] of one temporal chunk and the cache for the next (None = clip start)."""
        return self.encoder(video.to(self.dtype), cache)

    def decode_chunk(self, z: Tensor, cache: Cache | None = None) -> tuple[Tensor, Cache]:
        """Video [B, 3, F, H, W] of one latent chunk (unscaled) and the cache for the next (None = clip start)."""
        return self.decoder(z.to(self.dtype), cache)

    # ---- whole clips -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, video: Tensor, frames_per_chunk: int | None = None, tiling: Tiling | None = None
    ) -> DiagonalGaussian:
        """Video [B, 3, F, H, W] in [-1, 1] -> posterior over unscaled latents [B, 16, 1 + (F-1)/4, H/8, W/8]."""
        self._check_video(video)
        moments = self._run(
            self.encode_chunk, video, frames_per_chunk, tiling, self.config.spatial_compression, 1
        )
        return DiagonalGaussian.from_moments(moments)

    @torch.no_grad()
    def decode(self, z: Tensor, latents_per_chunk: int | None = 2, tiling: Tiling | None = None) -> Tensor:
        """Unscaled latents [B, 16, T, h, w] -> video [B, 3, 4T-3, 8h, 8w] (model dtype, nominally in [-1, 1])."""
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ConfigError(
                f"expected latents [B, {self.config.latent_channels}, T, h, w], got {tuple(z.shape)}"
            )
        return self._run(self.decode_chunk, z, latents_per_chunk, tiling, 1, self.config.spatial_compression)

    def decode_scaled(
        self, z_scaled: Tensor, latents_per_chunk: int | None = 2, tiling: Tiling | None = None
    ):
        """`decode(z_scaled / SCALE)` for latents as the transformer produces them."""
        return self.decode(z_scaled / SCALE, latents_per_chunk, tiling)

    def _run(self, step, x: Tensor, per_chunk: int | None, tiling: Tiling | None, x_unit: int, out_unit: int):
        """`step` (encode_chunk / decode_chunk) over the temporal chunks of x, on each spatial tile if tiling."""

        def chunked(part: Tensor) -> Tensor:
            cache, outs = None, []
            for s, e in chunk_bounds(part.shape[2], per_chunk):
                out, cache = step(part[:, :, s:e], cache)
                outs.append(out)
            return torch.cat(outs, dim=2).contiguous()

        return chunked(x) if tiling is None else self._tiled(x, tiling, x_unit, out_unit, chunked)

    def _tiled(self, x: Tensor, tiling: Tiling, x_unit: int, out_unit: int, run: Callable[[Tensor], Tensor]):
        """Run `run` on overlapping spatial tiles of x [B, C, T, H, W] and blend the outputs linearly.

        Tiles are laid out in latent units; one latent is `x_unit` pixels of x and `out_unit` of the output.
        """
        rows = _axis_tiles(x.shape[3] // x_unit, tiling.height, tiling.overlap_height)
        cols = list(_axis_tiles(x.shape[4] // x_unit, tiling.width, tiling.overlap_width))
        out = weight = None
        for r0, r1, r_in, r_out in rows:
            w_rows = _ramp((r1 - r0) * out_unit, r_in * out_unit, r_out * out_unit, x.device)
            for c0, c1, c_in, c_out in cols:
                y = run(
                    x[:, :, :, r0 * x_unit : r1 * x_unit, c0 * x_unit : c1 * x_unit]
                ).float()  # [B, C', T', h, w]
                if out is None:
                    shape = (*y.shape[:3], x.shape[3] // x_unit * out_unit, x.shape[4] // x_unit * out_unit)
                    out, weight = y.new_zeros(shape), y.new_zeros(shape[3:])  # [B, C', T', H', W'], [H', W']
                w = w_rows[:, None] * _ramp((c1 - c0) * out_unit, c_in * out_unit, c_out * out_unit, x.device)
                rows_out, cols_out = slice(r0 * out_unit, r1 * out_unit), slice(c0 * out_unit, c1 * out_unit)
                out[..., rows_out, cols_out] += y.mul_(w)
                weight[rows_out, cols_out] += w
        return out.div_(weight).to(self.dtype)

    def _check_video(self, video: Tensor) -> None:
        f = self.config.spatial_compression
        if (
            video.ndim != 5
            or video.shape[1] != self.config.in_channels
            or video.shape[3] % f
            or video.shape[4] % f
        ):
            raise ConfigError(
                f"expected video [B, {self.config.in_channels}, F, H, W] with H, W multiples of {f}, "
                f"got {tuple(video.shape)}"
            )
        if (video.shape[2] - 1) % self.config.temporal_compression:
            raise ConfigError(
                f"expected 1 + {self.config.temporal_compression}·k frames (e.g. 49), got {video.shape[2]}; "
                "trim or pad the clip"
            )
