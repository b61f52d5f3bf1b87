"""Tora motion modules: the trajectory extractor (TE) and the motion-guidance fuser (MGF).

Source: `tora_spec.md` §3 (TE) and §4 (MGF and where it acts), official alibaba/Tora
`sat/sgm/modules/traj_module.py` / `diffusers-version/tora/traj_module.py`; names follow the diffusers-version
checkpoint (`traj_extractor.*`, `fuser.{i}.*`). Layouts:

* TE: flow latents `[B, T, 16, h, w]` → `num_layers` features, each `[(B·T), motion_channels, h/2, w/2]`;
* MGF: video attention input `[B, T·H·W, D]` + one feature `[(B'·T), motion_channels, H, W]` (B' = B or 1) →
  `[B, T·H·W, D]`, with `out = h + s·(GroupNorm(h)·γ + β)` (s = motion strength, 1 in the release).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import LATENT_CHANNELS, ToraConfig

BN_EPS = 1e-5
GN_EPS = 1e-5


def _frozen_batch_norm(bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """BatchNorm with the stored running statistics whatever the module's train/eval mode (spec §3)."""
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + block2(ReLU(bn2(block1(ReLU(bn1(x))))))."""

    def __init__(self, channels: int, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(channels, eps=BN_EPS, **factory)
        self.block1 = nn.Conv2d(channels, channels, 3, padding=1, **factory)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS, **factory)
        self.block2 = nn.Conv2d(channels, channels, 3, padding=1, **factory)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block1(F.relu(_frozen_batch_norm(self.bn1, x)))  # [N, C, H, W]
        h = self.block2(F.relu(_frozen_batch_norm(self.bn2, h)))  # [N, C, H, W]
        return x + h


class TrajectoryExtractor(nn.Module):
    """`traj_extractor`: space-to-depth 2, `conv_in`, then `num_layers` stages of residual blocks (`body.{j}`)."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        channels = config.motion_channels
        self.blocks_per_stage = config.extractor_blocks_per_stage
        self.conv_in = nn.Conv2d(LATENT_CHANNELS * 4, channels, 3, padding=1, **factory)
        self.body = nn.ModuleList(
            ResidualBlock(channels, **factory) for _ in range(config.num_layers * self.blocks_per_stage)
        )

    def forward(self, motion_latents: Tensor) -> list[Tensor]:
        """motion_latents `[B, T, 16, h, w]` → list of `num_layers` tensors `[(B·T), C_m, ⌈h/2⌉, ⌈w/2⌉]`."""
        h, w = motion_latents.shape[-2:]
        x = F.pad(motion_latents.to(self.conv_in.weight.dtype), (0, w % 2, 0, h % 2))  # [B, T, 16, H, W] even
        # Channel order c·4 + hp·2 + wp, as PixelUnshuffle(2) in the official code.
        x = rearrange(x, "b t c (h p) (w q) -> (b t) (c p q) h w", p=2, q=2)  # [(B·T), 64, H/2, W/2]
        x = self.conv_in(x)  # [(B·T), C_m, H/2, W/2]
        features = []
        for j, block in enumerate(self.body):
            x = block(x)
            if (j + 1) % self.blocks_per_stage == 0:
                features.append(x)
        return features


class MotionGuidanceFuser(nn.Module):
    """`fuser.{i}`: per-frame spatial convs then per-site temporal convs make γ, β; adaptive GroupNorm of the tokens."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        motion, mid, hidden = config.motion_channels, config.fuser_mid_channels, config.hidden_dim
        self.flow_gamma_spatial = nn.Conv2d(motion, mid, 3, padding=1, **factory)
        self.flow_gamma_temporal = nn.Conv1d(mid, hidden, 3, padding=1, padding_mode="replicate", **factory)
        self.flow_beta_spatial = nn.Conv2d(motion, mid, 3, padding=1, **factory)
        self.flow_beta_temporal = nn.Conv1d(mid, hidden, 3, padding=1, padding_mode="replicate", **factory)
        self.flow_cond_norm = nn.GroupNorm(config.fuser_groups, hidden, eps=GN_EPS, **factory)
        # Zero temporal convs make the fuser the identity until trained weights are loaded (spec §4.1).
        for conv in (self.flow_gamma_temporal, self.flow_beta_temporal):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, tokens: Tensor, feature: Tensor, strength: float = 1.0) -> Tensor:
        """tokens `[B, T·H·W, D]`, feature `[(B'·T), C_m, H, W]` with B' ∈ {B, 1} → `[B, T·H·W, D]`."""
        height, width = feature.shape[-2:]
        num_frames = tokens.shape[1] // (height * width)
        gamma = self._modulation(
            self.flow_gamma_spatial, self.flow_gamma_temporal, feature, num_frames, strength
        )
        beta = self._modulation(
            self.flow_beta_spatial, self.flow_beta_temporal, feature, num_frames, strength
        )
        normed = self._group_norm(tokens, num_frames)  # [B, T·H·W, D]
        return torch.addcmul(tokens, normed, gamma).add_(beta)

    def _modulation(
        self, spatial: nn.Conv2d, temporal: nn.Conv1d, feature: Tensor, num_frames: int, strength: float
    ) -> Tensor:
        height, width = feature.shape[-2:]
        x = spatial(feature)  # [(B'·T), mid, H, W]
        x = rearrange(x, "(b t) c h w -> (b h w) c t", t=num_frames)  # [(B'·H·W), mid, T]
        x = temporal(x) * strength  # [(B'·H·W), D, T]
        return rearrange(x, "(b h w) c t -> b (t h w) c", h=height, w=width)  # [B', T·H·W, D]

    def _group_norm(self, tokens: Tensor, num_frames: int) -> Tensor:
        # GroupNorm per frame over (channel group, H·W), in the norm's own parameter dtype ("FloatGroupNorm").
        norm = self.flow_cond_norm
        x = rearrange(tokens, "b (t s) c -> (b t) c s", t=num_frames).to(norm.weight.dtype)  # [(B·T), D, H·W]
        x = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        return rearrange(x, "(b t) c s -> b (t s) c", t=num_frames).to(tokens.dtype)  # [B, T·H·W, D]
