"""Motion guidance: trajectory → flow video → VAE motion latents → extractor features, computed once.

Source: `tora_spec.md` §2.6 (the flow video is scaled to [-1, 1], encoded by the ordinary CogVideoX VAE, its
posterior is SAMPLED and multiplied by the latent scale 0.7) and §3 (the trajectory extractor is deterministic in eval
mode, so its 42 features are computed once per generation instead of inside every network call, an exact
optimisation). One encoding serves both CFG branches, as in the diffusers version (SAT encodes two copies with
independent posterior noise). The step window (`start`/`end`) and `strength` are the per-run settings ComfyUI users
know from other Tora packs.

Layouts: flow RGB video uint8 [F, H, W, 3] (F = 8k + 1); VAE input [1, 3, F, H, W] in [-1, 1]; motion latents
[1, T, 16, H/8, W/8] with T = (F - 1) // 4 + 1; features: one tensor per transformer block,
[(B·T), motion_channels, H/16, W/16] with B = 1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from .errors import ConfigError
from .flow import flow_to_rgb, flow_video_to_vae_input, render_flow
from .pipeline import check_generation_size, check_vae_pairing, placement, vae_tiling
from .resample import resample
from .vae import SCALE

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class MotionGuidance:
    """Trajectory features for one generation plus the settings that say how strongly and when they apply.

    Compared by identity (eq=False): field-wise equality would compare feature tensors, which is ambiguous.
    """

    features: tuple[
        torch.Tensor, ...
    ]  # one per transformer block, each [(B·T), motion_channels, h/2, w/2], B = 1
    num_frames: int  # pixel frames F of the flow video (8k + 1)
    height: int  # generation size in pixels the flow was rendered at
    width: int
    strength: float = 1.0  # multiplier on the fusers' modulation
    start: float = 0.0  # fraction of the denoising steps where guidance starts (0..1)
    end: float = 1.0  # fraction where it ends; steps outside [start, end] run without motion

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("MotionGuidance needs one feature tensor per transformer block, got none")
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ConfigError(f"motion strength must be a finite number >= 0, got {self.strength}")
        if not (0.0 <= self.start <= self.end <= 1.0):
            raise ConfigError(
                f"motion window must satisfy 0 <= start <= end <= 1, got start={self.start}, end={self.end}; "
                "e.g. start=0.0, end=0.2 guides only the first fifth of the steps"
            )

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1

    def active_at(self, step_index: int, num_steps: int) -> bool:
        """True when step `step_index` (0-based) of `num_steps` lies in the window: start <= i / n <= end."""
        if not 0 <= step_index < num_steps:
            raise ConfigError(f"step index {step_index} is outside 0..{num_steps - 1}")
        if self.strength == 0:
            return False
        fraction = step_index / num_steps
        return self.start <= fraction <= self.end

    def with_settings(
        self, strength: float | None = None, start: float | None = None, end: float | None = None
    ) -> MotionGuidance:
        """A copy with new strength / window (validated); features are shared, not copied."""
        changes = {k: v for k, v in (("strength", strength), ("start", start), ("end", end)) if v is not None}
        return dataclasses.replace(self, **changes)


def _flow_video_tensor(flow_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a colour-coded flow video and return it as a uint8 tensor [F, H, W, 3]."""
    video = torch.from_numpy(np.ascontiguousarray(flow_rgb)) if isinstance(flow_rgb, np.ndarray) else flow_rgb
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ConfigError(
            f"flow video must be uint8 [F, H, W, 3] (colour-coded flow, e.g. from flow_to_rgb), got "
            f"{tuple(video.shape)} {video.dtype}; convert a raw [F, H, W, 2] flow with tora_model.flow.flow_to_rgb"
        )
    frames, height, width = video.shape[:3]
    check_generation_size(width, height, frames, warn=False)
    return video


def encode_flow_video(
    vae, flow_rgb: np.ndarray | torch.Tensor, *, generator: torch.Generator, tiling: bool | str = "auto"
) -> torch.Tensor:
    """Colour-coded flow video uint8 [F, H, W, 3] → motion latents [1, T, 16, H/c, W/c] (c = VAE spatial compression) (posterior sample × 0.7)."""
    video = _flow_video_tensor(flow_rgb)
    device, dtype = placement(vae)
    pixels = flow_video_to_vae_input(video, dtype=dtype, device=device)  # [1, 3, F, H, W] in [-1, 1]
    with torch.no_grad():
        posterior = vae.encode(
            pixels,
            tiling=vae_tiling(
                vae, tiling, tuple(n // vae.config.spatial_compression for n in video.shape[1:3])
            ),
        )
        latents = posterior.sample(generator) * SCALE  # [1, 16, T, h, w]
    return rearrange(latents.float(), "b c t h w -> b t c h w")  # [1, T, 16, h, w]


def motion_from_flow(
    model,
    vae,
    flow_rgb: np.ndarray | torch.Tensor,
    *,
    generator: torch.Generator,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    tiling: bool | str = "auto",
) -> MotionGuidance:
    """Encode a colour-coded flow video and run the trajectory extractor once; features in the model dtype/device."""
    if not model.config.has_motion_modules:
        raise ConfigError(
            "this transformer has no Tora motion modules (traj_extractor / fuser weights); load a Tora checkpoint "
            "to use trajectories, or generate without motion guidance"
        )
    check_vae_pairing(model, vae)
    video = _flow_video_tensor(flow_rgb)
    frames, height, width = video.shape[:3]
    latents = encode_flow_video(vae, video, generator=generator, tiling=tiling)  # [1, T, 16, h, w]
    device, dtype = placement(model)
    with torch.no_grad():
        features = model.extract_motion(latents.to(device=device, dtype=dtype))
    log.info("motion features: %d blocks of %s", len(features), tuple(features[0].shape))
    return MotionGuidance(
        features=tuple(features),
        num_frames=frames,
        height=height,
        width=width,
        strength=strength,
        start=start,
        end=end,
    )


def motion_from_trajectory(
    model,
    vae,
    trajectory,
    *,
    num_frames: int,
    width: int,
    height: int,
    mode: str = "auto",
    generator: torch.Generator,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    tiling: bool | str = "auto",
) -> tuple[MotionGuidance, np.ndarray]:
    """Trajectory → per-frame points → Gaussian-spread flow → flow RGB → motion guidance; also returns the flow RGB."""
    # "auto" (None for resample): official processing for official .txt trajectories, smooth resampling otherwise.
    points = resample(trajectory, num_frames, width, height, None if mode == "auto" else mode)  # [N, F, 2]
    flow = render_flow(points, height, width)  # [F, H, W, 2] float32
    flow_rgb = flow_to_rgb(flow)  # [F, H, W, 3] uint8
    motion = motion_from_flow(
        model, vae, flow_rgb, generator=generator, strength=strength, start=start, end=end, tiling=tiling
    )
    return motion, flow_rgb
