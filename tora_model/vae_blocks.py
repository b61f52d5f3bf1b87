"""Layers of the CogVideoX 3-D causal VAE: causal convolutions, (spatially conditioned) group norms, resnets, blocks.

Source: the CogVideoX VAE as used by Tora (`tora_spec.md` §1.4, §7.2); attribute names follow diffusers'
`AutoencoderKLCogVideoX` (manifest `autoencoder_kl_cogvideox_default.tsv`), the SAT layout is a rename table in
`vae_loading.py`. Numerics were checked against diffusers 0.42.1 (tests/test_vae.py).

Layout: every video-like tensor is [B, C, T, H, W]. Convolutions are causal in time: a kernel of 3 frames sees the
current frame and the two before it. At the start of a clip the missing past is the first frame repeated; when a clip
is processed in temporal chunks, the last two (padded) input frames of each causal convolution are handed to the next
chunk. That hand-over is the *cache*: a nested dict (child name -> sub-cache, or -> tensor [B, C, 2, H, W] for a
convolution) that every forward takes as an argument and returns anew. Nothing is stored on the modules.
On the CPU padded convolution inputs are laid out channels-last (memory: no blocked copy inside oneDNN), so
activations mostly are; results are the same numbers in another memory order. On other devices (CUDA) they stay
contiguous: cuDNN convolves either layout, but `group_norm` makes a channels-last input contiguous again, which cost
two full-size copies per resnet convolution (+21 % peak in the memory trace of issue 16).

Group norms normalise over (channels of a group, T, H, W): their statistics cover every frame of the call, so a
chunked pass equals a one-pass forward only up to those statistics (see `vae.py`). Activations and the spatial
norm's modulation are applied in place when autograd does not need the input.
"""

from __future__ import annotations

from typing import Protocol, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

Cache = dict[str, Union[Tensor, "Cache"]]


class VAEShape(Protocol):
    """The fields of `vae.VAEConfig` the layers read."""

    in_channels: int
    out_channels: int
    latent_channels: int
    layers_per_block: int
    norm_groups: int
    norm_eps: float

    @property
    def block_channels(self) -> tuple[int, ...]: ...

    @property
    def time_levels(self) -> int: ...


def _silu(x: Tensor) -> Tensor:
    """SiLU, in place unless autograd needs the input."""
    return F.silu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


def _mul_add_repeated(out: Tensor, scale: Tensor, shift: Tensor) -> None:
    """out ← out·up(scale) + up(shift) in place, `up` = nearest upsampling by integer factors.

    out [B, C, T, H, W]; scale, shift [B, C, t, h, w] with T = rt·t, H = rh·h, W = rw·w. Only the width is
    materialised (a long contiguous inner loop); time and height repeats are broadcasts.
    """
    (t, h, w), (tt, hh, ww) = scale.shape[2:], out.shape[2:]
    if tt % t or hh % h or ww % w:
        raise ValueError(
            f"cannot repeat conditioning of size {(t, h, w)} onto features of size {(tt, hh, ww)}"
        )
    fmt = torch.channels_last_3d if out.is_contiguous(memory_format=torch.channels_last_3d) else None
    scale, shift = (v.repeat_interleave(ww // w, dim=4) for v in (scale, shift))  # [B, C, t, h, W]
    if fmt is not None:  # match the features' memory order so the inner loop runs over channels
        scale, shift = scale.contiguous(memory_format=fmt), shift.contiguous(memory_format=fmt)
    view = out.unflatten(3, (h, hh // h)).unflatten(2, (t, tt // t))  # [B, C, t, rt, h, rh, W]
    view.mul_(scale[:, :, :, None, :, None]).add_(shift[:, :, :, None, :, None])


def padded_layout(device: torch.device) -> torch.memory_format:
    """Memory layout of padded convolution inputs: channels-last on the CPU (oneDNN convolves it without first
    copying into its blocked layout), contiguous elsewhere (CUDA's group_norm would copy channels-last back)."""
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


class CausalConv3d(nn.Module):
    """Conv3d, zero-padded in space, causally padded in time (replicated first frame, or the cache)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.time_pad = kernel_size - 1
        pad = kernel_size // 2
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=(0, pad, pad))

    def pad(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Causally padded input [B, C, T+k-1, H, W] and the cache for the next chunk.

        Split from the convolution so that callers can drop the unpadded activation before convolving (memory).
        """
        # x [B, C, T, H, W]; cache [B, C, k-1, H, W] = last padded input frames of the previous chunk
        if self.time_pad == 0:
            return x, None
        b, c, t, h, w = x.shape
        shape = (b, c, t + self.time_pad, h, w)
        padded = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=padded_layout(x.device))
        padded[:, :, : self.time_pad] = x[:, :, :1] if cache is None else cache  # clip start: repeat frame 0
        padded[:, :, self.time_pad :] = x  # [B, C, T+k-1, H, W]
        return padded, padded[:, :, -self.time_pad :].clone()

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        padded, new_cache = self.pad(x, cache)
        return self.conv(padded), new_cache  # [B, C', T, H, W]


class SpatialNorm3D(nn.Module):
    """Group norm whose scale and shift are 1×1×1 convolutions of the latent z, nearest-upsampled onto the features.

    The 1×1×1 convolutions commute with nearest upsampling, so they run at latent resolution and are repeated onto
    the features while modulating them (diffusers upsamples z first and convolves at full resolution). In time the first frame maps to the first latent and the rest are spread evenly over the remaining
    latents when the feature clip has an odd length > 1 (the causal VAE's frame-0-alone rule); otherwise all evenly.
    """

    def __init__(self, channels: int, z_channels: int, groups: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, channels, eps=eps)
        self.conv_y = CausalConv3d(z_channels, channels, kernel_size=1)
        self.conv_b = CausalConv3d(z_channels, channels, kernel_size=1)

    def forward(self, f: Tensor, z: Tensor) -> Tensor:
        # f [B, C, T, H, W] features; z [B, Cz, t, h, w] latent chunk
        norm = self.norm_layer
        out = F.group_norm(f, norm.num_groups, norm.weight, norm.bias, norm.eps)  # [B, C, T, H, W]
        scale, shift = self.conv_y(z)[0], self.conv_b(z)[0]  # [B, C, t, h, w], at latent resolution
        if out.shape[2] > 1 and out.shape[2] % 2 == 1:
            _mul_add_repeated(out[:, :, :1], scale[:, :, :1], shift[:, :, :1])
            _mul_add_repeated(out[:, :, 1:], scale[:, :, 1:], shift[:, :, 1:])
        else:
            _mul_add_repeated(out, scale, shift)
        return out


class ResnetBlock3D(nn.Module):
    """norm → SiLU → causal conv → norm → SiLU → causal conv, plus a (1×1×1-projected) shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, groups: int, eps: float, z_channels: int | None
    ) -> None:
        super().__init__()
        if z_channels is None:
            self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
            self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        else:
            self.norm1 = SpatialNorm3D(in_channels, z_channels, groups)
            self.norm2 = SpatialNorm3D(out_channels, z_channels, groups)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.conv_shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _norm(self, norm: nn.Module, x: Tensor, z: Tensor | None) -> Tensor:
        return norm(x) if z is None else norm(x, z)

    def forward(self, x: Tensor, z: Tensor | None, cache: Cache | None) -> tuple[Tensor, Cache]:
        # x [B, Cin, T, H, W]; z [B, Cz, t, h, w] for the decoder's spatial norms, else None
        cache = cache or {}
        h = _silu(self._norm(self.norm1, x, z))
        h, c1 = self.conv1.pad(h, cache.get("conv1"))  # rebinding h frees the unpadded activation
        h = self.conv1.conv(h)  # [B, Cout, T, H, W]
        h = _silu(self._norm(self.norm2, h, z))
        h, c2 = self.conv2.pad(h, cache.get("conv2"))
        h = self.conv2.conv(h)
        h += x if self.conv_shortcut is None else self.conv_shortcut(x)
        return h, {"conv1": c1, "conv2": c2}


def _run_resnets(
    resnets: nn.ModuleList, x: Tensor, z: Tensor | None, cache: Cache | None
) -> tuple[Tensor, Cache]:
    cache = cache or {}
    new: Cache = {}
    for i, resnet in enumerate(resnets):
        x, new[f"resnets.{i}"] = resnet(x, z, cache.get(f"resnets.{i}"))
    return x, new


class Downsample3D(nn.Module):
    """Optional temporal ×2 average pooling (frame 0 kept alone), then a stride-2 3×3 conv per frame."""

    def __init__(self, channels: int, compress_time: bool) -> None:
        super().__init__()
        self.compress_time = compress_time
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t = x.shape[:3]  # x [B, C, T, H, W]
        if self.compress_time and t > 1:
            first, rest = (x[:, :, :1], x[:, :, 1:]) if t % 2 else (x[:, :, :0], x)
            pooled = rest.unflatten(2, (rest.shape[2] // 2, 2)).mean(dim=3)  # [B, C, T_rest/2, H, W]
            x = torch.cat([first, pooled], dim=2)
        frames = F.pad(rearrange(x, "b c t h w -> (b t) c h w"), (0, 1, 0, 1))  # pad right and bottom only
        return rearrange(self.conv(frames), "(b t) c h w -> b c t h w", b=b)  # [B, C, T', H/2, W/2]


class Upsample3D(nn.Module):
    """Nearest ×2 in space (and in time, frame 0 kept single when the clip length is odd), then a 3×3 conv."""

    def __init__(self, channels: int, compress_time: bool) -> None:
        super().__init__()
        self.compress_time = compress_time
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t = x.shape[:3]  # x [B, C, T, H, W]
        frames = rearrange(x, "b c t h w -> b t c h w")
        if self.compress_time and t > 1:
            repeats = torch.full((t,), 2, device=x.device)
            repeats[0] = 2 - t % 2
            frames = frames.repeat_interleave(repeats, dim=1, output_size=2 * t - t % 2)  # [B, T', C, H, W]
        frames = F.interpolate(frames.flatten(0, 1), scale_factor=2.0, mode="nearest")  # [(B T'), C, 2H, 2W]
        frames = self.conv(frames)  # rebinding frees the upsampled input before the copy below
        return rearrange(frames, "(b t) c h w -> b c t h w", b=b)


class DownBlock3D(nn.Module):
    def __init__(
        self, cin: int, cout: int, layers: int, groups: int, eps: float, down: bool, time: bool
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(cin if i == 0 else cout, cout, groups, eps, None) for i in range(layers)
        )
        self.downsamplers = nn.ModuleList([Downsample3D(cout, time)]) if down else None

    def forward(self, x: Tensor, cache: Cache | None) -> tuple[Tensor, Cache]:
        x, cache = _run_resnets(self.resnets, x, None, cache)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x, cache


class MidBlock3D(nn.Module):
    def __init__(self, channels: int, groups: int, eps: float, z_channels: int | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(channels, channels, groups, eps, z_channels) for _ in range(2)
        )

    def forward(self, x: Tensor, z: Tensor | None, cache: Cache | None) -> tuple[Tensor, Cache]:
        return _run_resnets(self.resnets, x, z, cache)


class UpBlock3D(nn.Module):
    def __init__(
        self, cin: int, cout: int, layers: int, groups: int, eps: float, z_channels: int, up: bool, time: bool
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(cin if i == 0 else cout, cout, groups, eps, z_channels) for i in range(layers)
        )
        self.upsamplers = nn.ModuleList([Upsample3D(cout, time)]) if up else None

    def forward(self, x: Tensor, z: Tensor, cache: Cache | None) -> tuple[Tensor, Cache]:
        x, cache = _run_resnets(self.resnets, x, z, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x, cache


class Encoder3D(nn.Module):
    """Video [B, 3, T, H, W] -> posterior moments [B, 2·Cz, 1 + (T-1)/4, H/8, W/8] (mean, then log-variance)."""

    def __init__(self, cfg: VAEShape) -> None:
        super().__init__()
        ch, groups, eps = cfg.block_channels, cfg.norm_groups, cfg.norm_eps
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        self.down_blocks = nn.ModuleList(
            DownBlock3D(
                ch[max(i - 1, 0)],
                ch[i],
                cfg.layers_per_block,
                groups,
                eps,
                i < len(ch) - 1,
                i < cfg.time_levels,
            )
            for i in range(len(ch))
        )
        self.mid_block = MidBlock3D(ch[-1], groups, eps, None)
        self.norm_out = nn.GroupNorm(groups, ch[-1], eps=eps)
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)

    def forward(self, x: Tensor, cache: Cache | None = None) -> tuple[Tensor, Cache]:
        cache = cache or {}
        new: Cache = {}
        h, new["conv_in"] = self.conv_in(x, cache.get("conv_in"))  # [B, C0, T, H, W]
        for i, block in enumerate(self.down_blocks):
            h, new[f"down_blocks.{i}"] = block(h, cache.get(f"down_blocks.{i}"))
        h, new["mid_block"] = self.mid_block(h, None, cache.get("mid_block"))  # [B, C3, t, h, w]
        h = _silu(self.norm_out(h))
        h, new["conv_out"] = self.conv_out.pad(h, cache.get("conv_out"))
        return self.conv_out.conv(h), new  # [B, 2·Cz, t, h, w]


class Decoder3D(nn.Module):
    """Latent [B, Cz, t, h, w] -> video [B, 3, T, 8h, 8w]; every norm after conv_in is conditioned on the latent."""

    def __init__(self, cfg: VAEShape) -> None:
        super().__init__()
        ch, groups, eps, zc = cfg.block_channels[::-1], cfg.norm_groups, cfg.norm_eps, cfg.latent_channels
        self.conv_in = CausalConv3d(zc, ch[0])
        self.mid_block = MidBlock3D(ch[0], groups, eps, zc)
        self.up_blocks = nn.ModuleList(
            UpBlock3D(
                ch[max(i - 1, 0)],
                ch[i],
                cfg.layers_per_block + 1,
                groups,
                eps,
                zc,
                i < len(ch) - 1,
                i < cfg.time_levels,
            )
            for i in range(len(ch))
        )
        self.norm_out = SpatialNorm3D(ch[-1], zc, groups)
        self.conv_out = CausalConv3d(ch[-1], cfg.out_channels)

    def forward(self, z: Tensor, cache: Cache | None = None) -> tuple[Tensor, Cache]:
        cache = cache or {}
        new: Cache = {}
        h, new["conv_in"] = self.conv_in(z, cache.get("conv_in"))  # [B, C3, t, h, w]
        h, new["mid_block"] = self.mid_block(h, z, cache.get("mid_block"))
        for i, block in enumerate(self.up_blocks):
            h, new[f"up_blocks.{i}"] = block(h, z, cache.get(f"up_blocks.{i}"))  # ends [B, C0, T, 8h, 8w]
        h = _silu(self.norm_out(h, z))
        h, new["conv_out"] = self.conv_out.pad(h, cache.get("conv_out"))
        return self.conv_out.conv(h), new  # [B, 3, T, 8h, 8w]
